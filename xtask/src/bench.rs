//! `cargo xtask bench`: what tracing costs the traced process.
//!
//! Runs the `workload` example's mmap/munmap churn untraced and traced by
//! vmatrace, alternating, several rounds in one run, and prints the median
//! loop time of each, the overhead ratio, the events per second vmatrace
//! captured, and the events it lost (which must be 0). The workload times
//! its own loop, so start-up and probe loading are not counted.
//!
//! `--compare` also measures strace and bpftrace on the same workload
//! (installing them from Debian's packages if missing); `--compare=bpftrace`
//! bpftrace alone (strace, 25 times slower, is most of the run's time). `--static`
//! measures the static musl build of `cargo xtask dist` instead of
//! target/release/vmatrace (musl's own allocator is slow; see docs/overhead.md);
//! `VMATRACE_BIN=PATH` measures that binary (another commit's build).

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{cargo, setup::Tools, workspace_root};

const ROUNDS: usize = 5;

struct Workload {
    name: &'static str,
    args: Vec<String>,
    /// Traced calls per loop iteration.
    calls_per_iteration: u64,
    iterations: u64,
}

pub fn run(tools: &Tools, args: &[String]) -> Result<ExitCode> {
    let peers = Peers::from_args(args)?;
    let static_build = args.iter().any(|a| a == "--static");
    let iterations: u64 = args
        .iter()
        .find_map(|a| a.strip_prefix("--iterations="))
        .map(str::parse)
        .transpose()
        .context("--iterations=N")?
        .unwrap_or(200_000);
    cargo(
        tools,
        &[
            "build",
            "--release",
            "--package",
            "vmatrace",
            "--bins",
            "--examples",
        ],
    )?;
    let workloads = [
        Workload {
            name: "churn: mmap 4 pages, touch them, munmap",
            args: vec!["churn".into(), iterations.to_string(), "4".into()],
            calls_per_iteration: 2,
            iterations,
        },
        Workload {
            name: "split-churn: mmap 3 pages, unmap the middle (SPLIT), then the rest",
            args: vec!["split-churn".into(), (iterations / 2).to_string()],
            calls_per_iteration: 4,
            iterations: iterations / 2,
        },
    ];
    // VMATRACE_BIN: another build (an older commit's, say) in the same
    // run's conditions, as the integration tests take it.
    let vmatrace = if let Some(bin) = std::env::var_os("VMATRACE_BIN") {
        PathBuf::from(bin)
    } else if static_build {
        crate::dist::static_binary(tools)?
    } else {
        workspace_root().join("target/release/vmatrace")
    };
    ensure_comparison_tools(peers)?;
    println!(
        "vmatrace overhead benchmark: median of {ROUNDS} alternating rounds, {}",
        vmatrace.display()
    );
    for workload in &workloads {
        bench_workload(&vmatrace, workload, peers)?;
    }
    bench_bystander(&vmatrace, &workloads[0], peers)?;
    bench_footprint(&vmatrace)?;
    Ok(ExitCode::SUCCESS)
}

/// What tracing one process costs the others: an untraced churn loop (a
/// bystander) timed alone and while vmatrace (or bpftrace) traces an idle
/// process.
/// The tracers vmatrace is compared with (`--compare`, `--compare=bpftrace`).
#[derive(Clone, Copy)]
struct Peers {
    bpftrace: bool,
    strace: bool,
}

impl Peers {
    fn from_args(args: &[String]) -> Result<Peers> {
        let mut peers = Peers {
            bpftrace: false,
            strace: false,
        };
        for arg in args {
            match arg.as_str() {
                "--compare" => {
                    peers.bpftrace = true;
                    peers.strace = true;
                }
                "--compare=bpftrace" => peers.bpftrace = true,
                "--compare=strace" => peers.strace = true,
                other if other.starts_with("--compare") => {
                    bail!("{other}: --compare, --compare=bpftrace or --compare=strace")
                }
                _ => {}
            }
        }
        Ok(peers)
    }

