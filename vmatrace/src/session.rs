//! One tracing run: set up the targets, then move events from the kernel
//! through the state and detectors to the outputs until the targets are
//! gone, the time is up, or the user stops it.

use std::{
    collections::HashSet,
    io::IsTerminal,
    process::ExitStatus,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use aya::maps::{MapData, RingBuf, StackTraceMap};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::oneshot,
};
use vmatrace_common::{EVENT_SIZE, Event, EventKind, capture_stacks};

use crate::{
    cli::{LiveArgs, Targets},
    detect::Detector,
    error::{Failure, exit_code},
    kernel, mappings,
    output::{EventFilter, Format, Output, StatusLines, Summary},
    printer::{Destinations, Job, Printer},
    probes::{LostCounts, ProbeConfig, Probes},
    state::{Processes, program_name},
    symbols::RawStack,
    target::{self, Gated},
    top::Top,
    tracefile::{
        self,
        format::{Checkpoint, LostRecord, MappingRecord, Record},
        writer::Recorder,
    },
};

/// How often the ring buffer is drained when the kernel did not wake us:
/// it wakes us only when the buffer fills up, which keeps the cost per
/// event low at high rates.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How often a recording gets every process's count and the losses so far.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Poll ticks between checks that the targets are still alive (250 ms).
const LIVENESS_TICKS: u32 = 25;

pub async fn run(cli: LiveArgs) -> Result<i32, Failure> {
    let targets = cli.targets().map_err(|e| Failure::usage(anyhow!(e)))?;
    // Bad pids are found before anything is loaded.
    let attached: Vec<target::TargetInfo> = match &targets {
        Targets::Pids(pids) => pids
            .iter()
            .map(|pid| target::inspect_pid(*pid))
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    // From here on, Ctrl-C and SIGTERM end the trace with its summary
    // (and a closed trace file), however early they come.
    let stop = Stop {
        interrupt: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        terminate: signal(SignalKind::terminate()).context("SIGTERM handler")?,
    };
    let limit = kernel::max_map_count().map_err(Failure::environment)?;
    let detector = Detector::new(limit, cli.warn_at / 100.0);
    let mut probes = Probes::load(&ProbeConfig {
        warn_at: detector.warn_at,
        trace_all: targets == Targets::All,
        follow_forks: cli.follow_forks,
        ring_buffer_bytes: cli.buffer_size,
        btf_path: cli.btf.clone(),
        capture_stacks: stack_mode(&cli),
    })?;
    let stacks = probes.take_stacks().map_err(Failure::environment)?;
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
            let header = tracefile::local_header(
                probes.offsets,
                &processes.detector,
                monotonic_ns(),
                clock_offset as i64,
            );
            Some(Recorder::create(path, &header, cli.max_size)?)
        }
        None => None,
    };

    let mut gated = None;
    match &targets {
        Targets::Pids(_) => attach_pids(attached, &mut probes, &mut processes, recorder.as_mut())?,
        Targets::Command(argv) => gated = Some(gate_command(argv, &mut probes, &mut processes)?),
        Targets::All => {}
    }
    let command_pid = gated.as_ref().map(|command| command.pid);
    let started = Instant::now();
    eprintln!("{}", banner(&targets, &processes, limit));
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
        limit,
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
        events: 0,
        malformed: 0,
        command_pid,
        recorder,
        snapshot_execs: targets != Targets::All,
        stacks,
        seen_stacks: HashSet::new(),
        top,
    };
    // The command starts last, when everything is ready to follow it: a
    // short-lived one may be done within a millisecond.
    let child_exit = match gated {
        Some(command) => Some(wait_for(command.release()?)),
        None => None,
    };
    let traced = run
        .trace_until_done(&cli, &targets, &probes, child_exit, stop)
        .await;
    // Back from the full screen before anything else is printed.
    if let Some(top) = run.top.take() {
        top.close();
    }
    let child_status = traced?;
    run.drain()?;
    let mut output = run.finish_printing()?;

    let lost = probes.lost().map_err(Failure::environment)?;
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
    };
    output.summary(&summary).context("writing the summary")?;
    if run.malformed > 0 {
        eprintln!(
            "vmatrace: {} malformed records from the kernel were skipped",
            run.malformed
        );
    }
    Ok(exit_status(lost, child_status))
}

