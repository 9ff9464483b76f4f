//! vmatrace's kernel side: a list of probes.
//!
//! - `sys_enter_<call>` / `sys_exit_<call>` for every call that creates,
//!   removes, splits or merges VMAs: entry parks the arguments and the VMA
//!   count in `INFLIGHT` (keyed by thread), exit completes the record and
//!   sends it through the `EVENTS` ring buffer.
//! - `mmap_lock_acquired` / `mmap_lock_released` (mmap_lock/*, raw): the
//!   count when an in-flight call takes the mmap write lock and when it lets
//!   go. Only the holder changes `map_count`, so the difference is the
//!   call's own effect on the count, exact under any concurrency.
//! - `task_newtask`, `sched_process_exec`, `sched_process_exit`: the
//!   process lifecycle, so per-process state starts and ends at the right
//!   moment and followed children join the target set before they run.
//!
//! Every event that cannot be delivered is counted in `LOST`.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{RawTracePointContext, TracePointContext, tracing::StackIdContext},
};
use vmatrace_common::{
    Call, ENOMEM_RET, Event, EventKind, TARGET_TRACED, capture_stacks, creates, lost, maps_a_file,
};

// ---------------------------------------------------------------- maps

/// Completed records for userspace. The loader may resize it.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// A traced thread's slot: the call in progress, if any, and kernel-only
/// bookkeeping. Slots are reused from call to call and removed when the
/// thread exits, so the hot path never allocates or frees map elements.
#[repr(C)]
#[derive(Clone, Copy)]
struct Inflight {
    event: Event,
    /// `current->mm` at entry, so later reads of the count cost one read.
    mm: u64,
    /// Whether a call is in progress (its entry was seen, its exit not yet).
    active: u8,
    /// Where the call stands with the mmap write lock.
    lock: u8,
    _pad: [u8; 6],
}

const LOCK_NOT_TAKEN: u8 = 0;
const LOCK_HELD: u8 = 1;
const LOCK_RELEASED: u8 = 2;

/// Slots of traced threads, by thread id.
#[map]
static INFLIGHT: HashMap<u32, Inflight> = HashMap::with_max_entries(16384, 0);

/// The traced processes (tgids), unless `TRACE_ALL` is set.
#[map]
static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// User stacks of the calls that asked for one, by id.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// Per-CPU counts of events that could not be delivered, by `lost::*` slot.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::SLOTS, 0);

// ------------------------------------------------------------- globals
// Set by the loader from BTF and the tracepoint formats of the
// running kernel, so one binary works on any kernel with BTF.

#[unsafe(no_mangle)]
static TRACE_ALL: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
static FOLLOW_FORKS: Global<u8> = Global::new(0);
/// vmatrace's own tgid: never traced, or `--all` would trace itself.
#[unsafe(no_mangle)]
static SELF_TGID: Global<u32> = Global::new(0);
/// Which calls get their user stack captured: a `capture_stacks` value.
#[unsafe(no_mangle)]
static CAPTURE_STACKS: Global<u8> = Global::new(capture_stacks::FLAGGED);
/// The NEAR-LIMIT threshold in VMAs: the call that takes the count across
/// it gets its stack too.
#[unsafe(no_mangle)]
static WARN_AT: Global<i32> = Global::new(i32::MAX);
#[unsafe(no_mangle)]
static TASK_MM_OFFSET: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
static MM_MAP_COUNT_OFFSET: Global<u64> = Global::new(0);
/// 0 when the kernel's sched_process_exit has no `group_dead` field.
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFFSET: Global<u64> = Global::new(32);
#[unsafe(no_mangle)]
static NEWTASK_PID_OFFSET: Global<u64> = Global::new(8);
#[unsafe(no_mangle)]
static NEWTASK_FLAGS_OFFSET: Global<u64> = Global::new(32);
/// Wake the reader only once this many bytes wait in `EVENTS`; the reader
/// also polls on a short timer, so quiet periods still show promptly.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u64> = Global::new(0);

const SYSCALL_ARGS_OFFSET: usize = 16;
const SYSCALL_RET_OFFSET: usize = 16;
const CLONE_THREAD: u64 = 0x0001_0000;
const BPF_F_USER_STACK: u64 = 1 << 8;

// ------------------------------------------------------------ syscalls

macro_rules! syscall_probes {
    ($($call:expr => $enter:ident, $exit:ident;)*) => {$(
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            on_enter(&ctx, $call);
            0
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            on_exit(&ctx, $call);
            0
        }
    )*};
}

syscall_probes! {
    Call::Mmap => sys_enter_mmap, sys_exit_mmap;
    Call::Munmap => sys_enter_munmap, sys_exit_munmap;
    Call::Brk => sys_enter_brk, sys_exit_brk;
    Call::Mprotect => sys_enter_mprotect, sys_exit_mprotect;
    Call::PkeyMprotect => sys_enter_pkey_mprotect, sys_exit_pkey_mprotect;
    Call::Mremap => sys_enter_mremap, sys_exit_mremap;
    Call::Madvise => sys_enter_madvise, sys_exit_madvise;
    Call::Mlock => sys_enter_mlock, sys_exit_mlock;
    Call::Mlock2 => sys_enter_mlock2, sys_exit_mlock2;
    Call::Munlock => sys_enter_munlock, sys_exit_munlock;
    Call::Mlockall => sys_enter_mlockall, sys_exit_mlockall;
    Call::Munlockall => sys_enter_munlockall, sys_exit_munlockall;
    Call::Shmat => sys_enter_shmat, sys_exit_shmat;
    Call::Shmdt => sys_enter_shmdt, sys_exit_shmdt;
    Call::Mseal => sys_enter_mseal, sys_exit_mseal;
}

