//! `cargo xtask test-kernels [KERNEL...]`: the portable core of the
//! integration tests, run as root inside Debian's own kernels under QEMU
//! (issues 11 and 14), one line per kernel and test.
//!
//! The test binaries are built once on the host (`cargo test --no-run`,
//! which builds the examples they run too); the vmatrace they run is the
//! static musl build that `cargo xtask dist` ships (`VMATRACE_BIN`), so
//! what is tested in each kernel is what users copy. Each kernel boots one guest
//! (see kernels.rs: the host's root shared read-only, a tmpfs on top) with
//! a single vCPU, so the concurrency test runs 4 threads on 1 CPU, more
//! threads than CPUs as issue 14 asks. Inside, `vm.max_map_count` is
//! lowered so the incident reaches the limit quickly, vmatrace is started
//! once to see that it starts at all, then each test runs on its own
//! (`--exact`), under a time limit. Full logs stay on the host in
//! `target/kernels/matrix/<release>/`.

use std::{
    collections::HashSet,
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{kernels, setup};

/// The kernels `cargo xtask test-kernels` and `cargo xtask test` run, by
/// the names of [`kernels::MATRIX`].
///
/// `newest` follows Debian: the highest kernel any of its suites carries
/// (7.3 today), where the kernel runs tracepoint programs preemptible.
/// 5.10 has no mmap_lock tracepoints: vmatrace counts at syscall entry
/// and exit there.
pub const KERNELS: &[&str] = &["5.10", "6.1", "6.12", "newest"];

/// Where the binaries the guests run are built, relative to the workspace.
const MATRIX_TARGET_DIR: &str = "target/matrix";

/// vCPUs per guest: one, so the 4-thread test has more threads than CPUs.
const SMP: u32 = 1;

/// Memory per guest: jemalloc at the limit holds gigabytes of address
/// space (2 GiB guests died of double faults under TCG there).
const MEMORY_MIB: u32 = 4096;

/// `vm.max_map_count` inside the guest: the incident (2 x limit pages, then
/// every other one unmapped) takes seconds instead of minutes under TCG.
const MAX_MAP_COUNT: u32 = 5000;

/// Wall-clock limit of one test in the guest (the slowest takes ~30 s
/// under TCG; the tests' own waits give up after 120 s).
const TEST_TIMEOUT_SECS: u64 = 300;

/// The portable core: what depends on the kernel (probes, counts, splits,
/// threads, attach, forks, recordings, losses), nothing that depends on a
/// terminal or on the host's limit. (test binary, test name).
pub const TESTS: &[(&str, &str)] = &[
    (
        "trace",
        "incident_every_split_flagged_then_enomem_at_the_limit",
    ),
    ("trace", "glibc_malloc_of_129k_blocks_never_splits"),
    ("trace", "concurrent_threads_get_exact_split_flags"),
    (
        "trace",
        "a_threaded_process_is_counted_under_the_lock_from_the_attach",
    ),
    ("trace", "attach_to_running_processes_that_exit_mid_trace"),
    ("trace", "follow_forks_traces_the_child"),
    ("trace", "the_command_exit_status_is_passed_on"),
    ("trace", "every_event_names_the_mapping_it_touched"),
    ("trace", "flagged_events_carry_their_symbolized_stack"),
    (
        "tracefile",
        "recorded_incident_reports_what_the_live_run_saw",
    ),
    ("tracefile", "lost_events_are_counted_reported_and_recorded"),
    ("trace", "probe_report_says_what_this_kernel_has"),
    ("trace", "syscall_count_mode_is_exact_for_a_single_thread"),
    (
        "trace",
        "syscall_count_mode_marks_overlapping_calls_inexact",
    ),
    ("trace", "jemalloc_at_the_limit_gets_a_verdict_with_retain"),
    ("trace", "a_limit_changed_during_the_trace_is_followed"),
    ("trace", "lock_and_syscall_counts_agree_call_by_call"),
    (
        "trace",
        "calls_outside_the_mapping_ones_keep_the_count_exact",
    ),
    ("trace", "another_process_sharing_the_address_space_is_seen"),
];

/// Tests run on one kernel only: slow under TCG (jemalloc driven to the
/// limit: about 2 minutes), and not kernel-specific beyond what the rest
/// checks everywhere.
const ONE_KERNEL_ONLY: &[(&str, &str)] =
    &[("jemalloc_at_the_limit_gets_a_verdict_with_retain", "6.12")];

/// Kernels without the mmap_lock tracepoints (before 5.11), where vmatrace
/// counts at syscall entry and exit: concurrent calls of one process are
/// marked inexact there, by design, so the lock mode's exactness test
/// does not apply; the count-mode tests check what is promised instead.
const WITHOUT_LOCK_TRACEPOINTS: &[&str] = &["5.10"];

/// Tests of what only the lock mode promises.
const LOCK_MODE_ONLY: &[&str] = &[
    "concurrent_threads_get_exact_split_flags",
    "lock_and_syscall_counts_agree_call_by_call",
    "a_threaded_process_is_counted_under_the_lock_from_the_attach",
    "another_process_sharing_the_address_space_is_seen",
];

/// The tests that apply to `kernel`.
fn tests_for<'a>(kernel: &str, tests: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let lockless = WITHOUT_LOCK_TRACEPOINTS.contains(&kernel);
    let elsewhere = |name: &str| {
        ONE_KERNEL_ONLY
            .iter()
            .any(|(test, only_on)| *test == name && *only_on != kernel)
    };
    tests
        .iter()
        .filter(|(_, name)| !(lockless && LOCK_MODE_ONLY.contains(name)))
        .filter(|(_, name)| !elsewhere(name))
        .copied()
        .collect()
}

