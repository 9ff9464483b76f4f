//! `cargo xtask <task>`: everything vmatrace needs beyond `cargo build`.
//!
//! - `setup`  installs what is missing (nightly rust-src, bpf-linker built
//!   against the nightly's own LLVM); idempotent and quick when done.
//! - `build`  setup, then build vmatrace (eBPF programs included).
//! - `run`    setup, build in release mode and run vmatrace with the rest of
//!   the arguments: `cargo xtask run -- -p 1234`.
//! - `test`   setup, then formatting, clippy and every test, the ones that
//!   load the real probes included (needs root); then the static build of
//!   `dist`, checked and run through the core tests.
//! - `bench`  setup, then the overhead benchmark (see bench.rs).
//! - `dist`   setup, then the static binary, its tarball and its .deb in
//!   target/dist (see dist.rs).
//! - `kernels` Debian kernels under QEMU: list, fetch, run a command in one
//!   (see kernels.rs).
//! - `test-kernels` the portable core of the integration tests inside each
//!   kernel of the matrix (see matrix.rs); `test` runs it too, last.

mod bench;
mod dist;
mod elf;
mod kernels;
mod matrix;
mod setup;
mod verifier;

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
        "dist" => dist::main(rest),
        "kernels" => kernels::main(rest),
        "test-kernels" => matrix::main(rest),
        "verifier-stats" => verifier_stats(),
        "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <setup|build|run|test|test-kernels|bench|verifier-stats|dist|kernels> [ARGS]\n\
                 \n  setup           install nightly rust-src and bpf-linker if missing\
                 \n  build           build everything\
                 \n  run -- ARGS     build (release) and run vmatrace ARGS\
                 \n  test            fmt, clippy and every test, real probes included (root),\
                 \n                  then the static build of dist with the core tests, then\
                 \n                  test-kernels (VMATRACE_SKIP_KERNELS=1 skips it outside CI)\
                 \n  test-kernels [KERNEL...]\
                 \n                  the integration tests' portable core as root in Debian\
                 \n                  kernels under QEMU, one line per kernel and test\
                 \n  bench           overhead of tracing an mmap/munmap churn workload\
                 \n                  (--static: of the dist build; --compare[=bpftrace|strace]:\
                 \n                  beside the peers)\
                 \n  verifier-stats  what loading each program cost the kernel's verifier\
                 \n                  (instructions processed, time): most of the start
                 \n  dist            the static binary, target/dist/vmatrace-VERSION-x86_64-linux.tar.gz\
                 \n                  and vmatrace_VERSION_amd64.deb (man page, completions),\
                 \n                  and the static aarch64 binary (not packed yet)\
                 \n  kernels ...     Debian kernels under QEMU (cargo xtask kernels help)"
            );
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown task {other:?}; try `cargo xtask help`"),
    }
}

