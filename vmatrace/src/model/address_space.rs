//! Each traced process's address space as vmatrace sees it: seeded from a
//! `/proc/PID/maps` snapshot and kept current by the events since, so every
//! event can name the mapping it touched: `[heap]`, `[stack]`, `anon`, or
//! the file behind it, and every code address can be turned into a file
//! and file offset, to symbolize a stack after the process is gone.
//!
//! Only names and file offsets are kept, not the kernel's VMA boundaries
//! (the count comes from the kernel itself): neighbouring regions of one
//! name need not be merged, and a range no snapshot or event covered has
//! no name.

use std::{collections::BTreeMap, io::BufReader, sync::Arc};

use procfs::{
    FromBufRead,
    process::{MMapPath, MemoryMaps},
};
use vmatrace_common::{Call, Event, EventKind, maps_a_file};

const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED: u64 = 0x10;
const MREMAP_DONTUNMAP: u64 = 4;

/// The label of an anonymous mapping without a name.
pub const ANON: &str = "anon";
pub const HEAP: &str = "[heap]";

/// More distinct names than this in one range are summarized.
const MAX_NAMES_IN_LABEL: usize = 3;

#[derive(Clone, Debug, Default)]
pub struct AddressSpace {
    /// Named regions by start address; they never overlap.
    regions: BTreeMap<u64, Region>,
    /// Where the brk heap begins, once known.
    heap_start: Option<u64>,
    /// Whether a snapshot of the whole address space went into it: without
    /// one, only what the events created has a name.
    seeded: bool,
}

#[derive(Clone, Debug)]
struct Region {
    end: u64,
    name: Arc<str>,
    /// For a file mapping, the file offset of its first byte: what a stack
    /// address is symbolized by once the process is gone.
    offset: Option<u64>,
}

impl Region {
    /// The part of the region from `at` on.
    fn from(&self, region_start: u64, at: u64) -> Region {
        Region {
            end: self.end,
            name: self.name.clone(),
            offset: self.offset.map(|o| o + (at - region_start)),
        }
    }
}

impl AddressSpace {
    /// The address space a `/proc/PID/maps` text describes.
    pub fn from_maps(maps: &str) -> AddressSpace {
        let mut space = AddressSpace {
            seeded: true,
            ..AddressSpace::default()
        };
        let Ok(parsed) = MemoryMaps::from_buf_read(BufReader::new(maps.as_bytes())) else {
            return space;
        };
        for map in parsed {
            if map.pathname == MMapPath::Vsyscall {
                continue;
            }
            let (start, end) = map.address;
            if map.pathname == MMapPath::Heap {
                space.heap_start = Some(space.heap_start.map_or(start, |s| s.min(start)));
            }
            let offset = matches!(map.pathname, MMapPath::Path(_)).then_some(map.offset);
            space.set(start, end, label_of_path(&map.pathname), offset);
        }
        space
    }

    pub fn is_seeded(&self) -> bool {
        self.seeded
    }

    /// The distinct names of the regions in `[start, end)`, in address
    /// order, as one label (`None` if nothing known is there).
    pub fn label(&self, start: u64, end: u64) -> Option<Arc<str>> {
        let mut names: Vec<&Arc<str>> = Vec::new();
        for region in self.overlapping(start, end) {
            if !names.contains(&&region.1.name) {
                names.push(&region.1.name);
            }
        }
        match names.len() {
            0 => None,
            1 => Some(names[0].clone()),
            n => {
                let shown: Vec<&str> = names
                    .iter()
                    .take(MAX_NAMES_IN_LABEL)
                    .map(|n| n.as_ref())
                    .collect();
                let more = n.saturating_sub(MAX_NAMES_IN_LABEL);
                let tail = if more > 0 {
                    format!(" +{more} more")
                } else {
                    String::new()
                };
                Some(format!("{}{tail}", shown.join(",")).into())
            }
        }
    }

    /// The regions overlapping `[start, end)`, by start address.
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = (&u64, &Region)> {
        // The one region that begins before `start` may still reach into it.
        let before = self
            .regions
            .range(..start)
            .next_back()
            .filter(|(_, r)| r.end > start);
        let inside = self.regions.range(start..end.max(start));
        before.into_iter().chain(inside)
    }

