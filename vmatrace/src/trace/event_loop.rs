//! The event loop: drain the ring buffer, move each event through the
//! state and detectors to the recording and the printer, and wake for
//! status lines, checkpoints, signals and the command's exit.

use std::{io::IsTerminal, process::ExitStatus, time::Duration};

use anyhow::anyhow;
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::oneshot};
use vmatrace_common::{EVENT_SIZE, Event, EventKind};

use super::{
    executable_of,
    printer::{EventJob, Job, Printer, Stopped},
    recording::lost_record,
    targets,
    user_stacks::UserStacks,
};
use crate::{
    cli::{LiveArgs, Targets},
    error::Failure,
    kernel::{
        monotonic_ns,
        probes::{CountMode, Probes},
    },
    model::{address_space, detect::Detector, processes::Processes, snapshot::snapshot_process},
    output::{EventFilter, Output, status::StatusLines, top::Top},
    tracefile::{
        format::{Checkpoint, LimitRecord, MappingRecord, Record},
        writer::Recorder,
    },
};

/// How often the ring buffer is drained when the kernel did not wake us:
/// it wakes us only when the buffer fills up, which keeps the cost per
/// event low at high rates.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How often a recording gets every process's count and the losses so far.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Poll ticks between readings of `vm.max_map_count` (about a second): an
/// operator may raise it, or lower it, during the trace.
const LIMIT_TICKS: u32 = 100;

/// How long one wake of the event loop reads events before it looks at
/// its timers and signals again.
const DRAIN_BUDGET: Duration = Duration::from_millis(50);

/// Poll ticks between checks that the targets are still alive (250 ms).
const LIVENESS_TICKS: u32 = 25;

pub(super) struct Run {
    pub(super) ring: AsyncFd<RingBuf<MapData>>,
    pub(super) processes: Processes,
    /// Prints the events (and symbolizes their stacks) on its own thread.
    pub(super) printer: Option<Printer>,
    pub(super) filter: EventFilter,
    pub(super) status: StatusLines,
    /// Status lines as JSON objects on stdout, among the events (`--json`).
    pub(super) json_status: bool,
    pub(super) events: u64,
    pub(super) malformed: u64,
    pub(super) command_pid: Option<u32>,
    pub(super) recorder: Option<Recorder>,
    /// Take a process snapshot at each exec (not with --all, where every
    /// exec in the system would be one: there a process is taken in at
    /// its first call after the exec).
    pub(super) snapshot_execs: bool,
    /// The user stacks: the kernel's walks and the copies to walk again.
    pub(super) stacks: UserStacks,
    /// The live allocator view, with --top.
    pub(super) top: Option<Top>,
    /// A traced process started a thread while the lock probes were not
    /// attached (`EventKind::Thread`): attach them.
    pub(super) threads_started: Option<u32>,
}

