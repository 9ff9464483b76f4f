//! Walking a user stack the frame-pointer walk got wrong.
//!
//! The kernel's walk (`bpf_get_stack`) follows frame pointers: it skips
//! the caller of a syscall stub (the stub sets up no frame, so the walk
//! goes from the stub straight to its caller's caller), and in code built
//! without frame pointers it reads garbage. For the calls that get a
//! stack, the kernel also sends the user registers and the top of the
//! stack ([`StackCopy`]): the stub's caller is in the link register on
//! arm64 and at the stack pointer on x86-64, and the copy can be unwound
//! with the call-frame information (`.eh_frame`, `.debug_frame`) of each
//! module, with framehop's unwinder for the architecture (`crate::arch`).

use std::{collections::HashMap, fs, ops::Range, sync::Arc};

use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _};
use object::{Object, ObjectSection, ObjectSegment};

use crate::arch;

/// How user stacks are walked (`--unwind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UnwindMode {
    /// Frame pointers (the kernel's walk), plus the caller of a syscall
    /// stub (the link register, or the word at the stack pointer).
    Fp,
    /// Call-frame information over the copied top of the stack only.
    Dwarf,
    /// Call-frame information as far as the copy reaches, then the
    /// frame-pointer walk from where the two meet.
    #[default]
    Auto,
}

impl UnwindMode {
    /// Bytes of stack the kernel is to copy for `requested` bytes: the
    /// frame-pointer mode needs only the word at the stack pointer.
    pub fn copy_bytes(self, requested: u32) -> u32 {
        match self {
            UnwindMode::Fp => 64,
            UnwindMode::Dwarf | UnwindMode::Auto => requested.max(64),
        }
    }
}

/// The user registers and the top of the user stack as a call left user
/// mode.
#[derive(Clone, Debug)]
pub struct StackCopy {
    pub tid: u32,
    pub enter_ns: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The link register (arm64); 0 where there is none (x86-64).
    pub lr: u64,
    pub bytes: Vec<u8>,
}

/// A user stack as the kernel sent it (`vmatrace_common::UserStack`, or
/// `UserStackCopy` when copies are on): the frame-pointer walk, and the
/// copy if there is one.
#[derive(Clone, Debug)]
pub struct SentStack {
    pub tid: u32,
    pub enter_ns: u64,
    pub frames: Vec<u64>,
    pub copy: Option<StackCopy>,
}

