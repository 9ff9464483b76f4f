//! Status lines on stderr: each live process's count against the limit and
//! the pattern since the previous line.

use std::io::{self, Write};

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
