//! Call sites of the mapping calls, ranked by what they did to the VMA
//! count: `report --top-sites` and the live view's top sites.

use std::collections::HashMap;

use serde::Serialize;
use vmatrace_common::Event;

use crate::{
    model::detect,
    model::processes::Applied,
    stacks::{
        runtimes::{self, Runtime},
        symbols::{Frame, Stack},
    },
};

/// Call sites, by the first frame outside the C library and the loader:
/// where in the program (or its allocator) a mapping call came from.
#[derive(Default)]
pub struct Sites {
    by_site: HashMap<String, SiteStats>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteStats {
    pub calls: u64,
    pub vmas_added: i64,
    pub splits: u64,
    pub enomem: u64,
    /// The first frame outside the allocator too, in the first stack
    /// seen from this site: the code that drove the allocator to the call
    /// (the site itself when it is no allocator frame).
    pub caller: Option<String>,
    /// The first stack seen from this site.
    #[serde(rename = "stack")]
    pub example: Option<Stack>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RankedSite {
    pub site: String,
    #[serde(flatten)]
    pub stats: SiteStats,
}

impl Sites {
    pub fn add(&mut self, stack: &Stack, event: &Event, applied: &Applied) {
        let stats = self.by_site.entry(site_of(stack)).or_default();
        stats.calls += 1;
        stats.vmas_added += detect::own_delta(event).unwrap_or(0).max(0);
        stats.splits += u64::from(applied.flags.split);
        stats.enomem += u64::from(applied.flags.enomem);
        stats.example.get_or_insert_with(|| stack.clone());
        stats.caller.get_or_insert_with(|| caller_of(stack));
    }

    /// The `n` sites that added the most VMAs (then SPLITs, ENOMEMs).
    pub fn top(&self, n: usize) -> Vec<RankedSite> {
        let mut ranked: Vec<(&String, &SiteStats)> = self.by_site.iter().collect();
        ranked.sort_by(|a, b| {
            (b.1.vmas_added, b.1.splits, b.1.enomem, a.0).cmp(&(
                a.1.vmas_added,
                a.1.splits,
                a.1.enomem,
                b.0,
            ))
        });
        ranked
            .into_iter()
            .take(n)
            .map(|(site, stats)| RankedSite {
                site: site.clone(),
                stats: stats.clone(),
            })
            .collect()
    }
}

/// The first frame outside libc and the loader: where the program (or
/// its allocator) made the call. In a language runtime (the JVM, Node,
/// Python 3.12+, .NET) the first frame past its native layer too (the
/// JVM's libraries and JNI entry points, its interpreter and stubs; V8's
/// builtins): the first frame of the application's code, named from the
/// perf map (`FileChannelImpl.mapInternal`); a stack with no such frame is
/// named as without a runtime. Frames nothing is known of (a walk through
/// code without frame pointers ends in such; generated code no perf map
/// named) are passed over; a stack entirely inside libc and the loader
/// (the loader's own mappings) is named by its outermost known frame.
pub fn site_of(stack: &Stack) -> String {
    let runtime = Runtime::of_frames(&stack.frames);
    let glue =
        |f: &Frame| runtimes::is_runtime_glue(f, runtime) || is_native_method_wrapper(f, stack);
    first_outside(stack, glue)
        .or_else(|| first_outside(stack, runtimes::is_runtime_os_layer))
        .or_else(|| first_outside(stack, |_| false))
        .unwrap_or_else(|| outermost_known(stack))
}

/// The site, and past an allocator (or a runtime's standard library) the
/// code that drove it (`libjemalloc.so.2+0x94cca <- decrRefCount`,
/// `FileChannelImpl.mapInternal <- IndexMapper.mapIndexFile`): what a
/// folded line of SPLITs names, so that a storm inside an unnamed
/// allocator frame still says whose it is.
pub fn site_and_caller(stack: &Stack) -> String {
    let site = site_of(stack);
    match caller_of(stack) {
        caller if caller == site || caller == "??" => site,
        caller => format!("{site} <- {caller}"),
    }
}

/// The first frame outside libc, the loader and the allocator (jemalloc,
/// tcmalloc, mimalloc, glibc malloc), and past a runtime's native layer and
/// its standard library (the JDK's classes, Node's own modules): the code
/// that asked for memory.
pub fn caller_of(stack: &Stack) -> String {
    let runtime = Runtime::of_frames(&stack.frames);
    let glue =
        |f: &Frame| runtimes::is_runtime_glue(f, runtime) || is_native_method_wrapper(f, stack);
    first_outside(stack, |f| {
        is_allocator(f) || glue(f) || runtimes::is_runtime_library(f)
    })
    .or_else(|| first_outside(stack, |f| is_allocator(f) || glue(f)))
    .or_else(|| {
        first_outside(stack, |f| {
            is_allocator(f) || runtimes::is_runtime_os_layer(f)
        })
    })
    .or_else(|| first_outside(stack, is_allocator))
    .unwrap_or_else(|| outermost_known(stack))
}

/// The first known frame outside libc, the loader and what `also_skip`
/// says.
fn first_outside(stack: &Stack, also_skip: impl Fn(&Frame) -> bool) -> Option<String> {
    stack
        .frames
        .iter()
        .filter(|f| f.module.is_some() && !runtimes::is_unnamed_jit(f))
        .find(|f| !f.module.as_deref().is_some_and(is_libc_or_loader) && !also_skip(f))
        .map(name_of)
}

fn outermost_known(stack: &Stack) -> String {
    stack
        .frames
        .iter()
        .rfind(|f| f.module.is_some() && !runtimes::is_unnamed_jit(f))
        .map(name_of)
        .unwrap_or_else(|| "??".into())
}

/// The JVM's compiled wrapper of a `native` Java method, whose C function
/// (`Java_sun_nio_ch_FileChannelImpl_map0` for
/// `sun.nio.ch.FileChannelImpl.map0`) the stack holds too: glue between
/// the Java caller and the C code.
fn is_native_method_wrapper(f: &Frame, stack: &Stack) -> bool {
    let (true, Some(function)) = (runtimes::is_jit(f), &f.function) else {
        return false;
    };
    let Some(method) = runtimes::java_method(function) else {
        return false;
    };
    let jni = format!("Java_{}", method.replace('_', "_1").replace('.', "_"));
    stack.frames.iter().any(|other| {
        other.function.as_deref().is_some_and(|name| {
            name == jni || name.strip_prefix(&jni).is_some_and(|r| r.starts_with("__"))
        })
    })
}

fn name_of(f: &Frame) -> String {
    match (&f.function, &f.module) {
        (Some(function), _) if runtimes::is_jit(f) => runtimes::short_name(function),
        (Some(function), _) => function.clone(),
        (None, Some(module)) => {
            // Unnamed: its place in its file, the same in every process.
            let file = module.rsplit('/').next().unwrap_or(module);
            format!("{file}+{:#x}", f.offset)
        }
        (None, None) => format!("{:#x}", f.addr),
    }
}

fn is_libc_or_loader(module: &str) -> bool {
    let file = module.rsplit('/').next().unwrap_or(module);
    file.starts_with("libc.so") || file.starts_with("ld-linux") || file.starts_with("libc-")
}

/// An allocator's frame: in an allocator's library, or a function of one
/// linked into the program (jemalloc's `je_`/`_rjem_` names, tcmalloc's
/// `tc_`, mimalloc's `mi_`, the C allocation entry points).
fn is_allocator(f: &Frame) -> bool {
    const LIBRARIES: &[&str] = &["libjemalloc", "libtcmalloc", "libmimalloc"];
    const ENTRY_POINTS: &[&str] = &[
        "malloc",
        "free",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "sdallocx",
        "mallocx",
        "rallocx",
        "dallocx",
    ];
    let file = f
        .module
        .as_deref()
        .map(|m| m.rsplit('/').next().unwrap_or(m));
    if file.is_some_and(|file| LIBRARIES.iter().any(|l| file.starts_with(l))) {
        return true;
    }
    let Some(function) = f.function.as_deref() else {
        return false;
    };
    let bare = function.trim_start_matches('_');
    [
        "je_", "rjem_", "tc_", "mi_", "jemalloc", "tcmalloc", "mimalloc",
    ]
    .iter()
    .any(|p| bare.starts_with(p))
        || function.contains("jemalloc")
        || ENTRY_POINTS.contains(&bare)
        || bare.starts_with("int_free")
        || bare.starts_with("int_malloc")
        || bare.starts_with("libc_malloc")
        || bare.starts_with("libc_free")
}

/// Call sites by pid, shared between the printer and the `--top` view.
pub type SharedSites = std::sync::Arc<std::sync::Mutex<HashMap<u32, Sites>>>;

#[cfg(test)]
mod tests {
    use vmatrace_common::{Call, EventKind};

    use super::*;
    use crate::model::detect::Flags;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            addr: 0x1000,
            function: Some(function.into()),
            offset: 0,
            module: Some(module.into()),
            file: None,
            line: None,
            build_id: None,
        }
    }

