//! The mapping syscalls: entry parks the arguments in the thread's slot,
//! exit completes the record (with the counts the lock probes read, or, in
//! the syscall count mode, those read here: see counts.rs) and sends it to
//! userspace, with the user stack when it is wanted.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use vmatrace_common::{
    Call, ENOMEM_RET, Event, EventKind, SYSCALL_TABLE_SIZE, UFFDIO_REGISTER, UFFDIO_UNREGISTER,
    capture_stacks, creates, lost, maps_a_file, stack_field, traced_args,
};

use crate::{
    changes, counts,
    globals::CAPTURE_STACKS,
    helpers::{OwnMm, count_lost, ctx_field, is_traced, wakeup_flags},
    maps::{
        EVENTS, INFLIGHT, Inflight, LOCK_HELD, LOCK_NOT_TAKEN, LOCK_RELEASED, SYSCALL_CALLS,
        thread_slot,
    },
};

/// raw_syscalls/sys_enter and sys_exit: `long id` at 8, then `args[6]`
/// (enter) or `long ret` (exit) at 16, on every kernel since 3.x.
const RAW_SYSCALL_ID_OFFSET: usize = 8;
const SYSCALL_ARGS_OFFSET: usize = 16;
const SYSCALL_RET_OFFSET: usize = 16;

/// raw_syscalls/sys_enter: every syscall of the system, so the untraced
/// ones must cost as little as possible: one array lookup.
#[tracepoint]
pub fn raw_sys_enter(ctx: TracePointContext) -> u32 {
    if let Some(call) = traced_call(&ctx) {
        on_enter::<false>(&ctx, call);
    }
    0
}

/// raw_syscalls/sys_exit.
#[tracepoint]
pub fn raw_sys_exit(ctx: TracePointContext) -> u32 {
    if let Some(call) = traced_call(&ctx) {
        on_exit::<false>(&ctx, call);
    }
    0
}

/// raw_syscalls/sys_enter in the syscall count mode (counts.rs), which the
/// loader attaches instead of `raw_sys_enter`: separate programs, so the
/// lock mode's run exactly the code they always did.
#[tracepoint]
pub fn raw_sys_enter_counted(ctx: TracePointContext) -> u32 {
    if let Some(call) = traced_call(&ctx) {
        on_enter::<true>(&ctx, call);
    }
    0
}

/// raw_syscalls/sys_exit in the syscall count mode.
#[tracepoint]
pub fn raw_sys_exit_counted(ctx: TracePointContext) -> u32 {
    if let Some(call) = traced_call(&ctx) {
        on_exit::<true>(&ctx, call);
    }
    0
}

/// The call a syscall tracepoint record is about, if it is one vmatrace
/// traces.
#[inline(always)]
fn traced_call(ctx: &TracePointContext) -> Option<Call> {
    let id = ctx_field::<i64>(ctx, RAW_SYSCALL_ID_OFFSET);
    if !(0..SYSCALL_TABLE_SIZE as i64).contains(&id) {
        return None;
    }
    let code = *SYSCALL_CALLS.get(id as u32)?;
    if code == 0 || code as usize > Call::ALL.len() {
        return None;
    }
    // SAFETY: Call is repr(u8) and code - 1 is one of its discriminants
    // (checked above). Not `Call::from_u8`: its table lookup is indexed
    // with a register the verifier cannot bound.
    Some(unsafe { core::mem::transmute::<u8, Call>(code - 1) })
}

/// Whether a call is traced only with some arguments (`traced_args`): its
/// exit cannot tell an entry left out from one the kernel skipped, so no
/// loss is counted for it.
#[inline(always)]
fn filtered_by_args(call: Call) -> bool {
    matches!(call, Call::Ioctl | Call::Prctl)
}