    fn names(self) -> Vec<&'static str> {
        [("bpftrace", self.bpftrace), ("strace", self.strace)]
            .into_iter()
            .filter_map(|(name, on)| on.then_some(name))
            .collect()
    }
}

fn bench_bystander(vmatrace: &Path, workload: &Workload, peers: Peers) -> Result<()> {
    let bin = workload_bin().display().to_string();
    let vmatrace = vmatrace.display().to_string();
    let args: Vec<&str> = workload.args.iter().map(String::as_str).collect();
    let (mut alone, mut beside_vmatrace, mut beside_no_cost, mut beside_bpftrace) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        alone.push(timed(&bin, &args, false)?.0);
        let idle = Idle::start(&bin)?;
        let pid = idle.pid().to_string();
        let tracer = Background::start(&vmatrace, &["-q", "-p", &pid], "vmatrace: tracing")?;
        beside_vmatrace.push(timed(&bin, &args, false)?.0);
        tracer.stop()?;
        let tracer = Background::start(
            &vmatrace,
            &["-q", "--no-cost", "-p", &pid],
            "vmatrace: tracing",
        )?;
        beside_no_cost.push(timed(&bin, &args, false)?.0);
        tracer.stop()?;
        if peers.bpftrace {
            let script = format!(
                "tracepoint:syscalls:sys_enter_mmap,tracepoint:syscalls:sys_enter_munmap \
                 /pid == {pid}/ {{ @calls[probe] = count(); }} \
                 tracepoint:syscalls:sys_exit_mmap,tracepoint:syscalls:sys_exit_munmap \
                 /pid == {pid}/ {{ @ret[probe] = count(); }}"
            );
            let tracer = Background::start("bpftrace", &["-e", &script], "Attaching")?;
            beside_bpftrace.push(timed(&bin, &args, false)?.0);
            tracer.stop()?;
        }
        idle.stop();
    }
    let base = median(&mut alone);
    println!(
        "\nbystander: an untraced {} loop while another, idle process is traced",
        workload.args[0]
    );
    println!("  alone                            {base:>8.3} s");
    let report = |label: &str, secs: f64| {
        println!("  {label:<32} {secs:>8.3} s   x{:.3}", secs / base);
    };
    report("beside vmatrace -q -p IDLE", median(&mut beside_vmatrace));
    report(
        "beside vmatrace -q --no-cost -p",
        median(&mut beside_no_cost),
    );
    if peers.bpftrace {
        report(
            "beside bpftrace (counting, pid)",
            median(&mut beside_bpftrace),
        );
    }
    Ok(())
}

/// vmatrace's own cost: from launch to the traced command's start, from
/// the summary to the exit, and its peak memory, tracing a short churn.
fn bench_footprint(vmatrace: &Path) -> Result<()> {
    let bin = workload_bin().display().to_string();
    let vmatrace = vmatrace.display().to_string();
    let (mut start, mut exit, mut rss, mut rss_stacks) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let run = footprint_run(&vmatrace, &bin, &["churn", "50000", "4"])?;
        start.push(run.0);
        exit.push(run.1);
        rss.push(run.2);
        rss_stacks.push(footprint_run(&vmatrace, &bin, &["split-churn", "50000"])?.2);
    }
    println!("\nvmatrace itself: `vmatrace -q -- workload churn 50000 4` (default ring buffer)");
    println!(
        "  launch to the command's start    {:>8.3} s",
        median(&mut start)
    );
    println!(
        "  summary to exit                  {:>8.3} s",
        median(&mut exit)
    );
    println!(
        "  peak RSS                         {:>8.1} MB",
        median(&mut rss)
    );
    println!(
        "  peak RSS, split-churn 50000      {:>8.1} MB   (a stack unwound for each SPLIT)",
        median(&mut rss_stacks)
    );
    print_verifier_work(Path::new(&vmatrace));
    Ok(())
}

