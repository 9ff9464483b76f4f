//! User stacks, symbolized with blazesym while the process is alive: the
//! function, and file:line where debug info exists, for the main binary
//! and shared libraries, PIE and ASLR included.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use blazesym::{
    Pid,
    symbolize::{
        Input, Sym, Symbolized, Symbolizer,
        source::{Elf, Process, Source},
    },
};
use serde::Serialize;

use super::{
    perf_map::{MapOwner, MapState, PerfMaps},
    runtimes::{self, Runtime},
};

/// The module of a frame in anonymous executable memory: code a JIT
/// compiler or an interpreter generated (named, if at all, from the
/// process's perf map).
pub const JIT_MODULE: &str = "[jit]";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frame {
    pub addr: u64,
    /// The function (demangled), if known.
    pub function: Option<String>,
    /// Offset of `addr` in the function; in an unnamed frame, its offset
    /// in the file `module` (printed `module+0xoffset`, for `addr2line` or
    /// a debug package later).
    pub offset: u64,
    /// The ELF file the address is in; `[jit]` for anonymous executable
    /// memory (generated code, named from the process's perf map).
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The GNU build id of `module` (hex), when the file has one: what
    /// finds its debug file. Not kept in recordings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stack {
    pub frames: Vec<Frame>,
    /// The walk did not reach a thread's first function (`_start`,
    /// `start_thread`, `clone3`...): code without frame pointers ended it
    /// early, and the callers above the last frame are missing.
    pub truncated: bool,
}

/// Functions a complete user stack ends in.
const STACK_ROOTS: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
    "thread_start",
];

impl Stack {
    pub fn new(frames: Vec<Frame>) -> Stack {
        let truncated = !frames.iter().any(|f| {
            f.function
                .as_deref()
                .is_some_and(|name| STACK_ROOTS.iter().any(|root| name.ends_with(root)))
        });
        Stack { frames, truncated }
    }
}

/// A user stack as the kernel captured it, with what is needed to
/// symbolize it after its process has gone: the file and file offset of
/// each address, from vmatrace's map of the address space.
#[derive(Clone, Debug)]
pub struct RawStack {
    pub pid: u32,
    pub id: u32,
    pub addrs: Vec<u64>,
    pub files: Vec<Option<(Arc<str>, u64)>>,
    /// Which addresses lie in anonymous executable memory (generated
    /// code); empty when none does.
    pub jit: Vec<bool>,
    /// Who the process is, read while it lived, to find and trust its perf
    /// map (when a frame is in generated code).
    pub owner: Option<MapOwner>,
}

/// Symbolizes stacks, remembering each (pid, stack id) it has done: the
/// kernel gives one id to every identical stack.
pub struct Symbols {
    symbolizer: Symbolizer,
    /// Whether separate debug files are read for their DWARF (file:line)
    /// rather than their symbol table alone.
    debug_info: bool,
    done: HashMap<(u32, u32), Arc<Stack>>,
    /// The stacks with generated code no perf map named, and the
    /// generation of their process's map they were named with (0: none):
    /// named again when a newer map is read.
    unnamed_jit: HashMap<(u32, u32), u64>,
    /// What was read of each module file (its build id, its debug file),
    /// by (device, inode): one entry however many processes map it.
    modules: HashMap<(u64, u64), Option<ModuleFile>>,
    /// Each process's perf map, for its generated code.
    perf_maps: PerfMaps,
    /// Who each process with generated code in a stack is.
    owners: HashMap<u32, MapOwner>,
    /// The processes told how to name their generated code.
    hinted: HashSet<u32>,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols::new(false)
    }
}

impl Symbols {
    /// `debug_info`: read the DWARF of separate debug files (Debian's
    /// `-dbg`/`-dbgsym`, RHEL's `-debuginfo` packages) for file:line in
    /// the libraries they belong to. Their sections are compressed and
    /// held decompressed while vmatrace runs: 11 MB for libc's, hundreds
    /// for a large server's, so by default they give function names only
    /// (their symbol table). DWARF a file carries itself is always read.
    pub fn new(debug_info: bool) -> Symbols {
        let symbolizer = if debug_info {
            Symbolizer::new()
        } else {
            // No directories to look for debug links in.
            Symbolizer::builder()
                .set_debug_dirs(Some::<&[&std::path::Path]>(&[]))
                .build()
        };
        Symbols {
            symbolizer,
            debug_info,
            done: HashMap::new(),
            unnamed_jit: HashMap::new(),
            modules: HashMap::new(),
            perf_maps: PerfMaps::default(),
            owners: HashMap::new(),
            hinted: HashSet::new(),
        }
    }

