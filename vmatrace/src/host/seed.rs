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
/// The process's cgroup: its cgroup v2 path, or on a hybrid host whose
/// v2 hierarchy holds everything at its root, the path systemd gave it
/// (its `name=systemd` v1 hierarchy), else the memory controller's.
pub fn cgroup(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroup_of(&text)
}

fn cgroup_of(text: &str) -> Option<String> {
    let path_of = |pick: &dyn Fn(&str) -> bool| {
        text.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            pick(controllers).then(|| path.to_string())
        })
    };
    let unified = path_of(&|c| c.is_empty());
    if let Some(path) = &unified
        && path != "/"
    {
        return unified;
    }
    path_of(&|c| c == "name=systemd")
        .filter(|p| p != "/")
        .or_else(|| path_of(&|c| c.split(',').any(|c| c == "memory")).filter(|p| p != "/"))
        .or(unified)
}

/// Whether `cgroup` is `scope` or lies under it.
pub fn in_cgroup(cgroup: &str, scope: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    scope.is_empty()
        || cgroup == scope
        || cgroup
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with('/'))
}

pub fn comm(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end_matches('\n').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_is_the_v2_path_or_systemds_on_a_hybrid_host() {
        assert_eq!(
            cgroup_of("0::/system.slice/redis.service\n").as_deref(),
            Some("/system.slice/redis.service")
        );
        let hybrid = "9:name=systemd:/system.slice/mariadb.service\n4:memory:/x\n0::/\n";
        assert_eq!(
            cgroup_of(hybrid).as_deref(),
            Some("/system.slice/mariadb.service")
        );
        assert_eq!(
            cgroup_of("4:memory:/docker/abc\n0::/\n").as_deref(),
            Some("/docker/abc")
        );
        assert_eq!(cgroup_of("0::/\n").as_deref(), Some("/"));
        assert!(in_cgroup("/system.slice/redis.service", "/system.slice"));
        assert!(in_cgroup("/system.slice", "/system.slice/"));
        assert!(!in_cgroup("/system.slicer", "/system.slice"));
        assert!(in_cgroup("/anything", "/"));
    }
}
