//! What the events mean: state and analysis shared by the live session
//! and the readers of recordings. Nothing here touches the kernel or the
//! terminal.

pub mod address_space;
pub mod allocator;
pub mod anatomy;
pub mod changes;
pub mod detect;
pub mod history;
pub mod maps_file;
pub mod processes;
pub mod ranking;
pub mod sites;
pub mod snapshot;
pub mod syscalls;
pub mod verdict;
pub mod window;
