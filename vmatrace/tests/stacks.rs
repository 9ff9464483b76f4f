//! User stacks of flagged calls on code built like distribution packages
//! (needs root, gcc): the caller of the syscall stub is named, code
//! without frame pointers is unwound with its call-frame information, and
//! no frame lies outside executable code.

mod support;

use std::{path::PathBuf, process::Command};

use serde_json::Value;
use support::*;

/// A C program whose splitting munmap is three named noinline calls below
/// main; it pauses after the call until a line comes on stdin.
const WORKLOAD_C: &str = r#"
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

__attribute__((noinline)) void third_unmaps(char *p) {
    if (munmap(p + 4096, 4096) != 0) perror("munmap");
    __asm__ volatile("" ::: "memory");
}
__attribute__((noinline)) void second_calls(char *p) {
    third_unmaps(p);
    __asm__ volatile("" ::: "memory");
}
__attribute__((noinline)) void first_calls(char *p) {
    second_calls(p);
    __asm__ volatile("" ::: "memory");
}
int main(void) {
    char *p = mmap(0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    p[0] = 1;
    first_calls(p);
    fprintf(stderr, "paused pid=%d\n", getpid());
    char line[8];
    if (!fgets(line, sizeof line, stdin)) return 0;
    return 0;
}
"#;

/// Builds the workload with `flags` into `dir`.
fn build_workload(dir: &std::path::Path, name: &str, flags: &[&str]) -> PathBuf {
    let source = dir.join("stack_workload.c");
    std::fs::write(&source, WORKLOAD_C).unwrap();
    let exe = dir.join(name);
    let status = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&source)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc {flags:?} failed");
    exe
}

/// The munmap event with a stack, the workload's pid, and whether every
/// frame lay in an executable mapping of the paused process.
fn traced_split(exe: &std::path::Path, extra: &[&str], file: &str) -> (Value, bool) {
    let exe = exe.display().to_string();
    let mut args = vec!["--json", "--only-flagged", "-o", file];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", &exe]);
    let mut run = Running::vmatrace(&args);
    let paused = run.wait_stderr("paused pid=");
    let pid: u32 = field(&paused, "pid") as u32;
    let split = run.wait_event(|e| {
        e["call"] == "munmap"
            && e["stack"]["frames"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
    });
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let all_code = split["stack"]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| in_code(&maps, f["addr"].as_u64().unwrap()));
    run.send_line();
    let finished = run.finish();
    assert_eq!(finished.code(), 0, "{}", finished.stderr_text());
    assert!(has_flag(&split, "SPLIT"), "{split}");
    (split, all_code)
}

fn in_code(maps: &str, addr: u64) -> bool {
    maps.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            return false;
        };
        let Some((start, end)) = range.split_once('-') else {
            return false;
        };
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        perms.as_bytes()[2] == b'x' && (start..end).contains(&addr)
    })
}

/// The positions of `names` in the stack, each found after the previous.
fn in_order(functions: &[&str], names: &[&str]) -> bool {
    let mut at = 0;
    for name in names {
        match functions[at..].iter().position(|f| f == name) {
            Some(i) => at += i + 1,
            None => return false,
        }
    }
    true
}

const CALLERS: [&str; 4] = ["third_unmaps", "second_calls", "first_calls", "main"];

const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

/// Debian's detached debug file of the C library (package libc6-dbg),
/// found by the library's build id, installed if missing.
fn libc_debug_file() -> PathBuf {
    use object::Object;
    let data = std::fs::read(LIBC).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let id: String = file
        .build_id()
        .unwrap()
        .expect("libc has a build id")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
    debian_package("libc6-dbg", &[&path])
}

