//! What vmatrace's programs cost the kernel, from its run-time statistics
//! of BPF programs, measured in samples: while the statistics are on, the
//! kernel reads the clock twice around every run of every BPF program on
//! the host (vmatrace's and anyone else's), which on a split storm cost
//! more than anything vmatrace's own programs do (measured: x1.41 against
//! x1.31 without, on the bench's split-churn). So they are on for the first
//! first second and then for `WINDOW_NS` of every `PERIOD_NS`, and the cost
//! of the whole trace is scaled from the time measured. The first window
//! lasts `FIRST_WINDOW_NS`, so a short trace is measured whole.

use super::prog_info::RunTimeStats;

/// How long a measuring window stays open.
const WINDOW_NS: u64 = 100_000_000;
/// How long the first window stays open: a trace of a short command is
/// measured whole (its calls come in a burst, which a tenth of the time
/// could miss).
const FIRST_WINDOW_NS: u64 = 1_000_000_000;
/// A window opens this often: the statistics are on a tenth of the time.
const PERIOD_NS: u64 = 1_000_000_000;

/// Time the kernel spent in vmatrace's programs, host-wide: they run for
/// every syscall of every process (and filter in the kernel), so this is
/// what tracing cost the machine.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProgramCost {
    pub run_ns: u64,
    pub runs: u64,
    /// The share of the trace's time the statistics were on (1: all of
    /// it); `run_ns` and `runs` are scaled up from that time.
    pub measured_share: f64,
}

/// The programs' run time and runs so far, as the kernel counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub run_ns: u64,
    pub runs: u64,
}

impl Totals {
    fn since(self, before: Totals) -> Totals {
        Totals {
            run_ns: self.run_ns.saturating_sub(before.run_ns),
            runs: self.runs.saturating_sub(before.runs),
        }
    }

    fn add(&mut self, more: Totals) {
        self.run_ns += more.run_ns;
        self.runs += more.runs;
    }
}

/// The statistics switched on and off in windows, and what they measured.
pub struct CostSampler {
    /// Held while a window is open.
    stats: Option<RunTimeStats>,
    /// When the open window began, and the totals then.
    opened: Option<(u64, Totals)>,
    /// When the next window opens.
    next_ns: u64,
    /// Summed over the closed windows.
    measured: Totals,
    measured_ns: u64,
    started_ns: u64,
}

impl CostSampler {
    /// Opens the first window now: None where the kernel has no run-time
    /// statistics (before Linux 5.8).
    pub fn start(now_ns: u64, totals: Totals) -> Option<CostSampler> {
        let stats = RunTimeStats::enable()?;
        Some(CostSampler {
            stats: Some(stats),
            opened: Some((now_ns, totals)),
            next_ns: now_ns + FIRST_WINDOW_NS + PERIOD_NS - WINDOW_NS,
            measured: Totals::default(),
            measured_ns: 0,
            started_ns: now_ns,
        })
    }

    /// Closes the open window once it has lasted `WINDOW_NS`, and opens the
    /// next when its time comes. `totals` reads the kernel's counters.
    pub fn tick(&mut self, now_ns: u64, totals: impl Fn() -> Totals) {
        match self.opened {
            Some((at, before)) if now_ns.saturating_sub(at) >= self.window_ns(at) => {
                self.measured.add(totals().since(before));
                self.measured_ns += now_ns - at;
                self.stats = None;
                self.opened = None;
            }
            None if now_ns >= self.next_ns => {
                if let Some(stats) = RunTimeStats::enable() {
                    self.stats = Some(stats);
                    self.opened = Some((now_ns, totals()));
                }
                self.next_ns = now_ns + PERIOD_NS;
            }
            _ => {}
        }
    }

    /// How long the window opened at `at` stays open.
    fn window_ns(&self, at: u64) -> u64 {
        if at == self.started_ns {
            FIRST_WINDOW_NS
        } else {
            WINDOW_NS
        }
    }

    /// The cost of the trace so far, scaled from the time measured.
    pub fn cost(&self, now_ns: u64, totals: impl Fn() -> Totals) -> Option<ProgramCost> {
        let mut measured = self.measured;
        let mut measured_ns = self.measured_ns;
        if let Some((at, before)) = self.opened {
            measured.add(totals().since(before));
            measured_ns += now_ns.saturating_sub(at);
        }
        let elapsed = now_ns.saturating_sub(self.started_ns).max(measured_ns);
        if measured_ns == 0 {
            return None;
        }
        let share = measured_ns as f64 / elapsed as f64;
        Some(ProgramCost {
            run_ns: (measured.run_ns as f64 / share) as u64,
            runs: (measured.runs as f64 / share) as u64,
            measured_share: share,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace shorter than a window is measured whole; a longer one is
    /// measured a tenth of the time and scaled to the whole.
    #[test]
    fn cost_is_scaled_from_the_windows_measured() {
        let Some(mut sampler) = CostSampler::start(0, Totals::default()) else {
            return; // no run-time statistics here (not root, or Linux < 5.8)
        };
        let at = |run_ns| {
            move || Totals {
                run_ns,
                runs: run_ns / 100,
            }
        };
        let short = sampler.cost(500_000_000, at(1_000)).unwrap();
        assert_eq!(
            (short.run_ns, short.runs, short.measured_share),
            (1_000, 10, 1.0)
        );
        sampler.tick(FIRST_WINDOW_NS - 1, at(2_000));
        assert!(sampler.stats.is_some(), "the first window lasts a second");
        sampler.tick(FIRST_WINDOW_NS, at(2_000));
        assert!(sampler.stats.is_none());
        // Off now: the counters stand still until the next window.
        let next = FIRST_WINDOW_NS + PERIOD_NS - WINDOW_NS;
        sampler.tick(next, at(2_000));
        assert!(sampler.stats.is_some());
        sampler.tick(next + WINDOW_NS, at(3_000));
        // 1.1 s measured in 2.2 s: half, so the 3,000 ns count double.
        let cost = sampler.cost(2_200_000_000, at(3_000)).unwrap();
        assert_eq!(cost.measured_share, 0.5);
        assert_eq!((cost.run_ns, cost.runs), (6_000, 60));
    }
}
