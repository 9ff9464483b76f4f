//! The perf JIT interface's map files (`/tmp/perf-PID.map`): how the JVM
//! (`jcmd PID Compiler.perfmap`), Node (`--perf-basic-prof`), Python 3.12+
//! (`-X perf`) and .NET (`DOTNET_PerfMapEnabled=1`) name the code they
//! generate, one `START SIZE name` line (hex, with or without `0x`) per
//! piece of code.
//!
//! The file sits in /tmp and is written by the traced process's user, and
//! vmatrace runs as root: it is opened without following a symbolic link,
//! only as a regular file owned by the process's user (or root), and at
//! most `MAX_MAP_BYTES` of it are read. What it says only names frames; a
//! line that does not parse is skipped.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

/// Perf maps larger than this are read up to it: a JVM's full map is a few
/// MB (about 90 bytes a compiled method).
const MAX_MAP_BYTES: u64 = 64 << 20;

/// Processes whose parsed map is kept at most; then the oldest read are
/// forgotten (a process seen again reads its map again).
const MAX_PROCESSES: usize = 256;

/// The code a perf map names, without overlaps: where lines overlap, the
/// later line wins, as perf itself reads them (code freed and the space
/// reused for other code).
#[derive(Clone, Debug, Default)]
pub struct PerfMap {
    /// Start -> (end, name, where the named code begins): a range may be
    /// the rest of code a later line cut.
    ranges: BTreeMap<u64, (u64, Arc<str>, u64)>,
}

impl PerfMap {
    /// Parses a map's text; lines that do not parse are skipped.
    pub fn parse(text: &[u8]) -> PerfMap {
        let mut map = PerfMap::default();
        map.extend(text);
        map
    }

    /// Adds the lines of `text`, later than those read before.
    fn extend(&mut self, text: &[u8]) {
        let mut names: HashMap<&[u8], Arc<str>> = HashMap::new();
        for line in text.split(|b| *b == b'\n') {
            let Some((start, size, name)) = parse_line(line) else {
                continue;
            };
            let Some(end) = start.checked_add(size) else {
                continue;
            };
            let name = names
                .entry(name)
                .or_insert_with(|| String::from_utf8_lossy(name).into())
                .clone();
            self.insert(start, end, name);
        }
    }

    /// The name of the code at `addr`, and `addr`'s offset in it.
    pub fn lookup(&self, addr: u64) -> Option<(&Arc<str>, u64)> {
        let (_, (end, name, code_start)) = self.ranges.range(..=addr).next_back()?;
        (addr < *end).then(|| (name, addr - code_start))
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Adds `[start, end)`, cutting what it overlaps.
    fn insert(&mut self, start: u64, end: u64, name: Arc<str>) {
        // A zero-size line names its start address alone (perf does so).
        let end = end.max(start + 1);
        let before = self
            .ranges
            .range(..start)
            .next_back()
            .filter(|(_, (e, ..))| *e > start)
            .map(|(s, v)| (*s, v.clone()));
        if let Some((s, (e, n, code))) = before {
            self.ranges.insert(s, (start, n.clone(), code));
            if e > end {
                self.ranges.insert(end, (e, n, code));
            }
        }
        let inside: Vec<u64> = self.ranges.range(start..end).map(|(s, _)| *s).collect();
        for s in inside {
            if let Some((e, n, code)) = self.ranges.remove(&s)
                && e > end
            {
                self.ranges.insert(end, (e, n, code));
            }
        }
        self.ranges.insert(start, (end, name, start));
    }
}

/// `START SIZE name`: two hex numbers (a `0x` prefix allowed, as the JVM
/// writes them), then the name, the rest of the line.
fn parse_line(line: &[u8]) -> Option<(u64, u64, &[u8])> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut fields = line.splitn(3, |b| *b == b' ');
    let start = hex(fields.next()?)?;
    let size = hex(fields.next()?)?;
    let name = fields.next()?.trim_ascii();
    (!name.is_empty()).then_some((start, size, name))
}

