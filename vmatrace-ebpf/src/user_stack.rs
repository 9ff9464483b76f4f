//! The user stack of a call that gets one: the kernel's frame-pointer walk
//! and, when copies are on, the user registers and the top of the user
//! stack: the return address at the stack pointer names the caller of a
//! syscall stub (which sets up no frame, so the frame-pointer walk skips
//! it), and the bytes let userspace unwind code built without frame
//! pointers with its call-frame information.
//!
//! Only the calls that get a stack pay for this; the record goes through a
//! ring buffer of its own, so a burst of stacks never costs an event, and
//! userspace never has to read a map for it (see `UserStack`).

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_F_USER_STACK, BPF_RB_AVAIL_DATA, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_task, bpf_get_current_task_btf, bpf_get_stack, bpf_probe_read_user,
            bpf_task_pt_regs,
        },
    },
    macros::map,
    maps::{LruHashMap, RingBuf},
};
use vmatrace_common::{
    Event, USER_STACK_COPY_MAX, USER_STACK_COPY_SMALL, USER_STACK_FRAMES_MAX, UserStack,
    UserStackCopy, stack_field,
};

use crate::helpers::OwnMm;

/// Stacks for userspace, each sent just before its event. The loader
/// sizes it.
#[map]
pub static USER_STACK_COPIES: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// How many bytes of user stack to copy from the stack pointer up (at
/// most `USER_STACK_COPY_MAX`); 0: no copies at all.
#[unsafe(no_mangle)]
pub static USER_STACK_BYTES: Global<u32> = Global::new(0);
/// Where the user thread pointer is in `task_struct`, from BTF:
/// `thread.fsbase` on x86-64, `thread.uw.tp_value` on arm64 (0: unknown).
#[unsafe(no_mangle)]
pub static TASK_FSBASE_OFFSET: Global<u64> = Global::new(0);
/// `offsetof(struct mm_struct, start_stack)`, from BTF.
#[unsafe(no_mangle)]
pub static MM_START_STACK_OFFSET: Global<u64> = Global::new(0);
/// Offsets of the instruction, stack and frame pointers in `struct
/// pt_regs`, from BTF.
#[unsafe(no_mangle)]
pub static PT_REGS_IP_OFFSET: Global<u64> = Global::new(128);
#[unsafe(no_mangle)]
pub static PT_REGS_SP_OFFSET: Global<u64> = Global::new(152);
#[unsafe(no_mangle)]
pub static PT_REGS_BP_OFFSET: Global<u64> = Global::new(32);
/// The link register's offset (arm64's `regs[30]`), where a syscall
/// stub's caller is; 0 where it is at the stack pointer (x86-64).
#[unsafe(no_mangle)]
pub static PT_REGS_LR_OFFSET: Global<u64> = Global::new(0);

/// Bytes waiting in `USER_STACK_COPIES` past which the event after a
/// stack wakes userspace (a quarter of the ring; 0: never).
#[unsafe(no_mangle)]
pub static STACK_WAKEUP_BYTES: Global<u64> = Global::new(0);

/// Stacks by site: a call site sends its stack again once the one it sent
/// last is this old (ns), and the calls in between send only their site
/// (userspace gives them the site's stack: every call is still counted
/// against it). 0: every call that wants a stack sends its own. Needs the
/// stack copies' registers (`USER_STACK_BYTES`), the loader sets it only
/// with them.
#[unsafe(no_mangle)]
pub static STACK_SITE_NS: Global<u64> = Global::new(0);

