//! What holds a process's VMAs: its mappings sorted into groups that
//! explain the count (holes, protection patchworks, thread stacks, mapped
//! files, libraries, named, special, other), each with what it usually
//! means and what to do. Every counted VMA lands in exactly one group, so
//! the groups add up to the count.
//!
//! Pure: the input is the parsed maps (or smaps) text and, for a live
//! process, what /proc said about its threads and NUMA policies.

use std::collections::{BTreeMap, HashMap, HashSet};

use procfs::process::{MMPermissions, MMapPath, VmFlags};
use serde::Serialize;

use crate::{
    bytes::human_bytes,
    model::maps_file::{Vma, is_vsyscall},
};

/// The groups, in the order ties are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Holes,
    Protections,
    ThreadStacks,
    Files,
    Libraries,
    Named,
    Special,
    Other,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Holes => "holes",
            Kind::Protections => "protections",
            Kind::ThreadStacks => "thread_stacks",
            Kind::Files => "files",
            Kind::Libraries => "libraries",
            Kind::Named => "named",
            Kind::Special => "special",
            Kind::Other => "other",
        }
    }
}

/// What a live process adds to its maps text.
#[derive(Clone, Debug, Default)]
pub struct LiveFacts {
    /// Threads other than the main one.
    pub threads: usize,
    /// The stack pointers of those that could be read (a blocked thread's
    /// `/proc/PID/task/TID/syscall`).
    pub thread_sps: Vec<u64>,
    /// NUMA policy by VMA start (`/proc/PID/numa_maps`).
    pub policies: HashMap<u64, String>,
}

/// The anatomy of one address space.
#[derive(Clone, Debug, Serialize)]
pub struct Anatomy {
    /// VMAs as the kernel counts them (`[vsyscall]` is listed in maps but
    /// not counted).
    pub vmas: u64,
    pub limit: u64,
    /// Largest first; only groups that hold VMAs.
    pub groups: Vec<Group>,
    /// Adjacent pairs the kernel kept apart, by the first difference
    /// found: `protection`, `name`, `file_offset`, `flags`, `policy`,
    /// `unknown` (the same as far as the input shows: anon_vma, a
    /// userfaultfd context).
    pub merge_blockers: BTreeMap<&'static str, u64>,
    /// How thread stacks were found: `threads` (a live process's stack
    /// pointers) or `layout` (a guard page below a stack-sized mapping).
    pub thread_stacks_from: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub kind: Kind,
    pub vmas: u64,
    /// Of the limit, in percent.
    pub share_of_limit: f64,
    pub bytes: u64,
    pub start: u64,
    pub end: u64,
    /// The median size of its VMAs.
    pub typical_size: u64,
    /// What it holds, largest first (files, directories, runs, names,
    /// kinds, reasons).
    pub parts: Vec<Part>,
    /// What this group usually means, with its numbers.
    pub meaning: String,
    /// What to do about it.
    pub advice: String,
    /// A few of its lines, as the input has them.
    pub examples: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Part {
    /// `file`, `directory`, `run`, `name`, `kind`, `reason`, `threads`.
    pub what: &'static str,
    pub name: String,
    pub vmas: u64,
    pub bytes: u64,
}

/// Anonymous pieces at most this far apart are taken for pieces of one
/// former mapping (jemalloc's extents and the holes between them are
/// smaller; separate mappings are placed further apart or adjacent).
const HOLE_GAP_MAX: u64 = 2 << 20;
/// Fewer pieces than this are not a pattern.
const HOLE_RUN_MIN: usize = 3;
/// A saved file names no threads: a `---p` guard of at most this size
/// right below an anonymous `rw-p` mapping of a stack's size is taken
/// for a thread's stack.
const GUARD_MAX: u64 = 1 << 20;
const STACK_SIZES: std::ops::RangeInclusive<u64> = (16 << 10)..=(64 << 20);
/// Parts listed per group, at most.
const PARTS_MAX: usize = 5;

/// What backs a VMA, as far as grouping goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Backing {
    Anonymous,
    Named(String),
    File(String),
    Special(String),
}