fn executable_of(pid: u32) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/{pid}/exe"))
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

/// Starts following running processes: the probes, then each one's count,
/// allocator and mappings, read once the probes see every change.
fn attach_pids(
    attached: Vec<target::TargetInfo>,
    probes: &mut Probes,
    processes: &mut Processes,
    mut recorder: Option<&mut Recorder>,
) -> Result<(), Failure> {
    for info in attached {
        probes.add_target(info.pid).map_err(Failure::environment)?;
        processes.attach(info.pid, info.comm, info.count, monotonic_ns());
        let snapshot = tracefile::snapshot_process(info.pid, monotonic_ns());
        processes.snapshot(&snapshot, Some(&executable_of(info.pid)));
        if let Some(recorder) = recorder.as_deref_mut() {
            recorder.record(&Record::Process(snapshot));
        }
    }
    Ok(())
}

/// Forks the command, held before its exec until the event loop is ready,
/// and traces it from there.
fn gate_command(
    argv: &[std::ffi::OsString],
    probes: &mut Probes,
    processes: &mut Processes,
) -> Result<Gated, Failure> {
    let command = Gated::spawn(argv)?;
    probes
        .add_target(command.pid)
        .map_err(Failure::environment)?;
    let comm = program_name(&argv[0].to_string_lossy());
    processes.attach(command.pid, comm, None, monotonic_ns());
    Ok(command)
}

fn exit_status(lost: LostCounts, child: Option<ExitStatus>) -> i32 {
    if lost.total() > 0 {
        eprintln!(
            "vmatrace: {} events were lost: the trace is incomplete",
            lost.total()
        );
        return exit_code::LOST_EVENTS;
    }
    child.map_or(exit_code::OK, target::shell_exit_code)
}

fn banner(targets: &Targets, processes: &Processes, limit: u64) -> String {
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
    format!("vmatrace: tracing {what}; vm.max_map_count {limit}")
}

