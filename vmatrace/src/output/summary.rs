//! The closing summary of a live run.

use serde_json::{Value, json};
use vmatrace_common::Call;

use super::units::{human_bytes, splits_by_mapping};
use crate::{
    kernel::probes::{LostCounts, ProgramCost},
    model::{
        processes::Processes,
        ranking,
        verdict::{self, Verdict},
    },
};

/// `total / count`, or null with nothing to divide by.
fn per(total: u64, count: u64) -> Value {
    if count == 0 {
        Value::Null
    } else {
        json!(total as f64 / count as f64)
    }
}

/// What tracing cost, from the kernel's own run-time statistics.
fn cost_line(cost: &ProgramCost, seconds: f64, traced_calls: u64, own_cpu_s: f64) -> String {
    let share = cost.run_ns as f64 / 1e9 / seconds.max(1e-9) * 100.0;
    let mut line = format!(
        "tracing cost: the kernel ran vmatrace's programs {} times (every syscall on the host \
         passes its filter) for {:.3} s, {:.2}% of one CPU",
        cost.runs,
        cost.run_ns as f64 / 1e9,
        share
    );
    if cost.runs > 0 {
        line.push_str(&format!(
            ", {:.0} ns a run",
            cost.run_ns as f64 / cost.runs as f64
        ));
    }
    if traced_calls > 0 {
        line.push_str(&format!(
            ", {:.0} ns per traced call",
            cost.run_ns as f64 / traced_calls as f64
        ));
    }
    if cost.measured_share < 0.995 {
        line.push_str(&format!(
            " (measured {:.0}% of the time and scaled: the statistics cost every BPF program \
             on the host while on)",
            cost.measured_share * 100.0
        ));
    }
    line.push_str(&format!(
        "; vmatrace itself used {own_cpu_s:.2} s of CPU. Not counted: the tracepoints' own \
         overhead on every syscall (the syscall slow path, the event record), which \
         `cargo xtask bench` measures as a whole\n"
    ));
    line
}

/// Processes the text summary shows, most at risk first; the rest are
/// summed up in one line (`-a` meets hundreds of short-lived ones).
const SHOWN_PROCESSES: usize = 20;

/// Everything the closing summary reports.
pub struct Summary<'a> {
    pub processes: &'a Processes,
    pub lost: LostCounts,
    pub seconds: f64,
    pub events: u64,
    pub missing_calls: &'a [Call],
    /// CLOCK_MONOTONIC ns when tracing began, for the verdicts' times.
    pub start_ns: u64,
    /// What the kernel programs cost, when the kernel measured it.
    pub cost: Option<ProgramCost>,
    /// CPU seconds vmatrace itself used (user and system).
    pub own_cpu_s: f64,
    pub stacks: StackCounts,
}

/// The stacks the trace got.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct StackCounts {
    /// Stack records paired with their call.
    pub captured: u64,
    /// Calls that shared the stack their site sent before.
    pub shared: u64,
    /// Stacks were sent by site, once a second.
    pub by_site: bool,
}

