//! Installs what building the eBPF programs needs, once per machine:
//! the nightly toolchain's rust-src (for `-Z build-std=core`) and
//! bpf-linker built against the nightly's own shared LLVM, following
//! ../shared/TOOLCHAIN.md. Every step checks first and does nothing when
//! its result is already there.

use std::{
    env,
    ffi::OsString,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};

const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// Where the tools live: `$VMATRACE_TOOLS_DIR`, or ~/.cache/vmatrace/tools,
/// shared by every checkout on the machine.
pub struct Tools {
    pub dir: PathBuf,
}

impl Tools {
    fn locate() -> Result<Tools> {
        let dir = match env::var_os("VMATRACE_TOOLS_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(env::var_os("HOME").context("HOME is not set")?)
                .join(".cache/vmatrace/tools"),
        };
        Ok(Tools { dir })
    }

    pub fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }

    pub fn path_env(&self) -> OsString {
        let mut dirs = vec![self.bin()];
        if let Some(path) = env::var_os("PATH") {
            dirs.extend(env::split_paths(&path));
        }
        env::join_paths(dirs).expect("PATH entries are joinable")
    }
}

pub fn ensure() -> Result<Tools> {
    let tools = Tools::locate()?;
    ensure_nightly_rust_src()?;
    ensure_bpf_linker(&tools)?;
    Ok(tools)
}

fn ensure_nightly_rust_src() -> Result<()> {
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    );
    match installed {
        Ok(list) if list.lines().any(|l| l.trim() == "rust-src") => Ok(()),
        Ok(_) => {
            eprintln!("xtask: installing rust-src for the nightly toolchain");
            run(
                "rustup",
                &["component", "add", "rust-src", "--toolchain", "nightly"],
            )
        }
        Err(_) => {
            eprintln!("xtask: installing the nightly toolchain with rust-src");
            run(
                "rustup",
                &[
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src,rustfmt",
                ],
            )
        }
    }
}

/// bpf-linker must link against the same LLVM as the nightly rustc that
/// emits the bitcode, so it is built against the nightly's libLLVM.
fn ensure_bpf_linker(tools: &Tools) -> Result<()> {
    let llvm = nightly_libllvm()?;
    let soname = llvm
        .file_name()
        .context("libLLVM path has a file name")?
        .to_string_lossy()
        .into_owned();
    let stamp_path = tools.dir.join("bpf-linker.stamp");
    let stamp = format!("bpf-linker {BPF_LINKER_VERSION} {soname}\n");
    let linker = tools.bin().join("bpf-linker");
    if fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) && works(&linker) {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against {soname} (about a minute)");
    let prefix = tools.dir.join("llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    // The build links `libLLVM.so`; the binary then loads it by soname
    // from its RUNPATH, <prefix>/lib: both names point at the nightly's.
    for name in ["libLLVM.so", soname.as_str()] {
        let link = lib.join(name);
        let _ = fs::remove_file(&link);
        symlink(&llvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    let status = Command::new("cargo")
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ])
        .args([
            "--no-default-features",
            "--features",
            BPF_LINKER_LLVM_FEATURE,
        ])
        .arg("--root")
        .arg(&tools.dir)
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .context("running cargo install bpf-linker")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed ({status})");
    }
    if !works(&linker) {
        bail!("{} was built but does not run", linker.display());
    }
    fs::write(&stamp_path, stamp).with_context(|| format!("writing {}", stamp_path.display()))?;
    Ok(())
}

/// The nightly toolchain's shared LLVM, `libLLVM.so.<ver>-rust-<ver>-nightly`.
fn nightly_libllvm() -> Result<PathBuf> {
    let sysroot = output("rustc", &["+nightly", "--print", "sysroot"])?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let entries = fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("libLLVM.so.") {
            return Ok(path);
        }
    }
    bail!(
        "the nightly toolchain in {} ships no libLLVM.so.*",
        lib.display()
    )
}

/// A target of the toolchain running this xtask (rustup sets
/// RUSTUP_TOOLCHAIN for it), e.g. x86_64-unknown-linux-musl for `cargo
/// xtask dist`; added once, then only checked.
pub fn ensure_target(target: &str) -> Result<()> {
    let installed = output("rustup", &["target", "list", "--installed"])?;
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    eprintln!("xtask: adding the {target} target to the toolchain");
    run("rustup", &["target", "add", target])
}

/// musl-gcc (Debian's musl-tools), which the static build compiles
/// mimalloc's C with (.cargo/config.toml); installed once with apt-get.
pub fn ensure_musl_gcc() -> Result<()> {
    if works(Path::new("musl-gcc")) {
        return Ok(());
    }
    eprintln!("xtask: installing musl-tools (musl-gcc) for the static build");
    run("apt-get", &["update", "-qq"])?;
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "musl-tools"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install musl-tools")?;
    if !status.success() || !works(Path::new("musl-gcc")) {
        bail!("could not install musl-tools (musl-gcc); as root: apt-get install musl-tools");
    }
    Ok(())
}

