//! `report`: a recording summed up per process, with its losses, sites
//! and flagged calls.

use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Write},
    path::Path,
};

use serde_json::{Value, json};
use vmatrace_common::{Event, EventKind};

use crate::{
    cli::ReportArgs,
    error::Failure,
    model::anatomy::{self, Anatomy},
    model::maps_file,
    model::processes::{Applied, ProcessState, Processes, mapping_kind},
    model::sites::{self, Sites},
    model::verdict,
    outfile,
    output::plot,
    output::summary::verdicts_text,
    output::{
        Format, Output,
        units::{human_bytes, splits_by_mapping},
    },
    output::{
        flame::{Folded, Weight},
        html,
    },
    stacks::symbols::{self, Stack},
    tracefile::{
        format::{Header, LostRecord, Record},
        reader::Ending,
    },
};

use super::{Recording, TraceFile, finish, play, seconds_since_start, write_error};

/// The run's loss totals: the last loss record (they grow).
fn last_lost(losses: &[LostRecord]) -> LostRecord {
    losses.last().copied().unwrap_or_default()
}

/// Where the trace has gaps: the seconds in which the lost-event totals
/// (recorded every second) grew, and by how much.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
struct LostGap {
    from_s: f64,
    to_s: f64,
    lost: u64,
}

fn lost_gaps(header: &Header, losses: &[LostRecord]) -> Vec<LostGap> {
    let mut gaps = Vec::new();
    let (mut before_ns, mut before_total) = (header.start_ns, 0);
    for lost in losses {
        {
            let total = lost.total();
            if total > before_total {
                gaps.push(LostGap {
                    from_s: seconds_since_start(header, before_ns),
                    to_s: seconds_since_start(header, lost.at_ns),
                    lost: total - before_total,
                });
            }
            (before_ns, before_total) = (lost.at_ns, total.max(before_total));
        }
    }
    gaps
}

/// Per-process figures a report adds to the live state.
#[derive(Default)]
struct Extra {
    first_count: Option<i64>,
    calls_per_second: HashMap<u64, u64>,
    flagged: Flagged,
    /// The count over time, for the plot.
    counts: plot::Envelope,
    /// When the process exited, if it did while recording.
    end_s: Option<f64>,
    marks: Vec<(f64, i64, &'static str)>,
    /// What held the VMAs in the first snapshot (the trace's start, or
    /// the process's first sight).
    anatomy_at_start: Option<Anatomy>,
}

/// The plot keeps at most about this many marks per process, however long
/// the recording: when there are twice as many, neighbours are merged
/// pairwise.
const PLOT_POINTS: usize = 16_384;

/// Every two neighbours merged into the one `keep` picks.
fn halve<T: Copy>(points: &[T], keep: impl Fn(T, T) -> T) -> Vec<T> {
    points
        .chunks(2)
        .map(|pair| match pair {
            [a, b] => keep(*a, *b),
            [a] => *a,
            _ => unreachable!("chunks of two"),
        })
        .collect()
}

/// A flagged event as the report shows it.
#[derive(Clone, Debug, serde::Serialize)]
struct Shown {
    at_s: f64,
    flags: Vec<&'static str>,
    line: String,
}

/// Routine SPLITs of one call site (or, without stacks, one call and kind
/// of mapping): how many, and the first.
#[derive(Clone, Debug, serde::Serialize)]
struct SplitGroup {
    count: u64,
    first: Shown,
}

/// A process's flagged events, in bounded memory: the first ENOMEMs and
/// NEAR-LIMIT crossings, which matter most, then the routine SPLITs
/// grouped by where they come from.
#[derive(Default)]
struct Flagged {
    enomem: Vec<Shown>,
    near_limit: Vec<Shown>,
    splits: HashMap<String, SplitGroup>,
}

/// The first this many ENOMEMs and NEAR-LIMIT crossings are kept whole.
const FIRST_KEPT: usize = 10;

/// SPLITs are grouped under at most this many sites; later ones go to
/// "other sites".
const SPLIT_GROUPS: usize = 256;

impl Flagged {
    fn take(
        &mut self,
        shown: impl FnOnce() -> Shown,
        flags: crate::model::detect::Flags,
        group: impl FnOnce() -> String,
    ) {
        if flags.enomem || flags.near_limit {
            let list = if flags.enomem {
                &mut self.enomem
            } else {
                &mut self.near_limit
            };
            if list.len() < FIRST_KEPT {
                list.push(shown());
            }
            return;
        }
        if flags.split {
            let mut key = group();
            if !self.splits.contains_key(&key) && self.splits.len() >= SPLIT_GROUPS {
                key = "other sites".into();
            }
            self.splits
                .entry(key)
                .and_modify(|g| g.count += 1)
                .or_insert_with(|| SplitGroup {
                    count: 1,
                    first: shown(),
                });
        }
    }

