//! The mmap lock: the count when an in-flight call takes the mmap write
//! lock and when it lets go. Only the holder changes `map_count`, so the
//! difference is the call's own effect, exact under any concurrency.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use aya_log_ebpf::debug;

use crate::{
    helpers::map_count,
    maps::{Inflight, LOCK_HELD, LOCK_NOT_TAKEN, LOCK_RELEASED},
    syscalls::active_slot,
};

/// Argument `n` of a raw tracepoint (its TP_PROTO's), `n` a constant.
#[inline(always)]
fn raw_arg(ctx: &RawTracePointContext, n: usize) -> u64 {
    unsafe { *(ctx.as_ptr() as *const u64).add(n) }
}

/// mmap_lock/mmap_lock_acquire_returned (raw), TP_PROTO(mm, write,
/// success): the count as a traced call starts to hold the write lock; a
/// downgrade to read (munmap does it) ends the writing, so the count is
/// final for the call there.
#[raw_tracepoint(tracepoint = "mmap_lock_acquire_returned")]
pub fn mmap_lock_acquired(ctx: RawTracePointContext) -> u32 {
    let (mm, write, success) = (raw_arg(&ctx, 0), raw_arg(&ctx, 1), raw_arg(&ctx, 2));
    on_lock_acquired(&ctx, mm, write as u8 != 0, success as u8 != 0);
    0
}

/// The same before Linux 6.12, TP_PROTO(mm, memcg_path, write, success);
/// the loader attaches the one that fits the running kernel.
#[raw_tracepoint(tracepoint = "mmap_lock_acquire_returned")]
pub fn mmap_lock_acquired_memcg_path(ctx: RawTracePointContext) -> u32 {
    let (mm, write, success) = (raw_arg(&ctx, 0), raw_arg(&ctx, 2), raw_arg(&ctx, 3));
    on_lock_acquired(&ctx, mm, write as u8 != 0, success as u8 != 0);
    0
}

#[inline(always)]
fn on_lock_acquired(ctx: &RawTracePointContext, mm: u64, write: bool, success: bool) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(parked) = active_slot(tid) else {
        return;
    };
    // A call may also lock another process's mm (to read its memory, say).
    if !success || mm != parked.mm {
        return;
    }
    if write && parked.lock == LOCK_NOT_TAKEN {
        parked.event.vmas_before = map_count(mm as *const u8);
        parked.lock = LOCK_HELD;
    } else if !write && parked.lock == LOCK_HELD {
        end_write_section(parked);
    } else if write {
        // The count is read over the first write section only: a second
        // one would escape it.
        debug!(
            ctx,
            "tid {} call {}: a second write section (lock state {})",
            tid,
            parked.event.call,
            parked.lock
        );
    }
}

/// mmap_lock/mmap_lock_released (raw): the end of the call's write section.
#[raw_tracepoint(tracepoint = "mmap_lock_released")]
pub fn mmap_lock_released(ctx: RawTracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(parked) = active_slot(tid) else {
        return 0;
    };
    if parked.lock == LOCK_HELD && raw_arg(&ctx, 0) == parked.mm {
        end_write_section(parked);
    }
    0
}

#[inline(always)]
fn end_write_section(parked: &mut Inflight) {
    parked.event.vmas_after = map_count(parked.mm as *const u8);
    parked.event.count_ns = unsafe { bpf_ktime_get_ns() };
    parked.event.locked = 1;
    parked.lock = LOCK_RELEASED;
}
