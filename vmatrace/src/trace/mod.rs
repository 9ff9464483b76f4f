//! One tracing run: set up the targets, then move events from the kernel
//! through the state and detectors to the outputs until the targets are
//! gone, the time is up, or the user stops it.

mod event_loop;
pub mod printer;
mod recording;
pub mod targets;
mod user_stacks;

use std::process::ExitStatus;

use anyhow::{Context, anyhow};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};
use vmatrace_common::capture_stacks;

use event_loop::{Run, Stop, wait_for};
use printer::{Destinations, Printer};
use recording::lost_record;
use targets::Gated;

use crate::{
    cli::{LiveArgs, Targets},
    error::{Failure, exit_code},
    kernel::{
        self, monotonic_ns,
        probes::{CountMode, LostCounts, ProbeConfig, Probes, require_privileges},
    },
    model::{
        detect::Detector,
        processes::{Processes, program_name},
        snapshot::snapshot_process,
    },
    output::{
        Format, Output, fold,
        status::StatusLines,
        summary::{StackCounts, Summary},
        top::Top,
    },
    tracefile::{format::Record, writer::Recorder},
};

pub async fn run(cli: LiveArgs) -> Result<i32, Failure> {
    let targets = cli.targets().map_err(|e| Failure::usage(anyhow!(e)))?;
    // Root first: without it nothing else matters, whoever owns the pids.
    require_privileges()?;
    // Bad pids and output paths are found before anything is loaded.
    let attached: Vec<targets::TargetInfo> = match &targets {
        Targets::Pids(pids) => pids
            .iter()
            .map(|pid| targets::inspect_pid(*pid))
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    if let Some(path) = &cli.output {
        Recorder::prepare(path, cli.max_size, cli.force)?;
    }
    // From here on, Ctrl-C and SIGTERM end the trace with its summary
    // (and a closed trace file), however early they come.
    let stop = Stop {
        interrupt: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        terminate: signal(SignalKind::terminate()).context("SIGTERM handler")?,
    };
    let limit = kernel::max_map_count().map_err(Failure::environment)?;
    let detector = Detector::new(limit, cli.warn_at / 100.0);
    // The command is forked (held before its exec) before the programs
    // are loaded, so its pid is in the traced set before they run.
    let gated = match &targets {
        Targets::Command(argv) => Some(Gated::spawn(argv)?),
        _ => None,
    };
    let mut probes = Probes::load(&ProbeConfig {
        warn_at: detector.warn_at,
        trace_all: targets == Targets::All,
        follow_forks: cli.follow_forks,
        ring_buffer_bytes: cli.buffer_size,
        btf_path: cli.btf.clone(),
        capture_stacks: stack_mode(&cli),
        debug_probes: cli.debug_probes,
        count_mode: cli.count_mode,
        send_events: true,
        max_map_count: limit,
        user_stack_bytes: match stack_mode(&cli) {
            capture_stacks::NONE => 0,
            _ => cli.unwind.copy_bytes(cli.stack_bytes),
        },
        stack_site_ns: stack_site_ns(&cli),
        targets: attached
            .iter()
            .map(|info| info.pid)
            .chain(gated.as_ref().map(|command| command.pid))
            .collect(),
        run_time_stats: !cli.no_cost,
        lock_probes_on_demand: targets != Targets::All,
    })?;
    // After the load: a thread started from now on is told by the
    // programs, one started before is in /proc.
    if attached.iter().any(|info| targets::has_threads(info.pid))
        && let Err(e) = probes.attach_lock_probes()
    {
        // Said in the banner, with the mode.
        probes.count_mode = CountMode::Syscall {
            why: format!("the lock probes could not be attached: {e:#}"),
        };
    }
    let mut stacks = user_stacks::UserStacks::new(
        probes
            .take_user_stack_copies()
            .map_err(Failure::environment)?,
        cli.unwind,
    );
    let events = probes.take_events().map_err(Failure::environment)?;
    // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open for
    // as long as it is registered.
    let ring =
        unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }.map_err(|e| {
            Failure::environment(anyhow!(e.into_parts().1).context("watching the ring buffer"))
        })?;

    let mut processes = Processes::new(detector);
    let format = if cli.json { Format::Json } else { Format::Text };
    let clock_offset = kernel::monotonic_to_realtime_offset();
    let output = Output::new(format, cli.only_flagged, cli.quiet || cli.top, clock_offset);
    let mut recorder = match &cli.output {
        Some(path) => {
            let header = recording::local_header(
                probes.offsets,
                &processes.detector,
                monotonic_ns(),
                clock_offset as i64,
            );
            Some(Recorder::create(path, &header, cli.max_size)?)
        }
        None => None,
    };

    let mut attach_notes = Vec::new();
    match &targets {
        Targets::Pids(_) => {
            attach_notes = attach_pids(
                attached,
                &mut processes,
                &mut stacks,
                recorder.as_mut(),
                limit,
            )
        }
        Targets::Command(argv) => {
            let comm = program_name(&argv[0].to_string_lossy());
            let pid = gated.as_ref().expect("forked above").pid;
            processes.attach(pid, comm, None, monotonic_ns());
        }
        Targets::All => attach_notes = crate::host::maps::notes_for_host(limit),
    }
    let command_pid = gated.as_ref().map(|command| command.pid);
    let started = std::time::Instant::now();
    let start_ns = monotonic_ns();
    eprintln!("{}", banner(&targets, &processes, limit, &probes));
    for note in attach_notes {
        eprintln!("vmatrace: {note}");
    }
    let top = if cli.top {
        Some(Top::new(cli.json).map_err(|e| {
            Failure::environment(anyhow!(e).context("setting up the terminal for --top"))
        })?)
    } else {
        None
    };
    let filter = output.filter;
    let printer = Printer::start(
        output,
        max_rate(&cli),
        cli.debug_info,
        Destinations {
            recording: recorder.as_ref().map(Recorder::sink),
            sites: top.as_ref().map(Top::sites),
        },
    )
    .map_err(Failure::environment)?;

    let mut run = Run {
        ring,
        processes,
        printer: Some(printer),
        filter,
        status: StatusLines::default(),
        json_status: cli.json,
        events: 0,
        malformed: 0,
        command_pid,
        recorder,
        snapshot_execs: targets != Targets::All,
        stacks,
        top,
        threads_started: None,
    };
    // The command starts last, when everything is ready to follow it: a
    // short-lived one may be done within a millisecond.
    let child_exit = match gated {
        Some(command) => Some(wait_for(command.release()?)),
        None => None,
    };
    let traced = run
        .trace_until_done(&cli, &targets, &mut probes, child_exit, stop)
        .await;
    // Back from the full screen before anything else is printed.
    if let Some(top) = run.top.take() {
        top.close();
    }
    let child_status = traced?;
    // What happened before the stop; under a storm (-a on a busy host)
    // events keep coming faster than they are read, and the trace ends.
    run.drain_until(monotonic_ns())?;
    let mut output = run.finish_printing()?;

    let mut lost = probes.lost().map_err(Failure::environment)?;
    // Stacks the kernel sent that userspace could not pair with their
    // event are as unavailable as those it could not copy.
    lost.stacks_unavailable += run.stacks.missing;
    if let Some(recorder) = run.recorder.take() {
        let dropped = recorder.dropped();
        recorder
            .close(lost_record(&lost, monotonic_ns()))
            .map_err(|e| Failure::environment(e.context("closing the trace file")))?;
        if dropped > 0 {
            eprintln!(
                "vmatrace: the trace file misses {dropped} records: the disk could not keep up"
            );
        }
    }
    let summary = Summary {
        processes: &run.processes,
        lost,
        seconds: started.elapsed().as_secs_f64(),
        events: run.events,
        missing_calls: &probes.missing_calls,
        start_ns,
        cost: probes.cost(),
        own_cpu_s: own_cpu_seconds(),
        stacks: StackCounts {
            captured: run.stacks.captured,
            shared: run.stacks.shared,
            by_site: probes.stack_site_ns != 0,
        },
    };
    output.summary(&summary).context("writing the summary")?;
    if run.malformed > 0 {
        eprintln!(
            "vmatrace: {} malformed records from the kernel were skipped",
            run.malformed
        );
    }
    probes.detach_after_exit();
    Ok(exit_status(lost, child_status))
}