    fn to_json(&self, enomem: u64, near_limit: u64) -> Value {
        let mut groups: Vec<(&String, &SplitGroup)> = self.splits.iter().collect();
        groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        json!({
            "enomem": {"total": enomem, "first": self.enomem},
            "near_limit": {"total": near_limit, "first": self.near_limit},
            "splits_by_site": groups
                .iter()
                .map(|(site, g)| json!({"site": site, "count": g.count, "first": g.first}))
                .collect::<Vec<_>>(),
        })
    }
}

/// What a report gathers while the events are replayed.
struct Gathered<'a> {
    header: &'a Header,
    /// Formats the flagged events' lines as the live view did.
    lines: Output,
    extra: BTreeMap<u32, Extra>,
    sites: Sites,
    /// The same by process, for the verdicts.
    sites_by_pid: HashMap<u32, Sites>,
    last_ns: u64,
}

impl Gathered<'_> {
    fn observe(
        &mut self,
        event: &Event,
        applied: &Applied,
        processes: &Processes,
        stack: Option<&Stack>,
    ) {
        let header = self.header;
        self.last_ns = self.last_ns.max(event.exit_ns);
        let e = self.extra.entry(event.pid).or_default();
        if e.first_count.is_none() {
            e.first_count = processes.by_pid.get(&event.pid).and_then(|s| s.count);
        }
        if let Some(count) = applied.count {
            let at = seconds_since_start(header, event.count_ns.max(event.exit_ns));
            e.counts.push(at, count);
            if event.kind == EventKind::Exit as u8 {
                e.end_s = Some(at);
            }
        }
        if event.kind != EventKind::Syscall as u8 {
            return;
        }
        if let Some(stack) = stack {
            self.sites.add(stack, event, applied);
            self.sites_by_pid
                .entry(event.pid)
                .or_default()
                .add(stack, event, applied);
        }
        let second = event.exit_ns.saturating_sub(header.start_ns) / 1_000_000_000;
        *e.calls_per_second.entry(second).or_default() += 1;
        if applied.flags.any() {
            let lines = &self.lines;
            let shown = || {
                let line = lines.text_line(event, applied, header.max_map_count);
                Shown {
                    at_s: seconds_since_start(header, event.exit_ns),
                    flags: applied.flags.names(),
                    line: match stack {
                        Some(stack) => {
                            format!("{line}\n{}", symbols::format_stack(stack).trim_end())
                        }
                        None => line,
                    },
                }
            };
            let group = || match stack {
                Some(stack) => sites::site_of(stack),
                None => {
                    let call = crate::model::changes::what_changed(event);
                    let cut = applied.mapping.as_deref().map_or("unknown", mapping_kind);
                    format!("{call} of {cut} (no stack)")
                }
            };
            let at = seconds_since_start(header, event.exit_ns);
            let count = i64::from(event.vmas_after);
            e.marks
                .extend(applied.flags.names().iter().map(|flag| (at, count, *flag)));
            if e.marks.len() >= 2 * PLOT_POINTS {
                // Rare flags first: an ENOMEM mark outlives SPLIT marks.
                e.marks = halve(&e.marks, |a, b| if b.2 != "SPLIT" { b } else { a });
            }
            e.flagged.take(shown, applied.flags, group);
        }
    }

    /// From the start of the recording (the time axis' zero) to its last
    /// event or the last loss record, written when recording stopped.
    fn duration_s(&self, last_lost: &LostRecord) -> f64 {
        seconds_since_start(self.header, self.last_ns.max(last_lost.at_ns))
    }
}

