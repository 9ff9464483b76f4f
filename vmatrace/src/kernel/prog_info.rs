//! What the kernel knows about vmatrace's loaded programs that aya 0.14
//! does not expose: how often it skipped them.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `recursion_misses` of a loaded program: how often the kernel skipped it
/// because it (or, for perf-event programs, any tracing program) was
/// already running on that CPU. aya 0.14's `ProgramInfo` does not expose
/// it, so this asks BPF_OBJ_GET_INFO_BY_FD itself. `None` before Linux
/// 5.12, whose `bpf_prog_info` ends before the field.
pub fn recursion_misses(fd: BorrowedFd<'_>) -> Option<u64> {
    /// `offsetof(struct bpf_prog_info, recursion_misses)` (uapi, stable).
    const RECURSION_MISSES: usize = 208;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C, align(8))]
    struct Info([u8; 256]);
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = Info([0; 256]);
    let mut attr = Attr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<Info>() as u32,
        info: info.0.as_mut_ptr() as u64,
    };
    // SAFETY: attr and the buffer it points to outlive the call, and the
    // kernel writes at most info_len bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if rc != 0 || (attr.info_len as usize) < RECURSION_MISSES + 8 {
        return None;
    }
    let bytes = info.0[RECURSION_MISSES..RECURSION_MISSES + 8]
        .try_into()
        .ok()?;
    Some(u64::from_ne_bytes(bytes))
}
