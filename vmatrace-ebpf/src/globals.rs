//! Settings the loader writes before loading: read-only globals, so the
//! verifier knows their values and prunes the branches they rule out.
//! Most come from BTF and the tracepoint formats of the running kernel, so
//! one binary works on any kernel with BTF.

use aya_ebpf::Global;
use vmatrace_common::{capture_stacks, count_mode};

/// Where a call's counts are read: a `count_mode` value. The lock mode
/// (the mmap_lock programs) where the kernel has the mmap_lock tracepoints;
/// at syscall entry and exit otherwise, where the loader also attaches the
/// `raw_sys_*_counted` programs instead of `raw_sys_enter`/`raw_sys_exit`
/// (so those stay as they are). The lifecycle programs read this.
#[unsafe(no_mangle)]
pub static COUNT_MODE: Global<u8> = Global::new(count_mode::LOCK);

/// Whether the calls' counts are read at syscall entry and exit.
#[inline(always)]
pub fn counting_at_syscalls() -> bool {
    COUNT_MODE.load() == count_mode::SYSCALL
}

#[unsafe(no_mangle)]
pub static TRACE_ALL: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
pub static FOLLOW_FORKS: Global<u8> = Global::new(0);
/// The counted programs run and userspace attaches the lock probes once a
/// traced process has more than one thread (`EventKind::Thread` tells it):
/// counting at syscall entry and exit is exact for a single-threaded
/// process, and the lock probes cost every process on the host (see
/// main.rs).
#[unsafe(no_mangle)]
pub static LOCK_PROBES_ON_DEMAND: Global<u8> = Global::new(0);
/// vmatrace's own tgid: never traced, or `--all` would trace itself.
#[unsafe(no_mangle)]
pub static SELF_TGID: Global<u32> = Global::new(0);
/// Which calls get their user stack captured: a `capture_stacks` value.
#[unsafe(no_mangle)]
pub static CAPTURE_STACKS: Global<u8> = Global::new(capture_stacks::FLAGGED);
#[unsafe(no_mangle)]
pub static TASK_MM_OFFSET: Global<u64> = Global::new(0);
/// Nonzero when the kernel has `bpf_get_current_task_btf` (Linux 5.11):
/// the calling task's own mm is read with plain loads (helpers.rs).
#[unsafe(no_mangle)]
pub static TASK_BTF: Global<u8> = Global::new(0);
/// `offsetof(struct task_struct, comm)`, from BTF (0: unknown).
#[unsafe(no_mangle)]
pub static TASK_COMM_OFFSET: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
pub static MM_MAP_COUNT_OFFSET: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
pub static MM_USERS_OFFSET: Global<u64> = Global::new(0);
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

/// Nonzero when the kernel has `bpf_task_pt_regs` (Linux 5.15) and BTF
/// gave the offsets below: a change outside a traced call then names the
/// syscall it happened in, with its arguments.
#[unsafe(no_mangle)]
pub static SYSCALL_REGS: Global<u8> = Global::new(0);
/// `offsetof(struct pt_regs, orig_ax)` (the syscall number; negative
/// outside a syscall), from BTF.
#[unsafe(no_mangle)]
pub static PT_REGS_NR_OFFSET: Global<u64> = Global::new(120);
/// The syscall number's size: 8 (`orig_ax`), or 4 (arm64's `syscallno`,
/// an s32 beside padding the kernel does not clear).
#[unsafe(no_mangle)]
pub static PT_REGS_NR_BYTES: Global<u8> = Global::new(8);
/// The offsets of the six syscall argument registers in `struct pt_regs`
/// (di, si, dx, r10, r8, r9 on x86-64; orig_x0, regs[1..5] on arm64),
/// from BTF.
#[unsafe(no_mangle)]
pub static PT_REGS_ARG_OFFSETS: Global<[u64; 6]> = Global::new([112, 104, 96, 56, 72, 64]);
/// `offsetof(struct mm_struct, owner)` (CONFIG_MEMCG) and
/// `offsetof(struct task_struct, tgid)`, from BTF: which process an
/// address space belongs to when another task changes it (0: unknown,
/// such changes are not seen).
#[unsafe(no_mangle)]
pub static MM_OWNER_OFFSET: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
pub static TASK_TGID_OFFSET: Global<u64> = Global::new(0);
/// `offsetof(struct task_struct, flags)`, from BTF: a kernel thread or an
/// io_uring worker is in no syscall of its own.
#[unsafe(no_mangle)]
pub static TASK_FLAGS_OFFSET: Global<u64> = Global::new(0);
