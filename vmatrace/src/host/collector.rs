//! The kernel's per-process counters, and what userspace adds to them: the
//! counts of processes not seen calling yet (from /proc), the command
//! names, and the history of each count for growth and time to the limit.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use serde::Serialize;
use vmatrace_common::{
    Call, EVENT_SIZE, Event, EventKind, capture_stacks,
    proc_stats::{CALLS, ProcStats},
};

use super::seed;
use crate::{
    error::Failure,
    kernel::{
        self, monotonic_ns,
        probes::{CountModeChoice, LostCounts, ProbeConfig, Probes},
    },
    model::history::CountHistory,
};

/// Which processes to watch.
#[derive(Clone, Debug)]
pub enum Scope {
    All,
    Pids(Vec<u32>),
    /// The processes in these cgroups or below them (paths as
    /// `/proc/PID/cgroup` shows them, e.g. `/system.slice/redis.service`).
    Cgroups(Vec<String>),
}

/// How the collector is set up.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    pub scope: Scope,
    /// NEAR-LIMIT threshold, a fraction of the limit.
    pub warn_fraction: f64,
    pub btf_path: std::path::PathBuf,
    pub count_mode: CountModeChoice,
}

/// One process as the host views show it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    pub pid: u32,
    pub comm: String,
    /// Its cgroup (see `seed::cgroup`), when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    pub vmas: i64,
    pub limit: u64,
    /// `vmas / limit`.
    pub used: f64,
    pub peak: i64,
    /// Traced calls completed since the counters started.
    pub calls: u64,
    pub splits: u64,
    pub near_limit: u64,
    /// Changes of the count outside a traced call (a syscall vmatrace does
    /// not decode, the kernel's own mappings, another process).
    pub changes: u64,
    /// ENOMEMs by (call, cause), nonzero only.
    pub enomem: Vec<Enomem>,
    /// Net VMAs per second (the worst growth of the peaks over 10 s, 1 min
    /// and 10 min that the history covers), if it grows.
    pub growth_per_s: Option<f64>,
    /// Seconds until the limit at that growth.
    pub seconds_to_limit: Option<f64>,
    pub splits_per_s: f64,
    /// Whether the count is the kernel's (read after the process's latest
    /// traced call) rather than from /proc at start.
    pub from_kernel: bool,
    /// Recent counts, oldest first, one a sample (for sparklines).
    #[serde(skip)]
    pub recent: Vec<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Enomem {
    pub call: &'static str,
    pub cause: &'static str,
    pub count: u64,
}

impl Row {
    pub fn enomem_total(&self) -> u64 {
        self.enomem.iter().map(|e| e.count).sum()
    }

    pub fn enomem_vma_limit(&self) -> u64 {
        self.enomem
            .iter()
            .filter(|e| e.cause == "vma_limit")
            .map(|e| e.count)
            .sum()
    }

    /// How close to trouble: an ENOMEM at the VMA limit first, then the
    /// share of the limit the count (or its peak) reaches, raised by a
    /// time to the limit under an hour.
    pub fn risk(&self) -> f64 {
        let limit = self.limit.max(1) as f64;
        let used = self.vmas.max(self.peak) as f64 / limit;
        let soon = self
            .seconds_to_limit
            .map(|s| 1.0 / (1.0 + s / 600.0))
            .unwrap_or(0.0);
        let failed = if self.enomem_vma_limit() > 0 {
            10.0
        } else {
            0.0
        };
        failed + used + soon
    }
}

/// What userspace keeps of a process between samples.
#[derive(Default)]
struct Tracked {
    comm: Option<String>,
    /// From /proc: at start, or when first seen, or from its exec event.
    seeded: Option<i64>,
    history: Option<CountHistory>,
    /// The latest `count_ns` of the kernel's counters observed.
    count_ns: u64,
    /// (when, splits) of the last samples, for the splits rate.
    splits: VecDeque<(Instant, u64)>,
    /// Counts of the last samples, for sparklines.
    recent: VecDeque<u64>,
    /// When the process last called execve: kernel counters older than
    /// this are of its old address space.
    exec_ns: u64,
}

/// Samples of counts kept for sparklines.
const RECENT: usize = 60;
/// The splits rate is taken over this long.
const RATE_SPAN: Duration = Duration::from_secs(10);

pub struct Collector {
    probes: Probes,
    stats: BpfHashMap<MapData, u32, ProcStats>,
    ring: RingBuf<MapData>,
    pub limit: u64,
    pub warn_at: u64,
    scope: Scope,
    tracked: HashMap<u32, Tracked>,
    /// The NEAR-LIMIT threshold as a fraction of the limit.
    warn_fraction: f64,
    /// Each process's cgroup, read once.
    cgroups: HashMap<u32, Option<String>>,
    pub seed_cost: seed::SeedCost,
    buf: Vec<u8>,
    self_pid: u32,
}

