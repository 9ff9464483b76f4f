//! The process lifecycle: per-process state starts and ends at the right
//! moment, and followed children join the target set before they run.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use vmatrace_common::{Event, EventKind, TARGET_TRACED, limits, lost};

use crate::{
    counts,
    globals::{
        EXIT_GROUP_DEAD_OFFSET, FOLLOW_FORKS, LOCK_PROBES_ON_DEMAND, NEWTASK_FLAGS_OFFSET,
        NEWTASK_PID_OFFSET, TRACE_ALL, counting_at_syscalls,
    },
    helpers::{count_lost, ctx_read, current_mm, is_traced, map_count},
    maps::{EVENTS, INFLIGHT, TARGETS},
};

const CLONE_THREAD: u64 = 0x0001_0000;

/// task/task_newtask: runs in the parent before the child can run, so a
/// followed child is in `TARGETS` before its first instruction.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let flags = ctx_read::<u64>(&ctx, NEWTASK_FLAGS_OFFSET.load());
    if flags & CLONE_THREAD != 0 {
        // A thread: its tgid is already traced.
        if lock_probes_wanted() && is_traced((bpf_get_current_pid_tgid() >> 32) as u32) {
            let thread = ctx_read::<i32>(&ctx, NEWTASK_PID_OFFSET.load());
            send_lifecycle(EventKind::Thread, thread as u64, flags, -1);
        }
        return 0;
    }
    if FOLLOW_FORKS.load() == 0 || TRACE_ALL.load() != 0 {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_traced(parent) {
        return 0;
    }
    let child = ctx_read::<i32>(&ctx, NEWTASK_PID_OFFSET.load());
    if TARGETS.insert(&(child as u32), &TARGET_TRACED, 0).is_err() {
        count_lost(lost::TARGETS_FULL);
        debug!(
            &ctx,
            "child {} of {}: TARGETS is full: not followed", child, parent
        );
        return 0;
    }
    send_lifecycle(EventKind::Fork, child as u64, flags, -1);
    0
}

/// Whether userspace is to attach the lock probes once a traced process
/// has threads, and has not yet.
#[inline(always)]
fn lock_probes_wanted() -> bool {
    LOCK_PROBES_ON_DEMAND.load() != 0 && crate::maps::limit(limits::LOCK_PROBES) == 0
}

/// sched/sched_process_exec: a new address space, with a new count.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_traced(tgid) {
        send_lifecycle(EventKind::Exec, 0, 0, map_count(current_mm()));
    }
    0
}

/// sched/sched_process_exit: fires for every exiting thread; the process
/// ends with the thread that finds its group dead.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if !is_traced(tgid) {
        return 0;
    }
    if counting_at_syscalls()
        && let Some(slot) = INFLIGHT.get_ptr_mut(&tid)
    {
        // A call whose exit was never seen: not in progress any longer.
        counts::abandon(unsafe { &mut *slot });
    }
    let _ = INFLIGHT.remove(&tid);
    if !group_dead(&ctx, tid, tgid) {
        return 0;
    }
    if counting_at_syscalls() {
        counts::forget(tgid);
    }
    send_lifecycle(EventKind::Exit, 0, 0, -1);
    if TRACE_ALL.load() == 0 {
        let _ = TARGETS.remove(&tgid);
    }
    0
}

#[inline(always)]
fn group_dead(ctx: &TracePointContext, tid: u32, tgid: u32) -> bool {
    let offset = EXIT_GROUP_DEAD_OFFSET.load();
    if offset == 0 {
        // Older kernels: the leader's exit stands for the process's.
        return tid == tgid;
    }
    ctx_read::<u8>(ctx, offset) != 0
}

#[inline(always)]
fn send_lifecycle(kind: EventKind, arg0: u64, arg1: u64, vmas: i32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_lost(lost::LIFECYCLE_RINGBUF_FULL);
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let mut event = Event::zeroed();
    event.kind = kind as u8;
    event.pid = (pid_tgid >> 32) as u32;
    event.tid = pid_tgid as u32;
    event.enter_ns = now;
    event.exit_ns = now;
    event.count_ns = now;
    event.args[0] = arg0;
    event.args[1] = arg1;
    event.vmas_before = vmas;
    event.vmas_after = vmas;
    event.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    entry.write(event);
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
}