fn hex(field: &[u8]) -> Option<u64> {
    let digits = field.strip_prefix(b"0x").unwrap_or(field);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Who a process is, as its perf map is found and trusted: read while it
/// lives, kept for when it has gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapOwner {
    /// The process's effective uid: the map must be owned by it (or root).
    pub uid: u32,
    /// Its pid in its own pid namespace, which names the file.
    pub ns_pid: u32,
}

impl MapOwner {
    /// Read from `/proc/PID/status` (None once the process is gone).
    pub fn of(pid: u32) -> Option<MapOwner> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        MapOwner::from_status(&status)
    }

    fn from_status(status: &str) -> Option<MapOwner> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::split_whitespace)
        };
        let uid = field("Uid:")?.nth(1)?.parse().ok()?;
        let ns_pid = match field("NStgid:") {
            Some(ids) => ids.last()?.parse().ok()?,
            None => field("Tgid:")?.next()?.parse().ok()?,
        };
        Some(MapOwner { uid, ns_pid })
    }
}

/// What a read of a process's map found.
#[derive(Clone, Debug)]
pub enum MapState {
    /// The process has written no map (or none vmatrace may read).
    Missing,
    /// The map, parsed, and its generation: a higher one was read later.
    Read(Arc<PerfMap>, u64),
    /// A file is there but was not read, and why (said once).
    Refused(String),
}

/// The identity of a map file's contents: a map written again (or appended
/// to) is read again.
type Stamp = (u64, u64, i64, i64);

fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    (meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec())
}

struct Kept {
    stamp: Option<Stamp>,
    state: MapState,
    generation: u64,
    /// How far the file was read, when it was.
    read: Option<ReadUpTo>,
}

/// How far a map file was read: its whole lines up to `len`, of which
/// `tail` are the last bytes. A map that grew with the same inode and the
/// same bytes at `len` was appended to (Node, Python): only the rest is
/// read. Anything else (the JVM writing its map anew) is read whole.
#[derive(Clone, Debug)]
struct ReadUpTo {
    ino: u64,
    len: u64,
    tail: Vec<u8>,
}

/// Bytes before the end of what was read that must still be there.
const TAIL_BYTES: usize = 64;

/// Each process's perf map, read when a stack first needs it and again
/// when the file changed (a map written by `jcmd` after vmatrace started,
/// a Node process appending as it compiles). The last map read is kept
/// after the process exits, so its stacks keep their names.
#[derive(Default)]
pub struct PerfMaps {
    by_pid: HashMap<u32, Kept>,
    generations: u64,
}

impl PerfMaps {
    /// The map of process `pid` (`owner`: who it is, read while it lived).
    /// The file is looked at (one `lstat`) every time, and read again only
    /// when it changed.
    pub fn get(&mut self, pid: u32, owner: Option<MapOwner>) -> MapState {
        let owner = match (owner, self.kept(pid)) {
            (Some(owner), _) => owner,
            (None, Some(kept)) => return kept,
            // Gone before anyone knew who it was: only a map root wrote
            // in the host's /tmp is to be trusted then.
            (None, None) => MapOwner {
                uid: 0,
                ns_pid: pid,
            },
        };
        let paths = map_paths(pid, owner);
        let Some((path, stamp)) = paths.iter().find_map(|path| {
            let meta = std::fs::symlink_metadata(path).ok()?;
            Some((path, stamp_of(&meta)))
        }) else {
            // Gone, or never written: the names read before still hold.
            return self.kept(pid).unwrap_or(MapState::Missing);
        };
        if let Some(kept) = self.by_pid.get(&pid)
            && kept.stamp == Some(stamp)
        {
            return kept.state.clone();
        }
        self.generations += 1;
        let before = self.by_pid.get(&pid).and_then(|kept| match &kept.state {
            MapState::Read(map, _) => Some((map.clone(), kept.read.clone()?)),
            _ => None,
        });
        let (state, read) = match open_map(path, owner) {
            None => (MapState::Missing, None),
            Some((Ok(file), _)) => match read_map(file, stamp.0, before) {
                Ok((map, read)) => (MapState::Read(Arc::new(map), self.generations), Some(read)),
                Err(e) => (MapState::Refused(format!("reading it failed: {e}")), None),
            },
            Some((Err(refused), _)) => (MapState::Refused(refused), None),
        };
        self.keep(pid, Some(stamp), state.clone(), read);
        state
    }