/// What the static arm64 build (`aarch64-unknown-linux-musl`) needs beside
/// the Rust target: Debian's cross gcc (`gcc-aarch64-linux-gnu`) to link
/// and to compile mimalloc's C, and musl's arm64 headers, which Debian
/// ships only in `musl-dev:arm64`: fetched with a private apt
/// configuration (the host's sources and architectures stay untouched) and
/// unpacked under the tools directory, not installed. Returns the
/// environment cargo needs for the target.
pub fn ensure_aarch64_cross(tools: &Tools) -> Result<Vec<(&'static str, String)>> {
    ensure_apt_package("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")?;
    let headers = ensure_arm64_musl_headers(tools)?;
    let gcc_headers = output("aarch64-linux-gnu-gcc", &["-print-file-name=include"])?;
    Ok(vec![
        (
            "CC_aarch64_unknown_linux_musl",
            "aarch64-linux-gnu-gcc".into(),
        ),
        // musl's headers, not the cross gcc's glibc ones (whose struct
        // layouts are glibc's), then gcc's own (stddef.h, arm_neon.h).
        (
            "CFLAGS_aarch64_unknown_linux_musl",
            format!(
                "-nostdinc -isystem {} -isystem {}",
                headers.display(),
                gcc_headers.trim()
            ),
        ),
        (
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER",
            "aarch64-linux-gnu-gcc".into(),
        ),
    ])
}

/// `program` from Debian's `package`, installed once with apt-get.
fn ensure_apt_package(program: &str, package: &str) -> Result<()> {
    if works(Path::new(program)) {
        return Ok(());
    }
    eprintln!("xtask: installing {package} ({program})");
    run("apt-get", &["update", "-qq"])?;
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("running apt-get install {package}"))?;
    if !status.success() || !works(Path::new(program)) {
        bail!("could not install {package}; as root: apt-get install {package}");
    }
    Ok(())
}

/// The include directory of musl's arm64 headers, unpacked from Debian's
/// `musl-dev:arm64` under the tools directory the first time.
fn ensure_arm64_musl_headers(tools: &Tools) -> Result<PathBuf> {
    let root = tools.dir.join("arm64-musl");
    let include = root.join("root/usr/include/aarch64-linux-musl");
    if include.join("stdio.h").is_file() {
        return Ok(include);
    }
    eprintln!("xtask: fetching musl's arm64 headers (musl-dev:arm64) from Debian");
    for dir in [
        "state/lists/partial",
        "cache/archives/partial",
        "etc/apt.conf.d",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::write(root.join("state/status"), "")?;
    fs::write(
        root.join("etc/sources.list"),
        "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
         http://deb.debian.org/debian bookworm main\n",
    )?;
    let d = root.display();
    let config = root.join("apt.conf");
    fs::write(
        &config,
        format!(
            "Dir::State \"{d}/state\";\n\
             Dir::State::status \"{d}/state/status\";\n\
             Dir::Cache \"{d}/cache\";\n\
             Dir::Etc::SourceList \"{d}/etc/sources.list\";\n\
             Dir::Etc::SourceParts \"{d}/etc/sources.list.d\";\n\
             Dir::Etc::Parts \"{d}/etc/apt.conf.d\";\n\
             APT::Architecture \"arm64\";\n\
             APT::Architectures {{ \"arm64\"; }};\n\
             APT::Sandbox::User \"root\";\n\
             Acquire::Languages \"none\";\n"
        ),
    )?;
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .current_dir(&root)
            .env("APT_CONFIG", &config)
            .status()
            .context("running apt-get")?;
        ensure!(
            status.success(),
            "`apt-get {}` failed ({status})",
            args.join(" ")
        );
        Ok(())
    };
    apt(&["update", "-qq"])?;
    apt(&["download", "musl-dev:arm64"])?;
    let deb = fs::read_dir(&root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download musl-dev:arm64 left no .deb")?;
    let unpacked = root.join("root");
    let deb_arg = deb.to_string_lossy().into_owned();
    let unpacked_arg = unpacked.to_string_lossy().into_owned();
    run("dpkg-deb", &["-x", &deb_arg, &unpacked_arg])?;
    ensure!(
        include.join("stdio.h").is_file(),
        "{} has no musl headers at {}",
        deb.display(),
        include.display()
    );
    Ok(include)
}

/// cargo-fuzz, for the trace reader's fuzz smoke run in `cargo xtask test`.
pub fn ensure_cargo_fuzz(tools: &Tools) -> Result<()> {
    let fuzz = tools.bin().join("cargo-fuzz");
    let version = Command::new(&fuzz).arg("--version").output();
    if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let status = Command::new("cargo")
        .args([
            "install",
            &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
            "--locked",
            "--force",
        ])
        .arg("--root")
        .arg(&tools.dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

fn works(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
