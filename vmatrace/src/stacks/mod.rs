//! User stacks: from the addresses the kernel captured to named frames.

pub mod symbols;
pub mod unwind;