    fn kept(&self, pid: u32) -> Option<MapState> {
        self.by_pid.get(&pid).map(|k| k.state.clone())
    }

    fn keep(&mut self, pid: u32, stamp: Option<Stamp>, state: MapState, read: Option<ReadUpTo>) {
        if self.by_pid.len() >= MAX_PROCESSES && !self.by_pid.contains_key(&pid) {
            let oldest = self
                .by_pid
                .iter()
                .min_by_key(|(_, k)| k.generation)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.by_pid.remove(&oldest);
            }
        }
        self.by_pid.insert(
            pid,
            Kept {
                stamp,
                state,
                generation: self.generations,
                read,
            },
        );
    }
}

/// Where the map of `pid` is: in the /tmp the process sees (through its
/// root, for a process in a container), named by its own pid; then the
/// host's /tmp, once the process is gone, if its pid is the same there.
fn map_paths(pid: u32, owner: MapOwner) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from(format!(
        "/proc/{pid}/root/tmp/perf-{}.map",
        owner.ns_pid
    ))];
    if owner.ns_pid == pid {
        paths.push(PathBuf::from(format!("/tmp/perf-{pid}.map")));
    }
    paths
}

/// Opens a map file safely: no symbolic link followed (O_NOFOLLOW), no
/// blocking on a FIFO (O_NONBLOCK), a regular file owned by the process's
/// user or root. None if there is no file; Err(why) if there is one that is
/// not to be read.
fn open_map(path: &Path, owner: MapOwner) -> Option<(Result<File, String>, Stamp)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            let stamp = (0, 0, 0, 0);
            return Some((
                Err(format!("{} could not be opened: {e}", path.display())),
                stamp,
            ));
        }
    };
    let meta = file.metadata().ok()?;
    let stamp = stamp_of(&meta);
    if !meta.file_type().is_file() {
        return Some((
            Err(format!("{} is not a regular file", path.display())),
            stamp,
        ));
    }
    if meta.uid() != owner.uid && meta.uid() != 0 {
        return Some((
            Err(format!(
                "{} is owned by uid {}, not by the process's uid {}",
                path.display(),
                meta.uid(),
                owner.uid
            )),
            stamp,
        ));
    }
    Some((Ok(file), stamp))
}

