//! Counts of processes the kernel counters have not seen yet: their
//! `/proc/PID/maps` lines, less the `[vsyscall]` gate area (which /proc
//! lists and `mm->map_count` does not count). Reading a process's maps
//! takes its mmap lock (read side) for the walk; it is done once per
//! process, at start or when a process is first seen without a traced call
//! (a BPF task iterator would avoid it, but this kernel refuses tracing
//! programs such as iterators and fentry).

use std::{
    fs::File,
    io::Read,
    time::{Duration, Instant},
};

/// The VMA count of `pid` from /proc, or `None` if it cannot be read
/// (gone, a kernel thread with no address space, or not permitted).
/// `buf` is reused between calls.
pub fn maps_count(pid: u32, buf: &mut Vec<u8>) -> Option<i64> {
    let mut file = File::open(format!("/proc/{pid}/maps")).ok()?;
    buf.clear();
    file.read_to_end(buf).ok()?;
    if buf.is_empty() {
        // Kernel threads have no mappings and no mm: nothing to count.
        return None;
    }
    let lines = buf.iter().filter(|b| **b == b'\n').count() as i64;
    let vsyscall = buf
        .rsplit(|b| *b == b'\n')
        .take(3)
        .any(|line| line.ends_with(b"[vsyscall]"));
    Some(lines - i64::from(vsyscall))
}

/// Every process id in /proc.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// What reading every process's count at start cost.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct SeedCost {
    pub processes: usize,
    pub vmas: i64,
    pub unreadable: usize,
    #[serde(skip)]
    pub elapsed: Duration,
}

/// The counts of `pids`, read from /proc, and what it cost.
pub fn read_counts(pids: &[u32]) -> (Vec<(u32, i64)>, SeedCost) {
    let started = Instant::now();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut counts = Vec::with_capacity(pids.len());
    let mut cost = SeedCost::default();
    for &pid in pids {
        match maps_count(pid, &mut buf) {
            Some(count) => {
                cost.processes += 1;
                cost.vmas += count;
                counts.push((pid, count));
            }
            None => cost.unreadable += 1,
        }
    }
    cost.elapsed = started.elapsed();
    // The buffer may have grown to a big process's maps: give it back.
    drop(buf);
    (counts, cost)
}

/// The process's command name, as `ps` shows it.
pub fn comm(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end_matches('\n').to_string())
}