/// When each site last sent its stack, by `tgid << 32 | site`.
#[map]
pub static STACK_SITES: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// The site of the calling thread's call, when stacks are sent by site (0
/// otherwise, or when the registers cannot be read): where the syscall
/// stub returns to (the link register where there is one, arm64; else the
/// word at the stack pointer, as the copies read it),
/// the stub itself (the instruction pointer), how deep the stack is (from
/// its top, as `copy_stack` finds it, so the same path has the same depth
/// in every thread; the stack pointer itself where the top is not known)
/// and the address space (a new program after exec has sites of its own).
/// Two callers of the same function may well reach it at the same depth
/// (measured on MariaDB: 12% of shared calls named another caller), which
/// is why sites are opt-in (`--site-stacks`); two that share all four
/// share a stack (the docs say so).
/// Costs a few reads where a stack costs a copy of kilobytes, a walk that
/// may fault, and userspace's unwinding.
#[inline(always)]
pub fn site_of(mm: u64, tops: StackTops) -> u32 {
    if STACK_SITE_NS.load() == 0 || USER_STACK_BYTES.load() == 0 {
        return 0;
    }
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    if regs.is_null() {
        return 0;
    }
    // A BTF pointer: plain loads, no helper calls.
    let read_reg = |offset: u64| -> u64 {
        unsafe { core::ptr::read_volatile(regs.wrapping_add(offset as usize) as *const u64) }
    };
    let sp = read_reg(PT_REGS_SP_OFFSET.load());
    if sp == 0 {
        return 0;
    }
    let ip = read_reg(PT_REGS_IP_OFFSET.load());
    let lr_offset = PT_REGS_LR_OFFSET.load();
    let mut returns_to = 0u64;
    if lr_offset != 0 {
        returns_to = read_reg(lr_offset);
    } else {
        unsafe {
            bpf_probe_read_user(
                &raw mut returns_to as *mut _,
                8,
                sp as *const core::ffi::c_void,
            )
        };
    }
    let top = tops.of(sp);
    let depth = if top > sp && top - sp < 8 << 20 {
        top - sp
    } else {
        sp
    };
    let mut hash = mix(mm ^ 0x9e37_79b9_7f4a_7c15);
    hash = mix(hash ^ ip);
    hash = mix(hash ^ returns_to);
    hash = mix(hash ^ depth);
    stack_field::site_of_hash(hash)
}

/// One round of a 64-bit finalizer (splitmix64's).
#[inline(always)]
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether `site` of process `tgid` sent its stack less than
/// `STACK_SITE_NS` before `now_ns`.
#[inline(always)]
pub fn site_sent_lately(tgid: u32, site: u32, now_ns: u64) -> bool {
    let key = (u64::from(tgid) << 32) | u64::from(site);
    match unsafe { STACK_SITES.get(&key) } {
        Some(&sent_ns) => now_ns.wrapping_sub(sent_ns) < STACK_SITE_NS.load(),
        None => false,
    }
}

/// Notes that `site` sent its stack: called once its event is in the ring
/// buffer, so a call that finds it and sends only its site is read after
/// the event that carries the stack.
#[inline(always)]
pub fn site_sent(tgid: u32, site: u32, now_ns: u64) {
    let key = (u64::from(tgid) << 32) | u64::from(site);
    let _ = STACK_SITES.insert(&key, &now_ns, 0);
}

/// How full the stack ring buffer is (`helpers::fill_level`).
#[inline(always)]
pub fn ring_fill() -> u8 {
    crate::helpers::fill_level(
        USER_STACK_COPIES.query(BPF_RB_AVAIL_DATA as u64),
        STACK_WAKEUP_BYTES.load(),
    )
}

/// Sends the calling thread's user stack for `event`: false if there was
/// no room for it or no frame could be walked.
#[inline(always)]
pub fn send_for<C: EbpfContext>(ctx: &C, event: &Event, tops: StackTops) -> bool {
    let wanted = USER_STACK_BYTES.load() as usize;
    if wanted != 0 {
        let sent = if wanted <= USER_STACK_COPY_SMALL {
            send_copy::<C, USER_STACK_COPY_SMALL>(ctx, event, tops)
        } else {
            send_copy::<C, USER_STACK_COPY_MAX>(ctx, event, tops)
        };
        if let Some(sent) = sent {
            return sent;
        }
        // No room for a copy: the frame-pointer walk alone may still fit.
    }
    let Some(mut entry) = USER_STACK_COPIES.reserve::<UserStack>(0) else {
        return false;
    };
    let stack = entry.as_mut_ptr();
    unsafe { set_owner(stack, event) };
    if unsafe { !walk_frames(ctx, stack) } {
        entry.discard(BPF_RB_NO_WAKEUP as u64);
        return false;
    }
    unsafe {
        (*stack).ip = 0;
        (*stack).sp = 0;
        (*stack).bp = 0;
        (*stack).lr = 0;
        (*stack).len = 0;
    }
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    true
}

