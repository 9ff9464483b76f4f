//! Output files that never clobber what is not vmatrace's.
//!
//! vmatrace runs as root and writes where it is told, so a mistyped path or
//! a planted symbolic link must not cost anyone a file:
//!
//! - links are never followed (`O_NOFOLLOW`), and a new file is always
//!   created afresh (`O_CREAT | O_EXCL`), so a link or file that appears
//!   after the checks makes the open fail instead of writing through it;
//! - an existing file is replaced only if it is vmatrace's own output of
//!   the same kind, owned by the same user (a trace is kept as `FILE.old`,
//!   as perf keeps `perf.data.old`), or empty; anything else needs
//!   `--force`, which replaces the link or file itself, never a link's
//!   target;
//! - a pipe, socket or character device (`-o /dev/null`, `-o >(gzip >
//!   t.gz)`) has nothing to clobber, and is written to as it is.

use std::{
    ffi::OsString,
    fs::{self, File, Metadata, OpenOptions},
    io::{self, Read},
    os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::anyhow;

use crate::error::Failure;

/// What vmatrace is about to write, and so which existing files of its own
/// it may replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A recording: starts with the trace magic; the old one is kept.
    Trace,
    /// An SVG plot: carries [`PLOT_MARK`]; the old one is redrawn.
    Plot,
}

/// The magic a recording starts with (the trace format's).
const TRACE_MAGIC: &[u8] = b"VMATRACE";

/// A comment every plot carries near its start, so a later run knows the
/// file for its own.
pub const PLOT_MARK: &str = "<!-- vmatrace plot -->";

/// How many leading bytes are read to recognize vmatrace's own files.
const SNIFF_BYTES: usize = 512;

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Trace => "vmatrace trace",
            Kind::Plot => "vmatrace plot",
        }
    }

    fn is_own(self, head: &[u8]) -> bool {
        match self {
            Kind::Trace => head.starts_with(TRACE_MAGIC),
            Kind::Plot => head
                .windows(PLOT_MARK.len())
                .any(|w| w == PLOT_MARK.as_bytes()),
        }
    }
}

/// Opens `path` for a new output of `kind`, after making room as the
/// module's rules allow. Refusals are usage errors (exit 2) that say why
/// and what to do.
pub fn create(path: &Path, kind: Kind, force: bool) -> Result<File, Failure> {
    make_room(path, kind, force)?;
    open_new(path).map_err(|e| {
        Failure::usage(anyhow!(e).context(format!("cannot create {}", path.display())))
    })
}

/// What may be done with what is at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing there.
    Absent,
    /// A pipe, socket or character device: written to as it is.
    Stream,
    /// Empty, or `--force`: may be removed.
    Replaceable,
    /// vmatrace's own output of this kind, by this user.
    Own,
}

/// Makes room for a new output at `path`: an old trace becomes
/// `FILE.old`, an old plot, an empty file or (with `--force`) anything but a
/// directory is removed. Refusals are usage errors that say why and what
/// to do.
pub fn make_room(path: &Path, kind: Kind, force: bool) -> Result<(), Failure> {
    match verdict(path, kind, force)? {
        Verdict::Absent | Verdict::Stream => Ok(()),
        Verdict::Replaceable => remove(path),
        Verdict::Own => match kind {
            Kind::Trace => keep_as_old(path),
            Kind::Plot => remove(path),
        },
    }
}

/// Whether what is at `path` may be replaced by a new output of `kind`.
pub fn verdict(path: &Path, kind: Kind, force: bool) -> Result<Verdict, Failure> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Verdict::Absent),
        Err(e) => {
            return Err(Failure::usage(
                anyhow!(e).context(format!("cannot inspect {}", path.display())),
            ));
        }
    };
    let refuse = |why: String| Err(Failure::usage(anyhow!("{}: {why}", path.display())));
    let file_type = meta.file_type();
    if file_type.is_dir() {
        return refuse("is a directory; name a file".into());
    }
    if is_stream(&meta) || (file_type.is_symlink() && stream_behind_link(path)) {
        return Ok(Verdict::Stream);
    }
    if force || (file_type.is_file() && meta.len() == 0) {
        return Ok(Verdict::Replaceable);
    }
    if file_type.is_symlink() {
        return refuse(
            "is a symbolic link, and vmatrace does not write through links (it could \
             overwrite the file it points to); remove it, name another path, or pass \
             --force to replace the link itself"
                .into(),
        );
    }
    if !file_type.is_file() || !kind.is_own(&head_of(path)) {
        return refuse(format!(
            "exists and is not a {}; vmatrace will not overwrite it: name another path, \
             or pass --force to replace it",
            kind.noun()
        ));
    }
    if meta.uid() != effective_uid() {
        return refuse(format!(
            "is a {} owned by uid {}, not by this user; name another path, or pass \
             --force to replace it",
            kind.noun(),
            meta.uid()
        ));
    }
    Ok(Verdict::Own)
}

/// Creates `path`, which must not exist by now: never through a link.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600)
        .open(path)
}

/// Opens `path` fresh, or a stream that is there already.
fn open_new(path: &Path) -> io::Result<File> {
    match fs::metadata(path) {
        Ok(meta) if is_stream(&meta) => OpenOptions::new().write(true).open(path),
        _ => create_new(path),
    }
}