    /// Forgets the names in `[start, end)`, cutting regions that reach
    /// beyond it.
    fn punch(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        let hit: Vec<u64> = self.overlapping(start, end).map(|(s, _)| *s).collect();
        for region_start in hit {
            let Some(region) = self.regions.remove(&region_start) else {
                continue;
            };
            if region_start < start {
                self.regions.insert(
                    region_start,
                    Region {
                        end: start,
                        ..region.clone()
                    },
                );
            }
            if region.end > end {
                self.regions.insert(end, region.from(region_start, end));
            }
        }
    }

    fn set(&mut self, start: u64, end: u64, name: Arc<str>, offset: Option<u64>) {
        if end <= start {
            return;
        }
        self.punch(start, end);
        self.regions.insert(start, Region { end, name, offset });
    }

    /// The file and file offset of a (code) address, if it lies in a file
    /// mapping this map knows.
    pub fn file_offset(&self, addr: u64) -> Option<(Arc<str>, u64)> {
        let (start, region) = self.overlapping(addr, addr + 1).next()?;
        let offset = region.offset? + (addr - start);
        Some((region.name.clone(), offset))
    }

    /// Brings the address space up to date with `event` and returns the
    /// label of what it touched: for an unmapping, mprotect or madvise the
    /// mappings in its range before it ran, for a new mapping its own name
    /// (and what it replaced). `file_name` names the file a successful
    /// file-backed mmap mapped, when it could be found.
    pub fn apply(&mut self, event: &Event, file_name: Option<Arc<str>>) -> Option<Arc<str>> {
        if event.kind != EventKind::Syscall as u8 {
            return None;
        }
        let call = Call::from_u8(event.call)?;
        let args = &event.args;
        let ok = event.ret >= 0;
        let range = |addr: u64, len: u64| (addr, addr.saturating_add(page_align(len)));
        match call {
            Call::Mmap => {
                if !ok {
                    return None;
                }
                let (start, end) = range(event.ret as u64, args[1]);
                let anonymous = args[3] & MAP_ANONYMOUS != 0;
                let name: Arc<str> = if anonymous {
                    ANON.into()
                } else {
                    file_name.unwrap_or_else(|| format!("file (fd {})", args[4] as i32).into())
                };
                let offset = (!anonymous).then_some(args[5]);
                // Only MAP_FIXED replaces mappings; elsewhere an old name in
                // the range is a snapshot that was read after this call.
                let replaced = (args[3] & MAP_FIXED != 0)
                    .then(|| self.label(start, end))
                    .flatten();
                self.set(start, end, name.clone(), offset);
                Some(match replaced {
                    Some(old) if old != name => format!("{name} over {old}").into(),
                    _ => name,
                })
            }
            Call::Munmap => {
                let (start, end) = range(args[0], args[1]);
                let label = self.label(start, end);
                if ok {
                    self.punch(start, end);
                }
                label
            }
            Call::Brk => Some(self.move_break(event.ret as u64)),
            Call::Mprotect
            | Call::PkeyMprotect
            | Call::Madvise
            | Call::Mlock
            | Call::Mlock2
            | Call::Munlock
            | Call::Mseal
            | Call::Mbind
            | Call::SetMempolicyHomeNode
            | Call::RemapFilePages => {
                let (start, end) = range(args[0], args[1]);
                self.label(start, end)
            }
            // The range of a userfaultfd (un)registration, read at entry.
            Call::Ioctl => {
                let (start, end) = range(args[3], args[4]);
                (args[4] != 0).then(|| self.label(start, end)).flatten()
            }
            Call::Prctl => {
                let (start, end) = range(args[2], args[3]);
                self.label(start, end)
            }
            Call::MapShadowStack => {
                if !ok {
                    return None;
                }
                let (start, end) = range(event.ret as u64, args[1]);
                let name: Arc<str> = "[shadow stack]".into();
                self.set(start, end, name.clone(), None);
                Some(name)
            }
            // The ring's address is the context io_setup writes to the
            // caller's memory, which is not read: the next snapshot names it.
            Call::IoSetup => Some("[aio]".into()),
            Call::IoDestroy => {
                let addr = args[0];
                let label = self.label(addr, addr + 1);
                if ok && let Some(end) = self.regions.get(&addr).map(|r| r.end) {
                    self.punch(addr, end);
                }
                label.or_else(|| Some("[aio]".into()))
            }
            // A list of ranges in the caller's memory, not read.
            Call::ProcessMadvise => None,
            Call::Mlockall | Call::Munlockall => None,
            Call::Mremap => self.remap(event),
            Call::Shmat => Some(format!("SYSV shm {}", args[0] as i32).into()),
            Call::Shmdt => {
                let addr = args[0];
                let label = self.label(addr, addr + 1);
                if ok && let Some(end) = self.regions.get(&addr).map(|r| r.end) {
                    self.punch(addr, end);
                }
                label
            }
        }
    }