/// A copy of `N` bytes at most: None if the ring buffer had no room.
#[inline(always)]
fn send_copy<C: EbpfContext, const N: usize>(
    ctx: &C,
    event: &Event,
    tops: StackTops,
) -> Option<bool> {
    let mut entry = USER_STACK_COPIES.reserve::<UserStackCopy<N>>(0)?;
    let copy = entry.as_mut_ptr();
    let sent = unsafe {
        let stack = &raw mut (*copy).stack;
        set_owner(stack, event);
        let copied = copy_registers_and_stack(copy, tops);
        let walked = if !copied || chain_leaves_the_copy(copy) {
            walk_frames(ctx, stack)
        } else {
            (*stack).frames_len = 0;
            false
        };
        walked || copied
    };
    if sent {
        entry.submit(BPF_RB_NO_WAKEUP as u64);
    } else {
        entry.discard(BPF_RB_NO_WAKEUP as u64);
    }
    Some(sent)
}

/// Who the stack is for.
#[inline(always)]
unsafe fn set_owner(stack: *mut UserStack, event: &Event) {
    unsafe {
        (*stack).pid = event.pid;
        (*stack).tid = event.tid;
        (*stack).enter_ns = event.enter_ns;
    }
}

/// Whether the frame-pointer chain from the copy's `bp` goes on past the
/// copied bytes, where only the kernel's walk can follow it. Otherwise the
/// walk is skipped: it ends with a fault on the first word that is no
/// frame (code built without frame pointers uses rbp like any register),
/// which costs more than the rest of the record, and userspace finds in
/// the copy whatever frames it would have found.
#[inline(always)]
unsafe fn chain_leaves_the_copy<const N: usize>(copy: *const UserStackCopy<N>) -> bool {
    /// Frames followed in the copy at most; a longer chain is walked.
    const LINKS: usize = 32;
    let (sp, len) = unsafe { ((*copy).stack.sp, (*copy).stack.len as u64) };
    let end = sp + len;
    let beyond = |fp: u64| fp >= end && fp - sp < 8 << 20;
    let mut fp = unsafe { (*copy).stack.bp };
    let mut link = 0;
    while link < LINKS {
        link += 1;
        if fp < sp || fp + 16 > end {
            return beyond(fp);
        }
        let at = (fp - sp) as usize;
        // A frame pointer is 16-byte aligned and the stack pointer at a
        // syscall 8-byte aligned: anything else is no frame. One load,
        // where an unaligned read took eight and their shifts.
        if at > N - 16 || at % 8 != 0 {
            return false;
        }
        let next =
            unsafe { core::ptr::read_volatile((*copy).bytes.as_ptr().add(at) as *const u64) };
        // The outermost frame, or no chain at all.
        if next <= fp {
            return false;
        }
        fp = next;
    }
    true
}

/// The kernel's frame-pointer walk of the user stack into `stack`: false
/// if not a frame was found.
#[inline(always)]
unsafe fn walk_frames<C: EbpfContext>(ctx: &C, stack: *mut UserStack) -> bool {
    unsafe {
        let written = bpf_get_stack(
            ctx.as_ptr(),
            (*stack).frames.as_mut_ptr() as *mut _,
            (USER_STACK_FRAMES_MAX * 8) as u32,
            BPF_F_USER_STACK as u64,
        );
        (*stack).frames_len = if written > 0 { written as u32 } else { 0 };
        written > 0
    }
}

