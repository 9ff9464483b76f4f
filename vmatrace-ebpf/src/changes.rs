//! Changes of a traced process's count that no traced call of the thread
//! making them accounts for: whatever the kernel does to an address space,
//! the count shown stays `mm->map_count`, and the change is an event of its
//! own (`EventKind::Change`).
//!
//! - With the lock probes: the count can only change while a task holds
//!   the address space's mmap write lock, and the probes see every write
//!   section on the host. A section on a traced process's address space
//!   that is not a traced call's own (a syscall vmatrace does not decode,
//!   the uprobes page mapped on a breakpoint, a vfork child or another
//!   process sharing or changing the address space) is measured the same
//!   way, under the lock, and sent with the syscall the task was in and
//!   its arguments, read from its registers. Which calls can change the
//!   count is the kernel's business: a future kernel's new call is seen
//!   the same way.
//! - Counted at syscall entry and exit, for a single-threaded process (the
//!   address space's only user): the count at a call's entry differs from
//!   the count after the thread's previous call. The change happened in
//!   between, in no traced call; it is sent then (`changed_between_calls`),
//!   its syscall unknown.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
};
use vmatrace_common::{
    Event, EventKind, SYSCALL_EXEC, SYSCALL_FORK, SYSCALL_TABLE_SIZE, change_nr, count_mode, lost,
};

use crate::{
    globals::{
        MM_OWNER_OFFSET, PT_REGS_ARG_OFFSETS, PT_REGS_NR_BYTES, PT_REGS_NR_OFFSET, SYSCALL_REGS,
        TASK_FLAGS_OFFSET, TASK_TGID_OFFSET,
    },
    helpers::{count_lost, current_mm, is_traced, map_count},
    maps::{EVENTS, INFLIGHT, Inflight, SYSCALL_CALLS, thread_slot},
};

/// The mmap write lock of `mm` was taken by the current thread outside a
/// traced call of its own: if the address space is a traced process's,
/// the count is read now, and again when the lock is let go.
#[inline(always)]
pub fn write_lock_taken(tid: u32, mm: u64) {
    let current = current_mm() as u64;
    // A task without an address space is tearing one down (an exiting
    // process: exit_mmap changes no count) or a kernel thread.
    if current == 0 {
        return;
    }
    let own = current == mm;
    let Some(owner) = traced_owner_of(mm, own) else {
        return;
    };
    // A new address space is told by the exec and fork events.
    if builds_a_new_space(own) {
        return;
    }
    let Some(slot) = thread_slot(tid) else {
        count_lost(lost::INFLIGHT_FULL);
        return;
    };
    let slot = unsafe { &mut *slot };
    // Nested write sections (fork locks the parent's and the child's):
    // the first one is measured. One on the same address space cannot be
    // nested: the end of the last was missed.
    if slot.change_mm != 0 && slot.change_mm != mm {
        return;
    }
    slot.change_mm = mm;
    slot.change_owner = owner;
    slot.change_before = map_count(mm as *const u8);
    slot.change_ns = unsafe { bpf_ktime_get_ns() };
}

/// The thread let go of (or downgraded) the write lock of `mm`: a change
/// of the count while it held it is sent.
#[inline(always)]
pub fn write_lock_released(slot: &mut Inflight, mm: u64) {
    if slot.change_mm != mm || mm == 0 {
        return;
    }
    slot.change_mm = 0;
    let after = map_count(mm as *const u8);
    if after != slot.change_before {
        send(&Change {
            owner: slot.change_owner,
            mm,
            before: slot.change_before,
            after,
            since_ns: slot.change_ns,
            counted: count_mode::LOCK,
        });
    }
    // Another process's thread (a foreign changer): its slot goes with it.
    let pid_tgid = bpf_get_current_pid_tgid();
    if slot.active == 0 && !is_traced((pid_tgid >> 32) as u32) {
        let _ = INFLIGHT.remove(&(pid_tgid as u32));
    }
}

/// Syscall count mode, at a call's entry in a single-threaded process:
/// the count read at entry (`slot.event.vmas_before`) against the one after
/// the thread's previous call. Userspace takes the change from the newest
/// count it knows (a thread that came and went in between had its calls
/// told).
#[inline(always)]
pub fn changed_between_calls(slot: &Inflight) {
    let now = slot.event.vmas_before;
    if slot.last_mm != slot.mm || slot.last_count < 0 || now < 0 || now == slot.last_count {
        return;
    }
    send(&Change {
        owner: slot.event.pid,
        mm: slot.mm,
        before: slot.last_count,
        after: now,
        since_ns: slot.last_ns,
        counted: count_mode::SYSCALL,
    });
}

/// A change of a process's count, measured.
struct Change {
    owner: u32,
    mm: u64,
    before: i32,
    after: i32,
    /// Since when: the lock was taken, or the previous call ended.
    since_ns: u64,
    /// `count_mode::LOCK`: measured under the write lock, by the task
    /// sending it (its syscall is read from its registers); `SYSCALL`:
    /// found between two calls.
    counted: u8,
}

