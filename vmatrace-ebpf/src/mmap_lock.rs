//! The mmap lock: the count when an in-flight call takes the mmap write
//! lock and when it lets go. Only the holder changes `map_count`, so the
//! difference is the call's own effect, exact under any concurrency. A
//! write section on a traced address space that is no traced call's own
//! is measured the same way (changes.rs).
//!
//! Perf-event tracepoint programs, not raw ones: the kernel runs raw
//! tracepoint programs preemptible from Linux 6.13 on (see main.rs), and
//! a skipped lock probe would leave the call's count inexact.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::debug;

use crate::{
    changes,
    globals::{
        LOCK_ACQUIRED_MM_OFFSET, LOCK_ACQUIRED_SUCCESS_OFFSET, LOCK_ACQUIRED_WRITE_OFFSET,
        LOCK_RELEASED_MM_OFFSET,
    },
    helpers::{ctx_read, map_count},
    maps::{INFLIGHT, Inflight, LOCK_HELD, LOCK_NOT_TAKEN, LOCK_RELEASED},
};

/// mmap_lock/mmap_lock_acquire_returned (mm, [memcg_path,] write,
/// success): the count as a traced call starts to hold the write lock; a
/// downgrade to read (munmap does it) ends the writing, so the count is
/// final for the call there.
#[tracepoint]
pub fn mmap_lock_acquired(ctx: TracePointContext) -> u32 {
    let mm = ctx_read::<u64>(&ctx, LOCK_ACQUIRED_MM_OFFSET.load());
    let write = ctx_read::<u8>(&ctx, LOCK_ACQUIRED_WRITE_OFFSET.load());
    let success = ctx_read::<u8>(&ctx, LOCK_ACQUIRED_SUCCESS_OFFSET.load());
    on_lock_acquired(&ctx, mm, write != 0, success != 0);
    0
}

#[inline(always)]
fn on_lock_acquired(ctx: &TracePointContext, mm: u64, write: bool, success: bool) {
    if !success {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = INFLIGHT.get_ptr_mut(&tid) else {
        // No traced thread: another process's may change a traced
        // address space all the same (changes.rs).
        if write {
            changes::write_lock_taken(tid, mm);
        }
        return;
    };
    let slot = unsafe { &mut *slot };
    // A call may also lock another process's mm (to read its memory, say):
    // that is not the call's own write section.
    if slot.active == 0 || mm != slot.mm {
        if write {
            changes::write_lock_taken(tid, mm);
        } else {
            // A downgrade ends the writing.
            changes::write_lock_released(slot, mm);
        }
        return;
    }
    if write && slot.lock == LOCK_NOT_TAKEN {
        slot.event.vmas_before = map_count(mm as *const u8);
        slot.lock = LOCK_HELD;
    } else if !write && slot.lock == LOCK_HELD {
        end_write_section(slot);
    } else if write {
        // The count is read over the first write section only: a second
        // one would escape it.
        debug!(
            ctx,
            "tid {} call {}: a second write section (lock state {})",
            tid,
            slot.event.call,
            slot.lock
        );
    }
}

/// mmap_lock/mmap_lock_released: the end of the call's write section.
#[tracepoint]
pub fn mmap_lock_released(ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = INFLIGHT.get_ptr_mut(&tid) else {
        return 0;
    };
    let slot = unsafe { &mut *slot };
    let mm = ctx_read::<u64>(&ctx, LOCK_RELEASED_MM_OFFSET.load());
    if slot.active != 0 && slot.lock == LOCK_HELD && mm == slot.mm {
        end_write_section(slot);
    } else {
        changes::write_lock_released(slot, mm);
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