pub fn report(args: &ReportArgs) -> Result<i32, Failure> {
    // A plot path that must not be written is said before any work.
    if let Some(svg) = &args.plot {
        outfile::verdict(svg, outfile::Kind::Plot, args.force)?;
    }
    let recording = TraceFile::open(&args.file)?;
    let header = recording.header();
    let limit = header.max_map_count;
    // Both callbacks below add to it, one at a time.
    let gathered = std::cell::RefCell::new(Gathered {
        header,
        lines: Output::new(Format::Text, false, true, header.clock_offset_ns as i128),
        extra: BTreeMap::new(),
        sites: Sites::default(),
        sites_by_pid: HashMap::new(),
        last_ns: 0,
    });
    // Loss records come once a second: few, kept whole.
    let mut losses = Vec::new();
    // The limit's changes (rare): the first is the header's.
    let mut limits = vec![(0.0, limit)];
    let mut events = 0u64;
    let wants_flame = args.flamegraph.is_some() || args.html.is_some();
    let mut flame = wants_flame.then(|| Folded::new(args.weight));
    let (processes, ending) = play(
        &recording,
        |event, applied, processes, stack| {
            events += 1;
            if let Some(flame) = flame.as_mut()
                && event.kind == EventKind::Syscall as u8
            {
                flame.add(event, applied, stack);
            }
            gathered
                .borrow_mut()
                .observe(event, applied, processes, stack)
        },
        |record| match record {
            Record::Lost(lost) => losses.push(*lost),
            // The count a snapshot read: where a process's line starts.
            Record::Process(info) if !info.maps.is_empty() => {
                let at = seconds_since_start(header, info.at_ns);
                let count = crate::model::snapshot::maps_snapshot_count(&info.maps) as i64;
                let mut gathered = gathered.borrow_mut();
                let e = gathered.extra.entry(info.pid).or_default();
                let first_sight = e.counts.is_empty();
                e.counts.push(at, count);
                // Said for a process that held much of the limit when the
                // recording first saw it (a command's exec holds a few).
                if first_sight
                    && e.anatomy_at_start.is_none()
                    && (count.max(0) as u64) * 4 > limit
                    && let Ok(vmas) = maps_file::parse(&info.maps)
                {
                    e.anatomy_at_start = Some(anatomy::classify(&vmas, &info.maps, None, limit, 1));
                }
            }
            Record::Limit(changed) => limits.push((
                seconds_since_start(header, changed.at_ns),
                changed.max_map_count,
            )),
            _ => {}
        },
    )?;
    let mut gathered = gathered.into_inner();
    let lost = last_lost(&losses);
    let plotted = Plotted {
        limits: &limits,
        end_s: gathered.duration_s(&lost),
    };
    let plot_svg = if args.plot.is_some() || args.html.is_some() {
        Some(draw_counts(
            &args.file,
            &plotted,
            &processes,
            &gathered.extra,
        )?)
    } else {
        None
    };
    if let (Some(path), Some(svg)) = (&args.plot, &plot_svg) {
        write_drawing(path, args.force, svg.as_bytes())?;
    }
    let flame_svg = match &flame {
        Some(flame) => Some(draw_flame(&args.file, flame, args.weight)?),
        None => None,
    };
    if let (Some(path), Some(svg), Some(flame)) = (&args.flamegraph, &flame_svg, &flame) {
        write_drawing(path, args.force, svg.as_bytes())?;
        eprintln!(
            "vmatrace: flame graph of {} {} in {}: {}",
            flame.total(),
            args.weight.unit(),
            flame.coverage(),
            path.display()
        );
    }
    let top_site = |pid: u32| {
        let site = gathered.sites_by_pid.get(&pid)?.top(1).into_iter().next()?;
        (site.stats.splits > 0).then_some(site.site)
    };
    let verdicts = verdict::verdicts(
        processes.by_pid.values(),
        &verdict::Context {
            limit,
            warn_at: header.warn_at,
            start_ns: header.start_ns,
            top_site: &top_site,
        },
    );
    let verdicts_text = verdicts_text(&verdicts, &processes);
    let per_process: Vec<Value> = processes
        .by_pid
        .values()
        .map(|state| {
            let extra = gathered.extra.remove(&state.pid).unwrap_or_default();
            let mut value = process_json(state, &extra, header);
            if plot_svg.is_some() {
                // What the plot draws for it, for a script's own drawing.
                let end_s = extra.end_s.unwrap_or(plotted.end_s);
                let series: Vec<(f64, i64)> = extra
                    .counts
                    .steps(end_s)
                    .into_iter()
                    .map(|(t, count)| ((t * 1e6).round() / 1e6, count))
                    .collect();
                value["plot_series"] = json!(series);
            }
            value
        })
        .collect();
    let mut report = json!({
        "type": "report",
        "file": args.file.display().to_string(),
        "header": header,
        "ending": ending.to_string(),
        "complete": ending == Ending::Clean,
        "events": events,
        "duration_s": gathered.duration_s(&lost),
        "limit": limit,
        "lost": lost,
        "lost_total": lost.total(),
        "lost_gaps": lost_gaps(header, &losses),
        "verdicts": verdicts,
        "processes": per_process,
    });
    if let Some(n) = args.top_sites {
        report["top_sites"] = json!(gathered.sites.top(n));
    }
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report).map_err(|e| write_error(e.into()))?;
        writeln!(out).map_err(write_error)?;
    } else {
        write!(out, "{}", report_text(&report, &verdicts_text)).map_err(write_error)?;
    }
    out.flush().map_err(write_error)?;
    if let Some(path) = &args.html {
        let mut with_sites = report.clone();
        if args.top_sites.is_none() {
            with_sites["top_sites"] = json!(gathered.sites.top(HTML_SITES));
        }
        let page = html::page(&html::Parts {
            title: &format!("vmatrace report: {}", args.file.display()),
            text: &report_text(&with_sites, &verdicts_text),
            plot_svg: plot_svg.as_deref(),
            flame_svg: flame_svg.as_deref(),
            flame_caption: flame.as_ref().map(|f| {
                format!(
                    "{} {} by stack; {}",
                    f.total(),
                    args.weight.unit(),
                    f.coverage()
                )
            }),
        });
        write_drawing(path, args.force, page.as_bytes())?;
        eprintln!("vmatrace: the report as one page: {}", path.display());
    }
    Ok(finish(&ending, &args.file))
}