/// `cargo xtask verifier-stats`: the release build's programs as this
/// kernel's verifier loads them.
fn verifier_stats() -> Result<ExitCode> {
    let tools = setup::ensure()?;
    cargo(&tools, &["build", "--release", "--package", "vmatrace"])?;
    let loads = verifier::program_loads(&workspace_root().join("target/release/vmatrace"))?;
    println!("{:<16} {:>8} {:>9}", "program", "insns", "time");
    for load in loads {
        println!(
            "{:<16} {:>8} {:>6.1} ms",
            load.name,
            load.insns_processed,
            load.verification_us as f64 / 1000.0
        );
    }
    Ok(ExitCode::SUCCESS)
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
    let binary = release_binary(&tools)?;
    let counts = cargo_test(&tools, &test_args, &[("VMATRACE_BIN", binary.as_str())])?;
    let static_counts = static_build_tests(&tools)?;
    fuzz_smoke(&tools)?;
    let kernels = if skip_kernels() {
        matrix::Counts::default()
    } else {
        let names: Vec<String> = matrix::KERNELS.iter().map(|k| k.to_string()).collect();
        matrix::run(&tools, &names, matrix::TESTS)?
    };
    // One closing line for every test run above (cargo's own last line is
    // that of a doc-test crate with none).
    println!(
        "tests: {} passed, {} failed",
        counts.0 + static_counts.0 + kernels.passed,
        counts.1 + static_counts.1 + kernels.failed
    );
    Ok(if kernels.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The integration tests judge the binary users run: the release build
/// (`VMATRACE_BIN`, unless set already). The debug build's printer is many
/// times slower: on this 2-CPU machine, with two tests' split storms at
/// once, it fell behind and lost events in 3 runs of 3 that the release
/// build, under the same load, ran without a loss. The unit tests keep the
/// debug build's overflow checks.
fn release_binary(tools: &setup::Tools) -> Result<String> {
    if let Some(set) = env::var_os("VMATRACE_BIN").filter(|v| !v.is_empty()) {
        return Ok(set.to_string_lossy().into_owned());
    }
    cargo(tools, &["build", "--release", "--package", "vmatrace"])?;
    Ok(workspace_root()
        .join("target/release/vmatrace")
        .display()
        .to_string())
}

/// What `cargo xtask dist` ships, tested: the static build is made, its
/// ELF checked for no interpreter and no shared library, the tarball and
/// the .deb packed and checked unpacked; then the kernel matrix's core
/// integration tests run again on this host with the static binary
/// (`VMATRACE_BIN`; the test executables are the ones just built).
fn static_build_tests(tools: &setup::Tools) -> Result<(u64, u64)> {
    let dist = dist::build(tools)?;
    let binary = dist.binary.display().to_string();
    let mut args = vec![
        "test",
        "--workspace",
        "--test",
        "trace",
        "--test",
        "tracefile",
        "--",
        "--exact",
    ];
    args.extend(matrix::TESTS.iter().map(|(_, name)| *name));
    eprintln!("xtask: the core integration tests with the static build, {binary}");
    cargo_test(tools, &args, &[("VMATRACE_BIN", binary.as_str())])
}

/// `VMATRACE_SKIP_KERNELS=1` leaves the kernel matrix out of a local
/// `cargo xtask test`; CI (`CI=true`) runs it whatever that says.
fn skip_kernels() -> bool {
    let skip = env::var("VMATRACE_SKIP_KERNELS").is_ok_and(|v| !v.is_empty() && v != "0");
    let ci = env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    match (skip, ci) {
        (true, true) => {
            eprintln!("xtask: CI is set: VMATRACE_SKIP_KERNELS is ignored, the kernel matrix runs");
            false
        }
        (true, false) => {
            eprintln!("xtask: VMATRACE_SKIP_KERNELS is set: the kernel matrix is skipped");
            true
        }
        (false, _) => false,
    }
}

/// Runs cargo test with `env` added, passing its output through, and
/// sums its results.
fn cargo_test(tools: &setup::Tools, args: &[&str], env: &[(&str, &str)]) -> Result<(u64, u64)> {
    use std::io::BufRead;
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: {cargo} {}", args.join(" "));
    let mut child = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .env("PATH", tools.path_env())
        .env("VMATRACE_TOOLS_DIR", &tools.dir)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let number = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(word)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            passed += number("passed");
            failed += number("failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok((passed, failed))
}

/// The fuzz targets `cargo xtask test` runs, each for its seconds: what
/// reads files that come from someone else.
const FUZZ_SMOKE: [(&str, &str, u32); 2] = [
    ("read_trace", "the trace reader", 30),
    ("read_maps", "the maps and smaps reader", 15),
];

/// Short libFuzzer runs of the readers, seeded with real files. New
/// inputs go to a corpus under target/, so the checkout stays clean.
fn fuzz_smoke(tools: &setup::Tools) -> Result<()> {
    setup::ensure_cargo_fuzz(tools)?;
    let root = workspace_root();
    for (target, what, seconds) in FUZZ_SMOKE {
        let corpus = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        for seed in std::fs::read_dir(root.join("vmatrace/fuzz/corpus").join(target))? {
            let seed = seed?.path();
            std::fs::copy(&seed, corpus.join(seed.file_name().expect("a file")))?;
        }
        let corpus = corpus.display().to_string();
        let max_time = format!("-max_total_time={seconds}");
        eprintln!("xtask: fuzzing {what} for {seconds} s");
        let status = Command::new("rustup")
            .args([
                "run", "nightly", "cargo", "fuzz", "run", target, &corpus, "--", &max_time,
            ])
            .current_dir(root.join("vmatrace"))
            .env("PATH", tools.path_env())
            .env("VMATRACE_SKIP_EBPF", "1")
            .env_remove("RUSTUP_TOOLCHAIN")
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            bail!("the fuzz run of {what} failed ({status}): see the crash input it saved");
        }
    }
    Ok(())
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
