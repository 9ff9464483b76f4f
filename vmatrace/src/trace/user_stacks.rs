//! The user stacks of the events, as the reader of the ring buffer gets
//! them: the kernel's frame-pointer walk from the `STACKS` map, and, for
//! each call that got a stack, the registers and stack top the kernel sent
//! through `USER_STACK_COPIES` just before its event, from which the stack
//! is walked again (see `stacks::unwind`).
//!
//! A walked stack is given an id of its own (from `WALKED_IDS` on, above
//! any id of the kernel's map), the same for the same process and
//! addresses, and the event carries it: the printer, the recording and the
//! readers key stacks by (pid, id) as before.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use aya::maps::{MapData, RingBuf, StackTraceMap};
use vmatrace_common::Event;

use crate::{
    model::processes::Processes,
    stacks::{
        symbols::RawStack,
        unwind::{StackCopy, StackWalker, UnwindMode},
    },
};

/// The first id given to a walked stack.
const WALKED_IDS: u32 = 0x4000_0000;

/// Copies kept waiting for their event at most (an event lost in a full
/// ring buffer leaves its copy behind).
const MAX_PENDING: usize = 4096;

/// Kernel walks kept at most.
const MAX_KERNEL_WALKS: usize = 65536;

pub(super) struct UserStacks {
    stacks: StackTraceMap<MapData>,
    copies: Option<RingBuf<MapData>>,
    pending: HashMap<(u32, u64), StackCopy>,
    walker: StackWalker,
    walked_ids: HashMap<(u32, Vec<u64>), u32>,
    /// The (pid, stack id) pairs already read and handed to the printer.
    seen: HashSet<(u32, u32)>,
    /// The kernel's walks already read, by (pid, kernel stack id): the
    /// kernel gives one id to every identical stack, and reading the map
    /// is a system call.
    kernel_walks: HashMap<(u32, u32), Vec<u64>>,
    /// Stacks walked from a copy, and events with a stack that had none.
    pub(super) walked: u64,
    pub(super) without_copy: u64,
}

impl UserStacks {
    pub(super) fn new(
        stacks: StackTraceMap<MapData>,
        copies: Option<RingBuf<MapData>>,
        mode: UnwindMode,
    ) -> UserStacks {
        UserStacks {
            stacks,
            copies,
            pending: HashMap::new(),
            walker: StackWalker::new(mode),
            walked_ids: HashMap::new(),
            seen: HashSet::new(),
            kernel_walks: HashMap::new(),
            walked: 0,
            without_copy: 0,
        }
    }

    /// The event's user stack, the first time (pid, stack id) is seen: its
    /// addresses, and the file and offset of each from the process's map
    /// before the call changed it, so it can be symbolized later, even
    /// after the process is gone. A stack walked from a copy gets its own
    /// id, written into `event`.
    pub(super) fn new_stack(
        &mut self,
        event: &mut Event,
        processes: &Processes,
    ) -> Option<RawStack> {
        let kernel_id = event.stack.checked_sub(1)?;
        let copy = self.copy_for(event);
        let (id, addrs) = match copy {
            Some(copy) => {
                let fp = match self.kernel_walks.get(&(event.pid, kernel_id)) {
                    Some(fp) => fp.clone(),
                    None => {
                        let fp = self.kernel_stack(kernel_id).unwrap_or_default();
                        if self.kernel_walks.len() >= MAX_KERNEL_WALKS {
                            self.kernel_walks.clear();
                        }
                        self.kernel_walks.insert((event.pid, kernel_id), fp.clone());
                        fp
                    }
                };
                let addrs = self.walker.walk(event.pid, &fp, &copy);
                self.walked += 1;
                let next = WALKED_IDS + self.walked_ids.len() as u32;
                let id = *self
                    .walked_ids
                    .entry((event.pid, addrs.clone()))
                    .or_insert(next);
                event.stack = id + 1;
                if !self.seen.insert((event.pid, id)) {
                    return None;
                }
                (id, addrs)
            }
            None => {
                if self.copies.is_some() {
                    self.without_copy += 1;
                }
                if !self.seen.insert((event.pid, kernel_id)) {
                    return None;
                }
                let fp = self.kernel_stack(kernel_id)?;
                (kernel_id, self.walker.cut_at_non_code(event.pid, fp))
            }
        };
        let files = processes.files_of(event.pid, &addrs);
        Some(RawStack {
            pid: event.pid,
            id,
            addrs,
            files,
        })
    }

    fn kernel_stack(&self, id: u32) -> Option<Vec<u64>> {
        let trace = self.stacks.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|f| f.ip).collect())
    }

    /// The copy sent for `event`: sent before it, so it is in the ring
    /// buffer by now, or already read.
    fn copy_for(&mut self, event: &Event) -> Option<StackCopy> {
        let ring = self.copies.as_mut()?;
        while let Some(item) = ring.next() {
            if let Some(copy) = StackCopy::parse(&item) {
                if self.pending.len() >= MAX_PENDING {
                    self.pending.clear();
                }
                self.pending.insert((copy.tid, copy.enter_ns), copy);
            }
        }
        self.pending.remove(&(event.tid, event.enter_ns))
    }

    /// The process's mappings from a snapshot: a process may be gone by
    /// the time its stacks are walked.
    pub(super) fn seed(&mut self, pid: u32, maps: &str) {
        self.walker.seed(pid, maps);
    }

    /// An executable file mapping made by a (successful) mmap of `path`.
    pub(super) fn mapped(&mut self, event: &Event, path: &Arc<str>) {
        const PROT_EXEC: u64 = 4;
        let (start, len) = (event.ret as u64, event.args[1]);
        if event.args[2] & PROT_EXEC != 0 && len > 0 {
            let end = start.saturating_add(len.next_multiple_of(4096));
            self.walker
                .mapped_code(event.pid, start..end, event.args[5], path.clone());
        }
    }

    /// Forgets what was kept for a process that exited.
    pub(super) fn forget(&mut self, pid: u32) {
        self.walker.forget(pid);
        self.kernel_walks.retain(|(p, _), _| *p != pid);
    }
}
