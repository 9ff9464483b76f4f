//! `vmatrace maps`: the anatomy of a live process of known layout, of its
//! saved smaps, and the errors of a damaged file.

mod support;

use serde_json::Value;
use support::*;

const HOLES: u64 = 300;
const PATCHES: u64 = 20;
const THREADS: u64 = 5;
const FILES: u64 = 40;

fn maps_json(args: &[&str]) -> Value {
    let finished = Running::vmatrace(args).finish();
    assert_eq!(finished.code(), 0, "{}", finished.stderr_text());
    serde_json::from_str(finished.stdout.last().expect("a line")).expect("JSON")
}

fn group<'a>(anatomy: &'a Value, kind: &str) -> &'a Value {
    anatomy["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} group: {anatomy:#}"))
}

fn vmas_of(anatomy: &Value, kind: &str) -> u64 {
    group(anatomy, kind)["vmas"].as_u64().unwrap()
}

fn hex(line: &str, key: &str) -> u64 {
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=0x")))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    u64::from_str_radix(value, 16).unwrap()
}

/// The groups add up to the count, and each pattern of the layout lands in
/// its group: live (threads by their stack pointers, policies from
/// numa_maps) and from the smaps saved meanwhile.
#[test]
fn a_known_layout_is_explained_live_and_from_its_saved_smaps() {
    let dir = tempfile::tempdir().unwrap();
    let dir_name = dir.path().display().to_string();
    let numbers = [HOLES, PATCHES, THREADS, FILES].map(|n| n.to_string());
    let mut args = vec!["anatomy"];
    args.extend(numbers.iter().map(String::as_str));
    args.extend([dir_name.as_str(), "--pause"]);
    let mut workload = Running::spawn(&workload_bin(), &args);
    let layout = workload.wait_stderr("anatomy holes=");
    let paused = workload.wait_stderr("paused pid=");
    let pid = field(&paused, "pid") as u32;
    let smaps = dir.path().join("saved.smaps");
    std::fs::copy(format!("/proc/{pid}/smaps"), &smaps).unwrap();
    let pid_arg = pid.to_string();
    let live = maps_json(&["maps", "-p", &pid_arg, "--json"]);
    let maps = maps_count(pid);
    workload.send_line();
    assert_eq!(workload.finish().code(), 0);

    assert_eq!(live["vmas"], maps, "the count is /proc/{pid}/maps's");
    let groups = live["groups"].as_array().unwrap();
    let total: u64 = groups.iter().map(|g| g["vmas"].as_u64().unwrap()).sum();
    assert_eq!(total, maps, "the groups add up to the count");
    let sizes: Vec<u64> = groups.iter().map(|g| g["vmas"].as_u64().unwrap()).collect();
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "largest first: {sizes:?}"
    );

    // The holes: one run from the workload's region, its pieces all there
    // (a loose neighbour a page away may join it).
    let holes_at = hex(&layout, "holes_at");
    let holes = group(&live, "holes");
    let run = holes["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            let (start, end) = p["name"].as_str().unwrap().split_once('-').unwrap();
            let range = u64::from_str_radix(&start[2..], 16).unwrap()
                ..u64::from_str_radix(&end[2..], 16).unwrap();
            range.contains(&holes_at)
        })
        .expect("the run of the workload's holes");
    assert!(
        (HOLES..=HOLES + 2).contains(&run["vmas"].as_u64().unwrap()),
        "{run}"
    );
    assert_eq!(groups[0]["kind"], "holes");

    assert_eq!(
        vmas_of(&live, "thread_stacks"),
        2 * THREADS,
        "a stack and a guard each"
    );
    assert_eq!(live["thread_stacks_from"], "threads");
    let files = group(&live, "files");
    assert_eq!(files["vmas"], FILES);
    assert_eq!(files["parts"][0]["what"], "directory");
    assert_eq!(files["parts"][0]["name"], format!("{dir_name}/"));
    assert_eq!(files["parts"][0]["vmas"], FILES);
    // The patchwork, the mbind'd page and the mlock'd one.
    assert!(vmas_of(&live, "protections") >= 2 * PATCHES + 1 + 3 + 3);
    let blockers = &live["merge_blockers"];
    assert!(
        blockers["protection"].as_u64().unwrap() >= 2 * PATCHES,
        "{blockers}"
    );
    assert_eq!(blockers["policy"], 2, "{blockers}");
    assert!(blockers["flags"].as_u64().unwrap() >= 2, "{blockers}");
    assert!(vmas_of(&live, "libraries") >= 4);
    assert_eq!(group(&live, "special")["parts"][0]["what"], "kind");

    // The saved smaps: the same groups; the threads guessed from the
    // layout, the policies unknown (smaps has none).
    let saved = maps_json(&["maps", &smaps.display().to_string(), "--json"]);
    assert_eq!(saved["vmas"], maps);
    assert_eq!(saved["thread_stacks_from"], "layout");
    for kind in [
        "holes",
        "thread_stacks",
        "files",
        "protections",
        "libraries",
    ] {
        assert_eq!(
            group(&saved, kind)["vmas"],
            group(&live, kind)["vmas"],
            "{kind}"
        );
    }
    assert_eq!(
        saved["merge_blockers"]["flags"],
        live["merge_blockers"]["flags"]
    );
    assert!(saved["merge_blockers"].get("policy").is_none());

    // The text: the largest group first, with its advice when it matters.
    let text =
        Running::vmatrace(&["maps", &smaps.display().to_string(), "--limit", "1000"]).finish();
    assert_eq!(text.code(), 0);
    assert!(
        text.stdout[0].contains(&format!(": {maps} VMAs, ")),
        "{:?}",
        text.stdout
    );
    assert!(text.stdout[2].starts_with("holes "), "{:?}", text.stdout);
    assert!(
        text.stdout
            .iter()
            .any(|l| l.contains("what to do: an allocator giving pages back"))
    );
}

