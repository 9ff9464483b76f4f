//! vmatrace: live, exact VMA counts per process, and the calls that split
//! mappings or fail with ENOMEM at `vm.max_map_count`, traced with eBPF.
//!
//! The folders follow the data, from the kernel to the reader:
//!
//! - [`kernel`]: what the running kernel offers (BTF offsets, tracefs, the
//!   limit) and vmatrace's probes in it: loading, attaching, lost counts.
//! - [`trace`]: the live session: the [`cli`]'s targets, the event loop that
//!   drains the ring buffer, and the printer thread.
//! - [`model`]: what the events mean: per-process state and address space,
//!   the detectors (SPLIT, ENOMEM, NEAR-LIMIT), call decoding, the
//!   allocator, call sites, rate windows. Pure analysis, shared by the live
//!   session and the readers of recordings.
//! - [`stacks`]: user stacks, from the kernel's addresses to named frames.
//! - [`output`]: what a person or a script reads: event lines, JSON,
//!   status lines, the summary, `--top`, plots.
//! - [`tracefile`]: the recording format, its writer and its reader.
//! - [`readback`]: `replay`, `report` and `export` of recordings.
//! - [`arch`]: what differs between x86-64 and arm64 (registers, thread
//!   pointer, unwinder), a leaf.
//!
//! Dependencies point down this list's reverse: `kernel` and `stacks` know
//! nothing of the rest but `arch`, `model` builds on them, `tracefile` and
//! `output` on `model`, and `trace` and `readback` tie everything together.

pub mod arch;
pub mod bytes;
pub mod cli;
pub mod error;
pub mod generate;
pub mod host;
pub mod kernel;
pub mod model;
pub mod outfile;
pub mod output;
pub mod readback;
pub mod stacks;
pub mod trace;
pub mod tracefile;
