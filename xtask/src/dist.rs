//! `cargo xtask dist`: vmatrace for a machine that has no Rust (issue 15).
//! During an incident nobody builds a workspace on the production box:
//! they copy a binary or install a package.
//!
//! - One static binary: `x86_64-unknown-linux-musl`, no dynamic loader and
//!   no shared library (checked in its ELF headers), so it starts on any
//!   distribution whatever its glibc; the eBPF programs embedded as in
//!   every build (vmatrace/build.rs), mimalloc as its allocator (musl's
//!   is slow; its C compiled by musl-gcc, installed if missing). Symbols
//!   are kept: a panic's backtrace names its functions.
//! - `target/dist/vmatrace-<version>-x86_64-linux.tar.gz`: the binary, the
//!   README and ARCHITECTURE.md with the documents they link in docs/
//!   (docs/*.md, so the links work unpacked), the license files (if the
//!   source has any), the man page (docs/vmatrace.1) and the bash, zsh and
//!   fish completions (made by the binary itself, `vmatrace --generate`,
//!   from its clap definitions), deploy/.
//! - `target/dist/vmatrace_<version>_amd64.deb`: the same in Debian's
//!   places (/usr/bin, man1, the completions' vendor directories,
//!   /usr/share/doc/vmatrace with its docs/, compressed), with the
//!   systemd unit (not enabled) and the Prometheus alert rules as an
//!   example. Built with `dpkg-deb` from
//!   a staged tree, so no cargo-deb to compile.
//!
//! Both archives are reproducible (files dated at the commit, owned by
//! root, sorted) and rebuilt only when an input is newer; each is checked
//! after it is made, unpacked into a scratch directory.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{elf, setup, workspace_root};

/// The static target; `setup::ensure_target` adds it to the toolchain.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The ELF machine of `TARGET`'s binaries: the archives named x86_64 and
/// amd64 must hold nothing else (issue 23 adds an aarch64 build beside).
const TARGET_MACHINE: u16 = elf::EM_X86_64;

/// Where everything is written, relative to the workspace.
const DIST_DIR: &str = "target/dist";

/// The package's one-line synopsis (Debian wants it under 80 characters).
const SYNOPSIS: &str = "trace the mapping calls that split VMAs or hit vm.max_map_count";

/// The package's long description, one paragraph per element.
const DESCRIPTION: &[&str] = &[
    "vmatrace is an eBPF tracer for the Linux memory-mapping system calls \
     (mmap, munmap, brk, mprotect, mremap, madvise, mlock, ...). It keeps the \
     kernel's own VMA count per process and flags every call that splits a \
     mapping, fails with ENOMEM, or takes the process near vm.max_map_count, \
     with the user stack that made it. It records to a file, to be replayed \
     and reported later without root, and exports every process's counts to \
     Prometheus (vmatrace serve; a systemd unit is included, not enabled).",
    "A static binary, with no dependencies. Tracing needs root and a kernel \
     with BTF (/sys/kernel/btf/vmlinux).",
];

/// The generated files: (`vmatrace --generate` argument, file name).
const GENERATED: &[(&str, &str)] = &[
    ("man", "vmatrace.1"),
    ("complete-bash", "vmatrace.bash"),
    ("complete-zsh", "_vmatrace"),
    ("complete-fish", "vmatrace.fish"),
];

/// What `cargo xtask dist` made.
pub struct Dist {
    pub binary: PathBuf,
    pub tarball: PathBuf,
    pub deb: PathBuf,
}

/// `cargo xtask dist`
pub fn main(args: &[String]) -> Result<ExitCode> {
    if let Some(arg) = args.first() {
        if matches!(arg.as_str(), "help" | "--help" | "-h") {
            println!(
                "usage: cargo xtask dist\n\
                 \nBuilds the static binary ({TARGET}, eBPF programs embedded) and packs it\
                 \nwith the README, ARCHITECTURE.md, docs/, the man page, the completions and deploy/ into\
                 \n{DIST_DIR}/vmatrace-VERSION-x86_64-linux.tar.gz and {DIST_DIR}/vmatrace_VERSION_amd64.deb;\
                 \nthen the static arm64 binary ({AARCH64_TARGET}; not packed yet)."
            );
            return Ok(ExitCode::SUCCESS);
        }
        bail!("cargo xtask dist takes no arguments (got {arg:?})");
    }
    let tools = setup::ensure()?;
    let dist = build(&tools)?;
    let arm64 = aarch64_static_binary(&tools)?;
    for binary in [&dist.binary, &arm64] {
        let size = fs::metadata(binary)?.len();
        println!(
            "{}  {:.1} MB, {}",
            binary.display(),
            size as f64 / 1e6,
            elf::linking_of(binary)?.describe()
        );
    }
    println!("{}", dist.tarball.display());
    println!("{}", dist.deb.display());
    Ok(ExitCode::SUCCESS)
}

