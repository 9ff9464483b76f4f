//! Per-process state, fed by events: the live VMA count and what changed it.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::Arc,
};

use serde::Serialize;
use vmatrace_common::{Call, Event, EventKind};

use crate::{
    model::address_space::AddressSpace,
    model::allocator::{self, Detected},
    model::changes::{Changes, Source},
    model::detect::{self, Detector, EnomemCause, Flags},
    model::history::CountHistory,
    model::snapshot::{ProcessInfo, maps_snapshot_count},
    model::syscalls,
};

/// What vmatrace knows about one traced process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessState {
    pub pid: u32,
    pub comm: String,
    /// The allocator the process uses, as far as known.
    #[serde(serialize_with = "as_text")]
    pub allocator: Option<Detected>,
    /// The count read from /proc/PID/maps when tracing began, if it did.
    pub count_at_attach: Option<u64>,
    /// The kernel's `map_count`, as of the newest reading (`count_ns`).
    pub count: Option<i64>,
    #[serde(skip)]
    pub count_ns: u64,
    pub peak: i64,
    pub peak_ns: u64,
    /// `vm.max_map_count` when the peak was reached (the limit can change
    /// during a trace; 0: not known).
    pub peak_limit: u64,
    pub calls: BTreeMap<&'static str, u64>,
    pub failed_calls: u64,
    /// Calls flagged SPLIT.
    pub splits: u64,
    /// SPLITs by the mapping they cut.
    pub splits_by_mapping: BTreeMap<String, u64>,
    /// SPLITs by call, and by call and the kind of mapping cut (`anon`,
    /// `[heap]`, `[stack]`, `file`): what the verdict explains them by.
    pub splits_by_call: BTreeMap<&'static str, u64>,
    #[serde(skip)]
    pub splits_by_call_and_kind: BTreeMap<(&'static str, &'static str), u64>,
    /// When the first call failed with ENOMEM (CLOCK_MONOTONIC ns).
    pub first_enomem_ns: Option<u64>,
    /// ENOMEMs by cause (`vma_limit`, `memory`).
    pub enomem_by_cause: BTreeMap<&'static str, u64>,
    /// When the first call failed for the VMA limit.
    pub first_vma_limit_ns: Option<u64>,
    /// ENOMEMs at the VMA limit, by call: what the program saw fail.
    pub vma_limit_enomem_by_call: BTreeMap<&'static str, u64>,
    /// ENOMEMs at the VMA limit, by the limit in force when they failed.
    pub vma_limit_enomem_by_limit: BTreeMap<u64, u64>,
    /// VMAs the exact calls added, by how: `split` (a cut) or, for new
    /// mappings, what they map (`anon`, `[heap]`, `files in DIR/`): what
    /// grew the count.
    pub added_by: BTreeMap<String, u64>,
    pub enomem: u64,
    pub near_limit: u64,
    pub bytes_mapped: u64,
    pub bytes_unmapped: u64,
    /// Bytes mapped and unmapped, by call.
    pub bytes_by_call: BTreeMap<&'static str, MappedBytes>,
    /// Successful mmap and munmap calls by length: the size classes the
    /// allocator uses (power-of-two buckets, by upper bound in bytes).
    pub mmap_sizes: BTreeMap<u64, u64>,
    pub munmap_sizes: BTreeMap<u64, u64>,
    pub execs: u64,
    /// Changes of the count that no traced call made.
    pub changes: Changes,
    /// Calls whose count was read at syscall entry and exit while another
    /// call of the process ran: their delta is not their own for certain,
    /// so none is flagged SPLIT.
    pub inexact: u64,
    pub exited: bool,
    #[serde(skip)]
    pub above_warn: bool,
    #[serde(skip)]
    last_brk: Option<u64>,
    /// Its mappings' names, to say which one each event touched.
    #[serde(skip)]
    pub space: AddressSpace,
    /// The count's extremes second by second, for the last minutes.
    #[serde(skip)]
    pub history: CountHistory,
}

impl ProcessState {
    pub fn new(pid: u32) -> ProcessState {
        ProcessState {
            pid,
            ..ProcessState::default()
        }
    }