/// Call sites on the HTML page when --top-sites does not say how many.
const HTML_SITES: usize = 10;

/// What the plot draws beside the processes' lines.
struct Plotted<'a> {
    /// `vm.max_map_count` from these seconds on.
    limits: &'a [(f64, u64)],
    /// The end of the recording.
    end_s: f64,
}

/// The VMA count of every process over time, as an SVG plot.
fn draw_counts(
    file: &Path,
    plotted: &Plotted,
    processes: &Processes,
    extra: &BTreeMap<u32, Extra>,
) -> Result<String, Failure> {
    let series: Vec<plot::Series> = processes
        .by_pid
        .values()
        .filter_map(|state| {
            let e = extra.get(&state.pid)?;
            (!e.counts.is_empty()).then(|| plot::Series {
                label: format!("{} ({})", state.pid, state.comm),
                counts: e.counts.clone(),
                end_s: e.end_s.unwrap_or(plotted.end_s),
                flagged: e.marks.clone(),
            })
        })
        .collect();
    let title = format!("VMA count per process: {}", file.display());
    let mut drawn = Vec::new();
    plot::draw(&mut drawn, &title, plotted.limits, plotted.end_s, &series)
        .map_err(|e| Failure::environment(e.context("drawing the count plot")))?;
    Ok(String::from_utf8_lossy(&drawn).into_owned())
}

/// The flame graph, marked as vmatrace's own so a later run may redraw it.
fn draw_flame(file: &Path, flame: &Folded, weight: Weight) -> Result<String, Failure> {
    let title = format!("{} by stack: {}", weight.unit(), file.display());
    let mut drawn = Vec::new();
    flame
        .write_svg(&title, &mut drawn)
        .map_err(|e| Failure::environment(e.context("drawing the flame graph")))?;
    let drawn = String::from_utf8_lossy(&drawn);
    // Right after the XML declaration, where outfile looks for it.
    Ok(match drawn.split_once("?>") {
        Some((declaration, rest)) => format!("{declaration}?>{}{rest}", outfile::PLOT_MARK),
        None => format!("{}{drawn}", outfile::PLOT_MARK),
    })
}

