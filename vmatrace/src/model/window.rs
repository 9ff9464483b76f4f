//! The allocator's pattern, live: for each process, what happened since
//! the last look: call rates, the size classes mapped and unmapped, the
//! share of unmaps that split, the growth of the count and the time left
//! to the limit at that pace, the mappings its SPLITs cut and the call
//! sites that added VMAs. `output::window` shows it: status lines its
//! one-line form, `--top` the whole of it.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    model::history::{CountHistory, Growth, SWING_S, Swing},
    model::processes::ProcessState,
    model::sites::{RankedSite, Sites},
};

/// How many sites and cut mappings the view lists.
const TOP_N: usize = 5;

/// The growth of the count, and the time to the limit from it, are taken
/// over this long: one interval's +1 or -1 would make the projection flap.
const GROWTH_HORIZON: Duration = Duration::from_secs(10);

/// What a process's counters were at the previous look.
#[derive(Clone, Debug)]
struct Counters {
    at: Instant,
    count: Option<i64>,
    calls: BTreeMap<&'static str, u64>,
    splits: u64,
    mmap_sizes: BTreeMap<u64, u64>,
    munmap_sizes: BTreeMap<u64, u64>,
}

impl Counters {
    fn of(state: &ProcessState, at: Instant) -> Counters {
        Counters {
            at,
            count: state.count,
            calls: state.calls.clone(),
            splits: state.splits,
            mmap_sizes: state.mmap_sizes.clone(),
            munmap_sizes: state.munmap_sizes.clone(),
        }
    }
}

/// One process over one window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Window {
    pub pid: u32,
    pub comm: String,
    pub allocator: Option<String>,
    pub vmas: Option<i64>,
    pub limit: u64,
    pub headroom: Option<i64>,
    pub peak: i64,
    /// The window's length; since tracing began for the first one.
    pub seconds: f64,
    /// Net VMAs per second over the last `growth_over_s` seconds (up to
    /// 10); `None` for the first window, with no earlier count to compare.
    pub growth_per_s: Option<f64>,
    pub growth_over_s: f64,
    /// Seconds until the limit at the worst growth seen (this one, or the
    /// peaks' over 10 s, 1 min or 10 min from the last minute's peak), if
    /// the count grows.
    pub limit_in_s: Option<f64>,
    /// The highest count of the last minute (of tracing, if shorter): what
    /// the headroom really is when the count swings.
    pub recent_peak: Option<i64>,
    /// Growth of the count's peaks over each horizon the history covers.
    pub growth_of_peaks: Vec<Growth>,
    /// The count swung by a large part of the limit in the last minute.
    pub swing: Option<Swing>,
    /// Calls per second, by call, over the window.
    pub rates: BTreeMap<&'static str, f64>,
    pub munmaps: u64,
    pub splits: u64,
    /// SPLITs per munmap (SPLITs of other calls included: capped at 1).
    pub split_share: Option<f64>,
    /// No traced call completed in the window and the count stayed put.
    pub idle: bool,
    /// The window's successful mmap and munmap calls by size class.
    pub mmap_sizes: Vec<SizeClass>,
    pub munmap_sizes: Vec<SizeClass>,
    /// Since tracing began: the mappings SPLITs cut, most cut first.
    pub splits_by_mapping: Vec<(String, u64)>,
    /// Since tracing began: the call sites that added the most VMAs, of
    /// the calls with a stack (SPLIT and ENOMEM ones, or all with --stacks).
    pub top_sites: Vec<RankedSite>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SizeClass {
    /// The bucket's upper bound in bytes (a power of two).
    pub up_to: u64,
    pub calls: u64,
}

/// Every process's counters at the previous look.
pub struct Windows {
    previous: HashMap<u32, Counters>,
    /// Each process's counts over the growth horizon, oldest first.
    counts: HashMap<u32, VecDeque<(Instant, i64)>>,
    /// A process's first window starts when tracing did.
    started: Instant,
    /// `started` on CLOCK_MONOTONIC in seconds, the clock of the counts'
    /// history.
    started_s: f64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows::starting_at(Instant::now())
    }
}

