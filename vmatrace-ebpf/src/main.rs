//! vmatrace's kernel side: a list of probes.
//!
//! - `raw_sys_enter` / `raw_sys_exit` (raw_syscalls/sys_enter, sys_exit)
//!   for every call that creates, removes, splits or merges VMAs, picked
//!   (mbind, io_setup, userfaultfd's ioctls and the other calls that change
//!   it now and then are sent only when they did: `Call::is_watched`),
//!   by syscall number from `SYSCALL_CALLS`: entry parks the arguments and
//!   the VMA count in `INFLIGHT` (keyed by thread), exit completes the
//!   record and sends it through the `EVENTS` ring buffer.
//! - `mmap_lock_acquired` / `mmap_lock_released` (mmap_lock/*): the count
//!   when an in-flight call takes the mmap write lock and when it lets go.
//!   Only the holder changes `map_count`, so the difference is the call's
//!   own effect on the count, exact under any concurrency.
//! - Without them (Linux 5.10 and older, or when they cannot be attached),
//!   the syscall count mode (`COUNT_MODE`, counts.rs): the count at syscall
//!   entry and exit, read by `raw_sys_enter_counted` / `raw_sys_exit_counted`
//!   (attached instead of the two above), exact when no other call of the
//!   process was in progress meanwhile, which `PROCESSES` keeps track of.
//! - `vmatrace -p` / `-- CMD` run the counted programs too, exact for a
//!   single-threaded process, and attach the lock probes once a traced
//!   process has threads (`LOCK_PROBES_ON_DEMAND`: `task_newtask` tells
//!   userspace of the first thread; `limits::LOCK_PROBES` tells the
//!   programs the probes are on): they run for every mmap lock taken on the
//!   host, which a single-threaded target does not need.
//! - The lock probes also measure every other write section on a traced
//!   address space (an undecoded syscall, the uprobes page, another
//!   process sharing it): sent as changes of their own (changes.rs), so
//!   the count shown is the kernel's whatever changed it.
//! - `task_newtask`, `sched_process_exec`, `sched_process_exit`: the
//!   process lifecycle, so per-process state starts and ends at the right
//!   moment and followed children join the target set before they run.
//!
//! Every program is a perf-event tracepoint program. Per-syscall
//! (`syscalls/sys_enter_<call>`) and raw tracepoint programs run
//! preemptible from Linux 6.13 on (faultable syscall tracepoints,
//! SRCU-guarded tracepoints: `migrate_disable` only), behind a per-program,
//! per-CPU recursion guard: a thread preempted inside one makes the kernel
//! skip that program for every other thread on its CPU, counted only in the
//! program's `recursion_misses`. Perf-event tracepoint handlers
//! (include/trace/perf.h) run with preemption disabled on every kernel.
//!
//! Perf-event tracepoint programs share one per-CPU guard with every
//! `bpf()` map operation (`bpf_prog_active`), which the kernel holds
//! preemptibly: a map read preempted on a CPU makes the kernel skip these
//! programs there. So userspace reads nothing through `bpf()` while it
//! traces: stacks travel through a ring buffer (`USER_STACK_COPIES`), the
//! loss counters are a memory-mapped array.
//!
//! Every event that cannot be delivered is counted in `LOST`, and so is
//! every call whose entry or exit the kernel skipped (found when pairing
//! them); userspace adds the kernel's own skip counts.
#![no_std]
#![no_main]
// `atomic_xadd` (counts.rs): the BPF target has no atomic read-modify-write
// methods.
#![allow(internal_features)]
#![feature(core_intrinsics)]

// Shared state first, then the probe families.
mod globals;
mod helpers;
mod maps;

/// `raw_sys_enter` / `raw_sys_exit`: the mapping syscalls.
mod syscalls;

/// `mmap_lock_acquired` / `mmap_lock_released`: the exact counts.
mod mmap_lock;

/// The syscall count mode's bookkeeping.
mod counts;

/// Changes of the count no traced call made: the write sections of
/// other syscalls, traps and tasks, and the gaps between calls.
mod changes;

/// `task_newtask`, `sched_process_exec`, `sched_process_exit`.
mod lifecycle;

/// Per-process counters for `serve` and `top -a`.
mod proc_stats;

/// The user stacks (frame-pointer walk, registers, stack top) of the
/// calls that get one.
mod user_stack;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