    pub fn headroom(&self, limit: u64) -> Option<i64> {
        self.count.map(|count| limit as i64 - count)
    }

    /// Takes a reading of the kernel's count taken at `ns`, if it is newer
    /// than the one held: events of different threads can arrive out of
    /// order, the newest reading is the truth.
    fn observe_count(&mut self, count: i32, ns: u64, limit: u64) {
        if count < 0 {
            return;
        }
        let count = count as i64;
        if self.count.is_none() || ns >= self.count_ns {
            self.count = Some(count);
            self.count_ns = ns;
        }
        if count > self.peak {
            self.peak = count;
            self.peak_ns = ns;
            self.peak_limit = limit;
        }
        self.history.observe(count, ns);
    }

    fn count_call(&mut self, call: Call, event: &Event, flags: Flags, limit: u64) {
        *self.calls.entry(call.name()).or_default() += 1;
        if syscalls::errno_of(call, event.ret).is_some() {
            self.failed_calls += 1;
        }
        if flags.split {
            self.splits += 1;
        }
        if !detect::delta_is_exact(event) {
            self.inexact += 1;
        }
        if flags.enomem {
            self.enomem += 1;
            self.first_enomem_ns.get_or_insert(event.exit_ns);
            if let Some(cause) = flags.enomem_cause {
                *self.enomem_by_cause.entry(cause.name()).or_default() += 1;
                if cause == EnomemCause::VmaLimit {
                    self.first_vma_limit_ns.get_or_insert(event.exit_ns);
                    *self.vma_limit_enomem_by_limit.entry(limit).or_default() += 1;
                    *self
                        .vma_limit_enomem_by_call
                        .entry(call.name())
                        .or_default() += 1;
                }
            }
        }
        if event.ret >= 0 {
            let sizes = match call {
                Call::Mmap => Some(&mut self.mmap_sizes),
                Call::Munmap => Some(&mut self.munmap_sizes),
                _ => None,
            };
            if let Some(sizes) = sizes {
                *sizes.entry(size_class(event.args[1])).or_default() += 1;
            }
        }
        let delta = match call {
            Call::Brk => self.brk_delta(event.ret as u64),
            _ => syscalls::mapped_delta(call, &event.args, event.ret),
        };
        let by_call = self.bytes_by_call.entry(call.name()).or_default();
        if delta > 0 {
            self.bytes_mapped += delta as u64;
            by_call.mapped += delta as u64;
        } else {
            self.bytes_unmapped += delta.unsigned_abs();
            by_call.unmapped += delta.unsigned_abs();
        }
    }

    /// brk returns the new break; the bytes moved are the difference to
    /// the previous one (unknown for the first brk seen).
    fn brk_delta(&mut self, new_brk: u64) -> i64 {
        let delta = self
            .last_brk
            .map(|old| new_brk as i64 - old as i64)
            .unwrap_or(0);
        self.last_brk = Some(new_brk);
        delta
    }
}

