//! Stacks through language runtimes (needs root; Debian's openjdk-17 and
//! nodejs, installed if missing): generated code is `[jit]`, named from the
//! runtime's perf map when it writes one, and a process without one is
//! told, once, the command that names its frames; call sites name the
//! application's frame past the runtime's own layer.

mod support;

use std::{path::Path, process::Command};

use serde_json::Value;
use support::*;

/// The JDK's tools, from Debian's openjdk-17-jdk-headless.
fn jdk() -> (String, String) {
    let dir = "/usr/lib/jvm/java-17-openjdk-amd64/bin";
    let javac = format!("{dir}/javac");
    let jcmd = format!("{dir}/jcmd");
    debian_package("openjdk-17-jdk-headless", &[&jcmd]);
    assert!(
        Path::new(&javac).exists(),
        "openjdk-17-jdk-headless has no {javac}"
    );
    (javac, jcmd)
}

/// `IndexMapper.class` compiled into `dir`.
fn compile_index_mapper(javac: &str, dir: &Path) {
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/runtimes/IndexMapper.java"
    );
    let status = Command::new(javac)
        .args(["-d"])
        .arg(dir)
        .arg(source)
        .status()
        .expect("javac runs");
    assert!(status.success(), "javac {source} failed");
}

/// A test process's perf map in /tmp: one a process of the same pid left
/// is removed first, and the test's own when it ends, passed or failed.
struct PerfMapOf(String);

impl PerfMapOf {
    /// For a process that writes its map later (`jcmd`, at exit).
    fn new(pid: u32) -> PerfMapOf {
        let map = PerfMapOf::written_already(pid);
        let _ = std::fs::remove_file(&map.0);
        map
    }

    /// For a process that wrote its map from its start (Node).
    fn written_already(pid: u32) -> PerfMapOf {
        PerfMapOf(format!("/tmp/perf-{pid}.map"))
    }
}

impl Drop for PerfMapOf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The frames of an event's stack.
fn frames(event: &Value) -> &Vec<Value> {
    event["stack"]["frames"]
        .as_array()
        .unwrap_or_else(|| panic!("no stack: {event}"))
}

fn is_jit(frame: &Value) -> bool {
    frame["module"] == "[jit]"
}

/// An mmap of the file `name` (`warm.index`, or the index file numbered
/// `n`: `index(n)`).
fn maps_file(event: &Value, name: &str) -> bool {
    event["call"] == "mmap"
        && event["mapping"]
            .as_str()
            .is_some_and(|m| m.ends_with(&format!("/{name}")))
}

fn index(n: u32) -> String {
    format!("{n:020}.index")
}

