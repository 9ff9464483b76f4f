//! Per-process counters for `vmatrace serve` and `vmatrace top -a`
//! (`PROC_STATS`, read by userspace when it wants them): the count, its
//! peak, the splits, the NEAR-LIMIT crossings and the ENOMEMs by call and
//! cause, updated by the syscall exit program for every traced call, when
//! `SEND_EVENTS` is 0: then the exit program sends no event at all, nothing
//! per call crosses to userspace. A reader of the events (`SEND_EVENTS` 1)
//! keeps its own counts, so the counters are not kept for it.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{Global, bindings::BPF_NOEXIST, macros::map, maps::LruHashMap};
use vmatrace_common::{
    Call, ENOMEM_RET, Event, creates, limits,
    proc_stats::{CALLS, PROC_STATS_ENTRIES, ProcStats, enomem_at_vma_limit},
};

use crate::maps::limit;

/// 0: keep the counters only (serve mode); else send every event, and
/// keep no counters.
#[unsafe(no_mangle)]
pub static SEND_EVENTS: Global<u8> = Global::new(1);

/// `ProcStats` by tgid.
#[map]
pub static PROC_STATS: LruHashMap<u32, ProcStats> =
    LruHashMap::with_max_entries(PROC_STATS_ENTRIES, 0);

/// Counts a completed call (`event` with its counts; `mm` the address
/// space it ran in) in its process's counters. Returns whether the event
/// is to be sent to userspace as well.
#[inline(always)]
pub fn record<const COUNTED: bool>(event: &Event, mm: u64, ret: i64, now_ns: u64) -> bool {
    // A reader of the events keeps its own counts: no counters to pay for.
    if SEND_EVENTS.load() != 0 {
        return true;
    }
    let tgid = event.pid;
    let Some(stats) = stats_of(tgid, mm, now_ns) else {
        return false;
    };
    let stats = unsafe { &mut *stats };
    add(&stats.calls);
    let before = event.vmas_before;
    let after = event.vmas_after;
    if after >= 0 {
        stats.count = after;
        stats.count_ns = now_ns;
        if after > stats.peak {
            stats.peak = after;
        }
    }
    if (event.locked != 0 || COUNTED)
        && before >= 0
        && after >= 0
        && (after as i64 - before as i64) > creates(event.call, &event.args)
    {
        add(&stats.splits);
    }
    let warn_at = limit(limits::WARN_AT);
    if before >= 0 && (before as i64) < warn_at && after as i64 >= warn_at {
        add(&stats.near_limit);
    }
    if ret == ENOMEM_RET && event.call != Call::Brk as u8 && (event.call as usize) < CALLS {
        let seen = if before > after { before } else { after };
        let call = event.call as usize;
        if enomem_at_vma_limit(
            event.call,
            &event.args,
            seen as i64,
            limit(limits::MAX_MAP_COUNT),
        ) {
            add(&stats.enomem_vma_limit[call]);
        } else {
            add(&stats.enomem_memory[call]);
        }
    }
    false
}

/// The process's counters, made (or started afresh, for a new address
/// space) when needed.
#[inline(always)]
fn stats_of(tgid: u32, mm: u64, now_ns: u64) -> Option<*mut ProcStats> {
    if let Some(stats) = PROC_STATS.get_ptr_mut(&tgid) {
        if unsafe { (*stats).mm } == mm {
            return Some(stats);
        }
    }
    let mut fresh = ProcStats::zeroed();
    fresh.mm = mm;
    fresh.since_ns = now_ns;
    // Another thread may make it at the same moment: either one stands.
    let _ = PROC_STATS.insert(&tgid, &fresh, BPF_NOEXIST as u64);
    match PROC_STATS.get_ptr_mut(&tgid) {
        Some(stats) if unsafe { (*stats).mm } == mm => Some(stats),
        Some(_) => {
            // An older address space's entry (exec): replace it.
            let _ = PROC_STATS.insert(&tgid, &fresh, 0);
            PROC_STATS.get_ptr_mut(&tgid)
        }
        None => None,
    }
}

/// An atomic add of 1 (BPF_XADD): threads of one process update one entry.
#[inline(always)]
fn add(counter: &u64) {
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter as *const u64 as *mut u64, 1)
    };
}