/// `COUNTED`: the syscall count mode (counts.rs), where this reads the
/// count before the call.
#[inline(always)]
fn on_enter<const COUNTED: bool>(ctx: &TracePointContext, call: Call) {
    if filtered_by_args(call)
        && !traced_args(
            call,
            ctx_field::<u64>(ctx, SYSCALL_ARGS_OFFSET),
            ctx_field::<u64>(ctx, SYSCALL_ARGS_OFFSET + 8),
        )
    {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // One lookup is all an untraced process pays.
    if !is_traced(tgid) {
        return;
    }
    let tid = pid_tgid as u32;
    let Some(slot) = thread_slot(tid) else {
        count_lost(lost::INFLIGHT_FULL);
        debug!(
            ctx,
            "tid {} call {}: no slot (INFLIGHT is full): lost", tid, call as u8
        );
        return;
    };
    let slot = unsafe { &mut *slot };
    if COUNTED {
        // Still counted in progress: a call whose exit was skipped.
        counts::abandon(slot);
    }
    if slot.active != 0 {
        // The thread's previous call never saw its exit: lost.
        count_lost(lost::EXIT_MISSED);
        debug!(
            ctx,
            "tid {} call {}: the exit of call {} was skipped: lost",
            tid,
            call as u8,
            slot.event.call
        );
    }
    let own_mm = OwnMm::current();
    slot.mm = own_mm.addr();
    slot.active = 1;
    slot.lock = LOCK_NOT_TAKEN;
    let event = &mut slot.event;
    event.kind = EventKind::Syscall as u8;
    event.call = call as u8;
    event.pid = tgid;
    event.tid = tid;
    // raw_syscalls/sys_enter always carries six arguments.
    let args = call.arg_count();
    let mut i = 0;
    while i < 6 {
        event.args[i] = if i < args {
            ctx_field::<u64>(ctx, SYSCALL_ARGS_OFFSET + 8 * i)
        } else {
            0
        };
        i += 1;
    }
    if call == Call::Ioctl {
        read_userfaultfd_range(&mut event.args);
    }
    event.locked = 0;
    event.enter_ns = unsafe { bpf_ktime_get_ns() };
    if COUNTED {
        slot.watched = u8::from(counts::lock_probes_on());
        if slot.watched != 0 {
            // The lock probes give this call's counts (`counted_exit`).
            slot.counted = 0;
            slot.alone = 0;
            slot.event.counted = vmatrace_common::count_mode::SYSCALL;
        } else {
            counts::enter(slot, tgid, own_mm);
            if slot.alone != 0 && slot.counted == 0 {
                // The address space's only user: nothing but this thread
                // changed the count since its previous call.
                changes::changed_between_calls(slot);
            }
        }
    }
}

/// userfaultfd's register and unregister commands take the range from a
/// struct in the caller's memory (`start`, `len` first): read at entry,
/// into `args[3]` and `args[4]`, which ioctl does not use.
#[inline(always)]
fn read_userfaultfd_range(args: &mut [u64; 6]) {
    // The command is an unsigned int: the register's low half.
    let command = args[1] & u64::from(u32::MAX);
    if command != UFFDIO_REGISTER && command != UFFDIO_UNREGISTER {
        return;
    }
    let range = args[2] as *const [u64; 2];
    if let Ok([start, len]) = unsafe { bpf_probe_read_user(range) } {
        args[3] = start;
        args[4] = len;
    }
}

/// `COUNTED`: the syscall count mode, where this reads the count after the
/// call and decides whether the difference is its own.
#[inline(always)]
fn on_exit<const COUNTED: bool>(ctx: &TracePointContext, call: Call) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // No slot: not traced, or the thread's first traced call began before
    // tracing did (the exit program is attached before the entry one, so
    // an entry seen always has its exit seen).
    let Some(slot) = INFLIGHT.get_ptr_mut(&tid) else {
        if COUNTED && !counts::lock_probes_on() && !filtered_by_args(call) {
            counts::unseen_call_ended((pid_tgid >> 32) as u32);
        }
        return;
    };
    let slot = unsafe { &mut *slot };
    if slot.active == 0 {
        if filtered_by_args(call) {
            return;
        }
        if COUNTED {
            counts::unseen_call_ended((pid_tgid >> 32) as u32);
        }
        count_lost(lost::ENTRY_MISSED);
        debug!(
            ctx,
            "tid {} call {}: the entry was skipped: lost", tid, call as u8
        );
        return;
    }
    slot.active = 0;
    if slot.event.call != call as u8 {
        // The open call's exit and this call's entry were both skipped
        // (or this call's entry was left out by its arguments).
        if COUNTED {
            counts::abandon(slot);
            counts::unseen_call_ended((pid_tgid >> 32) as u32);
        }
        count_lost(lost::EXIT_MISSED);
        if !filtered_by_args(call) {
            count_lost(lost::ENTRY_MISSED);
        }
        debug!(
            ctx,
            "tid {} exit of call {} while call {} was open: both lost",
            tid,
            call as u8,
            slot.event.call
        );
        return;
    }
    if slot.lock == LOCK_HELD {
        debug!(
            ctx,
            "tid {} call {}: exit with the write section open", tid, call as u8
        );
    }
    let exit_ns = unsafe { bpf_ktime_get_ns() };
    let own_mm = OwnMm::current_or(slot.mm);
    if COUNTED {
        counted_exit(slot, exit_ns, own_mm);
    } else if slot.lock != LOCK_RELEASED {
        // The call never held the write lock (or still does, which no traced
        // call does at exit): it changed nothing, the exit count stands for
        // both.
        let count = own_mm.map_count();
        slot.event.vmas_before = count;
        slot.event.vmas_after = count;
        slot.event.count_ns = exit_ns;
        slot.event.locked = 0;
    }
    let ret = ctx_field::<i64>(ctx, SYSCALL_RET_OFFSET);
    if COUNTED {
        slot.last_count = slot.event.vmas_after;
        slot.last_mm = slot.mm;
        slot.last_ns = exit_ns;
    }
    if call.is_watched() && ret != ENOMEM_RET && slot.event.vmas_before == slot.event.vmas_after {
        // Changed nothing: not worth an event.
        return;
    }
    if !crate::proc_stats::record::<COUNTED>(&slot.event, slot.mm, ret, exit_ns) {
        return;
    }
    let stack = user_stack_if_wanted::<COUNTED>(ctx, slot, ret, exit_ns, own_mm);
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            let record = entry.as_mut_ptr();
            copy_event(record, &slot.event);
            // Initialized now.
            let event = unsafe { &mut *record };
            event.exit_ns = exit_ns;
            event.ret = ret;
            event.stack = stack;
            event.comm = crate::helpers::own_comm();
            // A mapped file is named from /proc by userspace: wake it
            // while the process still has the file mapped. Stacks,
            // whose records are large, are sent without a wakeup of
            // their own: the event after one wakes userspace when their
            // ring fills up.
            let flags = if maps_a_file(slot.event.call, &slot.event.args, ret) {
                BPF_RB_FORCE_WAKEUP as u64
            } else {
                wakeup_flags(stack_field::sent(stack), exit_ns)
            };
            entry.submit(flags);
            if stack_field::sent(stack) && stack_field::site(stack) != 0 {
                crate::user_stack::site_sent(slot.event.pid, stack_field::site(stack), exit_ns);
            }
        }
        None => {
            count_lost(lost::RINGBUF_FULL);
            debug!(
                ctx,
                "tid {} call {}: ring buffer full: lost", tid, call as u8
            );
        }
    }
}