/// Passed and failed tests over every kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
}

/// `cargo xtask test-kernels [--test NAME]... [KERNEL...]`
pub fn main(args: &[String]) -> Result<ExitCode> {
    let mut kernels = Vec::new();
    let mut only = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--test" => only.push(args.next().context("--test needs a test name")?.clone()),
            "help" | "--help" | "-h" => {
                println!(
                    "usage: cargo xtask test-kernels [--test NAME]... [KERNEL...]\n\
                     \nRuns the portable core of the integration tests as root in each\
                     \nKERNEL (default: {}) under QEMU, 1 vCPU, vm.max_map_count={MAX_MAP_COUNT}.\
                     \nKERNEL: a name of `cargo xtask kernels list`, a Debian suite or\
                     \nSUITE:RELEASE. Tests:\n  {}",
                    KERNELS.join(", "),
                    TESTS
                        .iter()
                        .map(|(_, name)| *name)
                        .collect::<Vec<_>>()
                        .join("\n  ")
                );
                return Ok(ExitCode::SUCCESS);
            }
            name if name.starts_with('-') => bail!("unknown option {name:?}"),
            name => kernels.push(name.to_string()),
        }
    }
    if kernels.is_empty() {
        kernels = KERNELS.iter().map(|k| k.to_string()).collect();
    }
    let tests: Vec<(&str, &str)> = if only.is_empty() {
        TESTS.to_vec()
    } else {
        only.iter()
            .map(|name| {
                TESTS
                    .iter()
                    .find(|(_, t)| t == name)
                    .copied()
                    .with_context(|| format!("{name} is not a test of the kernel matrix"))
            })
            .collect::<Result<_>>()?
    };
    let tools = setup::ensure()?;
    let counts = run(&tools, &kernels, &tests)?;
    Ok(if counts.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds the test binaries, runs `tests` in every kernel of `kernels`,
/// prints one line per kernel and test and the closing
/// `kernels: N passed, M failed`. A kernel that cannot be fetched, does
/// not boot or dies fails each of its tests that did not finish.
pub fn run(tools: &setup::Tools, kernels: &[String], tests: &[(&str, &str)]) -> Result<Counts> {
    let start = Instant::now();
    let binaries = build(tools)?;
    let mut counts = Counts::default();
    for name in kernels {
        let kernel_start = Instant::now();
        let tests = tests_for(name, tests);
        let (passed, failed) = run_kernel(name, &binaries, &tests);
        counts.passed += passed;
        counts.failed += failed;
        println!(
            "kernel {name}: {passed} passed, {failed} failed in {:.0} s",
            kernel_start.elapsed().as_secs_f64()
        );
    }
    println!(
        "kernel matrix: {} kernels in {:.0} s",
        kernels.len(),
        start.elapsed().as_secs_f64()
    );
    println!(
        "kernels: {} passed, {} failed",
        counts.passed, counts.failed
    );
    Ok(counts)
}

/// What the guests run, built on the host.
struct Binaries {
    /// Test binary name (`trace`, `tracefile`) -> its executable.
    tests: Vec<(String, PathBuf)>,
    /// vmatrace itself: the static build, which the tests run instead of
    /// their `CARGO_BIN_EXE_vmatrace` (`VMATRACE_BIN`).
    vmatrace: PathBuf,
}

impl Binaries {
    fn test(&self, name: &str) -> Result<&Path> {
        self.tests
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_path())
            .with_context(|| format!("cargo built no test binary {name}"))
    }
}

