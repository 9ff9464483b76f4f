//! Builds the eBPF programs (vmatrace-ebpf) with the nightly toolchain and
//! bpf-linker, and hands the object to the loader through OUT_DIR; also
//! names the git commit built, for `vmatrace --version`.
//! `cargo xtask setup` installs what this needs; it is run by every xtask
//! command, so `cargo xtask run` / `cargo xtask test` never reach here
//! without it.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const EBPF_TARGET: &str = "bpfel-unknown-none";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("vmatrace/ sits in the workspace root");
    let ebpf_dir = root.join("vmatrace-ebpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let (commit, date) = commit(root);
    println!("cargo:rustc-env=VMATRACE_COMMIT={commit}");
    println!("cargo:rustc-env=VMATRACE_COMMIT_DATE={date}");
    for watched in [
        "vmatrace-ebpf/src",
        "vmatrace-ebpf/Cargo.toml",
        "vmatrace-ebpf/Cargo.lock",
        "vmatrace-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=VMATRACE_TOOLS_DIR");
    println!("cargo:rerun-if-env-changed=VMATRACE_SKIP_EBPF");
    // Builds that only read traces (the fuzz target) need no eBPF programs
    // and no bpf-linker: they embed an empty object, and tracing with such
    // a build fails with a clear message.
    if env::var_os("VMATRACE_SKIP_EBPF").is_some() {
        std::fs::write(out_dir.join("vmatrace.bpf.o"), b"").expect("writing to OUT_DIR");
        return;
    }

    let target_dir = root.join("target").join("bpf");
    let path = tools_path();
    let status = Command::new("rustup")
        .args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .args(["--target", EBPF_TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&ebpf_dir)
        // The outer cargo's settings are for the host build; none apply here.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .env("PATH", path)
        .status()
        .unwrap_or_else(|e| panic!("cannot run rustup to build the eBPF programs: {e}"));
    if !status.success() {
        panic!(
            "building vmatrace-ebpf failed ({status}). Is the toolchain set up? \
             Run `cargo xtask setup` (installs rust-src for nightly and bpf-linker)."
        );
    }
    let object = target_dir
        .join(EBPF_TARGET)
        .join("release")
        .join("vmatrace");
    copy(&object, &out_dir.join("vmatrace.bpf.o"));
}

/// `git <short hash> <commit date>` of the checkout being built, for
/// `--version`: a copied binary says which source it came from; and the
/// commit date alone (YYYY-MM-DD, or empty), the man page's date.
/// Outside a git checkout (a source tarball), `$VMATRACE_COMMIT` names it,
/// or the version says it is unknown. The files git moves on a commit or
/// checkout are watched, so the name never lags behind HEAD.
fn commit(root: &Path) -> (String, String) {
    println!("cargo:rerun-if-env-changed=VMATRACE_COMMIT");
    if let Some(named) = env::var_os("VMATRACE_COMMIT") {
        return (named.to_string_lossy().into_owned(), String::new());
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
    };
    let Some(hash) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return (
            "commit unknown: not built from a git checkout".into(),
            String::new(),
        );
    };
    // HEAD names the branch; the branch's ref (loose or packed) moves on a
    // commit. Only files that exist are watched: cargo would rerun this
    // script on every build for one that does not.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = root.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    match git(&["log", "-1", "--format=%cs", "HEAD"]) {
        Some(date) => (format!("git {hash} {date}"), date),
        None => (format!("git {hash}"), String::new()),
    }
}

/// PATH with the directory `cargo xtask setup` installs bpf-linker into
/// first, so a shell that never added it still builds.
fn tools_path() -> std::ffi::OsString {
    let tools = env::var_os("VMATRACE_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vmatrace/tools")));
    let mut dirs: Vec<PathBuf> = tools.map(|t| t.join("bin")).into_iter().collect();
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    env::join_paths(dirs).expect("PATH entries are joinable")
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
}
