//! The detectors: which events deserve a flag.
//!
//! - SPLIT: the call cut an existing VMA (its range began or ended strictly
//!   inside a mapping) and the pieces stay mapped, so the process holds more
//!   VMAs because of the cut: a hole punched by munmap, mprotect or madvise
//!   on part of a mapping, a MAP_FIXED mapping over the middle of another,
//!   part of a mapping moved by mremap. Trimming the end of a mapping cuts
//!   too, but the cut-off piece goes away and the count does not grow: not
//!   a SPLIT (it still shows in `cuts`). Both facts come from the kernel for
//!   that very call: the number of `__split_vma` cuts made by the calling
//!   thread, and the count change while it held the mmap write lock, when no
//!   other thread can change the count. So the flag is exact whatever other
//!   threads do at the same time.
//! - ENOMEM: the call failed with ENOMEM.
//! - NEAR-LIMIT: the process's VMA count crossed the warning threshold
//!   upwards. It re-arms once the count falls clearly below it again.

use serde::Serialize;
use vmatrace_common::{Call, ENOMEM_RET, Event, EventKind};

/// The call's own change to the VMA count, measured while it held the mmap
/// write lock; `None` if it never took it (it changed nothing then).
pub fn own_delta(event: &Event) -> Option<i64> {
    (event.locked != 0 && event.vmas_before >= 0 && event.vmas_after >= 0)
        .then(|| i64::from(event.vmas_after) - i64::from(event.vmas_before))
}

/// Whether the call's cuts left the process with more VMAs: its own count
/// change exceeds what the call creates by itself (one new mapping for
/// mmap and shmat).
fn cut_grew_the_count(event: &Event) -> bool {
    if event.cuts == 0 {
        return false;
    }
    let creates = Call::from_u8(event.call).map_or(0, Call::creates);
    // Cuts happen under the write lock, so the delta is there; if the lock
    // events were missed, a cut is reported rather than hidden.
    own_delta(event).is_none_or(|delta| delta > creates)
}

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
        let split = syscall && cut_grew_the_count(event);
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
        event.locked = 1;
        event
    }

    #[test]
    fn split_needs_a_cut_that_grew_the_count() {
        let detector = Detector::new(65530, 0.9);
        // A hole: two cuts, one more VMA.
        let (flags, _) = detector.inspect(&munmap(2, 0, 100, 101), false);
        assert!(flags.split);
        // A trim: the cut-off piece went away, the count did not grow.
        let (flags, _) = detector.inspect(&munmap(1, 0, 100, 100), false);
        assert!(!flags.split);
        // Nothing cut, nothing flagged.
        let (flags, _) = detector.inspect(&munmap(0, 0, 100, 99), false);
        assert!(!flags.split);
    }

    #[test]
    fn counts_read_outside_the_lock_give_no_delta() {
        let mut event = munmap(0, -22, 100, 100);
        event.locked = 0;
        assert_eq!(own_delta(&event), None);
        // A cut without lock readings (never seen) is reported, not hidden.
        event.cuts = 1;
        assert!(Detector::new(65530, 0.9).inspect(&event, false).0.split);
    }

    #[test]
    fn mmap_counts_its_own_new_mapping() {
        let detector = Detector::new(65530, 0.9);
        let mut fixed = munmap(2, 0x1000, 100, 102);
        fixed.call = Call::Mmap as u8;
        // MAP_FIXED over the middle of a mapping: +1 new, +1 from the cut.
        assert!(detector.inspect(&fixed, false).0.split);
        // MAP_FIXED over the head of one: the cut piece is replaced.
        fixed.vmas_after = 101;
        assert!(!detector.inspect(&fixed, false).0.split);
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