/// Builds the static binary, packs the tarball and the .deb (when an
/// input is newer than them) and checks both.
pub fn build(tools: &setup::Tools) -> Result<Dist> {
    let binary = static_binary(tools)?;
    let meta = Metadata::read()?;
    let said = version_of(&binary)?;
    ensure!(
        said.starts_with(&format!("vmatrace {} (", meta.version)),
        "{} says {said:?}, but the workspace is version {}",
        binary.display(),
        meta.version
    );
    if !said.contains("(git ") {
        eprintln!("xtask: warning: {said:?} names no commit (not built from a git checkout)");
    }
    warn_if_dirty();
    let dist = workspace_root().join(DIST_DIR);
    fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;
    let inputs = inputs(&binary)?;
    let tarball = dist.join(format!("vmatrace-{}-x86_64-linux.tar.gz", meta.version));
    let deb = dist.join(format!("vmatrace_{}_amd64.deb", meta.version));
    if newer_than_all(&tarball, &inputs) && newer_than_all(&deb, &inputs) {
        eprintln!("xtask: {} and the .deb are up to date", tarball.display());
    } else {
        let generated = generate(&binary, &dist.join("generated"))?;
        let epoch = source_date_epoch(&binary);
        pack_tarball(&binary, &generated, &meta, epoch, &tarball)?;
        pack_deb(&binary, &generated, &meta, epoch, &deb)?;
    }
    check_tarball(&tarball, &said)?;
    check_deb(&deb, &said, &meta)?;
    fs::remove_dir_all(dist.join("check")).context("removing the scratch directories")?;
    Ok(Dist {
        binary,
        tarball,
        deb,
    })
}

/// `cargo build --release --target x86_64-unknown-linux-musl`, then the
/// check that the result is static: the one thing this build is for.
pub fn static_binary(tools: &setup::Tools) -> Result<PathBuf> {
    setup::ensure_target(TARGET)?;
    setup::ensure_musl_gcc()?;
    crate::cargo(
        tools,
        &[
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--package",
            "vmatrace",
            "--bin",
            "vmatrace",
        ],
    )?;
    let binary = workspace_root()
        .join("target")
        .join(TARGET)
        .join("release/vmatrace");
    check_static(&binary)?;
    Ok(binary)
}

/// Fails unless `binary`'s ELF headers name no interpreter and no shared
/// library, and the target's machine.
pub fn check_static(binary: &Path) -> Result<()> {
    check_static_for(binary, TARGET, TARGET_MACHINE)
}

fn check_static_for(binary: &Path, target: &str, machine: u16) -> Result<()> {
    let linking = elf::linking_of(binary)?;
    ensure!(
        linking.is_static(),
        "{} is not static: {}",
        binary.display(),
        linking.describe()
    );
    ensure!(
        linking.machine == machine,
        "{} is for ELF machine {}, not {target}'s {machine}",
        binary.display(),
        linking.machine
    );
    eprintln!("xtask: {}: {}", binary.display(), linking.describe());
    Ok(())
}

/// The static arm64 target, built beside `TARGET` (issue 23).
pub const AARCH64_TARGET: &str = "aarch64-unknown-linux-musl";

