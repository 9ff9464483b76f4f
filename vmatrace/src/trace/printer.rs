//! The event printer: a thread that symbolizes stacks, prints the events
//! and records the stacks it symbolized, so the ring buffer reader never
//! waits for either (the first stack in a large binary takes a while to
//! symbolize; a terminal or a pipe may be slow to take lines).

use std::{
    io,
    sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel},
    thread::JoinHandle,
};

use anyhow::Context;
use vmatrace_common::Event;

use crate::{
    model::processes::Applied,
    model::sites::SharedSites,
    output::Output,
    stacks::symbols::{RawStack, Symbols},
    tracefile::{
        format::{Record, StackRecord},
        writer::RecordSink,
    },
};

/// Events waiting for the printer, at most (about 50 MB): beyond that the
/// reader waits, and the ring buffer takes up the slack.
const QUEUE_JOBS: usize = 1 << 18;

/// What the printer prints, in order.
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
    pub fn start(output: Output, limit: u64, to: Destinations) -> anyhow::Result<Printer> {
        let (jobs, incoming) = sync_channel(QUEUE_JOBS);
        let thread = std::thread::Builder::new()
            .name("vmatrace-printer".into())
            .spawn(move || print_loop(output, limit, to, incoming))
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

fn print_loop(
    mut output: Output,
    limit: u64,
    to: Destinations,
    jobs: Receiver<Job>,
) -> io::Result<Output> {
    let mut symbols = Symbols::default();
    loop {
        let job = match jobs.try_recv() {
            Ok(job) => job,
            // Caught up: what was printed goes out now.
            Err(TryRecvError::Empty) => {
                output.flush()?;
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
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
        output.event(&event, &applied, limit, stack.as_deref())?;
    }
    output.flush()?;
    Ok(output)
}