/// A JVM mapping index files: before a perf map its Java frames are
/// `[jit]` and vmatrace says once which command names them; after
/// `jcmd PID Compiler.perfmap` the methods the JIT compiled are named, in
/// the live view, the recording's replay and its call sites.
#[test]
fn java_frames_are_named_from_the_jvms_perf_map() {
    let (javac, jcmd) = jdk();
    let dir = tempfile::tempdir().unwrap();
    compile_index_mapper(&javac, dir.path());
    let index_dir = dir.path().join("index");
    std::fs::create_dir(&index_dir).unwrap();
    let classes = dir.path().display().to_string();
    let index_dir = index_dir.display().to_string();
    let file = dir.path().join("jvm.vmat").display().to_string();
    // 1000 mappings: enough calls for C1 to compile the mapping path,
    // in the calling thread (-Xbatch) and once (no later tier), so the
    // code the map names is the code that runs. Frame pointers kept in
    // compiled code, as for perf.
    let mut run = Running::vmatrace(&[
        "--json",
        "--stacks",
        "-o",
        &file,
        "--",
        "java",
        "-XX:+PreserveFramePointer",
        "-Xbatch",
        "-XX:TieredStopAtLevel=1",
        "-cp",
        &classes,
        "IndexMapper",
        &index_dir,
        "1000",
        "3",
    ]);
    let pid = field(&run.wait_stderr("warm pid="), "pid") as u32;
    let _map = PerfMapOf::new(pid);

    // No map yet: generated code is [jit], never unnamed.
    let before = run.wait_event(|e| maps_file(e, "warm.index") && frames(e).iter().any(is_jit));
    let jit: Vec<&Value> = frames(&before).iter().filter(|f| is_jit(f)).collect();
    assert!(!jit.is_empty(), "no [jit] frame: {before}");
    assert!(
        jit.iter().all(|f| f["function"].is_null()),
        "named without a map: {before}"
    );
    let hint = run.wait_event(|e| e["type"] == "hint");
    assert_eq!(hint["pid"], pid, "{hint}");
    let expected = format!(
        "pid {pid} (java) runs JIT code without a perf map: jcmd {pid} Compiler.perfmap names its Java frames"
    );
    assert!(
        hint["line"].as_str().unwrap().starts_with(&expected),
        "{hint}"
    );

    let written = Command::new(&jcmd)
        .args([&pid.to_string(), "Compiler.perfmap"])
        .output()
        .expect("jcmd runs");
    assert!(written.status.success(), "jcmd: {written:?}");
    run.send_line();
    run.wait_stderr("mapped pid=");
    let after = run.wait_event(|e| maps_file(e, &index(0)) && !frames(e).is_empty());
    let named: Vec<&str> = frames(&after)
        .iter()
        .filter(|f| is_jit(f))
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(
        named
            .iter()
            .any(|f| f.contains("IndexMapper.mapIndexFile(java.nio.file.Path)")),
        "the Java method is not named: {after}"
    );
    assert!(
        named
            .iter()
            .any(|f| f.contains("sun.nio.ch.FileChannelImpl.map(")),
        "{after}"
    );
    run.send_line();
    let finished = run.finish();
    assert_eq!(finished.code(), 0, "{}", finished.stderr_text());
    let hints = finished
        .json()
        .into_iter()
        .filter(|e| e["type"] == "hint" && e["pid"] == pid)
        .count();
    assert_eq!(hints, 1, "the hint is said once");

    // The recording carries the names: the stacks named after the map
    // came, and the ones named again from it.
    let replay = Running::vmatrace(&["replay", "--json", &file]).finish();
    assert_eq!(replay.code(), 0, "{}", replay.stderr_text());
    let replayed = replay
        .events()
        .into_iter()
        .find(|e| maps_file(e, &index(1)))
        .expect("the mmap of index 1 in the replay");
    assert!(
        frames(&replayed).iter().any(|f| is_jit(f)
            && f["function"]
                .as_str()
                .is_some_and(|n| n.contains("IndexMapper."))),
        "replayed: {replayed}"
    );

    // Call sites past the JVM: the JDK's method, and the application's
    // method that called it.
    let sites = top_sites(&file);
    assert!(
        sites.iter().any(|s| {
            s["site"]
                .as_str()
                .is_some_and(|site| site.starts_with("FileChannelImpl."))
                && s["caller"] == "IndexMapper.mapIndexFile"
        }),
        "no site past the JVM: {}",
        serde_json::to_string_pretty(&sites).unwrap()
    );
}

/// `report --top-sites=50` of a recording: its sites, as JSON.
fn top_sites(file: &str) -> Vec<Value> {
    let report = Running::vmatrace(&["report", "--json", "--top-sites=50", file]).finish();
    assert_eq!(report.code(), 0, "{}", report.stderr_text());
    let report: Value = serde_json::from_str(&report.stdout.join("\n")).expect("report JSON");
    report["top_sites"].as_array().expect("top_sites").clone()
}

/// A JVM that writes its perf map only as it exits
/// (`-XX:+DumpPerfMapAtExit`): the live view could not name its Java
/// frames, the recording does (its stacks are named again at the end).
#[test]
fn a_map_dumped_at_exit_names_the_recording() {
    let (javac, _) = jdk();
    let dir = tempfile::tempdir().unwrap();
    compile_index_mapper(&javac, dir.path());
    let classes = dir.path().display().to_string();
    let file = dir.path().join("exit.vmat").display().to_string();
    let mut run = Running::vmatrace(&[
        "--json",
        "--stacks",
        "-o",
        &file,
        "--",
        "java",
        "-XX:+PreserveFramePointer",
        "-Xbatch",
        "-XX:TieredStopAtLevel=1",
        "-XX:+UnlockDiagnosticVMOptions",
        "-XX:+DumpPerfMapAtExit",
        "-cp",
        &classes,
        "IndexMapper",
        &classes,
        "1000",
        "1",
    ]);
    let pid = field(&run.wait_stderr("warm pid="), "pid") as u32;
    let _map = PerfMapOf::new(pid);
    run.send_line();
    run.wait_stderr("mapped pid=");
    // Printed while the JVM waits, before it wrote its map.
    let live = run.wait_event(|e| maps_file(e, &index(0)));
    assert!(jit_functions(&live).is_empty(), "named live: {live}");
    run.send_line();
    let finished = run.finish();
    assert_eq!(finished.code(), 0, "{}", finished.stderr_text());

    let replay = Running::vmatrace(&["replay", "--json", &file]).finish();
    assert_eq!(replay.code(), 0, "{}", replay.stderr_text());
    let replayed = replay
        .events()
        .into_iter()
        .find(|e| maps_file(e, &index(0)))
        .expect("the mmap of index 0 in the replay");
    assert!(
        jit_functions(&replayed)
            .iter()
            .any(|f| f.contains("IndexMapper.mapIndexFile(")),
        "not named in the recording: {replayed}"
    );
}