/// `cargo build --release --target aarch64-unknown-linux-musl` with
/// Debian's cross gcc and musl's arm64 headers (`setup::ensure_aarch64_cross`),
/// checked static and arm64; where `qemu-aarch64` (Debian's qemu-user) is
/// installed it is started too, and must say it is the aarch64 build.
pub fn aarch64_static_binary(tools: &setup::Tools) -> Result<PathBuf> {
    setup::ensure_target(AARCH64_TARGET)?;
    let cross = setup::ensure_aarch64_cross(tools)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let args = [
        "build",
        "--release",
        "--locked",
        "--target",
        AARCH64_TARGET,
        "--package",
        "vmatrace",
        "--bin",
        "vmatrace",
    ];
    eprintln!("xtask: {cargo} {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .env("PATH", tools.path_env())
        .env("VMATRACE_TOOLS_DIR", &tools.dir)
        .envs(cross)
        .status()
        .context("running cargo build for aarch64")?;
    ensure!(status.success(), "the aarch64 build failed ({status})");
    let binary = workspace_root()
        .join("target")
        .join(AARCH64_TARGET)
        .join("release/vmatrace");
    check_static_for(&binary, AARCH64_TARGET, elf::EM_AARCH64)?;
    if let Ok(out) = Command::new("qemu-aarch64")
        .arg(&binary)
        .arg("--version")
        .output()
    {
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        ensure!(
            out.status.success() && said.ends_with(", aarch64)"),
            "{} under qemu-aarch64 says {said:?} ({})",
            binary.display(),
            out.status
        );
        eprintln!("xtask: {}: {said} (under qemu-aarch64)", binary.display());
    }
    Ok(binary)
}

/// `vmatrace --version`, which also shows the binary starts at all.
fn version_of(binary: &Path) -> Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    ensure!(
        out.status.success(),
        "{} --version failed ({}): {}",
        binary.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What the package says about itself, from `cargo metadata`.
struct Metadata {
    version: String,
    license: String,
    /// The package's Homepage, if Cargo.toml names one.
    repository: Option<String>,
}

impl Metadata {
    fn read() -> Result<Metadata> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .args(["metadata", "--no-deps", "--format-version", "1", "--locked"])
            .current_dir(workspace_root())
            .output()
            .context("running cargo metadata")?;
        ensure!(
            out.status.success(),
            "cargo metadata failed ({})",
            out.status
        );
        let meta: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
        let package = meta["packages"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "vmatrace"))
            .context("cargo metadata lists no vmatrace package")?;
        let field = |name: &str| -> Result<String> {
            package[name]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("vmatrace/Cargo.toml has no {name}"))
        };
        Ok(Metadata {
            version: field("version")?,
            license: field("license")?,
            repository: field("repository").ok(),
        })
    }
}

/// The binary says the commit it was built from; changes not committed
/// are in it too, unnamed.
fn warn_if_dirty() {
    let status = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(workspace_root())
        .output();
    if let Ok(out) = status
        && out.status.success()
        && !out.stdout.is_empty()
    {
        eprintln!(
            "xtask: warning: the work tree has uncommitted changes; the binary names \
             its commit but holds them too"
        );
    }
}

/// Every file the archives are made of, the xtask that packs them too.
fn inputs(binary: &Path) -> Result<Vec<PathBuf>> {
    let root = workspace_root();
    let mut inputs = vec![
        binary.to_path_buf(),
        std::env::current_exe().context("xtask's own path")?,
        root.join("README.md"),
        root.join(ARCHITECTURE),
    ];
    inputs.extend(doc_files()?);
    inputs.extend(license_files()?);
    inputs.extend(deploy_files()?);
    Ok(inputs)
}

/// `output` exists and was written after every input changed.
fn newer_than_all(output: &Path, inputs: &[PathBuf]) -> bool {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(made) = modified(output) else {
        return false;
    };
    inputs
        .iter()
        .all(|input| modified(input).is_some_and(|changed| changed <= made))
}

/// LICENSE*, COPYING* at the workspace's root.
fn license_files() -> Result<Vec<PathBuf>> {
    let root = workspace_root();
    let mut files = Vec::new();
    for entry in fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let upper = name.to_uppercase();
        if (upper.starts_with("LICENSE")
            || upper.starts_with("LICENCE")
            || upper.starts_with("COPYING"))
            && path.is_file()
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Shipped beside the README, as in the source.
const ARCHITECTURE: &str = "ARCHITECTURE.md";

/// docs/*.md, which the README and ARCHITECTURE.md link to: every one is
/// shipped, so a new document needs no change here. Sorted.
fn doc_files() -> Result<Vec<PathBuf>> {
    let dir = workspace_root().join("docs");
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    ensure!(
        files.iter().any(|f| f.ends_with("trace-format.md")),
        "{} has no trace-format.md",
        dir.display()
    );
    Ok(files)
}

/// A document's file name (`guide.md`).
fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned()
}