/// CPU seconds (user and system) this process has used so far.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

pub(super) fn executable_of(pid: u32) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/{pid}/exe"))
}

/// Flagged lines of a flag and site printed whole per second: a few on a
/// terminal, where a person reads; all when piped or JSON, unless asked.
fn max_rate(cli: &LiveArgs) -> u32 {
    use std::io::IsTerminal;
    cli.max_rate
        .unwrap_or(if std::io::stdout().is_terminal() && !cli.json {
            fold::DEFAULT_MAX_RATE
        } else {
            0
        })
}

/// How long a call site's stack stands for its later calls (0: each
/// flagged call sends its own, the default): a second with
/// `--site-stacks`, live; a recording keeps each call's own, as it
/// promises.
fn stack_site_ns(cli: &LiveArgs) -> u64 {
    const SITE_STACK_LASTS_NS: u64 = 1_000_000_000;
    if stack_mode(cli) == capture_stacks::FLAGGED && cli.site_stacks && cli.output.is_none() {
        SITE_STACK_LASTS_NS
    } else {
        0
    }
}

fn stack_mode(cli: &LiveArgs) -> u8 {
    if cli.no_stacks {
        capture_stacks::NONE
    } else if cli.stacks {
        capture_stacks::ALL
    } else {
        capture_stacks::FLAGGED
    }
}