/// What loading the programs cost the verifier, most of the start: the
/// instructions it processed do not move with the machine's load.
fn print_verifier_work(vmatrace: &Path) {
    match crate::verifier::program_loads(vmatrace) {
        Ok(loads) => {
            println!(
                "  the verifier, per program (`-q -- /bin/true`; instructions processed, its time):"
            );
            for load in loads {
                println!(
                    "    {:<16} {:>7} insns {:>7.1} ms",
                    load.name,
                    load.insns_processed,
                    load.verification_us as f64 / 1000.0
                );
            }
        }
        Err(e) => println!("  the verifier's statistics: not read ({e:#})"),
    }
}

/// One run of `workload`: (launch to "workload: ready", summary to exit,
/// peak RSS MB).
fn footprint_run(vmatrace: &str, bin: &str, workload: &[&str]) -> Result<(f64, f64, f64)> {
    use std::io::{BufRead, BufReader};
    use std::time::Instant;
    let launched = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kib=%M", vmatrace, "-q", "--", bin])
        .args(workload)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running vmatrace under /usr/bin/time (package time)")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (mut ready, mut summary, mut maxrss) = (None, None, None);
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if line.starts_with("workload: ready") {
            ready.get_or_insert(launched.elapsed());
        }
        if line.starts_with("lost events") || line.starts_with("LOST EVENTS") {
            summary.get_or_insert(launched.elapsed());
        }
        if let Some(kib) = line.strip_prefix("maxrss_kib=") {
            maxrss = kib.trim().parse::<f64>().ok();
        }
    }
    let exited = launched.elapsed();
    let status = child.wait()?;
    if !status.success() {
        bail!("vmatrace failed ({status})");
    }
    let (ready, summary) = (
        ready.context("the workload never started")?,
        summary.context("no summary")?,
    );
    Ok((
        ready.as_secs_f64(),
        (exited - summary).as_secs_f64(),
        maxrss.context("no peak RSS from /usr/bin/time")? / 1024.0,
    ))
}

/// A workload that waits, idle, until stopped: the traced process of the
/// bystander benchmark.
struct Idle(std::process::Child);

impl Idle {
    fn start(bin: &str) -> Result<Idle> {
        let child = Command::new(bin)
            .args(["mmap", "1", "--wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the idle workload")?;
        Ok(Idle(child))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tracer running beside the benchmark, ready once its stderr or stdout
/// says `ready_when`.
struct Background(std::process::Child);

impl Background {
    fn start(program: &str, args: &[&str], ready_when: &str) -> Result<Background> {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            let needle = ready_when.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains(&needle) {
                        let _ = tx.send(());
                    }
                }
            });
        }
        rx.recv_timeout(Duration::from_secs(60))
            .with_context(|| format!("{program} did not get ready"))?;
        Ok(Background(child))
    }

    /// SIGINT, as a user stops a tracer, then waits for it.
    fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status()?;
        self.0.wait()?;
        Ok(())
    }
}

/// The workload, built with glibc whichever vmatrace is measured.
fn workload_bin() -> PathBuf {
    workspace_root().join("target/release/examples/workload")
}