/// deploy/'s files, relative paths sorted.
fn deploy_files() -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, files)?;
            } else {
                files.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(&workspace_root().join("deploy"), &mut files)?;
    files.sort();
    Ok(files)
}

/// Runs `vmatrace --generate` for the man page and each completion
/// script; returns the directory holding them (names of [`GENERATED`]).
fn generate(binary: &Path, dir: &Path) -> Result<PathBuf> {
    fresh_dir(dir)?;
    for (what, name) in GENERATED {
        let out = Command::new(binary)
            .args(["--generate", what])
            .output()
            .with_context(|| format!("running {} --generate {what}", binary.display()))?;
        ensure!(
            out.status.success() && !out.stdout.is_empty(),
            "{} --generate {what} failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        write_file(&dir.join(name), &out.stdout, 0o644)?;
    }
    Ok(dir.to_path_buf())
}

/// The date every packed file gets: `$SOURCE_DATE_EPOCH`, else the
/// commit's, else the binary's, so two packs of one build are the same
/// bytes.
fn source_date_epoch(binary: &Path) -> u64 {
    let from_env = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok());
    let from_git = || {
        let out = Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(workspace_root())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    let from_binary = || {
        fs::metadata(binary)
            .and_then(|m| m.modified())
            .ok()?
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    };
    from_env.or_else(from_git).or_else(from_binary).unwrap_or(0)
}

/// `vmatrace-<version>-x86_64-linux/` with the binary at its top, as
/// people unpack it and run `./vmatrace`.
fn pack_tarball(
    binary: &Path,
    generated: &Path,
    meta: &Metadata,
    epoch: u64,
    tarball: &Path,
) -> Result<()> {
    let root = workspace_root();
    let name = format!("vmatrace-{}-x86_64-linux", meta.version);
    let stage = root.join(DIST_DIR).join("stage");
    fresh_dir(&stage)?;
    let top = stage.join(&name);
    copy_file(binary, &top.join("vmatrace"), 0o755)?;
    copy_file(&root.join("README.md"), &top.join("README.md"), 0o644)?;
    copy_file(&root.join(ARCHITECTURE), &top.join(ARCHITECTURE), 0o644)?;
    for doc in doc_files()? {
        copy_file(&doc, &top.join("docs").join(file_name(&doc)), 0o644)?;
    }
    for license in license_files()? {
        copy_file(
            &license,
            &top.join(license.file_name().expect("a file")),
            0o644,
        )?;
    }
    copy_file(
        &generated.join("vmatrace.1"),
        &top.join("docs/vmatrace.1"),
        0o644,
    )?;
    for (_, file) in &GENERATED[1..] {
        copy_file(
            &generated.join(file),
            &top.join("complete").join(file),
            0o644,
        )?;
    }
    for file in deploy_files()? {
        let relative = file.strip_prefix(&root).expect("under the root");
        copy_file(&file, &top.join(relative), 0o644)?;
    }
    settle(&top, epoch)?;
    let partial = tarball.with_extension("partial");
    run(Command::new("tar")
        .args(["--create", "--file"])
        .arg(&partial)
        .args([
            "--use-compress-program=gzip -9n",
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=gnu",
        ])
        .arg(format!("--mtime=@{epoch}"))
        .arg("--directory")
        .arg(&stage)
        .arg(&name))?;
    fs::rename(&partial, tarball).with_context(|| format!("writing {}", tarball.display()))?;
    fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    Ok(())
}

/// Where each file goes in the .deb (and the installed system).
mod deb_paths {
    pub const BINARY: &str = "usr/bin/vmatrace";
    pub const MAN: &str = "usr/share/man/man1/vmatrace.1.gz";
    pub const BASH: &str = "usr/share/bash-completion/completions/vmatrace";
    pub const ZSH: &str = "usr/share/zsh/vendor-completions/_vmatrace";
    pub const FISH: &str = "usr/share/fish/vendor_completions.d/vmatrace.fish";
    pub const DOC: &str = "usr/share/doc/vmatrace";
    pub const UNIT: &str = "usr/lib/systemd/system/vmatrace.service";
    pub const ALERTS: &str = "usr/share/doc/vmatrace/examples/vmatrace-alerts.yml";
}

/// The unit in deploy/ starts the binary where a tarball user puts it;
/// the package's starts it where the package puts it.
const UNIT_BINARY_IN_DEPLOY: &str = "/usr/local/bin/vmatrace";

fn pack_deb(
    binary: &Path,
    generated: &Path,
    meta: &Metadata,
    epoch: u64,
    deb: &Path,
) -> Result<()> {
    let root = workspace_root();
    let stage = root.join(DIST_DIR).join("deb");
    fresh_dir(&stage)?;
    copy_file(binary, &stage.join(deb_paths::BINARY), 0o755)?;
    write_file(
        &stage.join(deb_paths::MAN),
        &gzip(&fs::read(generated.join("vmatrace.1"))?)?,
        0o644,
    )?;
    for (file, to) in [
        ("vmatrace.bash", deb_paths::BASH),
        ("_vmatrace", deb_paths::ZSH),
        ("vmatrace.fish", deb_paths::FISH),
    ] {
        copy_file(&generated.join(file), &stage.join(to), 0o644)?;
    }
    // Debian compresses documentation over 4 KiB (policy 12.3).
    let doc = stage.join(deb_paths::DOC);
    // docs/ beside the README, as in the source, so its links hold (with
    // .gz added, which readers such as zless and dh_compress leave).
    for (from, name) in [
        (root.join("README.md"), "README.md.gz".to_string()),
        (root.join(ARCHITECTURE), format!("{ARCHITECTURE}.gz")),
    ]
    .into_iter()
    .chain(
        doc_files()?
            .into_iter()
            .map(|f| (f.clone(), format!("docs/{}.gz", file_name(&f)))),
    ) {
        write_file(&doc.join(name), &gzip(&fs::read(&from)?)?, 0o644)?;
    }
    write_file(&doc.join("copyright"), copyright(meta)?.as_bytes(), 0o644)?;
    copy_file(
        &root.join("deploy/prometheus/vmatrace-alerts.yml"),
        &stage.join(deb_paths::ALERTS),
        0o644,
    )?;
    write_file(&stage.join(deb_paths::UNIT), unit()?.as_bytes(), 0o644)?;
    let installed_kib = installed_size_kib(&stage)?;
    let debian = stage.join("DEBIAN");
    write_file(&debian.join("md5sums"), md5sums(&stage)?.as_bytes(), 0o644)?;
    write_file(
        &debian.join("control"),
        control(meta, installed_kib).as_bytes(),
        0o644,
    )?;
    settle(&stage, epoch)?;
    let partial = deb.with_extension("partial");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&partial)
        .env("SOURCE_DATE_EPOCH", epoch.to_string()))?;
    fs::rename(&partial, deb).with_context(|| format!("writing {}", deb.display()))?;
    fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    Ok(())
}