fn backing(vma: &Vma) -> Backing {
    match &vma.map.pathname {
        MMapPath::Anonymous => Backing::Anonymous,
        MMapPath::Heap => Backing::Special("[heap]".into()),
        MMapPath::Stack => Backing::Special("[stack] (the main thread's)".into()),
        // Kernels before 4.5 named thread stacks themselves.
        MMapPath::TStack(_) => Backing::Anonymous,
        MMapPath::Vdso => Backing::Special("[vdso]".into()),
        MMapPath::Vvar => Backing::Special("[vvar]".into()),
        MMapPath::Vsyscall => Backing::Special("[vsyscall]".into()),
        MMapPath::Rollup => Backing::Special("[rollup]".into()),
        MMapPath::Vsys(_) => Backing::Special("SysV shared memory".into()),
        MMapPath::Other(name) if name.starts_with("anon:") || name.starts_with("anon_shmem:") => {
            Backing::Named(format!("[{name}]"))
        }
        MMapPath::Other(name) => Backing::Special(format!("[{name}]")),
        MMapPath::Path(path) => {
            let path = path.to_string_lossy();
            let path = path.strip_suffix(" (deleted)").unwrap_or(&path);
            match path {
                p if p.starts_with("/dev/zero") => {
                    Backing::Special("shared anonymous (/dev/zero)".into())
                }
                p if p.starts_with("/dev/") => Backing::Special("devices".into()),
                p if p.starts_with("/[aio]") => Backing::Special("aio rings".into()),
                p if p.starts_with("/memfd:") => Backing::Special("memfd".into()),
                // anon_inode:[io_uring], anon_inode:[perf_event], ...: no file.
                p if !p.starts_with('/') => Backing::Special(p.to_string()),
                p => Backing::File(p.to_string()),
            }
        }
    }
}

fn is_shared_object(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}

/// The anatomy of `vmas` (parsed from `text`), against `limit`.
pub fn classify(
    vmas: &[Vma],
    text: &str,
    live: Option<&LiveFacts>,
    limit: u64,
    examples: usize,
) -> Anatomy {
    let vmas: Vec<&Vma> = vmas.iter().filter(|v| !is_vsyscall(v)).collect();
    let backings: Vec<Backing> = vmas.iter().map(|v| backing(v)).collect();
    let mut kinds: Vec<Option<Kind>> = vec![None; vmas.len()];
    let adjacent = |i: usize| i > 0 && vmas[i - 1].end() == vmas[i].start();

    // Files with code are libraries and executables; the anonymous .bss
    // right after a library's data belongs to it.
    let code: HashSet<&str> = vmas
        .iter()
        .zip(&backings)
        .filter_map(|(v, b)| match b {
            Backing::File(p) if v.map.perms.contains(MMPermissions::EXECUTE) => Some(p.as_str()),
            Backing::File(p) if is_shared_object(p) => Some(p.as_str()),
            _ => None,
        })
        .collect();
    for i in 0..vmas.len() {
        kinds[i] = match &backings[i] {
            Backing::File(p) if code.contains(p.as_str()) => Some(Kind::Libraries),
            Backing::File(_) => Some(Kind::Files),
            Backing::Named(_) => Some(Kind::Named),
            Backing::Special(_) => Some(Kind::Special),
            Backing::Anonymous => {
                let after_library = adjacent(i)
                    && kinds[i - 1] == Some(Kind::Libraries)
                    && vmas[i - 1].map.perms.contains(MMPermissions::WRITE)
                    && vmas[i].map.perms.contains(MMPermissions::WRITE);
                after_library.then_some(Kind::Libraries)
            }
        };
    }

    let mut stacks = Stacks {
        kinds: &mut kinds,
        source: vec![""; vmas.len()],
    };
    let thread_stacks_from = match live {
        Some(live) => {
            stacks.by_stack_pointers(&vmas, &backings, &live.thread_sps);
            // A running thread's stack pointer cannot be read: its stack
            // is found as a saved file's would be, for as many threads.
            let unread = live.threads.saturating_sub(live.thread_sps.len());
            stacks.by_layout(&vmas, &backings, unread, RUNNING_THREADS);
            // The stack-shaped pairs no live thread owns stay where they
            // fall: glibc's cache of exited threads' stacks looks the
            // same as a runtime's guarded region.
            "threads"
        }
        None => {
            stacks.by_layout(&vmas, &backings, usize::MAX, LAYOUT);
            "layout"
        }
    };
    let stack_source = stacks.source;

    // Anonymous pieces touching another: the kernel kept them apart.
    let free = |kinds: &[Option<Kind>], i: usize| {
        backings[i] == Backing::Anonymous && matches!(kinds[i], None | Some(Kind::Protections))
    };
    for i in 1..vmas.len() {
        if adjacent(i) && free(&kinds, i - 1) && free(&kinds, i) {
            kinds[i - 1] = Some(Kind::Protections);
            kinds[i] = Some(Kind::Protections);
        }
    }
    let runs = mark_hole_runs(&vmas, &backings, &mut kinds);
    for kind in kinds.iter_mut().filter(|k| k.is_none()) {
        *kind = Some(Kind::Other);
    }
    let kinds: Vec<Kind> = kinds
        .into_iter()
        .map(|k| k.unwrap_or(Kind::Other))
        .collect();

    let blockers = merge_blockers(&vmas, &backings, live);
    let mut anatomy = Anatomy {
        vmas: vmas.len() as u64,
        limit,
        groups: Vec::new(),
        merge_blockers: BTreeMap::new(),
        thread_stacks_from,
    };
    for (reason, _) in &blockers {
        *anatomy.merge_blockers.entry(reason).or_default() += 1;
    }
    let facts = Facts {
        vmas: &vmas,
        backings: &backings,
        kinds: &kinds,
        stack_source: &stack_source,
        runs: &runs,
        blockers: &blockers,
        live,
        limit,
        text,
        examples,
    };
    for kind in [
        Kind::Holes,
        Kind::Protections,
        Kind::ThreadStacks,
        Kind::Files,
        Kind::Libraries,
        Kind::Named,
        Kind::Special,
        Kind::Other,
    ] {
        if let Some(group) = facts.group(kind) {
            anatomy.groups.push(group);
        }
    }
    anatomy
        .groups
        .sort_by(|a, b| b.vmas.cmp(&a.vmas).then(a.kind.cmp(&b.kind)));
    anatomy
}

