//! What the live session writes into a recording besides the events: the
//! header that describes this machine and run, and the loss totals.

use crate::{
    kernel::{btf::StructOffsets, probes::LostCounts},
    model::detect::Detector,
    tracefile::format::{Header, LostRecord},
};

/// The header of a recording made now on this machine, with the limit and
/// threshold the run's detectors use.
pub fn local_header(
    offsets: StructOffsets,
    detector: &Detector,
    start_ns: u64,
    clock_offset_ns: i64,
) -> Header {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    Header {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: read("/proc/sys/kernel/hostname"),
        kernel_release: read("/proc/sys/kernel/osrelease"),
        max_map_count: detector.limit,
        warn_at: detector.warn_at,
        clock_offset_ns,
        start_ns,
        task_mm_offset: offsets.task_mm,
        mm_map_count_offset: offsets.mm_map_count,
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
    }
}

/// The kernel's loss counters as a record.
pub fn lost_record(lost: &LostCounts, at_ns: u64) -> LostRecord {
    LostRecord {
        at_ns,
        ring_buffer_full: lost.ring_buffer_full,
        inflight_table_full: lost.inflight_table_full,
        targets_table_full: lost.targets_table_full,
        lifecycle_ring_buffer_full: lost.lifecycle_ring_buffer_full,
        recorder_queue_full: 0,
        unpaired_calls: lost.unpaired_calls,
        kernel_skipped_runs: lost.kernel_skipped_runs,
    }
}
