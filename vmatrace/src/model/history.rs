//! A process's count over the last minutes, second by second: the lowest
//! and highest reading of each second. A count that swings between 200 and
//! 65,000 within seconds looks calm or alarming depending on the instant a
//! status line samples it; the per-second extremes show the swing, the
//! peaks' growth over several horizons and so the time left honestly.

use std::collections::VecDeque;

use serde::Serialize;

/// How far back the history reaches, in seconds.
pub const HISTORY_S: u64 = 600;

/// The horizons growth is measured over, in seconds.
pub const HORIZONS_S: [u64; 3] = [10, 60, 600];

/// Over this many seconds a swing is looked for.
pub const SWING_S: u64 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Second {
    at_s: u64,
    low: i64,
    high: i64,
}

impl Second {
    fn take(&mut self, count: i64) {
        self.low = self.low.min(count);
        self.high = self.high.max(count);
    }
}

/// Per-second extremes of the count, oldest first.
#[derive(Clone, Debug, Default)]
pub struct CountHistory {
    seconds: VecDeque<Second>,
}

/// Net growth of the count's peaks over one horizon.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Growth {
    pub over_s: u64,
    pub per_s: f64,
}

/// A count that moves a large part of the limit up and down.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Swing {
    pub low: i64,
    pub high: i64,
    pub over_s: u64,
    /// Separate climbs to near the high within `over_s`.
    pub peaks: u32,
}

impl Swing {
    /// Seconds between peaks, on average, when there were several.
    pub fn every_s(&self) -> Option<f64> {
        (self.peaks >= 2).then(|| self.over_s as f64 / self.peaks as f64)
    }
}

impl CountHistory {
    /// A reading of the count at `ns` (CLOCK_MONOTONIC).
    pub fn observe(&mut self, count: i64, ns: u64) {
        let at_s = ns / 1_000_000_000;
        let newest = self.seconds.back().map(|s| s.at_s);
        if newest.is_some_and(|newest| newest > at_s) {
            // Readings of threads arrive a little out of order: one older
            // than the newest second goes into its own second, if held.
            if let Some(second) = self.seconds.iter_mut().rev().find(|s| s.at_s == at_s) {
                second.take(count);
            }
        } else if newest == Some(at_s) {
            if let Some(second) = self.seconds.back_mut() {
                second.take(count);
            }
        } else {
            self.seconds.push_back(Second {
                at_s,
                low: count,
                high: count,
            });
        }
        while self
            .seconds
            .front()
            .is_some_and(|s| s.at_s + HISTORY_S < at_s)
        {
            self.seconds.pop_front();
        }
    }

    fn within(&self, now_s: u64, over_s: u64) -> impl Iterator<Item = &Second> {
        self.seconds
            .iter()
            .filter(move |s| s.at_s + over_s > now_s && s.at_s <= now_s)
    }

    /// The highest reading of the last `over_s` seconds.
    pub fn high(&self, now_s: u64, over_s: u64) -> Option<i64> {
        self.within(now_s, over_s).map(|s| s.high).max()
    }

    /// Growth of the peaks over each horizon the history covers: the
    /// highest reading of its last sixth against that of its first sixth.
    pub fn growth(&self, now_s: u64) -> Vec<Growth> {
        let Some(oldest) = self.seconds.front().map(|s| s.at_s) else {
            return Vec::new();
        };
        HORIZONS_S
            .iter()
            .filter(|over_s| oldest + **over_s <= now_s + 1)
            .filter_map(|&over_s| {
                let slice = (over_s / 6).max(1);
                let start = now_s + 1 - over_s;
                let first = self
                    .seconds
                    .iter()
                    .filter(|s| s.at_s >= start && s.at_s < start + slice)
                    .map(|s| s.high)
                    .max()?;
                let last = self.high(now_s, slice)?;
                let span = (over_s - slice) as f64;
                Some(Growth {
                    over_s,
                    per_s: (last - first) as f64 / span,
                })
            })
            .collect()
    }

    /// The swing of the last [`SWING_S`] seconds, if the count moved by at
    /// least a tenth of `limit` (and 100 VMAs) up and down.
    pub fn swing(&self, now_s: u64, limit: u64) -> Option<Swing> {
        let seconds: Vec<&Second> = self.within(now_s, SWING_S).collect();
        let low = seconds.iter().map(|s| s.low).min()?;
        let high = seconds.iter().map(|s| s.high).max()?;
        let range = high - low;
        if range < (limit as i64 / 10).max(100) {
            return None;
        }
        // A peak: a second that reaches the top fifth of the range after
        // one that touched its bottom fifth.
        let (near_low, near_high) = (low + range / 5, high - range / 5);
        let mut peaks = 0;
        let mut was_low = false;
        for second in &seconds {
            if second.low <= near_low {
                was_low = true;
            }
            if second.high >= near_high && was_low {
                peaks += 1;
                was_low = second.low <= near_low;
            }
        }
        (peaks > 0).then_some(Swing {
            low,
            high,
            over_s: SWING_S,
            peaks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_swing_is_seen_with_its_peaks() {
        let mut history = CountHistory::default();
        // Every 5 s: up from 200 to 64,000 and back within the second.
        for t in 0..60u64 {
            history.observe(200, t * S);
            if t % 5 == 0 {
                history.observe(64_000, t * S + S / 2);
                history.observe(300, t * S + 3 * S / 4);
            }
        }
        let swing = history.swing(59, 65_530).expect("a swing");
        assert_eq!((swing.low, swing.high), (200, 64_000));
        assert_eq!(swing.peaks, 12);
        assert_eq!(swing.every_s(), Some(5.0));
        assert_eq!(history.high(59, 60), Some(64_000));
        // A calm count does not swing.
        let mut calm = CountHistory::default();
        for t in 0..60u64 {
            calm.observe(1_000 + (t % 3) as i64, t * S);
        }
        assert_eq!(calm.swing(59, 65_530), None);
    }

    #[test]
    fn growth_is_taken_over_each_horizon_the_history_covers() {
        let mut history = CountHistory::default();
        // +2 VMAs a second for 2 minutes.
        for t in 0..120u64 {
            history.observe(1_000 + 2 * t as i64, t * S);
        }
        let growth = history.growth(119);
        assert_eq!(
            growth.iter().map(|g| g.over_s).collect::<Vec<_>>(),
            [10, 60]
        );
        for g in growth {
            assert!((g.per_s - 2.0).abs() < 0.3, "{g:?}");
        }
        // Readings older than the history's reach are dropped.
        history.observe(5_000, (HISTORY_S + 200) * S);
        assert_eq!(history.high(119, 120), None);
    }
}