/// The power-of-two bucket a length falls in, by its upper bound.
pub fn size_class(len: u64) -> u64 {
    len.max(1).checked_next_power_of_two().unwrap_or(1 << 63)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MappedBytes {
    pub mapped: u64,
    pub unmapped: u64,
}

/// Every traced process, by pid, and the detectors' thresholds.
#[derive(Debug)]
pub struct Processes {
    pub detector: Detector,
    pub by_pid: BTreeMap<u32, ProcessState>,
    /// Files that mmap calls mapped, by (pid, address), found before their
    /// events are applied.
    file_names: HashMap<(u32, u64), Arc<str>>,
}

/// What applying one event produced, for the outputs.
#[derive(Clone, Debug)]
pub struct Applied {
    pub flags: Flags,
    /// The process's count after the event (the newest reading).
    pub count: Option<i64>,
    /// The mapping(s) the call touched, when known (`mappings`).
    pub mapping: Option<Arc<str>>,
    /// The process's name, when the thread that made the call has another
    /// (`redis-server` for a `jemalloc_bg_thd` call): lines show both.
    pub process_comm: Option<String>,
    /// A change of the count outside a traced call (`EventKind::Change`):
    /// its effect on the count. None when it was no change after all.
    pub change: Option<i64>,
}

impl Processes {
    pub fn new(detector: Detector) -> Processes {
        Processes {
            detector,
            by_pid: BTreeMap::new(),
            file_names: HashMap::new(),
        }
    }

    /// Names a process's mappings from a /proc/PID/maps snapshot.
    pub fn seed_mappings(&mut self, pid: u32, maps: &str) {
        self.entry(pid).space = AddressSpace::from_maps(maps);
    }

    /// Takes in a process as a snapshot found it (at attach, after an exec,
    /// at first sight, or from a recording): its count, mappings and
    /// allocator (`exe`: its executable, for an allocator linked in), and a
    /// name from its command line if it has none yet.
    pub fn snapshot(&mut self, info: &ProcessInfo, exe: Option<&Path>) {
        let known = self.by_pid.get(&info.pid).map(|s| s.comm.clone());
        let comm = known
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| program_name(info.cmdline.split_whitespace().next().unwrap_or("")));
        let count = (!info.maps.is_empty()).then(|| maps_snapshot_count(&info.maps));
        self.attach(info.pid, comm, count, info.at_ns);
        self.seed_mappings(info.pid, &info.maps);
        if !info.maps.is_empty() {
            self.set_allocator(info.pid, allocator::detect(&info.maps, exe));
        }
    }

    /// Whether a snapshot named the process's mappings since its last exec.
    pub fn knows_mappings(&self, pid: u32) -> bool {
        self.by_pid
            .get(&pid)
            .is_some_and(|state| state.space.is_seeded())
    }

    /// The file and file offset of each address, by the process's map: what
    /// symbolizes a stack after the process is gone.
    pub fn files_of(&self, pid: u32, addrs: &[u64]) -> Vec<Option<(Arc<str>, u64)>> {
        let space = self.by_pid.get(&pid).map(|s| &s.space);
        addrs
            .iter()
            .map(|addr| space.and_then(|s| s.file_offset(*addr)))
            .collect()
    }

    /// The file the mmap returning `start` mapped, for when its event is
    /// applied.
    pub fn name_file_mapping(&mut self, pid: u32, start: u64, path: Arc<str>) {
        self.note_library(pid, &path);
        self.file_names.insert((pid, start), path);
    }

    /// Starts tracking a process whose count was read from /proc.
    pub fn attach(&mut self, pid: u32, comm: String, count: Option<u64>, now_ns: u64) {
        let (warn_at, limit) = (self.detector.warn_at, self.detector.limit);
        let state = self.entry(pid);
        state.comm = comm;
        state.count_at_attach = count;
        if let Some(count) = count {
            state.observe_count(count as i32, now_ns, limit);
            state.above_warn = count >= warn_at;
        }
    }

    fn entry(&mut self, pid: u32) -> &mut ProcessState {
        self.by_pid
            .entry(pid)
            .or_insert_with(|| ProcessState::new(pid))
    }

    pub fn apply(&mut self, event: &Event) -> Applied {
        let detector = self.detector;
        let file_name = if event.kind == EventKind::Syscall as u8
            && event.call == Call::Mmap as u8
            && !self.file_names.is_empty()
        {
            self.file_names.remove(&(event.pid, event.ret as u64))
        } else {
            None
        };
        let state = self.entry(event.pid);
        let kind = EventKind::from_u8(event.kind);
        // A process is named as ps names it, by its main thread (which an
        // exec makes of the thread that calls it); another thread's name
        // (jemalloc_bg_thd, say) stands in only until a better one is known.
        let comm = comm_str(&event.comm);
        let by_main_thread = event.tid == event.pid && kind != Some(EventKind::Exit);
        let process_comm = if !comm.is_empty() && (by_main_thread || state.comm.is_empty()) {
            state.comm = comm;
            None
        } else {
            (state.comm != comm).then(|| state.comm.clone())
        };
        if kind == Some(EventKind::Exec) {
            // A new address space: the old peak says nothing about it.
            state.execs += 1;
            state.count = None;
            state.peak = 0;
            state.space = AddressSpace::default();
            state.allocator = None;
            state.history = CountHistory::default();
        }
        let mapping = state.space.apply(event, file_name);
        let (flags, above) = detector.inspect(event, state.above_warn);
        state.above_warn = above;
        if flags.near_limit {
            state.near_limit += 1;
        }
        let prior = state.count;
        state.observe_count(event.vmas_after, event.count_ns, detector.limit);
        let mut change = None;
        match kind {
            Some(EventKind::Change) => {
                let source = Source::of(event);
                // Found between calls, the change is measured from the
                // newest count known: a thread that came and went meanwhile
                // had its calls told.
                let before = match (source, prior) {
                    (Source::BetweenCalls, Some(prior)) => prior,
                    _ => i64::from(event.vmas_before),
                };
                let delta = i64::from(event.vmas_after) - before;
                if delta != 0 {
                    state.changes.add(source, delta);
                    change = Some(delta);
                }
                if flags.split
                    && let Some(call) = detect::change_call(event)
                {
                    state.splits += 1;
                    *state.splits_by_call.entry(call.name()).or_default() += 1;
                    let cut = mapping.as_deref().unwrap_or("unknown").to_string();
                    *state.splits_by_mapping.entry(cut).or_default() += 1;
                }
            }
            Some(EventKind::Syscall) => {
                if let Some(call) = Call::from_u8(event.call) {
                    state.count_call(call, event, flags, detector.limit);
                }
                let added = i64::from(event.vmas_after) - i64::from(event.vmas_before);
                if added > 0 && detect::delta_is_exact(event) {
                    if flags.split {
                        bump(&mut state.added_by, "split", added as u64);
                    } else {
                        let how = grown_by(mapping.as_deref().unwrap_or("unknown"));
                        bump(&mut state.added_by, &how, added as u64);
                    }
                }
                if flags.split {
                    let cut = mapping.as_deref().unwrap_or("unknown");
                    if let Some(call) = Call::from_u8(event.call) {
                        *state.splits_by_call.entry(call.name()).or_default() += 1;
                        let kind = mapping_kind(cut);
                        *state
                            .splits_by_call_and_kind
                            .entry((call.name(), kind))
                            .or_default() += 1;
                    }
                    bump(&mut state.splits_by_mapping, cut, 1);
                }
            }
            Some(EventKind::Exit) => {
                state.exited = true;
                state.space = AddressSpace::default();
                state.history = CountHistory::default();
            }
            Some(EventKind::Fork) => {
                let child = event.args[0] as u32;
                let parent_comm = state.comm.clone();
                // The child starts with a copy of its parent's mappings.
                let parent_space = state.space.clone();
                let child_state = self.entry(child);
                if child_state.comm.is_empty() {
                    child_state.comm = parent_comm;
                }
                if !child_state.space.is_seeded() {
                    child_state.space = parent_space;
                }
            }
            _ => {}
        }
        let count = self.by_pid.get(&event.pid).and_then(|s| s.count);
        Applied {
            flags,
            count,
            mapping,
            process_comm,
            change,
        }
    }

    pub fn set_allocator(&mut self, pid: u32, allocator: Detected) {
        self.entry(pid).allocator = Some(allocator);
    }

    /// Takes in a library the process mapped: the allocator may show only
    /// now (the C library is mapped after the exec snapshot was read).
    fn note_library(&mut self, pid: u32, path: &str) {
        let Some(found) = allocator::of_library(path) else {
            return;
        };
        let state = self.entry(pid);
        if state
            .allocator
            .is_none_or(|known| known.is_outranked_by(found))
        {
            state.allocator = Some(found);
        }
    }

    pub fn mark_exited(&mut self, pid: u32) {
        if let Some(state) = self.by_pid.get_mut(&pid) {
            state.exited = true;
        }
    }

    pub fn all_exited(&self) -> bool {
        self.by_pid.values().all(|s| s.exited)
    }
}

