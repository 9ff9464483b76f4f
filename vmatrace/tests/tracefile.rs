//! Recording with the real probes and reading back, damaged files included.

mod support;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use serde_json::Value;
use support::*;
use vmatrace::tracefile::{
    format,
    reader::{self, Ending},
};

fn workload() -> String {
    workload_bin().display().to_string()
}

fn run_vmatrace(args: &[&str]) -> Finished {
    Running::vmatrace(args).finish()
}

fn record(path: &Path, workload_args: &[&str]) -> Finished {
    let (path, workload) = (path.display().to_string(), workload());
    let mut args = vec!["record", "--json", "-o", &path, "--", &workload];
    args.extend_from_slice(workload_args);
    let finished = run_vmatrace(&args);
    finished.assert_complete();
    finished
}

fn report_json(path: &Path) -> (i32, Value) {
    let finished = run_vmatrace(&["report", "--json", &path.display().to_string()]);
    let value =
        serde_json::from_str(finished.stdout.last().expect("a report")).expect("JSON report");
    (finished.code(), value)
}

/// The incident recorded with the real probes: the report agrees with what
/// the live run printed.
#[test]
fn recorded_incident_reports_what_the_live_run_saw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("incident.vmat");
    let live = record(&path, &["incident"]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the trace file is private");

    let live_summary = live.summary();
    let live_process = &live_summary["processes"][0];
    let (code, report) = report_json(&path);
    assert_eq!(code, 0);
    assert_eq!(report["complete"], true);
    assert_eq!(report["lost_total"], 0);
    let process = &report["processes"][0];
    for (live_key, report_key) in [
        ("pid", "pid"),
        ("count", "vmas_final"),
        ("peak", "vmas_peak"),
        ("splits", "splits"),
        ("enomem", "enomem"),
        ("near_limit", "near_limit"),
        ("calls", "calls"),
        ("bytes_mapped", "bytes_mapped"),
    ] {
        assert_eq!(live_process[live_key], process[report_key], "{live_key}");
    }
    assert_eq!(process["vmas_peak"], max_map_count());
    assert_eq!(process["enomem"], 3);

    // Replay prints the same events with the same flags as the live run.
    let replay = run_vmatrace(&["replay", "--json", &path.display().to_string()]);
    assert_eq!(replay.code(), 0);
    let live_events = live.events();
    let replayed: Vec<Value> = replay
        .stdout
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(live_events.len(), replayed.len());
    for (a, b) in live_events.iter().zip(&replayed) {
        assert_eq!(a, b);
    }
    // Time windows, in seconds since the recording started.
    let file = path.display().to_string();
    let none = run_vmatrace(&["replay", "--since", "3600", &file]);
    assert_eq!((none.code(), none.stdout.len()), (0, 0));
    let all = run_vmatrace(&["replay", "--json", "--since", "0", "--until", "3600", &file]);
    assert_eq!(all.stdout.len(), live_events.len());

    // The plot for the write-up: an SVG with the limit and the markers.
    let svg = path.with_extension("svg");
    let plotted = run_vmatrace(&[
        "report",
        &path.display().to_string(),
        "--plot",
        &svg.display().to_string(),
    ]);
    assert_eq!(plotted.code(), 0, "{}", plotted.stderr_text());
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawing.starts_with("<svg") && drawing.len() > 20_000,
        "{} bytes",
        drawing.len()
    );
    assert!(drawing.contains(&format!("vm.max_map_count = {}", max_map_count())));
    assert!(drawing.contains("<polyline"), "a line is drawn");
    // What is drawn is what was recorded: the step line starts at the
    // first count, climbs to the peak at the limit, ends at the final
    // count, never goes back in time, and holds each count until the next.
    let plotted = run_vmatrace(&[
        "report",
        "--json",
        &path.display().to_string(),
        "--plot",
        &svg.display().to_string(),
    ]);
    let plotted: Value = serde_json::from_str(plotted.stdout.last().unwrap()).unwrap();
    let drawn = &plotted["processes"][0];
    let series: Vec<(f64, i64)> = serde_json::from_value(drawn["plot_series"].clone()).unwrap();
    let counts: Vec<i64> = series.iter().map(|p| p.1).collect();
    assert_eq!(counts.first(), drawn["vmas_start"].as_i64().as_ref());
    assert_eq!(counts.last(), drawn["vmas_final"].as_i64().as_ref());
    assert_eq!(counts.iter().max(), drawn["vmas_peak"].as_i64().as_ref());
    assert_eq!(*counts.iter().max().unwrap() as u64, max_map_count());
    assert!(
        series.windows(2).all(|w| w[0].0 <= w[1].0),
        "time runs forward"
    );
    assert!(
        series
            .windows(2)
            .all(|w| w[0].0 == w[1].0 || w[0].1 == w[1].1),
        "a step: the count changes only where time stands still"
    );
    let flagged = run_vmatrace(&[
        "replay",
        "--only-flagged",
        "--pid",
        &process["pid"].to_string(),
        &path.display().to_string(),
    ]);
    assert_eq!(
        flagged
            .stdout
            .iter()
            .filter(|l| l.contains("[ENOMEM"))
            .count(),
        3
    );
}

