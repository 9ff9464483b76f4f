//! Loading and attaching the kernel programs, and the handles userspace
//! keeps on their maps.

use std::path::Path;

use anyhow::{Context, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{RawTracePoint, TracePoint},
};
use aya_log::EbpfLogger;
use vmatrace_common::{Call, TARGET_TRACED, lost, names};

use super::{btf, tracefs};
use crate::error::Failure;

/// The eBPF object built from `vmatrace-ebpf` by build.rs.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vmatrace.bpf.o"));

/// How the programs are to be configured.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub trace_all: bool,
    pub follow_forks: bool,
    pub ring_buffer_bytes: u32,
    pub btf_path: std::path::PathBuf,
    /// A `vmatrace_common::capture_stacks` value.
    pub capture_stacks: u8,
    /// The NEAR-LIMIT threshold, in VMAs.
    pub warn_at: u64,
    /// Turn on the programs' diagnostics (aya-log) and print them.
    pub debug_probes: bool,
}

/// The loaded, attached programs. Dropping it detaches them.
pub struct Probes {
    ebpf: Ebpf,
    /// The programs' diagnostics, with `--debug-probes`. It holds the log
    /// map: dropping it early would close the map under the programs.
    logs: Option<EbpfLogger<ProbeLog>>,
    /// The kernel offsets the programs were loaded with.
    pub offsets: btf::StructOffsets,
    /// Calls whose tracepoints this kernel does not have.
    pub missing_calls: Vec<Call>,
}

/// Lost-event counts summed over CPUs, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LostCounts {
    pub ring_buffer_full: u64,
    pub inflight_table_full: u64,
    pub targets_table_full: u64,
    pub lifecycle_ring_buffer_full: u64,
    /// Stacks that could not be captured: not lost events (the events
    /// came, without their stack), so not in [`LostCounts::total`].
    pub stacks_unavailable: u64,
}

impl LostCounts {
    pub fn total(&self) -> u64 {
        self.ring_buffer_full
            + self.inflight_table_full
            + self.targets_table_full
            + self.lifecycle_ring_buffer_full
    }
}