/// A pipe, socket or character device: written to, never replaced.
fn is_stream(meta: &Metadata) -> bool {
    let t = meta.file_type();
    t.is_fifo() || t.is_socket() || t.is_char_device()
}

/// A link to a stream (`/dev/stdout`, `/dev/fd/63` of `>(...)`).
fn stream_behind_link(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| is_stream(&meta))
}

/// The file's first bytes (none if it cannot be read).
fn head_of(path: &Path) -> Vec<u8> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    if let Ok(file) = opened {
        let _ = file.take(SNIFF_BYTES as u64).read_to_end(&mut head);
    }
    head
}

/// Moves an old trace to `FILE.old`, unless what is there is not ours. One
/// `.old` is kept, as perf keeps one `perf.data.old`: the trace before it
/// goes (it used to move on to `.old.old`, and so on, one level a run,
/// until the name was too long).
fn keep_as_old(path: &Path) -> Result<(), Failure> {
    let old = with_suffix(path, ".old");
    match verdict(&old, Kind::Trace, false)? {
        Verdict::Absent => {}
        Verdict::Own | Verdict::Replaceable => remove(&old)?,
        Verdict::Stream => {
            return Err(Failure::usage(anyhow!(
                "{} is a pipe or device, where the previous trace {} would go; vmatrace will \
                 not replace it: name another path, or pass --force",
                old.display(),
                path.display()
            )));
        }
    }
    fs::rename(path, &old).map_err(|e| {
        Failure::usage(anyhow!(e).context(format!(
            "cannot move the old trace {} to {}",
            path.display(),
            old.display()
        )))
    })?;
    eprintln!(
        "vmatrace: the previous trace {} is now {}",
        path.display(),
        old.display()
    );
    Ok(())
}

fn remove(path: &Path) -> Result<(), Failure> {
    fs::remove_file(path).map_err(|e| {
        Failure::usage(anyhow!(e).context(format!("cannot replace {}", path.display())))
    })
}

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use std::{io::Write, os::unix::fs::symlink};

    use super::*;
    use crate::error::exit_code;

    fn write(path: &Path, bytes: &[u8]) {
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_new_path_is_created_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.vmat");
        create(&path, Kind::Trace, false)
            .unwrap()
            .write_all(b"VMATRACE")
            .unwrap();
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("precious");
        write(&victim, b"do not lose me");
        let link = dir.path().join("t.vmat");
        symlink(&victim, &link).unwrap();
        let err = create(&link, Kind::Trace, false).unwrap_err();
        assert_eq!(err.code, exit_code::USAGE);
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"do not lose me");

        // --force replaces the link, never what it points to.
        create(&link, Kind::Trace, true)
            .unwrap()
            .write_all(b"VMATRACE")
            .unwrap();
        assert!(!fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(fs::read(&victim).unwrap(), b"do not lose me");
    }

    #[test]
    fn a_foreign_file_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        write(&path, b"someone's notes");
        let err = create(&path, Kind::Trace, false).unwrap_err();
        assert_eq!(err.code, exit_code::USAGE);
        assert!(err.to_string().contains("not a vmatrace trace"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"someone's notes");
        create(&path, Kind::Trace, true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn an_old_trace_is_kept_as_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.vmat");
        write(&path, b"VMATRACE first");
        create(&path, Kind::Trace, false)
            .unwrap()
            .write_all(b"VMATRACE second")
            .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"VMATRACE second");
        assert_eq!(
            fs::read(with_suffix(&path, ".old")).unwrap(),
            b"VMATRACE first"
        );
    }

    #[test]
    fn one_old_trace_is_kept_however_many_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.vmat");
        for run in ["first", "second", "third"] {
            create(&path, Kind::Trace, false)
                .unwrap()
                .write_all(format!("VMATRACE {run}").as_bytes())
                .unwrap();
        }
        assert_eq!(fs::read(&path).unwrap(), b"VMATRACE third");
        assert_eq!(
            fs::read(with_suffix(&path, ".old")).unwrap(),
            b"VMATRACE second"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_foreign_file_named_old_is_not_replaced_by_the_old_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.vmat");
        write(&path, b"VMATRACE first");
        write(&with_suffix(&path, ".old"), b"someone's file");
        assert!(create(&path, Kind::Trace, false).is_err());
        assert_eq!(
            fs::read(with_suffix(&path, ".old")).unwrap(),
            b"someone's file"
        );
        assert_eq!(fs::read(&path).unwrap(), b"VMATRACE first");
    }

    #[test]
    fn a_directory_is_refused_even_when_forced() {
        let dir = tempfile::tempdir().unwrap();
        let err = create(dir.path(), Kind::Trace, true).unwrap_err();
        assert_eq!(err.code, exit_code::USAGE);
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn an_empty_file_and_a_stream_are_fine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        write(&path, b"");
        create(&path, Kind::Trace, false).unwrap();
        create(Path::new("/dev/null"), Kind::Trace, false).unwrap();
        assert!(
            fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }

    #[test]
    fn a_plot_replaces_only_a_plot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        write(&path, format!("<svg>{PLOT_MARK}</svg>").as_bytes());
        create(&path, Kind::Plot, false).unwrap();
        write(&path, b"<svg>someone else's drawing</svg>");
        assert!(create(&path, Kind::Plot, false).is_err());
        // A trace is not a plot, nor the other way round.
        write(&path, b"VMATRACE");
        assert!(create(&path, Kind::Plot, false).is_err());
    }
}
