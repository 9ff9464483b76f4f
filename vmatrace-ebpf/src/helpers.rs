//! Small pieces every probe family uses: the target test, the kernel's
//! count, reads of the tracepoint record, loss counting.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, generated::bpf_get_current_task_btf},
    programs::TracePointContext,
};

use crate::{
    globals::{
        MM_MAP_COUNT_OFFSET, MM_USERS_OFFSET, SELF_TGID, TASK_BTF, TASK_COMM_OFFSET,
        TASK_MM_OFFSET, TRACE_ALL, WAKEUP_BYTES,
    },
    maps::{EVENTS, LAST_WAKEUP_NS, LOST, TARGETS},
};

#[inline(always)]
pub fn is_traced(tgid: u32) -> bool {
    if TRACE_ALL.load() != 0 {
        return tgid != SELF_TGID.load();
    }
    unsafe { TARGETS.get(&tgid) }.is_some()
}

/// The calling task's own address space, through its BTF pointer (Linux
/// 5.11: `bpf_get_current_task_btf`): the verifier then lets the program
/// read its fields with plain loads (made safe by the kernel's exception
/// table), where a `bpf_probe_read_kernel` call costs tens of ns. Null
/// when the task has no mm; only where `TASK_BTF` is set.
///
/// Callers test `TASK_BTF` themselves, right before: the verifier then
/// drops the whole branch on kernels without it (a test inside, whose
/// result LLVM may reason away, is not enough).
#[inline(always)]
fn own_mm_btf() -> *const u8 {
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let field = task.wrapping_add(TASK_MM_OFFSET.load() as usize) as *const *const u8;
    unsafe { core::ptr::read_volatile(field) }
}

/// The calling task's address space, taken once per program run and
/// handed to what reads it. Each load of `task->mm` through a BTF pointer
/// costs the verifier a few scans of the kernel's whole BTF by name (it
/// asks whether the field is marked trusted), once for every path that
/// reaches it: read in each helper, it took a third of the programs' load
/// time. A task's mm changes only at exec and exit, never inside a call,
/// so one read serves the whole program run.
#[derive(Clone, Copy)]
pub struct OwnMm(*const u8);

impl OwnMm {
    /// `current->mm`: a BTF pointer where the kernel allows, else read with
    /// a helper call.
    #[inline(always)]
    pub fn current() -> OwnMm {
        if TASK_BTF.load() != 0 {
            return OwnMm(own_mm_btf());
        }
        OwnMm(probe_current_mm())
    }

    /// Like `current`, where the task's mm was read before in the same
    /// call (`known`, at syscall entry): no second helper call on kernels
    /// without BTF pointers.
    #[inline(always)]
    pub fn current_or(known: u64) -> OwnMm {
        if TASK_BTF.load() != 0 {
            return OwnMm(own_mm_btf());
        }
        OwnMm(known as *const u8)
    }

    #[inline(always)]
    pub fn addr(self) -> u64 {
        self.0 as u64
    }

    /// `map_count`, the kernel's own VMA count; -1 for a task without an
    /// address space (a kernel thread) or if unreadable.
    #[inline(always)]
    pub fn map_count(self) -> i32 {
        if self.0.is_null() {
            return -1;
        }
        self.i32_at(MM_MAP_COUNT_OFFSET.load()).unwrap_or(-1)
    }

    /// Whether the calling thread is the address space's only user: the
    /// process has one thread, and no other process shares its memory (a
    /// vfork child, clone(CLONE_VM)); a reader of /proc/PID/* holding it
    /// for a moment counts too. Then no other task can change the count
    /// while the thread is inside a call, and it cannot start a thread
    /// meanwhile.
    #[inline(always)]
    pub fn sole_user(self) -> bool {
        !self.0.is_null() && self.i32_at(MM_USERS_OFFSET.load()) == Some(1)
    }

    /// A u64 field (at `offset`); 0 for a task without an address space or
    /// if unreadable.
    #[inline(always)]
    pub fn u64_at(self, offset: u64) -> u64 {
        if self.0.is_null() {
            return 0;
        }
        let field = self.0.wrapping_add(offset as usize) as *const u64;
        if TASK_BTF.load() != 0 {
            return unsafe { core::ptr::read_volatile(field) };
        }
        unsafe { bpf_probe_read_kernel(field) }.unwrap_or(0)
    }

    #[inline(always)]
    fn i32_at(self, offset: u64) -> Option<i32> {
        let field = self.0.wrapping_add(offset as usize) as *const i32;
        if TASK_BTF.load() != 0 {
            return Some(unsafe { core::ptr::read_volatile(field) });
        }
        unsafe { bpf_probe_read_kernel(field) }.ok()
    }
}

/// A u64 field of the calling task (at `offset`), a plain load (see
/// `own_mm_btf`); None where the kernel cannot.
#[inline(always)]
pub fn own_task_u64(offset: u64) -> Option<u64> {
    if TASK_BTF.load() == 0 {
        return None;
    }
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let field = task.wrapping_add(offset as usize) as *const u64;
    Some(unsafe { core::ptr::read_volatile(field) })
}

