//! The language runtimes whose code is generated at run time (the JVM,
//! Node's V8, CPython 3.12+, .NET): which one a stack runs in, how to make
//! it write a perf map (the hint), and which of its frames are the
//! runtime's own glue rather than the application's code, so call sites
//! name the application's frame.

use super::symbols::{Frame, JIT_MODULE};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Jvm,
    Node,
    Python,
    Dotnet,
}

impl Runtime {
    /// The runtime a module file belongs to, by its name.
    pub fn of_module(path: &str) -> Option<Runtime> {
        let file = base_name(path);
        if file == "libjvm.so" || path.contains("/lib/jvm/") {
            Some(Runtime::Jvm)
        } else if file == "node" || file == "nodejs" || file.starts_with("libnode.so") {
            Some(Runtime::Node)
        } else if is_python_3_12_or_later(file) {
            Some(Runtime::Python)
        } else if file.starts_with("libcoreclr.so") || file.starts_with("libclrjit.so") {
            Some(Runtime::Dotnet)
        } else {
            None
        }
    }

    /// The runtime a stack's named modules show, if any.
    pub fn of_frames(frames: &[Frame]) -> Option<Runtime> {
        frames
            .iter()
            .filter_map(|f| f.module.as_deref())
            .find_map(Runtime::of_module)
    }

    /// What the code a perf map would name is, in this runtime's terms.
    pub fn code_kind(self) -> &'static str {
        match self {
            Runtime::Jvm | Runtime::Dotnet => "JIT code",
            Runtime::Node => "JavaScript",
            Runtime::Python => "Python code",
        }
    }

    /// What makes this runtime write its perf map, for process `pid`.
    pub fn how_to_name(self, pid: u32) -> String {
        match self {
            Runtime::Jvm => format!(
                "jcmd {pid} Compiler.perfmap names its Java frames (JDK 17+; the methods \
                 compiled by then; -XX:+PreserveFramePointer keeps compiled frames in the stack)"
            ),
            Runtime::Node => "restart it with node --perf-basic-prof \
                 --interpreted-frames-native-stack to name its JavaScript frames"
                .into(),
            Runtime::Python => "restart it with python -X perf (or PYTHONPERFSUPPORT=1) \
                 to name its Python frames"
                .into(),
            Runtime::Dotnet => {
                "restart it with DOTNET_PerfMapEnabled=1 to name its .NET frames".into()
            }
        }
    }

    /// What the runtime's own glue frames are named in its perf map.
    fn is_glue_code(self, name: &str) -> bool {
        match self {
            // Methods are `RetType pkg.Class.method(Args)`; the rest is the
            // VM's: Interpreter, `StubRoutines (1)`, adapters, stubs.
            Runtime::Jvm => java_method(name).is_none(),
            // JavaScript is `JS:~f file:line` (and LazyCompile/Function on
            // older V8s); Builtin:, BytecodeHandler:, Stub: are V8's.
            Runtime::Node => !["JS:", "LazyCompile:", "Function:", "Script:"]
                .iter()
                .any(|p| name.starts_with(p)),
            Runtime::Python => !name.starts_with("py::"),
            Runtime::Dotnet => name.starts_with("stub<") || name.contains("Stub"),
        }
    }
}

