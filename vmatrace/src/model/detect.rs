//! The detectors: which events deserve a flag.
//!
//! - SPLIT: the call cut an existing VMA (its range began or ended strictly
//!   inside a mapping) and the pieces stay mapped, so the process holds more
//!   VMAs because of the cut: a hole punched by munmap, mprotect, madvise or
//!   mlock on part of a mapping, a MAP_FIXED mapping over the middle of
//!   another, part of a mapping moved away by mremap. Trimming the end of a
//!   mapping is not a SPLIT: the count does not grow.
//!
//!   The kernel changes a process's VMA count only while it holds the mmap
//!   write lock, and only a cut makes the count grow beyond the mapping a
//!   call creates itself. vmatrace reads the count when the call takes the
//!   lock and when it lets go of it: their difference is the call's own
//!   effect, whatever other threads do, and a SPLIT is a difference larger
//!   than what the call creates (`vmatrace_common::creates`).
//!
//!   On kernels without the mmap_lock tracepoints (and, by default, until a
//!   traced process starts its first thread) the counts are read at
//!   syscall entry and exit instead (`Event::counted`). The difference is
//!   still the call's own when no other call of its process ran meanwhile
//!   (the kernel marks it exact then); otherwise it includes what those
//!   did: the line shows the delta as `~+1`, JSON says `"exact": false`,
//!   and no SPLIT is flagged on it (another thread's cut or mapping would
//!   pass for the call's own, and a real cut can net 0 beside another
//!   thread's unmap). The summary counts such calls apart.
//! - ENOMEM: the call failed with ENOMEM, with its cause by the kernel's own
//!   rules for that call ([`enomem_cause`]): the VMA limit, or memory
//!   (overcommit, RLIMIT_AS, no address space left).
//! - NEAR-LIMIT: the process's VMA count crossed the warning threshold
//!   upwards. It re-arms once the count falls clearly below it again.

use serde::Serialize;
use vmatrace_common::{Call, ENOMEM_RET, Event, EventKind, count_mode, creates};

/// The call's own change to the VMA count: measured while it held the mmap
/// write lock, or between its syscall entry and exit; `None` if it never
/// took the lock (it changed nothing then). Read at syscall entry and exit
/// while other calls of the process ran, it includes their changes: see
/// [`delta_is_exact`].
pub fn own_delta(event: &Event) -> Option<i64> {
    let measured = event.locked != 0 || event.counted == count_mode::SYSCALL;
    (measured && event.vmas_before >= 0 && event.vmas_after >= 0)
        .then(|| i64::from(event.vmas_after) - i64::from(event.vmas_before))
}

/// Whether [`own_delta`] is the call's own effect for certain. Not when the
/// counts were read at syscall entry and exit while another call of the
/// same process was in progress: the text line shows such a delta as `~+1`.
pub fn delta_is_exact(event: &Event) -> bool {
    event.locked != 0 || event.counted != count_mode::SYSCALL
}

/// Whether a cut left the process with more VMAs than the call created,
/// by the call's own count: never judged on an inexact one.
fn cut_grew_the_count(event: &Event) -> bool {
    delta_is_exact(event)
        && own_delta(event).is_some_and(|delta| delta > creates(event.call, &event.args))
}

/// The traced call a change outside a traced call was made in, when it is
/// one (another process sharing the address space called munmap, say).
pub fn change_call(event: &Event) -> Option<Call> {
    if event.kind != EventKind::Change as u8 || event.ret < 0 {
        return None;
    }
    let name = crate::model::syscalls::syscall_name(event.ret);
    Call::ALL.into_iter().find(|call| call.name() == name)
}

/// Whether a change measured under the lock, in a traced call made by a
/// task vmatrace does not trace, cut a mapping: judged as for the call.
fn change_cut(event: &Event) -> bool {
    event.locked != 0
        && change_call(event).is_some_and(|call| {
            i64::from(event.vmas_after) - i64::from(event.vmas_before)
                > creates(call as u8, &event.args)
        })
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Flags {
    pub split: bool,
    pub enomem: bool,
    /// Why, when `enomem`.
    pub enomem_cause: Option<EnomemCause>,
    pub near_limit: bool,
}

/// Why a call failed with ENOMEM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnomemCause {
    /// The count left no room for the VMAs the call needed.
    VmaLimit,
    /// Anything else: overcommit, RLIMIT_AS, no address space left.
    Memory,
}

