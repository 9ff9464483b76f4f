//! Settings the loader writes before loading: read-only globals, so the
//! verifier knows their values and prunes the branches they rule out.
//! Most come from BTF and the tracepoint formats of the running kernel, so
//! one binary works on any kernel with BTF.

use aya_ebpf::Global;
use vmatrace_common::capture_stacks;
#[unsafe(no_mangle)]
pub static TRACE_ALL: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
pub static FOLLOW_FORKS: Global<u8> = Global::new(0);
/// vmatrace's own tgid: never traced, or `--all` would trace itself.
#[unsafe(no_mangle)]
pub static SELF_TGID: Global<u32> = Global::new(0);
/// Which calls get their user stack captured: a `capture_stacks` value.
#[unsafe(no_mangle)]
pub static CAPTURE_STACKS: Global<u8> = Global::new(capture_stacks::FLAGGED);
/// The NEAR-LIMIT threshold in VMAs: the call that takes the count across
/// it gets its stack too.
#[unsafe(no_mangle)]
pub static WARN_AT: Global<i32> = Global::new(i32::MAX);
#[unsafe(no_mangle)]
pub static TASK_MM_OFFSET: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
pub static MM_MAP_COUNT_OFFSET: Global<u64> = Global::new(0);
/// 0 when the kernel's sched_process_exit has no `group_dead` field.
#[unsafe(no_mangle)]
pub static EXIT_GROUP_DEAD_OFFSET: Global<u64> = Global::new(32);
#[unsafe(no_mangle)]
pub static NEWTASK_PID_OFFSET: Global<u64> = Global::new(8);
#[unsafe(no_mangle)]
pub static NEWTASK_FLAGS_OFFSET: Global<u64> = Global::new(32);
/// Wake the reader only once this many bytes wait in `EVENTS`; the reader
/// also polls on a short timer, so quiet periods still show promptly.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: Global<u64> = Global::new(0);

/// Field offsets of the mmap_lock events, from their format files (a
/// `memcg_path` string before Linux 6.12 moves `write` and `success`).
#[unsafe(no_mangle)]
pub static LOCK_ACQUIRED_MM_OFFSET: Global<u64> = Global::new(8);
#[unsafe(no_mangle)]
pub static LOCK_ACQUIRED_WRITE_OFFSET: Global<u64> = Global::new(24);
#[unsafe(no_mangle)]
pub static LOCK_ACQUIRED_SUCCESS_OFFSET: Global<u64> = Global::new(25);
#[unsafe(no_mangle)]
pub static LOCK_RELEASED_MM_OFFSET: Global<u64> = Global::new(8);