/// `cargo test -p vmatrace --release --no-run`: the integration tests' executables,
/// and (cargo test builds them) the examples they run; and the static
/// vmatrace.
fn build(tools: &setup::Tools) -> Result<Binaries> {
    let vmatrace = static_vmatrace(tools)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let args = [
        "test",
        "--package",
        "vmatrace",
        "--no-run",
        // Optimized: under TCG a debug vmatrace takes ~10 s to start (BTF,
        // loading), an optimized one ~3.5 s, and the workloads run faster.
        "--release",
        // A target directory of its own: the guests read the binaries
        // through virtiofs while they run, and a build in target/release
        // meanwhile (`cargo xtask run`, another checkout's work) would
        // replace them under the guest (ESTALE).
        "--target-dir",
        MATRIX_TARGET_DIR,
        "--message-format=json-render-diagnostics",
    ];
    eprintln!("xtask: {cargo} {}", args.join(" "));
    let mut child = Command::new(&cargo)
        .args(args)
        .current_dir(crate::workspace_root())
        .env("PATH", tools.path_env())
        .env("VMATRACE_TOOLS_DIR", &tools.dir)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test --no-run")?;
    let mut tests = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(message) = serde_json::from_str::<Value>(&line?) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        let kinds = &message["target"]["kind"];
        let has_kind = |kind: &str| {
            kinds
                .as_array()
                .is_some_and(|k| k.iter().any(|v| v == kind))
        };
        let name = message["target"]["name"].as_str().unwrap_or("");
        if has_kind("test") {
            tests.push((name.to_string(), PathBuf::from(executable)));
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test --no-run failed ({status})");
    }
    let binaries = Binaries { tests, vmatrace };
    // The tests find the examples beside their own deps/ directory.
    let trace = binaries.test("trace")?;
    let examples = trace
        .parent()
        .and_then(Path::parent)
        .context("target/<profile>/deps/<test>")?
        .join("examples");
    for needed in [binaries.vmatrace.clone(), examples.join("workload")] {
        if !needed.is_file() {
            bail!("{} is missing after cargo test --no-run", needed.display());
        }
    }
    Ok(binaries)
}

/// The static build (dist.rs), copied into the matrix's own directory: the
/// guests read it through virtiofs while they run, and a `cargo xtask
/// dist` meanwhile would replace it under them (ESTALE).
fn static_vmatrace(tools: &setup::Tools) -> Result<PathBuf> {
    let built = crate::dist::static_binary(tools)?;
    let dir = crate::workspace_root()
        .join(MATRIX_TARGET_DIR)
        .join("static");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let copy = dir.join("vmatrace");
    let partial = dir.join("vmatrace.partial");
    fs::copy(&built, &partial).with_context(|| format!("copying {}", built.display()))?;
    fs::rename(&partial, &copy).with_context(|| format!("writing {}", copy.display()))?;
    Ok(copy)
}