/// Copies the event into its ring buffer record a word at a time. A plain
/// `write` of the struct became a call to a byte-wise memmove whose
/// 120-round loop the verifier walked once for every path that reached it:
/// 16,000 of the 21,000 instructions it processed in this program.
#[inline(always)]
fn copy_event(to: *mut Event, from: &Event) {
    const WORDS: usize = core::mem::size_of::<Event>() / 8;
    const _: () = assert!(core::mem::size_of::<Event>() % 8 == 0);
    let to = to as *mut u64;
    let from = from as *const Event as *const u64;
    let mut word = 0;
    while word < WORDS {
        // Volatile: LLVM would turn the loop back into the memmove call.
        unsafe {
            core::ptr::write_volatile(to.add(word), core::ptr::read_volatile(from.add(word)))
        };
        word += 1;
    }
}

/// The syscall count mode's exit, where the lock probes may have seen the
/// call too (attached on demand, `LOCK_PROBES_ON_DEMAND`): a write section
/// seen whole gives the exact counts, and so does a call that began with
/// the probes attached and never took the write lock (it changed nothing).
/// A call that began before them keeps its counts from syscall entry and
/// exit otherwise (exact only if no call overlapped it, see counts.rs).
#[inline(always)]
fn counted_exit(slot: &mut Inflight, exit_ns: u64, own_mm: OwnMm) {
    let section = (slot.lock == LOCK_RELEASED).then_some((
        slot.event.vmas_before,
        slot.event.vmas_after,
        slot.event.count_ns,
    ));
    counts::exit(slot, exit_ns, own_mm);
    let event = &mut slot.event;
    if let Some((before, after, count_ns)) = section {
        event.vmas_before = before;
        event.vmas_after = after;
        event.count_ns = count_ns;
    } else if slot.watched != 0 {
        event.vmas_before = event.vmas_after;
    } else {
        return;
    }
    event.locked = 1;
    event.counted = vmatrace_common::count_mode::LOCK;
}