impl SentStack {
    /// Parses a record of the `USER_STACK_COPIES` ring buffer.
    pub fn parse(record: &[u8]) -> Option<SentStack> {
        use core::mem::offset_of;

        use vmatrace_common::{USER_STACK_COPY_HEADER as HEADER, UserStack};
        let header = record.get(..HEADER)?;
        let u32_at = |at: usize| u32::from_ne_bytes(header[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_ne_bytes(header[at..at + 8].try_into().unwrap());
        const FRAMES: usize = offset_of!(UserStack, frames);
        let frames_len = (u32_at(offset_of!(UserStack, frames_len)) as usize).min(HEADER - FRAMES);
        let frames = header[FRAMES..FRAMES + frames_len]
            .chunks_exact(8)
            .map(|w| u64::from_ne_bytes(w.try_into().unwrap()))
            .take_while(|&ip| ip != 0)
            .collect();
        let tid = u32_at(offset_of!(UserStack, tid));
        let enter_ns = u64_at(offset_of!(UserStack, enter_ns));
        let sp = u64_at(offset_of!(UserStack, sp));
        let copy = if record.len() > HEADER && sp != 0 {
            let len = u32_at(offset_of!(UserStack, len)) as usize;
            Some(StackCopy {
                tid,
                enter_ns,
                ip: u64_at(offset_of!(UserStack, ip)),
                sp,
                bp: u64_at(offset_of!(UserStack, bp)),
                lr: u64_at(offset_of!(UserStack, lr)),
                bytes: record.get(HEADER..HEADER + len)?.to_vec(),
            })
        } else {
            None
        };
        Some(SentStack {
            tid,
            enter_ns,
            frames,
            copy,
        })
    }
}

impl StackCopy {
    /// The word at `addr`, if the copy holds it.
    pub fn read(&self, addr: u64) -> Option<u64> {
        let at = usize::try_from(addr.checked_sub(self.sp)?).ok()?;
        let word = self.bytes.get(at..at.checked_add(8)?)?;
        Some(u64::from_ne_bytes(word.try_into().ok()?))
    }

    /// Where the syscall stub returns to: the link register where the
    /// kernel sent one (arm64: a leaf stub never saves x30), else the word
    /// at the stack pointer (x86-64: `call` pushed it).
    pub fn stub_caller(&self) -> Option<u64> {
        if self.lr != 0 {
            return Some(self.lr);
        }
        self.read(self.sp)
    }
}

/// An executable mapping of a process.
#[derive(Clone, Debug)]
struct CodeMapping {
    range: Range<u64>,
    offset: u64,
    path: Arc<str>,
}

/// What is known of one process: its executable mappings and an unwinder
/// with a module for each file among them.
struct ProcessCode {
    mappings: Vec<CodeMapping>,
    unwinder: arch::Unwinder,
}

/// Walks stacks for many processes, keeping each one's modules.
pub struct StackWalker {
    mode: UnwindMode,
    processes: HashMap<u32, ProcessCode>,
    cache: arch::UnwindCache,
    /// Each file's unwind sections, parsed once (None: unreadable).
    files: HashMap<Arc<str>, Option<Arc<FileUnwindInfo>>>,
    /// The words of the copy the last walk read, and what they were: with
    /// the registers, all a walk depends on (see [`StackWalker::walk`]).
    reads: Vec<(u64, Option<u64>)>,
}

/// How deep a DWARF walk goes at most.
const MAX_FRAMES: usize = 128;

impl StackWalker {
    pub fn new(mode: UnwindMode) -> StackWalker {
        StackWalker {
            mode,
            processes: HashMap::new(),
            cache: arch::UnwindCache::new(),
            files: HashMap::new(),
            reads: Vec::new(),
        }
    }

    /// The words of the copy the last [`StackWalker::walk`] read: another
    /// copy with the same registers, frame-pointer walk and these words
    /// walks to the same stack (the process's code being the same).
    pub fn take_reads(&mut self) -> Vec<(u64, Option<u64>)> {
        std::mem::take(&mut self.reads)
    }

    /// Forgets a process that exited.
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// The stack of the call `copy` was taken at, from the kernel's
    /// frame-pointer walk `fp` and the copy: with the stub's caller in its
    /// place, unwound with call-frame information where the mode says so,
    /// and without frames outside executable mappings.
    pub fn walk(&mut self, pid: u32, fp: &[u64], copy: &StackCopy) -> Vec<u64> {
        self.reads.clear();
        // No walk from the kernel: the frame-pointer chain, if any, ends
        // within the copy (the programs skip the walk then).
        let in_copy;
        let fp = if fp.is_empty() {
            in_copy = self.frame_pointer_walk(copy);
            &in_copy[..]
        } else {
            fp
        };
        self.know(pid, fp.iter().copied().chain([copy.ip]));
        let fixed = self.with_stub_caller(pid, fp, copy);
        match self.mode {
            UnwindMode::Fp => fixed,
            UnwindMode::Dwarf => {
                let dwarf = self.dwarf(pid, copy);
                if dwarf.is_empty() { fixed } else { dwarf }
            }
            UnwindMode::Auto => {
                let dwarf = self.dwarf(pid, copy);
                if dwarf.len() < 2 {
                    return fixed;
                }
                join(dwarf, &fixed)
            }
        }
    }

    /// The frame-pointer walk within the copy, as the kernel's would be:
    /// the instruction pointer, then the return address above each frame
    /// pointer, while the chain goes up the stack.
    fn frame_pointer_walk(&mut self, copy: &StackCopy) -> Vec<u64> {
        let mut frames = vec![copy.ip];
        let mut fp = copy.bp;
        while frames.len() < MAX_FRAMES {
            let (next, ret) = (copy.read(fp), copy.read(fp.wrapping_add(8)));
            self.reads.push((fp, next));
            self.reads.push((fp.wrapping_add(8), ret));
            let (Some(next), Some(ret)) = (next, ret) else {
                break;
            };
            if ret == 0 {
                break;
            }
            frames.push(ret);
            if next <= fp {
                break;
            }
            fp = next;
        }
        frames
    }

    /// `fp` with the stub's caller (`StackCopy::stub_caller`) after frame
    /// #0 when the walk skipped it, cut at the first address outside
    /// executable code (from there on, the walk read garbage).
    fn with_stub_caller(&mut self, pid: u32, fp: &[u64], copy: &StackCopy) -> Vec<u64> {
        let mut addrs = fp.to_vec();
        let caller = copy.stub_caller();
        if copy.lr == 0 {
            self.reads.push((copy.sp, caller));
        }
        if let Some(caller) = caller
            && !addrs.is_empty()
            && addrs.get(1) != Some(&caller)
            && self.is_code(pid, caller)
        {
            addrs.insert(1, caller);
        }
        self.cut_at_non_code(pid, addrs)
    }

    /// The frames up to the first one outside executable code.
    /// Unless nothing is known of the process's code (it was gone before
    /// its mappings could be read): then the addresses stay as they are.
    pub fn cut_at_non_code(&mut self, pid: u32, mut addrs: Vec<u64>) -> Vec<u64> {
        self.know(pid, addrs.iter().copied());
        if self
            .processes
            .get(&pid)
            .is_none_or(|p| p.mappings.is_empty())
        {
            return addrs;
        }
        if let Some(bad) = addrs.iter().position(|a| !self.is_code(pid, *a)) {
            addrs.truncate(bad);
        }
        addrs
    }

    /// Whether `addr` lies in anonymous executable memory: code a JIT
    /// compiler or an interpreter generated (a `memfd:` file too, where
    /// a runtime maps its code twice, writable and executable).
    pub fn is_generated_code(&self, pid: u32, addr: u64) -> bool {
        self.processes.get(&pid).is_some_and(|p| {
            p.mappings
                .iter()
                .any(|m| m.range.contains(&addr) && is_anonymous(&m.path))
        })
    }

    fn is_code(&self, pid: u32, addr: u64) -> bool {
        self.processes
            .get(&pid)
            .is_some_and(|p| p.mappings.iter().any(|m| m.range.contains(&addr)))
    }

    /// Reads the process's executable mappings the first time, and again
    /// when one of `addrs` lies in none of them (a library loaded since).
    fn know(&mut self, pid: u32, mut addrs: impl Iterator<Item = u64>) {
        let stale = match self.processes.get(&pid) {
            None => true,
            Some(known) => addrs.any(|a| {
                (0x1000..0x8000_0000_0000).contains(&a)
                    && !known.mappings.iter().any(|m| m.range.contains(&a))
            }),
        };
        if !stale {
            return;
        }
        // A process that is exiting or gone reads as empty: what was
        // known stands.
        let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        self.seed(pid, &maps);
    }

    /// Takes the process's executable mappings from a `/proc/PID/maps`
    /// text (a snapshot), replacing what was known, unless it has none
    /// (the process was gone).
    pub fn seed(&mut self, pid: u32, maps: &str) {
        let mappings = code_mappings(maps);
        if mappings.is_empty() {
            self.processes.entry(pid).or_insert_with(|| ProcessCode {
                mappings: Vec::new(),
                unwinder: arch::Unwinder::new(),
            });
            return;
        }
        let mut unwinder = arch::Unwinder::new();
        for mapping in &mappings {
            if let Some(module) = self.module_for(mapping) {
                unwinder.add_module(module);
            }
        }
        self.processes
            .insert(pid, ProcessCode { mappings, unwinder });
    }

    /// Adds an executable file mapping the process made (a library loaded
    /// with dlopen), known from its mmap event.
    pub fn mapped_code(&mut self, pid: u32, range: Range<u64>, offset: u64, path: Arc<str>) {
        let mapping = CodeMapping {
            range,
            offset,
            path,
        };
        let module = self.module_for(&mapping);
        let Some(process) = self.processes.get_mut(&pid) else {
            return;
        };
        process
            .mappings
            .retain(|m| m.range.end <= mapping.range.start || m.range.start >= mapping.range.end);
        if let Some(module) = module {
            process.unwinder.add_module(module);
        }
        process.mappings.push(mapping);
    }

    fn module_for(&mut self, mapping: &CodeMapping) -> Option<Module<Arc<[u8]>>> {
        if !mapping.path.starts_with('/') {
            return None;
        }
        let info = self
            .files
            .entry(mapping.path.clone())
            .or_insert_with(|| FileUnwindInfo::read(&mapping.path).map(Arc::new))
            .clone()?;
        // The load bias: where the file's address 0 is in the process.
        // The executable segment the mapping shows (its file offset is
        // rounded down to a page, so it may begin in the segment before).
        let len = mapping.range.end - mapping.range.start;
        let shown = mapping.offset..mapping.offset + len;
        let overlaps =
            |s: &&Segment| s.file_range.start < shown.end && shown.start < s.file_range.end;
        let segment = info
            .segments
            .iter()
            .filter(overlaps)
            .find(|s| s.executable)
            .or_else(|| {
                info.segments
                    .iter()
                    .find(|s| s.file_range.contains(&mapping.offset))
            })?;
        // The mapping's file offset may lie before the segment's own.
        let svma = segment
            .svma
            .wrapping_add(mapping.offset)
            .wrapping_sub(segment.file_range.start);
        let bias = mapping.range.start.wrapping_sub(svma);
        Some(Module::new(
            mapping.path.to_string(),
            mapping.range.clone(),
            bias,
            info.section_info(),
        ))
    }

    /// The return addresses a DWARF walk of the copy finds, frame #0 (the
    /// instruction pointer) first; it stops where the copy ends.
    fn dwarf(&mut self, pid: u32, copy: &StackCopy) -> Vec<u64> {
        let Some(process) = self.processes.get(&pid) else {
            return Vec::new();
        };
        let mut regs = arch::unwind_regs(copy.ip, copy.sp, copy.bp, copy.lr);
        let reads = &mut self.reads;
        let mut read = |addr: u64| {
            let word = copy.read(addr);
            reads.push((addr, word));
            word.ok_or(())
        };
        let mut frames = vec![copy.ip];
        let mut address = FrameAddress::from_instruction_pointer(copy.ip);
        while frames.len() < MAX_FRAMES {
            match process
                .unwinder
                .unwind_frame(address, &mut regs, &mut self.cache, &mut read)
            {
                Ok(Some(ret)) if ret != 0 => {
                    let Some(next) = FrameAddress::from_return_address(ret) else {
                        break;
                    };
                    if !process.mappings.iter().any(|m| m.range.contains(&ret)) {
                        break;
                    }
                    frames.push(ret);
                    address = next;
                }
                _ => break,
            }
        }
        frames
    }
}

/// The DWARF frames, then the frame-pointer walk's frames after the
/// DWARF walk's last frame, if the frame-pointer walk has it too (it goes
/// on past the copied stack).
fn join(dwarf: Vec<u64>, fp: &[u64]) -> Vec<u64> {
    let mut joined = dwarf;
    if let Some(last) = joined.last().copied()
        && joined.len() > 1
        && let Some(at) = fp.iter().skip(1).position(|a| *a == last)
    {
        joined.extend_from_slice(&fp[at + 2..]);
    }
    joined
}

/// The executable mappings in a `/proc/PID/maps` text.
fn code_mappings(maps: &str) -> Vec<CodeMapping> {
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if perms.as_bytes().get(2) != Some(&b'x') {
            continue;
        }
        let path = fields.nth(2).unwrap_or("");
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        out.push(CodeMapping {
            range: start..end,
            offset,
            path: path.into(),
        });
    }
    out
}

/// A mapping without a file: no name, a named anonymous region
/// (`[anon:...]`), or a memfd; not the kernel's `[vdso]` or `[vsyscall]`.
fn is_anonymous(path: &str) -> bool {
    path.is_empty() || path.starts_with("[anon") || path.starts_with("/memfd:")
}

/// The unwind sections of one ELF file.
struct FileUnwindInfo {
    segments: Vec<Segment>,
    text: Option<Range<u64>>,
    eh_frame: Option<(Range<u64>, Arc<[u8]>)>,
    eh_frame_hdr: Option<(Range<u64>, Arc<[u8]>)>,
    debug_frame: Option<Arc<[u8]>>,
}

struct Segment {
    file_range: Range<u64>,
    svma: u64,
    executable: bool,
}

impl FileUnwindInfo {
    /// The file is mapped, not read: a server's binary can be tens of
    /// megabytes, of which only the unwind sections are kept.
    fn read(path: &str) -> Option<FileUnwindInfo> {
        let file = fs::File::open(path).ok()?;
        // SAFETY: a read-only private mapping, dropped before returning;
        // a file truncated meanwhile could fault, as for any ELF reader.
        let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let file = object::File::parse(&*data).ok()?;
        let section = |name: &str| {
            let s = file.section_by_name(name)?;
            let bytes: Arc<[u8]> = s.uncompressed_data().ok()?.into_owned().into();
            Some((s.address()..s.address() + s.size(), bytes))
        };
        let segments = file
            .segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                const PF_X: u32 = 1;
                Segment {
                    file_range: offset..offset + size.max(1),
                    svma: s.address(),
                    executable: matches!(
                        s.flags(),
                        object::SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0
                    ),
                }
            })
            .collect();
        Some(FileUnwindInfo {
            segments,
            // Only its address range: framehop's instruction analysis of
            // frame #0 is not worth a copy of every module's code.
            text: file
                .section_by_name(".text")
                .map(|s| s.address()..s.address() + s.size()),
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            debug_frame: section(".debug_frame").map(|(_, b)| b),
        })
    }

    fn section_info(&self) -> ExplicitModuleSectionInfo<Arc<[u8]>> {
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text.clone(),
            text: None,
            eh_frame_svma: self.eh_frame.as_ref().map(|(r, _)| r.clone()),
            eh_frame: self.eh_frame.as_ref().map(|(_, b)| b.clone()),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|(r, _)| r.clone()),
            eh_frame_hdr: self.eh_frame_hdr.as_ref().map(|(_, b)| b.clone()),
            debug_frame: self.debug_frame.clone(),
            ..ExplicitModuleSectionInfo::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dwarf_frames_continue_with_the_frame_pointer_walk() {
        assert_eq!(join(vec![1, 2, 3], &[1, 3, 4, 5]), vec![1, 2, 3, 4, 5]);
        assert_eq!(join(vec![1, 2], &[1, 9, 8]), vec![1, 2]);
        assert_eq!(join(vec![1, 2, 3, 4], &[1, 2, 7]), vec![1, 2, 3, 4]);
    }

    #[test]
    fn only_executable_mappings_are_code() {
        let maps = "55d0-55e0 r--p 00000000 08:01 1 /bin/x\n\
                    55e0-55f0 r-xp 00001000 08:01 1 /bin/x\n\
                    7ff0-7ff8 rw-p 00000000 00:00 0 [stack]\n";
        let code = code_mappings(maps);
        assert_eq!(code.len(), 1);
        let mut walker = StackWalker::new(UnwindMode::Fp);
        walker.seed(
            9,
            "55e0-55f0 r-xp 00001000 08:01 1 /bin/x\n\
             7f00-7f80 rwxp 00000000 00:00 0 \n\
             7f80-7f90 r-xp 00000000 00:00 0 [vdso]\n",
        );
        assert!(walker.is_generated_code(9, 0x7f10), "JIT code");
        assert!(!walker.is_generated_code(9, 0x55e8), "a file");
        assert!(!walker.is_generated_code(9, 0x7f88), "the vDSO");
        assert_eq!(code[0].range, 0x55e0..0x55f0);
        assert_eq!(code[0].offset, 0x1000);
    }

    fn record_of(stack: &vmatrace_common::UserStack, bytes: &[u8]) -> Vec<u8> {
        // SAFETY: a plain repr(C) value viewed as its bytes.
        let head = unsafe {
            std::slice::from_raw_parts(
                (stack as *const vmatrace_common::UserStack).cast::<u8>(),
                std::mem::size_of::<vmatrace_common::UserStack>(),
            )
        };
        [head, bytes].concat()
    }

    fn sent(sp: u64, len: u32, frames: &[u64]) -> vmatrace_common::UserStack {
        let mut stack = vmatrace_common::UserStack {
            pid: 7,
            tid: 8,
            enter_ns: 9,
            ip: 0x401000,
            sp,
            bp: 0,
            lr: 0,
            len,
            frames_len: (frames.len() * 8) as u32,
            frames: [0; vmatrace_common::USER_STACK_FRAMES_MAX],
        };
        stack.frames[..frames.len()].copy_from_slice(frames);
        stack
    }

    #[test]
    fn a_bare_stack_record_has_frames_and_no_copy() {
        let record = record_of(&sent(0, 0, &[0x401000, 0x402000]), &[]);
        let parsed = SentStack::parse(&record).expect("parses");
        assert_eq!((parsed.tid, parsed.enter_ns), (8, 9));
        assert_eq!(parsed.frames, vec![0x401000, 0x402000]);
        assert!(parsed.copy.is_none());
    }

    #[test]
    fn a_stack_record_with_a_copy_keeps_its_bytes() {
        let mut bytes = vec![0u8; vmatrace_common::USER_STACK_COPY_MAX];
        bytes[..8].copy_from_slice(&0x403000u64.to_ne_bytes());
        let record = record_of(&sent(0x7ff0, 16, &[0x401000]), &bytes);
        let parsed = SentStack::parse(&record).expect("parses");
        let copy = parsed.copy.expect("a copy");
        assert_eq!((copy.sp, copy.bytes.len()), (0x7ff0, 16));
        assert_eq!(copy.read(0x7ff0), Some(0x403000));
        assert!(SentStack::parse(&record[..100]).is_none(), "truncated");
    }

    #[test]
    fn a_copy_reads_words_it_holds() {
        let copy = StackCopy {
            tid: 1,
            enter_ns: 2,
            ip: 0,
            sp: 0x1000,
            bp: 0,
            lr: 0,
            bytes: (0u8..16).collect(),
        };
        assert_eq!(
            copy.read(0x1000),
            Some(u64::from_ne_bytes([0, 1, 2, 3, 4, 5, 6, 7]))
        );
        assert_eq!(copy.read(0x1009), None);
        assert_eq!(copy.read(0xfff), None);
    }

    #[test]
    fn the_stub_caller_is_the_link_register_where_one_was_sent() {
        let at_sp = 0x403000u64;
        let mut copy = StackCopy {
            tid: 1,
            enter_ns: 2,
            ip: 0x401000,
            sp: 0x1000,
            bp: 0,
            lr: 0,
            bytes: at_sp.to_ne_bytes().to_vec(),
        };
        assert_eq!(copy.stub_caller(), Some(at_sp), "x86-64: the word at sp");
        copy.lr = 0x405000;
        assert_eq!(copy.stub_caller(), Some(0x405000), "arm64: x30");
    }

    #[test]
    fn the_link_register_is_parsed_from_its_place_in_the_record() {
        let mut stack = sent(0x7ff0, 8, &[0x401000]);
        stack.lr = 0x406000;
        let record = record_of(&stack, &[0u8; vmatrace_common::USER_STACK_COPY_MAX]);
        let copy = SentStack::parse(&record)
            .and_then(|s| s.copy)
            .expect("a copy");
        assert_eq!((copy.lr, copy.stub_caller()), (0x406000, Some(0x406000)));
    }
}
