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
    stacks::{
        SharedStack,
        symbols::{RawStack, Symbols},
    },
    tracefile::{
        format::{Record, StackRecord},
        writer::RecordSink,
    },
};

/// Events go to the printer in batches of this many (or fewer, when the
/// reader is about to wait): one allocation and one wakeup a batch.
const BATCH_JOBS: usize = 256;

/// Batches waiting for the printer, at most: beyond that the reader waits,
/// and the ring buffer takes up the slack. Sized for bursts (32,768
/// events, a slow first symbolization), not for a printer that cannot keep
/// up at all (a terminal at 200,000 lines a second). Memory is taken as
/// the queue fills: a queue of single events had its 8 MB of slots
/// allocated and touched up front.
const QUEUE_BATCHES: usize = 128;

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
    /// The call shares the stack its site sent earlier.
    pub shared_stack: Option<SharedStack>,
    /// `vm.max_map_count` when the event was judged (it can change
    /// during the trace).
    pub limit: u64,
}

/// The printer thread has stopped.
#[derive(Debug)]
pub struct Stopped;

pub struct Printer {
    batches: SyncSender<Vec<Job>>,
    /// Jobs not yet sent.
    pending: Vec<Job>,
    thread: JoinHandle<io::Result<Output>>,
}

/// Where the printer sends what it makes besides event lines.
pub struct Destinations {
    pub recording: Option<RecordSink>,
    pub sites: Option<SharedSites>,
}

impl Printer {
    /// Starts the thread; `max_rate` flagged lines of a flag and site a
    /// second are printed whole, the rest folded (0: all whole);
    /// `debug_info`: see `Symbols::new`.
    pub fn start(
        output: Output,
        max_rate: u32,
        debug_info: bool,
        to: Destinations,
    ) -> anyhow::Result<Printer> {
        let (batches, incoming) = sync_channel(QUEUE_BATCHES);
        let folder = Folder::new(max_rate);
        let thread = std::thread::Builder::new()
            .name("vmatrace-printer".into())
            .spawn(move || print_loop(output, folder, debug_info, to, incoming))
            .context("starting the printer thread")?;
        Ok(Printer {
            batches,
            pending: Vec::new(),
            thread,
        })
    }

    /// Hands an event over, sent with the next full batch or `flush`.
    /// Fails once the printer has stopped: it could not write (`finish`
    /// says why).
    pub fn send(&mut self, job: Job) -> Result<(), Stopped> {
        self.pending.push(job);
        if self.pending.len() >= BATCH_JOBS {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what is pending: before the reader waits.
    pub fn flush(&mut self) -> Result<(), Stopped> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH_JOBS));
        self.batches.send(batch).map_err(|_| Stopped)
    }

    /// Waits until every event is printed; gives the output back.
    pub fn finish(mut self) -> io::Result<Output> {
        // A failure to send is the printer's own, which `join` gives.
        let _ = self.flush();
        drop(self.batches);
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
    folder: Folder,
    debug_info: bool,
    to: Destinations,
    batches: Receiver<Vec<Job>>,
) -> io::Result<Output> {
    let mut printing = Printing {
        folder,
        // Made here: the symbolizer stays on the thread that uses it.
        symbols: Symbols::new(debug_info),
        said: Vec::new(),
        to,
    };
    loop {
        let batch = match batches.try_recv() {
            Ok(batch) => batch,
            // Caught up: what was printed goes out now.
            Err(TryRecvError::Empty) => {
                output.flush()?;
                match batches.recv_timeout(IDLE_CHECK) {
                    Ok(batch) => batch,
                    Err(RecvTimeoutError::Timeout) => {
                        if printing.folder.second_ended(monotonic_ns()) {
                            for line in printing.folder.close_second() {
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
        for job in batch {
            printing.print(&mut output, job)?;
        }
    }
    for line in printing.folder.close_second() {
        output.note(&line)?;
    }
    printing.record_renamed_stacks();
    output.flush()?;
    Ok(output)
}

/// The printer thread's state.
struct Printing {
    folder: Folder,
    symbols: Symbols,
    said: Vec<String>,
    to: Destinations,
}

impl Printing {
    fn print(&mut self, output: &mut Output, job: Job) -> io::Result<()> {
        let EventJob {
            event,
            applied,
            new_stack,
            shared_stack,
            limit,
        } = match job {
            Job::Event(event) => event,
            Job::Json(value) => return output.json_line(&value),
        };
        let stack = match &new_stack {
            Some(raw) => {
                let stack = self.symbols.symbolize(raw);
                let comm = crate::model::processes::comm_str(&event.comm);
                if let Some(hint) = self.symbols.naming_hint(raw.pid, &comm, &stack) {
                    output.hint(raw.pid, &hint)?;
                }
                if let Some(recording) = &self.to.recording {
                    recording.record(&Record::Stack(StackRecord {
                        pid: raw.pid,
                        id: raw.id,
                        stack: (*stack).clone(),
                    }));
                }
                Some(stack)
            }
            None => {
                let id = event.stack.checked_sub(1);
                let found = id.and_then(|id| self.symbols.cached_or_renamed(event.pid, id));
                match (found, id, &self.to.recording) {
                    // Named again from a newer perf map: recorded again, and
                    // readers take the last record of a stack.
                    (Some((stack, true)), Some(id), Some(recording)) => {
                        recording.record(&Record::Stack(StackRecord {
                            pid: event.pid,
                            id,
                            stack: (*stack).clone(),
                        }));
                        Some(stack)
                    }
                    (found, ..) => found.map(|(stack, _)| stack),
                }
            }
        };
        if let (Some(sites), Some(stack)) = (&self.to.sites, &stack)
            && let Ok(mut sites) = sites.lock()
        {
            sites
                .entry(event.pid)
                .or_default()
                .add(stack, &event, &applied);
        }
        if applied.flags.any() && output.filter.prints(&event, &applied) {
            let flag = applied.flags.names().first().copied().unwrap_or("flagged");
            let site = match &stack {
                Some(stack) => sites::site_and_caller(stack),
                None => unstacked_site(&event, &applied),
            };
            let whole = self
                .folder
                .admit(event.exit_ns, flag, &site, &mut self.said);
            for line in self.said.drain(..) {
                output.note(&line)?;
            }
            if !whole {
                return Ok(());
            }
        }
        output.event(&event, &applied, limit, stack.as_deref(), shared_stack)
    }
}

impl Printing {
    /// The stacks a perf map written since they were printed names (a JVM
    /// that dumps its map as it exits), recorded again: readers take a
    /// stack's last record.
    fn record_renamed_stacks(&mut self) {
        let Some(recording) = &self.to.recording else {
            return;
        };
        for (pid, id, stack) in self.symbols.renamed_since() {
            recording.record(&Record::Stack(StackRecord {
                pid,
                id,
                stack: (*stack).clone(),
            }));
        }
    }
}

/// Where a call without a stack came from, as near as the call and the
/// mapping it cut tell.
fn unstacked_site(event: &Event, applied: &Applied) -> String {
    let call = crate::model::changes::what_changed(event);
    let cut = applied.mapping.as_deref().map_or("unknown", mapping_kind);
    format!("{call} of {cut}")
}