fn small_trace(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("small.vmat");
    record(&path, &["mmap", "3"]);
    let data = std::fs::read(&path).unwrap();
    (path, data)
}

fn record_ends(data: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut offset = format::PREAMBLE_LEN;
    while offset < data.len() {
        offset += format::decode(&data[offset..]).expect("a clean trace").1;
        ends.push(offset);
    }
    ends
}

/// A real trace cut at every byte: no panic, and every complete record
/// before the cut comes back.
#[test]
fn a_real_trace_cut_anywhere_keeps_every_complete_record() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = small_trace(dir.path());
    let ends = record_ends(&data);
    for cut in 0..data.len() {
        match reader::parse(&data[..cut], "cut") {
            Err(_) => assert!(
                cut < ends[0],
                "cut at {cut} inside the records lost the header"
            ),
            Ok(trace) => {
                let complete = ends[1..].iter().filter(|end| **end <= cut).count();
                assert_eq!(trace.records.len(), complete, "cut at {cut}");
                if !ends.contains(&cut) {
                    assert!(
                        matches!(trace.ending, Ending::Truncated { .. }),
                        "cut at {cut}"
                    );
                }
            }
        }
    }
    // Through the command line: the report still comes, with exit code 8.
    let cut_path = dir.path().join("cut.vmat");
    std::fs::write(&cut_path, &data[..data.len() - 7]).unwrap();
    let (code, report) = report_json(&cut_path);
    assert_eq!(code, 8);
    assert_eq!(report["complete"], false);
    assert!(report["events"].as_u64().unwrap() >= 6);
    assert_eq!(report_json(&path).0, 0, "the uncut file is complete");
}

/// A flipped byte in each record of a real trace: reading stops there with
/// exit code 7, everything before it kept.
#[test]
fn a_damaged_record_keeps_what_precedes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = small_trace(dir.path());
    let ends = record_ends(&data);
    for (index, window) in ends.windows(2).enumerate() {
        let (start, end) = (window[0], window[1]);
        let mut damaged = data.clone();
        damaged[(start + end) / 2] ^= 0x5a;
        let trace = reader::parse(&damaged, "damaged").unwrap();
        assert_eq!(trace.records.len(), index, "damage in record {index}");
        assert_eq!(
            trace.ending,
            Ending::Corrupt {
                offset: start as u64,
                reason: "checksum mismatch".into()
            }
        );
    }
    let path = dir.path().join("damaged.vmat");
    let mut damaged = data.clone();
    let middle = ends[ends.len() / 2];
    damaged[middle + 4..middle + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &damaged).unwrap();
    let finished = run_vmatrace(&["replay", &path.display().to_string()]);
    assert_eq!(finished.code(), 7, "{}", finished.stderr_text());
    assert!(
        finished.stderr_text().contains("damaged"),
        "{}",
        finished.stderr_text()
    );
    assert!(
        !finished.stdout.is_empty(),
        "the events before the damage are printed"
    );
}