/// Node, from Debian's nodejs.
fn node() -> String {
    debian_package("nodejs", &["/usr/bin/node"])
        .display()
        .to_string()
}

const ALLOC_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/runtimes/alloc.js");

/// The names of an event's frames in generated code (JavaScript or Java
/// functions).
fn jit_functions(event: &Value) -> Vec<String> {
    frames(event)
        .iter()
        .filter(|f| is_jit(f))
        .filter_map(|f| f["function"].as_str())
        .map(str::to_string)
        .collect()
}

/// A Buffer.alloc's mmap, through Node's ArrayBuffer allocator.
fn allocates(event: &Value) -> bool {
    event["call"] == "mmap"
        && event["stack"]["frames"].as_array().is_some_and(|f| {
            f.iter().any(|f| {
                f["function"]
                    .as_str()
                    .is_some_and(|name| name.starts_with("node::NodeArrayBufferAllocator::"))
            })
        })
}

/// Node with its perf map (`--perf-basic-prof`, and
/// `--interpreted-frames-native-stack` for functions still interpreted):
/// the JavaScript functions that allocated are named, and the call site is
/// Node's `alloc` with the application's function past it.
#[test]
fn javascript_frames_are_named_from_nodes_perf_map() {
    let node = node();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.vmat").display().to_string();
    // --perf-basic-prof also writes V8's log, by default in the working
    // directory: into the test's own.
    let v8_log = format!("--logfile={}", dir.path().join("v8.log").display());
    let mut run = Running::vmatrace(&[
        "--json",
        "--stacks",
        "-o",
        &file,
        "--",
        &node,
        "--perf-basic-prof",
        "--interpreted-frames-native-stack",
        "--no-logfile-per-isolate",
        &v8_log,
        ALLOC_JS,
    ]);
    let pid = field(&run.wait_stderr("allocated pid="), "pid") as u32;
    let _map = PerfMapOf::written_already(pid);
    let allocated = run.wait_event(allocates);
    let functions = jit_functions(&allocated);
    assert!(
        functions.iter().any(|f| f.contains("makeBuffers "))
            && functions.iter().any(|f| f.contains("fillCache ")),
        "{functions:?}\n{allocated}"
    );
    run.send_line();
    let finished = run.finish();
    assert_eq!(finished.code(), 0, "{}", finished.stderr_text());
    assert!(
        !finished
            .json()
            .iter()
            .any(|e| e["type"] == "hint" && e["pid"] == pid),
        "a hint for a process with a perf map"
    );

    let sites = top_sites(&file);
    assert!(
        sites.iter().any(|s| {
            s["site"]
                .as_str()
                .is_some_and(|s| s.starts_with("alloc (node:buffer:"))
                && s["caller"] == "makeBuffers (alloc.js:5)"
        }),
        "no site past V8: {}",
        serde_json::to_string_pretty(&sites).unwrap()
    );
}

/// Node without a perf map: its JavaScript runs in V8's interpreter
/// (`Builtins_InterpreterEntryTrampoline` for each function, as the issue
/// saw), and vmatrace says once how to name those frames.
#[test]
fn node_without_a_perf_map_is_told_how_to_name_its_frames() {
    let node = node();
    let mut run = Running::vmatrace(&["--json", "--stacks", "--", &node, ALLOC_JS]);
    let pid = field(&run.wait_stderr("allocated pid="), "pid") as u32;
    let allocated = run.wait_event(allocates);
    assert!(
        frames(&allocated)
            .iter()
            .any(|f| f["function"] == "Builtins_InterpreterEntryTrampoline"),
        "{allocated}"
    );
    assert!(jit_functions(&allocated).is_empty(), "{allocated}");
    run.send_line();
    let finished = run.finish();
    assert_eq!(finished.code(), 0, "{}", finished.stderr_text());
    let hints: Vec<Value> = finished
        .json()
        .into_iter()
        .filter(|e| e["type"] == "hint")
        .collect();
    assert_eq!(hints.len(), 1, "{hints:?}");
    assert_eq!(hints[0]["pid"], pid);
    assert_eq!(
        hints[0]["line"],
        format!(
            "pid {pid} (node) runs JavaScript without a perf map: restart it with node \
             --perf-basic-prof --interpreted-frames-native-stack to name its JavaScript frames"
        )
    );
}
