//! `cargo xtask <task>`: everything vmatrace needs beyond `cargo build`.
//!
//! - `setup`  installs what is missing (nightly rust-src, bpf-linker built
//!   against the nightly's own LLVM); idempotent and quick when done.
//! - `build`  setup, then build vmatrace (eBPF programs included).
//! - `run`    setup, build in release mode and run vmatrace with the rest of
//!   the arguments: `cargo xtask run -- -p 1234`.
//! - `test`   setup, then formatting, clippy and every test, the ones that
//!   load the real probes included (needs root).
//! - `bench`  setup, then the overhead benchmark (see bench.rs).

mod bench;
mod setup;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<ExitCode> {
    let (task, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(t, r)| (t.as_str(), r));
    match task {
        "setup" => setup::ensure().map(|_| ExitCode::SUCCESS),
        "build" => {
            let tools = setup::ensure()?;
            cargo(&tools, &["build", "--workspace"])?;
            Ok(ExitCode::SUCCESS)
        }
        "run" => run(rest),
        "test" => test(rest),
        "bench" => bench::run(&setup::ensure()?, rest),
        "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <setup|build|run|test|bench> [ARGS]\n\
                 \n  setup           install nightly rust-src and bpf-linker if missing\
                 \n  build           build everything\
                 \n  run -- ARGS     build (release) and run vmatrace ARGS\
                 \n  test            fmt, clippy and every test, real probes included (root)\
                 \n  bench           overhead of tracing an mmap/munmap churn workload"
            );
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown task {other:?}; try `cargo xtask help`"),
    }
}

fn run(args: &[String]) -> Result<ExitCode> {
    let tools = setup::ensure()?;
    cargo(&tools, &["build", "--release", "--package", "vmatrace"])?;
    let args: Vec<&String> = args.iter().skip_while(|a| *a == "--").collect();
    let status = Command::new(workspace_root().join("target/release/vmatrace"))
        .args(args)
        .status()
        .context("running vmatrace")?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

fn test(args: &[String]) -> Result<ExitCode> {
    let tools = setup::ensure()?;
    let root = workspace_root();
    cargo(&tools, &["fmt", "--all", "--check"])?;
    run_in(
        &root.join("vmatrace-ebpf"),
        &tools,
        "rustup",
        &["run", "nightly", "cargo", "fmt", "--check"],
    )?;
    cargo(
        &tools,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The default targets: `cargo test` then also builds the examples as
    // plain binaries, and the integration tests run the `workload` one.
    let mut test_args = vec!["test", "--workspace"];
    test_args.extend(args.iter().map(String::as_str));
    cargo(&tools, &test_args)?;
    Ok(ExitCode::SUCCESS)
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ sits in the workspace root")
        .to_path_buf()
}

/// Runs cargo (the stable toolchain that runs xtask) with the tools on PATH.
pub fn cargo(tools: &setup::Tools, args: &[&str]) -> Result<()> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_in(&workspace_root(), tools, &cargo, args)
}

pub fn run_in(dir: &Path, tools: &setup::Tools, program: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", tools.path_env())
        .env("VMATRACE_TOOLS_DIR", &tools.dir)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