/// Where a thread stack was found.
const STACK_POINTER: &str = "found by a thread's stack pointer";
const RUNNING_THREADS: &str = "of running threads, found by their layout";
const LAYOUT: &str = "guessed from the layout (a saved file names no threads)";

/// Thread stacks as they are found, and how each was.
struct Stacks<'k> {
    kinds: &'k mut [Option<Kind>],
    source: Vec<&'static str>,
}

impl Stacks<'_> {
    fn mark(&mut self, i: usize, source: &'static str) {
        self.kinds[i] = Some(Kind::ThreadStacks);
        self.source[i] = source;
    }

    /// A live thread's stack: the VMA its stack pointer is in, and the
    /// guard right below it.
    fn by_stack_pointers(&mut self, vmas: &[&Vma], backings: &[Backing], sps: &[u64]) {
        for &sp in sps {
            let i = vmas.partition_point(|v| v.end() <= sp);
            if i >= vmas.len() || vmas[i].start() > sp || backings[i] != Backing::Anonymous {
                continue;
            }
            self.mark(i, STACK_POINTER);
            if i > 0
                && vmas[i - 1].end() == vmas[i].start()
                && backings[i - 1] == Backing::Anonymous
                && is_inaccessible(vmas[i - 1])
            {
                self.mark(i - 1, STACK_POINTER);
            }
        }
    }

    /// Thread stacks guessed from the layout glibc's pthread_create
    /// leaves: an inaccessible guard right below the stack; at most
    /// `wanted` of them.
    fn by_layout(
        &mut self,
        vmas: &[&Vma],
        backings: &[Backing],
        wanted: usize,
        source: &'static str,
    ) {
        let mut found = 0;
        for i in 1..vmas.len() {
            if found == wanted {
                return;
            }
            let (guard, stack) = (vmas[i - 1], vmas[i]);
            let fits = guard.end() == stack.start()
                && backings[i - 1] == Backing::Anonymous
                && backings[i] == Backing::Anonymous
                && self.kinds[i - 1].is_none()
                && self.kinds[i].is_none()
                && is_inaccessible(guard)
                && guard.size() <= GUARD_MAX
                && stack
                    .map
                    .perms
                    .contains(MMPermissions::READ | MMPermissions::WRITE)
                && !stack.map.perms.contains(MMPermissions::EXECUTE)
                && STACK_SIZES.contains(&stack.size());
            if fits {
                self.mark(i - 1, source);
                self.mark(i, source);
                found += 1;
            }
        }
    }
}

