//! Per-process counters for `vmatrace serve` and `vmatrace top -a`
//! (`PROC_STATS`, read by userspace when it wants them): the count, its
//! peak, the splits, the NEAR-LIMIT crossings and the ENOMEMs by call and
//! cause, updated by the syscall exit program for every traced call, when
//! `SEND_EVENTS` is 0: then the exit program sends no event at all, nothing
//! per call crosses to userspace. A reader of the events (`SEND_EVENTS` 1)
//! keeps its own counts, so the counters are not kept for it.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    Global,
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
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
    let before = event.vmas_before;
    let after = event.vmas_after;
    observe_count(stats, before, after, now_ns);
    add(&stats.calls);
    // A SPLIT only where the call's own count shows one.
    if event.locked != 0
        && before >= 0
        && after >= 0
        && (after as i64 - before as i64) > creates(event.call, &event.args)
    {
        add(&stats.splits);
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

/// Counts a change of a process's count outside a traced call
/// (changes.rs). Returns whether it is to be sent to userspace as well.
#[inline(always)]
pub fn record_change(tgid: u32, mm: u64, before: i32, after: i32, now_ns: u64) -> bool {
    if SEND_EVENTS.load() != 0 {
        return true;
    }
    if let Some(stats) = stats_of(tgid, mm, now_ns) {
        let stats = unsafe { &mut *stats };
        observe_count(stats, before, after, now_ns);
        add(&stats.changes);
    }
    false
}

/// The count after a call or a change, its peak, and a crossing of the
/// NEAR-LIMIT threshold.
#[inline(always)]
fn observe_count(stats: &mut ProcStats, before: i32, after: i32, now_ns: u64) {
    if after >= 0 {
        stats.count = after;
        stats.count_ns = now_ns;
        if after > stats.peak {
            stats.peak = after;
        }
    }
    let warn_at = limit(limits::WARN_AT);
    if before >= 0 && (before as i64) < warn_at && after as i64 >= warn_at {
        add(&stats.near_limit);
    }
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
    // Made in a per-CPU scratch value: the stack has no room for one.
    let fresh = FRESH_STATS.get_ptr_mut(0)?;
    unsafe {
        core::ptr::write_bytes(fresh, 0, 1);
        (*fresh).mm = mm;
        (*fresh).since_ns = now_ns;
        (*fresh).count = -1;
        (*fresh).peak = -1;
    }
    let fresh = unsafe { &*fresh };
    // Another thread may make it at the same moment: either one stands.
    let _ = PROC_STATS.insert(&tgid, fresh, BPF_NOEXIST as u64);
    match PROC_STATS.get_ptr_mut(&tgid) {
        Some(stats) if unsafe { (*stats).mm } == mm => Some(stats),
        Some(_) => {
            // An older address space's entry (exec): replace it.
            let _ = PROC_STATS.insert(&tgid, fresh, 0);
            PROC_STATS.get_ptr_mut(&tgid)
        }
        None => None,
    }
}

/// Where a process's first counters are made (the programs run with
/// preemption disabled, so one per CPU is never shared).
#[map]
static FRESH_STATS: PerCpuArray<ProcStats> = PerCpuArray::with_max_entries(1, 0);

/// An atomic add of 1 (BPF_XADD): threads of one process update one entry.
#[inline(always)]
fn add(counter: &u64) {
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter as *const u64 as *mut u64, 1)
    };
}
