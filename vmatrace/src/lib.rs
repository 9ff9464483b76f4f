//! vmatrace: live, exact VMA counts per process, and the calls that split
//! mappings or fail with ENOMEM at `vm.max_map_count`, traced with eBPF.
//!
//! Events flow from the kernel ([`probes`]) through per-process [`state`]
//! and the [`detect`]ors to the [`output`]s; a [`session`] runs that loop
//! for the [`target`]s named on the [`cli`].

pub mod allocator;
pub mod cli;
pub mod detect;
pub mod error;
pub mod kernel;
pub mod mappings;
pub mod output;
pub mod plot;
pub mod printer;
pub mod probes;
pub mod readback;
pub mod session;
pub mod sites;
pub mod state;
pub mod symbols;
pub mod syscalls;
pub mod target;
pub mod top;
pub mod tracefile;
pub mod view;