    pub fn cached(&self, pid: u32, stack_id: u32) -> Option<Arc<Stack>> {
        self.done.get(&(pid, stack_id)).cloned()
    }

    /// The stack remembered as (pid, id), its generated code named again
    /// if the process's perf map changed since (a map written while the
    /// process runs, e.g. by `jcmd PID Compiler.perfmap`): then `true`,
    /// the stack is new to whoever records stacks.
    pub fn cached_or_renamed(&mut self, pid: u32, stack_id: u32) -> Option<(Arc<Stack>, bool)> {
        let key = (pid, stack_id);
        let stack = self.done.get(&key)?.clone();
        let Some(&named_with) = self.unnamed_jit.get(&key) else {
            return Some((stack, false));
        };
        let owner = self.owners.get(&pid).copied();
        let MapState::Read(map, generation) = self.perf_maps.get(pid, owner) else {
            return Some((stack, false));
        };
        if generation == named_with {
            return Some((stack, false));
        }
        let mut frames = stack.frames.clone();
        for frame in frames.iter_mut().filter(|f| runtimes::is_jit(f)) {
            if let Some((name, offset)) = map.lookup(frame.addr) {
                frame.function = Some(name.to_string());
                frame.offset = offset;
            }
        }
        let renamed = Arc::new(Stack::new(frames));
        self.remember(key, renamed.clone(), generation);
        Some((renamed, true))
    }

    /// Every remembered stack whose generated code a newer perf map names:
    /// at the end of a trace, for the recording (a map written since the
    /// stack was printed, e.g. by `-XX:+DumpPerfMapAtExit` as the JVM
    /// exits, names the stacks `report` and `replay` show).
    pub fn renamed_since(&mut self) -> Vec<(u32, u32, Arc<Stack>)> {
        let keys: Vec<(u32, u32)> = self.unnamed_jit.keys().copied().collect();
        keys.into_iter()
            .filter_map(|(pid, id)| match self.cached_or_renamed(pid, id) {
                Some((stack, true)) => Some((pid, id, stack)),
                _ => None,
            })
            .collect()
    }

    fn remember(&mut self, key: (u32, u32), stack: Arc<Stack>, map_generation: u64) {
        if stack.frames.iter().any(runtimes::is_unnamed_jit) {
            self.unnamed_jit.insert(key, map_generation);
        } else {
            self.unnamed_jit.remove(&key);
        }
        self.done.insert(key, stack);
    }

    /// Remembers a stack symbolized elsewhere (read back from a trace).
    pub fn insert(&mut self, pid: u32, stack_id: u32, stack: Stack) {
        self.done.insert((pid, stack_id), Arc::new(stack));
    }

    /// Symbolizes `raw` and remembers it. Through the live process's /proc
    /// entries first (which also reach files in other mount namespaces);
    /// what that cannot name, because the process has exited or unmapped
    /// the code since, from the files themselves. The first stack in a
    /// binary parses its symbols and DWARF (0.4 s for a 5 MB debug build
    /// here); later ones take microseconds to milliseconds.
    pub fn symbolize(&mut self, raw: &RawStack) -> Arc<Stack> {
        let mut frames = self.through_process(raw.pid, &raw.addrs);
        let map_generation = self.name_generated_code(raw, &mut frames);
        self.fill_from_files(&mut frames, &raw.files);
        if !self.debug_info {
            self.fill_from_debug_symbols(raw.pid, &mut frames, &raw.files);
        }
        self.place_unnamed(raw.pid, &mut frames, &raw.files);
        name_mapped_modules(&mut frames, &raw.files);
        let stack = Arc::new(Stack::new(frames));
        self.remember((raw.pid, raw.id), stack.clone(), map_generation);
        stack
    }