impl Windows {
    pub fn starting_at(started: Instant) -> Windows {
        let since_started = Instant::now().saturating_duration_since(started);
        Windows {
            previous: HashMap::new(),
            counts: HashMap::new(),
            started,
            started_s: crate::kernel::monotonic_ns() as f64 / 1e9 - since_started.as_secs_f64(),
        }
    }

    /// The window of `state` since the previous look, starting the next.
    pub fn next(
        &mut self,
        state: &ProcessState,
        limit: u64,
        sites: Option<&Sites>,
        now: Instant,
    ) -> Window {
        let current = Counters::of(state, now);
        let previous = self.previous.insert(state.pid, current.clone());
        let growth = self.growth(state.pid, state.count, now);
        let before = previous.unwrap_or(Counters {
            at: self.started.min(now),
            count: None,
            calls: BTreeMap::new(),
            splits: 0,
            mmap_sizes: BTreeMap::new(),
            munmap_sizes: BTreeMap::new(),
        });
        let now_s = (self.started_s + now.duration_since(self.started).as_secs_f64()) as u64;
        let mut window = window(state, limit, sites, &before, &current, growth);
        window.add_history(&state.history, now_s);
        window
    }

    /// Forgets the processes that are gone (`live` holds the others).
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) {
        self.previous.retain(|pid, _| live(*pid));
        self.counts.retain(|pid, _| live(*pid));
    }

    /// VMAs per second since the oldest count within the horizon, and over
    /// how many seconds.
    fn growth(&mut self, pid: u32, count: Option<i64>, now: Instant) -> Option<(f64, f64)> {
        let count = count?;
        let counts = self.counts.entry(pid).or_default();
        counts.push_back((now, count));
        // Keep the newest count at or before the horizon's start.
        while counts
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= GROWTH_HORIZON)
        {
            counts.pop_front();
        }
        let (first_at, first_count) = *counts.front()?;
        let seconds = now.duration_since(first_at).as_secs_f64();
        (seconds > 0.0).then(|| ((count - first_count) as f64 / seconds, seconds))
    }
}

fn window(
    state: &ProcessState,
    limit: u64,
    sites: Option<&Sites>,
    before: &Counters,
    now: &Counters,
    growth: Option<(f64, f64)>,
) -> Window {
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let since = |map: &BTreeMap<&'static str, u64>, key: &str| {
        now.calls
            .get(key)
            .copied()
            .unwrap_or(0)
            .saturating_sub(map.get(key).copied().unwrap_or(0))
    };
    let rates = now
        .calls
        .keys()
        .map(|call| (*call, since(&before.calls, call) as f64 / seconds))
        .collect();
    let munmaps = since(&before.calls, "munmap");
    let splits = now.splits.saturating_sub(before.splits);
    let growth_per_s = growth.map(|(per_s, _)| per_s);
    let limit_in_s = match (growth_per_s, now.count) {
        (Some(growth), Some(count)) if growth > 0.0 => {
            Some((limit as f64 - count as f64).max(0.0) / growth)
        }
        _ => None,
    };
    let mut by_mapping: Vec<(String, u64)> = state
        .splits_by_mapping
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    by_mapping.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_mapping.truncate(TOP_N);
    Window {
        pid: state.pid,
        comm: state.comm.clone(),
        allocator: state.allocator.map(|a| a.to_string()),
        vmas: state.count,
        limit,
        headroom: state.headroom(limit),
        peak: state.peak,
        seconds,
        growth_per_s,
        growth_over_s: growth.map_or(0.0, |(_, over)| over),
        limit_in_s,
        recent_peak: None,
        growth_of_peaks: Vec::new(),
        swing: None,
        rates,
        munmaps,
        splits,
        split_share: (munmaps > 0).then(|| (splits as f64 / munmaps as f64).min(1.0)),
        idle: now.calls == before.calls && now.count == before.count,
        mmap_sizes: size_classes(&before.mmap_sizes, &now.mmap_sizes),
        munmap_sizes: size_classes(&before.munmap_sizes, &now.munmap_sizes),
        splits_by_mapping: by_mapping,
        top_sites: sites.map(|s| s.top(TOP_N)).unwrap_or_default(),
    }
}

fn size_classes(before: &BTreeMap<u64, u64>, now: &BTreeMap<u64, u64>) -> Vec<SizeClass> {
    now.iter()
        .map(|(bucket, calls)| SizeClass {
            up_to: *bucket,
            calls: calls.saturating_sub(before.get(bucket).copied().unwrap_or(0)),
        })
        .filter(|class| class.calls > 0)
        .collect()
}

