//! What the kernel knows about vmatrace's loaded programs that aya 0.14
//! does not expose: how often it skipped them, and what they cost.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `bpf()` commands used here (uapi, stable).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_ENABLE_STATS: libc::c_long = 32;

/// Offsets in `struct bpf_prog_info` (uapi, stable).
const RUN_TIME_NS: usize = 192;
const RUN_CNT: usize = 200;
const RECURSION_MISSES: usize = 208;

/// `recursion_misses` of a loaded program: how often the kernel skipped it
/// because it (or, for perf-event programs, any tracing program) was
/// already running on that CPU. `None` before Linux 5.12, whose
/// `bpf_prog_info` ends before the field.
pub fn recursion_misses(fd: BorrowedFd<'_>) -> Option<u64> {
    u64_at(&info(fd)?, RECURSION_MISSES)
}

/// Time the kernel spent in a program and how many times it ran, while
/// run-time statistics are on ([`RunTimeStats`]); zeros otherwise.
pub fn run_time(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let info = info(fd)?;
    Some((u64_at(&info, RUN_TIME_NS)?, u64_at(&info, RUN_CNT)?))
}

/// The kernel's run-time statistics of every BPF program, on for as long
/// as this is held (what bpftop and `bpftool prog` show). Each program run
/// then pays two clock reads; they are off again once no one holds them.
pub struct RunTimeStats(#[allow(dead_code)] OwnedFd);

impl RunTimeStats {
    /// Turns them on; `None` where the kernel cannot (before Linux 5.8).
    pub fn enable() -> Option<RunTimeStats> {
        /// `BPF_STATS_RUN_TIME`, in `attr.enable_stats.type`.
        #[repr(C)]
        struct Attr {
            stats_type: u32,
        }
        let mut attr = Attr { stats_type: 0 };
        // SAFETY: the kernel reads only the attr it is given.
        let fd = unsafe { sys_bpf(BPF_ENABLE_STATS, &mut attr) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new fd the kernel just returned, owned from here on.
        Some(RunTimeStats(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }
}

#[repr(C, align(8))]
struct Info([u8; 256]);

/// The program's `bpf_prog_info`, as long as this kernel's is.
fn info(fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
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
    // SAFETY: the buffer attr points to outlives the call, and the kernel
    // writes at most info_len bytes.
    let rc = unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) };
    if rc != 0 {
        return None;
    }
    let len = (attr.info_len as usize).min(info.0.len());
    Some(info.0[..len].to_vec())
}

/// `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// `attr` must be the attribute layout `cmd` expects, and whatever it
/// points to must be valid for what the kernel does with it.
unsafe fn sys_bpf<A>(cmd: libc::c_long, attr: &mut A) -> libc::c_long {
    // SAFETY: as the caller promises; attr outlives the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>()) }
}

fn u64_at(info: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(info.get(at..at + 8)?.try_into().ok()?))
}