impl EnomemCause {
    pub fn name(self) -> &'static str {
        match self {
            EnomemCause::VmaLimit => "vma_limit",
            EnomemCause::Memory => "memory",
        }
    }
}

/// The cause of a call's ENOMEM, by the checks the kernel makes for that
/// call against `vm.max_map_count` (mm/mmap.c, mm/vma.c, mm/mremap.c, the
/// same from 5.10 to 7.x): a new mapping fails only once the count is above
/// the limit (`map_count > max`), a cut of a mapping (munmap, mprotect,
/// madvise, mlock, mseal on part of one; MAP_FIXED over the middle of one)
/// fails at the limit (`map_count >= max`), and mremap keeps room for the
/// cuts of a move (`map_count + 2 >= max - 3` and the like). The count is
/// the one the call saw: read when it took the mmap write lock.
pub fn enomem_cause(event: &Event, limit: u64) -> EnomemCause {
    const MAP_FIXED: u64 = 0x10;
    const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
    const SHM_REMAP: u64 = 0o40000;
    let count = i64::from(event.vmas_before.max(event.vmas_after));
    let limit = limit as i64;
    let over = count > limit;
    let at = count >= limit;
    let hit = match Call::from_u8(event.call) {
        Some(Call::Mmap) => {
            let flags = event.args[3];
            over || (flags & MAP_FIXED != 0 && flags & MAP_FIXED_NOREPLACE == 0 && at)
        }
        Some(Call::Shmat) => over || (event.args[2] & SHM_REMAP != 0 && at),
        Some(Call::Brk) => over,
        Some(Call::Mremap) => count + 5 >= limit,
        Some(_) => at,
        None => false,
    };
    if hit {
        EnomemCause::VmaLimit
    } else {
        EnomemCause::Memory
    }
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
        Detector::with_warn_at(limit, ((limit as f64) * warn_fraction).ceil() as u64)
    }

    /// NEAR-LIMIT at `warn_at` VMAs (as a recording stores it).
    pub fn with_warn_at(limit: u64, warn_at: u64) -> Detector {
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
        let split = (syscall && cut_grew_the_count(event)) || change_cut(event);
        let enomem = syscall && event.ret == ENOMEM_RET && event.call != Call::Brk as u8;
        let enomem_cause = enomem.then(|| enomem_cause(event, self.limit));
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
                enomem_cause,
                near_limit,
            },
            above,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn munmap(ret: i64, before: i32, after: i32) -> Event {
        let mut event = Event::zeroed();
        event.kind = EventKind::Syscall as u8;
        event.call = Call::Munmap as u8;
        event.ret = ret;
        event.vmas_before = before;
        event.vmas_after = after;
        event.locked = 1;
        event
    }

    #[test]
    fn enomem_causes_follow_the_kernels_rule_for_each_call() {
        let detector = Detector::new(100, 0.9);
        let cause = |event: &Event| detector.inspect(event, false).0.enomem_cause;
        // A cut fails at the limit; below it, it was memory.
        assert_eq!(cause(&munmap(-12, 100, 100)), Some(EnomemCause::VmaLimit));
        assert_eq!(cause(&munmap(-12, 99, 99)), Some(EnomemCause::Memory));
        assert_eq!(cause(&munmap(0, 100, 101)), None);
        // A new mapping fails only above the limit, MAP_FIXED cuts at it.
        let mut mmap = munmap(-12, 100, 100);
        mmap.call = Call::Mmap as u8;
        mmap.args[3] = 0x22; // MAP_PRIVATE|MAP_ANONYMOUS
        assert_eq!(cause(&mmap), Some(EnomemCause::Memory));
        mmap.args[3] |= 0x10; // MAP_FIXED
        assert_eq!(cause(&mmap), Some(EnomemCause::VmaLimit));
        mmap.args[3] = 0x22;
        (mmap.vmas_before, mmap.vmas_after) = (101, 101);
        assert_eq!(cause(&mmap), Some(EnomemCause::VmaLimit));
        // mremap keeps room for the cuts of a move.
        let mut mremap = munmap(-12, 95, 95);
        mremap.call = Call::Mremap as u8;
        assert_eq!(cause(&mremap), Some(EnomemCause::VmaLimit));
        (mremap.vmas_before, mremap.vmas_after) = (90, 90);
        assert_eq!(cause(&mremap), Some(EnomemCause::Memory));
    }

    #[test]
    fn split_is_a_count_that_grew_under_the_lock() {
        let detector = Detector::new(65530, 0.9);
        // A hole: one more VMA.
        assert!(detector.inspect(&munmap(0, 100, 101), false).0.split);
        // A trim, or a whole mapping removed: the count did not grow.
        assert!(!detector.inspect(&munmap(0, 100, 100), false).0.split);
        assert!(!detector.inspect(&munmap(0, 100, 99), false).0.split);
    }

    #[test]
    fn counts_read_outside_the_lock_prove_nothing() {
        // The call never held the write lock (it failed early, or madvise
        // took only the read lock): it changed nothing itself.
        let mut event = munmap(-22, 100, 101);
        event.locked = 0;
        assert_eq!(own_delta(&event), None);
        assert!(!Detector::new(65530, 0.9).inspect(&event, false).0.split);
    }

    #[test]
    fn counts_at_syscall_entry_and_exit_are_judged_exact_or_not() {
        let detector = Detector::new(65530, 0.9);
        let mut event = munmap(0, 100, 101);
        event.counted = count_mode::SYSCALL;
        // No other call of the process ran meanwhile: exact.
        assert_eq!(own_delta(&event), Some(1));
        assert!(delta_is_exact(&event));
        assert!(detector.inspect(&event, false).0.split);
        // Another did: the delta includes its effect (another thread's
        // mmap would pass for a cut), so no SPLIT is judged on it.
        event.locked = 0;
        assert_eq!(own_delta(&event), Some(1));
        assert!(!delta_is_exact(&event));
        assert!(!detector.inspect(&event, false).0.split);
        event.vmas_after = 103;
        assert!(!detector.inspect(&event, false).0.split);
        // The lock mode's calls that never took the lock are exact: they
        // changed nothing.
        let mut unlocked = munmap(-22, 100, 100);
        unlocked.locked = 0;
        assert!(delta_is_exact(&unlocked));
    }

    #[test]
    fn calls_that_create_a_mapping_need_more_to_split() {
        let detector = Detector::new(65530, 0.9);
        let mut mmap = munmap(0x1000, 100, 101);
        mmap.call = Call::Mmap as u8;
        // A plain new mapping.
        assert!(!detector.inspect(&mmap, false).0.split);
        // MAP_FIXED over the middle of a mapping: the new one and a cut.
        mmap.vmas_after = 102;
        assert!(detector.inspect(&mmap, false).0.split);
        let mut mremap = munmap(0x1000, 100, 101);
        mremap.call = Call::Mremap as u8;
        // Part of a mapping moved away: the rest stays, one more VMA.
        assert!(detector.inspect(&mremap, false).0.split);
        // MREMAP_DONTUNMAP keeps the old range: the copy is no cut.
        mremap.args[3] = 1 | 4;
        assert!(!detector.inspect(&mremap, false).0.split);
    }

    #[test]
    fn enomem_is_flagged() {
        let detector = Detector::new(65530, 0.9);
        let (flags, _) = detector.inspect(&munmap(-12, 65530, 65530), true);
        assert!(flags.enomem && !flags.split && !flags.near_limit);
        assert_eq!(flags.names(), vec!["ENOMEM"]);
    }

    #[test]
    fn near_limit_fires_once_per_crossing() {
        let detector = Detector::new(1000, 0.9);
        assert_eq!(detector.warn_at, 900);
        let (flags, above) = detector.inspect(&munmap(0, 899, 900), false);
        assert!(flags.near_limit && above);
        let (flags, above) = detector.inspect(&munmap(0, 900, 901), above);
        assert!(!flags.near_limit && above);
        // Dipping just below does not re-arm; falling clearly below does.
        let (_, above) = detector.inspect(&munmap(0, 899, 899), above);
        assert!(above);
        let (_, above) = detector.inspect(&munmap(0, 800, 800), above);
        assert!(!above);
        let (flags, _) = detector.inspect(&munmap(0, 900, 905), above);
        assert!(flags.near_limit);
    }
}