/// deploy/systemd/vmatrace.service, starting /usr/bin/vmatrace.
fn unit() -> Result<String> {
    let path = workspace_root().join("deploy/systemd/vmatrace.service");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let exec = format!("ExecStart={UNIT_BINARY_IN_DEPLOY} ");
    ensure!(
        text.lines().any(|l| l.starts_with(&exec)),
        "{} no longer starts {UNIT_BINARY_IN_DEPLOY} (ExecStart): update xtask/src/dist.rs",
        path.display()
    );
    Ok(text.replace(UNIT_BINARY_IN_DEPLOY, &format!("/{}", deb_paths::BINARY)))
}

fn control(meta: &Metadata, installed_kib: u64) -> String {
    let maintainer = match (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
        (Ok(name), Ok(email)) => format!("{name} <{email}>"),
        _ => "vmatrace developers <vmatrace@example.invalid>".to_string(),
    };
    let mut text = format!(
        "Package: vmatrace\n\
         Version: {}\n\
         Architecture: amd64\n\
         Maintainer: {maintainer}\n\
         Installed-Size: {installed_kib}\n\
         Section: utils\n\
         Priority: optional\n",
        meta.version
    );
    if let Some(homepage) = &meta.repository {
        text.push_str(&format!("Homepage: {homepage}\n"));
    }
    text.push_str(&format!("Description: {SYNOPSIS}\n"));
    for (i, paragraph) in DESCRIPTION.iter().enumerate() {
        if i > 0 {
            text.push_str(" .\n");
        }
        for line in wrap(paragraph, 72) {
            text.push(' ');
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

/// A machine-readable debian/copyright with the license Cargo.toml
/// declares; the license texts, where the source has them, are copied
/// beside it.
fn copyright(meta: &Metadata) -> Result<String> {
    let licenses = license_files()?;
    let texts = if licenses.is_empty() {
        "The source declares this license in Cargo.toml; it ships no license text.".to_string()
    } else {
        let names: Vec<String> = licenses
            .iter()
            .map(|p| {
                p.file_name()
                    .expect("a file")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        format!("The texts are in the source: {}.", names.join(", "))
    };
    let source = meta
        .repository
        .as_ref()
        .map(|r| format!("Source: {r}\n"))
        .unwrap_or_default();
    Ok(format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: vmatrace\n\
         {source}\
         \n\
         Files: *\n\
         Copyright: the vmatrace developers\n\
         License: {}\n {texts}\n",
        meta.license.replace(" OR ", " or ")
    ))
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// dpkg's Installed-Size: the files' sizes in KiB, each rounded up.
fn installed_size_kib(stage: &Path) -> Result<u64> {
    Ok(files_under(stage)?
        .iter()
        .map(|(_, size)| size.div_ceil(1024))
        .sum())
}

/// DEBIAN/md5sums: `md5sum` of every packed file, paths relative to /.
fn md5sums(stage: &Path) -> Result<String> {
    let files: Vec<PathBuf> = files_under(stage)?
        .into_iter()
        .map(|(path, _)| path.strip_prefix(stage).expect("under").to_path_buf())
        .collect();
    let out = Command::new("md5sum")
        .args(&files)
        .current_dir(stage)
        .output()
        .context("running md5sum")?;
    ensure!(out.status.success(), "md5sum failed ({})", out.status);
    Ok(String::from_utf8(out.stdout)?)
}

/// Every regular file under `dir` (DEBIAN/ left out) and its size, sorted.
fn files_under(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    fn walk(dir: &Path, files: &mut Vec<(PathBuf, u64)>) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() && entry.file_name() != "DEBIAN" {
                walk(&entry.path(), files)?;
            } else if meta.is_file() {
                files.push((entry.path(), meta.len()));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// Unpacks the tarball into a scratch directory and checks it holds what
/// it should and that its binary is static and says `said`.
fn check_tarball(tarball: &Path, said: &str) -> Result<()> {
    let scratch = workspace_root().join(DIST_DIR).join("check/tarball");
    fresh_dir(&scratch)?;
    run(Command::new("tar")
        .arg("--extract")
        .arg("--file")
        .arg(tarball)
        .arg("--directory")
        .arg(&scratch))?;
    let name = tarball
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .context("a .tar.gz")?;
    let top = scratch.join(name);
    let docs: Vec<String> = doc_files()?
        .iter()
        .map(|f| format!("docs/{}", file_name(f)))
        .collect();
    for file in [
        "vmatrace",
        "README.md",
        ARCHITECTURE,
        "docs/vmatrace.1",
        "docs/trace-format.md",
        "complete/vmatrace.bash",
        "complete/_vmatrace",
        "complete/vmatrace.fish",
        "deploy/systemd/vmatrace.service",
        "deploy/prometheus/vmatrace-alerts.yml",
    ]
    .into_iter()
    .chain(docs.iter().map(String::as_str))
    {
        ensure!(
            top.join(file).is_file(),
            "{} has no {name}/{file}",
            tarball.display()
        );
    }
    check_unpacked_binary(&top.join("vmatrace"), said)?;
    fs::remove_dir_all(&scratch)?;
    eprintln!("xtask: {}: checked", tarball.display());
    Ok(())
}

/// Checks the .deb's fields, unpacks it into a scratch root (never the
/// host's /) and checks every file, the unit's ExecStart and the binary.
fn check_deb(deb: &Path, said: &str, meta: &Metadata) -> Result<()> {
    let fields = output(Command::new("dpkg-deb").arg("--field").arg(deb).args([
        "Package",
        "Version",
        "Architecture",
    ]))?;
    let expected = format!(
        "Package: vmatrace\nVersion: {}\nArchitecture: amd64\n",
        meta.version
    );
    ensure!(
        fields == expected,
        "{} has the fields\n{fields}",
        deb.display()
    );
    let scratch = workspace_root().join(DIST_DIR).join("check/deb");
    fresh_dir(&scratch)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&scratch))?;
    let docs: Vec<String> = doc_files()?
        .iter()
        .map(|f| format!("{}/docs/{}.gz", deb_paths::DOC, file_name(f)))
        .collect();
    let architecture = format!("{}/{ARCHITECTURE}.gz", deb_paths::DOC);
    for file in [
        deb_paths::BINARY,
        deb_paths::MAN,
        deb_paths::BASH,
        deb_paths::ZSH,
        deb_paths::FISH,
        deb_paths::UNIT,
        deb_paths::ALERTS,
        "usr/share/doc/vmatrace/README.md.gz",
        architecture.as_str(),
        "usr/share/doc/vmatrace/docs/trace-format.md.gz",
        "usr/share/doc/vmatrace/copyright",
    ]
    .into_iter()
    .chain(docs.iter().map(String::as_str))
    {
        ensure!(
            scratch.join(file).is_file(),
            "{} installs no /{file}",
            deb.display()
        );
    }
    let unit = fs::read_to_string(scratch.join(deb_paths::UNIT))?;
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .context("the unit has no ExecStart")?;
    let program = exec.split_whitespace().next().unwrap_or_default();
    ensure!(
        program == format!("/{}", deb_paths::BINARY),
        "the packaged unit starts {program}, not /{}",
        deb_paths::BINARY
    );
    run(Command::new("gzip")
        .arg("--test")
        .arg(scratch.join(deb_paths::MAN)))?;
    check_unpacked_binary(&scratch.join(deb_paths::BINARY), said)?;
    fs::remove_dir_all(&scratch)?;
    eprintln!("xtask: {}: checked", deb.display());
    Ok(())
}

fn check_unpacked_binary(binary: &Path, said: &str) -> Result<()> {
    let mode = fs::metadata(binary)?.permissions().mode();
    ensure!(
        mode & 0o111 == 0o111,
        "{} is mode {mode:o}",
        binary.display()
    );
    check_static(binary)?;
    let unpacked = version_of(binary)?;
    ensure!(
        unpacked == said,
        "the packed binary says {unpacked:?}, the built one {said:?}"
    );
    Ok(())
}

/// Dates every file and directory under `dir` at `epoch` and makes the
/// directories 0755, so what is packed does not depend on when or under
/// which umask it was staged.
fn settle(dir: &Path, epoch: u64) -> Result<()> {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch);
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            settle(&path, epoch)?;
        } else {
            date(&path, when)?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    date(dir, when)
}

fn date(path: &Path, when: SystemTime) -> Result<()> {
    fs::File::open(path)
        .and_then(|file| file.set_modified(when))
        .with_context(|| format!("dating {}", path.display()))
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running gzip")?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer.join().expect("the writer does not panic")?;
    ensure!(out.status.success(), "gzip failed ({})", out.status);
    Ok(out.stdout)
}

fn fresh_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let data = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_file(to, &data, mode)
}

/// Writes a file with `mode`, whatever the umask ([`settle`] sets the
/// directories').
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().expect("a file in a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed ({status})");
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_file_has_debians_fields() {
        let meta = Metadata {
            version: "1.2.3".into(),
            license: "MIT OR Apache-2.0".into(),
            repository: Some("https://example.invalid/vmatrace".into()),
        };
        let control = control(&meta, 7000);
        for field in [
            "Package: vmatrace\n",
            "Version: 1.2.3\n",
            "Architecture: amd64\n",
            "Installed-Size: 7000\n",
            "Section: utils\n",
            "Priority: optional\n",
        ] {
            assert!(control.contains(field), "no {field:?} in\n{control}");
        }
        assert!(control.contains("\nMaintainer: "));
        assert!(
            !control.contains("Depends"),
            "a static binary depends on nothing"
        );
        let description = control.split("Description: ").nth(1).unwrap();
        let mut lines = description.lines();
        assert!(lines.next().unwrap().len() < 80, "the synopsis fits");
        for line in lines {
            assert!(line.starts_with(' ') && line.len() <= 80, "{line:?}");
        }
        assert!(description.contains("\n .\n"), "paragraphs are separated");
        assert!(control.ends_with('\n'));
    }

    #[test]
    fn the_packaged_unit_starts_the_packaged_binary() {
        let unit = unit().unwrap();
        assert!(
            unit.lines()
                .any(|l| l.starts_with("ExecStart=/usr/bin/vmatrace serve ")),
            "{unit}"
        );
        assert!(!unit.contains(UNIT_BINARY_IN_DEPLOY));
    }
}