fn is_inaccessible(vma: &Vma) -> bool {
    !vma.map
        .perms
        .intersects(MMPermissions::READ | MMPermissions::WRITE | MMPermissions::EXECUTE)
}

/// A run of holes: its first and last VMA (indices) and its pieces.
#[derive(Clone, Copy, Debug)]
struct Run {
    first: usize,
    last: usize,
    pieces: usize,
}

/// Anonymous pieces not far apart with gaps between them, no other
/// mapping among them.
fn mark_hole_runs(vmas: &[&Vma], backings: &[Backing], kinds: &mut [Option<Kind>]) -> Vec<Run> {
    let mut runs = Vec::new();
    let loose =
        |kinds: &[Option<Kind>], i: usize| backings[i] == Backing::Anonymous && kinds[i].is_none();
    let mut i = 0;
    while i < vmas.len() {
        if !loose(kinds, i) {
            i += 1;
            continue;
        }
        let mut last = i;
        while last + 1 < vmas.len()
            && loose(kinds, last + 1)
            && vmas[last + 1].start() > vmas[last].end()
            && vmas[last + 1].start() - vmas[last].end() <= HOLE_GAP_MAX
        {
            last += 1;
        }
        let pieces = last - i + 1;
        if pieces >= HOLE_RUN_MIN {
            for kind in &mut kinds[i..=last] {
                *kind = Some(Kind::Holes);
            }
            runs.push(Run {
                first: i,
                last,
                pieces,
            });
        }
        i = last + 1;
    }
    runs
}

/// Why each adjacent pair of like mappings stayed two VMAs: (reason,
/// index of the upper one).
fn merge_blockers(
    vmas: &[&Vma],
    backings: &[Backing],
    live: Option<&LiveFacts>,
) -> Vec<(&'static str, usize)> {
    // The flags perms already say, and the ones the kernel ignores.
    let beside_perms =
        VmFlags::RD | VmFlags::WR | VmFlags::EX | VmFlags::MR | VmFlags::MW | VmFlags::ME;
    let mut blockers = Vec::new();
    for i in 1..vmas.len() {
        let (a, b) = (vmas[i - 1], vmas[i]);
        if a.end() != b.start() {
            continue;
        }
        let named = |b: &Backing| match b {
            Backing::Named(name) => Some(name.clone()),
            _ => None,
        };
        let comparable = match (&backings[i - 1], &backings[i]) {
            (Backing::Anonymous | Backing::Named(_), Backing::Anonymous | Backing::Named(_)) => {
                true
            }
            (Backing::File(x), Backing::File(y)) => x == y,
            _ => false,
        };
        if !comparable {
            continue;
        }
        let policy = |v: &Vma| live.and_then(|l| l.policies.get(&v.start()));
        let file_gap =
            matches!(backings[i], Backing::File(_)) && b.map.offset != a.map.offset + a.size();
        let reason = if a.map.perms != b.map.perms {
            "protection"
        } else if named(&backings[i - 1]) != named(&backings[i]) {
            "name"
        } else if file_gap {
            "file_offset"
        } else if matches!((a.flags, b.flags), (Some(x), Some(y)) if (x - beside_perms) != (y - beside_perms))
        {
            "flags"
        } else if matches!((policy(a), policy(b)), (Some(x), Some(y)) if x != y) {
            "policy"
        } else {
            "unknown"
        };
        blockers.push((reason, i));
    }
    blockers
}

/// Everything a group's numbers and words are made from.
struct Facts<'a> {
    vmas: &'a [&'a Vma],
    backings: &'a [Backing],
    kinds: &'a [Kind],
    stack_source: &'a [&'static str],
    runs: &'a [Run],
    blockers: &'a [(&'static str, usize)],
    live: Option<&'a LiveFacts>,
    limit: u64,
    text: &'a str,
    examples: usize,
}