/// The user registers and the top of the user stack into `copy`: false if
/// the registers could not be read.
#[inline(always)]
unsafe fn copy_registers_and_stack<const N: usize>(
    copy: *mut UserStackCopy<N>,
    tops: StackTops,
) -> bool {
    let wanted = USER_STACK_BYTES.load() as usize;
    unsafe {
        (*copy).stack.ip = 0;
        (*copy).stack.sp = 0;
        (*copy).stack.bp = 0;
        (*copy).stack.lr = 0;
        (*copy).stack.len = 0;
    }
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    if regs.is_null() {
        return false;
    }
    // A BTF pointer: plain loads, no helper calls (as in `site_of`).
    let read_reg = |offset: u64| -> u64 {
        unsafe { core::ptr::read_volatile(regs.wrapping_add(offset as usize) as *const u64) }
    };
    let sp = read_reg(PT_REGS_SP_OFFSET.load());
    if sp == 0 {
        return false;
    }
    unsafe {
        (*copy).stack.ip = read_reg(PT_REGS_IP_OFFSET.load());
        (*copy).stack.sp = sp;
        (*copy).stack.bp = read_reg(PT_REGS_BP_OFFSET.load());
        let lr_offset = PT_REGS_LR_OFFSET.load();
        if lr_offset != 0 {
            (*copy).stack.lr = read_reg(lr_offset);
        }
        (*copy).stack.len = copy_stack::<N>((*copy).bytes.as_mut_ptr(), sp, wanted, tops) as u32;
    }
    true
}

/// Copies up to `wanted` bytes of user stack from `sp` into `bytes` (room
/// for `N`): a read that runs into an unmapped page fails as a whole,
/// after a fault that costs more than the copy, so it stops where the
/// stack is known to end: the main thread's at `mm->start_stack`, where
/// its frames end; a thread's made by glibc or musl at its thread pointer
/// (the thread's own data sits at the top of its stack's mapping). Else, or
/// if that read fails anyway, what is left of the stack pointer's page.
/// Returns the bytes copied.
#[inline(always)]
unsafe fn copy_stack<const N: usize>(
    bytes: *mut u8,
    sp: u64,
    wanted: usize,
    tops: StackTops,
) -> usize {
    let mut limit = wanted as u64;
    let top = tops.of(sp);
    if top > sp && top - sp < limit {
        limit = top - sp;
    }
    let to_page_end = 4096 - (sp & 4095);
    for size in [limit, to_page_end] {
        let size = (size as usize).min(N);
        if size == 0 {
            continue;
        }
        let read = unsafe { bpf_probe_read_user(bytes as *mut _, size as u32, sp as *const _) };
        if read == 0 {
            return size;
        }
    }
    0
}

/// Where the calling thread's stacks end, read once per call that gets a
/// stack: the main thread's stack top (`mm->start_stack`) and the thread
/// pointer, where a glibc or musl thread's stack ends.
#[derive(Clone, Copy)]
pub struct StackTops {
    main: u64,
    thread: u64,
}

impl StackTops {
    #[inline(always)]
    pub fn of_current(own_mm: OwnMm) -> StackTops {
        StackTops {
            main: own_mm.u64_at(MM_START_STACK_OFFSET.load()),
            thread: thread_pointer(),
        }
    }

    /// Where the stack `sp` is in ends, if known (0 if not).
    #[inline(always)]
    fn of(self, sp: u64) -> u64 {
        if self.main > sp && self.main - sp < 8 << 20 {
            return self.main;
        }
        self.thread
    }
}

/// The calling thread's user thread pointer (0 if unknown).
#[inline(always)]
fn thread_pointer() -> u64 {
    let offset = TASK_FSBASE_OFFSET.load();
    if offset == 0 {
        return 0;
    }
    if let Some(fsbase) = crate::helpers::own_task_u64(offset) {
        return fsbase;
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    unsafe { bpf_probe_read_kernel(task.wrapping_add(offset as usize) as *const u64) }.unwrap_or(0)
}