/// A damaged file says which line; a missing process or file, which.
#[test]
fn bad_input_gets_a_clear_error_and_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged.maps");
    let mut lines: Vec<String> = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[2] = "55de9ed93000-zz r--p 00000000 fe:00 1 /usr/bin/x".into();
    std::fs::write(&damaged, lines.join("\n")).unwrap();
    let path = damaged.display().to_string();
    for (args, code, says) in [
        (vec!["maps", path.as_str()], 5, "line 3: the end is not hex"),
        (
            vec!["maps", "/nonexistent/maps"],
            4,
            "reading /nonexistent/maps",
        ),
        (vec!["maps", "-p", "999999999"], 2, "no process 999999999"),
        (
            vec!["maps", "-p", "2"],
            2,
            "pid 2 (kthreadd) has no address space",
        ),
        (vec!["maps"], 2, "--pid"),
        (
            vec!["maps", "/proc/self/maps", "--limit", "0"],
            2,
            "--limit",
        ),
    ] {
        let finished = Running::vmatrace(&args).finish();
        assert_eq!(
            finished.code(),
            code,
            "{args:?}: {}",
            finished.stderr_text()
        );
        assert!(
            finished.stderr_text().contains(says),
            "{args:?}: {}",
            finished.stderr_text()
        );
        assert!(finished.stdout.is_empty(), "{args:?}");
    }
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let finished = Running::vmatrace(&["maps", &empty.display().to_string()]).finish();
    assert_eq!(finished.code(), 5);
    assert!(finished.stderr_text().contains("holds no mapping"));
}

/// A user explains their own process without root.
#[test]
fn maps_needs_no_root_for_ones_own_process() {
    let finished = vmatrace_as_nobody(&["maps", "/proc/self/maps", "--json"]);
    assert_eq!(finished.code(), 0, "{}", finished.stderr_text());
    let anatomy: Value = serde_json::from_str(&finished.stdout[0]).unwrap();
    assert!(anatomy["vmas"].as_u64().unwrap() > 5);
}

/// A trace attached to a process that holds more than a quarter of the
/// limit says what holds its VMAs before the first event; so does `-a`.
#[test]
fn a_trace_attached_to_a_crowded_process_says_what_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let holes = (max_map_count() / 4 + 100).to_string();
    let dir_name = dir.path().display().to_string();
    let args = [
        "anatomy",
        holes.as_str(),
        "2",
        "1",
        "1",
        dir_name.as_str(),
        "--pause",
    ];
    let mut workload = Running::spawn(&workload_bin(), &args);
    let paused = workload.wait_stderr("paused pid=");
    let pid = field(&paused, "pid").to_string();
    for args in [
        vec!["-p", pid.as_str(), "-q", "-d", "1"],
        vec!["-a", "-q", "-d", "1"],
    ] {
        let trace = Running::vmatrace(&args).finish();
        assert_eq!(trace.code(), 0, "{args:?}: {}", trace.stderr_text());
        let note = trace
            .stderr
            .iter()
            .find(|l| l.contains(&format!("pid {pid} (workload) already holds")))
            .unwrap_or_else(|| panic!("{args:?}: no note in {}", trace.stderr_text()));
        assert!(note.contains(&format!(": holes {holes} (")), "{note}");
        assert!(
            note.contains(&format!("`vmatrace maps -p {pid}` explains them")),
            "{note}"
        );
    }
    // top names what holds a crowded process's VMAs.
    let top = Running::vmatrace(&["top", "-p", &pid, "--json", "-d", "1.5"]).finish();
    assert_eq!(top.code(), 0, "{}", top.stderr_text());
    let refresh: Value = serde_json::from_str(&top.stdout[0]).unwrap();
    let held = &refresh["processes"][0]["anatomy"];
    assert_eq!(held[0]["kind"], "holes", "{refresh}");
    assert_eq!(held[0]["vmas"].to_string(), holes);

    // A recording keeps the snapshot: report says what held the count.
    let recording = dir.path().join("crowded.vmat").display().to_string();
    let recorded =
        Running::vmatrace(&["record", "-q", "-o", &recording, "-p", &pid, "-d", "1"]).finish();
    assert_eq!(recorded.code(), 0, "{}", recorded.stderr_text());
    let report = Running::vmatrace(&["report", "--json", &recording]).finish();
    assert_eq!(report.code(), 0, "{}", report.stderr_text());
    let report: Value = serde_json::from_str(report.stdout.last().unwrap()).unwrap();
    let held = &report["processes"][0]["anatomy_at_start"];
    assert_eq!(held["groups"][0]["kind"], "holes", "{held}");
    assert_eq!(held["groups"][0]["vmas"].to_string(), holes);
    let text = Running::vmatrace(&["report", &recording]).finish();
    assert!(
        text.stdout
            .iter()
            .any(|l| l.starts_with(&format!("  held at the start: holes {holes} ("))),
        "{:?}",
        text.stdout
    );
    workload.send_line();
    assert_eq!(workload.finish().code(), 0);
}
