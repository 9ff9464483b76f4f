//! `replay`: the events of a recording, printed as the live view did.

use crate::{
    cli::ReplayArgs,
    error::Failure,
    output::{Format, Output},
};

use super::{Recording, TraceFile, finish, play, seconds_since_start, write_error};

pub fn replay(args: &ReplayArgs) -> Result<i32, Failure> {
    let trace = TraceFile::open(&args.file)?;
    let header = trace.header();
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    let mut output = Output::new(
        format,
        args.only_flagged,
        false,
        header.clock_offset_ns as i128,
    );
    let mut failed = None;
    let (_, ending) = play(
        &trace,
        |event, applied, processes, stack| {
            if failed.is_some() {
                return;
            }
            let at = seconds_since_start(header, event.exit_ns);
            let wanted = (args.pids.is_empty() || args.pids.contains(&event.pid))
                && args.since.is_none_or(|since| at >= since)
                && args.until.is_none_or(|until| at <= until);
            // The limit in force then: it may have changed (`Limit`).
            let limit = processes.detector.limit;
            if wanted && let Err(e) = output.event(event, applied, limit, stack, None) {
                failed = Some(e);
            }
        },
        |_| {},
    )?;
    if let Some(e) = failed {
        return Err(write_error(e));
    }
    output.flush().map_err(write_error)?;
    Ok(finish(&ending, &args.file))
}