impl Summary<'_> {
    /// Calls of the traced processes seen.
    fn traced_calls(&self) -> u64 {
        self.processes
            .by_pid
            .values()
            .map(|s| s.calls.values().sum::<u64>())
            .sum()
    }

    fn cost_json(&self) -> Value {
        let Some(cost) = &self.cost else {
            return Value::Null;
        };
        let calls = self.traced_calls();
        json!({
            "runs": cost.runs,
            "run_ns": cost.run_ns,
            "ns_per_run": per(cost.run_ns, cost.runs),
            "ns_per_traced_call": per(cost.run_ns, calls),
            "cpu_share": cost.run_ns as f64 / 1e9 / self.seconds.max(1e-9),
            "measured_share": cost.measured_share,
            "vmatrace_cpu_s": self.own_cpu_s,
        })
    }

    /// The verdicts of the processes at risk, closest to the limit first.
    pub fn verdicts(&self) -> Vec<Verdict> {
        let detector = self.processes.detector;
        let ctx = verdict::Context {
            limit: detector.limit,
            warn_at: detector.warn_at,
            start_ns: self.start_ns,
            top_site: &|_| None,
        };
        verdict::verdicts(self.processes.by_pid.values(), &ctx)
    }

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
            "cost": self.cost_json(),
            "lost_total": self.lost.total(),
            "stacks": self.stacks,
            "untraced_calls": self.missing_calls.iter().map(|c| c.name()).collect::<Vec<_>>(),
            "verdicts": self.verdicts(),
            "processes": processes,
        })
    }

    pub fn to_text(&self) -> String {
        let limit = self.processes.detector.limit;
        let mut text = format!(
            "\nvmatrace summary: {:.1} s, {} events, vm.max_map_count {limit}\n",
            self.seconds, self.events
        );
        text.push_str(&verdicts_text(&self.verdicts(), self.processes));
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
        let (shown, folded) =
            ranking::rank_and_fold(self.processes.by_pid.values(), limit, SHOWN_PROCESSES);
        for s in shown {
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
            if s.enomem > 0 {
                text.push_str(&format!(
                    "{:>8} ENOMEM causes: {}\n",
                    "",
                    enomem_causes(&s.enomem_by_cause)
                ));
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
                // The failures are the process's, not the last call's.
                text.push_str(&format!(
                    "{:>8} calls: {}; {} of them failed\n",
                    "",
                    calls.join(", "),
                    s.failed_calls
                ));
            }
            if !s.changes.is_empty() {
                text.push_str(&format!(
                    "{:>8} changed outside traced calls: {}\n",
                    "",
                    s.changes.describe()
                ));
            }
            if s.inexact > 0 {
                text.push_str(&format!(
                    "{:>8} {} {} counted while other threads' calls ran: their deltas are not \
                     their own for certain (~), none is flagged SPLIT\n",
                    "",
                    s.inexact,
                    if s.inexact == 1 { "call" } else { "calls" }
                ));
            }
        }
        if let Some(folded) = folded {
            text.push_str(&format!("{:>8} {}\n", "", folded.to_text()));
        }
        let unnamed = self
            .processes
            .by_pid
            .values()
            .any(|s| s.splits_by_mapping.contains_key("unknown"));
        if unnamed {
            text.push_str(
                "(a split mapping is \"unknown\" when vmatrace never learnt what it was: \
                 it was made before vmatrace read the process's map (by the kernel at exec, \
                 in a process gone within milliseconds), or by another thread whose call \
                 reached vmatrace just after the one that cut it)\n",
            );
        }
        let stacks = self.stacks;
        if stacks.by_site && stacks.shared > 0 {
            text.push_str(&format!(
                "stacks: {} captured, a call site's once a second; {} more calls shared their \
                 site's (counted against it: --site-stacks)\n",
                stacks.captured, stacks.shared
            ));
        }
        let lost = self.lost;
        if lost.stacks_unavailable > 0 {
            text.push_str(&format!(
                "stacks not captured: {} (their ring buffer was full, or the stack unreadable)\n",
                lost.stacks_unavailable
            ));
        }
        if lost.total() == 0 {
            text.push_str("lost events: 0\n");
        } else {
            text.push_str(&format!(
                "LOST EVENTS: {} ({}): the trace is incomplete\n",
                lost.total(),
                lost_reasons(&lost)
            ));
        }
        if let Some(cost) = &self.cost {
            text.push_str(&cost_line(
                cost,
                self.seconds,
                self.traced_calls(),
                self.own_cpu_s,
            ));
        }
        if lost.kernel_skipped_runs > 0 {
            text.push_str(&format!(
                "kernel skips: {} runs of vmatrace's programs were skipped by the kernel's \
                 recursion guard, host-wide (most are other processes' syscalls); a traced \
                 call with one half skipped is counted as lost above, one with both halves \
                 skipped would be among these\n",
                lost.kernel_skipped_runs
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

/// Why events were lost, and what helps, in words.
fn lost_reasons(lost: &LostCounts) -> String {
    [
        (
            lost.ring_buffer_full,
            "ring buffer full: try a larger --buffer-size",
        ),
        (lost.inflight_table_full, "in-flight table full"),
        (lost.targets_table_full, "target table full"),
        (
            lost.lifecycle_ring_buffer_full,
            "lifecycle events: try a larger --buffer-size",
        ),
        (
            lost.unpaired_calls,
            "calls the kernel skipped the entry or exit of",
        ),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, why)| format!("{why}: {n}"))
    .collect::<Vec<_>>()
    .join("; ")
}

/// The verdict paragraphs a summary or report opens with, or one line
/// saying no process came near its limit.
pub fn verdicts_text(verdicts: &[Verdict], processes: &Processes) -> String {
    if verdicts.is_empty() {
        let highest = processes.by_pid.values().max_by_key(|s| s.peak);
        return match highest {
            Some(s) => format!(
                "verdict: no process came near its limit (the highest peak: {} VMAs, pid {} ({}))\n",
                s.peak, s.pid, s.comm
            ),
            None => "verdict: no process was traced\n".to_string(),
        };
    }
    let mut text = String::new();
    for verdict in verdicts {
        text.push_str(&wrap(&format!("verdict: {}", verdict.to_text()), 78));
        text.push('\n');
    }
    text
}

/// Breaks a paragraph into lines of at most `width` characters.
fn wrap(paragraph: &str, width: usize) -> String {
    let mut text = String::new();
    let mut line = String::new();
    for word in paragraph.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            text.push_str(&line);
            text.push('\n');
            line = "  ".to_string();
        } else if !line.is_empty() && line != "  " {
            line.push(' ');
        }
        line.push_str(word);
    }
    text.push_str(&line);
    text.push('\n');
    text
}

/// "vma limit 3, memory 1": ENOMEMs by cause.
pub fn enomem_causes(by_cause: &std::collections::BTreeMap<&'static str, u64>) -> String {
    by_cause
        .iter()
        .map(|(cause, n)| format!("{} {n}", cause.replace('_', " ")))
        .collect::<Vec<_>>()
        .join(", ")
}
