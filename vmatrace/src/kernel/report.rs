//! `vmatrace probe-report`: what vmatrace finds on this kernel, in one
//! place, for a bug report: the kernel and its preemption model, BTF and
//! the offsets read from it, tracefs and the tracepoints (with their field
//! layouts), which count mode runs and why, what stacks can hold, and
//! whether the kernel counts skipped runs and measures the programs' cost.
//! It loads and attaches the programs (tracing nothing) to find out.

use std::{fs, path::Path};

use serde::Serialize;
use serde_json::json;

use super::{
    btf, max_map_count,
    probes::{CountMode, ProbeConfig, Probes, has_task_pt_regs},
    tracefs,
};
use crate::error::Failure;

#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub vmatrace: String,
    pub kernel_release: String,
    pub kernel_version: String,
    pub arch: &'static str,
    /// `none`, `voluntary`, `full`, `lazy`, `rt`, or what uname says.
    pub preemption: Option<String>,
    pub max_map_count: Option<u64>,
    pub btf: Result<BtfFacts, String>,
    pub tracefs: Result<String, String>,
    pub mmap_lock_tracepoints: Result<serde_json::Value, String>,
    pub probes: Result<ProbesFacts, String>,
}

#[derive(Debug, Serialize)]
pub struct BtfFacts {
    pub path: String,
    pub bytes: u64,
    pub task_mm_offset: u64,
    pub mm_map_count_offset: u64,
    /// (ip, sp, bp) in `struct pt_regs`.
    pub pt_regs_offsets: Option<(u64, u64, u64)>,
}

#[derive(Debug, Serialize)]
pub struct ProbesFacts {
    pub count_mode: String,
    pub count_mode_why: Option<String>,
    pub attached: Vec<String>,
    pub calls_without_tracepoint: Vec<&'static str>,
    /// The lock probes make the kernel build a cgroup path on every mmap
    /// lock taken on the host (mmap_lock events with `memcg_path`).
    pub lock_probes_build_memcg_path: bool,
    /// Frame-pointer walks always; copies for DWARF unwinding need
    /// `bpf_task_pt_regs` (5.15+) and the pt_regs offsets.
    pub stack_copies: bool,
    /// The kernel counts runs it skipped (`recursion_misses`, 5.12+).
    pub skip_counts: bool,
    /// The kernel measures the programs' run time (BPF_ENABLE_STATS, 5.8+).
    pub run_time_stats: bool,
}