    fn through_process(&self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        let mut process = Process::new(Pid::from(pid));
        // Perf maps are read by `name_generated_code`, safely: blazesym
        // follows a link in /tmp and maps the file (a map rewritten while
        // mapped would fault).
        process.perf_map = false;
        let source = Source::Process(process);
        let symbolized = self
            .symbolizer
            .symbolize(&source, Input::AbsAddr(addrs))
            .unwrap_or_default();
        addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| match symbolized.get(i) {
                Some(Symbolized::Sym(sym)) if within(sym) => frame_of(*addr, sym, None),
                _ => Frame::unknown(*addr),
            })
            .collect()
    }

    /// Names the unnamed frames from (file, offset), one file at a time.
    fn fill_from_files(&self, frames: &mut [Frame], files: &[Option<(Arc<str>, u64)>]) {
        let mut by_file: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, frame) in frames.iter().enumerate() {
            if let (None, Some(Some((path, _)))) = (&frame.function, files.get(i))
                && path.starts_with('/')
            {
                by_file.entry(path).or_default().push(i);
            }
        }
        for (path, indices) in by_file {
            let offsets: Vec<u64> = indices
                .iter()
                .filter_map(|i| files[*i].as_ref().map(|(_, offset)| *offset))
                .collect();
            let source = Source::Elf(Elf::new(path));
            let Ok(symbolized) = self
                .symbolizer
                .symbolize(&source, Input::FileOffset(&offsets))
            else {
                continue;
            };
            for (i, result) in indices.iter().zip(symbolized.iter()) {
                if let Symbolized::Sym(sym) = result
                    && within(sym)
                {
                    frames[*i] = frame_of(frames[*i].addr, sym, Some(path));
                }
            }
        }
    }
}

impl Symbols {
    /// Marks the frames in anonymous executable memory as `[jit]` and names
    /// them from the process's perf map, if it wrote one; returns the map's
    /// generation (0: none).
    fn name_generated_code(&mut self, raw: &RawStack, frames: &mut [Frame]) -> u64 {
        if !raw.jit.iter().any(|jit| *jit) {
            return 0;
        }
        if let Some(owner) = raw.owner {
            self.owners.insert(raw.pid, owner);
        }
        let owner = self.owners.get(&raw.pid).copied();
        let (map, generation) = match self.perf_maps.get(raw.pid, owner) {
            MapState::Read(map, generation) => (Some(map), generation),
            _ => (None, 0),
        };
        for (frame, _) in frames.iter_mut().zip(&raw.jit).filter(|(_, jit)| **jit) {
            frame.module = Some(JIT_MODULE.into());
            if let Some((name, offset)) = map.as_ref().and_then(|m| m.lookup(frame.addr)) {
                frame.function = Some(name.to_string());
                frame.offset = offset;
            }
        }
        generation
    }

    /// Once per process whose stack runs code a perf map would name but
    /// none did (generated code, or a runtime's interpreter loop): what
    /// would name it (`jcmd PID Compiler.perfmap` for a JVM), or why its
    /// map was not read.
    pub fn naming_hint(&mut self, pid: u32, comm: &str, stack: &Stack) -> Option<String> {
        let unnamed = stack
            .frames
            .iter()
            .filter(|f| runtimes::is_unnamed_jit(f))
            .count();
        let interpreted = stack.frames.iter().any(runtimes::is_interpreter_loop);
        if (unnamed == 0 && !interpreted) || self.hinted.contains(&pid) {
            return None;
        }
        let runtime = Runtime::of_frames(&stack.frames);
        let owner = self.owners.get(&pid).copied();
        let how = runtime.map_or_else(
            || format!("a perf map (/tmp/perf-{pid}.map) names its frames"),
            |r| r.how_to_name(pid),
        );
        let state = self.perf_maps.get(pid, owner);
        if unnamed == 0 && !matches!(state, MapState::Missing) {
            // An interpreter loop in a process whose map names what it can.
            return None;
        }
        self.hinted.insert(pid);
        Some(match state {
            MapState::Missing => {
                let code = runtime.map_or("JIT code", Runtime::code_kind);
                format!("pid {pid} ({comm}) runs {code} without a perf map: {how}")
            }
            MapState::Refused(why) => {
                format!("pid {pid} ({comm}) has a perf map vmatrace did not read: {why}")
            }
            MapState::Read(..) => format!(
                "pid {pid} ({comm}) has a perf map that does not name {unnamed} frame{} of \
                 its JIT code (written before that code was generated?): {how}",
                if unnamed == 1 { "" } else { "s" }
            ),
        })
    }

