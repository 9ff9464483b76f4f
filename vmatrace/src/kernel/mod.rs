//! What vmatrace needs to know about the running kernel before it loads its
//! programs, and the programs themselves: struct offsets and tracepoint
//! arguments from BTF ([`btf`]), tracefs ([`tracefs`]), the VMA limit, and
//! loading, attaching and reading the probes ([`probes`]).

pub mod btf;
pub mod cost;
pub mod mapped;
pub mod probes;
pub mod prog_info;
pub mod report;
pub mod tracefs;

use std::fs;

use anyhow::{Context, Result};

pub const MAX_MAP_COUNT: &str = "/proc/sys/vm/max_map_count";

/// `vm.max_map_count`, the per-process VMA limit.
pub fn max_map_count() -> Result<u64> {
    let text =
        fs::read_to_string(MAX_MAP_COUNT).with_context(|| format!("reading {MAX_MAP_COUNT}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{MAX_MAP_COUNT} holds {text:?}, not a number"))
}

/// Offset to add to a CLOCK_MONOTONIC timestamp (what `bpf_ktime_get_ns`
/// returns) to get nanoseconds since the Unix epoch.
pub fn monotonic_to_realtime_offset() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid timespec to write to.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    let mono = now(libc::CLOCK_MONOTONIC);
    let real = now(libc::CLOCK_REALTIME);
    real - mono
}

/// Now on CLOCK_MONOTONIC, the clock of the kernel's event time stamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