impl Facts<'_> {
    fn members(&self, kind: Kind) -> Vec<usize> {
        (0..self.vmas.len())
            .filter(|&i| self.kinds[i] == kind)
            .collect()
    }

    fn group(&self, kind: Kind) -> Option<Group> {
        let members = self.members(kind);
        if members.is_empty() {
            return None;
        }
        let mut sizes: Vec<u64> = members.iter().map(|&i| self.vmas[i].size()).collect();
        sizes.sort_unstable();
        // A stack's size is what it holds, not its guard's.
        let mut typical: Vec<u64> = members
            .iter()
            .filter(|&&i| kind != Kind::ThreadStacks || !is_inaccessible(self.vmas[i]))
            .map(|&i| self.vmas[i].size())
            .collect();
        typical.sort_unstable();
        let typical = typical
            .get(typical.len() / 2)
            .copied()
            .unwrap_or(sizes[sizes.len() / 2]);
        let vmas = members.len() as u64;
        let parts = self.parts(kind, &members);
        let (meaning, advice) = self.words(kind, vmas, &parts, typical);
        Some(Group {
            kind,
            vmas,
            share_of_limit: percent(vmas, self.limit),
            bytes: sizes.iter().sum(),
            start: self.vmas[members[0]].start(),
            end: self.vmas[*members.last().unwrap_or(&0)].end(),
            typical_size: typical,
            parts: parts.into_iter().take(PARTS_MAX).collect(),
            meaning,
            advice,
            examples: self.examples_of(&members),
        })
    }

    /// Lines spread over the group: its first, its last, and between.
    fn examples_of(&self, members: &[usize]) -> Vec<String> {
        let n = self.examples.min(members.len());
        let mut picked: Vec<usize> = (0..n)
            .map(|k| {
                if n == 1 {
                    0
                } else {
                    k * (members.len() - 1) / (n - 1)
                }
            })
            .collect();
        picked.dedup();
        picked
            .into_iter()
            .map(|k| self.vmas[members[k]].line(self.text).to_string())
            .collect()
    }

    fn parts(&self, kind: Kind, members: &[usize]) -> Vec<Part> {
        let mut tally: HashMap<(&'static str, String), (u64, u64)> = HashMap::new();
        let mut add = |what: &'static str, name: String, bytes: u64| {
            let entry = tally.entry((what, name)).or_default();
            entry.0 += 1;
            entry.1 += bytes;
        };
        match kind {
            Kind::Holes => {
                let runs: Vec<Part> = self
                    .runs
                    .iter()
                    .map(|run| Part {
                        what: "run",
                        name: format!(
                            "{:#x}-{:#x}",
                            self.vmas[run.first].start(),
                            self.vmas[run.last].end()
                        ),
                        vmas: run.pieces as u64,
                        bytes: self.vmas[run.last].end() - self.vmas[run.first].start(),
                    })
                    .collect();
                return runs.sorted_by_vmas();
            }
            Kind::Protections => {
                for &(reason, i) in self.blockers {
                    if self.kinds[i] == Kind::Protections {
                        add("reason", reason.to_string(), 0);
                    }
                }
            }
            Kind::ThreadStacks => {
                for &i in members {
                    if !is_inaccessible(self.vmas[i]) {
                        add(
                            "stacks",
                            self.stack_source[i].to_string(),
                            self.vmas[i].size(),
                        );
                    }
                }
            }
            Kind::Files | Kind::Libraries | Kind::Named | Kind::Special => {
                for &i in members {
                    let name = match &self.backings[i] {
                        Backing::File(p) | Backing::Named(p) | Backing::Special(p) => p.clone(),
                        // A library's .bss.
                        Backing::Anonymous => continue,
                    };
                    let what = match kind {
                        Kind::Named => "name",
                        Kind::Special => "kind",
                        _ => "file",
                    };
                    add(what, name, self.vmas[i].size());
                }
            }
            Kind::Other => {}
        }
        let mut parts: Vec<Part> = tally
            .into_iter()
            .map(|((what, name), (vmas, bytes))| Part {
                what,
                name,
                vmas,
                bytes,
            })
            .collect();
        if kind == Kind::Files {
            parts = by_directory(&parts).into_iter().chain(parts).collect();
        }
        parts.sorted_by_vmas()
    }

    /// The group's meaning and advice, with its numbers.
    fn words(&self, kind: Kind, vmas: u64, parts: &[Part], typical: u64) -> (String, String) {
        let share = percent(vmas, self.limit);
        let count = |what: &str| parts.iter().filter(|p| p.what == what).count();
        let top = |what: &str| parts.iter().find(|p| p.what == what);
        match kind {
            Kind::Holes => {
                let largest = top("run");
                (
                    format!(
                        "{} run{} of anonymous pieces with gaps between them{}: pages given back \
                         inside a mapping (munmap of a range within it), each hole one more VMA",
                        self.runs.len(),
                        plural(self.runs.len()),
                        largest.map_or(String::new(), |r| format!(
                            ", the largest {} pieces over {} at {}",
                            r.vmas,
                            human_bytes(r.bytes),
                            r.name
                        )),
                    ),
                    "an allocator giving pages back: jemalloc does so with retain:false \
                     (MALLOC_CONF=retain:true keeps them mapped and purges them with madvise); \
                     glibc unmaps its mmap'd blocks whole. `vmatrace -p PID --only-flagged` names \
                     the calls that cut them"
                        .into(),
                )
            }
            Kind::Protections => {
                let reasons: Vec<String> = parts
                    .iter()
                    .filter(|p| p.what == "reason")
                    .map(|p| format!("{} {}", reason_words(&p.name), p.vmas))
                    .collect();
                (
                    format!(
                        "adjacent anonymous pieces the kernel could not merge ({})",
                        if reasons.is_empty() {
                            "why: unknown".into()
                        } else {
                            reasons.join(", ")
                        }
                    ),
                    "guard pages, JIT code (W^X), or mprotect, mlock, madvise or mbind over part \
                     of a mapping: not malloc's holes. `vmatrace -p PID --only-flagged` names the \
                     calls that cut them"
                        .into(),
                )
            }
            Kind::ThreadStacks => {
                let stacks: u64 = parts.iter().map(|p| p.vmas).sum();
                let how: Vec<String> = parts
                    .iter()
                    .map(|p| format!("{} {}", p.vmas, p.name))
                    .collect();
                let threads = self.live.map_or(String::new(), |l| {
                    format!(" ({} threads besides the main one)", l.threads)
                });
                (
                    format!(
                        "{stacks} thread stacks and their guard pages{threads}, typically {} a \
                         stack: {}",
                        human_bytes(typical),
                        how.join(", ")
                    ),
                    format!(
                        "each thread costs its VMAs whatever its stack size (ulimit -s or Java's \
                         -Xss change the size, not the count): these hold {share:.1}% of the \
                         limit; a bounded thread pool is the remedy"
                    ),
                )
            }
            Kind::Files => {
                let files = count("file");
                let dir = top("directory");
                (
                    format!(
                        "{files} file{} mapped{}",
                        plural(files),
                        dir.map_or(String::new(), |d| format!(
                            ", the most from {} ({} VMAs)",
                            d.name, d.vmas
                        ))
                    ),
                    format!(
                        "each mapped file costs a VMA or more (a file mapped in pieces, one a \
                         piece): Elasticsearch and OpenSearch require vm.max_map_count 262144, \
                         Kafka maps two index files per log segment. Raise the limit well above \
                         the files' count (sysctl -w vm.max_map_count={}), or map fewer files \
                         (fewer, larger segments)",
                        suggested_limit(self.vmas.len() as u64, self.limit)
                    ),
                )
            }
            Kind::Libraries => (
                format!(
                    "the segments of {} shared objects and executables (and their .bss)",
                    count("file")
                ),
                "a process needs these: rarely the cause".into(),
            ),
            Kind::Named => (
                format!(
                    "anonymous memory the program named (prctl PR_SET_VMA){}",
                    top("name").map_or(String::new(), |n| format!(
                        ", the most {} ({} VMAs)",
                        n.name, n.vmas
                    ))
                ),
                "the name says who made them".into(),
            ),
            Kind::Special => (
                format!(
                    "the kernel's and the loader's own: {}",
                    parts
                        .iter()
                        .map(|p| format!("{} {}", p.name, p.vmas))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                String::new(),
            ),
            Kind::Other => (
                format!(
                    "anonymous mappings on their own, typically {}: malloc's large blocks (glibc \
                     maps each block above M_MMAP_THRESHOLD, 128 KiB by default, apart), arenas, \
                     caches, runtimes' heaps",
                    human_bytes(typical)
                ),
                "many small ones: an allocator that serves them from fewer, larger mappings, or \
                 glibc's threshold raised (MALLOC_MMAP_THRESHOLD_)"
                    .into(),
            ),
        }
    }
}