#[inline(always)]
fn on_enter(ctx: &TracePointContext, call: Call) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // One lookup is all an untraced process pays.
    if !is_traced(tgid) {
        return;
    }
    let tid = pid_tgid as u32;
    let Some(slot) = thread_slot(tid) else {
        count_lost(lost::INFLIGHT_FULL);
        return;
    };
    let slot = unsafe { &mut *slot };
    let mm = current_mm();
    slot.mm = mm as u64;
    slot.active = 1;
    slot.lock = LOCK_NOT_TAKEN;
    let event = &mut slot.event;
    event.kind = EventKind::Syscall as u8;
    event.call = call as u8;
    event.pid = tgid;
    event.tid = tid;
    let mut i = 0;
    while i < 6 {
        event.args[i] = if i < call.arg_count() {
            ctx_field::<u64>(ctx, SYSCALL_ARGS_OFFSET + 8 * i)
        } else {
            0
        };
        i += 1;
    }
    event.locked = 0;
    event.enter_ns = unsafe { bpf_ktime_get_ns() };
}

/// The thread's slot, created on its first traced call.
#[inline(always)]
fn thread_slot(tid: u32) -> Option<*mut Inflight> {
    if let Some(slot) = INFLIGHT.get_ptr_mut(&tid) {
        return Some(slot);
    }
    let fresh = Inflight {
        event: Event::zeroed(),
        mm: 0,
        active: 0,
        lock: LOCK_NOT_TAKEN,
        _pad: [0; 6],
    };
    INFLIGHT.insert(&tid, &fresh, 0).ok()?;
    INFLIGHT.get_ptr_mut(&tid)
}

/// The thread's slot if it has a call in progress.
#[inline(always)]
fn active_slot(tid: u32) -> Option<&'static mut Inflight> {
    let slot = unsafe { &mut *INFLIGHT.get_ptr_mut(&tid)? };
    (slot.active != 0).then_some(slot)
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, call: Call) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = active_slot(tid) else {
        return; // not traced, or the call began before tracing did
    };
    slot.active = 0;
    // A slot left active by another call is a leftover of a call whose exit
    // was never seen (tracing started mid-call): not reported.
    if slot.event.call != call as u8 {
        return;
    }
    let exit_ns = unsafe { bpf_ktime_get_ns() };
    if slot.lock != LOCK_RELEASED {
        // The call never held the write lock (or still does, which no traced
        // call does at exit): it changed nothing, the exit count stands for
        // both.
        let count = map_count(slot.mm as *const u8);
        slot.event.vmas_before = count;
        slot.event.vmas_after = count;
        slot.event.count_ns = exit_ns;
        slot.event.locked = 0;
    }
    let ret = ctx_field::<i64>(ctx, SYSCALL_RET_OFFSET);
    let stack = user_stack_if_wanted(ctx, &slot.event, ret);
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            let event = entry.write(slot.event);
            event.exit_ns = exit_ns;
            event.ret = ret;
            event.stack = stack;
            event.comm = bpf_get_current_comm().unwrap_or([0; 16]);
            // A mapped file is named from /proc by userspace: wake it
            // while the process still has the file mapped.
            let flags = if maps_a_file(slot.event.call, &slot.event.args, ret) {
                BPF_RB_FORCE_WAKEUP as u64
            } else {
                wakeup_flags()
            };
            entry.submit(flags);
        }
        None => count_lost(lost::RINGBUF_FULL),
    }
}

/// The caller's user stack id + 1 if this call wants one: every call with
/// `--stacks`, else those that split a mapping, failed with ENOMEM, or took
/// the count across the NEAR-LIMIT threshold (the tests userspace applies,
/// so a flagged event has its stack).
#[inline(always)]
fn user_stack_if_wanted(ctx: &TracePointContext, event: &Event, ret: i64) -> u32 {
    let mode = CAPTURE_STACKS.load();
    let warn_at = WARN_AT.load();
    let wanted = mode == capture_stacks::ALL
        || (mode == capture_stacks::FLAGGED
            && (ret == ENOMEM_RET
                || (event.locked != 0
                    && ((event.vmas_after as i64 - event.vmas_before as i64)
                        > creates(event.call, &event.args)
                        || (event.vmas_before < warn_at && event.vmas_after >= warn_at)))));
    if !wanted {
        return 0;
    }
    match ctx.get_stackid(&STACKS, BPF_F_USER_STACK) {
        Ok(id) => id as u32 + 1,
        Err(_) => {
            count_lost(lost::STACK_UNAVAILABLE);
            0
        }
    }
}

