//! User stacks: from the addresses the kernel captured to named frames.

pub mod perf_map;
pub mod runtimes;
pub mod symbols;
pub mod unwind;

/// A call site's stack standing for a later call of the site, which sent
/// no stack of its own: stacks are sent by site, once a second (see
/// `--site-stacks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedStack {
    /// When the call that sent it ended (CLOCK_MONOTONIC ns).
    pub captured_ns: u64,
    /// The calls of the site it has stood for since, this one included.
    pub calls: u64,
}