/// Starts following running processes, already in the traced set: each
/// one's count, allocator and mappings, read now that the probes see every
/// change. Says what holds the VMAs of those that hold much of the limit
/// already (the damage is often done before anyone attaches).
fn attach_pids(
    attached: Vec<targets::TargetInfo>,
    processes: &mut Processes,
    stacks: &mut user_stacks::UserStacks,
    mut recorder: Option<&mut Recorder>,
    limit: u64,
) -> Vec<String> {
    let mut notes = Vec::new();
    for info in attached {
        processes.attach(info.pid, info.comm, info.count, monotonic_ns());
        let snapshot = snapshot_process(info.pid, monotonic_ns());
        processes.snapshot(&snapshot, Some(&executable_of(info.pid)));
        stacks.seed(info.pid, &snapshot.maps);
        if let Some(note) = crate::host::maps::note_at_attach(&snapshot, limit) {
            notes.push(note);
        }
        if let Some(recorder) = recorder.as_deref_mut() {
            recorder.record(&Record::Process(snapshot));
        }
    }
    notes
}

fn exit_status(lost: LostCounts, child: Option<ExitStatus>) -> i32 {
    if lost.total() > 0 {
        eprintln!(
            "vmatrace: {} events were lost: the trace is incomplete",
            lost.total()
        );
        return exit_code::LOST_EVENTS;
    }
    child.map_or(exit_code::OK, targets::shell_exit_code)
}

fn banner(targets: &Targets, processes: &Processes, limit: u64, probes: &Probes) -> String {
    let mode = &probes.count_mode;
    let what = match targets {
        Targets::Pids(_) => processes
            .by_pid
            .values()
            .map(|s| {
                let count = s.count.map_or("?".into(), |c| c.to_string());
                format!("{} ({}, {count} VMAs)", s.pid, s.comm)
            })
            .collect::<Vec<_>>()
            .join(", "),
        Targets::Command(argv) => format!(
            "{} (pid {})",
            argv.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            processes.by_pid.keys().next().copied().unwrap_or(0)
        ),
        Targets::All => "every process".to_string(),
    };
    let mut banner = format!("vmatrace: tracing {what}; vm.max_map_count {limit}");
    // The usual mode goes without saying; the fallback is said, with why.
    if let CountMode::Syscall { .. } = mode {
        banner.push_str(&format!("\nvmatrace: {}", mode.describe()));
    }
    if probes.lock_probes_build_memcg_path {
        banner.push_str(&format!(
            "\nvmatrace: note: {}",
            crate::kernel::tracefs::MEMCG_PATH_COST
        ));
    }
    banner
}