/// Sends a change event (written in place: a program's stack has no room
/// for another), or counts it in its process's counters (serve).
#[inline(always)]
fn send(change: &Change) {
    let now = unsafe { bpf_ktime_get_ns() };
    if !crate::proc_stats::record_change(change.owner, change.mm, change.before, change.after, now)
    {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let event = entry.as_mut_ptr();
    unsafe {
        (*event).kind = EventKind::Change as u8;
        // Made by another process's task (sharing the address space).
        (*event).call = u8::from((pid_tgid >> 32) as u32 != change.owner);
        (*event).pid = change.owner;
        (*event).tid = pid_tgid as u32;
        (*event).enter_ns = change.since_ns;
        (*event).exit_ns = now;
        (*event).count_ns = now;
        (*event).vmas_before = change.before;
        (*event).vmas_after = change.after;
        (*event).counted = change.counted;
        (*event).locked = u8::from(change.counted == count_mode::LOCK);
        (*event).stack = 0;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*event).args = [0; 6];
        (*event).ret = change_nr::UNKNOWN;
        if change.counted == count_mode::LOCK {
            syscall_of_current(&mut *event);
        }
    }
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
}

/// The traced process an address space belongs to, if it is one's: the
/// current thread's when it is its own, else its owner's (`mm->owner`,
/// CONFIG_MEMCG): another process sharing it (a vfork child, a
/// clone(CLONE_VM) sibling) or changing it from outside (a userfaultfd
/// monitor) changes the owner's count.
#[inline(always)]
fn traced_owner_of(mm: u64, own: bool) -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if own && is_traced(tgid) {
        return Some(tgid);
    }
    let (owner_offset, tgid_offset) = (MM_OWNER_OFFSET.load(), TASK_TGID_OFFSET.load());
    if mm == 0 || owner_offset == 0 || tgid_offset == 0 {
        return None;
    }
    let owner_field = (mm as *const u8).wrapping_add(owner_offset as usize) as *const *const u8;
    let owner = unsafe { bpf_probe_read_kernel(owner_field) }.ok()?;
    if owner.is_null() {
        return None;
    }
    let tgid_field = owner.wrapping_add(tgid_offset as usize) as *const i32;
    let owner = unsafe { bpf_probe_read_kernel(tgid_field) }.ok()?;
    (owner > 0 && is_traced(owner as u32)).then_some(owner as u32)
}

/// The user registers of the current thread, if they can be read.
#[inline(always)]
fn current_regs() -> Option<*const u8> {
    if SYSCALL_REGS.load() == 0 {
        return None;
    }
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    (!regs.is_null()).then_some(regs)
}

/// The number of the syscall the current thread is in, or `change_nr`'s
/// `OUTSIDE` / `UNKNOWN`.
#[inline(always)]
fn current_syscall(regs: Option<*const u8>) -> i64 {
    let Some(regs) = regs else {
        return change_nr::UNKNOWN;
    };
    // A kernel thread's or an io_uring worker's registers are zeroed at
    // its start: no syscall of its own (and 0 is read's number).
    if current_flags() & (PF_KTHREAD | PF_IO_WORKER) != 0 {
        return change_nr::OUTSIDE;
    }
    let field = regs.wrapping_add(PT_REGS_NR_OFFSET.load() as usize) as *const i64;
    let nr = unsafe { bpf_probe_read_kernel(field) }.map(|nr| {
        // Only its low half (little-endian): the high half is padding.
        if PT_REGS_NR_BYTES.load() == 4 {
            i64::from(nr as i32)
        } else {
            nr
        }
    });
    match nr {
        Ok(nr) if (0..SYSCALL_TABLE_SIZE as i64).contains(&nr) => nr,
        Ok(_) => change_nr::OUTSIDE,
        Err(_) => change_nr::UNKNOWN,
    }
}

const PF_IO_WORKER: u32 = 0x0000_0010;
const PF_KTHREAD: u32 = 0x0020_0000;

/// `current->flags`; 0 if unreadable.
#[inline(always)]
fn current_flags() -> u32 {
    let offset = TASK_FLAGS_OFFSET.load();
    if offset == 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let field = task.wrapping_add(offset as usize) as *const u32;
    unsafe { bpf_probe_read_kernel(field) }.unwrap_or(0)
}

/// Whether the current thread is in a syscall that builds a new address
/// space (exec; fork for the child's copy, which is not `own`).
#[inline(always)]
fn builds_a_new_space(own: bool) -> bool {
    let nr = current_syscall(current_regs());
    if nr < 0 {
        return false;
    }
    // fork's own address space may change too (a new thread's shadow
    // stack is mapped there).
    match SYSCALL_CALLS.get(nr as u32).copied().unwrap_or(0) {
        SYSCALL_EXEC => true,
        SYSCALL_FORK => !own,
        _ => false,
    }
}

/// The syscall the current thread is in and its arguments, into a change
/// event.
#[inline(always)]
fn syscall_of_current(event: &mut Event) {
    let regs = current_regs();
    event.ret = current_syscall(regs);
    let Some(regs) = regs else {
        return;
    };
    if event.ret < 0 {
        return;
    }
    let offsets = PT_REGS_ARG_OFFSETS.load();
    let mut i = 0;
    while i < 6 {
        let field = regs.wrapping_add(offsets[i] as usize) as *const u64;
        event.args[i] = unsafe { bpf_probe_read_kernel(field) }.unwrap_or(0);
        i += 1;
    }
}
