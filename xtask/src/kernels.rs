//! Debian kernels under QEMU: fetch, prepare and boot them, and run a
//! command inside as root (`cargo xtask kernels ...`, the base of the
//! kernel matrix of issue 11).
//!
//! Why this shape (see ../shared/TOOLCHAIN.md):
//! - `/dev/kvm` on this machine type is a paravirtual KVM that cannot run
//!   unmodified kernels, so guests run under TCG (`-accel tcg -cpu max`).
//! - Kernels are Debian's own `linux-image-*-cloud-amd64` packages, fetched
//!   with `apt-get download` through a private APT configuration (the
//!   host's sources and package database are never touched) and unpacked
//!   with `dpkg-deb -x` into `target/kernels/`.
//! - The guest's root is the host's root, shared read-only through
//!   virtiofs with a tmpfs overlay on top, so every binary of the workspace
//!   (and bpftool, strace...) runs in the guest as built on the host.
//!
//! Everything is cached: a warm run costs one boot (4-8 s) plus the
//! command.

mod apt;
mod initramfs;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};

pub use qemu::{Guest, GuestOutput};

/// The kernels the matrix covers, by the name a user gives: each is the
/// cloud kernel a Debian suite installs today (its `linux-image-cloud-amd64`
/// meta-package). `newest` is the highest version any of `NEWEST_FROM` has.
///
/// 6.12 is trixie's build, not bookworm-backports': under this machine's
/// QEMU (7.2, TCG) the backports build (6.12.95-1~bpo12+1) dies at random
/// in about half of its boots (oopses in the slab allocator, in
/// `do_sync_core` while patching jump labels, double faults), with `-cpu
/// max` and `-cpu qemu64` alike and with `mitigations=off`; trixie's
/// 6.12.117 and every other kernel here booted every time (8 of 8 each).
pub const MATRIX: &[(&str, &str)] = &[
    ("5.10", "bullseye"),
    ("6.1", "bookworm"),
    ("6.12", "trixie"),
    ("newest", ""),
];

/// Suites that carry Debian's newest kernels (development suites and the
/// stable backports, which can run ahead of unstable).
const NEWEST_FROM: &[&str] = &["trixie-backports", "forky", "sid", "experimental"];

/// A kernel ready to boot: its image and an initramfs built for it.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The name it was asked for (`6.12`, `newest`, `sid`...).
    pub name: String,
    /// The Debian suite it came from.
    pub suite: String,
    /// `uname -r` of the kernel, e.g. `6.12.95+deb12-cloud-amd64`.
    pub release: String,
    /// The Debian package version, e.g. `6.12.95-1~bpo12+1`.
    pub package_version: String,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
}

/// Where everything is kept: `<workspace>/target/kernels`.
pub fn cache_dir() -> PathBuf {
    crate::workspace_root().join("target/kernels")
}

/// Resolves a kernel name, downloads and unpacks its packages and builds
/// its initramfs; does nothing but look when that was done before.
///
/// A name is one of [`MATRIX`]'s, a suite (`sid`, `trixie-backports`...),
/// or `SUITE:RELEASE` for one kernel of a suite that carries several
/// (`trixie-backports:7.0.13+deb13-cloud-amd64`).
pub fn prepare(name: &str) -> Result<Kernel> {
    qemu::ensure_installed()?;
    let cache = cache_dir();
    let apt = apt::Apt::open(&cache.join("apt"))?;
    let wanted = resolve(&apt, name)?;
    let dir = cache.join(format!("{}_{}", wanted.release, wanted.version));
    let kernel = |vmlinuz: PathBuf| Kernel {
        name: name.to_string(),
        suite: wanted.suite.clone(),
        release: wanted.release.clone(),
        package_version: wanted.version.clone(),
        vmlinuz,
        initramfs: dir.join("initramfs.cpio"),
    };
    // `ready` names the image; it is written last, so a half-done
    // preparation is redone rather than booted.
    let ready = dir.join("ready");
    if let Ok(vmlinuz) = fs::read_to_string(&ready) {
        return Ok(kernel(PathBuf::from(vmlinuz.trim())));
    }
    eprintln!(
        "xtask: preparing kernel {} ({} from {})",
        wanted.release, wanted.version, wanted.suite
    );
    let root = dir.join("root");
    if root.exists() {
        fs::remove_dir_all(&root).context("clearing a half-unpacked kernel")?;
    }
    let debs = apt.download_kernel(&cache.join("debs"), &wanted)?;
    for deb in &debs {
        apt::unpack(deb, &root)?;
    }
    let vmlinuz = find_vmlinuz(&root, &wanted.release)?;
    let busybox = ensure_busybox(&apt, &cache)?;
    initramfs::build(
        &modules_dir(&root, &wanted.release)?,
        &busybox,
        &dir.join("initramfs.cpio"),
    )?;
    fs::write(&ready, vmlinuz.to_string_lossy().as_bytes())?;
    Ok(kernel(vmlinuz))
}

/// Boots `kernel` with `guest`'s settings, runs `command` (a program and its
/// arguments, looked up in the host's PATH, run in `guest.cwd`) as root and
/// powers off. The command's exit status is in the result; a failure to
/// boot or a time-out is an error only if nothing could be collected.
pub fn run_in_guest(kernel: &Kernel, guest: &Guest, command: &[&str]) -> Result<GuestOutput> {
    qemu::run(kernel, guest, command, &cache_dir().join("runs"))
}