/// Writes a drawing or page where --plot, --flamegraph or --html says,
/// replacing only an older one of vmatrace's (see `outfile`).
fn write_drawing(path: &Path, force: bool, bytes: &[u8]) -> Result<(), Failure> {
    let mut out = outfile::create(path, outfile::Kind::Plot, force)?;
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| {
            Failure::environment(anyhow::anyhow!(e).context(format!("writing {}", path.display())))
        })
}

fn size_histogram(sizes: &BTreeMap<u64, u64>) -> Vec<Value> {
    sizes
        .iter()
        .map(|(bucket, calls)| json!({"up_to_bytes": bucket, "calls": calls}))
        .collect()
}

/// One process's part of the report.
fn process_json(state: &ProcessState, e: &Extra, header: &Header) -> Value {
    let limit = header.max_map_count;
    let busiest = e
        .calls_per_second
        .iter()
        .max_by_key(|(s, n)| (**n, std::cmp::Reverse(**s)));
    json!({
        "pid": state.pid,
        "comm": state.comm,
        "allocator": state.allocator.map(|a| a.to_string()),
        "vmas_start": e.first_count.or(state.count_at_attach.map(|c| c as i64)),
        "vmas_peak": state.peak,
        "vmas_peak_at_s": seconds_since_start(header, state.peak_ns),
        "vmas_final": state.count,
        "headroom": state.headroom(limit),
        "calls": state.calls,
        "bytes_by_call": state.bytes_by_call,
        "failed_calls": state.failed_calls,
        "bytes_mapped": state.bytes_mapped,
        "bytes_unmapped": state.bytes_unmapped,
        "splits": state.splits,
        "splits_by_mapping": state.splits_by_mapping,
        "enomem": state.enomem,
        "enomem_by_cause": state.enomem_by_cause,
        "near_limit": state.near_limit,
        "changes": state.changes.by_source,
        "inexact_calls": state.inexact,
        "exited": state.exited,
        "busiest_second": busiest.map(|(s, n)| json!({"from_s": s, "calls": n})),
        "mmap_size_histogram": size_histogram(&state.mmap_sizes),
        "munmap_size_histogram": size_histogram(&state.munmap_sizes),
        "flagged": e.flagged.to_json(state.enomem, state.near_limit),
        "anatomy_at_start": e.anatomy_at_start,
    })
}

/// At most this many of each kind of flagged event per process in the text
/// report, and this many SPLIT sites.
const FLAGGED_SHOWN: usize = 5;

