//! Exit codes scripts can rely on, and the failures that map to them.

use std::fmt;

/// vmatrace's exit codes. With `-- CMD`, a clean run exits with the
/// command's own status instead, as strace does.
pub mod exit_code {
    /// The trace ran and is complete.
    pub const OK: i32 = 0;
    /// vmatrace could not trace: not root, no BTF, no tracefs, a probe the
    /// kernel refused, or another failure of the machine or the tool.
    pub const ENVIRONMENT: i32 = 1;
    /// Bad arguments, or a target that does not exist.
    pub const USAGE: i32 = 2;
    /// The trace ran but events were lost: it is incomplete.
    pub const LOST_EVENTS: i32 = 3;
    /// Reading a trace file (or `maps`' saved file): it cannot be opened
    /// (missing, no permission, a directory).
    pub const UNREADABLE: i32 = 4;
    /// Reading a trace file: it is empty or not a vmatrace trace (`maps`:
    /// not maps or smaps text).
    pub const NOT_A_TRACE: i32 = 5;
    /// Reading a trace file: a newer vmatrace wrote it.
    pub const NEWER_FORMAT: i32 = 6;
    /// Reading a trace file: a damaged record; what preceded it was used.
    pub const CORRUPT: i32 = 7;
    /// Reading a trace file: it is cut inside a record; what preceded it
    /// was used.
    pub const TRUNCATED: i32 = 8;
}

/// An error that ends vmatrace, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: exit_code::USAGE,
            error: error.into(),
        }
    }

    pub fn environment(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: exit_code::ENVIRONMENT,
            error: error.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Failure {}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::environment(error)
    }
}
