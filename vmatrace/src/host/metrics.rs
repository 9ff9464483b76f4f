//! The Prometheus exposition of the host's processes, built afresh for
//! each scrape (so a process that exited leaves no stale series) with the
//! official `prometheus-client` crate. Names as Cortex and Mimir export
//! them where they exist (`process_memory_map_areas`,
//! `process_memory_map_areas_limit`), `vmatrace_*` for the rest. Labels
//! `pid` and `comm`; the processes past the first `max_series` by count
//! are summed under `comm="other"` (no pid), and
//! `vmatrace_folded_processes` says how many they are.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::text::{encode, encode_registry},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::collector::Row;
use crate::kernel::probes::LostCounts;

type Labels = Vec<(String, String)>;

/// Which exposition format a scraper asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    Text,
}

impl Exposition {
    /// From a request's `Accept` header.
    pub fn from_accept(accept: Option<&str>) -> Exposition {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => {
                Exposition::OpenMetrics
            }
            _ => Exposition::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The rows, folded to at most `max_series` processes: the first
/// `max_series` by count, and the rest summed into one row with
/// `comm="other"` and pid 0 (None when nothing was folded).
pub fn fold(mut rows: Vec<Row>, max_series: usize) -> (Vec<Row>, Option<(Row, usize)>) {
    rows.sort_by(|a, b| b.vmas.cmp(&a.vmas).then(a.pid.cmp(&b.pid)));
    if rows.len() <= max_series {
        return (rows, None);
    }
    let rest = rows.split_off(max_series);
    let folded = rest.len();
    let mut other = Row {
        comm: "other".into(),
        ..Row::default()
    };
    for row in rest {
        other.vmas += row.vmas;
        other.peak = other.peak.max(row.peak);
        other.calls += row.calls;
        other.splits += row.splits;
        other.near_limit += row.near_limit;
        other.changes += row.changes;
        for e in row.enomem {
            match other
                .enomem
                .iter_mut()
                .find(|o| o.call == e.call && o.cause == e.cause)
            {
                Some(o) => o.count += e.count,
                None => other.enomem.push(e),
            }
        }
    }
    (rows, Some((other, folded)))
}

fn labels(row: &Row) -> Labels {
    if row.pid == 0 {
        vec![("comm".into(), row.comm.clone())]
    } else {
        let mut labels = vec![
            ("pid".into(), row.pid.to_string()),
            ("comm".into(), row.comm.clone()),
        ];
        if let Some(cgroup) = &row.cgroup {
            labels.push(("cgroup".into(), cgroup.clone()));
        }
        labels
    }
}

/// The registry for one scrape.
pub fn registry(rows: Vec<Row>, max_series: usize, lost: &LostCounts, limit: u64) -> Registry {
    let total = rows.len();
    let (rows, other) = fold(rows, max_series);
    let mut registry = Registry::default();

    let vmas = Family::<Labels, Gauge>::default();
    let vmas_limit = Family::<Labels, Gauge>::default();
    let peak = Family::<Labels, Gauge>::default();
    let splits = Family::<Labels, Counter>::default();
    let near = Family::<Labels, Counter>::default();
    let enomem = Family::<Labels, Counter>::default();
    let eta = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let calls = Family::<Labels, Counter>::default();
    let changes = Family::<Labels, Counter>::default();

    let folded_row = other.as_ref().map(|(row, _)| row);
    for row in rows.iter().chain(folded_row) {
        let l = labels(row);
        vmas.get_or_create(&l).set(row.vmas);
        peak.get_or_create(&l).set(row.peak);
        splits.get_or_create(&l).inc_by(row.splits);
        near.get_or_create(&l).inc_by(row.near_limit);
        calls.get_or_create(&l).inc_by(row.calls);
        changes.get_or_create(&l).inc_by(row.changes);
        if row.pid != 0 {
            // A sum of counts has no limit of its own.
            vmas_limit.get_or_create(&l).set(limit as i64);
            if let Some(s) = row.seconds_to_limit {
                eta.get_or_create(&l).set(s);
            }
        }
        for e in &row.enomem {
            let mut l = l.clone();
            l.push(("call".into(), e.call.into()));
            l.push(("cause".into(), e.cause.into()));
            enomem.get_or_create(&l).inc_by(e.count);
        }
    }

    registry.register(
        "process_memory_map_areas",
        "Number of memory map areas (VMAs) of the process: mm->map_count",
        vmas,
    );
    registry.register(
        "process_memory_map_areas_limit",
        "Most memory map areas a process may have: vm.max_map_count",
        vmas_limit,
    );
    registry.register(
        "vmatrace_peak_map_areas",
        "Highest VMA count seen after a call of the process",
        peak,
    );
    registry.register(
        "vmatrace_splits",
        "Calls that split a mapping (cost one more VMA than they created)",
        splits,
    );
    registry.register(
        "vmatrace_enomem",
        "Calls that failed with ENOMEM, by call and cause (vma_limit: the VMA count left no room; memory: anything else)",
        enomem,
    );
    registry.register(
        "vmatrace_near_limit",
        "Calls that took the VMA count across the NEAR-LIMIT threshold",
        near,
    );
    registry.register(
        "vmatrace_seconds_to_limit",
        "Seconds until the VMA limit at the count's current growth (only while it grows)",
        eta,
    );
    registry.register("vmatrace_calls", "Traced mapping calls completed", calls);
    registry.register(
        "vmatrace_changes_outside_calls",
        "Changes of the VMA count that no traced call made (a syscall vmatrace does not decode, the kernel's own mappings, another process sharing the address space); the count follows them",
        changes,
    );
    let lost_total = Counter::<u64>::default();
    lost_total.inc_by(lost.total());
    registry.register(
        "vmatrace_lost_events",
        "Traced calls or lifecycle events vmatrace could not count",
        lost_total,
    );
    // Not in the lost total: the raw_syscalls programs run for every
    // syscall of the host, so a skipped run is a traced call lost only if
    // it was one (see `LostCounts::kernel_skipped_runs`).
    let skipped = Counter::<u64>::default();
    skipped.inc_by(lost.kernel_skipped_runs);
    registry.register(
        "vmatrace_kernel_skipped_runs",
        "Runs of vmatrace's programs the kernel skipped (recursion_misses, Linux 5.12+), any syscall of the host",
        skipped,
    );
    let folded = Gauge::<i64>::default();
    folded.set(other.as_ref().map_or(0, |(_, n)| *n as i64));
    registry.register(
        "vmatrace_folded_processes",
        "Processes past --max-series, summed under comm=\"other\"",
        folded,
    );
    let processes = Gauge::<i64>::default();
    processes.set(total as i64);
    registry.register("vmatrace_processes", "Processes vmatrace counts", processes);
    registry
}

/// The registry in the format asked for.
pub fn render(registry: &Registry, format: Exposition) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    match format {
        Exposition::OpenMetrics => encode(&mut text, registry)?,
        Exposition::Text => {
            encode_registry(&mut text, registry)?;
            text = to_text_format(&text);
        }
    }
    Ok(text)
}

/// OpenMetrics text to the Prometheus text format 0.0.4: a counter's
/// metadata names its samples (`x_total`), and there are no `# UNIT`
/// lines.
fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|prefix| line.strip_prefix(prefix).map(|rest| (*prefix, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, vmas: i64, splits: u64) -> Row {
        Row {
            pid,
            comm: format!("p{pid}"),
            vmas,
            peak: vmas,
            splits,
            limit: 65530,
            ..Row::default()
        }
    }

    #[test]
    fn folds_past_max_series() {
        let rows = (1..=10).map(|pid| row(pid, pid as i64 * 10, 1)).collect();
        let (kept, other) = fold(rows, 3);
        assert_eq!(
            kept.iter().map(|r| r.pid).collect::<Vec<_>>(),
            vec![10, 9, 8]
        );
        let (other, n) = other.unwrap();
        assert_eq!(n, 7);
        assert_eq!(other.vmas, 280);
        assert_eq!(other.splits, 7);
        assert_eq!(other.comm, "other");
    }

    #[test]
    fn both_formats_name_counters_right() {
        let rows = vec![row(42, 100, 3)];
        let registry = registry(rows, 100, &LostCounts::default(), 65530);
        let om = render(&registry, Exposition::OpenMetrics).unwrap();
        assert!(om.contains("# TYPE vmatrace_splits counter"), "{om}");
        assert!(
            om.contains("vmatrace_splits_total{pid=\"42\",comm=\"p42\"} 3"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
        let text = render(&registry, Exposition::Text).unwrap();
        assert!(
            text.contains("# TYPE vmatrace_splits_total counter"),
            "{text}"
        );
        assert!(text.contains("process_memory_map_areas{pid=\"42\",comm=\"p42\"} 100"));
        assert!(!text.contains("# EOF"));
    }

    /// The kernel's skipped runs are exported apart from the lost events:
    /// most are runs for syscalls no one traces.
    #[test]
    fn skipped_runs_are_exported_beside_the_lost_events() {
        let lost = LostCounts {
            ring_buffer_full: 2,
            kernel_skipped_runs: 5,
            ..LostCounts::default()
        };
        let registry = registry(vec![row(1, 10, 0)], 100, &lost, 65530);
        let text = render(&registry, Exposition::Text).unwrap();
        assert!(text.contains("vmatrace_lost_events_total 2"), "{text}");
        assert!(
            text.contains("vmatrace_kernel_skipped_runs_total 5"),
            "{text}"
        );
    }

    #[test]
    fn time_to_the_limit_only_while_growing_and_the_cgroup_label() {
        let growing = Row {
            seconds_to_limit: Some(120.5),
            growth_per_s: Some(10.0),
            cgroup: Some("/system.slice/redis.service".into()),
            ..row(7, 64000, 1)
        };
        let steady = row(8, 100, 0);
        let registry = registry(vec![growing, steady], 100, &LostCounts::default(), 65530);
        let text = render(&registry, Exposition::Text).unwrap();
        assert!(
            text.contains(
                "vmatrace_seconds_to_limit{pid=\"7\",comm=\"p7\",cgroup=\"/system.slice/redis.service\"} 120.5"
            ),
            "{text}"
        );
        assert!(
            !text.contains("vmatrace_seconds_to_limit{pid=\"8\""),
            "no time to the limit for a count that does not grow: {text}"
        );
    }
}
