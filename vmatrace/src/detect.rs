//! The detectors: which events deserve a flag.
//!
//! - SPLIT: the kernel cut an existing VMA in two during the call (the
//!   call's range began or ended strictly inside a mapping). Comes from the
//!   kernel's own count of `__split_vma` cuts for that call, so it is exact
//!   whatever other threads do at the same time.
//! - ENOMEM: the call failed with ENOMEM.
//! - NEAR-LIMIT: the process's VMA count crossed the warning threshold
//!   upwards. It re-arms once the count falls clearly below it again.

use serde::Serialize;
use vmatrace_common::{Call, ENOMEM_RET, Event, EventKind};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Flags {
    pub split: bool,
    pub enomem: bool,
    pub near_limit: bool,
}

impl Flags {
    pub fn any(self) -> bool {
        self.split || self.enomem || self.near_limit
    }

    pub fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.split {
            names.push("SPLIT");
        }
        if self.enomem {
            names.push("ENOMEM");
        }
        if self.near_limit {
            names.push("NEAR-LIMIT");
        }
        names
    }
}

/// Thresholds, fixed for a run.
#[derive(Clone, Copy, Debug)]
pub struct Detector {
    pub limit: u64,
    /// The count at which NEAR-LIMIT fires.
    pub warn_at: u64,
    /// The count below which NEAR-LIMIT re-arms.
    rearm_below: u64,
}

impl Detector {
    /// `warn_fraction` of `limit` (e.g. 0.9) is the NEAR-LIMIT threshold.
    pub fn new(limit: u64, warn_fraction: f64) -> Detector {
        let warn_at = ((limit as f64) * warn_fraction).ceil() as u64;
        let hysteresis = (limit / 100).max(1);
        Detector {
            limit,
            warn_at,
            rearm_below: warn_at.saturating_sub(hysteresis),
        }
    }

    /// The flags of `event`, given whether its process was already above
    /// the warning threshold. Returns the new above-threshold state too.
    pub fn inspect(&self, event: &Event, above_warn: bool) -> (Flags, bool) {
        let syscall = event.kind == EventKind::Syscall as u8;
        let split = syscall && event.cuts > 0;
        let enomem = syscall && event.ret == ENOMEM_RET && event.call != Call::Brk as u8;
        let count = event.vmas_after.max(event.vmas_before);
        let (near_limit, above) = if count < 0 {
            (false, above_warn)
        } else if !above_warn && count as u64 >= self.warn_at {
            (true, true)
        } else if above_warn && (count as u64) < self.rearm_below {
            (false, false)
        } else {
            (false, above_warn)
        };
        (
            Flags {
                split,
                enomem,
                near_limit,
            },
            above,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn munmap(cuts: u16, ret: i64, before: i32, after: i32) -> Event {
        let mut event = Event::zeroed();
        event.kind = EventKind::Syscall as u8;
        event.call = Call::Munmap as u8;
        event.cuts = cuts;
        event.ret = ret;
        event.vmas_before = before;
        event.vmas_after = after;
        event
    }

    #[test]
    fn split_comes_from_the_kernel_cut_count_not_the_delta() {
        let detector = Detector::new(65530, 0.9);
        // A cut whose second half was unmapped: the count does not move.
        let (flags, _) = detector.inspect(&munmap(1, 0, 100, 100), false);
        assert!(flags.split);
        // The count rose because another thread mapped: no cut, no flag.
        let (flags, _) = detector.inspect(&munmap(0, 0, 100, 101), false);
        assert!(!flags.split);
    }

    #[test]
    fn enomem_is_flagged() {
        let detector = Detector::new(65530, 0.9);
        let (flags, _) = detector.inspect(&munmap(0, -12, 65530, 65530), true);
        assert!(flags.enomem && !flags.split && !flags.near_limit);
        assert_eq!(flags.names(), vec!["ENOMEM"]);
    }

    #[test]
    fn near_limit_fires_once_per_crossing() {
        let detector = Detector::new(1000, 0.9);
        assert_eq!(detector.warn_at, 900);
        let (flags, above) = detector.inspect(&munmap(1, 0, 899, 900), false);
        assert!(flags.near_limit && above);
        let (flags, above) = detector.inspect(&munmap(1, 0, 900, 901), above);
        assert!(!flags.near_limit && above);
        // Dipping just below does not re-arm; falling clearly below does.
        let (_, above) = detector.inspect(&munmap(0, 0, 899, 899), above);
        assert!(above);
        let (_, above) = detector.inspect(&munmap(0, 0, 800, 800), above);
        assert!(!above);
        let (flags, _) = detector.inspect(&munmap(1, 0, 900, 905), above);
        assert!(flags.near_limit);
    }
}