fn bench_workload(vmatrace: &Path, workload: &Workload, peers: Peers) -> Result<()> {
    let bin = workload_bin();
    let wl: Vec<String> = std::iter::once(bin.display().to_string())
        .chain(workload.args.iter().cloned())
        .collect();
    let calls = workload.calls_per_iteration * workload.iterations;

    let mut untraced = Vec::new();
    let mut served = Vec::new();
    let mut quiet = Vec::new();
    let mut printed = Vec::new();
    let mut no_stacks = Vec::new();
    let mut no_cost = Vec::new();
    let mut all_stacks = Vec::new();
    let mut site_stacks = Vec::new();
    let mut recorded = Vec::new();
    let mut captured = Vec::new();
    let mut bytes_per_event = 0.0;
    let mut lost = 0;
    let trace_file = std::env::temp_dir().join("vmatrace-bench.vmat");
    let trace_path = trace_file.display().to_string();
    for _ in 0..ROUNDS {
        let wl_args: Vec<&str> = wl[1..].iter().map(String::as_str).collect();
        untraced.push(timed(&wl[0], &wl_args, false)?.0);
        served.push(timed_beside_serve(vmatrace, &wl[0], &wl_args)?);
        let (secs, summary) = timed_vmatrace(vmatrace, &["-q", "--json"], &wl)?;
        quiet.push(secs);
        lost += summary.lost;
        captured.push(summary.syscalls as f64 / secs);
        if summary.syscalls < calls {
            bail!(
                "vmatrace saw {} calls of the {calls} made",
                summary.syscalls
            );
        }
        let (secs, summary) = timed_vmatrace(vmatrace, &["--json"], &wl)?;
        printed.push(secs);
        lost += summary.lost;
        let (secs, summary) = timed_vmatrace(vmatrace, &["-q", "--json", "--no-stacks"], &wl)?;
        no_stacks.push(secs);
        lost += summary.lost;
        let (secs, summary) = timed_vmatrace(vmatrace, &["-q", "--json", "--no-cost"], &wl)?;
        no_cost.push(secs);
        lost += summary.lost;
        let (secs, summary) = timed_vmatrace(vmatrace, &["-q", "--json", "--stacks"], &wl)?;
        all_stacks.push(secs);
        lost += summary.lost;
        let (secs, summary) = timed_vmatrace(vmatrace, &["-q", "--json", "--site-stacks"], &wl)?;
        site_stacks.push(secs);
        lost += summary.lost;
        let (secs, summary) = timed_vmatrace(vmatrace, &["-q", "--json", "-o", &trace_path], &wl)?;
        recorded.push(secs);
        lost += summary.lost;
        let size = std::fs::metadata(&trace_file)
            .context("the recorded trace")?
            .len();
        bytes_per_event = size as f64 / summary.events.max(1) as f64;
    }
    let _ = std::fs::remove_file(&trace_file);
    let base = median(&mut untraced);
    println!(
        "\n{}: {} iterations, {calls} traced calls per run",
        workload.name, workload.iterations
    );
    println!("  untraced                         {:>8.3} s", base);
    let report = |label: &str, secs: f64| {
        println!("  {label:<32} {:>8.3} s   x{:.3}", secs, secs / base);
    };
    report("vmatrace -q (stacks of flagged)", median(&mut quiet));
    report("vmatrace serve (every process)", median(&mut served));
    report("vmatrace -q --no-stacks", median(&mut no_stacks));
    report("vmatrace -q --no-cost", median(&mut no_cost));
    report("vmatrace -q --site-stacks", median(&mut site_stacks));
    report("vmatrace -q --stacks (every call)", median(&mut all_stacks));
    report("vmatrace --json > /dev/null", median(&mut printed));
    report("vmatrace -q -o FILE (recording)", median(&mut recorded));
    println!(
        "  events captured per second      {:>9.0}   lost: {lost}",
        median(&mut captured)
    );
    println!("  trace file bytes per event      {bytes_per_event:>9.1}");
    if peers.bpftrace || peers.strace {
        let mut bpftrace = Vec::new();
        let mut strace = Vec::new();
        for _ in 0..ROUNDS {
            if peers.bpftrace {
                bpftrace.push(timed_bpftrace(&wl)?);
            }
            if !peers.strace {
                continue;
            }
            let mut args = vec![
                "-f",
                "-qq",
                "-o",
                "/dev/null",
                "-e",
                "trace=mmap,munmap,mprotect,mremap,brk,madvise",
            ];
            args.extend(wl.iter().map(String::as_str));
            strace.push(timed("strace", &args, false)?.0);
        }
        if peers.bpftrace {
            report("bpftrace (counting script)", median(&mut bpftrace));
        }
        if peers.strace {
            report("strace -e trace=<mapping calls>", median(&mut strace));
        }
    }
    if lost > 0 {
        bail!("vmatrace lost {lost} events during the benchmark");
    }
    Ok(())
}

struct TraceSummary {
    syscalls: u64,
    events: u64,
    lost: u64,
}