impl Probes {
    /// Checks the machine, loads the programs with this kernel's offsets
    /// and attaches every one of them.
    pub fn load(config: &ProbeConfig) -> Result<Probes, Failure> {
        if EBPF_OBJECT.is_empty() {
            return Err(Failure::environment(anyhow!(
                "this vmatrace was built without its eBPF programs (VMATRACE_SKIP_EBPF): it can read traces, not trace"
            )));
        }
        require_privileges()?;
        let offsets = btf::struct_offsets(&config.btf_path)?;
        let tracefs = tracefs::ensure_tracefs()?;
        let tp = tracefs::tracepoint_offsets(&tracefs)?;

        let self_tgid = std::process::id();
        let trace_all = u8::from(config.trace_all);
        let follow = u8::from(config.follow_forks);
        // Wake the reader at a quarter full; it polls every few ms anyway.
        let wakeup_bytes = u64::from(config.ring_buffer_bytes / 4);
        let warn_at = i32::try_from(config.warn_at).unwrap_or(i32::MAX);
        let log_level = log_level(config.debug_probes);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(names::TRACE_ALL, &trace_all, true)
            .override_global(names::FOLLOW_FORKS, &follow, true)
            .override_global(names::SELF_TGID, &self_tgid, true)
            .override_global(names::TASK_MM_OFFSET, &offsets.task_mm, true)
            .override_global(names::MM_MAP_COUNT_OFFSET, &offsets.mm_map_count, true)
            .override_global(names::EXIT_GROUP_DEAD_OFFSET, &tp.exit_group_dead, true)
            .override_global(names::NEWTASK_PID_OFFSET, &tp.newtask_pid, true)
            .override_global(names::NEWTASK_FLAGS_OFFSET, &tp.newtask_clone_flags, true)
            .override_global(names::WAKEUP_BYTES, &wakeup_bytes, true)
            .override_global(names::CAPTURE_STACKS, &config.capture_stacks, true)
            .override_global(names::WARN_AT, &warn_at, true)
            .override_global(LOG_LEVEL, &log_level, true)
            .map_max_entries(names::EVENTS, config.ring_buffer_bytes);
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|e| Failure::environment(anyhow!(e).context("loading the eBPF object")))?;
        let logs = if config.debug_probes {
            Some(
                EbpfLogger::init_with_logger(&mut ebpf, ProbeLog)
                    .context("reading the programs' diagnostics")?,
            )
        } else {
            None
        };
        let mut probes = Probes {
            ebpf,
            logs,
            offsets,
            missing_calls: Vec::new(),
        };
        probes.attach_all(&tracefs, offsets.lock_tracepoint_has_memcg_path)?;
        Ok(probes)
    }

    fn attach_all(&mut self, tracefs: &Path, lock_has_memcg_path: bool) -> Result<(), Failure> {
        for call in Call::ALL {
            let name = call.name();
            let enter = format!("sys_enter_{name}");
            if !tracefs.join("events/syscalls").join(&enter).is_dir() {
                if call.is_essential() {
                    return Err(Failure::environment(anyhow!(
                        "this kernel has no tracepoint syscalls/{enter} (CONFIG_FTRACE_SYSCALLS=y is needed)"
                    )));
                }
                self.missing_calls.push(call);
                continue;
            }
            self.attach("syscalls", &enter)?;
            self.attach("syscalls", &format!("sys_exit_{name}"))?;
        }
        // Lifecycle first in intent, but attached after the syscalls: a
        // followed child can only appear once a traced call could be seen.
        self.attach_as("task_newtask", "task", "task_newtask")?;
        self.attach_as("sched_process_exec", "sched", "sched_process_exec")?;
        self.attach_as("sched_process_exit", "sched", "sched_process_exit")?;
        // Raw tracepoints: the kernel skips building the trace record (the
        // memcg id) for them, and these fire for every mmap lock taken in
        // the system, page faults included.
        let acquired = if lock_has_memcg_path {
            "mmap_lock_acquired_memcg_path"
        } else {
            "mmap_lock_acquired"
        };
        self.attach_raw(acquired, "mmap_lock_acquire_returned")?;
        self.attach_raw("mmap_lock_released", "mmap_lock_released")?;
        Ok(())
    }

    fn attach(&mut self, category: &str, name: &str) -> Result<(), Failure> {
        self.attach_as(name, category, name)
    }

    fn attach_as(&mut self, program: &str, category: &str, event: &str) -> Result<(), Failure> {
        let prog: &mut TracePoint = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("the eBPF object has no program {program}"))?
            .try_into()
            .with_context(|| format!("{program} is not a tracepoint program"))?;
        prog.load().map_err(|e| {
            Failure::environment(anyhow!(e).context(format!(
                "the kernel refused the program {program} ({category}/{event})"
            )))
        })?;
        prog.attach(category, event).map_err(|e| {
            Failure::environment(
                anyhow!(e).context(format!("cannot attach {program} to {category}/{event}")),
            )
        })?;
        Ok(())
    }

    fn attach_raw(&mut self, program: &str, tracepoint: &str) -> Result<(), Failure> {
        let prog: &mut RawTracePoint = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("the eBPF object has no program {program}"))?
            .try_into()
            .with_context(|| format!("{program} is not a raw tracepoint program"))?;
        prog.load().map_err(|e| {
            Failure::environment(anyhow!(e).context(format!(
                "the kernel refused the program {program} (raw tracepoint {tracepoint})"
            )))
        })?;
        prog.attach(tracepoint).map_err(|e| {
            Failure::environment(anyhow!(e).context(format!(
                "cannot attach {program} to raw tracepoint {tracepoint}"
            )))
        })?;
        Ok(())
    }

    /// Prints the diagnostics the programs logged since the last call.
    pub fn print_diagnostics(&mut self) {
        if let Some(logs) = self.logs.as_mut() {
            logs.flush();
        }
    }

    /// Adds a process to the in-kernel target set.
    pub fn add_target(&mut self, pid: u32) -> anyhow::Result<()> {
        let mut targets: HashMap<&mut MapData, u32, u8> =
            HashMap::try_from(self.ebpf.map_mut(names::TARGETS).context("TARGETS map")?)?;
        targets
            .insert(pid, TARGET_TRACED, 0)
            .with_context(|| format!("adding pid {pid} to the traced set"))
    }

    /// The ring buffer the events arrive through. Taken once.
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<aya::maps::MapData>> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .context("the EVENTS ring buffer was already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The map of captured user stacks. Taken once.
    pub fn take_stacks(&mut self) -> anyhow::Result<StackTraceMap<MapData>> {
        let map = self
            .ebpf
            .take_map(names::STACKS)
            .context("the STACKS map was already taken")?;
        Ok(StackTraceMap::try_from(map)?)
    }

    pub fn lost(&self) -> anyhow::Result<LostCounts> {
        let array: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(names::LOST).context("LOST map")?)?;
        let slot = |index: u32| -> anyhow::Result<u64> { Ok(array.get(&index, 0)?.iter().sum()) };
        Ok(LostCounts {
            ring_buffer_full: slot(lost::RINGBUF_FULL)?,
            inflight_table_full: slot(lost::INFLIGHT_FULL)?,
            targets_table_full: slot(lost::TARGETS_FULL)?,
            lifecycle_ring_buffer_full: slot(lost::LIFECYCLE_RINGBUF_FULL)?,
            stacks_unavailable: slot(lost::STACK_UNAVAILABLE)?,
        })
    }
}

/// aya-log's level global in the programs: 0 turns every log statement
/// into a branch the verifier knows is never taken.
const LOG_LEVEL: &str = "AYA_LOG_LEVEL";

fn log_level(debug_probes: bool) -> u8 {
    if debug_probes {
        aya_log::Level::Debug as u8
    } else {
        0
    }
}

/// Prints the programs' diagnostics on stderr as they come.
struct ProbeLog;

impl log::Log for ProbeLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        eprintln!("[vmatrace probe] {}", record.args());
    }

    fn flush(&self) {}
}

/// BPF tracing needs root (CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN).
pub fn require_privileges() -> Result<(), Failure> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Failure::environment(anyhow!(
            "vmatrace needs root to load its eBPF programs: run it with sudo"
        )));
    }
    Ok(())
}