/// One kernel: prepare, boot, run; (passed, failed).
fn run_kernel(name: &str, binaries: &Binaries, tests: &[(&str, &str)]) -> (u64, u64) {
    let all_failed = |why: &str, detail: &str| {
        println!("kernel {name}  FAILED: {why}");
        print_indented(detail, 40);
        (0, tests.len() as u64)
    };
    let kernel = match kernels::prepare(name) {
        Ok(kernel) => kernel,
        Err(e) => return all_failed("could not be prepared", &format!("{e:#}")),
    };
    let logs = kernels::cache_dir().join("matrix").join(&kernel.release);
    if let Err(e) = fs::remove_dir_all(&logs)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
        .and_then(|()| fs::create_dir_all(&logs))
    {
        return all_failed("no log directory", &format!("{}: {e}", logs.display()));
    }
    let script = logs.join("matrix.sh");
    let script_text = match guest_script(binaries, tests, &logs) {
        Ok(text) => text,
        Err(e) => return all_failed("no script", &format!("{e:#}")),
    };
    if let Err(e) = fs::write(&script, script_text) {
        return all_failed("no script", &format!("{}: {e}", script.display()));
    }

    let mut guest = kernels::Guest::new(SMP);
    guest.memory_mib = MEMORY_MIB;
    guest.cwd = crate::workspace_root().join("vmatrace"); // as cargo test runs them
    guest.share_rw = Some(logs.clone());
    guest.timeout = Duration::from_secs(TEST_TIMEOUT_SECS * tests.len() as u64 + 120);
    let script_arg = script.display().to_string();
    let command = ["sh", script_arg.as_str()];
    println!(
        "kernel {}  booting ({} from {}; {SMP} vCPU, TCG)",
        kernel.release, kernel.package_version, kernel.suite
    );
    // Results are printed as the guest writes them.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (release, logs, done) = (kernel.release.clone(), logs.clone(), done.clone());
        let tests = tests.iter().map(|(_, t)| t.to_string()).collect();
        std::thread::spawn(move || stream_results(release, tests, logs, done))
    };
    let output = kernels::run_in_guest(&kernel, &guest, &command);
    done.store(true, Ordering::Release);
    let streamed = watcher.join().unwrap_or_default();
    // A guest that never reached its command is booted once more: this
    // says nothing about vmatrace (see kernels::MATRIX on flaky kernels).
    let output = match output {
        Ok(output) => output,
        Err(first) => {
            println!(
                "kernel {}  did not boot; booting again ({})",
                kernel.release,
                first.to_string().lines().next().unwrap_or("")
            );
            match kernels::run_in_guest(&kernel, &guest, &command) {
                Ok(output) => output,
                Err(e) => return all_failed("the guest did not boot twice", &format!("{e:#}")),
            }
        }
    };
    let seconds = |s: Option<f64>| s.map_or("?".into(), |s| format!("{s:.1} s"));
    println!(
        "kernel {}  guest: boot {}, tests {}",
        kernel.release,
        seconds(output.boot_seconds),
        seconds(output.command_seconds)
    );
    report(&kernel, tests, &output, &logs, &streamed)
}

