//! `export`: a recording converted for other tools.

use std::{
    collections::HashMap,
    io::{self, Write},
};

use serde_json::{Value, json};
use vmatrace_common::{Call, EventKind};

use crate::{
    cli::{ExportArgs, ExportFormat},
    error::Failure,
    model::processes::comm_str,
    model::syscalls,
    output::{Format, Output, flame::Folded},
    tracefile::reader::{self, Trace},
};

use super::{Recording, TraceFile, finish, play, write_error};

pub fn export(args: &ExportArgs) -> Result<i32, Failure> {
    let recording = TraceFile::open(&args.file)?;
    let header = recording.header();
    let limit = header.max_map_count;
    let json_output = Output::new(Format::Json, false, true, header.clock_offset_ns as i128);
    let mut out = io::BufWriter::new(io::stdout().lock());
    let ending = match args.format {
        ExportFormat::Jsonl => {
            let mut failed = None;
            let (_, ending) = play(
                &recording,
                |event, applied, _, stack| {
                    let mut value = json_output.json_event(event, applied, limit);
                    if let (Some(stack), Some(object)) = (stack, value.as_object_mut()) {
                        object.insert("stack".into(), json!(stack));
                    }
                    if let Err(e) = serde_json::to_writer(&mut out, &value)
                        .map_err(io::Error::from)
                        .and_then(|_| writeln!(out))
                    {
                        failed.get_or_insert(e);
                    }
                },
                |_| {},
            )?;
            if let Some(e) = failed {
                return Err(write_error(e));
            }
            ending
        }
        ExportFormat::Folded => {
            let mut folded = Folded::new(args.weight);
            let (_, ending) = play(
                &recording,
                |event, applied, _, stack| {
                    if event.kind == EventKind::Syscall as u8 {
                        folded.add(event, applied, stack);
                    }
                },
                |_| {},
            )?;
            folded.write_folded(&mut out).map_err(write_error)?;
            eprintln!(
                "vmatrace: {} {} in {}",
                folded.total(),
                args.weight.unit(),
                folded.coverage()
            );
            ending
        }
        ExportFormat::Chrome => {
            // One JSON document: it is built whole before it is written.
            let trace = reader::read_file(&args.file)?;
            let value = chrome_trace(&trace)?;
            serde_json::to_writer(&mut out, &value).map_err(|e| write_error(e.into()))?;
            writeln!(out).map_err(write_error)?;
            trace.ending
        }
    };
    out.flush().map_err(write_error)?;
    Ok(finish(&ending, &args.file))
}

/// Chrome trace-event JSON: a `vmas` counter track per process (one sample
/// per count change), a span per call, an instant per flagged call.
pub fn chrome_trace(trace: &Trace) -> Result<Value, Failure> {
    let header = &trace.header;
    let micros = |ns: u64| ns.saturating_sub(header.start_ns) as f64 / 1000.0;
    let mut events = Vec::new();
    let mut last_count: HashMap<u32, i64> = HashMap::new();
    let mut named: HashMap<u32, String> = HashMap::new();
    play(
        trace,
        |event, applied, _, _| {
            let comm = comm_str(&event.comm);
            if !named.contains_key(&event.pid) && !comm.is_empty() {
                named.insert(event.pid, comm.clone());
                events.push(json!({"ph": "M", "name": "process_name", "pid": event.pid, "args": {"name": comm}}));
            }
            if let Some(count) = applied.count
                && last_count.insert(event.pid, count) != Some(count)
            {
                events.push(json!({"ph": "C", "name": "vmas", "pid": event.pid, "ts": micros(event.count_ns.max(event.exit_ns)), "args": {"vmas": count}}));
            }
            let Some(call) =
                Call::from_u8(event.call).filter(|_| event.kind == EventKind::Syscall as u8)
            else {
                return;
            };
            events.push(json!({
            "ph": "X", "name": call.name(), "cat": "syscall",
            "pid": event.pid, "tid": event.tid,
            "ts": micros(event.enter_ns),
            "dur": event.exit_ns.saturating_sub(event.enter_ns) as f64 / 1000.0,
            "args": {"args": syscalls::format_args(call, &event.args), "ret": syscalls::format_result(call, event.ret), "vmas": event.vmas_after, "mapping": applied.mapping.as_deref()},
        }));
            for flag in applied.flags.names() {
                events.push(json!({"ph": "i", "s": "p", "name": flag, "cat": "flag", "pid": event.pid, "tid": event.tid, "ts": micros(event.exit_ns)}));
            }
        },
        |_| {},
    )?;
    Ok(json!({
        "displayTimeUnit": "ms",
        "otherData": {"vm.max_map_count": header.max_map_count, "hostname": header.hostname, "kernel": header.kernel_release},
        "traceEvents": events,
    }))
}