/// Built like a distribution package: no frame pointers anywhere in the
/// workload. The stack names all three calls and main, in order, live and
/// in the replay of the recording after the process is gone.
#[test]
fn stacks_without_frame_pointers_name_every_caller() {
    let debug_file = libc_debug_file();
    let dir = tempfile::tempdir().unwrap();
    let exe = build_workload(dir.path(), "no_fp", &["-O2", "-g", "-fomit-frame-pointer"]);
    let file = dir.path().join("no_fp.vmat").display().to_string();
    let (split, all_code) = traced_split(&exe, &["--debug-info"], &file);
    let functions = stack_functions(&split);
    assert!(functions[0].contains("munmap"), "{functions:?}");
    assert_eq!(functions.get(1), Some(&"third_unmaps"), "{functions:?}");
    assert!(in_order(&functions, &CALLERS), "{functions:?}");
    assert!(all_code, "a frame outside executable code: {split}");
    // libc is stripped; with --debug-info its frame's source line comes
    // from the debug file Debian ships apart (found by build id), and its
    // module is still libc.
    let stub = &split["stack"]["frames"][0];
    assert!(
        stub["file"].as_str().is_some_and(|f| !f.is_empty()),
        "no source file from {}: {stub}",
        debug_file.display()
    );
    assert!(
        stub["module"]
            .as_str()
            .is_some_and(|m| m.ends_with("libc.so.6")),
        "{stub}"
    );

    let replay = Running::vmatrace(&["replay", "--json", "--only-flagged", &file]).finish();
    assert_eq!(replay.code(), 0, "{}", replay.stderr_text());
    let replayed = replay
        .events()
        .into_iter()
        .find(|e| e["call"] == "munmap" && has_flag(e, "SPLIT"))
        .expect("the split in the replay");
    let functions = stack_functions(&replayed);
    assert!(in_order(&functions, &CALLERS), "replayed: {functions:?}");
}

/// Without --debug-info a separate debug file gives names, not DWARF: the
/// dynamic loader's static functions (in no symbol table of ld.so itself)
/// are named from its debug file's, and no frame of it has a source line.
#[test]
fn separate_debug_files_name_functions_without_their_dwarf() {
    libc_debug_file();
    let dir = tempfile::tempdir().unwrap();
    let exe = build_workload(dir.path(), "loaded", &["-O2"])
        .display()
        .to_string();
    let mut run = Running::vmatrace(&["--json", "--only-flagged", "--", &exe]);
    // The loader maps each library over the range it reserved: a SPLIT,
    // named while the process waits.
    run.wait_stderr("paused pid=");
    let mapped = run.wait_event(|e| {
        e["call"] == "mmap"
            && has_flag(e, "SPLIT")
            && e["stack"]["frames"].as_array().is_some_and(|frames| {
                frames
                    .iter()
                    .any(|f| f["function"] == "_dl_map_object_from_fd")
            })
    });
    run.send_line();
    let finished = run.finish();
    assert_eq!(finished.code(), 0, "{}", finished.stderr_text());
    for frame in mapped["stack"]["frames"].as_array().unwrap() {
        assert!(
            frame["module"]
                .as_str()
                .is_some_and(|m| m.ends_with("ld-linux-x86-64.so.2")),
            "{frame}"
        );
        assert!(
            frame["file"].is_null(),
            "a source line without --debug-info: {frame}"
        );
    }
}

/// With frame pointers, the frame-pointer walk alone: the caller of the
/// libc stub (which sets up no frame) is still named, right after it.
#[test]
fn the_caller_of_a_syscall_stub_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_workload(dir.path(), "fp", &["-O2", "-g", "-fno-omit-frame-pointer"]);
    let file = dir.path().join("fp.vmat").display().to_string();
    let (split, all_code) = traced_split(&exe, &["--unwind", "fp"], &file);
    let functions = stack_functions(&split);
    assert!(functions[0].contains("munmap"), "{functions:?}");
    assert_eq!(functions.get(1), Some(&"third_unmaps"), "{functions:?}");
    assert!(in_order(&functions, &CALLERS), "{functions:?}");
    assert!(all_code, "a frame outside executable code: {split}");
}