/// Prints what the guest left: a vmatrace that does not start, the
/// results not printed while it ran (`streamed` were), tests that did not
/// run, a guest that died; (passed, failed).
fn report(
    kernel: &kernels::Kernel,
    tests: &[(&str, &str)],
    output: &kernels::GuestOutput,
    logs: &Path,
    streamed: &HashSet<String>,
) -> (u64, u64) {
    let release = &kernel.release;
    let marker = |prefix: &str| -> Vec<Vec<String>> {
        output
            .output
            .lines()
            .filter_map(|l| l.trim().strip_prefix(prefix)?.strip_suffix(">>"))
            .map(|rest| rest.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    let width = tests.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
    // vmatrace started if it said it was tracing; an exit status of 3
    // (events lost) is for the tests to judge, but worth a line here.
    let preflight = read_lossy(&logs.join("preflight.log"));
    let preflight_status = marker("<<preflight ")
        .first()
        .and_then(|m| m.first().cloned())
        .unwrap_or_else(|| "?".into());
    if !preflight.contains("vmatrace: tracing") {
        println!(
            "kernel {release}  FAILED: vmatrace does not start on this kernel (exit {preflight_status}):"
        );
        print_indented(&preflight, 20);
        for (_, test) in tests {
            println!("kernel {release}  {test:width$}  FAILED  (not run: vmatrace does not start)");
        }
        return (0, tests.len() as u64);
    }
    if preflight_status != "0" {
        let said: Vec<&str> = preflight
            .lines()
            .filter(|l| l.contains("LOST") || l.contains("lost"))
            .collect();
        println!(
            "kernel {release}  note: `vmatrace -q -- true` exited {preflight_status}: {}",
            said.join(" / ")
        );
    }
    let (mut passed, mut failed) = (0, 0);
    for (_, test) in tests {
        let ok = match test_result(logs, test) {
            Some(result) => {
                if !streamed.contains(*test) {
                    print_result(release, test, width, logs, &result);
                }
                result.passed()
            }
            None => {
                println!(
                    "kernel {release}  {test:width$}  FAILED  (not run: the guest ended first)"
                );
                false
            }
        };
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    if output.status.is_none() {
        println!(
            "kernel {release}  the guest died or timed out (console in {}):",
            output.run_dir.display()
        );
        print_indented(&output.console, 30);
    }
    (passed, failed)
}

/// One test's end, as the guest wrote it to `NAME.status`.
struct TestResult {
    status: i32,
    millis: Option<f64>,
    /// `--exact` with a name the binary does not have runs nothing and
    /// exits 0: a renamed test must not pass here unseen.
    ran: bool,
}

impl TestResult {
    fn passed(&self) -> bool {
        self.status == 0 && self.ran
    }
}

fn test_result(logs: &Path, test: &str) -> Option<TestResult> {
    let text = fs::read_to_string(logs.join(format!("{test}.status"))).ok()?;
    let mut words = text.split_whitespace();
    let status = words.next()?.parse().ok()?;
    let millis = words.next().and_then(|ms| ms.parse().ok());
    Some(TestResult {
        status,
        millis,
        ran: read_lossy(&logs.join(format!("{test}.log"))).contains("1 passed"),
    })
}

/// `kernel RELEASE  TEST  ok  (12.3 s)`, or FAILED with why and the end of
/// the test's output.
fn print_result(release: &str, test: &str, width: usize, logs: &Path, result: &TestResult) {
    let seconds = result
        .millis
        .map_or("?".into(), |ms| format!("{:.1} s", ms / 1000.0));
    let log = logs.join(format!("{test}.log"));
    if result.passed() {
        println!("kernel {release}  {test:width$}  ok  ({seconds})");
    } else if result.status == 0 {
        println!(
            "kernel {release}  {test:width$}  FAILED  (no such test in its binary; log {})",
            log.display()
        );
    } else {
        let why = match result.status {
            124 | 137 => format!(", timed out after {TEST_TIMEOUT_SECS} s"),
            _ => String::new(),
        };
        println!(
            "kernel {release}  {test:width$}  FAILED  ({seconds}, exit {}{why}; log {})",
            result.status,
            log.display()
        );
        print_indented(&read_lossy(&log), 40);
    }
}

/// Prints each test's line as soon as the guest has written its status,
/// until `done`; returns the tests it printed.
fn stream_results(
    release: String,
    tests: Vec<String>,
    logs: PathBuf,
    done: Arc<AtomicBool>,
) -> HashSet<String> {
    let width = tests.iter().map(String::len).max().unwrap_or(0);
    let mut printed = HashSet::new();
    loop {
        // Read `done` first: a status written before it was set is seen
        // by the pass that follows.
        let last = done.load(Ordering::Acquire);
        for test in &tests {
            if printed.contains(test) {
                continue;
            }
            if let Some(result) = test_result(&logs, test) {
                print_result(&release, test, width, &logs, &result);
                printed.insert(test.clone());
            } else {
                break; // they run in order
            }
        }
        if last {
            return printed;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The guest's script: lower the limit, see that vmatrace starts, run each
/// test alone with its output in the writable share (`NAME.log`) and its
/// end there too (`NAME.status`: exit status and milliseconds).
fn guest_script(binaries: &Binaries, tests: &[(&str, &str)], logs: &Path) -> Result<String> {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let mut script = String::from("# Written by cargo xtask test-kernels.\n");
    let _ = writeln!(script, "logs={}", quote(logs));
    let _ = writeln!(
        script,
        "echo {MAX_MAP_COUNT} > /proc/sys/vm/max_map_count || exit 120"
    );
    script.push_str(
        "echo \"kernel $(uname -r), $(nproc) CPU, vm.max_map_count=$(cat /proc/sys/vm/max_map_count)\"\n",
    );
    // The paths are the host's: a clone on a file system the guest does not
    // see (a separate mount) says so here instead of failing every test.
    let mut needed = vec![binaries.vmatrace.clone()];
    for (binary, _) in tests {
        needed.push(binaries.test(binary)?.to_path_buf());
    }
    for path in &needed {
        let _ = writeln!(
            script,
            "[ -x {0} ] || {{ echo {0} is not visible in the guest; exit 121; }}",
            quote(path)
        );
    }
    let _ = writeln!(script, "export VMATRACE_BIN={}", quote(&binaries.vmatrace));
    let _ = writeln!(
        script,
        "\"$VMATRACE_BIN\" -q -- true > \"$logs/preflight.log\" 2>&1"
    );
    script.push_str("echo \"<<preflight $?>>\"\n");
    // One that does not start would fail every test the same way: stop.
    script.push_str("grep -q 'vmatrace: tracing' \"$logs/preflight.log\" || exit 0\n");
    for (binary, test) in tests {
        let _ = writeln!(
            script,
            "start=$(date +%s%3N)\n\
             timeout -k 10 {TEST_TIMEOUT_SECS} {} --test-threads=1 --nocapture --exact {test} \
             > \"$logs/{test}.log\" 2>&1\n\
             status=$?\n\
             echo \"$status $(( $(date +%s%3N) - start ))\" > \"$logs/{test}.status\"",
            quote(binaries.test(binary)?)
        );
    }
    Ok(script)
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `lines` lines of `text`, indented under a result line.
fn print_indented(text: &str, lines: usize) {
    let all: Vec<&str> = text.lines().collect();
    for line in &all[all.len().saturating_sub(lines)..] {
        println!("    {line}");
    }
}