    /// brk returns the break after the call: the heap is everything from
    /// its start up to it.
    fn move_break(&mut self, new_break: u64) -> Arc<str> {
        let heap: Arc<str> = HEAP.into();
        let start = *self.heap_start.get_or_insert(new_break);
        let old_end = self
            .regions
            .get(&start)
            .filter(|r| r.name == heap)
            .map_or(start, |r| r.end);
        self.punch(start, old_end.max(new_break));
        self.set(start, new_break, heap.clone(), None);
        heap
    }

    fn remap(&mut self, event: &Event) -> Option<Arc<str>> {
        let [old, old_len, new_len, flags, ..] = event.args;
        let old_end = old.saturating_add(page_align(old_len));
        let label = self.label(old, old_end.max(old + 1));
        if event.ret < 0 {
            return label;
        }
        // The moved pages keep the name (and file) of the mapping they came
        // from.
        let (name, offset) = self
            .overlapping(old, old + 1)
            .next()
            .map(|(start, r)| (r.name.clone(), r.from(*start, old).offset))
            .or_else(|| label.clone().map(|l| (l, None)))?;
        let new = event.ret as u64;
        let new_end = new.saturating_add(page_align(new_len));
        if new == old {
            self.punch(new_end, old_end);
        } else if flags & MREMAP_DONTUNMAP == 0 {
            self.punch(old, old_end);
        }
        self.set(new, new_end, name, offset);
        label
    }
}

fn label_of_path(path: &MMapPath) -> Arc<str> {
    match path {
        MMapPath::Path(path) => path.to_string_lossy().into(),
        MMapPath::Heap => HEAP.into(),
        MMapPath::Stack => "[stack]".into(),
        MMapPath::TStack(tid) => format!("[stack:{tid}]").into(),
        MMapPath::Vdso => "[vdso]".into(),
        MMapPath::Vvar => "[vvar]".into(),
        MMapPath::Vsyscall => "[vsyscall]".into(),
        MMapPath::Rollup => "[rollup]".into(),
        MMapPath::Anonymous => ANON.into(),
        MMapPath::Vsys(key) => format!("SYSV shm key {key:#x}").into(),
        MMapPath::Other(other) => other.as_str().into(),
        // MMapPath is non-exhaustive.
        #[allow(unreachable_patterns)]
        _ => "?".into(),
    }
}

fn page_align(len: u64) -> u64 {
    let page = page_size();
    len.div_ceil(page).saturating_mul(page)
}

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf only reads a system constant.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as u64,
        _ => 4096,
    })
}

/// The address and length of a successful file-backed mmap.
pub fn file_mmap(event: &Event) -> Option<(u64, u64)> {
    (event.kind == EventKind::Syscall as u8 && maps_a_file(event.call, &event.args, event.ret))
        .then_some((event.ret as u64, event.args[1]))
}

