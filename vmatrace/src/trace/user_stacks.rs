//! The user stacks of the events, as the reader of the ring buffer gets
//! them: for each call that got a stack, the kernel sent its frame-pointer
//! walk (and, when copies are on, the registers and the stack top)
//! through `USER_STACK_COPIES` just before its event, from which the stack
//! is walked again (see `stacks::unwind`).
//!
//! A stack is given an id of its own, the same for the same process and
//! addresses, and the event carries it: the printer, the recording and the
//! readers key stacks by (pid, id).

use std::{collections::HashMap, sync::Arc};

use aya::maps::{MapData, RingBuf};
use vmatrace_common::{Event, stack_field};

use crate::{
    model::processes::Processes,
    stacks::{
        SharedStack,
        perf_map::MapOwner,
        symbols::RawStack,
        unwind::{SentStack, StackWalker, UnwindMode},
    },
};

/// Stacks kept waiting for their event at most (an event lost in a full
/// ring buffer leaves its stack behind).
const MAX_PENDING: usize = 4096;

/// Walk keys remembered at most, and walks under one key.
const MAX_WALKS: usize = 4096;
const MAX_WALKS_PER_KEY: usize = 8;

/// A walk remembered: the words of the copy it read, and where it led.
struct Walk {
    reads: Vec<(u64, Option<u64>)>,
    addrs: Vec<u64>,
}

/// (pid, ip, sp, bp, lr, frame-pointer walk).
type WalkKey = (u32, u64, u64, u64, u64, Vec<u64>);

/// Stacks walked from a copy. A call made again from the same place has
/// the same stack: in a storm of calls from one loop that is nearly every
/// call, and a walk is the reader's costliest step, so it is remembered.
/// The same place: the same registers at entry, frame-pointer walk and
/// words read by the walk (the return addresses, the saved registers):
/// two callers at the same stack depth differ in the return addresses
/// only.
#[derive(Default)]
struct Walks(HashMap<WalkKey, Vec<Walk>>);

impl Walks {
    /// The stack of `sent`, walked from its copy by `walker`, or as
    /// remembered.
    fn walk(&mut self, walker: &mut StackWalker, pid: u32, sent: SentStack) -> Vec<u64> {
        let Some(copy) = &sent.copy else {
            return walker.cut_at_non_code(pid, sent.frames);
        };
        let key = (pid, copy.ip, copy.sp, copy.bp, copy.lr, sent.frames);
        let same_words = |walk: &&Walk| walk.reads.iter().all(|(at, word)| copy.read(*at) == *word);
        if let Some(walk) = self.0.get(&key).and_then(|w| w.iter().find(same_words)) {
            return walk.addrs.clone();
        }
        let addrs = walker.walk(pid, &key.5, copy);
        let reads = walker.take_reads();
        if self.0.len() >= MAX_WALKS {
            self.0.clear();
        }
        let walks = self.0.entry(key).or_default();
        if walks.len() >= MAX_WALKS_PER_KEY {
            walks.remove(0);
        }
        walks.push(Walk {
            reads,
            addrs: addrs.clone(),
        });
        addrs
    }
}

/// Distinct stacks remembered at most; then they are forgotten (a stack
/// seen again then gets a new id and is printed again).
const MAX_IDS: usize = 65536;

/// Call sites whose last stack is remembered at most (stacks sent by
/// site); then they are forgotten, and their calls are without a stack
/// until each site sends its stack again (counted as missing meanwhile).
const MAX_SITES: usize = 65536;

/// The stack a call site sent last, and the calls it has stood for since.
struct SiteStack {
    id: u32,
    captured_ns: u64,
    calls: u64,
}

/// What `UserStacks::stack_of` found for an event.
#[derive(Default)]
pub(super) struct EventStack {
    /// The stack, the first time it is seen: to be symbolized.
    pub new: Option<RawStack>,
    /// The call sent only its site: its stack is the one the site sent
    /// last, which stands for this call too.
    pub shared: Option<SharedStack>,
}

pub(super) struct UserStacks {
    records: RingBuf<MapData>,
    pending: HashMap<(u32, u64), SentStack>,
    walker: StackWalker,
    walks: Walks,
    /// The id of each stack already handed to the printer.
    ids: HashMap<(u32, Vec<u64>), u32>,
    next_id: u32,
    /// The last stack of each (pid, site), when stacks are sent by site.
    sites: HashMap<(u32, u32), SiteStack>,
    /// Who each process whose stacks ran generated code is (its perf
    /// map's owner), read at its first such stack, while it lives.
    owners: HashMap<u32, Option<MapOwner>>,
    /// Events that said they had a stack whose record was not found (or,
    /// for a site's call, whose site's stack was not).
    pub(super) missing: u64,
    /// Stack records paired with their event.
    pub(super) captured: u64,
    /// Calls that shared the stack their site sent before.
    pub(super) shared: u64,
}

impl UserStacks {
    pub(super) fn new(records: RingBuf<MapData>, mode: UnwindMode) -> UserStacks {
        UserStacks {
            records,
            pending: HashMap::new(),
            walker: StackWalker::new(mode),
            walks: Walks::default(),
            ids: HashMap::new(),
            next_id: 0,
            sites: HashMap::new(),
            owners: HashMap::new(),
            missing: 0,
            captured: 0,
            shared: 0,
        }
    }

