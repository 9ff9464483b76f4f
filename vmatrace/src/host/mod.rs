//! The whole host at a glance: every process's VMA count, peak, splits and
//! ENOMEMs from the counters the kernel keeps (`PROC_STATS`, see
//! vmatrace-ebpf/src/proc_stats.rs), read when wanted. No event per call
//! crosses to userspace; only exec and exit (to start and end a process's
//! state) come through the ring buffer.
//!
//! `serve` exposes them to Prometheus, `top -a` ranks them by risk.
//! `maps` explains one process's count from its /proc files, no probe
//! loaded.

pub mod collector;
pub mod maps;
pub mod metrics;
pub mod seed;
pub mod serve;
pub mod top;