/// Gathers the report; each part says what failed instead of stopping.
pub fn gather(btf_path: &Path) -> ProbeReport {
    let read = |path: &str| {
        fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let kernel_version = read("/proc/sys/kernel/version");
    let tracefs = tracefs::ensure_tracefs();
    let btf = btf_facts(btf_path);
    let probes = Probes::load(&ProbeConfig {
        ring_buffer_bytes: 4096,
        btf_path: btf_path.to_path_buf(),
        run_time_stats: true,
        ..ProbeConfig::default()
    });
    ProbeReport {
        vmatrace: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: read("/proc/sys/kernel/osrelease"),
        preemption: preemption(&kernel_version),
        kernel_version,
        arch: std::env::consts::ARCH,
        max_map_count: max_map_count().ok(),
        mmap_lock_tracepoints: match &tracefs {
            Ok(root) => tracefs::lock_tracepoint_offsets(root)
                .map(|o| {
                    json!({
                        "acquire_returned": {"mm": o.acquired_mm, "write": o.acquired_write, "success": o.acquired_success},
                        "released": {"mm": o.released_mm},
                    })
                })
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        tracefs: tracefs
            .map(|p| p.display().to_string())
            .map_err(|e| e.to_string()),
        btf,
        probes: probes.map(|p| probes_facts(&p)).map_err(|e| e.to_string()),
    }
}

fn btf_facts(path: &Path) -> Result<BtfFacts, String> {
    let offsets = btf::struct_offsets(path).map_err(|e| e.to_string())?;
    Ok(BtfFacts {
        path: path.display().to_string(),
        bytes: fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        task_mm_offset: offsets.task_mm,
        mm_map_count_offset: offsets.mm_map_count,
        pt_regs_offsets: offsets.pt_regs.map(|r| (r.ip, r.sp, r.bp)),
    })
}

fn probes_facts(probes: &Probes) -> ProbesFacts {
    let (count_mode, count_mode_why) = match &probes.count_mode {
        CountMode::Lock => ("lock".to_string(), None),
        CountMode::Syscall { why } => ("syscall".to_string(), Some(why.clone())),
        // Not what the report loads (it attaches the lock probes to show
        // they work), but named if it ever did.
        CountMode::LockWhenThreaded { .. } => ("lock-when-threaded".to_string(), None),
    };
    ProbesFacts {
        count_mode,
        count_mode_why,
        attached: probes.attachments().to_vec(),
        calls_without_tracepoint: probes.missing_calls.iter().map(|c| c.name()).collect(),
        lock_probes_build_memcg_path: probes.lock_probes_build_memcg_path,
        stack_copies: probes.offsets.pt_regs.is_some() && has_task_pt_regs(),
        skip_counts: probes.counts_skips(),
        run_time_stats: probes.measures_cost(),
    }
}

/// The preemption model: the scheduler's own word (debugfs, the model in
/// parentheses), else what the version string names.
fn preemption(version: &str) -> Option<String> {
    if let Ok(text) = fs::read_to_string("/sys/kernel/debug/sched/preempt")
        && let Some(model) = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix('(')?.strip_suffix(')'))
    {
        return Some(model.to_string());
    }
    let built = ["PREEMPT_RT", "PREEMPT_LAZY", "PREEMPT_DYNAMIC", "PREEMPT"]
        .into_iter()
        .find(|model| version.split_whitespace().any(|w| w == *model))?;
    Some(match built {
        "PREEMPT_DYNAMIC" => {
            "dynamic (the model in use is in /sys/kernel/debug/sched/preempt; debugfs is not mounted)"
                .to_string()
        }
        other => other.to_lowercase(),
    })
}

impl ProbeReport {
    /// Whether vmatrace can trace here.
    pub fn ok(&self) -> bool {
        self.probes.is_ok()
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "vmatrace {} probe report\nkernel:           {} ({}) {}\n",
            self.vmatrace, self.kernel_release, self.kernel_version, self.arch
        );
        let line = |out: &mut String, key: &str, value: String| {
            out.push_str(&format!("{:<18}{value}\n", format!("{key}:")));
        };
        line(
            &mut out,
            "preemption",
            self.preemption.clone().unwrap_or_else(|| "unknown".into()),
        );
        line(
            &mut out,
            "vm.max_map_count",
            self.max_map_count
                .map_or_else(|| "unreadable".into(), |n| n.to_string()),
        );
        line(
            &mut out,
            "BTF",
            match &self.btf {
                Ok(b) => format!(
                    "{} ({} bytes): task_struct.mm at {}, mm_struct.map_count at {}, pt_regs ip/sp/bp at {}",
                    b.path,
                    b.bytes,
                    b.task_mm_offset,
                    b.mm_map_count_offset,
                    b.pt_regs_offsets.map_or_else(
                        || "unknown".into(),
                        |(ip, sp, bp)| format!("{ip}/{sp}/{bp}")
                    )
                ),
                Err(e) => format!("unusable: {e}"),
            },
        );
        line(&mut out, "tracefs", flat(&self.tracefs));
        line(
            &mut out,
            "mmap_lock",
            match &self.mmap_lock_tracepoints {
                Ok(fields) => format!("tracepoints present, fields {fields}"),
                Err(e) => format!("not usable: {e}"),
            },
        );
        match &self.probes {
            Ok(p) => {
                let mode = match &p.count_mode_why {
                    None => "lock (counts read under the call's mmap write lock: exact; \
                             `vmatrace -p`/`-- CMD` counts at syscall entry and exit, also \
                             exact, while its processes are single-threaded, and attaches \
                             the lock probes once one has threads)"
                        .to_string(),
                    Some(why) => format!(
                        "syscall (counts at syscall entry and exit; exact unless calls of one process overlap), because {why}"
                    ),
                };
                line(&mut out, "count mode", mode);
                if p.lock_probes_build_memcg_path {
                    line(&mut out, "cost", tracefs::MEMCG_PATH_COST.to_string());
                }
                line(&mut out, "attached", p.attached.join(", "));
                if !p.calls_without_tracepoint.is_empty() {
                    line(
                        &mut out,
                        "not traceable",
                        p.calls_without_tracepoint.join(", "),
                    );
                }
                line(
                    &mut out,
                    "stacks",
                    if p.stack_copies {
                        "frame pointers and stack copies (DWARF unwinding)".into()
                    } else {
                        "frame pointers only (no bpf_task_pt_regs before 5.15)".into()
                    },
                );
                line(&mut out, "skip counts", yes_no(p.skip_counts, "5.12"));
                line(&mut out, "run-time stats", yes_no(p.run_time_stats, "5.8"));
            }
            Err(e) => line(&mut out, "probes", format!("cannot load: {e}")),
        }
        out
    }
}

fn flat(value: &Result<String, String>) -> String {
    match value {
        Ok(v) => v.clone(),
        Err(e) => format!("unusable: {e}"),
    }
}

fn yes_no(yes: bool, since: &str) -> String {
    if yes {
        "yes".into()
    } else {
        format!("no (Linux {since}+)")
    }
}

/// `vmatrace probe-report`: prints the report; exit 0 if vmatrace can
/// trace here.
pub fn run(json: bool, btf_path: &Path) -> Result<i32, Failure> {
    super::probes::require_privileges()?;
    let report = gather(btf_path);
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| Failure::environment(anyhow::anyhow!(e)))?
        );
    } else {
        print!("{}", report.text());
    }
    Ok(if report.ok() {
        crate::error::exit_code::OK
    } else {
        crate::error::exit_code::ENVIRONMENT
    })
}
