//! Status lines: each live process's count against the limit and the
//! pattern since the previous line, on stderr, or as JSON objects among
//! the events with `--json`.

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::{
    kernel::probes::LostCounts,
    model::{
        processes::{ProcessState, Processes},
        window::Windows,
    },
};

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

/// One process's status: the line people read, the object scripts read.
pub struct Status {
    pub text: String,
    pub json: Value,
}

/// The status lines, each with the pattern since the previous.
#[derive(Default)]
pub struct StatusLines {
    windows: Windows,
}

impl StatusLines {
    /// One status per live process, stamped with the wall-clock time.
    pub fn next(&mut self, processes: &Processes, lost: &LostCounts) -> Vec<Status> {
        let limit = processes.detector.limit;
        let now = std::time::Instant::now();
        let wall = chrono::Local::now();
        let clock = wall.format("%H:%M:%S");
        self.windows
            .retain(|pid| processes.by_pid.get(&pid).is_some_and(|s| !s.exited));
        processes
            .by_pid
            .values()
            .filter(|s| !s.exited)
            .map(|state| {
                let window = self.windows.next(state, limit, None, now);
                let text = format!(
                    "[vmatrace] {clock} {}{}",
                    status_line(state, limit, lost.total()),
                    window.trend()
                );
                let json = json!({
                    "type": "status",
                    "time": wall.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
                    "pid": state.pid,
                    "comm": state.comm,
                    "allocator": state.allocator.map(|a| a.to_string()),
                    "vmas": state.count,
                    "limit": limit,
                    "headroom": state.headroom(limit),
                    "peak": state.peak,
                    "splits": state.splits,
                    "enomem": state.enomem,
                    "lost_total": lost.total(),
                    "window": window,
                });
                Status { text, json }
            })
            .collect()
    }

    /// One status line per live process, on stderr.
    pub fn print(&mut self, processes: &Processes, lost: &LostCounts) {
        let mut err = io::stderr().lock();
        for status in self.next(processes, lost) {
            let _ = writeln!(err, "{}", status.text);
        }
    }
}
