//! A kernel array map read through shared memory, without a bpf() call.
//!
//! Every map read by bpf() (`BPF_MAP_LOOKUP_ELEM`) holds the kernel's
//! per-CPU BPF recursion guard (`bpf_prog_active`) for its duration, with
//! preemption enabled. On kernels that preempt there (Debian's 7.x), a
//! reader preempted inside that section makes the kernel skip every
//! tracepoint program on its CPU until it runs again: calls vmatrace would
//! then miss. So the counters userspace reads while tracing live in a
//! `BPF_F_MMAPABLE` array, mapped once and read like memory.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use anyhow::{Context, bail};
use aya::maps::Map;

/// A view of an `Array` of 8-byte values created with `BPF_F_MMAPABLE`:
/// read-only for counters the programs keep, writable for values userspace
/// hands them.
pub struct MappedCounters {
    base: NonNull<u64>,
    slots: usize,
    len: usize,
}

// SAFETY: the mapping is read-only and lives as long as the value; reads are
// volatile loads of aligned u64s the kernel updates atomically.
unsafe impl Send for MappedCounters {}
unsafe impl Sync for MappedCounters {}

impl MappedCounters {
    /// Maps `map` (an array of `slots` u64 values) read-only.
    pub fn new(map: &Map, slots: usize) -> anyhow::Result<MappedCounters> {
        Self::map(map, slots, libc::PROT_READ)
    }

    /// Maps `map` (an array of `slots` 8-byte values) for writing too.
    pub fn writable(map: &Map, slots: usize) -> anyhow::Result<MappedCounters> {
        Self::map(map, slots, libc::PROT_READ | libc::PROT_WRITE)
    }

    fn map(map: &Map, slots: usize, protection: i32) -> anyhow::Result<MappedCounters> {
        let Map::Array(data) = map else {
            bail!("not an array map");
        };
        let page = page_size();
        let len = (slots * 8).div_ceil(page) * page;
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared read-only mapping of the map's values, which
        // the kernel sizes to whole pages for BPF_F_MMAPABLE arrays.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                protection,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .context("mapping the counters (the kernel needs BPF_F_MMAPABLE, Linux 5.5+)");
        }
        Ok(MappedCounters {
            base: NonNull::new(ptr.cast()).context("mmap returned null")?,
            slots,
            len,
        })
    }

    /// Sets `slot` (nothing past the end). The programs read it with a
    /// plain load: an aligned 8-byte store is seen whole.
    pub fn set(&self, slot: u32, value: i64) {
        let slot = slot as usize;
        if slot < self.slots {
            // SAFETY: in bounds of the live mapping, 8-aligned; a mapping made
            // by `writable` (a read-only one would fault, so `set` is only
            // called on those).
            unsafe { std::ptr::write_volatile(self.base.as_ptr().add(slot).cast::<i64>(), value) };
        }
    }

    /// The value of `slot` now (0 past the end).
    pub fn get(&self, slot: u32) -> u64 {
        let slot = slot as usize;
        if slot >= self.slots {
            return 0;
        }
        // SAFETY: in bounds of the live mapping, 8-aligned (page-aligned base).
        unsafe { std::ptr::read_volatile(self.base.as_ptr().add(slot)) }
    }
}

impl Drop for MappedCounters {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped, once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}