#[test]
fn files_that_are_no_traces_fail_with_their_own_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = small_trace(dir.path());
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let mut newer = data.clone();
    newer[8] = 200;
    let cases = [
        (write("empty.vmat", b""), 5, "is empty"),
        (
            write("text.vmat", b"just some text\n"),
            5,
            "not a vmatrace trace",
        ),
        (write("newer.vmat", &newer), 6, "newer vmatrace"),
        (dir.path().display().to_string(), 4, "is a directory"),
        (
            dir.path().join("missing.vmat").display().to_string(),
            4,
            "No such file",
        ),
    ];
    for (path, code, message) in cases {
        for command in ["report", "replay"] {
            let finished = run_vmatrace(&[command, &path]);
            assert_eq!(
                finished.code(),
                code,
                "{command} {path}: {}",
                finished.stderr_text()
            );
            assert!(
                finished.stderr_text().contains(message),
                "{command} {path}: {}",
                finished.stderr_text()
            );
            // Said once, not once per layer of context.
            assert_eq!(
                finished.stderr_text().matches(message).count(),
                1,
                "{}",
                finished.stderr_text()
            );
        }
    }
    // No permission: a root-only file read by nobody.
    let private = write("private.vmat", &data);
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let finished = vmatrace_as_nobody(&["report", &private]);
    assert_eq!(finished.code(), 4, "{}", finished.stderr_text());
    assert!(
        finished.stderr_text().contains("Permission denied"),
        "{}",
        finished.stderr_text()
    );
}

/// Reading needs no root: a readable trace reports as nobody.
#[test]
fn reading_back_needs_no_root() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_trace(dir.path());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let finished = vmatrace_as_nobody(&["report", &path.display().to_string()]);
    assert_eq!(finished.code(), 0, "{}", finished.stderr_text());
    assert!(
        finished
            .stdout
            .join("\n")
            .contains("the recording was closed properly")
    );
}

/// Chrome export: valid JSON, one counter sample per count change.
/// Folded stacks and the flame graph weigh what was recorded: the SPLITs,
/// VMAs added and calls of the folded lines are those of the recorded
/// calls with a stack (all of them with --stacks, unless the kernel could
/// not copy some: counted as `stacks_unavailable`).
#[test]
fn flame_graphs_weigh_what_was_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("churn.vmat").display().to_string();
    let workload = workload();
    let recorded = run_vmatrace(&[
        "record",
        "--json",
        "--stacks",
        "-o",
        &path,
        "--",
        &workload,
        "split-churn",
        "300",
    ]);
    recorded.assert_complete();
    let unavailable = recorded.summary()["lost"]["stacks_unavailable"]
        .as_u64()
        .unwrap();

    let events = run_vmatrace(&["export", &path, "--format", "jsonl"]);
    let calls: Vec<Value> = events
        .stdout
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "syscall")
        .collect();
    let stacked: Vec<&Value> = calls.iter().filter(|e| e.get("stack").is_some()).collect();
    assert_eq!(
        calls.len() - stacked.len(),
        unavailable as usize,
        "every other call has its stack"
    );
    let splits = stacked.iter().filter(|e| has_flag(e, "SPLIT")).count() as u64;
    let added: i64 = stacked
        .iter()
        .filter(|e| e["exact"] == true)
        .map(|e| e["delta"].as_i64().unwrap().max(0))
        .sum();

    let folded = |weight: &str| -> (Vec<String>, u64) {
        let export = run_vmatrace(&["export", &path, "--format", "folded", "--weight", weight]);
        assert_eq!(export.code(), 0, "{}", export.stderr_text());
        let total = export
            .stdout
            .iter()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum();
        (export.stdout.clone(), total)
    };
    let (split_lines, folded_splits) = folded("splits");
    assert_eq!(folded_splits, splits);
    let churned: u64 = split_lines
        .iter()
        .filter(|l| l.contains(";workload::split_churn;") && l.contains(";[munmap] "))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert!(churned > 0, "{split_lines:#?}");
    assert_eq!(folded("calls").1, stacked.len() as u64);
    assert_eq!(folded("vmas").1 as i64, added);

    // The SVG: the same widths, and a later run may redraw it.
    let svg = dir.path().join("flame.svg");
    let svg_arg = svg.display().to_string();
    for _ in 0..2 {
        let drawn = run_vmatrace(&[
            "report",
            &path,
            "--flamegraph",
            &svg_arg,
            "--weight",
            "splits",
        ]);
        assert_eq!(drawn.code(), 0, "{}", drawn.stderr_text());
    }
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawing.contains(&format!("<title>all ({folded_splits} SPLITs, 100%)")),
        "{}",
        &drawing[..2000]
    );
    assert!(drawing.contains("<title>workload::split_churn ("));

    // One page for the write-up: the report's text, the plot inline, the
    // flame graph inside.
    let html = dir.path().join("report.html");
    let html_arg = html.display().to_string();
    let paged = run_vmatrace(&["report", &path, "--html", &html_arg]);
    assert_eq!(paged.code(), 0, "{}", paged.stderr_text());
    let page = std::fs::read_to_string(&html).unwrap();
    for part in [
        "<h2>Verdict</h2>",
        "<h2>VMA count</h2>\n<figure><svg",
        "<object type=\"image/svg+xml\" data=\"data:image/svg+xml;base64,",
        "lost events: 0",
        "top call sites by VMAs added",
    ] {
        assert!(page.contains(part), "{part:?} not on the page");
    }
    assert!(!page.contains("src=\"http"), "the page fetches nothing");
    assert!(drawing.contains(&format!(
        "stacks of {} of {} traced calls",
        stacked.len(),
        calls.len()
    )));
}