    /// Names the frames still unnamed from the symbol table of their
    /// module's separate debug file, which has the functions a stripped
    /// library keeps out of its own (static ones, most of ld.so's).
    fn fill_from_debug_symbols(
        &mut self,
        pid: u32,
        frames: &mut [Frame],
        files: &[Option<(Arc<str>, u64)>],
    ) {
        let mut by_file: HashMap<Arc<str>, Vec<(usize, u64)>> = HashMap::new();
        for (i, frame) in frames.iter().enumerate() {
            if let (None, Some(Some((path, offset)))) = (&frame.function, files.get(i))
                && path.starts_with('/')
            {
                by_file.entry(path.clone()).or_default().push((i, *offset));
            }
        }
        for (path, wanted) in by_file {
            let Some(debug) = self
                .module(pid, &path)
                .and_then(|module| module.debug_file.as_ref())
            else {
                continue;
            };
            let (indices, virts): (Vec<usize>, Vec<u64>) = wanted
                .iter()
                .filter_map(|(i, offset)| Some((*i, debug.virt_offset(*offset)?)))
                .unzip();
            let mut elf = Elf::new(&debug.path);
            elf.debug_syms = false;
            let Ok(symbolized) = self
                .symbolizer
                .symbolize(&Source::Elf(elf), Input::VirtOffset(&virts))
            else {
                continue;
            };
            for (i, result) in indices.iter().zip(symbolized.iter()) {
                if let Symbolized::Sym(sym) = result
                    && within(sym)
                {
                    frames[*i] = frame_of(frames[*i].addr, sym, Some(&path));
                }
            }
        }
    }

    /// The module at `path` in process `pid`, read from the file the
    /// process maps (in a container, not the host's file of that name)
    /// while it lives, else from `path`.
    fn module(&mut self, pid: u32, path: &str) -> Option<&ModuleFile> {
        use std::os::unix::fs::MetadataExt;
        let seen = format!("/proc/{pid}/root{path}");
        let file = if std::path::Path::new(&seen).exists() {
            seen.as_str()
        } else {
            path
        };
        let meta = std::fs::metadata(file).ok()?;
        self.modules
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| ModuleFile::read(file))
            .as_ref()
    }

    /// Gives each frame still unnamed its file and file offset (and the
    /// file's build id), so it prints as `module+0xoffset`.
    fn place_unnamed(&mut self, pid: u32, frames: &mut [Frame], files: &[Option<(Arc<str>, u64)>]) {
        for (frame, file) in frames.iter_mut().zip(files) {
            if frame.function.is_some() {
                continue;
            }
            // A file's path; not a label such as `file (fd 3)`.
            let Some((path, offset)) = file.as_ref().filter(|(p, _)| p.starts_with('/')) else {
                continue;
            };
            frame.module = Some(path.to_string());
            frame.offset = *offset;
            frame.build_id = self
                .module(pid, path)
                .and_then(|module| module.build_id.clone());
        }
    }
}

/// A frame named from a separate debug file (found by build id under
/// /usr/lib/debug, e.g. from libc6-dbg) names that file as its module;
/// the file the process had mapped is what the user knows.
fn name_mapped_modules(frames: &mut [Frame], files: &[Option<(Arc<str>, u64)>]) {
    for (frame, file) in frames.iter_mut().zip(files) {
        let from_debug_file = frame.module.as_deref().is_some_and(is_debug_file);
        if let (true, Some((path, _))) = (from_debug_file, file)
            && path.starts_with('/')
        {
            frame.module = Some(path.to_string());
        }
    }
}

fn is_debug_file(path: &str) -> bool {
    path.starts_with("/usr/lib/debug/") || path.ends_with(".debug")
}