/// The signals that end a trace.
pub(super) struct Stop {
    pub(super) interrupt: tokio::signal::unix::Signal,
    pub(super) terminate: tokio::signal::unix::Signal,
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
    pub(super) async fn trace_until_done(
        &mut self,
        cli: &LiveArgs,
        targets: &Targets,
        probes: &mut Probes,
        mut child_exit: Option<oneshot::Receiver<std::io::Result<ExitStatus>>>,
        mut stop: Stop,
    ) -> Result<Option<ExitStatus>, Failure> {
        release_freed_memory();
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
            self.flush_printer()?;
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
            // A bounded drain: under a flood the ring buffer never runs
            // empty, and the status lines, the deadline and Ctrl-C must
            // still be heard. What is left is read at the next wake (the
            // poll tick comes every few ms).
            self.drain_for(DRAIN_BUDGET)?;
            if let Some(pid) = self.threads_started.take() {
                self.count_under_the_lock(probes, pid);
            }
            probes.print_diagnostics();
            probes.sample_cost();
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
                        Some(top) => top
                            .show(&self.processes, lost.total(), probes.cost())
                            .map_err(|e| {
                                Failure::environment(anyhow!(e).context("drawing the --top view"))
                            })?,
                        None if self.json_status => {
                            for status in self.status.next(&self.processes, &lost) {
                                self.print(Job::Json(status.json))?;
                            }
                        }
                        None => self.status.print(&self.processes, &lost),
                    }
                }
                Wake::Checkpoint => self.checkpoint(probes),
                Wake::Tick | Wake::Data => {}
            }
            // An exit event can be lost like any other: every so often the
            // kernel is asked directly whether the targets still live.
            ticks += u32::from(matches!(wake, Wake::Tick));
            if ticks.is_multiple_of(LIMIT_TICKS) && matches!(wake, Wake::Tick) {
                self.follow_the_limit(probes, cli.warn_at / 100.0);
            }
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

    /// A traced process has threads: from now on its calls (and every
    /// other's) are counted under the mmap write lock, exact whatever the
    /// threads do at once. Calls that began before stay counted at syscall
    /// entry and exit, marked inexact if another thread's overlapped them.
    fn count_under_the_lock(&mut self, probes: &mut Probes, pid: u32) {
        let reason = format!("pid {pid} started a thread");
        if let Some(note) = lock_probes_for_threads(probes, &reason) {
            let json = serde_json::json!({"type": "count_mode", "pid": pid, "note": note});
            self.notice(json, note);
        }
    }

    /// Tells the user of a change in how the trace runs: a JSON object
    /// among the events with --json, a line on stderr otherwise.
    fn notice(&mut self, json: serde_json::Value, text: String) {
        if self.json_status {
            let _ = self.print(Job::Json(json));
        } else {
            eprintln!("vmatrace: {text}");
        }
    }

    /// Takes a changed `vm.max_map_count` into the detectors and the
    /// programs, and says so: ENOMEM causes, NEAR-LIMIT and the headroom
    /// are judged against the limit in force.
    fn follow_the_limit(&mut self, probes: &Probes, warn_fraction: f64) {
        let Ok(limit) = crate::kernel::max_map_count() else {
            return;
        };
        if limit == self.processes.detector.limit {
            return;
        }
        let old = self.processes.detector.limit;
        self.processes.detector = Detector::new(limit, warn_fraction);
        probes.set_limits(limit, self.processes.detector.warn_at);
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.record(&Record::Limit(LimitRecord {
                at_ns: monotonic_ns(),
                max_map_count: limit,
                warn_at: self.processes.detector.warn_at,
            }));
        }
        self.notice(
            serde_json::json!({"type": "limit", "from": old, "limit": limit}),
            format!(
                "vm.max_map_count changed from {old} to {limit}: counts are judged against {limit} from now on"
            ),
        );
    }

    fn mark_vanished_targets(&mut self) {
        let vanished: Vec<u32> = self
            .processes
            .by_pid
            .values()
            .filter(|s| !s.exited && !targets::is_alive(s.pid))
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

    /// Waits for the printer to print every event; the output comes back
    /// for the summary.
    pub(super) fn finish_printing(&mut self) -> Result<Output, Failure> {
        let printer = self.printer.take().expect("finished once");
        printer
            .finish()
            .map_err(|e| Failure::environment(anyhow!(e).context("writing events")))
    }

    fn drain_quietly(&mut self) {
        let _ = self.drain_until(monotonic_ns());
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

    /// Moves the waiting events of calls that ended before `stop_ns` (and
    /// the few made on other CPUs meanwhile that came in among them)
    /// through state and detectors to the recording and the printer; the
    /// first one of a later call ends the drain. Under a storm (-a on a
    /// busy host) events keep coming faster than they are read.
    pub(super) fn drain_until(&mut self, stop_ns: u64) -> Result<(), Failure> {
        /// Calls ending this soon after the stop were in flight at it.
        const IN_FLIGHT_NS: u64 = 50_000_000;
        while let Some(event) = self.next_event() {
            let late = event.exit_ns > stop_ns.saturating_add(IN_FLIGHT_NS);
            self.handle(event)?;
            if late {
                break;
            }
        }
        Ok(())
    }

    /// Reads the waiting events for at most about `budget`.
    fn drain_for(&mut self, budget: Duration) -> Result<(), Failure> {
        let started = std::time::Instant::now();
        let mut read = 0u32;
        while let Some(event) = self.next_event() {
            self.handle(event)?;
            read = read.wrapping_add(1);
            // A first thread: the lock probes are attached before more
            // calls of its process run without them.
            if self.threads_started.is_some()
                || (read.is_multiple_of(256) && started.elapsed() > budget)
            {
                break;
            }
        }
        Ok(())
    }

    /// One event: into the state, the recording and the printer.
    fn handle(&mut self, mut event: Event) -> Result<(), Failure> {
        // For the loader alone: not a change to any count.
        if event.kind == EventKind::Thread as u8 {
            self.threads_started.get_or_insert(event.pid);
            return Ok(());
        }
        self.events += 1;
        // Before the event in the file: readers meet a snapshot and a
        // file name first, as the live view did.
        let syscall = event.kind == EventKind::Syscall as u8;
        if syscall && !self.processes.knows_mappings(event.pid) {
            self.take_snapshot(event.pid, monotonic_ns());
        }
        self.name_mapped_file(&event);
        let stack = self.stacks.stack_of(&mut event, &self.processes);
        if event.kind == EventKind::Exit as u8 {
            self.stacks.forget(event.pid);
        }
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
        if stack.new.is_some() || counts_for_sites || self.filter.prints(&event, &applied) {
            let limit = self.processes.detector.limit;
            self.print(Job::Event(EventJob {
                event,
                applied,
                new_stack: stack.new,
                shared_stack: stack.shared,
                limit,
            }))?;
        }
        Ok(())
    }

    fn print(&mut self, job: Job) -> Result<(), Failure> {
        let sent = self.printer.as_mut().map(|p| p.send(job));
        self.printer_result(sent)
    }

    /// Sends the printer what it has not had yet: before the loop waits.
    fn flush_printer(&mut self) -> Result<(), Failure> {
        let sent = self.printer.as_mut().map(Printer::flush);
        self.printer_result(sent)
    }

    fn printer_result(&mut self, sent: Option<Result<(), Stopped>>) -> Result<(), Failure> {
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
        let snapshot = snapshot_process(pid, at_ns);
        self.processes
            .snapshot(&snapshot, Some(&executable_of(pid)));
        self.stacks.seed(pid, &snapshot.maps);
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.record(&Record::Process(snapshot));
        }
    }

    /// Finds the file a file-backed mmap mapped while the process still
    /// has it, for the state and the recording.
    fn name_mapped_file(&mut self, event: &Event) {
        let Some((start, len)) = address_space::file_mmap(event) else {
            return;
        };
        let Some(path) = address_space::file_mapped_at(event.pid, start, len) else {
            return;
        };
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.record(&Record::Mapping(MappingRecord {
                pid: event.pid,
                start,
                path: path.to_string(),
            }));
        }
        self.stacks.mapped(event, &path);
        self.processes.name_file_mapping(event.pid, start, path);
    }
}