    fn munmap(delta: i32) -> Event {
        let mut event = Event::zeroed();
        event.kind = EventKind::Syscall as u8;
        event.call = Call::Munmap as u8;
        event.locked = 1;
        event.vmas_before = 10;
        event.vmas_after = 10 + delta;
        event
    }

    #[test]
    fn sites_are_ranked_by_vmas_added_past_libc() {
        let split = Applied {
            flags: Flags {
                split: true,
                ..Flags::default()
            },
            count: Some(11),
            mapping: None,
            process_comm: None,
            change: None,
        };
        let plain = Applied {
            flags: Flags::default(),
            ..split.clone()
        };
        let jemalloc = Stack::new(vec![
            frame("__munmap", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            frame("je_pages_unmap", "/app"),
            frame("free", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
            frame("free_whole", "/app"),
        ]);
        let free = Stack::new(vec![frame("free_whole", "/app")]);
        let mut sites = Sites::default();
        sites.add(&free, &munmap(-1), &plain);
        sites.add(&jemalloc, &munmap(1), &split);
        sites.add(&jemalloc, &munmap(1), &split);
        let top = sites.top(5);
        assert_eq!(top[0].site, "je_pages_unmap");
        assert_eq!(
            (
                top[0].stats.vmas_added,
                top[0].stats.splits,
                top[0].stats.calls
            ),
            (2, 2, 2)
        );
        assert_eq!(top[0].stats.caller.as_deref(), Some("free_whole"));
        assert_eq!(top[1].site, "free_whole");
        assert_eq!(top[1].stats.vmas_added, 0);
        assert_eq!(sites.top(1).len(), 1);
    }

    #[test]
    fn unknown_frames_are_passed_over_and_loader_stacks_named_inside() {
        let loader = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
        let mut garbage = frame("x", "");
        garbage.function = None;
        garbage.module = None;
        let stack = Stack::new(vec![
            frame("__mmap64", loader),
            frame("_dl_map_object", loader),
            garbage,
        ]);
        assert_eq!(site_of(&stack), "_dl_map_object");
        assert_eq!(site_of(&Stack::new(Vec::new())), "??");
    }

    /// A fold line names the code past the allocator, not only the
    /// allocator's (often unnamed) frame.
    #[test]
    fn a_site_inside_the_allocator_is_told_with_its_caller() {
        let jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
        let mut unnamed = frame("x", jemalloc);
        unnamed.function = None;
        unnamed.offset = 0x94cca;
        let through_jemalloc = Stack::new(vec![
            frame("__munmap", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            unnamed,
            frame("decrRefCount", "/usr/bin/redis-check-rdb"),
        ]);
        assert_eq!(
            site_and_caller(&through_jemalloc),
            "libjemalloc.so.2+0x94cca <- decrRefCount"
        );
        let own = Stack::new(vec![frame("punch_hole", "/app")]);
        assert_eq!(site_and_caller(&own), "punch_hole");
    }

    fn jit(function: Option<&str>) -> Frame {
        Frame {
            function: function.map(str::to_string),
            module: Some(crate::stacks::symbols::JIT_MODULE.into()),
            ..frame("x", "")
        }
    }

    /// Debian's openjdk-17 mapping an index file (the stack vmatrace
    /// printed, with and without `jcmd PID Compiler.perfmap`).
    fn jvm_stack(named: bool) -> Stack {
        let jdk = "/usr/lib/jvm/java-17-openjdk-amd64/lib";
        let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        let java = |name: &str| jit(named.then_some(name));
        Stack::new(vec![
            frame("mmap", libc),
            frame(
                "Java_sun_nio_ch_FileChannelImpl_map0",
                &format!("{jdk}/libnio.so"),
            ),
            java("long sun.nio.ch.FileChannelImpl.map0(int, long, long, boolean)"),
            java(
                "sun.nio.ch.FileChannelImpl$Unmapper sun.nio.ch.FileChannelImpl.mapInternal(java.nio.channels.FileChannel$MapMode, long, long, int, boolean)",
            ),
            java(
                "java.nio.MappedByteBuffer sun.nio.ch.FileChannelImpl.map(java.nio.channels.FileChannel$MapMode, long, long)",
            ),
            java("java.nio.MappedByteBuffer IndexMapper.mapIndexFile(java.nio.file.Path)"),
            java("Interpreter"),
            java("StubRoutines (1)"),
            frame(
                "JavaCalls::call_helper(JavaValue*, methodHandle const&, JavaCallArguments*, JavaThread*)",
                &format!("{jdk}/server/libjvm.so"),
            ),
            frame("JavaMain", &format!("{jdk}/libjli.so")),
            frame("start_thread", libc),
        ])
    }

    #[test]
    fn a_java_site_is_the_first_java_frame_past_the_jvm() {
        let named = jvm_stack(true);
        assert_eq!(site_of(&named), "FileChannelImpl.mapInternal");
        assert_eq!(caller_of(&named), "IndexMapper.mapIndexFile");
        assert_eq!(
            site_and_caller(&named),
            "FileChannelImpl.mapInternal <- IndexMapper.mapIndexFile"
        );
        // No perf map: the JNI function, as before.
        let unnamed = jvm_stack(false);
        assert_eq!(
            site_and_caller(&unnamed),
            "Java_sun_nio_ch_FileChannelImpl_map0"
        );
        // The JVM's own calls (a thread's guard pages) name the JVM
        // function past its os:: layer.
        let libjvm = "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so";
        let guard = Stack::new(vec![
            frame("mmap", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            frame("os::pd_commit_memory(char*, unsigned long, bool)", libjvm),
            frame("StackOverflow::create_stack_guard_pages()", libjvm),
        ]);
        assert_eq!(site_of(&guard), "StackOverflow::create_stack_guard_pages()");
    }

    #[test]
    fn a_node_site_is_the_first_javascript_past_v8() {
        let node = "/usr/bin/node";
        let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        let stack = Stack::new(vec![
            frame("mmap", libc),
            frame("__libc_calloc", libc),
            frame(
                "node::NodeArrayBufferAllocator::Allocate(unsigned long)",
                node,
            ),
            frame("Builtins_ConstructHandler", node),
            jit(Some("BytecodeHandler:Construct")),
            jit(None),
            jit(Some("JS:~alloc node:buffer:391:30")),
            jit(Some("JS:~makeBuffers /srv/alloc.js:1:21")),
            frame("Builtins_JSEntryTrampoline", node),
        ]);
        assert_eq!(
            site_and_caller(&stack),
            "alloc (node:buffer:391) <- makeBuffers (alloc.js:1)"
        );
    }
}