/// The event's `stack` field (`stack_field`): whether this call's user
/// stack was sent, and its site. Wanted for every call with `--stacks`,
/// else for those that split a mapping, failed with ENOMEM, or took the
/// count across the NEAR-LIMIT threshold (the tests userspace applies, so
/// a flagged event has its stack; a SPLIT only on an exact count, as
/// userspace judges it). When stacks are sent by site, a call whose site
/// sent one lately sends only its site.
#[inline(always)]
fn user_stack_if_wanted<const COUNTED: bool>(
    ctx: &TracePointContext,
    slot: &mut Inflight,
    ret: i64,
    now_ns: u64,
    own_mm: OwnMm,
) -> u32 {
    let event = &slot.event;
    let mode = CAPTURE_STACKS.load();
    let warn_at = crate::maps::limit(vmatrace_common::limits::WARN_AT);
    let (before, after) = (event.vmas_before as i64, event.vmas_after as i64);
    let wanted = mode == capture_stacks::ALL
        || (mode == capture_stacks::FLAGGED
            && (ret == ENOMEM_RET
                || (event.locked != 0
                    && (event.vmas_after as i64 - event.vmas_before as i64)
                        > creates(event.call, &event.args))
                || ((event.locked != 0 || COUNTED) && before < warn_at && after >= warn_at)));
    if !wanted {
        return 0;
    }
    let tops = crate::user_stack::StackTops::of_current(own_mm);
    // The address space as a number (from the slot): the verifier allows
    // no arithmetic on the BTF pointer.
    let site = crate::user_stack::site_of(slot.mm, tops);
    if site != 0 && crate::user_stack::site_sent_lately(slot.event.pid, site, now_ns) {
        return site;
    }
    // The site waits in the slot, not in a register, while the stack is
    // sent: the verifier then meets the copy's code in one state whatever
    // the site was, and walks it once (with the site in a register it
    // walked it for each outcome of `site_of`: 22 ms more to load).
    unsafe { core::ptr::write_volatile(&raw mut slot.site, site) };
    if crate::user_stack::send_for(ctx, &slot.event, tops) {
        stack_field::SENT | unsafe { core::ptr::read_volatile(&raw const slot.site) }
    } else {
        count_lost(lost::STACK_UNAVAILABLE);
        debug!(
            ctx,
            "pid {}: no user stack (no room, or unreadable)", event.pid
        );
        0
    }
}