/// The command's exit status, once it exits.
/// Attaches the lock probes because of `reason`, if they are not yet:
/// what to say about it, if anything changed. A failure leaves the counts
/// at syscall entry and exit, which mark the overlapping calls of threads
/// inexact: said, not fatal.
fn lock_probes_for_threads(probes: &mut Probes, reason: &str) -> Option<String> {
    if !matches!(
        probes.count_mode,
        CountMode::LockWhenThreaded { attached: false }
    ) {
        return None;
    }
    let mut note = match probes.attach_lock_probes() {
        Ok(()) => format!(
            "{reason}: counting under each call's mmap write lock from now on (the lock probes are attached)"
        ),
        Err(e) => {
            let why = format!("the lock probes could not be attached: {e:#}");
            probes.count_mode = CountMode::Syscall { why: why.clone() };
            return Some(format!(
                "warning: {reason}, and {why}: calls of one process that overlap stay marked inexact (~)"
            ));
        }
    };
    if probes.lock_probes_build_memcg_path {
        note.push_str(&format!(
            "\nvmatrace: note: {}",
            crate::kernel::tracefs::MEMCG_PATH_COST
        ));
    }
    Some(note)
}

pub(super) fn wait_for(
    mut child: std::process::Child,
) -> oneshot::Receiver<std::io::Result<ExitStatus>> {
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

/// Gives the memory freed after loading (the kernel's BTF, parsed twice:
/// tens of megabytes) back to the system: the allocator would keep it for
/// the whole trace, and incident boxes are short of memory.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