/// Reads the map: only what was appended since `before`, if that is all
/// that changed, else the whole file; whole lines only (a writer may be
/// in the middle of one), `MAX_MAP_BYTES` at most.
fn read_map(
    mut file: File,
    ino: u64,
    before: Option<(Arc<PerfMap>, ReadUpTo)>,
) -> std::io::Result<(PerfMap, ReadUpTo)> {
    if let Some((map, read)) = before.filter(|(_, read)| read.ino == ino)
        && let Some(appended) = read_appended(&mut file, &read)?
    {
        let mut map = (*map).clone();
        let lines = whole_lines(&appended);
        map.extend(lines);
        let mut tail = read.tail;
        tail.extend_from_slice(lines);
        return Ok((map, up_to(ino, read.len + lines.len() as u64, tail)));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut text = Vec::new();
    file.take(MAX_MAP_BYTES).read_to_end(&mut text)?;
    let lines = whole_lines(&text);
    Ok((
        PerfMap::parse(lines),
        up_to(ino, lines.len() as u64, lines.to_vec()),
    ))
}

/// The bytes after `read.len`, if the file still has `read.tail` right
/// before them.
fn read_appended(file: &mut File, read: &ReadUpTo) -> std::io::Result<Option<Vec<u8>>> {
    let from = read.len - read.tail.len() as u64;
    file.seek(SeekFrom::Start(from))?;
    let mut text = Vec::new();
    file.take(MAX_MAP_BYTES.saturating_sub(from))
        .read_to_end(&mut text)?;
    Ok(text.strip_prefix(read.tail.as_slice()).map(<[u8]>::to_vec))
}

/// `text` up to its last line break, included.
fn whole_lines(text: &[u8]) -> &[u8] {
    let end = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    &text[..end]
}

fn up_to(ino: u64, len: u64, mut tail: Vec<u8>) -> ReadUpTo {
    let cut = tail.len().saturating_sub(TAIL_BYTES);
    tail.drain(..cut);
    ReadUpTo { ino, len, tail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jvm_and_node_lines_parse() {
        let map = PerfMap::parse(
            b"0x00007f40354c43c0 0x00000000000004f0 java.nio.MappedByteBuffer IndexMapper.mapIndexFile(java.nio.file.Path)\n\
              7f49137e3b80 378 JS:~fillCache /tmp/alloc.js:2:19\n",
        );
        let (name, offset) = map.lookup(0x7f40354c43c0 + 0x10).unwrap();
        assert_eq!(
            &**name,
            "java.nio.MappedByteBuffer IndexMapper.mapIndexFile(java.nio.file.Path)"
        );
        assert_eq!(offset, 0x10);
        assert_eq!(
            &**map.lookup(0x7f49137e3b80 + 0x377).unwrap().0,
            "JS:~fillCache /tmp/alloc.js:2:19"
        );
        assert!(map.lookup(0x7f49137e3b80 + 0x378).is_none(), "past its end");
        assert!(map.lookup(0x1000).is_none());
    }

    /// A map is user-controlled input: garbage is skipped, never a panic,
    /// and the good lines around it still count.
    #[test]
    fn garbage_lines_are_skipped() {
        let text: &[u8] = b"\n\
            zzzz 10 bad start\n\
            1000 zz bad size\n\
            1000 10\n\
            1000\n\
            0x 10 empty hex\n\
            ffffffffffffffff 10 wraps past the end\n\
            11112222333344445 10 seventeen digits\n\
            \xff\xfe\x00 10 binary\n\
            2000 10 good\r\n\
            3000 10 \xffbad utf8 name\n\
            \t\t\n";
        let map = PerfMap::parse(text);
        assert_eq!(map.len(), 2, "{map:?}");
        assert_eq!(&**map.lookup(0x2008).unwrap().0, "good");
        assert!(map.lookup(0x3000).unwrap().0.contains("bad utf8 name"));
        // Any bytes at all.
        let noise: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        PerfMap::parse(&noise);
    }

    #[test]
    fn later_lines_win_where_they_overlap() {
        let map = PerfMap::parse(b"1000 100 old\n1040 20 new\n10f0 40 tail\n");
        assert_eq!(&**map.lookup(0x1000).unwrap().0, "old");
        assert_eq!(map.lookup(0x1048).unwrap(), (&Arc::from("new"), 8));
        assert_eq!(map.lookup(0x1060).unwrap(), (&Arc::from("old"), 0x60));
        assert_eq!(&**map.lookup(0x10f8).unwrap().0, "tail");
        assert_eq!(&**map.lookup(0x1120).unwrap().0, "tail");
        let map = PerfMap::parse(b"1040 20 small\n1000 100 big\n");
        assert_eq!(&**map.lookup(0x1048).unwrap().0, "big");
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn the_owner_comes_from_status() {
        let status = "Name:\tjava\nTgid:\t3802\nPid:\t3802\nUid:\t1000\t1001\t1001\t1001\nNStgid:\t3802\t7\n";
        assert_eq!(
            MapOwner::from_status(status),
            Some(MapOwner {
                uid: 1001,
                ns_pid: 7
            })
        );
        let own = MapOwner::of(std::process::id()).expect("own status");
        assert_eq!(own.ns_pid, std::process::id());
    }

    /// Written after the first look, rewritten, then the process gone: the
    /// map is read when it appears and when it changes, and kept after.
    #[test]
    fn a_map_is_read_when_it_appears_and_changes() {
        // A pid no process has (above pid_max), whose "map" is a file of
        // this test in /tmp.
        let pid = 4_194_304 + 17 + std::process::id() % 1000;
        let path = PathBuf::from(format!("/tmp/perf-{pid}.map"));
        let _ = std::fs::remove_file(&path);
        let owner = MapOwner {
            uid: unsafe { libc::geteuid() },
            ns_pid: pid,
        };
        let mut maps = PerfMaps::default();
        assert!(matches!(maps.get(pid, Some(owner)), MapState::Missing));
        std::fs::write(&path, "1000 10 first\n").unwrap();
        let MapState::Read(map, first) = maps.get(pid, Some(owner)) else {
            panic!("not read")
        };
        assert_eq!(&**map.lookup(0x1000).unwrap().0, "first");
        std::fs::write(&path, "1000 10 first\n2000 10 second\n").unwrap();
        let MapState::Read(map, second) = maps.get(pid, Some(owner)) else {
            panic!("not read again")
        };
        assert!(second > first);
        assert_eq!(&**map.lookup(0x2000).unwrap().0, "second");
        std::fs::remove_file(&path).unwrap();
        let MapState::Read(kept, generation) = maps.get(pid, Some(owner)) else {
            panic!("not kept")
        };
        assert_eq!((kept.len(), generation), (2, second));
        assert!(matches!(maps.get(pid, None), MapState::Read(..)));
    }

    /// Node appends to its map as it compiles: the new lines are read,
    /// not the whole file again, and a line being written waits; a map
    /// written anew is read whole.
    #[test]
    fn an_appended_map_is_read_from_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perf-1.map");
        std::fs::write(&path, "1000 10 first\n2000 10 sec").unwrap();
        let open = || File::open(&path).unwrap();
        let (map, read) = read_map(open(), 7, None).unwrap();
        assert_eq!(
            (map.len(), read.len),
            (1, 14),
            "the line being written waits"
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, b"ond\n3000 10 third\n").unwrap();
        let (map, read) = read_map(open(), 7, Some((Arc::new(map), read))).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(&**map.lookup(0x2000).unwrap().0, "second");
        assert_eq!(read.len, 43);
        // Written anew, longer: the bytes before the end read differ.
        std::fs::write(
            &path,
            "1000 10 other\n2000 10 second\n3000 10 third\n4000 1 x\n",
        )
        .unwrap();
        let (map, _) = read_map(open(), 7, Some((Arc::new(map), read.clone()))).unwrap();
        assert_eq!(&**map.lookup(0x1000).unwrap().0, "other");
        assert_eq!(map.len(), 4);
        // Another file (inode): read whole.
        let (map, _) = read_map(open(), 8, Some((Arc::new(PerfMap::default()), read))).unwrap();
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn links_and_other_owners_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("secret");
        std::fs::write(&real, "1000 10 secret\n").unwrap();
        let link = dir.path().join("perf-1.map");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let me = MapOwner {
            uid: unsafe { libc::geteuid() },
            ns_pid: 1,
        };
        let (opened, _) = open_map(&link, me).expect("something is there");
        assert!(opened.is_err(), "a symbolic link is not followed");
        let (opened, _) = open_map(dir.path(), me).expect("a directory");
        assert!(opened.is_err());
        let stranger = MapOwner {
            uid: 4242,
            ns_pid: 1,
        };
        let (opened, _) = open_map(&real, stranger).unwrap();
        // Root's files are trusted; anyone else's must be the process's.
        assert_eq!(opened.is_ok(), unsafe { libc::geteuid() } == 0);
        assert!(open_map(&dir.path().join("none"), me).is_none());
    }
}
