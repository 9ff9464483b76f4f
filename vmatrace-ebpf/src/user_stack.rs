//! The user registers and the top of the user stack of a call that gets a
//! stack, for userspace: the return address at the stack pointer names the
//! caller of a syscall stub (which sets up no frame, so the kernel's
//! frame-pointer walk skips it), and the bytes let userspace unwind code
//! built without frame pointers with its call-frame information.
//!
//! Only the calls that get a stack pay for this; the copy goes through a
//! ring buffer of its own, so a burst of copies never costs an event.

use aya_ebpf::{
    Global,
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_probe_read_user, bpf_task_pt_regs},
    },
    macros::map,
    maps::RingBuf,
};
use vmatrace_common::{Event, USER_STACK_COPY_MAX, UserStackCopy};

/// Copies for userspace, each sent just before its event. The loader may
/// resize it.
#[map]
pub static USER_STACK_COPIES: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// How many bytes of user stack to copy from the stack pointer up (at
/// most `USER_STACK_COPY_MAX`); 0: no copies at all.
#[unsafe(no_mangle)]
pub static USER_STACK_BYTES: Global<u32> = Global::new(0);
/// Offsets of the instruction, stack and frame pointers in `struct
/// pt_regs`, from BTF.
#[unsafe(no_mangle)]
pub static PT_REGS_IP_OFFSET: Global<u64> = Global::new(128);
#[unsafe(no_mangle)]
pub static PT_REGS_SP_OFFSET: Global<u64> = Global::new(152);
#[unsafe(no_mangle)]
pub static PT_REGS_BP_OFFSET: Global<u64> = Global::new(32);

/// Sends the calling thread's user registers and the top of its stack for
/// `event`, if copies are on.
#[inline(always)]
pub fn copy_for(event: &Event) {
    let wanted = USER_STACK_BYTES.load() as usize;
    if wanted == 0 {
        return;
    }
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    if regs.is_null() {
        return;
    }
    let read_reg = |offset: u64| -> u64 {
        unsafe { bpf_probe_read_kernel(regs.wrapping_add(offset as usize) as *const u64) }
            .unwrap_or(0)
    };
    let sp = read_reg(PT_REGS_SP_OFFSET.load());
    if sp == 0 {
        return;
    }
    let Some(mut entry) = USER_STACK_COPIES.reserve::<UserStackCopy>(0) else {
        return;
    };
    let copy = entry.as_mut_ptr();
    unsafe {
        (*copy).pid = event.pid;
        (*copy).tid = event.tid;
        (*copy).enter_ns = event.enter_ns;
        (*copy).ip = read_reg(PT_REGS_IP_OFFSET.load());
        (*copy).sp = sp;
        (*copy).bp = read_reg(PT_REGS_BP_OFFSET.load());
        (*copy)._pad = 0;
        // A read that runs past the end of the stack's mapping fails as a
        // whole: then less, down to the end of the stack pointer's page.
        let to_page_end = 4096 - (sp as usize & 4095);
        let mut len = 0u32;
        for size in [wanted, wanted / 2, wanted / 4, to_page_end] {
            let size = size.min(USER_STACK_COPY_MAX);
            if size == 0 {
                continue;
            }
            let read = bpf_probe_read_user(
                (*copy).bytes.as_mut_ptr() as *mut _,
                size as u32,
                sp as *const _,
            );
            if read == 0 {
                len = size as u32;
                break;
            }
        }
        (*copy).len = len;
    }
    entry.submit(BPF_RB_NO_WAKEUP as u64);
}