#[test]
fn chrome_export_has_a_counter_sample_per_count_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("threads.vmat");
    // The cuts start once the lock probes are attached: exact, so flagged.
    record(&path, &["threads", "2", "30", "1000"]);
    let file = path.display().to_string();
    let chrome = run_vmatrace(&["export", &file, "--format", "chrome"]);
    assert_eq!(chrome.code(), 0, "{}", chrome.stderr_text());
    let value: Value = serde_json::from_str(&chrome.stdout.join("\n")).expect("Chrome JSON parses");
    let events = value["traceEvents"].as_array().unwrap();
    let counters = events
        .iter()
        .filter(|e| e["ph"] == "C" && e["name"] == "vmas")
        .count();
    let jsonl = run_vmatrace(&["export", &file, "--format", "jsonl"]);
    assert_eq!(jsonl.code(), 0);
    let mut changes = 0;
    let mut last: std::collections::HashMap<u64, Value> = Default::default();
    for line in &jsonl.stdout {
        let event: Value = serde_json::from_str(line).unwrap();
        let pid = event["pid"].as_u64().unwrap();
        if !event["vmas"].is_null()
            && last.insert(pid, event["vmas"].clone()).as_ref() != Some(&event["vmas"])
        {
            changes += 1;
        }
    }
    assert!(changes > 60, "{changes} count changes");
    assert_eq!(counters, changes);
    let splits = events
        .iter()
        .filter(|e| e["ph"] == "i" && e["name"] == "SPLIT")
        .count();
    assert!(splits >= 62, "{splits} SPLIT instants");
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "X" && e["name"] == "munmap")
    );
}

/// SIGINT while recording: the file is flushed and closed properly.
#[test]
fn interrupting_a_recording_closes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("interrupted.vmat");
    let mut target = Running::spawn(&workload_bin(), &["mmap", "5", "--wait"]);
    target.wait_stderr("ready pid=");
    let mut trace = Running::vmatrace(&[
        "record",
        "-q",
        "-o",
        &path.display().to_string(),
        "-p",
        &target.pid().to_string(),
    ]);
    trace.wait_stderr("vmatrace: tracing");
    target.send_line();
    target.wait_stderr("mmap pairs=5");
    let _ = Command::new("kill")
        .args(["-INT", &trace.pid().to_string()])
        .status();
    assert_eq!(trace.finish().code(), 0);
    assert!(target.finish().status.success());
    let trace = reader::read_file(&path).unwrap();
    assert_eq!(trace.ending, Ending::Clean);
}