/// ENOMEMs and NEAR-LIMIT crossings first, then the routine SPLITs by site.
fn flagged_text(flagged: &Value) -> String {
    let mut text = String::new();
    for (key, name) in [("enomem", "ENOMEM"), ("near_limit", "NEAR-LIMIT")] {
        let total = flagged[key]["total"].as_u64().unwrap_or(0);
        if total == 0 {
            continue;
        }
        let first = flagged[key]["first"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        text.push_str(&format!(
            "  {name} ({total}, first {}):\n",
            first.len().min(FLAGGED_SHOWN)
        ));
        for f in first.iter().take(FLAGGED_SHOWN) {
            text.push_str(&shown_text(f));
        }
    }
    let groups = flagged["splits_by_site"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !groups.is_empty() {
        text.push_str(&format!(
            "  SPLITs by site ({} sites, first {}; the first SPLIT of each):\n",
            groups.len(),
            groups.len().min(FLAGGED_SHOWN)
        ));
        for g in groups.iter().take(FLAGGED_SHOWN) {
            text.push_str(&format!(
                "    {} SPLIT from {}\n",
                g["count"],
                g["site"].as_str().unwrap_or("?")
            ));
            text.push_str(&shown_text(&g["first"]));
        }
    }
    text
}

fn shown_text(f: &Value) -> String {
    format!(
        "    +{:.6} s {}\n",
        f["at_s"].as_f64().unwrap_or(0.0),
        f["line"].as_str().unwrap_or("")
    )
}

fn report_text(report: &Value, verdicts: &str) -> String {
    let h = &report["header"];
    let mut text = format!(
        "trace {}: recorded on {} (Linux {}) by vmatrace {}\n  {} events over {:.1} s, vm.max_map_count {}\n  {}\n",
        report["file"].as_str().unwrap_or(""),
        h["hostname"].as_str().unwrap_or("?"),
        h["kernel_release"].as_str().unwrap_or("?"),
        h["tool_version"].as_str().unwrap_or("?"),
        report["events"],
        report["duration_s"].as_f64().unwrap_or(0.0),
        report["limit"],
        report["ending"].as_str().unwrap_or(""),
    );
    text.push_str(verdicts);
    text.push_str(&sites_text(report));
    text.push_str(&lost_text(report));
    for p in report["processes"].as_array().into_iter().flatten() {
        text.push_str(&process_text(p, &report["limit"]));
    }
    text
}

fn sites_text(report: &Value) -> String {
    let mut text = String::new();
    if let Some(sites) = report["top_sites"].as_array() {
        text.push_str("  top call sites by VMAs added (site, and past the allocator):\n");
        for s in sites {
            let site = s["site"].as_str().unwrap_or("?");
            let caller = match s["caller"].as_str() {
                Some(caller) if caller != site => format!("  <- {caller}"),
                _ => String::new(),
            };
            text.push_str(&format!(
                "    {:>8} VMAs added, {:>7} SPLIT, {:>5} ENOMEM, {:>8} calls  {site}{caller}\n",
                s["vmas_added"], s["splits"], s["enomem"], s["calls"],
            ));
        }
    }
    text
}

fn lost_text(report: &Value) -> String {
    let mut text = String::new();
    let lost = report["lost_total"].as_u64().unwrap_or(0);
    if lost == 0 {
        text.push_str("  lost events: 0\n");
    } else {
        let reasons: Vec<String> = [
            ("ring_buffer_full", "ring buffer full"),
            ("inflight_table_full", "in-flight table full"),
            ("targets_table_full", "target table full"),
            ("lifecycle_ring_buffer_full", "lifecycle"),
            ("recorder_queue_full", "recorder queue full"),
            (
                "unpaired_calls",
                "calls whose entry or exit the kernel skipped",
            ),
            ("kernel_skipped_runs", "program runs the kernel skipped"),
        ]
        .iter()
        .filter_map(|(key, name)| {
            let n = report["lost"][key].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{name} {n}"))
        })
        .collect();
        text.push_str(&format!(
            "  LOST EVENTS: {lost} ({}): the trace has gaps\n",
            reasons.join(", ")
        ));
    }
    for gap in report["lost_gaps"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "    {} lost between +{:.1} s and +{:.1} s\n",
            gap["lost"],
            gap["from_s"].as_f64().unwrap_or(0.0),
            gap["to_s"].as_f64().unwrap_or(0.0),
        ));
    }
    text
}