/// The calling task's name (`comm`): two plain loads where the kernel
/// allows (see `own_mm_btf`), else the helper.
#[inline(always)]
pub fn own_comm() -> [u8; 16] {
    let offset = TASK_COMM_OFFSET.load();
    if offset != 0
        && let (Some(low), Some(high)) = (own_task_u64(offset), own_task_u64(offset + 8))
    {
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(&low.to_ne_bytes());
        comm[8..].copy_from_slice(&high.to_ne_bytes());
        return comm;
    }
    aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16])
}

/// `mm->map_count`, the kernel's own VMA count, for an address space that
/// may not be the calling task's (the mmap_lock and lifecycle programs);
/// -1 if unreadable (a kernel thread has no mm).
#[inline(always)]
pub fn map_count(mm: *const u8) -> i32 {
    if mm.is_null() {
        return -1;
    }
    let count_field = mm.wrapping_add(MM_MAP_COUNT_OFFSET.load() as usize) as *const i32;
    unsafe { bpf_probe_read_kernel(count_field) }.unwrap_or(-1)
}

/// A field of the tracepoint record at a compile-time offset, read
/// directly from the context: far cheaper than a probe-read helper call.
#[inline(always)]
pub fn ctx_field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    unsafe { *(ctx.as_ptr() as *const u8).add(offset).cast::<T>() }
}

/// A field at an offset the loader found in the tracepoint's format file.
/// The verifier allows direct context reads only at constant offsets, so
/// the offsets known tracepoint layouts use are spelled out as constants
/// (the loader's value is a read-only global, so the verifier follows just
/// the matching branch); any other offset falls back to a probe read.
#[inline(always)]
pub fn ctx_read<T: Copy + Default>(ctx: &TracePointContext, offset: u64) -> T {
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

/// `current->mm` as a number, for programs that only compare it or
/// hand it to `map_count`; null for kernel threads or if unreadable.
#[inline(always)]
pub fn current_mm() -> *const u8 {
    if TASK_BTF.load() != 0 {
        return own_mm_btf();
    }
    probe_current_mm()
}

#[inline(always)]
fn probe_current_mm() -> *const u8 {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mm_field = task.wrapping_add(TASK_MM_OFFSET.load() as usize) as *const *const u8;
    unsafe { bpf_probe_read_kernel(mm_field) }.unwrap_or(core::ptr::null())
}

/// Ring buffer fill levels (`fill_level`).
pub const FILLING: u8 = 1;
pub const NEARLY_FULL: u8 = 2;

/// How full a ring buffer with `avail` bytes waiting is, against its wakeup
/// `threshold` (a quarter of it): 0 below, `FILLING` past it,
/// `NEARLY_FULL` past three quarters.
#[inline(always)]
pub fn fill_level(avail: u64, threshold: u64) -> u8 {
    if threshold == 0 || avail < threshold {
        0
    } else if avail < 3 * threshold {
        FILLING
    } else {
        NEARLY_FULL
    }
}

/// The submit flags of an event: a wakeup of userspace when the event
/// ring or, after a stack (`stack_sent`), the stack ring holds more than
/// its threshold; no wakeup otherwise (userspace reads on its own tick
/// too). Past the threshold at most once a millisecond per CPU
/// (`wakeup_due`), but every time once a ring is nearly full: each forced
/// wakeup costs the traced thread an interrupt, and when userspace falls
/// that far behind (printing every event, say) that cost is what slows
/// the producer enough for it to catch up before events are lost.
#[inline(always)]
pub fn wakeup_flags(stack_sent: bool, now_ns: u64) -> u64 {
    let threshold = WAKEUP_BYTES.load();
    if threshold == 0 {
        return 0;
    }
    let mut fill = fill_level(EVENTS.query(BPF_RB_AVAIL_DATA as u64), threshold);
    if stack_sent {
        fill = fill.max(crate::user_stack::ring_fill());
    }
    if fill == NEARLY_FULL || (fill == FILLING && wakeup_due(now_ns)) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Whether this CPU forced no wakeup in the last millisecond, and if so
/// takes the turn. Each forced wakeup raises an interrupt (on a virtual
/// machine, an exit to the hypervisor); on a split storm, with userspace
/// behind on unwinding stacks, every event past the threshold raised one:
/// 2.8% of the traced process's time. One a millisecond keeps it reading.
#[inline(always)]
fn wakeup_due(now_ns: u64) -> bool {
    let Some(last) = LAST_WAKEUP_NS.get_ptr_mut(0) else {
        return true;
    };
    unsafe {
        if now_ns.wrapping_sub(*last) < 1_000_000 {
            return false;
        }
        *last = now_ns;
    }
    true
}

#[inline(always)]
pub fn count_lost(slot: u32) {
    if let Some(counter) = LOST.get_ptr_mut(slot) {
        // Shared by every CPU.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1) };
    }
}