impl Window {
    /// The last minutes' peaks, growth and swing, and the time to the
    /// limit from the worst of them.
    fn add_history(&mut self, history: &CountHistory, now_s: u64) {
        self.recent_peak = history.high(now_s, SWING_S);
        self.growth_of_peaks = history.growth(now_s);
        self.swing = history.swing(now_s, self.limit);
        let worst = self
            .growth_of_peaks
            .iter()
            .map(|g| g.per_s)
            .fold(f64::NEG_INFINITY, f64::max);
        let from_peaks = self
            .recent_peak
            .filter(|_| worst > 0.0)
            .map(|peak| (self.limit as f64 - peak as f64).max(0.0) / worst);
        self.limit_in_s = if self.idle {
            // The last minute's pace would count down to a limit the
            // process is not moving towards ("limit in 1 s" for as long
            // as it stays idle near it).
            None
        } else if self.swing.is_some() {
            // The count of one instant says nothing of a swinging process:
            // only its peaks' growth does.
            from_peaks
        } else {
            match (self.limit_in_s, from_peaks) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
    }

    /// Calls per second of `call` over the window.
    pub fn rate(&self, call: &str) -> f64 {
        self.rates.get(call).copied().unwrap_or(0.0)
    }
}

/// Windows ordered for the view: most VMAs first.
pub fn busiest_first(mut windows: Vec<Window>) -> Vec<Window> {
    windows.sort_by_key(|w| (std::cmp::Reverse(w.vmas.unwrap_or(0)), w.pid));
    windows
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    pub(crate) fn state(count: i64, munmaps: u64, splits: u64) -> ProcessState {
        let mut state = ProcessState::new(42);
        state.comm = "mysqld".into();
        state.allocator = Some(crate::model::allocator::Detected {
            allocator: crate::model::allocator::Allocator::Jemalloc,
            linked_in: false,
        });
        state.count = Some(count);
        state.peak = count;
        state.calls.insert("mmap", munmaps / 2);
        state.calls.insert("munmap", munmaps);
        state.splits = splits;
        state.munmap_sizes.insert(4096, munmaps);
        state.mmap_sizes.insert(2 << 20, munmaps / 2);
        state.splits_by_mapping.insert("anon".into(), splits);
        state
    }

    pub(crate) fn two_windows() -> (Window, Window) {
        let t0 = Instant::now();
        let mut windows = Windows::starting_at(t0);
        let first = windows.next(&state(60_000, 0, 0), 65530, None, t0);
        let second = windows.next(
            &state(61_000, 2000, 1000),
            65530,
            None,
            t0 + Duration::from_secs(2),
        );
        (first, second)
    }

    /// Near the limit and then idle: no countdown to a limit it is not
    /// moving towards (the field trial saw "limit in 1 s" for 40 s).
    #[test]
    fn an_idle_process_has_no_time_to_the_limit() {
        let t0 = Instant::now();
        let mut windows = Windows::starting_at(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        windows.next(&state(60_000, 2000, 1000), 65530, None, at(0));
        let growing = windows.next(&state(65_000, 4000, 2000), 65530, None, at(5));
        assert!(growing.limit_in_s.is_some());
        let idle = windows.next(&state(65_000, 4000, 2000), 65530, None, at(10));
        assert!(idle.idle);
        assert_eq!(idle.limit_in_s, None);
    }

    #[test]
    fn growth_is_taken_over_ten_seconds() {
        let t0 = Instant::now();
        let mut windows = Windows::starting_at(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        windows.next(&state(1000, 0, 0), 65530, None, at(0));
        // +1 then -1 a second: a 1 s window would flap between growing
        // and not; over 10 s the count grew 10.
        for s in 1..=20 {
            let count = 1000 + s as i64 / 2 + (s as i64 % 2);
            // Calls every second: never idle.
            let window = windows.next(&state(count, 2 * s, 0), 65530, None, at(s));
            if s == 20 {
                assert_eq!(window.growth_over_s, 10.0);
                assert_eq!(window.growth_per_s, Some(0.5));
                assert!(window.limit_in_s.is_some());
            }
        }
    }
}