    /// The event's user stack: its id is written into `event` (0: none).
    /// A stack seen for the first time for its process comes back with its
    /// addresses, and the file and offset of each from the process's map
    /// before the call changed it, so it can be symbolized later, even
    /// after the process is gone. A call that sent only its site gets the
    /// stack its site sent last.
    pub(super) fn stack_of(&mut self, event: &mut Event, processes: &Processes) -> EventStack {
        let sent = event.stack;
        event.stack = 0;
        if sent == 0 {
            return EventStack::default();
        }
        let site = stack_field::site(sent);
        if !stack_field::sent(sent) {
            return EventStack {
                new: None,
                shared: self.share_site_stack(event, site),
            };
        }
        let Some(record) = self.sent_for(event) else {
            self.missing += 1;
            return EventStack::default();
        };
        self.captured += 1;
        let addrs = self.walks.walk(&mut self.walker, event.pid, record);
        let (id, new) = match self.ids.get(&(event.pid, addrs.clone())) {
            Some(&id) => (id, None),
            None => {
                let id = self.new_id(event.pid, &addrs);
                let files = processes.files_of(event.pid, &addrs);
                let (jit, owner) = self.generated_code(event.pid, &addrs);
                let raw = RawStack {
                    pid: event.pid,
                    id,
                    addrs,
                    files,
                    jit,
                    owner,
                };
                (id, Some(raw))
            }
        };
        event.stack = id + 1;
        if site != 0 {
            if self.sites.len() >= MAX_SITES {
                self.sites.clear();
            }
            self.sites.insert(
                (event.pid, site),
                SiteStack {
                    id,
                    captured_ns: event.exit_ns,
                    calls: 0,
                },
            );
        }
        EventStack { new, shared: None }
    }

    /// Which of `addrs` are in generated code (empty if none is), and who
    /// the process is, for its perf map: read now, while it lives (a
    /// single read of /proc/PID/status, once per process).
    fn generated_code(&mut self, pid: u32, addrs: &[u64]) -> (Vec<bool>, Option<MapOwner>) {
        let jit: Vec<bool> = addrs
            .iter()
            .map(|a| self.walker.is_generated_code(pid, *a))
            .collect();
        if !jit.contains(&true) {
            return (Vec::new(), None);
        }
        let owner = *self.owners.entry(pid).or_insert_with(|| MapOwner::of(pid));
        (jit, owner)
    }

    /// The stack `site` sent last, for a call of it that sent none.
    fn share_site_stack(&mut self, event: &mut Event, site: u32) -> Option<SharedStack> {
        let Some(last) = self.sites.get_mut(&(event.pid, site)) else {
            // Its stack was lost, or forgotten (`MAX_SITES`).
            self.missing += 1;
            return None;
        };
        last.calls += 1;
        self.shared += 1;
        event.stack = last.id + 1;
        Some(SharedStack {
            captured_ns: last.captured_ns,
            calls: last.calls,
        })
    }

    /// A new id for a stack of `pid`.
    fn new_id(&mut self, pid: u32, addrs: &[u64]) -> u32 {
        if self.ids.len() >= MAX_IDS {
            self.ids.clear();
        }
        let id = self.next_id;
        // `id + 1` goes into the event: the last id is never handed out.
        self.next_id = self.next_id.saturating_add(1).min(u32::MAX - 1);
        self.ids.insert((pid, addrs.to_vec()), id);
        id
    }

    /// The stack sent for `event`: sent before it, so it is in the ring
    /// buffer by now, or already read.
    fn sent_for(&mut self, event: &Event) -> Option<SentStack> {
        while let Some(item) = self.records.next() {
            if let Some(sent) = SentStack::parse(&item) {
                if self.pending.len() >= MAX_PENDING {
                    self.pending.clear();
                }
                self.pending.insert((sent.tid, sent.enter_ns), sent);
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
        self.walks.0.retain(|(p, ..), _| *p != pid);
        self.sites.retain(|(p, _), _| *p != pid);
        self.owners.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::unwind::StackCopy;

    /// A call from another caller at the same stack depth, with the same
    /// registers and frame-pointer walk, differs only in the return
    /// address on the stack: it gets its own stack, not the one
    /// remembered for the first caller.
    #[test]
    fn a_remembered_walk_is_used_only_for_the_same_return_addresses() {
        let mut walker = StackWalker::new(UnwindMode::Fp);
        walker.seed(7, "400000-500000 r-xp 00000000 00:00 0 /nonexistent/app\n");
        let sent = |caller: u64| SentStack {
            tid: 7,
            enter_ns: 1,
            frames: Vec::new(),
            copy: Some(StackCopy {
                tid: 7,
                enter_ns: 1,
                ip: 0x401000,
                sp: 0x7ff000,
                bp: 0,
                lr: 0,
                bytes: [caller.to_ne_bytes(), 5u64.to_ne_bytes()].concat(),
            }),
        };
        let mut walks = Walks::default();
        let first = walks.walk(&mut walker, 7, sent(0x402000));
        assert_eq!(first, vec![0x401000, 0x402000]);
        let other = walks.walk(&mut walker, 7, sent(0x403000));
        assert_eq!(other, vec![0x401000, 0x403000]);
        // The same caller again: remembered, whatever else the copy holds.
        let again = walks.walk(&mut walker, 7, sent(0x402000));
        assert_eq!(again, first);
        assert_eq!(walks.0.values().map(Vec::len).sum::<usize>(), 2);
    }
}
