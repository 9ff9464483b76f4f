//! Snapshots of a live process: its command line and its mappings, read
//! from /proc at attach, after exec, or at first sight.

use std::path::Path;

/// A traced process as a snapshot found it (recordings keep it too).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// CLOCK_MONOTONIC ns of the snapshot.
    pub at_ns: u64,
    pub cmdline: String,
    /// /proc/PID/maps at that moment (may be empty if unreadable).
    pub maps: String,
}

/// A snapshot of a live process: its command line and /proc/PID/maps.
pub fn snapshot_process(pid: u32, at_ns: u64) -> ProcessInfo {
    let proc = Path::new("/proc").join(pid.to_string());
    let cmdline = std::fs::read(proc.join("cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    ProcessInfo {
        pid,
        at_ns,
        cmdline,
        maps: std::fs::read_to_string(proc.join("maps")).unwrap_or_default(),
    }
}

/// VMAs in a maps snapshot, counted as the kernel counts them.
pub fn maps_snapshot_count(maps: &str) -> u64 {
    maps.lines().filter(|l| !l.ends_with("[vsyscall]")).count() as u64
}