fn timed_vmatrace(
    vmatrace: &std::path::Path,
    flags: &[&str],
    wl: &[String],
) -> Result<(f64, TraceSummary)> {
    let mut args: Vec<&str> = flags.to_vec();
    args.push("--");
    args.extend(wl.iter().map(String::as_str));
    let (secs, stdout) = timed(&vmatrace.display().to_string(), &args, true)?;
    let last = stdout
        .lines()
        .last()
        .context("vmatrace printed no summary")?;
    let summary = parse_summary(last)?;
    Ok((secs, summary))
}

/// Reads the call counts and lost events from vmatrace's JSON summary.
fn parse_summary(line: &str) -> Result<TraceSummary> {
    let summary: serde_json::Value = serde_json::from_str(line).context("parsing the summary")?;
    let lost = summary["lost_total"]
        .as_u64()
        .context("summary has lost_total")?;
    let syscalls = summary["processes"]
        .as_array()
        .context("summary has processes")?
        .iter()
        .filter_map(|p| p["calls"].as_object())
        .flat_map(|calls| calls.values().filter_map(|v| v.as_u64()))
        .sum();
    let events = summary["events"].as_u64().context("summary has events")?;
    Ok(TraceSummary {
        syscalls,
        events,
        lost,
    })
}

/// Runs a command that (somewhere in it) runs the workload, and returns
/// the workload's own loop time from its report, plus stdout if asked.
/// The workload's loop time while `vmatrace serve` watches every process
/// (its counters kept in the kernel, no event sent per call).
fn timed_beside_serve(vmatrace: &std::path::Path, program: &str, args: &[&str]) -> Result<f64> {
    use std::io::{BufRead, BufReader};
    let mut serve = Command::new(vmatrace)
        .args(["serve", "--listen", "127.0.0.1:19499"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting vmatrace serve")?;
    let stderr = serve.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let serving = lines
        .by_ref()
        .map_while(|l| l.ok())
        .any(|l| l.contains("serving http://"));
    let result = if serving {
        timed(program, args, false).map(|(secs, _)| secs)
    } else {
        Err(anyhow::anyhow!("vmatrace serve did not start"))
    };
    let _ = Command::new("kill").arg(serve.id().to_string()).status();
    serve.wait()?;
    result
}

fn timed(program: &str, args: &[&str], capture_stdout: bool) -> Result<(f64, String)> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(if capture_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let secs = stderr
        .lines()
        .filter(|l| l.starts_with("workload: "))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("seconds="))
        })
        .and_then(|s| s.parse::<f64>().ok())
        .with_context(|| format!("no workload report in: {stderr}"))?;
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The usual ad-hoc bpftrace one-liner: count mapping calls per pid.
fn timed_bpftrace(wl: &[String]) -> Result<f64> {
    let script = "tracepoint:syscalls:sys_enter_mmap,tracepoint:syscalls:sys_enter_munmap \
                  /comm == \"workload\"/ { @calls[pid, probe] = count(); } \
                  tracepoint:syscalls:sys_exit_mmap,tracepoint:syscalls:sys_exit_munmap \
                  /comm == \"workload\"/ { @ret[pid, probe] = count(); }";
    let mut child = Command::new("bpftrace")
        .args(["-e", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bpftrace")?;
    std::thread::sleep(Duration::from_secs(3)); // let it attach
    let args: Vec<&str> = wl[1..].iter().map(String::as_str).collect();
    let result = timed(&wl[0], &args, false);
    let _ = child.kill();
    let _ = child.wait();
    Ok(result?.0)
}

fn ensure_comparison_tools(peers: Peers) -> Result<()> {
    let missing: Vec<&str> = peers
        .names()
        .into_iter()
        .filter(|tool| Command::new(tool).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {} for the comparison", missing.join(" "));
    let update = Command::new("apt-get").args(["update", "-qq"]).status()?;
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !update.success() || !install.success() {
        bail!("could not install {}", missing.join(" "));
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