/// A C program that mallocs and frees blocks of 256 KiB in a named
/// function, for Debian's jemalloc to unmap piecemeal.
const JEMALLOC_WORKLOAD_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) void churn_in_named_function(void) {
    for (int round = 0; round < 50; round++) {
        void *p[16];
        for (int i = 0; i < 16; i++) p[i] = malloc(256 * 1024);
        for (int i = 0; i < 16; i += 2) free(p[i]);
        for (int i = 1; i < 16; i += 2) free(p[i]);
        __asm__ volatile("" ::: "memory");
    }
}
int main(void) {
    churn_in_named_function();
    fprintf(stderr, "paused pid=%d\n", getpid());
    char line[8];
    if (!fgets(line, sizeof line, stdin)) return 0;
    return 0;
}
"#;

const LIBJEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// Debian's shared jemalloc, installed if missing.
fn debian_jemalloc() -> &'static str {
    debian_package("libjemalloc2", &[LIBJEMALLOC]);
    LIBJEMALLOC
}

/// Debian's libjemalloc2 preloaded into a C program built without frame
/// pointers, told to give memory back at once: the SPLIT stacks pass
/// through jemalloc into the program's own function, and `report
/// --top-sites` ranks a jemalloc frame first, with the program's function
/// past the allocator beside it.
#[test]
fn jemalloc_splits_are_unwound_into_the_program() {
    let jemalloc = debian_jemalloc();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("jemalloc_churn.c");
    std::fs::write(&source, JEMALLOC_WORKLOAD_C).unwrap();
    let exe = dir.path().join("jemalloc_churn");
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-fomit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    let file = dir.path().join("jemalloc.vmat").display().to_string();
    let preload = format!("LD_PRELOAD={jemalloc}");
    let exe = exe.display().to_string();
    let mut run = Running::vmatrace(&[
        "--json",
        "--only-flagged",
        "-o",
        &file,
        "--",
        "env",
        &preload,
        "MALLOC_CONF=retain:false,dirty_decay_ms:0,muzzy_decay_ms:0",
        &exe,
    ]);
    run.wait_stderr("paused pid=");
    let split = run.wait_event(|e| {
        e["call"] == "munmap" && has_flag(e, "SPLIT") && e["stack"]["frames"].is_array()
    });
    run.send_line();
    let finished = run.finish();
    assert_eq!(finished.code(), 0, "{}", finished.stderr_text());
    let frames = split["stack"]["frames"].as_array().unwrap();
    let through_jemalloc = frames.iter().any(|f| {
        f["module"]
            .as_str()
            .is_some_and(|m| m.contains("libjemalloc"))
    });
    assert!(through_jemalloc, "{split}");
    assert!(
        stack_functions(&split).contains(&"churn_in_named_function"),
        "{split}"
    );
    // No frame is printed as `??`: unnamed ones are module+offset.
    assert!(
        frames
            .iter()
            .all(|f| f["function"].is_string() || f["module"].is_string()),
        "{split}"
    );

    let report = Running::vmatrace(&["report", "--json", "--top-sites=3", &file]).finish();
    assert_eq!(report.code(), 0, "{}", report.stderr_text());
    let top = report
        .json()
        .into_iter()
        .find_map(|r| r["top_sites"].as_array().and_then(|s| s.first().cloned()))
        .expect("top sites in the report");
    let site = top["site"].as_str().unwrap();
    assert!(
        site.contains("jemalloc") || site.starts_with("je_"),
        "{top}"
    );
    assert_eq!(top["caller"], "churn_in_named_function", "{top}");
}

/// Two callers cut mappings through one function, at different stack
/// depths, many times: no frame pointers, as distributions build.
const SITES_WORKLOAD_C: &str = r#"
#include <stdlib.h>
#include <sys/mman.h>