/// The files' directories, as parts.
fn by_directory(files: &[Part]) -> Vec<Part> {
    let mut dirs: HashMap<&str, (u64, u64)> = HashMap::new();
    for file in files {
        let dir = file.name.rsplit_once('/').map_or("", |(d, _)| d);
        let entry = dirs.entry(dir).or_default();
        entry.0 += file.vmas;
        entry.1 += file.bytes;
    }
    dirs.into_iter()
        .map(|(dir, (vmas, bytes))| Part {
            what: "directory",
            name: format!("{dir}/"),
            vmas,
            bytes,
        })
        .collect()
}

trait SortedByVmas {
    fn sorted_by_vmas(self) -> Vec<Part>;
}

impl SortedByVmas for Vec<Part> {
    fn sorted_by_vmas(mut self) -> Vec<Part> {
        self.sort_by(|a, b| b.vmas.cmp(&a.vmas).then(a.name.cmp(&b.name)));
        self
    }
}

/// What a merge blocker means, for a person.
pub fn reason_words(reason: &str) -> &'static str {
    match reason {
        "protection" => "different protections",
        "name" => "different names",
        "file_offset" => "file offsets not contiguous",
        "flags" => "different flags (mlock, madvise)",
        "policy" => "different NUMA policies (mbind)",
        _ => "no difference the input shows (anon_vma, userfaultfd)",
    }
}

