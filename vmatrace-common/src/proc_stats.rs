//! Per-process counters the kernel keeps for `vmatrace serve` and
//! `vmatrace top -a`: read by userspace when it wants them (a scrape, a
//! refresh), so no event has to cross to userspace.

use crate::Call;

/// Calls a [`ProcStats`] counts ENOMEMs of, by [`Call`] discriminant.
pub const CALLS: usize = Call::ALL.len();

/// One process's counters, by tgid in the `PROC_STATS` map. Kept by the
/// syscall exit program for every traced call that completes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcStats {
    /// `current->mm` of the calls counted: a different one (exec, or a new
    /// process with the same tgid) starts the counters afresh.
    pub mm: u64,
    /// `bpf_ktime_get_ns()` when the counters started.
    pub since_ns: u64,
    /// When `count` was last read.
    pub count_ns: u64,
    /// Traced calls completed.
    pub calls: u64,
    /// Calls that split a mapping (their own change to the count exceeded
    /// the VMAs they create).
    pub splits: u64,
    /// Calls that took the count across the NEAR-LIMIT threshold.
    pub near_limit: u64,
    /// Changes of the count outside a traced call (`EventKind::Change`).
    pub changes: u64,
    /// ENOMEMs because the VMA count left no room, by call.
    pub enomem_vma_limit: [u64; CALLS],
    /// Other ENOMEMs (memory, address space), by call.
    pub enomem_memory: [u64; CALLS],
    /// `mm->map_count` after the process's latest traced call.
    pub count: i32,
    /// The highest count seen after a call.
    pub peak: i32,
}

impl ProcStats {
    pub const fn zeroed() -> ProcStats {
        ProcStats {
            mm: 0,
            since_ns: 0,
            count_ns: 0,
            calls: 0,
            splits: 0,
            near_limit: 0,
            changes: 0,
            enomem_vma_limit: [0; CALLS],
            enomem_memory: [0; CALLS],
            count: -1,
            peak: -1,
        }
    }
}

/// Names of the map and the globals.
pub mod names {
    pub const PROC_STATS: &str = "PROC_STATS";
    /// 0: the exit program sends no syscall event (serve mode).
    pub const SEND_EVENTS: &str = "SEND_EVENTS";
}

/// Processes the `PROC_STATS` map holds (an LRU map: the least recently
/// updated go first when it is full).
pub const PROC_STATS_ENTRIES: u32 = 32768;

#[cfg(feature = "user")]
// SAFETY: plain data, no padding (448 bytes of u64 and i32 in order).
unsafe impl aya::Pod for ProcStats {}

const _: () = assert!(core::mem::size_of::<ProcStats>() == 448);

/// Whether an ENOMEM was the VMA limit's doing, by the checks the kernel
/// makes for that call against `vm.max_map_count` (the same rules as
/// userspace's `model::detect::enomem_cause`, which documents them): the
/// count is the one the call saw.
#[inline(always)]
pub fn enomem_at_vma_limit(call: u8, args: &[u64; 6], count: i64, limit: i64) -> bool {
    const MAP_FIXED: u64 = 0x10;
    const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
    const SHM_REMAP: u64 = 0o40000;
    let over = count > limit;
    let at = count >= limit;
    if call == Call::Mmap as u8 {
        let flags = args[3];
        over || (flags & MAP_FIXED != 0 && flags & MAP_FIXED_NOREPLACE == 0 && at)
    } else if call == Call::Shmat as u8 {
        over || (args[2] & SHM_REMAP != 0 && at)
    } else if call == Call::Brk as u8 {
        over
    } else if call == Call::Mremap as u8 {
        count + 5 >= limit
    } else {
        at
    }
}
