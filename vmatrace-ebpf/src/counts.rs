//! The syscall count mode, for kernels without the mmap_lock tracepoints
//! (Linux 5.10 and older) or where they cannot be attached: a call's counts
//! are read at its syscall entry and exit, so their difference is its own
//! effect only if no other thread of the process changed the count in
//! between. The programs keep, per process, how many traced calls began
//! (`entries`) and ended (`exits`), and a call is exact (`locked` 1) when
//!
//! 1. right after its entry was counted, `entries - exits` was 1: every
//!    other call that had begun had ended, and
//! 2. at exit, after its last count was read, `entries` is still the value
//!    it read at entry: no call began meanwhile.
//!
//! Why that suffices: the changes of another call B fall between B's entry
//! add and B's exit add, and this call's readings between its entry add and
//! its exit read. If B's entry add came before ours, B had either ended
//! before our first reading (then it changed nothing in our window) or is
//! counted in progress by (1); if after ours but before our exit read,
//! (2) sees `entries` move; if later, B changed nothing in our window.
//! This needs the two reads of (1) in order (`entries`, then `exits`) and
//! the atomic adds as barriers, which x86-64 gives (a locked add orders
//! every access; loads are not reordered with loads). Other architectures
//! are not verified.
//!
//! arm64 does not give it yet (issue 23). Its BPF JIT
//! (arch/arm64/net/bpf_jit_comp.c) turns the add whose result is unused
//! (BPF_ADD, what `add` emits) into `stadd`, or an `ldxr`/`stxr` loop
//! without LSE: no ordering at all; only the fetching add (BPF_ADD |
//! BPF_FETCH) is fully ordered (`ldaddal`, or `ldxr`/`stlxr` and a
//! `dmb ish`). Without it, another call's `exits` add can be seen before
//! its changes of the count (they come before the mmap lock's release,
//! which orders nothing after it), and this call's reads can pass its own
//! `entries` add. The fix is to read `entries` with a fetching add of 0
//! at entry (after the add) and at exit (before the `exits` add), but the
//! fetching add cannot simply go into this object, the same on every
//! kernel: LLVM refuses a used atomic result for BPF cpu v1 (what the
//! object is built for), and Linux 5.10's verifier rejects any BPF_STX
//! with a nonzero `imm` in a first pass over every instruction, reachable
//! or not ("BPF_STX uses reserved fields"), so a read-only global cannot
//! hide it. What remains: emit it (inline asm, or cpu v3) and have the
//! x86-64 loader rewrite each fetching add of 0 into the plain load it
//! stands for (same registers and offset), which keeps x86-64 as it is.
//!
//! The calls that change the count only now and then (mbind, io_setup,
//! userfaultfd's ioctls, ...: `Call::is_watched`) are traced calls too, so
//! the calls they overlap are inexact.
//!
//! What it cannot tell apart: the count changed meanwhile by anything else:
//! a syscall vmatrace does not trace (the close of a userfaultfd), another
//! process sharing the address space (clone(CLONE_VM) without
//! CLONE_THREAD, a vfork child), another process changing it from outside
//! (a userfaultfd handed to a monitor), the kernel's own mappings (the
//! uprobes page); nor, right after `-p`, a call that was already in
//! progress when tracing began and ends after ours. Page faults never
//! change the count. For a single-threaded process such a change is found
//! at its next call's entry and reported on its own (changes.rs).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use vmatrace_common::count_mode;

use crate::{
    helpers::OwnMm,
    maps::{CallCounts, Inflight, PROCESSES},
};

/// Whether the lock probes are attached (`limits::LOCK_PROBES`, see
/// `LOCK_PROBES_ON_DEMAND`): then a call that begins takes its counts from
/// them and is not counted here, which spares the threads of a server
/// the bookkeeping. A call that began before and ends after cannot tell
/// from these counts whether such a call overlapped it (`exit`).
#[inline(always)]
pub fn lock_probes_on() -> bool {
    crate::maps::limit(vmatrace_common::limits::LOCK_PROBES) != 0
}

