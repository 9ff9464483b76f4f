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
    io,
    path::{Path, PathBuf},
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

/// Records that can be played, more than once: stacks first, then the
/// events that name them.
pub(crate) trait Recording {
    fn header(&self) -> &Header;
    /// Calls `each` on every record after the header, in file order, and
    /// says how they ended.
    fn each_record(&self, each: &mut dyn FnMut(&Record)) -> Result<Ending, Failure>;
}

impl Recording for Trace {
    fn header(&self) -> &Header {
        &self.header
    }

    fn each_record(&self, each: &mut dyn FnMut(&Record)) -> Result<Ending, Failure> {
        self.records.iter().for_each(each);
        Ok(self.ending.clone())
    }
}

/// A recording read from its file record by record, each time it is
/// played: memory does not grow with the file.
struct TraceFile {
    path: PathBuf,
    header: Header,
}

impl TraceFile {
    fn open(path: &Path) -> Result<TraceFile, Failure> {
        let (header, _) = reader::open(path)?;
        Ok(TraceFile {
            path: path.to_path_buf(),
            header,
        })
    }
}

impl Recording for TraceFile {
    fn header(&self) -> &Header {
        &self.header
    }

    fn each_record(&self, each: &mut dyn FnMut(&Record)) -> Result<Ending, Failure> {
        let (_, mut records) = reader::open(&self.path)?;
        for record in records.by_ref() {
            each(&record);
        }
        Ok(records.ending().cloned().unwrap_or(Ending::Unclosed))
    }
}

/// Says on stderr how the file ended, and returns the exit code for it.
fn finish(ending: &Ending, path: &Path) -> i32 {
    if *ending != Ending::Clean {
        eprintln!("vmatrace: {}: {ending}", path.display());
    }
    ending.exit_code()
}

fn write_error(e: io::Error) -> Failure {
    Failure::environment(anyhow!(e).context("writing the output"))
}

/// Replays the events through fresh state, calling `each` for every event
/// with what the live view computed for it, and `other` for the loss,
/// checkpoint and closing records. Returns the final state and how the
/// records ended.
fn play(
    recording: &impl Recording,
    mut each: impl FnMut(&Event, &Applied, &Processes, Option<&Stack>),
    mut other: impl FnMut(&Record),
) -> Result<(Processes, Ending), Failure> {
    let header = recording.header();
    // Stacks are symbolized off the event loop while recording: a Stack
    // record may come after the first event that names it.
    let mut symbols = Symbols::default();
    recording.each_record(&mut |record| {
        if let Record::Stack(record) = record {
            symbols.insert(record.pid, record.id, record.stack.clone());
        }
    })?;
    let mut processes =
        Processes::new(Detector::with_warn_at(header.max_map_count, header.warn_at));
    let ending = recording.each_record(&mut |record| match record {
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
            other(record)
        }
        Record::Mapping(mapping) => {
            processes.name_file_mapping(mapping.pid, mapping.start, mapping.path.as_str().into())
        }
        Record::Event(event) => {
            let applied = processes.apply(event);
            let stack = event
                .stack
                .checked_sub(1)
                .and_then(|id| symbols.cached(event.pid, id));
            each(event, &applied, &processes, stack.as_deref());
        }
        Record::Limit(limit) => {
            // From here on, as the live view did.
            processes.detector = Detector::with_warn_at(limit.max_map_count, limit.warn_at);
            other(record)
        }
        Record::Lost(_) | Record::Checkpoint(_) | Record::End { .. } => other(record),
        Record::Header(_) | Record::Stack(_) => {}
    })?;
    Ok((processes, ending))
}

fn seconds_since_start(header: &Header, ns: u64) -> f64 {
    ns.saturating_sub(header.start_ns) as f64 / 1e9
}