/// --max-size keeps the newest part: FILE and FILE.1, each a whole trace
/// with its header and process snapshots, the newest events in FILE.
#[test]
fn max_size_rotates_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotating.vmat");
    let file = path.display().to_string();
    let workload = workload();
    let finished = run_vmatrace(&[
        "record",
        "-q",
        "-o",
        &file,
        "--max-size",
        "256K",
        "--",
        &workload,
        "mmap",
        "5000",
    ]);
    assert_eq!(finished.code(), 0, "{}", finished.stderr_text());
    let older = dir.path().join("rotating.vmat.1");
    for segment in [&path, &older] {
        let size = std::fs::metadata(segment).unwrap().len();
        assert!(
            size <= 128 * 1024 + 200,
            "{} is {size} bytes",
            segment.display()
        );
        let mode = std::fs::metadata(segment).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let newest = reader::read_file(&path).unwrap();
    let previous = reader::read_file(&older).unwrap();
    assert_eq!(newest.ending, Ending::Clean);
    assert_eq!(previous.ending, Ending::Clean);
    let times = |trace: &reader::Trace| -> Vec<u64> {
        trace
            .records
            .iter()
            .filter_map(|r| match r {
                format::Record::Event(e) => Some(e.exit_ns),
                _ => None,
            })
            .collect()
    };
    let (old, new) = (times(&previous), times(&newest));
    assert!(!old.is_empty() && !new.is_empty());
    assert!(old.last() < new.first(), "FILE.1 holds the older events");
    // The process snapshot taken at exec is carried into the new file.
    assert!(
        newest
            .records
            .iter()
            .any(|r| matches!(r, format::Record::Process(p) if p.cmdline.contains("mmap 5000")))
    );
    // The workload's last calls (its exit) are in the newest file.
    assert!(
        newest
            .records
            .iter()
            .any(|r| matches!(r, format::Record::Event(e) if e.kind == 3))
    );
    // So are the stacks symbolized before: every event of the newest file
    // that names a stack finds it there. (An event of FILE.1 may not: its
    // stack may have been symbolized after FILE.1 was closed.)
    let stacks: Vec<(u32, u32)> = newest
        .records
        .iter()
        .filter_map(|r| match r {
            format::Record::Stack(s) => Some((s.pid, s.id)),
            _ => None,
        })
        .collect();
    assert!(!stacks.is_empty(), "the loader's SPLITs have stacks");
    for record in &newest.records {
        if let format::Record::Event(e) = record
            && let Some(id) = e.stack.checked_sub(1)
        {
            assert!(stacks.contains(&(e.pid, id)), "stack {id} missing");
        }
    }
    let (code, report) = report_json(&path);
    assert_eq!(code, 0);
    assert_eq!(report["complete"], true);
}

/// A ring buffer far too small for the rate: events are lost, and every
/// one is counted: the live run exits 3 with the total in its summary, the
/// recording holds the same total, and the report says in which seconds.
#[test]
fn lost_events_are_counted_reported_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lossy.vmat").display().to_string();
    let workload = workload();
    let finished = run_vmatrace(&[
        "--json",
        "-q",
        "--buffer-size",
        "4096",
        "-o",
        &file,
        "--",
        &workload,
        "split-churn",
        "100000",
    ]);
    assert_eq!(finished.code(), 3, "{}", finished.stderr_text());
    let summary: Value = serde_json::from_str(finished.stdout.last().unwrap()).unwrap();
    let lost = summary["lost_total"].as_u64().unwrap();
    assert!(lost > 0, "{summary}");
    assert!(
        finished.stderr_text().contains("events were lost"),
        "{}",
        finished.stderr_text()
    );

    let (code, report) = report_json(Path::new(&file));
    assert_eq!(code, 0);
    assert_eq!(
        report["lost_total"].as_u64(),
        Some(lost),
        "{}",
        report["lost"]
    );
    let in_gaps: u64 = report["lost_gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["lost"].as_u64().unwrap())
        .sum();
    assert_eq!(in_gaps, lost, "{}", report["lost_gaps"]);
}