fn as_text<S: serde::Serializer>(
    allocator: &Option<Detected>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match allocator {
        Some(detected) => serializer.collect_str(detected),
        None => serializer.serialize_none(),
    }
}

/// The kind of a mapping's name: `anon` (with `[anon:...]`), `[heap]`,
/// `[stack]`, `unknown`, else `file`.
/// Adds `n` under `key`, allocating the key only the first time: a split
/// storm bumps the same few keys for every call.
fn bump(tally: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    match tally.get_mut(key) {
        Some(count) => *count += n,
        None => {
            tally.insert(key.to_string(), n);
        }
    }
}

/// What a new mapping grew the count by: files by their directory, the
/// rest by kind.
fn grown_by(mapping: &str) -> String {
    match mapping_kind(mapping) {
        "file" => match mapping.rsplit_once('/') {
            Some((dir, _)) if mapping.starts_with('/') => format!("files in {dir}/"),
            _ => "files".to_string(),
        },
        kind => kind.to_string(),
    }
}

pub fn mapping_kind(name: &str) -> &'static str {
    match name {
        "anon" => "anon",
        "[heap]" => "[heap]",
        "[stack]" => "[stack]",
        "unknown" => "unknown",
        n if n.starts_with("[anon") => "anon",
        n if n.starts_with('[') => "special",
        _ => "file",
    }
}