/// Argument `n` of a raw tracepoint (its TP_PROTO's), `n` a constant.
#[inline(always)]
fn raw_arg(ctx: &RawTracePointContext, n: usize) -> u64 {
    unsafe { *(ctx.as_ptr() as *const u64).add(n) }
}

// ------------------------------------------------------- the mmap lock

/// mmap_lock/mmap_lock_acquire_returned (raw), TP_PROTO(mm, write,
/// success): the count as a traced call starts to hold the write lock; a
/// downgrade to read (munmap does it) ends the writing, so the count is
/// final for the call there.
#[raw_tracepoint(tracepoint = "mmap_lock_acquire_returned")]
pub fn mmap_lock_acquired(ctx: RawTracePointContext) -> u32 {
    let (mm, write, success) = (raw_arg(&ctx, 0), raw_arg(&ctx, 1), raw_arg(&ctx, 2));
    on_lock_acquired(mm, write as u8 != 0, success as u8 != 0);
    0
}

/// The same before Linux 6.12, TP_PROTO(mm, memcg_path, write, success);
/// the loader attaches the one that fits the running kernel.
#[raw_tracepoint(tracepoint = "mmap_lock_acquire_returned")]
pub fn mmap_lock_acquired_memcg_path(ctx: RawTracePointContext) -> u32 {
    let (mm, write, success) = (raw_arg(&ctx, 0), raw_arg(&ctx, 2), raw_arg(&ctx, 3));
    on_lock_acquired(mm, write as u8 != 0, success as u8 != 0);
    0
}

#[inline(always)]
fn on_lock_acquired(mm: u64, write: bool, success: bool) {
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

// ----------------------------------------------------------- lifecycle

/// task/task_newtask: runs in the parent before the child can run, so a
/// followed child is in `TARGETS` before its first instruction.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    if FOLLOW_FORKS.load() == 0 || TRACE_ALL.load() != 0 {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_traced(parent) {
        return 0;
    }
    let flags = ctx_read::<u64>(&ctx, NEWTASK_FLAGS_OFFSET.load());
    if flags & CLONE_THREAD != 0 {
        return 0; // a thread: its tgid is already traced
    }
    let child = ctx_read::<i32>(&ctx, NEWTASK_PID_OFFSET.load());
    if TARGETS.insert(&(child as u32), &TARGET_TRACED, 0).is_err() {
        count_lost(lost::TARGETS_FULL);
        return 0;
    }
    send_lifecycle(EventKind::Fork, child as u64, flags, -1);
    0
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
    let _ = INFLIGHT.remove(&tid);
    if !group_dead(&ctx, tid, tgid) {
        return 0;
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

// ------------------------------------------------------------- helpers

#[inline(always)]
fn is_traced(tgid: u32) -> bool {
    if TRACE_ALL.load() != 0 {
        return tgid != SELF_TGID.load();
    }
    unsafe { TARGETS.get(&tgid) }.is_some()
}

/// `mm->map_count`, the kernel's own VMA count; -1 if unreadable (a kernel
/// thread has no mm).
#[inline(always)]
fn map_count(mm: *const u8) -> i32 {
    if mm.is_null() {
        return -1;
    }
    let count_field = mm.wrapping_add(MM_MAP_COUNT_OFFSET.load() as usize) as *const i32;
    unsafe { bpf_probe_read_kernel(count_field) }.unwrap_or(-1)
}

/// A field of the tracepoint record at a compile-time offset, read
/// directly from the context: far cheaper than a probe-read helper call.
#[inline(always)]
fn ctx_field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    unsafe { *(ctx.as_ptr() as *const u8).add(offset).cast::<T>() }
}

/// A field at an offset the loader found in the tracepoint's format file.
/// The verifier allows direct context reads only at constant offsets, so
/// the offsets known tracepoint layouts use are spelled out as constants
/// (the loader's value is a read-only global, so the verifier follows just
/// the matching branch); any other offset falls back to a probe read.
#[inline(always)]
fn ctx_read<T: Copy + Default>(ctx: &TracePointContext, offset: u64) -> T {
    macro_rules! direct {
        ($($offset:literal)*) => {
            match offset {
                $($offset if $offset % core::mem::size_of::<T>() == 0 => {
                    return ctx_field::<T>(ctx, $offset)
                })*
                _ => {}
            }
        };
    }
    direct!(8 16 20 21 24 25 32);
    unsafe { ctx.read_at::<T>(offset as usize) }.unwrap_or_default()
}

/// `current->mm`; null for kernel threads or if unreadable.
#[inline(always)]
fn current_mm() -> *const u8 {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mm_field = task.wrapping_add(TASK_MM_OFFSET.load() as usize) as *const *const u8;
    unsafe { bpf_probe_read_kernel(mm_field) }.unwrap_or(core::ptr::null())
}

#[inline(always)]
fn wakeup_flags() -> u64 {
    let threshold = WAKEUP_BYTES.load();
    if threshold == 0 {
        return 0;
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn count_lost(slot: u32) {
    if let Some(counter) = LOST.get_ptr_mut(slot) {
        unsafe { *counter += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