/// `cargo xtask kernels <list|fetch|run> ...`
pub fn main(args: &[String]) -> Result<ExitCode> {
    let (sub, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(s, r)| (s.as_str(), r));
    match sub {
        "list" => list().map(|_| ExitCode::SUCCESS),
        "fetch" => {
            for name in names_or_matrix(rest) {
                let kernel = prepare(&name)?;
                println!("{name}: {} ({})", kernel.release, kernel.package_version);
            }
            Ok(ExitCode::SUCCESS)
        }
        "run" => run_command(rest),
        "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask kernels <list|fetch|run>\n\
                 \n  list                      the matrix's kernels and what they resolve to\
                 \n  fetch [KERNEL...]         download and prepare (default: the matrix)\
                 \n  run KERNEL [--smp N] [--memory MIB] [--timeout SECS] [--share DIR] -- CMD...\
                 \n                            boot KERNEL, run CMD as root in the current\
                 \n                            directory, exit with its status\
                 \n\nKERNEL: {}, a Debian suite, or SUITE:RELEASE",
                MATRIX
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown kernels task {other:?}; try `cargo xtask kernels help`"),
    }
}

fn names_or_matrix(names: &[String]) -> Vec<String> {
    if names.is_empty() {
        MATRIX.iter().map(|(name, _)| name.to_string()).collect()
    } else {
        names.to_vec()
    }
}

fn list() -> Result<()> {
    let apt = apt::Apt::open(&cache_dir().join("apt"))?;
    for (name, _) in MATRIX {
        let wanted = resolve(&apt, name)?;
        println!(
            "{name:8} {:22} {:32} {}",
            wanted.suite, wanted.release, wanted.version
        );
    }
    Ok(())
}

fn run_command(args: &[String]) -> Result<ExitCode> {
    let (options, command) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => bail!("usage: cargo xtask kernels run KERNEL [OPTIONS] -- COMMAND..."),
    };
    let Some((name, options)) = options.split_first() else {
        bail!("which kernel? (cargo xtask kernels list)");
    };
    if command.is_empty() {
        bail!("no command to run in the guest");
    }
    let mut guest = Guest::new(1);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let mut value = || {
            options
                .next()
                .with_context(|| format!("{option} needs a value"))
        };
        match option.as_str() {
            "--smp" => guest.smp = value()?.parse().context("--smp")?,
            "--memory" => guest.memory_mib = value()?.parse().context("--memory")?,
            "--timeout" => {
                guest.timeout = Duration::from_secs(value()?.parse().context("--timeout")?)
            }
            "--share" => guest.share_rw = Some(fs::canonicalize(value()?)?),
            other => bail!("unknown option {other:?}"),
        }
    }
    let kernel = prepare(name)?;
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let output = run_in_guest(&kernel, &guest, &command)?;
    print!("{}", output.output);
    if output.status.is_none() {
        // No status: the kernel's last words say why (a panic, an oops).
        let console: Vec<&str> = output.console.lines().collect();
        eprintln!("{}", console[console.len().saturating_sub(40)..].join("\n"));
    }
    eprintln!("xtask: {}", output.summary(&kernel, &guest));
    let status = output.status.unwrap_or(255);
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}

/// Finds which package a kernel name means.
fn resolve(apt: &apt::Apt, name: &str) -> Result<apt::KernelPackage> {
    if let Some((suite, release)) = name.split_once(':') {
        return apt.kernel_package(suite, Some(release));
    }
    if name == "newest" {
        let mut best: Option<apt::KernelPackage> = None;
        for suite in NEWEST_FROM {
            let Ok(candidate) = apt.kernel_package(suite, None) else {
                continue; // a suite without a cloud kernel today
            };
            if best
                .as_ref()
                .is_none_or(|b| apt::version_greater(&candidate.version, &b.version))
            {
                best = Some(candidate);
            }
        }
        return best.context("no suite of NEWEST_FROM has a cloud kernel");
    }
    let suite = MATRIX
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |(_, suite)| *suite);
    apt.kernel_package(suite, None)
}

/// The image: `boot/vmlinuz-<release>` in older packages,
/// `usr/lib/modules/<release>/vmlinuz` in newer ones.
fn find_vmlinuz(root: &Path, release: &str) -> Result<PathBuf> {
    [
        root.join(format!("boot/vmlinuz-{release}")),
        root.join(format!("usr/lib/modules/{release}/vmlinuz")),
        root.join(format!("lib/modules/{release}/vmlinuz")),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .with_context(|| format!("no vmlinuz for {release} in {}", root.display()))
}

fn modules_dir(root: &Path, release: &str) -> Result<PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|dir| root.join(dir).join(release))
        .find(|p| p.is_dir())
        .with_context(|| format!("no modules directory for {release} in {}", root.display()))
}

/// A static busybox for the initramfs: the host's if it is static (package
/// busybox-static), else Debian's unpacked into the cache.
fn ensure_busybox(apt: &apt::Apt, cache: &Path) -> Result<PathBuf> {
    let host = PathBuf::from("/bin/busybox");
    if initramfs::is_static_elf(&host) {
        return Ok(host);
    }
    let dir = cache.join("busybox");
    // Older packages put it in /bin, merged-/usr ones (trixie on) in /usr/bin.
    let unpacked = || {
        ["bin/busybox", "usr/bin/busybox"]
            .iter()
            .map(|p| dir.join(p))
            .find(|p| initramfs::is_static_elf(p))
    };
    if let Some(found) = unpacked() {
        return Ok(found);
    }
    let deb = apt.download(&cache.join("debs"), "busybox-static", None)?;
    apt::unpack(&deb, &dir)?;
    unpacked().with_context(|| {
        format!(
            "{} holds no static busybox in bin/ or usr/bin/",
            deb.display()
        )
    })
}
