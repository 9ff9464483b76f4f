//! Reading recordings back, without root: `replay` prints the events as
//! the live view did, `report` summarizes them per process, `export`
//! converts them for other tools. The events go through the same state and
//! detectors as live, so the flags are the same.

mod export;
mod replay;
mod report;

pub use export::{chrome_trace, export};
pub use replay::replay;
pub use report::report;

use std::{
    io::{self},
    path::Path,
};

use anyhow::anyhow;
use vmatrace_common::Event;

use crate::{
    error::Failure,
    model::detect::Detector,
    model::processes::{Applied, Processes},
    stacks::symbols::{Stack, Symbols},
    tracefile::{
        format::{Header, Record},
        reader::{self, Ending, Trace},
    },
};

fn load(path: &Path) -> Result<Trace, Failure> {
    Ok(reader::read_file(path)?)
}

/// Says on stderr how the file ended, and returns the exit code for it.
fn finish(trace: &Trace, path: &Path) -> i32 {
    if trace.ending != Ending::Clean {
        eprintln!("vmatrace: {}: {}", path.display(), trace.ending);
    }
    trace.ending.exit_code()
}

fn write_error(e: io::Error) -> Failure {
    Failure::environment(anyhow!(e).context("writing the output"))
}

/// Replays the events through fresh state, calling `each` for every event
/// with what the live view computed for it.
fn play(
    trace: &Trace,
    mut each: impl FnMut(&Event, &Applied, &Processes, Option<&Stack>),
) -> Processes {
    let limit = trace.header.max_map_count;
    // Stacks are symbolized off the event loop while recording: a Stack
    // record may come after the first event that names it.
    let mut symbols = Symbols::default();
    for record in &trace.records {
        if let Record::Stack(record) = record {
            symbols.insert(record.pid, record.id, record.stack.clone());
        }
    }
    let mut processes = Processes::new(Detector::with_warn_at(limit, trace.header.warn_at));
    for record in &trace.records {
        match record {
            Record::Process(info) => {
                // The executable is the first mapping; read it if this
                // machine has it, for allocators linked into it.
                let exe = info
                    .maps
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(5))
                    .map(Path::new)
                    .filter(|p| p.is_file());
                processes.snapshot(info, exe);
            }
            Record::Mapping(mapping) => processes.name_file_mapping(
                mapping.pid,
                mapping.start,
                mapping.path.as_str().into(),
            ),
            Record::Event(event) => {
                let applied = processes.apply(event);
                let stack = event
                    .stack
                    .checked_sub(1)
                    .and_then(|id| symbols.cached(event.pid, id));
                each(event, &applied, &processes, stack.as_deref());
            }
            _ => {}
        }
    }
    processes
}

fn seconds_since_start(header: &Header, ns: u64) -> f64 {
    ns.saturating_sub(header.start_ns) as f64 / 1e9
}