/// A program's name as the kernel keeps it (`comm`): the file name of its
/// path, at most 15 bytes.
pub fn program_name(path: &str) -> String {
    path.rsplit('/')
        .next()
        .unwrap_or("")
        .chars()
        .take(15)
        .collect()
}

pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syscall(
        pid: u32,
        call: Call,
        args: [u64; 6],
        ret: i64,
        counts: (i32, i32),
        ns: u64,
    ) -> Event {
        let mut event = Event::zeroed();
        event.kind = EventKind::Syscall as u8;
        event.call = call as u8;
        event.pid = pid;
        event.tid = pid;
        event.args = args;
        event.ret = ret;
        event.vmas_before = counts.0;
        event.vmas_after = counts.1;
        event.enter_ns = ns;
        event.exit_ns = ns + 10;
        event.count_ns = ns + 5;
        event.comm[..4].copy_from_slice(b"test");
        event
    }

    #[test]
    fn a_process_is_named_by_its_main_thread() {
        let mut processes = Processes::new(Detector::new(65530, 0.9));
        let mut by_thread = syscall(7, Call::Munmap, [0; 6], 0, (9, 9), 0);
        by_thread.tid = 8;
        by_thread.comm = [0; 16];
        by_thread.comm[..15].copy_from_slice(b"jemalloc_bg_thd");
        processes.apply(&by_thread);
        // Nothing better known yet: the thread's name stands in.
        assert_eq!(processes.by_pid[&7].comm, "jemalloc_bg_thd");
        let mut by_main = syscall(7, Call::Mmap, [0; 6], 0, (9, 10), 10);
        by_main.comm = [0; 16];
        by_main.comm[..12].copy_from_slice(b"redis-server");
        processes.apply(&by_main);
        let applied = processes.apply(&by_thread);
        assert_eq!(processes.by_pid[&7].comm, "redis-server");
        // The line names both: the process, and the thread that called.
        assert_eq!(applied.process_comm.as_deref(), Some("redis-server"));
    }

    #[test]
    fn count_follows_the_newest_reading_even_out_of_order() {
        let mut processes = Processes::new(Detector::new(65530, 0.9));
        processes.attach(7, "test".into(), Some(40), 0);
        processes.apply(&syscall(
            7,
            Call::Mmap,
            [0, 4096, 3, 0x22, 0, 0],
            0x1000,
            (40, 42),
            2000,
        ));
        // An older call of another thread, delivered late.
        processes.apply(&syscall(
            7,
            Call::Mmap,
            [0, 4096, 3, 0x22, 0, 0],
            0x2000,
            (40, 41),
            1000,
        ));
        let state = &processes.by_pid[&7];
        assert_eq!(state.count, Some(42));
        assert_eq!(state.peak, 42);
        assert_eq!(state.calls["mmap"], 2);
        assert_eq!(state.bytes_mapped, 8192);
    }

    #[test]
    fn splits_and_enomem_are_counted() {
        let mut processes = Processes::new(Detector::new(100, 0.9));
        let mut split = syscall(1, Call::Munmap, [0x1000, 4096, 0, 0, 0, 0], 0, (50, 51), 10);
        split.locked = 1;
        processes.apply(&split);
        processes.apply(&syscall(
            1,
            Call::Munmap,
            [0x3000, 4096, 0, 0, 0, 0],
            -12,
            (100, 100),
            20,
        ));
        let state = &processes.by_pid[&1];
        assert_eq!((state.splits, state.enomem), (1, 1));
        assert_eq!(state.failed_calls, 1);
        assert_eq!(state.near_limit, 1);
        assert_eq!(state.bytes_unmapped, 4096);
        assert_eq!(state.headroom(100), Some(0));
    }

    #[test]
    fn brk_bytes_come_from_successive_breaks() {
        let mut processes = Processes::new(Detector::new(65530, 0.9));
        processes.apply(&syscall(3, Call::Brk, [0; 6], 0x10000, (5, 5), 1));
        processes.apply(&syscall(
            3,
            Call::Brk,
            [0x31000, 0, 0, 0, 0, 0],
            0x31000,
            (5, 6),
            2,
        ));
        processes.apply(&syscall(
            3,
            Call::Brk,
            [0x21000, 0, 0, 0, 0, 0],
            0x21000,
            (6, 6),
            3,
        ));
        let state = &processes.by_pid[&3];
        assert_eq!(state.bytes_mapped, 0x21000);
        assert_eq!(state.bytes_unmapped, 0x10000);
        assert_eq!(
            state.bytes_by_call["brk"],
            MappedBytes {
                mapped: 0x21000,
                unmapped: 0x10000
            }
        );
    }

    fn change(pid: u32, counts: (i32, i32), source: i64, counted: u8, ns: u64) -> Event {
        let mut event = Event::zeroed();
        event.kind = EventKind::Change as u8;
        event.pid = pid;
        event.tid = pid;
        event.ret = source;
        event.counted = counted;
        event.locked = u8::from(counted == vmatrace_common::count_mode::LOCK);
        event.vmas_before = counts.0;
        event.vmas_after = counts.1;
        event.count_ns = ns;
        event.exit_ns = ns;
        event
    }

    #[test]
    fn changes_outside_calls_set_the_count_and_are_told_by_source() {
        use vmatrace_common::{change_nr, count_mode};
        let mut processes = Processes::new(Detector::new(100, 0.9));
        processes.attach(4, "test".into(), Some(20), 0);
        // Measured under the lock, in close(2): exact as it is.
        let applied = processes.apply(&change(4, (20, 12), 3, count_mode::LOCK, 10));
        assert_eq!((applied.change, applied.count), (Some(-8), Some(12)));
        // Up to the NEAR-LIMIT threshold outside any call: flagged.
        let applied = processes.apply(&change(4, (12, 95), change_nr::OUTSIDE, 0, 20));
        assert!(applied.flags.near_limit);
        assert!(!applied.flags.split);
        // Found between calls: measured from the newest count known, so a
        // change another thread's calls already told is no change.
        let applied = processes.apply(&change(
            4,
            (12, 95),
            change_nr::UNKNOWN,
            count_mode::SYSCALL,
            30,
        ));
        assert_eq!(applied.change, None);
        let applied = processes.apply(&change(
            4,
            (90, 97),
            change_nr::UNKNOWN,
            count_mode::SYSCALL,
            40,
        ));
        assert_eq!(applied.change, Some(2));
        let state = &processes.by_pid[&4];
        assert_eq!((state.count, state.peak), (Some(97), 97));
        assert_eq!(state.changes.total(), 3);
        assert!(state.calls.is_empty(), "no call was counted");
    }

    #[test]
    fn exit_and_exec_update_the_lifecycle() {
        let mut processes = Processes::new(Detector::new(65530, 0.9));
        let mut exec = Event::zeroed();
        exec.kind = EventKind::Exec as u8;
        exec.pid = 9;
        exec.vmas_after = 12;
        exec.exit_ns = 5;
        exec.count_ns = 5;
        processes.apply(&exec);
        assert_eq!(processes.by_pid[&9].count, Some(12));
        assert!(!processes.all_exited());
        let mut exit = exec;
        exit.kind = EventKind::Exit as u8;
        exit.vmas_after = -1;
        processes.apply(&exit);
        assert!(processes.all_exited());
    }
}
