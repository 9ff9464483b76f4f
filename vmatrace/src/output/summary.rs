//! The closing summary of a live run.

use serde_json::{Value, json};
use vmatrace_common::Call;

use super::units::{human_bytes, splits_by_mapping};
use crate::{kernel::probes::LostCounts, model::processes::Processes};

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
                "LOST EVENTS: {} ({}): the trace is incomplete\n",
                lost.total(),
                lost_reasons(&lost)
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
        (
            lost.kernel_skipped_runs,
            "program runs the kernel skipped (its recursion guard; they may include traced calls)",
        ),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, why)| format!("{why}: {n}"))
    .collect::<Vec<_>>()
    .join("; ")
}