/// A limit that leaves room: twice the count, at least Elasticsearch's
/// 262144, never below the one in force.
fn suggested_limit(count: u64, limit: u64) -> u64 {
    (count * 2).max(262_144).max(limit)
}

pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::maps_file::parse;

    fn anatomy(text: &str, live: Option<&LiveFacts>) -> Anatomy {
        classify(&parse(text).unwrap(), text, live, 65530, 3)
    }

    fn group(anatomy: &Anatomy, kind: Kind) -> &Group {
        anatomy
            .groups
            .iter()
            .find(|g| g.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} in {anatomy:#?}"))
    }

    /// One anonymous mapping of `pages` pages with every other page
    /// unmapped from its second on.
    fn punched(base: u64, pieces: u64) -> String {
        (0..pieces)
            .map(|k| {
                let start = base + k * 0x2000;
                format!("{start:x}-{:x} rw-p 00000000 00:00 0 \n", start + 0x1000)
            })
            .collect()
    }

    const PROCESS: &str = "\
55de9ed93000-55de9ed95000 r--p 00000000 fe:00 247030                     /usr/bin/app
55de9ed95000-55de9ed9a000 r-xp 00002000 fe:00 247030                     /usr/bin/app
55de9ed9a000-55de9ed9d000 rw-p 00007000 fe:00 247030                     /usr/bin/app
55de9ed9d000-55de9ed9f000 rw-p 00000000 00:00 0 
55dea0000000-55dea0021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000001000 r--p 00000000 fe:00 1001                       /var/kafka/0001.index
7f0000001000-7f0000002000 r--p 00000000 fe:00 1002                       /var/kafka/0002.index
7f0000002000-7f0000003000 r--p 00000000 fe:00 1003                       /var/kafka/0002.timeindex
7f1000000000-7f1000001000 ---p 00000000 00:00 0 
7f1000001000-7f1000801000 rw-p 00000000 00:00 0 
7f2000000000-7f2000001000 r-xp 00000000 00:00 0 
7f2000001000-7f2000002000 rw-p 00000000 00:00 0 
7f3000000000-7f3000100000 rw-p 00000000 00:00 0 
7f4000000000-7f4000001000 rw-p 00000000 00:00 0                          [anon:jit cache]
7ffd1e6a6000-7ffd1e6c7000 rw-p 00000000 00:00 0                          [stack]
7ffd1e7a6000-7ffd1e7a8000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn every_vma_lands_in_one_group_and_the_groups_add_up() {
        let (low, high) = PROCESS.split_at(PROCESS.find("7ffd1e6a6000").unwrap());
        let text = format!("{low}{}{high}", punched(0x7f5000000000, 10));
        let a = anatomy(&text, None);
        assert_eq!(a.vmas, 16 + 10, "[vsyscall] is not counted");
        assert_eq!(a.groups.iter().map(|g| g.vmas).sum::<u64>(), a.vmas);
        assert_eq!(a.groups[0].kind, Kind::Holes, "largest first");
        assert_eq!(group(&a, Kind::Holes).vmas, 10);
        assert_eq!(group(&a, Kind::Holes).parts[0].vmas, 10);
        assert_eq!(
            group(&a, Kind::Libraries).vmas,
            4,
            "three segments and the .bss"
        );
        assert_eq!(group(&a, Kind::Files).vmas, 3);
        assert_eq!(
            group(&a, Kind::Files).parts[0],
            Part {
                what: "directory",
                name: "/var/kafka/".into(),
                vmas: 3,
                bytes: 3 * 4096
            }
        );
        assert_eq!(group(&a, Kind::ThreadStacks).vmas, 2, "guard and stack");
        assert_eq!(group(&a, Kind::Protections).vmas, 2, "code next to data");
        // The executable's code between its data, the guard below the
        // stack, the JIT code beside its data.
        assert_eq!(a.merge_blockers["protection"], 2 + 1 + 1);
        assert_eq!(group(&a, Kind::Named).vmas, 1);
        assert_eq!(group(&a, Kind::Special).vmas, 3);
        assert_eq!(group(&a, Kind::Other).vmas, 1);
        assert_eq!(a.groups.iter().map(|g| g.vmas).sum::<u64>(), a.vmas);
    }

    #[test]
    fn live_threads_name_their_stacks() {
        let live = LiveFacts {
            threads: 2,
            thread_sps: vec![0x7f1000800000],
            policies: HashMap::new(),
        };
        let a = anatomy(PROCESS, Some(&live));
        assert_eq!(a.thread_stacks_from, "threads");
        let stacks = group(&a, Kind::ThreadStacks);
        assert_eq!(stacks.vmas, 2);
        assert_eq!(
            stacks.meaning,
            "1 thread stacks and their guard pages (2 threads besides the main one), \
             typically 8.0MiB a stack: 1 found by a thread's stack pointer"
        );
        assert_eq!(
            stacks.typical_size,
            8 << 20,
            "the stack's size, not its guard's"
        );
    }

    #[test]
    fn why_adjacent_pieces_stayed_apart() {
        let smaps = "\
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 
VmFlags: rd wr mr mw me ac lo
7f0000001000-7f0000002000 rw-p 00000000 00:00 0 
VmFlags: rd wr mr mw me ac
7f0000002000-7f0000003000 rw-p 00000000 00:00 0 
VmFlags: rd wr mr mw me ac
7f1000000000-7f1000001000 r--p 00000000 fe:00 7                          /data/f
7f1000001000-7f1000002000 r--p 00005000 fe:00 7                          /data/f
";
        let mut live = LiveFacts::default();
        live.policies.insert(0x7f0000001000, "default".into());
        live.policies.insert(0x7f0000002000, "bind:0".into());
        let a = anatomy(smaps, Some(&live));
        assert_eq!(a.merge_blockers["flags"], 1);
        assert_eq!(a.merge_blockers["policy"], 1);
        assert_eq!(a.merge_blockers["file_offset"], 1);
        assert_eq!(group(&a, Kind::Protections).vmas, 3);
        assert_eq!(group(&a, Kind::Files).parts[1].name, "/data/f");
        assert_eq!(
            group(&a, Kind::Files).parts[1].vmas,
            2,
            "one file in pieces"
        );
    }

    #[test]
    fn a_process_at_the_limit_is_one_run_of_holes() {
        let text = punched(0x7f0000000000, 65_530);
        let a = anatomy(&text, None);
        assert_eq!(group(&a, Kind::Holes).vmas, 65_530);
        assert_eq!(group(&a, Kind::Holes).share_of_limit, 100.0);
        assert_eq!(a.groups.len(), 1);
        assert_eq!(group(&a, Kind::Holes).examples.len(), 3);
    }
}