fn lost_record(lost: &LostCounts, at_ns: u64) -> LostRecord {
    LostRecord {
        at_ns,
        ring_buffer_full: lost.ring_buffer_full,
        inflight_table_full: lost.inflight_table_full,
        targets_table_full: lost.targets_table_full,
        lifecycle_ring_buffer_full: lost.lifecycle_ring_buffer_full,
        recorder_queue_full: 0,
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Run {
    ring: AsyncFd<RingBuf<MapData>>,
    processes: Processes,
    /// Prints the events (and symbolizes their stacks) on its own thread.
    printer: Option<Printer>,
    filter: EventFilter,
    status: StatusLines,
    events: u64,
    malformed: u64,
    command_pid: Option<u32>,
    recorder: Option<Recorder>,
    /// Take a process snapshot at each exec (not with --all, where every
    /// exec in the system would be one: there a process is taken in at
    /// its first call after the exec).
    snapshot_execs: bool,
    stacks: StackTraceMap<MapData>,
    /// The (pid, stack id) pairs already read and handed to the printer.
    seen_stacks: HashSet<(u32, u32)>,
    /// The live allocator view, with --top.
    top: Option<Top>,
}

/// The signals that end a trace.
struct Stop {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

enum Wake {
    Data,
    Checkpoint,
    Tick,
    Status,
    Stop,
    Child(Option<ExitStatus>),
}

impl Run {
    /// The event loop. Returns the command's exit status, if it ran one.
    async fn trace_until_done(
        &mut self,
        cli: &LiveArgs,
        targets: &Targets,
        probes: &Probes,
        mut child_exit: Option<oneshot::Receiver<std::io::Result<ExitStatus>>>,
        mut stop: Stop,
    ) -> Result<Option<ExitStatus>, Failure> {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        let status_every = cli
            .interval
            .unwrap_or(if cli.top || std::io::stderr().is_terminal() {
                1.0
            } else {
                0.0
            });
        // Intervals that start one period from now: awaiting an interval's
        // immediate first tick waits for the timer wheel (about 1 ms each),
        // time in which a short-lived command may have come and gone.
        let every = |period: Duration| {
            tokio::time::interval_at(tokio::time::Instant::now() + period, period)
        };
        let mut status = every(Duration::from_secs_f64(status_every.max(0.05)));
        // A late refresh (a slow first symbolization) is not made up for
        // with a burst of them.
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = cli
            .duration
            .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d.max(0.0)));
        let mut child_status = None;
        let mut ticks: u32 = 0;
        let mut checkpoint = every(CHECKPOINT_INTERVAL);
        loop {
            let wake = tokio::select! {
                ready = self.ring.readable() => {
                    if let Ok(mut guard) = ready {
                        guard.clear_ready();
                    }
                    Wake::Data
                }
                _ = poll.tick() => Wake::Tick,
                _ = status.tick(), if status_every > 0.0 => Wake::Status,
                _ = checkpoint.tick(), if self.recorder.is_some() => Wake::Checkpoint,
                _ = stop.interrupt.recv() => Wake::Stop,
                _ = stop.terminate.recv() => Wake::Stop,
                _ = quit_requested(&mut self.top) => Wake::Stop,
                _ = sleep_until(deadline) => Wake::Stop,
                exit = async { child_exit.as_mut().expect("guarded").await }, if child_exit.is_some() => {
                    child_exit = None;
                    Wake::Child(exit.ok().and_then(Result::ok))
                }
            };
            self.drain()?;
            match wake {
                Wake::Stop => return Ok(child_status),
                Wake::Child(exit) => {
                    child_status = exit;
                    if let Some(pid) = self.command_pid {
                        // Reaped: whatever its exit event said, it is gone.
                        self.processes.mark_exited(pid);
                    }
                }
                Wake::Status => {
                    let lost = probes.lost().unwrap_or_default();
                    match self.top.as_mut() {
                        Some(top) => top.show(&self.processes, lost.total()).map_err(|e| {
                            Failure::environment(anyhow!(e).context("drawing the --top view"))
                        })?,
                        None => self.status.print(&self.processes, &lost),
                    }
                }
                Wake::Checkpoint => self.checkpoint(probes),
                Wake::Tick | Wake::Data => {}
            }
            // An exit event can be lost like any other: every so often the
            // kernel is asked directly whether the targets still live.
            ticks += u32::from(matches!(wake, Wake::Tick));
            let ask_kernel = ticks.is_multiple_of(LIVENESS_TICKS) && matches!(wake, Wake::Tick);
            if self.targets_gone(targets, child_exit.is_some(), ask_kernel) {
                return Ok(child_status);
            }
        }
    }

    /// True once nothing is left to trace.
    fn targets_gone(&mut self, targets: &Targets, child_running: bool, ask_kernel: bool) -> bool {
        match targets {
            Targets::All => false,
            Targets::Command(_) if child_running => false,
            Targets::Pids(_) | Targets::Command(_) => {
                if ask_kernel {
                    self.mark_vanished_targets();
                }
                self.processes.all_exited()
            }
        }
    }

    fn mark_vanished_targets(&mut self) {
        let vanished: Vec<u32> = self
            .processes
            .by_pid
            .values()
            .filter(|s| !s.exited && !target::is_alive(s.pid))
            .map(|s| s.pid)
            .collect();
        if !vanished.is_empty() {
            // Their last events may still wait in the ring buffer.
            self.drain_quietly();
            for pid in vanished {
                self.processes.mark_exited(pid);
            }
        }
    }

    /// Every live process's count and the losses so far, into the file.
    fn checkpoint(&mut self, probes: &Probes) {
        let Some(recorder) = self.recorder.as_mut() else {
            return;
        };
        let now = monotonic_ns();
        let counts = self
            .processes
            .by_pid
            .values()
            .filter(|s| !s.exited)
            .filter_map(|s| s.count.map(|c| (s.pid, c)))
            .collect();
        recorder.record(&Record::Checkpoint(Checkpoint { at_ns: now, counts }));
        if let Ok(lost) = probes.lost() {
            let mut record = lost_record(&lost, now);
            record.recorder_queue_full = recorder.dropped();
            recorder.record(&Record::Lost(record));
        }
    }

    /// The event's user stack, the first time (pid, stack id) is seen: its
    /// addresses, and the file and offset of each from the process's map
    /// before the call changed it, so it can be symbolized later, even
    /// after the process is gone.
    fn new_stack(&mut self, event: &Event) -> Option<RawStack> {
        let id = event.stack.checked_sub(1)?;
        if !self.seen_stacks.insert((event.pid, id)) {
            return None;
        }
        let trace = self.stacks.get(&id, 0).ok()?;
        let addrs: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
        let files = self.processes.files_of(event.pid, &addrs);
        Some(RawStack {
            pid: event.pid,
            id,
            addrs,
            files,
        })
    }

    /// Waits for the printer to print every event; the output comes back
    /// for the summary.
    fn finish_printing(&mut self) -> Result<Output, Failure> {
        let printer = self.printer.take().expect("finished once");
        printer
            .finish()
            .map_err(|e| Failure::environment(anyhow!(e).context("writing events")))
    }

    fn drain_quietly(&mut self) {
        let _ = self.drain();
    }

    /// The next event waiting in the ring buffer.
    fn next_event(&mut self) -> Option<Event> {
        loop {
            let item = self.ring.get_mut().next()?;
            if item.len() < EVENT_SIZE {
                self.malformed += 1;
                continue;
            }
            // SAFETY: the kernel wrote a whole `Event` (checked length);
            // read_unaligned copes with the byte buffer's alignment.
            return Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
        }
    }

    /// Moves every waiting event through state and detectors to the
    /// recording and the printer.
    fn drain(&mut self) -> Result<(), Failure> {
        while let Some(event) = self.next_event() {
            self.events += 1;
            // Before the event in the file: readers meet a snapshot and a
            // file name first, as the live view did.
            let syscall = event.kind == EventKind::Syscall as u8;
            if syscall && !self.processes.knows_mappings(event.pid) {
                self.take_snapshot(event.pid, monotonic_ns());
            }
            self.name_mapped_file(&event);
            let new_stack = self.new_stack(&event);
            if let Some(recorder) = self.recorder.as_mut() {
                recorder.record(&Record::Event(event));
            }
            let applied = self.processes.apply(&event);
            if event.kind == EventKind::Exec as u8 && self.snapshot_execs {
                self.take_snapshot(event.pid, event.exit_ns);
            }
            // The printer gets what it prints, every new stack (to name it,
            // for the lines and the recording), and with --top every call
            // with a stack (its sites).
            let counts_for_sites = event.stack != 0 && self.top.is_some();
            if new_stack.is_some() || counts_for_sites || self.filter.prints(&applied) {
                self.print(Job {
                    event,
                    applied,
                    new_stack,
                })?;
            }
        }
        Ok(())
    }

    fn print(&mut self, job: Job) -> Result<(), Failure> {
        let sent = self.printer.as_ref().map(|p| p.send(job));
        match sent {
            Some(Ok(())) | None => Ok(()),
            // It stopped on a write error: that error ends the trace.
            Some(Err(_)) => Err(self
                .finish_printing()
                .err()
                .unwrap_or_else(|| Failure::environment(anyhow!("the printer stopped")))),
        }
    }

    /// Reads the process's command line and mappings now, into the state
    /// and the recording.
    fn take_snapshot(&mut self, pid: u32, at_ns: u64) {
        let snapshot = tracefile::snapshot_process(pid, at_ns);
        self.processes
            .snapshot(&snapshot, Some(&executable_of(pid)));
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.record(&Record::Process(snapshot));
        }
    }

    /// Finds the file a file-backed mmap mapped while the process still
    /// has it, for the state and the recording.
    fn name_mapped_file(&mut self, event: &Event) {
        let Some((start, len)) = mappings::file_mmap(event) else {
            return;
        };
        let Some(path) = mappings::file_mapped_at(event.pid, start, len) else {
            return;
        };
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.record(&Record::Mapping(MappingRecord {
                pid: event.pid,
                start,
                path: path.to_string(),
            }));
        }
        self.processes.name_file_mapping(event.pid, start, path);
    }
}

/// The command's exit status, once it exits.
fn wait_for(mut child: std::process::Child) -> oneshot::Receiver<std::io::Result<ExitStatus>> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    rx
}

async fn quit_requested(top: &mut Option<Top>) {
    match top {
        Some(top) => top.quit_requested().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