/// What is read of a module's file, once: its GNU build id (hex) and,
/// when distributions installed one, its separate debug file.
struct ModuleFile {
    build_id: Option<String>,
    debug_file: Option<DebugFile>,
}

/// A module's separate debug file, and how the module's file offsets
/// become the addresses both files' symbol tables use.
struct DebugFile {
    path: std::path::PathBuf,
    /// The module's loadable segments: (file offset, file size, address).
    segments: Vec<(u64, u64, u64)>,
}

impl ModuleFile {
    /// Read piecemeal: a server's binary can be tens of megabytes.
    fn read(path: &str) -> Option<ModuleFile> {
        use object::{Object, ObjectSegment};
        let data = object::ReadCache::new(std::fs::File::open(path).ok()?);
        let file = object::File::parse(&data).ok()?;
        let build_id: Option<String> = file
            .build_id()
            .ok()
            .flatten()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect());
        let debug_file = build_id
            .as_deref()
            .and_then(debug_file_path)
            .map(|path| DebugFile {
                path,
                segments: file
                    .segments()
                    .map(|segment| {
                        let (offset, size) = segment.file_range();
                        (offset, size, segment.address())
                    })
                    .collect(),
            });
        Some(ModuleFile {
            build_id,
            debug_file,
        })
    }
}

/// Where distributions put a debug file: under /usr/lib/debug/.build-id.
fn debug_file_path(build_id: &str) -> Option<std::path::PathBuf> {
    if build_id.len() < 3 {
        return None;
    }
    let path = std::path::PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &build_id[..2],
        &build_id[2..]
    ));
    path.is_file().then_some(path)
}

impl DebugFile {
    /// The address (as in the symbol tables) at `offset` in the module.
    fn virt_offset(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(start, size, _)| (*start..start + size).contains(&offset))
            .map(|(start, _, address)| address + (offset - start))
    }
}

impl Frame {
    fn unknown(addr: u64) -> Frame {
        Frame {
            addr,
            function: None,
            offset: 0,
            module: None,
            file: None,
            line: None,
            build_id: None,
        }
    }
}

/// Whether the address lies inside the symbol found for it. A symbol
/// table without the function (a stripped library's internal one) makes
/// the nearest symbol before it the answer, named with an offset far past
/// its end (`__pthread_create_2_1+0x89d57` in a field trial): the frame is
/// then left unnamed, `module+0xoffset`, rather than misnamed.
fn within(sym: &Sym) -> bool {
    sym.size.is_none_or(|size| size == 0 || sym.offset < size)
}

fn frame_of(addr: u64, sym: &Sym, module: Option<&str>) -> Frame {
    Frame {
        addr,
        function: Some(sym.name.to_string()),
        offset: sym.offset as u64,
        module: sym
            .module
            .as_ref()
            .map(|m| m.to_string_lossy().into_owned())
            .or_else(|| module.map(str::to_string)),
        file: sym.code_info.as_ref().map(|c| {
            let file = c.file.to_string_lossy();
            match &c.dir {
                Some(dir) => dir.join(&*file).display().to_string(),
                None => file.into_owned(),
            }
        }),
        line: sym.code_info.as_ref().and_then(|c| c.line),
        build_id: None,
    }
}