__attribute__((noinline)) void punch(void) {
    char *p = mmap(0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) exit(1);
    p[0] = 1;
    if (munmap(p + 4096, 4096) != 0) exit(2);
    munmap(p, 4096);
    munmap(p + 2 * 4096, 4096);
}
__attribute__((noinline)) void shallow_caller(void) {
    punch();
    __asm__ volatile("" ::: "memory");
}
__attribute__((noinline)) void deep_caller(void) {
    volatile char pad[512];
    pad[0] = 1;
    punch();
    __asm__ volatile("" ::: "memory");
}
int main(int argc, char **argv) {
    int rounds = atoi(argv[1]);
    for (int i = 0; i < rounds; i++) {
        shallow_caller();
        deep_caller();
        deep_caller();
    }
    return 0;
}
"#;

/// The SPLITs of the run, by the caller of `punch` their stack names.
fn splits_by_caller(events: &[Value]) -> (u64, u64, u64) {
    let (mut shallow, mut deep, mut neither) = (0, 0, 0);
    for split in events
        .iter()
        .filter(|e| e["call"] == "munmap" && has_flag(e, "SPLIT"))
    {
        let functions = stack_functions(split);
        if functions.contains(&"shallow_caller") {
            shallow += 1;
        } else if functions.contains(&"deep_caller") {
            deep += 1;
        } else {
            neither += 1;
        }
    }
    (shallow, deep, neither)
}

/// With `--site-stacks` a live trace captures a call site's stack once a
/// second and the site's other calls share it: a storm of 9,000 SPLITs
/// from two callers gets a handful of stacks, yet every SPLIT has the
/// stack of its own caller (the kernel tells these callers apart by the
/// stack's depth), and a shared stack says how many calls it stands for.
/// By default every flagged call gets its own.
#[test]
fn a_split_storm_sends_a_stack_per_site_and_counts_every_call() {
    const ROUNDS: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("sites.c");
    std::fs::write(&source, SITES_WORKLOAD_C).unwrap();
    let exe = dir.path().join("sites");
    let status = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    let exe = exe.display().to_string();
    let rounds = ROUNDS.to_string();

    let by_site = Running::vmatrace(&[
        "--json",
        "--only-flagged",
        "--site-stacks",
        "--",
        &exe,
        rounds.as_str(),
    ])
    .finish();
    by_site.assert_complete();
    let events = by_site.events();
    assert_eq!(
        splits_by_caller(&events),
        (ROUNDS, 2 * ROUNDS, 0),
        "every SPLIT has its caller's stack"
    );
    let stacks = &by_site.summary()["stacks"];
    assert_eq!(stacks["by_site"], true, "{stacks}");
    let captured = stacks["captured"].as_u64().unwrap();
    let shared = stacks["shared"].as_u64().unwrap();
    assert!(
        captured < 100 && shared >= 3 * ROUNDS - captured,
        "a stack per site a second: {stacks}"
    );
    // The calls a stack stands for count up from its capture.
    let counts: Vec<u64> = events
        .iter()
        .filter(|e| stack_functions(e).contains(&"shallow_caller"))
        .filter_map(|e| e["stack_shared"]["calls"].as_u64())
        .take(3)
        .collect();
    assert_eq!(counts, [1, 2, 3], "shared stacks count their calls");

    let each =
        Running::vmatrace(&["--json", "--only-flagged", "--", &exe, rounds.as_str()]).finish();
    each.assert_complete();
    assert_eq!(splits_by_caller(&each.events()), (ROUNDS, 2 * ROUNDS, 0));
    let stacks = &each.summary()["stacks"];
    assert_eq!(
        (&stacks["by_site"], &stacks["shared"]),
        (&Value::Bool(false), &Value::from(0)),
        "{stacks}"
    );
    assert!(
        stacks["captured"].as_u64().unwrap() >= 3 * ROUNDS,
        "{stacks}"
    );
}
