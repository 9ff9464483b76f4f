//! The event printer: a thread that symbolizes stacks, prints the events
//! and records the stacks it symbolized, so the ring buffer reader never
//! waits for either (the first stack in a large binary takes a while to
//! symbolize; a terminal or a pipe may be slow to take lines).

use std::{
    io,
    sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context;
use vmatrace_common::Event;

use crate::{
    kernel::monotonic_ns,
    model::{
        processes::{Applied, mapping_kind},
        sites::{self, SharedSites},
    },
    output::{Output, fold::Folder},
    stacks::symbols::{RawStack, Symbols},
    tracefile::{
        format::{Record, StackRecord},
        writer::RecordSink,
    },
};

/// Events waiting for the printer, at most: beyond that the reader waits,
/// and the ring buffer takes up the slack. The queue's slots are allocated
/// up front (about 7 MB here): it is sized for bursts, not for a printer
/// that cannot keep up at all (a terminal at 200,000 lines a second).
const QUEUE_JOBS: usize = 1 << 15;

/// What the printer prints, in order. Events are the hot variant: boxing
/// them would cost an allocation each, for the rare status line's sake.
#[allow(clippy::large_enum_variant)]
pub enum Job {
    Event(EventJob),
    /// A JSON object among the events (a status with `--json`).
    Json(serde_json::Value),
}

/// One event for the printer, with its stack if it is the first event
/// to name it.
pub struct EventJob {
    pub event: Event,
    pub applied: Applied,
    pub new_stack: Option<RawStack>,
}

/// The printer thread has stopped.
#[derive(Debug)]
pub struct Stopped;

pub struct Printer {
    jobs: SyncSender<Job>,
    thread: JoinHandle<io::Result<Output>>,
}

/// Where the printer sends what it makes besides event lines.
pub struct Destinations {
    pub recording: Option<RecordSink>,
    pub sites: Option<SharedSites>,
}

impl Printer {
    /// Starts the thread; `max_rate` flagged lines of a flag and site a
    /// second are printed whole, the rest folded (0: all whole).
    pub fn start(
        output: Output,
        limit: u64,
        max_rate: u32,
        to: Destinations,
    ) -> anyhow::Result<Printer> {
        let (jobs, incoming) = sync_channel(QUEUE_JOBS);
        let folder = Folder::new(max_rate);
        let thread = std::thread::Builder::new()
            .name("vmatrace-printer".into())
            .spawn(move || print_loop(output, limit, folder, to, incoming))
            .context("starting the printer thread")?;
        Ok(Printer { jobs, thread })
    }

    /// Hands an event over. Fails once the printer has stopped: it could
    /// not write (`finish` says why).
    pub fn send(&self, job: Job) -> Result<(), Stopped> {
        self.jobs.send(job).map_err(|_| Stopped)
    }

    /// Waits until every event is printed; gives the output back.
    pub fn finish(self) -> io::Result<Output> {
        drop(self.jobs);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the printer thread panicked")))
    }
}

/// How long the printer waits for work before it says what folding left
/// out of a second that has ended.
const IDLE_CHECK: Duration = Duration::from_millis(250);

fn print_loop(
    mut output: Output,
    limit: u64,
    mut folder: Folder,
    to: Destinations,
    jobs: Receiver<Job>,
) -> io::Result<Output> {
    let mut symbols = Symbols::default();
    let mut said = Vec::new();
    loop {
        let job = match jobs.try_recv() {
            Ok(job) => job,
            // Caught up: what was printed goes out now.
            Err(TryRecvError::Empty) => {
                output.flush()?;
                match jobs.recv_timeout(IDLE_CHECK) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        if folder.second_ended(monotonic_ns()) {
                            for line in folder.close_second() {
                                output.note(&line)?;
                            }
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let EventJob {
            event,
            applied,
            new_stack,
        } = match job {
            Job::Event(event) => event,
            Job::Json(value) => {
                output.json_line(&value)?;
                continue;
            }
        };
        let stack = match &new_stack {
            Some(raw) => {
                let stack = symbols.symbolize(raw);
                if let Some(recording) = &to.recording {
                    recording.record(&Record::Stack(StackRecord {
                        pid: raw.pid,
                        id: raw.id,
                        stack: (*stack).clone(),
                    }));
                }
                Some(stack)
            }
            None => event
                .stack
                .checked_sub(1)
                .and_then(|id| symbols.cached(event.pid, id)),
        };
        if let (Some(sites), Some(stack)) = (&to.sites, &stack)
            && let Ok(mut sites) = sites.lock()
        {
            sites
                .entry(event.pid)
                .or_default()
                .add(stack, &event, &applied);
        }
        if applied.flags.any() && output.filter.prints(&applied) {
            let flag = applied.flags.names().first().copied().unwrap_or("flagged");
            let site = match &stack {
                Some(stack) => sites::site_of(stack),
                None => unstacked_site(&event, &applied),
            };
            let whole = folder.admit(event.exit_ns, flag, &site, &mut said);
            for line in said.drain(..) {
                output.note(&line)?;
            }
            if !whole {
                continue;
            }
        }
        output.event(&event, &applied, limit, stack.as_deref())?;
    }
    for line in folder.close_second() {
        output.note(&line)?;
    }
    output.flush()?;
    Ok(output)
}

/// Where a call without a stack came from, as near as the call and the
/// mapping it cut tell.
fn unstacked_site(event: &Event, applied: &Applied) -> String {
    let call = vmatrace_common::Call::from_u8(event.call).map_or("?", |c| c.name());
    let cut = applied.mapping.as_deref().map_or("unknown", mapping_kind);
    format!("{call} of {cut}")
}
