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

// Shared state first, then the probe families.
mod globals;
mod helpers;
mod maps;

/// `sys_enter_<call>` / `sys_exit_<call>` for every mapping syscall.
mod syscalls;

/// `mmap_lock_acquired` / `mmap_lock_released`: the exact counts.
mod mmap_lock;

/// `task_newtask`, `sched_process_exec`, `sched_process_exit`.
mod lifecycle;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