/// One line per frame, as a backtrace prints them.
pub fn format_stack(stack: &Stack) -> String {
    let mut text = String::new();
    for (i, frame) in stack.frames.iter().enumerate() {
        let name = match (&frame.function, &frame.module) {
            (Some(function), _) => function.clone(),
            // Generated code no perf map named: no file to place it in.
            (None, Some(module)) if module == JIT_MODULE => {
                text.push_str(&format!("    #{i:<2} {:#014x} {JIT_MODULE}\n", frame.addr));
                continue;
            }
            (None, Some(module)) => {
                // An unnamed frame: where it is in its file.
                let base = module.rsplit('/').next().unwrap_or(module);
                text.push_str(&format!(
                    "    #{i:<2} {:#014x} {base}+{:#x}\n",
                    frame.addr, frame.offset
                ));
                continue;
            }
            (None, None) => "??".to_string(),
        };
        text.push_str(&format!("    #{i:<2} {:#014x} {name}", frame.addr));
        if frame.offset > 0 {
            text.push_str(&format!("+{:#x}", frame.offset));
        }
        match (&frame.file, frame.line) {
            (Some(file), Some(line)) => text.push_str(&format!(" ({file}:{line})")),
            _ => {
                if let Some(module) = &frame.module {
                    let base = module.rsplit('/').next().unwrap_or(module);
                    text.push_str(&format!(" ({base})"));
                }
            }
        }
        text.push('\n');
    }
    if stack.truncated {
        text.push_str("    ... (truncated: the walk stopped early, code without frame pointers)\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(offset: usize, size: Option<usize>) -> Sym<'static> {
        Sym {
            name: "__pthread_create_2_1".into(),
            module: None,
            addr: 0x1000,
            offset,
            size,
            code_info: None,
            inlined: Box::new([]),
            _non_exhaustive: (),
        }
    }

    /// An address past the end of the nearest symbol is not in it: a
    /// stripped library's internal function, left unnamed.
    #[test]
    fn an_address_past_its_symbols_end_is_not_named_after_it() {
        assert!(within(&sym(0x89, Some(0x300))));
        assert!(!within(&sym(0x89d57, Some(0x300))));
        assert!(within(&sym(0x89d57, None)), "no size: nothing to go by");
    }

    fn frame(name: &str) -> Frame {
        Frame {
            addr: 0x1000,
            function: Some(name.into()),
            offset: 4,
            module: Some("/usr/lib/libc.so.6".into()),
            file: None,
            line: None,
            build_id: None,
        }
    }

    #[test]
    fn a_frame_named_from_a_debug_file_keeps_the_mapped_module() {
        let mut frames = vec![Frame {
            module: Some("/usr/lib/debug/.build-id/bc/65e5.debug".into()),
            ..Frame::unknown(0x1000)
        }];
        let files = vec![Some((
            Arc::from("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            0x10,
        ))];
        name_mapped_modules(&mut frames, &files);
        assert_eq!(
            frames[0].module.as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
    }

    #[test]
    fn unnamed_frames_print_as_module_and_offset() {
        let unnamed = Frame {
            addr: 0x7f00_0000_1234,
            function: None,
            offset: 0x1234,
            module: Some("/usr/lib/libjemalloc.so.2".into()),
            file: None,
            line: None,
            build_id: Some("abcd".into()),
        };
        let text = format_stack(&Stack::new(vec![frame("munmap"), unnamed]));
        assert!(text.contains(" libjemalloc.so.2+0x1234\n"), "{text}");
        assert!(!text.contains("??"), "{text}");
    }

    /// Generated code prints as `[jit]`, named or not, never `??`; a
    /// process without a perf map is told once how to get one.
    #[test]
    fn generated_code_prints_as_jit_and_is_hinted_once() {
        let libjvm = "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so";
        let unnamed = Frame {
            module: Some(JIT_MODULE.into()),
            ..Frame::unknown(0x7f26_2c94_55da)
        };
        let named = Frame {
            function: Some("void Kafka.map()".into()),
            offset: 0x10,
            ..unnamed.clone()
        };
        let stack = Stack::new(vec![
            frame("mmap"),
            unnamed,
            named,
            Frame {
                module: Some(libjvm.into()),
                ..frame("JavaCalls::call_helper")
            },
        ]);
        let text = format_stack(&stack);
        assert!(text.contains("#1  0x7f262c9455da [jit]\n"), "{text}");
        assert!(
            text.contains("#2  0x7f262c9455da void Kafka.map()+0x10 ([jit])"),
            "{text}"
        );
        assert!(!text.contains("??"), "{text}");
        let mut symbols = Symbols::default();
        // A pid no process has: no map.
        let pid = u32::MAX - 3;
        let hint = symbols.naming_hint(pid, "java", &stack).expect("a hint");
        assert!(
            hint.starts_with(&format!(
                "pid {pid} (java) runs JIT code without a perf map: jcmd {pid} Compiler.perfmap"
            )),
            "{hint}"
        );
        assert_eq!(symbols.naming_hint(pid, "java", &stack), None, "once");
        let plain = Stack::new(vec![frame("munmap")]);
        assert_eq!(Symbols::default().naming_hint(pid, "c", &plain), None);
    }

    /// A stack printed before its process wrote a perf map is named once
    /// the map is there (`jcmd PID Compiler.perfmap` later on).
    #[test]
    fn a_remembered_stack_is_named_when_a_map_appears() {
        // A pid no process has (above pid_max); its "map" a file of this
        // test.
        let pid = 4_194_304 + 99 + std::process::id() % 1000;
        let path = format!("/tmp/perf-{pid}.map");
        let _ = std::fs::remove_file(&path);
        let owner = MapOwner {
            uid: unsafe { libc::geteuid() },
            ns_pid: pid,
        };
        let raw = RawStack {
            pid,
            id: 3,
            addrs: vec![0x5008],
            files: vec![None],
            jit: vec![true],
            owner: Some(owner),
        };
        let mut symbols = Symbols::default();
        let first = symbols.symbolize(&raw);
        assert!(runtimes::is_unnamed_jit(&first.frames[0]), "{first:?}");
        let (same, renamed) = symbols.cached_or_renamed(pid, 3).unwrap();
        assert!(!renamed && same.frames[0].function.is_none());
        std::fs::write(&path, "5000 10 JS:~fillCache /srv/app.js:2:19\n").unwrap();
        let (named, renamed) = symbols.cached_or_renamed(pid, 3).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(renamed);
        assert_eq!(
            named.frames[0].function.as_deref(),
            Some("JS:~fillCache /srv/app.js:2:19")
        );
        assert_eq!(named.frames[0].offset, 8);
        assert!(!symbols.cached_or_renamed(pid, 3).unwrap().1, "named once");
        assert!(symbols.renamed_since().is_empty());
    }

    #[test]
    fn stacks_that_reach_a_root_are_whole() {
        assert!(
            !Stack::new(vec![
                frame("munmap"),
                frame("main"),
                frame("__libc_start_call_main")
            ])
            .truncated
        );
        assert!(Stack::new(vec![frame("munmap"), frame("je_pages_unmap")]).truncated);
    }

    #[test]
    fn frames_print_like_a_backtrace() {
        let text = format_stack(&Stack::new(vec![frame("munmap")]));
        assert!(
            text.contains("#0  0x000000001000 munmap+0x4 (libc.so.6)"),
            "{text}"
        );
        assert!(text.contains("truncated"));
    }

    fn function_names(stack: &Stack) -> Vec<String> {
        stack
            .frames
            .iter()
            .filter_map(|f| f.function.clone())
            .collect()
    }

    #[test]
    fn own_stack_symbolizes_to_this_test() {
        let here = own_stack_symbolizes_to_this_test as *const () as u64;
        let mut symbols = Symbols::default();
        let raw = RawStack {
            pid: std::process::id(),
            id: 1,
            addrs: vec![here],
            files: vec![None],
            jit: Vec::new(),
            owner: None,
        };
        let stack = symbols.symbolize(&raw);
        assert!(
            function_names(&stack)
                .iter()
                .any(|n| n.contains("own_stack_symbolizes_to_this_test")),
            "{stack:?}"
        );
        assert!(symbols.cached(raw.pid, 1).is_some(), "remembered");
    }

    #[test]
    fn a_gone_process_is_symbolized_from_its_files() {
        // This test's own code, named by file and offset, for a pid that
        // does not exist.
        let here = a_gone_process_is_symbolized_from_its_files as *const () as u64;
        let space = crate::model::address_space::AddressSpace::from_maps(
            &std::fs::read_to_string("/proc/self/maps").unwrap(),
        );
        let file = space.file_offset(here);
        assert!(file.is_some(), "the test binary is a file mapping");
        let raw = RawStack {
            pid: u32::MAX - 1,
            id: 7,
            addrs: vec![here],
            files: vec![file],
            jit: Vec::new(),
            owner: None,
        };
        let stack = Symbols::default().symbolize(&raw);
        assert!(
            function_names(&stack)
                .iter()
                .any(|n| n.contains("a_gone_process_is_symbolized_from_its_files")),
            "{stack:?}"
        );
        assert!(stack.frames[0].module.is_some());
    }
}