/// `python3.12`, `libpython3.13.so.1.0`: Python versions with perf maps.
fn is_python_3_12_or_later(file: &str) -> bool {
    let Some(version) = file
        .strip_prefix("libpython3.")
        .or_else(|| file.strip_prefix("python3."))
    else {
        return false;
    };
    let minor: String = version.chars().take_while(char::is_ascii_digit).collect();
    minor.parse::<u32>().is_ok_and(|m| m >= 12)
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether a frame is in anonymous executable memory (JIT or interpreter
/// code), named or not.
pub fn is_jit(frame: &Frame) -> bool {
    frame.module.as_deref() == Some(JIT_MODULE)
}

/// A frame in generated code that no perf map named.
pub fn is_unnamed_jit(frame: &Frame) -> bool {
    is_jit(frame) && frame.function.is_none()
}

/// A frame of a runtime's interpreter loop, standing for a function it
/// interprets that a perf map would name: V8's
/// `Builtins_InterpreterEntryTrampoline` (named in Node's map with
/// `--interpreted-frames-native-stack`), CPython's
/// `_PyEval_EvalFrameDefault` (with `-X perf`).
pub fn is_interpreter_loop(frame: &Frame) -> bool {
    frame.function.as_deref().is_some_and(|f| {
        f == "Builtins_InterpreterEntryTrampoline" || f == "_PyEval_EvalFrameDefault"
    }) && frame
        .module
        .as_deref()
        .is_some_and(|m| Runtime::of_module(m).is_some())
}

/// The runtime's own layer between the application and the system: the
/// JVM's libraries (libjvm, and the JNI entry points of libnio, libjava
/// ...), its interpreter and stubs; Node's binary (V8's builtins,
/// node's C++); libpython; the CLR. Glue has no say in where a call came
/// from: a site is the first frame past it.
pub fn is_runtime_glue(frame: &Frame, runtime: Option<Runtime>) -> bool {
    if let Some(function) = &frame.function {
        if is_jit(frame) {
            return runtime.is_some_and(|r| r.is_glue_code(function));
        }
        if function.starts_with("Java_") || function.starts_with("JNI_") {
            return true;
        }
        if function.starts_with("Builtins_") {
            return true;
        }
    }
    frame
        .module
        .as_deref()
        .is_some_and(|m| m != JIT_MODULE && Runtime::of_module(m).is_some())
}

/// The JVM's own system layer (`os::commit_memory`, `os::guard_memory`,
/// ...): what libc is to a C program, passed over when the JVM itself is
/// the caller, so its site is the JVM function that wanted the memory
/// (`StackOverflow::create_stack_guard_pages()`).
pub fn is_runtime_os_layer(frame: &Frame) -> bool {
    frame
        .function
        .as_deref()
        .is_some_and(|f| f.starts_with("os::"))
        && frame
            .module
            .as_deref()
            .is_some_and(|m| base_name(m) == "libjvm.so")
}

/// A frame of the runtime's own standard library, named by the perf map:
/// the JDK's classes (`java.`, `javax.`, `jdk.`, `sun.`, `com.sun.`) and
/// Node's own modules (`node:buffer`). Past them is the application's
/// code that called them, as past an allocator.
pub fn is_runtime_library(frame: &Frame) -> bool {
    let (true, Some(function)) = (is_jit(frame), &frame.function) else {
        return false;
    };
    if let Some(method) = java_method(function) {
        return ["java.", "javax.", "jdk.", "sun.", "com.sun."]
            .iter()
            .any(|p| method.starts_with(p));
    }
    function
        .split_whitespace()
        .nth(1)
        .is_some_and(|place| place.starts_with("node:"))
}

/// A Java method's `pkg.Class.method` from a JVM perf map's `RetType
/// pkg.Class.method(Args)`.
pub fn java_method(name: &str) -> Option<&str> {
    let (head, _) = name.split_once('(')?;
    let method = head.rsplit(' ').next().unwrap_or(head);
    method.contains('.').then_some(method)
}

/// A generated-code frame's name as a call site says it: a Java method as
/// `Class.method` (`FileChannelImpl.map`), a JavaScript function as
/// `fillCache (app.js:2)`, a Python one as perf map names it.
pub fn short_name(function: &str) -> String {
    if let Some(method) = java_method(function) {
        let mut parts = method.rsplitn(3, '.');
        let (method, class) = (parts.next().unwrap_or(method), parts.next());
        return match class {
            Some(class) => format!("{class}.{method}"),
            None => method.to_string(),
        };
    }
    if let Some(rest) = ["JS:", "LazyCompile:", "Function:"]
        .iter()
        .find_map(|p| function.strip_prefix(p))
    {
        // `~f /srv/app.js:2:19`: the tier mark, the function, where it is.
        let rest = rest.trim_start_matches(['~', '^', '*', '+']);
        let (name, place) = rest.split_once(' ').unwrap_or((rest, ""));
        // Node's own modules keep their `node:internal/...` name.
        let file = if place.starts_with("node:") {
            place
        } else {
            base_name(place)
        };
        let file = file.rsplit_once(':').map_or(file, |(place, _column)| place);
        let name = if name.is_empty() { "(anonymous)" } else { name };
        return if file.is_empty() {
            name.to_string()
        } else {
            format!("{name} ({file})")
        };
    }
    function.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: Option<&str>, module: &str) -> Frame {
        Frame {
            addr: 0x7f00_0000_0000,
            function: function.map(str::to_string),
            offset: 0,
            module: Some(module.into()),
            file: None,
            line: None,
            build_id: None,
        }
    }

    #[test]
    fn runtimes_are_known_by_their_files() {
        let jvm = "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so";
        assert_eq!(Runtime::of_module(jvm), Some(Runtime::Jvm));
        assert_eq!(Runtime::of_module("/usr/bin/node"), Some(Runtime::Node));
        assert_eq!(
            Runtime::of_module("/usr/lib/x86_64-linux-gnu/libnode.so.109"),
            Some(Runtime::Node)
        );
        assert_eq!(
            Runtime::of_module("/usr/lib/libpython3.12.so.1.0"),
            Some(Runtime::Python)
        );
        assert_eq!(
            Runtime::of_module("/usr/bin/python3.13"),
            Some(Runtime::Python)
        );
        assert_eq!(
            Runtime::of_module("/usr/bin/python3.11"),
            None,
            "no -X perf"
        );
        assert_eq!(
            Runtime::of_module(
                "/usr/share/dotnet/shared/Microsoft.NETCore.App/8.0.0/libcoreclr.so"
            ),
            Some(Runtime::Dotnet)
        );
        assert_eq!(
            Runtime::of_module("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            None
        );
    }

    #[test]
    fn glue_is_the_runtimes_own_layer() {
        let jvm = Some(Runtime::Jvm);
        let libnio = "/usr/lib/jvm/java-17-openjdk-amd64/lib/libnio.so";
        assert!(is_runtime_glue(
            &frame(Some("Java_sun_nio_ch_FileChannelImpl_map0"), libnio),
            jvm
        ));
        assert!(is_runtime_glue(
            &frame(Some("Interpreter"), JIT_MODULE),
            jvm
        ));
        assert!(is_runtime_glue(
            &frame(Some("StubRoutines (1)"), JIT_MODULE),
            jvm
        ));
        let map = "java.nio.MappedByteBuffer sun.nio.ch.FileChannelImpl.map(java.nio.channels.FileChannel$MapMode, long, long)";
        assert!(!is_runtime_glue(&frame(Some(map), JIT_MODULE), jvm));
        assert!(is_runtime_library(&frame(Some(map), JIT_MODULE)));
        let own = "java.nio.MappedByteBuffer IndexMapper.mapIndexFile(java.nio.file.Path)";
        assert!(!is_runtime_library(&frame(Some(own), JIT_MODULE)));
        assert_eq!(short_name(map), "FileChannelImpl.map");
        assert_eq!(short_name(own), "IndexMapper.mapIndexFile");
        assert_eq!(
            short_name("void kafka.log.AbstractIndex.<init>(java.io.File, long, int, boolean)"),
            "AbstractIndex.<init>"
        );

        let node = Some(Runtime::Node);
        assert!(is_runtime_glue(
            &frame(Some("Builtins_InterpreterEntryTrampoline"), "/usr/bin/node"),
            node
        ));
        assert!(is_runtime_glue(
            &frame(Some("BytecodeHandler:Star0"), JIT_MODULE),
            node
        ));
        let js = "JS:~fillCache /srv/app/alloc.js:2:19";
        assert!(!is_runtime_glue(&frame(Some(js), JIT_MODULE), node));
        assert_eq!(short_name(js), "fillCache (alloc.js:2)");
        let alloc = frame(Some("JS:^alloc node:buffer:391:30"), JIT_MODULE);
        assert!(is_runtime_library(&alloc));
        assert_eq!(
            short_name("JS:~FastBuffer node:internal/buffer:960:14"),
            "FastBuffer (node:internal/buffer:960)"
        );
        // Generated code nothing named is no glue: nothing is known of it.
        assert!(!is_runtime_glue(&frame(None, JIT_MODULE), jvm));
        assert!(!is_runtime_glue(
            &frame(Some("munmap"), "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            None
        ));
    }

    #[test]
    fn the_hint_names_the_command() {
        assert!(
            Runtime::Jvm
                .how_to_name(3802)
                .starts_with("jcmd 3802 Compiler.perfmap names its Java frames")
        );
        assert!(
            Runtime::Node
                .how_to_name(1)
                .contains("node --perf-basic-prof --interpreted-frames-native-stack")
        );
    }
}