/// The file a live process has mapped at `start`: the kernel's own link
/// for the mapping in /proc/PID/map_files, else the path in its maps. Read
/// shortly after the mmap; `None` if the mapping is already gone.
pub fn file_mapped_at(pid: u32, start: u64, len: u64) -> Option<Arc<str>> {
    let end = start.saturating_add(page_align(len));
    let link = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    if let Ok(path) = std::fs::read_link(link) {
        return Some(path.to_string_lossy().into());
    }
    // The new mapping merged with a neighbour: its VMA has other bounds.
    let maps = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.maps())
        .ok()?;
    maps.iter()
        .find(|m| m.address.0 <= start && start < m.address.1)
        .and_then(|m| match &m.pathname {
            MMapPath::Path(path) => Some(path.to_string_lossy().into()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 1234 /usr/bin/app
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
7f0000100000-7f0000200000 r-xp 00000000 08:01 99 /usr/lib/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
";

    fn syscall(call: Call, args: [u64; 6], ret: i64) -> Event {
        let mut event = Event::zeroed();
        event.kind = EventKind::Syscall as u8;
        event.call = call as u8;
        event.args = args;
        event.ret = ret;
        event
    }

    fn label(space: &mut AddressSpace, event: Event) -> Option<String> {
        space.apply(&event, None).map(|l| l.to_string())
    }

    #[test]
    fn a_snapshot_names_every_mapping() {
        let space = AddressSpace::from_maps(MAPS);
        assert!(space.is_seeded());
        let at = |addr: u64| space.label(addr, addr + 1).map(|l| l.to_string());
        assert_eq!(at(0x55d0c1000000).as_deref(), Some("[heap]"));
        assert_eq!(at(0x7f0000000000).as_deref(), Some("anon"));
        assert_eq!(at(0x7f0000150000).as_deref(), Some("/usr/lib/libc.so.6"));
        assert_eq!(at(0x7ffd00000000).as_deref(), Some("[stack]"));
        assert_eq!(at(0x1000), None);
        assert_eq!(
            space
                .label(0x7f00000ff000, 0x7f0000101000)
                .map(|l| l.to_string())
                .as_deref(),
            Some("anon,/usr/lib/libc.so.6")
        );
    }

    #[test]
    fn a_hole_punched_in_an_anonymous_mapping_is_named_and_forgotten() {
        let mut space = AddressSpace::from_maps(MAPS);
        let hole = syscall(Call::Munmap, [0x7f0000010000, 4096, 0, 0, 0, 0], 0);
        assert_eq!(label(&mut space, hole).as_deref(), Some("anon"));
        // The hole has no name now; both sides keep theirs.
        assert_eq!(space.label(0x7f0000010000, 0x7f0000011000), None);
        assert_eq!(
            space.label(0x7f000000f000, 0x7f0000010000).as_deref(),
            Some("anon")
        );
        assert_eq!(
            space.label(0x7f0000011000, 0x7f0000012000).as_deref(),
            Some("anon")
        );
    }

    #[test]
    fn new_mappings_take_their_name_from_the_call() {
        let mut space = AddressSpace::default();
        let anon = syscall(Call::Mmap, [0, 8192, 3, 0x22, u64::MAX, 0], 0x7e0000000000);
        assert_eq!(label(&mut space, anon).as_deref(), Some("anon"));
        let file = syscall(Call::Mmap, [0, 4096, 1, 0x2, 5, 0], 0x7e0000100000);
        assert_eq!(
            space.apply(&file, Some("/data/db".into())).as_deref(),
            Some("/data/db")
        );
        let unnamed = syscall(Call::Mmap, [0, 4096, 1, 0x2, 6, 0], 0x7e0000200000);
        assert_eq!(label(&mut space, unnamed).as_deref(), Some("file (fd 6)"));
        // MAP_FIXED over the middle of the anonymous one.
        let fixed = syscall(
            Call::Mmap,
            [0x7e0000000000, 4096, 1, 0x12, 7, 0],
            0x7e0000000000,
        );
        assert_eq!(
            space.apply(&fixed, Some("/lib/x.so".into())).as_deref(),
            Some("/lib/x.so over anon")
        );
        // A failed mmap touched nothing.
        let failed = syscall(Call::Mmap, [0, 4096, 3, 0x22, 0, 0], -12);
        assert_eq!(label(&mut space, failed), None);
    }

    #[test]
    fn brk_grows_and_shrinks_the_heap() {
        let mut space = AddressSpace::from_maps(MAPS);
        let grow = syscall(Call::Brk, [0x55d0c1100000, 0, 0, 0, 0, 0], 0x55d0c1100000);
        assert_eq!(label(&mut space, grow).as_deref(), Some("[heap]"));
        assert_eq!(
            space.label(0x55d0c10ff000, 0x55d0c1100000).as_deref(),
            Some("[heap]")
        );
        let shrink = syscall(Call::Brk, [0x55d0c1010000, 0, 0, 0, 0, 0], 0x55d0c1010000);
        label(&mut space, shrink);
        assert_eq!(space.label(0x55d0c1010000, 0x55d0c1100000), None);
        // Without a snapshot the first break is the heap's start.
        let mut fresh = AddressSpace::default();
        label(&mut fresh, syscall(Call::Brk, [0; 6], 0x1000000));
        label(
            &mut fresh,
            syscall(Call::Brk, [0x1021000, 0, 0, 0, 0, 0], 0x1021000),
        );
        assert_eq!(fresh.label(0x1000000, 0x1001000).as_deref(), Some("[heap]"));
    }

    #[test]
    fn mremap_carries_the_name_to_the_new_place() {
        let mut space = AddressSpace::from_maps(MAPS);
        let moved = syscall(
            Call::Mremap,
            [0x7f0000100000, 0x100000, 0x200000, 1, 0, 0],
            0x7f1000000000,
        );
        assert_eq!(
            label(&mut space, moved).as_deref(),
            Some("/usr/lib/libc.so.6")
        );
        assert_eq!(space.label(0x7f0000100000, 0x7f0000200000), None);
        assert_eq!(
            space.label(0x7f10001ff000, 0x7f1000200000).as_deref(),
            Some("/usr/lib/libc.so.6")
        );
    }

    #[test]
    fn protection_changes_name_without_changing() {
        let mut space = AddressSpace::from_maps(MAPS);
        let guard = syscall(Call::Mprotect, [0x7ffd00000000, 4096, 0, 0, 0, 0], 0);
        assert_eq!(label(&mut space, guard).as_deref(), Some("[stack]"));
        assert_eq!(
            space.label(0x7ffd00000000, 0x7ffd00001000).as_deref(),
            Some("[stack]")
        );
    }

    #[test]
    fn code_addresses_map_to_file_offsets_through_cuts_and_moves() {
        let mut space = AddressSpace::from_maps(MAPS);
        // libc: mapped at 0x7f0000100000 from offset 0.
        assert_eq!(
            space.file_offset(0x7f0000100123),
            Some(("/usr/lib/libc.so.6".into(), 0x123))
        );
        assert_eq!(space.file_offset(0x7f0000000123), None, "anonymous");
        // A hole in it: the part after keeps its offsets.
        let hole = syscall(Call::Munmap, [0x7f0000110000, 4096, 0, 0, 0, 0], 0);
        space.apply(&hole, None);
        assert_eq!(
            space.file_offset(0x7f0000111010),
            Some(("/usr/lib/libc.so.6".into(), 0x11010))
        );
        // A file mapped from offset 0x3000.
        let file = syscall(Call::Mmap, [0, 8192, 5, 0x2, 3, 0x3000], 0x7e0000000000);
        space.apply(&file, Some("/lib/x.so".into()));
        assert_eq!(
            space.file_offset(0x7e0000001004),
            Some(("/lib/x.so".into(), 0x4004))
        );
        // Moved elsewhere by mremap: same file, same offsets.
        let moved = syscall(
            Call::Mremap,
            [0x7e0000000000, 8192, 8192, 1, 0, 0],
            0x7d0000000000,
        );
        space.apply(&moved, None);
        assert_eq!(
            space.file_offset(0x7d0000001004),
            Some(("/lib/x.so".into(), 0x4004))
        );
    }

    #[test]
    fn many_names_are_summarized() {
        let mut space = AddressSpace::default();
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let start = 0x10000 * (i as u64 + 1);
            space.set(start, start + 0x1000, (*name).into(), None);
        }
        assert_eq!(space.label(0, 0x100000).as_deref(), Some("a,b,c +2 more"));
    }
}
