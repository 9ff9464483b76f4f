//! Changes of a process's count that no traced call made
//! (`EventKind::Change`): where each came from, and how they add up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vmatrace_common::{Event, change_nr, count_mode};

use crate::model::syscalls;

/// Where a change of the count happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// In this syscall (its number), which vmatrace does not decode.
    Syscall(i64),
    /// Not in a syscall of the task that made it: a trap (the uprobes page
    /// mapped on a breakpoint) or a kernel thread.
    Outside,
    /// Between two calls of a single-threaded process, counted at syscall
    /// entry and exit: in no traced call, found at the next one.
    BetweenCalls,
    /// In a syscall the kernel cannot name to vmatrace (no
    /// `bpf_task_pt_regs` before Linux 5.15).
    UnknownSyscall,
}

impl Source {
    pub fn of(event: &Event) -> Source {
        match event.ret {
            nr if nr >= 0 => Source::Syscall(nr),
            change_nr::OUTSIDE => Source::Outside,
            _ if event.counted == count_mode::SYSCALL => Source::BetweenCalls,
            _ => Source::UnknownSyscall,
        }
    }

    /// For JSON.
    pub fn name(self) -> &'static str {
        match self {
            Source::Syscall(_) => "syscall",
            Source::Outside => "outside_a_call",
            Source::BetweenCalls => "between_calls",
            Source::UnknownSyscall => "unknown_syscall",
        }
    }

    /// For a line of text.
    pub fn describe(self) -> String {
        match self {
            Source::Syscall(nr) => syscalls::syscall_name(nr),
            Source::Outside => "outside a call".into(),
            Source::BetweenCalls => "outside a traced call (found at the next call)".into(),
            Source::UnknownSyscall => "in a syscall vmatrace does not trace".into(),
        }
    }
}

/// Whether a change outside a traced call was made by a task of another
/// process (sharing the address space, or changing it from outside).
pub fn by_another_process(event: &Event) -> bool {
    event.kind == vmatrace_common::EventKind::Change as u8 && event.call == 1
}

/// What made an event's change: the traced call's name, or where a change
/// outside a traced call happened (`close`, `outside a call`).
pub fn what_changed(event: &Event) -> String {
    if event.kind == vmatrace_common::EventKind::Change as u8 {
        return Source::of(event).describe();
    }
    vmatrace_common::Call::from_u8(event.call).map_or("?".into(), |c| c.name().into())
}

/// A process's changes outside traced calls, by where they happened.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Changes {
    /// How many, and their net effect on the count, by source (a syscall's
    /// name, or `outside a call`...).
    pub by_source: BTreeMap<String, Tally>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub changes: u64,
    pub net: i64,
}

impl Changes {
    pub fn add(&mut self, source: Source, delta: i64) {
        let tally = self.by_source.entry(source.describe()).or_default();
        tally.changes += 1;
        tally.net += delta;
    }

    pub fn total(&self) -> u64 {
        self.by_source.values().map(|t| t.changes).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }

    /// `close 1 (-8), outside a call 1 (+1)`, largest first.
    pub fn describe(&self) -> String {
        let mut sources: Vec<(&String, &Tally)> = self.by_source.iter().collect();
        sources.sort_by_key(|(name, tally)| (std::cmp::Reverse(tally.changes), (*name).clone()));
        sources
            .iter()
            .map(|(name, tally)| format!("{name} {} ({:+})", tally.changes, tally.net))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_add_up_by_source() {
        let mut changes = Changes::default();
        changes.add(Source::Outside, 1);
        changes.add(Source::Syscall(3), -8);
        changes.add(Source::Syscall(3), -2);
        assert_eq!(changes.total(), 3);
        assert_eq!(changes.describe(), "close 2 (-10), outside a call 1 (+1)");
    }
}