/// `--debug-probes` shows the programs' own diagnostics (aya-log): a call
/// that could not be delivered says so, with its thread, as it happens.
#[test]
fn debug_probes_say_why_a_call_was_lost() {
    let workload = workload();
    let finished = run_vmatrace(&[
        "--json",
        "-q",
        "--debug-probes",
        "--buffer-size",
        "4096",
        "--",
        &workload,
        "split-churn",
        "20000",
    ]);
    assert_eq!(finished.code(), 3, "{}", finished.stderr_text());
    let summary: Value = serde_json::from_str(finished.stdout.last().unwrap()).unwrap();
    let lost = summary["lost_total"].as_u64().unwrap();
    let said = finished
        .stderr
        .iter()
        .filter(|line| {
            line.starts_with("[vmatrace probe]") && line.contains("ring buffer full: lost")
        })
        .count() as u64;
    assert!(said > 0, "{}", finished.stderr_text());
    // The log has its own buffer, which may fill too: never more said than lost.
    assert!(said <= lost, "{said} diagnostics for {lost} lost events");

    // Without the flag, the same run prints none.
    let quiet = run_vmatrace(&[
        "-q",
        "--buffer-size",
        "4096",
        "--",
        &workload,
        "split-churn",
        "20000",
    ]);
    assert!(!quiet.stderr_text().contains("[vmatrace probe]"));
}

/// A root tool writes only where nothing of anyone else's is lost: links
/// are not followed, foreign files and directories are refused (exit 2)
/// unless --force, an older trace is kept as FILE.old.
#[test]
fn output_paths_never_clobber_what_is_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious.conf");
    std::fs::write(&precious, "do not lose me\n").unwrap();
    let precious_mode = || std::fs::metadata(&precious).unwrap().permissions().mode() & 0o777;
    let mode_before = precious_mode();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let refused = |out: &str, why: &str| {
        let finished = run_vmatrace(&["record", "-q", "-o", out, "--", &workload(), "mmap", "2"]);
        assert_eq!(finished.code(), 2, "{}", finished.stderr_text());
        assert!(
            finished.stderr_text().contains(why),
            "{}",
            finished.stderr_text()
        );
    };

    // A link to someone's file: refused, the file untouched.
    std::os::unix::fs::symlink(&precious, dir.path().join("link.vmat")).unwrap();
    refused(&path("link.vmat"), "symbolic link");
    // A file that is not a trace: refused.
    refused(&precious.display().to_string(), "not a vmatrace trace");
    // A directory: refused.
    refused(&dir.path().display().to_string(), "is a directory");
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "do not lose me\n"
    );
    assert_eq!(precious_mode(), mode_before);

    // --force replaces the link itself, never the file behind it.
    let forced = run_vmatrace(&[
        "record",
        "-q",
        "--force",
        "-o",
        &path("link.vmat"),
        "--",
        &workload(),
        "mmap",
        "2",
    ]);
    assert_eq!(forced.code(), 0, "{}", forced.stderr_text());
    assert!(
        !std::fs::symlink_metadata(path("link.vmat"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "do not lose me\n"
    );

    // An older trace is kept as FILE.old, as perf keeps perf.data.old.
    let trace = dir.path().join("t.vmat");
    record(&trace, &["mmap", "2"]);
    let first = std::fs::read(&trace).unwrap();
    record(&trace, &["mmap", "2"]);
    assert_eq!(std::fs::read(dir.path().join("t.vmat.old")).unwrap(), first);
    assert_eq!(reader::read_file(&trace).unwrap().ending, Ending::Clean);

    // report --plot: the same rules; its own plot it redraws.
    let trace_arg = trace.display().to_string();
    let plot = |svg: &str| run_vmatrace(&["report", &trace_arg, "--plot", svg]);
    let linked_svg = dir.path().join("plot.svg");
    std::os::unix::fs::symlink(&precious, &linked_svg).unwrap();
    let finished = plot(&linked_svg.display().to_string());
    assert_eq!(finished.code(), 2, "{}", finished.stderr_text());
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "do not lose me\n"
    );
    let svg = path("counts.svg");
    assert_eq!(plot(&svg).code(), 0);
    assert_eq!(plot(&svg).code(), 0, "a plot of its own is redrawn");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}