impl Collector {
    /// Loads the programs with events off, and reads the count of every
    /// process in scope from /proc.
    // `..ProbeConfig::default()`: needless today, it keeps options the
    // loader gains later (off by default) from breaking this.
    #[allow(clippy::needless_update)]
    pub fn start(config: &CollectorConfig) -> Result<Collector, Failure> {
        let limit = kernel::max_map_count().map_err(Failure::environment)?;
        let warn_at = (limit as f64 * config.warn_fraction).ceil() as u64;
        let mut probes = Probes::load(&ProbeConfig {
            // A cgroup's processes are picked from all of them in
            // userspace: they come and go, and the counters cost the same.
            trace_all: matches!(config.scope, Scope::All | Scope::Cgroups(_)),
            follow_forks: false,
            // Only exec and exit come through it.
            ring_buffer_bytes: 1 << 20,
            btf_path: config.btf_path.clone(),
            capture_stacks: capture_stacks::NONE,
            warn_at,
            debug_probes: false,
            count_mode: config.count_mode,
            send_events: false,
            max_map_count: limit,
            targets: match &config.scope {
                Scope::Pids(pids) => pids.clone(),
                _ => Vec::new(),
            },
            // Whatever else the loader learns to do stays off here.
            ..ProbeConfig::default()
        })?;
        let stats = probes.take_proc_stats().map_err(Failure::environment)?;
        let ring = probes.take_events().map_err(Failure::environment)?;
        let mut collector = Collector {
            probes,
            stats,
            ring,
            limit,
            warn_at,
            scope: config.scope.clone(),
            tracked: HashMap::new(),
            warn_fraction: config.warn_fraction,
            cgroups: HashMap::new(),
            seed_cost: seed::SeedCost::default(),
            buf: Vec::new(),
            self_pid: std::process::id(),
        };
        // After attaching: a call made from now on is in the counters, so
        // a count read now is never older than the process's last call.
        let pids = collector.pids_in_scope();
        let (counts, cost) = seed::read_counts(&pids);
        collector.seed_cost = cost;
        for (pid, count) in counts {
            collector.tracked.entry(pid).or_default().seeded = Some(count);
        }
        release_freed_memory();
        Ok(collector)
    }

    fn pids_in_scope(&mut self) -> Vec<u32> {
        match &self.scope {
            Scope::All => seed::all_pids()
                .into_iter()
                .filter(|pid| *pid != self.self_pid)
                .collect(),
            Scope::Cgroups(scopes) => {
                let scopes = scopes.clone();
                let self_pid = self.self_pid;
                let mut pids = seed::all_pids();
                pids.retain(|pid| {
                    *pid != self_pid
                        && self
                            .cgroup_of(*pid)
                            .is_some_and(|cg| scopes.iter().any(|s| seed::in_cgroup(&cg, s)))
                });
                pids
            }
            Scope::Pids(pids) => pids
                .iter()
                .copied()
                .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
                .collect(),
        }
    }

    /// Takes a changed `vm.max_map_count` (an operator may change it while
    /// vmatrace runs) into the rows and the programs' ENOMEM causes.
    fn follow_the_limit(&mut self) {
        let Ok(limit) = kernel::max_map_count() else {
            return;
        };
        if limit != self.limit {
            self.warn_at = (limit as f64 * self.warn_fraction).ceil() as u64;
            self.limit = limit;
            self.probes.set_limits(limit, self.warn_at);
        }
    }

    /// The process's cgroup, read once.
    fn cgroup_of(&mut self, pid: u32) -> Option<String> {
        self.cgroups
            .entry(pid)
            .or_insert_with(|| seed::cgroup(pid))
            .clone()
    }

    pub fn lost(&self) -> LostCounts {
        self.probes.lost().unwrap_or_default()
    }

