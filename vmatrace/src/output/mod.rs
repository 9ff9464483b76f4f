//! The outputs: one strace-like line (or JSON object) per event on stdout,
//! status lines and the closing summary on stderr (JSON on stdout with
//! `--json`, so a machine reads one stream).
pub mod anatomy;
pub mod flame;
pub mod fold;
pub mod html;
pub mod plot;
pub mod status;
pub mod summary;
pub mod top;
pub mod units;
pub mod window;

use summary::Summary;

use std::io::{self, BufWriter, IsTerminal, Stdout, Write};

use serde_json::{Value, json};
use vmatrace_common::{Call, Event, EventKind};

use crate::{
    model::changes::{self, Source},
    model::detect::{self, EnomemCause, Flags},
    model::processes::{Applied, comm_str},
    model::syscalls,
    stacks::{
        SharedStack,
        symbols::{self, Stack},
    },
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
    /// A change of the count outside a traced call counts as flagged: it is
    /// what explains a count the calls do not.
    pub fn prints(self, event: &Event, applied: &Applied) -> bool {
        let change = event.kind == EventKind::Change as u8;
        if self.quiet || (change && applied.change.is_none()) {
            return false;
        }
        !self.only_flagged || applied.flags.any() || change
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
        shared: Option<SharedStack>,
    ) -> io::Result<()> {
        if !self.filter.prints(event, applied) {
            return Ok(());
        }
        match self.format {
            Format::Text => {
                let line = self.text_line(event, applied, limit);
                writeln!(self.out, "{line}")?;
                let Some(stack) = stack else {
                    return Ok(());
                };
                if let Some(shared) = shared {
                    writeln!(self.out, "{}", shared_stack_note(event, shared))?;
                }
                write!(self.out, "{}", symbols::format_stack(stack))
            }
            Format::Json => {
                let mut value = self.json_event(event, applied, limit);
                if let (Some(stack), Some(object)) = (stack, value.as_object_mut()) {
                    object.insert("stack".into(), json!(stack));
                    if let Some(shared) = shared {
                        object.insert(
                            "stack_shared".into(),
                            json!({
                                "age_s": shared_stack_age(event, shared),
                                "calls": shared.calls,
                            }),
                        );
                    }
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
        // The process as ps names it, and the thread when it has a name
        // of its own: "redis-server[jemalloc_bg_thd]".
        let comm = match &applied.process_comm {
            Some(process) => format!("{process}[{}]", comm_str(&event.comm)),
            None => comm_str(&event.comm),
        };
        match EventKind::from_u8(event.kind) {
            Some(EventKind::Syscall) => {
                let Some(call) = Call::from_u8(event.call) else {
                    return format!("{when} {who} {comm} unknown call {}", event.call);
                };
                let duration = event.exit_ns.saturating_sub(event.enter_ns) as f64 / 1e9;
                let delta = detect::own_delta(event).unwrap_or(0);
                // Counted at syscall entry and exit while other calls of the
                // process ran: the delta may include theirs.
                let approx = if detect::delta_is_exact(event) {
                    ""
                } else {
                    "~"
                };
                let mut line = format!(
                    "{when} {who} {comm} {}({}) = {} <{duration:.6}> vmas={} ({approx}{delta:+})",
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
            Some(EventKind::Thread) => {
                format!(
                    "{when} {who} {comm} --- thread {} started ---",
                    event.args[0]
                )
            }
            Some(EventKind::Change) => {
                let delta = applied.change.unwrap_or(0);
                let mark = if changes::by_another_process(event) {
                    "[by another process]"
                } else {
                    "[not a traced call]"
                };
                let mut line = match Source::of(event) {
                    Source::Syscall(nr) => format!(
                        "{when} {who} {comm} {} = ? vmas={} ({delta:+})  {}",
                        syscalls::format_undecoded(nr, &event.args),
                        event.vmas_after,
                        self.paint(mark, "1;36"),
                    ),
                    source => format!(
                        "{when} {who} {comm} --- {}: {delta:+} --- vmas={}",
                        source.describe(),
                        event.vmas_after
                    ),
                };
                line.push_str(&self.flag_text(applied.flags, event, limit));
                line
            }
            None => format!("{when} {who} {comm} unknown event kind {}", event.kind),
        }
    }

    fn flag_text(&self, flags: Flags, event: &Event, limit: u64) -> String {
        let mut text = String::new();
        if flags.split {
            text.push_str(&format!("  {}", self.paint("[SPLIT]", "1;33")));
        }
        if flags.enomem {
            let count = event.vmas_before.max(event.vmas_after);
            let why = match flags.enomem_cause {
                Some(EnomemCause::VmaLimit) => format!("[ENOMEM: vma limit {count}/{limit}]"),
                _ => format!("[ENOMEM: memory, not the vma limit: vmas={count}/{limit}]"),
            };
            text.push_str(&format!("  {}", self.paint(&why, "1;31")));
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
            Some(EventKind::Thread) => "thread",
            Some(EventKind::Change) => "change",
            None => "unknown",
        };
        let mut value = json!({
            "type": kind,
            "time_ns": self.wall_nanos(event.exit_ns),
            "pid": event.pid,
            "tid": event.tid,
            "comm": comm_str(&event.comm),
            "process": applied.process_comm.as_deref().map_or_else(|| comm_str(&event.comm), str::to_string),
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
            object.insert("exact".into(), json!(detect::delta_is_exact(event)));
            object.insert("flags".into(), json!(applied.flags.names()));
            if let Some(cause) = applied.flags.enomem_cause {
                object.insert("enomem_cause".into(), json!(cause.name()));
            }
            object.insert("mapping".into(), json!(applied.mapping.as_deref()));
        }
        if event.kind == EventKind::Fork as u8 {
            object.insert("child".into(), json!(event.args[0]));
        }
        if event.kind == EventKind::Change as u8 {
            let source = Source::of(event);
            object.insert("source".into(), json!(source.name()));
            object.insert(
                "by_another_process".into(),
                json!(changes::by_another_process(event)),
            );
            if let Source::Syscall(nr) = source {
                object.insert("syscall".into(), json!(syscalls::syscall_name(nr)));
                object.insert("nr".into(), json!(nr));
                object.insert("args".into(), json!(event.args));
            }
            let delta = applied.change.unwrap_or(0);
            object.insert("vmas_before".into(), json!(event.vmas_after - delta as i32));
            object.insert("vmas_after".into(), json!(event.vmas_after));
            object.insert("delta".into(), json!(delta));
            object.insert("exact".into(), json!(event.locked != 0));
            object.insert("flags".into(), json!(applied.flags.names()));
        }
        value
    }

    /// A line of vmatrace's own among the events: what folding left out.
    pub fn note(&mut self, line: &str) -> io::Result<()> {
        match self.format {
            Format::Text => writeln!(self.out, "{}", self.paint(line, "2")),
            Format::Json => self.json_line(&json!({"type": "folded", "line": line})),
        }
    }

    /// Something the reader can do to get more out of the trace, said once
    /// (how to name a process's JIT frames): on stderr beside the status
    /// lines, or a `hint` object among the events with `--json`.
    pub fn hint(&mut self, pid: u32, line: &str) -> io::Result<()> {
        match self.format {
            Format::Text => {
                eprintln!("vmatrace: {line}");
                Ok(())
            }
            Format::Json => self.json_line(&json!({"type": "hint", "pid": pid, "line": line})),
        }
    }

    /// A JSON object of its own among the events (`--json`).
    pub fn json_line(&mut self, value: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
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

/// Seconds between the call that sent a site's stack and this one.
fn shared_stack_age(event: &Event, shared: SharedStack) -> f64 {
    event.exit_ns.saturating_sub(shared.captured_ns) as f64 / 1e9
}

/// The line above a stack that a call shares with its site.
fn shared_stack_note(event: &Event, shared: SharedStack) -> String {
    let calls = match shared.calls {
        1 => "this call".to_string(),
        n => format!("{n} calls of the site, this one included"),
    };
    format!(
        "    (its site's stack, captured {:.3} s before; it stands for {calls} since: \
         --site-stacks)",
        shared_stack_age(event, shared),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{detect::Detector, processes::Processes};

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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_change_outside_a_traced_call_names_its_syscall() {
        let output = Output::new(Format::Text, false, false, 0);
        let mut processes = Processes::new(Detector::new(65530, 0.9));
        let mut event = Event::zeroed();
        event.kind = EventKind::Change as u8;
        event.pid = 10;
        event.tid = 10;
        event.ret = 3;
        event.args = [5, 0, 0, 0x7ffc, 0, 0];
        event.locked = 1;
        event.vmas_before = 2031;
        event.vmas_after = 1031;
        event.exit_ns = 3_000;
        event.comm[..8].copy_from_slice(b"outside\0");
        let applied = processes.apply(&event);
        let line = output.text_line(&event, &applied, 65530);
        assert!(
            line.ends_with("10/10 outside close(5) = ? vmas=1031 (-1000)  [not a traced call]"),
            "{line}"
        );
        let value = output.json_event(&event, &applied, 65530);
        assert_eq!(value["type"], "change");
        assert_eq!(value["syscall"], "close");
        assert_eq!(value["delta"], -1000);
        assert_eq!(value["exact"], true);
        // Outside any syscall (a trap): said so.
        event.ret = vmatrace_common::change_nr::OUTSIDE;
        event.vmas_before = 1031;
        event.vmas_after = 1032;
        let applied = processes.apply(&event);
        let line = output.text_line(&event, &applied, 65530);
        assert!(
            line.ends_with("--- outside a call: +1 --- vmas=1032"),
            "{line}"
        );
    }

    #[test]
    fn an_inexact_delta_is_marked_on_the_line_and_in_json() {
        let output = Output::new(Format::Text, false, false, 0);
        let mut processes = Processes::new(Detector::new(65530, 0.9));
        let mut event = split_munmap();
        event.counted = vmatrace_common::count_mode::SYSCALL;
        event.locked = 0;
        let applied = processes.apply(&event);
        let line = output.text_line(&event, &applied, 65530);
        // Never a SPLIT the call's own count does not show.
        assert!(line.ends_with("vmas=100 (~+1)"), "{line}");
        let value = output.json_event(&event, &applied, 65530);
        assert_eq!(
            (value["delta"].clone(), value["exact"].clone()),
            (json!(1), json!(false))
        );
        assert_eq!(value["flags"], json!([]));
        assert_eq!(processes.by_pid[&10].inexact, 1);
        // Exact at syscall entry and exit: no mark, and a SPLIT.
        event.locked = 1;
        let applied = processes.apply(&event);
        let line = output.text_line(&event, &applied, 65530);
        assert!(line.ends_with("vmas=100 (+1)  [SPLIT]"), "{line}");
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
}