/// At syscall entry (`slot` is the thread's, freshly set up for the call):
/// counts the call in progress and reads the count before it. The address
/// space's only user needs no counting: nothing else can change the count
/// until its call ends, and no thread of the process can begin a call
/// meanwhile (it would have to be started by this one), so a call counted
/// later never overlaps this one.
#[inline(always)]
pub fn enter(slot: &mut Inflight, tgid: u32, own_mm: OwnMm) {
    slot.counted = 0;
    slot.alone = 0;
    if own_mm.sole_user() {
        slot.alone = 1;
    } else if let Some(counts) = process_counts(tgid) {
        let counts = counts as *const CallCounts;
        unsafe {
            add(&raw const (*counts).entries);
            // In this order: see the module doc.
            let entries = core::ptr::read_volatile(&raw const (*counts).entries);
            let exits = core::ptr::read_volatile(&raw const (*counts).exits);
            slot.entries_seen = entries;
            slot.alone = u8::from(entries.wrapping_sub(exits) == 1);
            slot.made_ns = (*counts).made_ns;
        }
        slot.counted = 1;
    }
    slot.event.vmas_before = own_mm.map_count();
    slot.event.counted = count_mode::SYSCALL;
}

/// At syscall exit: reads the count after the call, decides whether the
/// difference is the call's own and counts the call as ended.
#[inline(always)]
pub fn exit(slot: &mut Inflight, now_ns: u64, own_mm: OwnMm) {
    slot.event.vmas_after = own_mm.map_count();
    slot.event.count_ns = now_ns;
    // Uncounted and alone: the address space's only user at entry.
    let mut exact = slot.counted == 0 && slot.alone != 0;
    if slot.counted != 0 {
        if let Some(counts) = counts_of(slot.event.pid, slot.made_ns) {
            unsafe {
                let entries = core::ptr::read_volatile(&raw const (*counts).entries);
                exact = slot.alone != 0 && entries == slot.entries_seen && !lock_probes_on();
                add(&raw const (*counts).exits);
            }
        }
        slot.counted = 0;
    }
    slot.event.locked = u8::from(exact);
}

/// Counts the thread's call in progress, if any, as ended: a call whose
/// exit will never be seen (its exit program was skipped, or its thread is gone), so
/// the process's later calls are not all held inexact.
#[inline(always)]
pub fn abandon(slot: &mut Inflight) {
    if slot.counted == 0 {
        return;
    }
    if let Some(counts) = counts_of(slot.event.pid, slot.made_ns) {
        unsafe { add(&raw const (*counts).exits) };
    }
    slot.counted = 0;
}

/// A traced call whose entry was not seen ended (it began before tracing
/// did, or its entry program was skipped): every call of the process in
/// progress is made inexact, as if one had begun.
#[inline(always)]
pub fn unseen_call_ended(tgid: u32) {
    if let Some(counts) = PROCESSES.get_ptr_mut(&tgid) {
        let counts = counts as *const CallCounts;
        unsafe {
            add(&raw const (*counts).entries);
            add(&raw const (*counts).exits);
        }
    }
}

/// The process is gone: its entry goes.
#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = PROCESSES.remove(&tgid);
}

/// The process's counts, made on its first traced call. Never replaced:
/// the insert only makes an entry that does not exist, so threads racing to
/// make it share the one that won.
#[inline(always)]
fn process_counts(tgid: u32) -> Option<*mut CallCounts> {
    if let Some(counts) = PROCESSES.get_ptr_mut(&tgid) {
        return Some(counts);
    }
    let fresh = CallCounts {
        entries: 0,
        exits: 0,
        made_ns: unsafe { bpf_ktime_get_ns() },
    };
    let _ = PROCESSES.insert(&tgid, &fresh, BPF_NOEXIST as u64);
    PROCESSES.get_ptr_mut(&tgid)
}

/// The process's counts if they are the ones a call was counted in.
#[inline(always)]
fn counts_of(tgid: u32, made_ns: u64) -> Option<*mut CallCounts> {
    let counts = PROCESSES.get_ptr_mut(&tgid)?;
    (unsafe { (*counts).made_ns } == made_ns).then_some(counts)
}

/// An atomic add of 1 whose result is unused: BPF_XADD, which every kernel
/// with BPF takes (an add that returns the old value needs Linux 5.12).
/// The intrinsic, since the BPF target has no compare-and-swap and so no
/// `AtomicU64::fetch_add`.
#[inline(always)]
unsafe fn add(counter: *const u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter as *mut u64, 1) };
}
