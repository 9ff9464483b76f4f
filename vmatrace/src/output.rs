//! The outputs: one strace-like line (or JSON object) per event on stdout,
//! status lines and the closing summary on stderr (JSON on stdout with
//! `--json`, so a machine reads one stream).

use std::io::{self, BufWriter, IsTerminal, Stdout, Write};

use serde_json::{Value, json};
use vmatrace_common::{Call, Event, EventKind};

use crate::{
    detect::{self, Flags},
    probes::LostCounts,
    state::{Applied, ProcessState, Processes, comm_str},
    symbols::{self, Stack},
    syscalls,
    view::Windows,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Which events get a line.
#[derive(Clone, Copy, Debug)]
pub struct EventFilter {
    pub quiet: bool,
    pub only_flagged: bool,
}

impl EventFilter {
    pub fn prints(self, applied: &Applied) -> bool {
        !self.quiet && (!self.only_flagged || applied.flags.any())
    }
}

pub struct Output {
    format: Format,
    pub filter: EventFilter,
    color: bool,
    /// Added to a CLOCK_MONOTONIC timestamp to get Unix-epoch nanoseconds.
    clock_offset: i128,
    out: BufWriter<Stdout>,
}

impl Output {
    pub fn new(format: Format, only_flagged: bool, quiet: bool, clock_offset: i128) -> Output {
        let stdout = io::stdout();
        Output {
            format,
            filter: EventFilter {
                quiet,
                only_flagged,
            },
            color: format == Format::Text && stdout.is_terminal(),
            clock_offset,
            out: BufWriter::with_capacity(64 * 1024, stdout),
        }
    }

    pub fn event(
        &mut self,
        event: &Event,
        applied: &Applied,
        limit: u64,
        stack: Option<&Stack>,
    ) -> io::Result<()> {
        if !self.filter.prints(applied) {
            return Ok(());
        }
        match self.format {
            Format::Text => {
                let line = self.text_line(event, applied, limit);
                writeln!(self.out, "{line}")?;
                match stack {
                    Some(stack) => write!(self.out, "{}", symbols::format_stack(stack)),
                    None => Ok(()),
                }
            }
            Format::Json => {
                let mut value = self.json_event(event, applied, limit);
                if let (Some(stack), Some(object)) = (stack, value.as_object_mut()) {
                    object.insert("stack".into(), json!(stack));
                }
                serde_json::to_writer(&mut self.out, &value)?;
                self.out.write_all(b"\n")
            }
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn wall_nanos(&self, ktime_ns: u64) -> i64 {
        (ktime_ns as i128 + self.clock_offset) as i64
    }

    fn clock(&self, ktime_ns: u64) -> String {
        chrono::DateTime::from_timestamp_nanos(self.wall_nanos(ktime_ns))
            .with_timezone(&chrono::Local)
            .format("%H:%M:%S%.6f")
            .to_string()
    }

    fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn text_line(&self, event: &Event, applied: &Applied, limit: u64) -> String {
        let when = self.clock(event.exit_ns);
        let who = format!("{}/{}", event.pid, event.tid);
        let comm = comm_str(&event.comm);
        match EventKind::from_u8(event.kind) {
            Some(EventKind::Syscall) => {
                let Some(call) = Call::from_u8(event.call) else {
                    return format!("{when} {who} {comm} unknown call {}", event.call);
                };
                let duration = event.exit_ns.saturating_sub(event.enter_ns) as f64 / 1e9;
                let delta = detect::own_delta(event).unwrap_or(0);
                let mut line = format!(
                    "{when} {who} {comm} {}({}) = {} <{duration:.6}> vmas={} ({delta:+})",
                    call.name(),
                    syscalls::format_args(call, &event.args),
                    syscalls::format_result(call, event.ret),
                    event.vmas_after,
                );
                if let Some(mapping) = &applied.mapping {
                    line.push_str(&format!(" map={mapping}"));
                }
                line.push_str(&self.flag_text(applied.flags, event, limit));
                line
            }
            Some(EventKind::Exec) => {
                format!("{when} {who} {comm} --- exec --- vmas={}", event.vmas_after)
            }
            Some(EventKind::Fork) => format!(
                "{when} {who} {comm} --- fork: child {} now traced ---",
                event.args[0]
            ),
            Some(EventKind::Exit) => format!(
                "{when} {who} {comm} +++ exited, last vmas={} +++",
                applied.count.map_or("?".into(), |c| c.to_string())
            ),
            None => format!("{when} {who} {comm} unknown event kind {}", event.kind),
        }
    }

    fn flag_text(&self, flags: Flags, event: &Event, limit: u64) -> String {
        let mut text = String::new();
        if flags.split {
            text.push_str(&format!("  {}", self.paint("[SPLIT]", "1;33")));
        }
        if flags.enomem {
            let at = format!("[ENOMEM at vmas={}/{limit}]", event.vmas_after);
            text.push_str(&format!("  {}", self.paint(&at, "1;31")));
        }
        if flags.near_limit {
            let pct = event.vmas_after.max(0) as f64 * 100.0 / limit.max(1) as f64;
            let near = format!("[NEAR-LIMIT {}/{limit} {pct:.1}%]", event.vmas_after);
            text.push_str(&format!("  {}", self.paint(&near, "1;35")));
        }
        text
    }

    pub fn json_event(&self, event: &Event, applied: &Applied, limit: u64) -> Value {
        let kind = match EventKind::from_u8(event.kind) {
            Some(EventKind::Syscall) => "syscall",
            Some(EventKind::Exec) => "exec",
            Some(EventKind::Fork) => "fork",
            Some(EventKind::Exit) => "exit",
            None => "unknown",
        };
        let mut value = json!({
            "type": kind,
            "time_ns": self.wall_nanos(event.exit_ns),
            "pid": event.pid,
            "tid": event.tid,
            "comm": comm_str(&event.comm),
            "vmas": applied.count,
            "limit": limit,
        });
        let object = value.as_object_mut().expect("an object");
        if let (Some(EventKind::Syscall), Some(call)) =
            (EventKind::from_u8(event.kind), Call::from_u8(event.call))
        {
            object.insert("call".into(), json!(call.name()));
            object.insert("args".into(), syscalls::args_json(call, &event.args));
            object.insert("ret".into(), json!(event.ret));
            object.insert(
                "errno".into(),
                json!(syscalls::errno_of(call, event.ret).map(syscalls::errno_name)),
            );
            object.insert(
                "duration_ns".into(),
                json!(event.exit_ns.saturating_sub(event.enter_ns)),
            );
            object.insert("vmas_before".into(), json!(event.vmas_before));
            object.insert("vmas_after".into(), json!(event.vmas_after));
            object.insert("delta".into(), json!(detect::own_delta(event).unwrap_or(0)));
            object.insert("exact".into(), json!(event.locked != 0));
            object.insert("flags".into(), json!(applied.flags.names()));
            object.insert("mapping".into(), json!(applied.mapping.as_deref()));
        }
        if event.kind == EventKind::Fork as u8 {
            object.insert("child".into(), json!(event.args[0]));
        }
        value
    }

    pub fn summary(&mut self, summary: &Summary) -> io::Result<()> {
        match self.format {
            Format::Json => {
                serde_json::to_writer(&mut self.out, &summary.to_json())?;
                self.out.write_all(b"\n")?;
                self.out.flush()
            }
            Format::Text => {
                self.out.flush()?;
                eprint!("{}", summary.to_text());
                Ok(())
            }
        }
    }
}

pub fn status_line(state: &ProcessState, limit: u64, lost: u64) -> String {
    let count = state.count.map_or("?".to_string(), |c| c.to_string());
    let pct = state.count.map_or(String::new(), |c| {
        format!(" ({:.1}%)", c as f64 * 100.0 / limit as f64)
    });
    let headroom = state
        .headroom(limit)
        .map_or("?".to_string(), |h| h.to_string());
    let allocator = state
        .allocator
        .map_or("allocator unknown".to_string(), |a| a.to_string());
    format!(
        "pid {} ({}, {allocator}): vmas {count}/{limit}{pct} headroom {headroom} peak {} | splits {} enomem {} | lost {lost}",
        state.pid, state.comm, state.peak, state.splits, state.enomem
    )
}

/// The status lines on stderr, each with the pattern since the previous.
#[derive(Default)]
pub struct StatusLines {
    windows: Windows,
}

impl StatusLines {
    /// One status line per live process.
    pub fn print(&mut self, processes: &Processes, lost: &LostCounts) {
        let limit = processes.detector.limit;
        let now = std::time::Instant::now();
        let mut err = io::stderr().lock();
        self.windows
            .retain(|pid| processes.by_pid.get(&pid).is_some_and(|s| !s.exited));
        for state in processes.by_pid.values().filter(|s| !s.exited) {
            let window = self.windows.next(state, limit, None, now);
            let _ = writeln!(
                err,
                "[vmatrace] {}{}",
                status_line(state, limit, lost.total()),
                window.trend()
            );
        }
    }
}

/// Everything the closing summary reports.
pub struct Summary<'a> {
    pub processes: &'a Processes,
    pub lost: LostCounts,
    pub seconds: f64,
    pub events: u64,
    pub missing_calls: &'a [Call],
}

impl Summary<'_> {
    pub fn to_json(&self) -> Value {
        let limit = self.processes.detector.limit;
        let processes: Vec<Value> = self
            .processes
            .by_pid
            .values()
            .map(|state| {
                let mut value = serde_json::to_value(state).unwrap_or(Value::Null);
                if let Some(object) = value.as_object_mut() {
                    object.insert("headroom".into(), json!(state.headroom(limit)));
                }
                value
            })
            .collect();
        json!({
            "type": "summary",
            "seconds": self.seconds,
            "limit": limit,
            "warn_at": self.processes.detector.warn_at,
            "events": self.events,
            "lost": self.lost,
            "lost_total": self.lost.total(),
            "untraced_calls": self.missing_calls.iter().map(|c| c.name()).collect::<Vec<_>>(),
            "processes": processes,
        })
    }

    pub fn to_text(&self) -> String {
        let limit = self.processes.detector.limit;
        let mut text = format!(
            "\nvmatrace summary: {:.1} s, {} events, vm.max_map_count {limit}\n",
            self.seconds, self.events
        );
        text.push_str(&format!(
            "{:>8} {:<16} {:>7} {:>7} {:>8} {:>7} {:>6} {:>5} {:>10} {:>10}\n",
            "PID",
            "COMM",
            "VMAS",
            "PEAK",
            "HEADROOM",
            "SPLITS",
            "ENOMEM",
            "NEAR",
            "MAPPED",
            "UNMAPPED"
        ));
        for s in self.processes.by_pid.values() {
            let opt = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
            text.push_str(&format!(
                "{:>8} {:<16} {:>7} {:>7} {:>8} {:>7} {:>6} {:>5} {:>10} {:>10}{}\n",
                s.pid,
                s.comm,
                opt(s.count),
                s.peak,
                opt(s.headroom(limit)),
                s.splits,
                s.enomem,
                s.near_limit,
                human_bytes(s.bytes_mapped),
                human_bytes(s.bytes_unmapped),
                if s.exited { "  (exited)" } else { "" },
            ));
            if let Some(allocator) = &s.allocator {
                text.push_str(&format!("{:>8} allocator: {allocator}\n", ""));
            }
            if !s.splits_by_mapping.is_empty() {
                text.push_str(&format!(
                    "{:>8} splits by mapping: {}\n",
                    "",
                    splits_by_mapping(&s.splits_by_mapping)
                ));
            }
            if !s.calls.is_empty() {
                let calls: Vec<String> = s.calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
                text.push_str(&format!(
                    "{:>8} calls: {} ({} failed)\n",
                    "",
                    calls.join(", "),
                    s.failed_calls
                ));
            }
        }
        let lost = self.lost;
        if lost.stacks_unavailable > 0 {
            text.push_str(&format!(
                "stacks not captured: {} (the stack map was full or a stack unreadable)\n",
                lost.stacks_unavailable
            ));
        }
        if lost.total() == 0 {
            text.push_str("lost events: 0\n");
        } else {
            text.push_str(&format!(
                "LOST EVENTS: {} (ring buffer full {}, in-flight table full {}, target table full {}, lifecycle {}): \
                 the trace is incomplete; try a larger --buffer-size\n",
                lost.total(),
                lost.ring_buffer_full,
                lost.inflight_table_full,
                lost.targets_table_full,
                lost.lifecycle_ring_buffer_full
            ));
        }
        if !self.missing_calls.is_empty() {
            let names: Vec<&str> = self.missing_calls.iter().map(|c| c.name()).collect();
            text.push_str(&format!(
                "not traced (no tracepoint on this kernel): {}\n",
                names.join(", ")
            ));
        }
        text
    }
}

/// "anon 9155, [heap] 3": the mappings SPLITs cut, most cut first.
pub fn splits_by_mapping(splits: &std::collections::BTreeMap<String, u64>) -> String {
    let mut ranked: Vec<(&String, &u64)> = splits.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    ranked
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Detector;

    fn split_munmap() -> Event {
        let mut event = Event::zeroed();
        event.kind = EventKind::Syscall as u8;
        event.call = Call::Munmap as u8;
        event.pid = 10;
        event.tid = 11;
        event.args = [0x7f00_0000_1000, 4096, 0, 0, 0, 0];
        event.vmas_before = 99;
        event.vmas_after = 100;
        event.locked = 1;
        event.enter_ns = 1_000;
        event.exit_ns = 3_000;
        event.comm[..6].copy_from_slice(b"mysqld");
        event
    }

    #[test]
    fn text_line_reads_like_strace_with_flags() {
        let output = Output::new(Format::Text, false, false, 0);
        let mut processes = Processes::new(Detector::new(65530, 0.9));
        let event = split_munmap();
        let applied = processes.apply(&event);
        let line = output.text_line(&event, &applied, 65530);
        assert!(
            line.ends_with(
                "10/11 mysqld munmap(0x7f0000001000, 4096) = 0 <0.000002> vmas=100 (+1)  [SPLIT]"
            ),
            "{line}"
        );
    }

    #[test]
    fn json_event_carries_flags_and_counts() {
        let output = Output::new(Format::Json, false, false, 0);
        let mut processes = Processes::new(Detector::new(65530, 0.9));
        let event = split_munmap();
        let applied = processes.apply(&event);
        let value = output.json_event(&event, &applied, 65530);
        assert_eq!(value["call"], "munmap");
        assert_eq!(value["flags"], json!(["SPLIT"]));
        assert_eq!(value["delta"], 1);
        assert_eq!(value["exact"], true);
        assert_eq!(value["vmas"], 100);
        assert_eq!(value["args"]["length"], 4096);
        assert_eq!(value["errno"], Value::Null);
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(129 * 1024), "129.0KiB");
        assert_eq!(human_bytes(3 << 30), "3.0GiB");
    }
}