fn process_text(p: &Value, limit: &Value) -> String {
    let mut text = String::new();
    let num = |key: &str| p[key].as_i64().map_or("?".to_string(), |v| v.to_string());
    text.push_str(&format!(
        "\npid {} ({}){}\n  allocator: {}\n  vmas: start {}, peak {} at +{:.3} s, final {}; limit {}, headroom {}\n",
        p["pid"],
        p["comm"].as_str().unwrap_or(""),
        if p["exited"] == true { ", exited" } else { "" },
        p["allocator"].as_str().unwrap_or("unknown"),
        num("vmas_start"),
        num("vmas_peak"),
        p["vmas_peak_at_s"].as_f64().unwrap_or(0.0),
        num("vmas_final"),
        limit,
        num("headroom"),
    ));
    if let Some(groups) = p["anatomy_at_start"]["groups"].as_array() {
        let held: Vec<String> = groups
            .iter()
            .take(4)
            .map(|g| {
                format!(
                    "{} {} ({}%)",
                    g["kind"].as_str().unwrap_or("?"),
                    g["vmas"],
                    g["share_of_limit"]
                )
            })
            .collect();
        text.push_str(&format!("  held at the start: {}\n", held.join(", ")));
    }
    let calls: Vec<String> = p["calls"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let bytes = &p["bytes_by_call"][k];
            let moved = |key: &str| bytes[key].as_u64().unwrap_or(0);
            match (moved("mapped"), moved("unmapped")) {
                (0, 0) => format!("{k} {v}"),
                (m, 0) => format!("{k} {v} (+{})", human_bytes(m)),
                (0, u) => format!("{k} {v} (-{})", human_bytes(u)),
                (m, u) => format!("{k} {v} (+{} -{})", human_bytes(m), human_bytes(u)),
            }
        })
        .collect();
    text.push_str(&format!(
        "  calls: {}; {} of them failed; mapped {}, unmapped {}\n  SPLIT {}, ENOMEM {}, NEAR-LIMIT {}\n",
        calls.join(", "),
        p["failed_calls"],
        human_bytes(p["bytes_mapped"].as_u64().unwrap_or(0)),
        human_bytes(p["bytes_unmapped"].as_u64().unwrap_or(0)),
        p["splits"],
        p["enomem"],
        p["near_limit"],
    ));
    let changes: crate::model::changes::Changes = crate::model::changes::Changes {
        by_source: serde_json::from_value(p["changes"].clone()).unwrap_or_default(),
    };
    if !changes.is_empty() {
        text.push_str(&format!(
            "  changed outside traced calls: {}\n",
            changes.describe()
        ));
    }
    if let Some(causes) = p["enomem_by_cause"].as_object().filter(|c| !c.is_empty()) {
        let causes: Vec<String> = causes
            .iter()
            .map(|(cause, n)| format!("{} {n}", cause.replace('_', " ")))
            .collect();
        text.push_str(&format!("  ENOMEM causes: {}\n", causes.join(", ")));
    }
    let by_mapping: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(p["splits_by_mapping"].clone()).unwrap_or_default();
    if !by_mapping.is_empty() {
        text.push_str(&format!(
            "  SPLITs by mapping: {}\n",
            splits_by_mapping(&by_mapping)
        ));
    }
    if let Some(busiest) = p["busiest_second"].as_object() {
        text.push_str(&format!(
            "  busiest second: +{} s with {} calls\n",
            busiest["from_s"], busiest["calls"]
        ));
    }
    for (key, name) in [
        ("mmap_size_histogram", "mmap"),
        ("munmap_size_histogram", "munmap"),
    ] {
        let sizes: Vec<String> = p[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "<={} {}",
                    human_bytes(b["up_to_bytes"].as_u64().unwrap_or(0)),
                    b["calls"]
                )
            })
            .collect();
        if !sizes.is_empty() {
            text.push_str(&format!("  {name} sizes: {}\n", sizes.join(", ")));
        }
    }
    text.push_str(&flagged_text(&p["flagged"]));
    text
}
#[cfg(test)]
mod tests {
    use super::*;

    fn lost_at(second: u64, ring_buffer_full: u64) -> LostRecord {
        LostRecord {
            at_ns: second * 1_000_000_000,
            ring_buffer_full,
            ..LostRecord::default()
        }
    }

    #[test]
    fn halving_the_plot_keeps_its_peak() {
        let points: Vec<(f64, i64)> = (0..9)
            .map(|i| (i as f64, [1, 5, 2, 9, 3, 1, 4, 4, 7][i]))
            .collect();
        let halved = halve(&points, |a, b| if b.1 > a.1 { b } else { a });
        assert_eq!(
            halved.iter().map(|p| p.1).collect::<Vec<_>>(),
            [5, 9, 3, 4, 7]
        );
    }

    #[test]
    fn lost_gaps_are_the_seconds_the_totals_grew_in() {
        let losses = [
            lost_at(1, 0),
            lost_at(2, 40),
            lost_at(3, 40),
            lost_at(4, 45),
            lost_at(5, 45),
        ];
        assert_eq!(
            lost_gaps(&Header::default(), &losses),
            vec![
                LostGap {
                    from_s: 1.0,
                    to_s: 2.0,
                    lost: 40
                },
                LostGap {
                    from_s: 3.0,
                    to_s: 4.0,
                    lost: 5
                },
            ]
        );
    }
}