    /// Exec and exit events: a process's state starts afresh or ends.
    fn drain_lifecycle(&mut self) {
        while let Some(item) = self.ring.next() {
            if item.len() < EVENT_SIZE {
                continue;
            }
            // SAFETY: the kernel wrote an Event; read_unaligned copes with
            // the buffer's alignment.
            let event: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            match EventKind::from_u8(event.kind) {
                Some(EventKind::Exit) => {
                    self.tracked.remove(&event.pid);
                    let _ = self.stats.remove(&event.pid);
                }
                Some(EventKind::Exec) => {
                    // The old address space's counters are void (the
                    // kernel starts new ones at the new one's first call,
                    // which may have come already); the new one's first
                    // count came with the event.
                    let tracked = self.tracked.entry(event.pid).or_default();
                    *tracked = Tracked::default();
                    tracked.exec_ns = event.exit_ns;
                    if event.vmas_after >= 0 {
                        tracked.seeded = Some(i64::from(event.vmas_after));
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads the kernel's counters and returns every known process.
    pub fn sample(&mut self) -> Vec<Row> {
        self.drain_lifecycle();
        self.follow_the_limit();
        let now = Instant::now();
        let now_ns = monotonic_ns();
        let now_s = now_ns / 1_000_000_000;
        let mut kernel: HashMap<u32, ProcStats> = HashMap::new();
        for (pid, stats) in self.stats.iter().flatten() {
            kernel.insert(pid, stats);
        }
        let live: HashSet<u32> = self.pids_in_scope().into_iter().collect();
        // Gone without an exit event (one the ring buffer had no room for).
        self.tracked.retain(|pid, _| live.contains(pid));
        self.cgroups.retain(|pid, _| live.contains(pid));
        for pid in kernel.keys() {
            if !live.contains(pid) {
                let _ = self.stats.remove(pid);
            }
        }
        let mut rows = Vec::with_capacity(live.len());
        let cgroups = &mut self.cgroups;
        for pid in live {
            let tracked = self.tracked.entry(pid).or_default();
            let stats = kernel
                .get(&pid)
                .filter(|s| s.count >= 0 && s.since_ns >= tracked.exec_ns);
            if stats.is_none() && tracked.seeded.is_none() {
                // First seen, with no call since: read its count once.
                tracked.seeded = seed::maps_count(pid, &mut self.buf);
                if tracked.seeded.is_none() {
                    // A kernel thread (or unreadable): nothing to show.
                    continue;
                }
            }
            if tracked.comm.is_none() {
                tracked.comm = seed::comm(pid);
            }
            let (vmas, peak, from_kernel) = match (stats, tracked.seeded) {
                (Some(s), seeded) => (
                    i64::from(s.count),
                    i64::from(s.peak).max(seeded.unwrap_or(0)),
                    true,
                ),
                (None, Some(seeded)) => (seeded, seeded, false),
                (None, None) => continue,
            };
            // A history only for counts that move: an idle process costs
            // no memory beyond its entry.
            let moved = stats.is_some_and(|s| s.count_ns != tracked.count_ns);
            if let Some(s) = stats
                && moved
            {
                tracked.count_ns = s.count_ns;
                tracked.history.get_or_insert_with(CountHistory::default);
            }
            let mut growth = None;
            if let Some(history) = tracked.history.as_mut() {
                history.observe(vmas, now_ns);
                growth = history
                    .growth(now_s)
                    .iter()
                    .map(|g| g.per_s)
                    .fold(None, |worst: Option<f64>, g| {
                        Some(worst.map_or(g, |w| w.max(g)))
                    })
                    .filter(|g| *g > 0.0);
            }
            let splits = stats.map_or(0, |s| s.splits);
            tracked.splits.push_back((now, splits));
            while tracked
                .splits
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > RATE_SPAN)
            {
                tracked.splits.pop_front();
            }
            let splits_per_s = match (tracked.splits.front(), tracked.splits.back()) {
                (Some((t0, s0)), Some((t1, s1))) if t1 > t0 => {
                    s1.saturating_sub(*s0) as f64 / t1.duration_since(*t0).as_secs_f64()
                }
                _ => 0.0,
            };
            tracked.recent.push_back(vmas.max(0) as u64);
            if tracked.recent.len() > RECENT {
                tracked.recent.pop_front();
            }
            let headroom = self.limit as f64 - vmas.max(peak) as f64;
            // Idle since the last sample: no countdown to a limit it is not
            // moving towards.
            let seconds_to_limit = growth.filter(|_| moved).map(|g| (headroom.max(0.0)) / g);
            let mut enomem = Vec::new();
            if let Some(s) = stats {
                for call in 0..CALLS {
                    let name = Call::ALL[call].name();
                    if s.enomem_vma_limit[call] > 0 {
                        enomem.push(Enomem {
                            call: name,
                            cause: "vma_limit",
                            count: s.enomem_vma_limit[call],
                        });
                    }
                    if s.enomem_memory[call] > 0 {
                        enomem.push(Enomem {
                            call: name,
                            cause: "memory",
                            count: s.enomem_memory[call],
                        });
                    }
                }
            }
            let comm = tracked.comm.clone().unwrap_or_default();
            let cgroup = cgroups
                .entry(pid)
                .or_insert_with(|| seed::cgroup(pid))
                .clone();
            rows.push(Row {
                pid,
                comm,
                cgroup,
                vmas,
                limit: self.limit,
                used: vmas as f64 / self.limit.max(1) as f64,
                peak,
                calls: stats.map_or(0, |s| s.calls),
                splits,
                near_limit: stats.map_or(0, |s| s.near_limit),
                changes: stats.map_or(0, |s| s.changes),
                enomem,
                growth_per_s: growth,
                seconds_to_limit,
                splits_per_s,
                from_kernel,
                recent: tracked.recent.iter().copied().collect(),
            });
        }
        rows
    }
}

/// Gives the memory freed after loading (the kernel's BTF, parsed while
/// loading: tens of megabytes) back to the system; an agent that runs for
/// months should not keep it.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
