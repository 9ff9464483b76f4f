//! Loading and attaching the kernel programs, and the handles userspace
//! keeps on their maps.

use std::{os::fd::AsFd, path::Path};

use anyhow::{Context, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, RingBuf},
    programs::{TracePoint, trace_point::TracePointLinkId},
};
use aya_log::EbpfLogger;
use vmatrace_common::{
    Call, SYSCALL_EXEC, SYSCALL_FORK, SYSCALL_TABLE_SIZE, TARGET_TRACED, count_mode, lost, names,
    proc_stats,
};

use super::{
    btf,
    cost::{CostSampler, Totals},
    mapped::MappedCounters,
    prog_info, tracefs,
};
use crate::{arch, error::Failure};

/// The eBPF object built from `vmatrace-ebpf` by build.rs.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vmatrace.bpf.o"));

/// How the programs are to be configured.
#[derive(Clone, Debug, Default)]
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
    /// Where the calls' counts are to be read.
    pub count_mode: CountModeChoice,
    /// Send each call's event to userspace and keep no counters in the
    /// kernel (false: only the per-process counters of `PROC_STATS` are
    /// kept, as `serve` wants).
    pub send_events: bool,
    /// `vm.max_map_count`, for the ENOMEM causes the counters keep.
    pub max_map_count: u64,
    /// Bytes of user stack copied (with the user registers) for each call
    /// that gets a stack; 0 for none.
    pub user_stack_bytes: u32,
    /// Send a call site's stack again only once the one it sent last is
    /// this old (ns); the calls in between send their site alone (see
    /// `stack_field`). 0: each call that wants a stack sends its own. Only
    /// with stack copies (their registers name the site).
    pub stack_site_ns: u64,
    /// Processes (tgids) to trace, put in the traced set before any
    /// program is attached: writing a map later, while the programs run,
    /// would hold the kernel's BPF recursion guard (see `kernel::mapped`).
    pub targets: Vec<u32>,
    /// Turn on the kernel's run-time statistics of BPF programs, to say
    /// what tracing cost ([`Probes::cost`]).
    pub run_time_stats: bool,
    /// With `--count-mode auto`: count at syscall entry and exit while the
    /// traced processes are single-threaded, and attach the lock probes
    /// ([`Probes::attach_lock_probes`]) once one is not. Only for a reader
    /// of the events, which hear of the first thread from them.
    pub lock_probes_on_demand: bool,
}

/// Where the calls' counts are to be read (`--count-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CountModeChoice {
    /// The lock probes where the kernel has the mmap_lock tracepoints and
    /// they attach (for `-p` and `-- CMD`, once a traced process has
    /// threads); at syscall entry and exit otherwise.
    #[default]
    Auto,
    /// The lock probes, or fail.
    Lock,
    /// At syscall entry and exit, on any kernel.
    Syscall,
}

/// Where the calls' counts are read in this run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CountMode {
    /// When each call takes and releases the mmap write lock: exact under
    /// any concurrency.
    Lock,
    /// At syscall entry and exit: exact unless another call of the same
    /// process ran meanwhile. `why`: the reason the lock probes do not run.
    Syscall { why: String },
    /// At syscall entry and exit while every traced process is
    /// single-threaded (exact there), under the mmap write lock once one
    /// is not: the lock probes are attached then (`attached`), for the
    /// rest of the trace. They cost every process on the host, not only
    /// the traced ones (see `tracefs::MEMCG_PATH_COST`).
    LockWhenThreaded { attached: bool },
}

impl CountMode {
    /// The `COUNT_MODE` global's value.
    fn global(&self) -> u8 {
        match self {
            CountMode::Lock => count_mode::LOCK,
            CountMode::Syscall { .. } | CountMode::LockWhenThreaded { .. } => count_mode::SYSCALL,
        }
    }

    /// Whether the `raw_sys_*_counted` programs run (and count each
    /// process's calls in progress).
    fn counts_at_syscalls(&self) -> bool {
        !matches!(self, CountMode::Lock)
    }

    /// One line for the banner.
    pub fn describe(&self) -> String {
        match self {
            CountMode::Lock => {
                "counts: under each call's mmap write lock (exact under any concurrency)".into()
            }
            CountMode::Syscall { why } => format!(
                "counts: at syscall entry and exit ({why}); concurrent calls of one process are \
                 marked inexact (~)"
            ),
            CountMode::LockWhenThreaded { attached: false } => {
                "counts: at syscall entry and exit while the traced processes are single-threaded \
                 (exact there); under each call's mmap write lock once one starts a thread"
                    .into()
            }
            CountMode::LockWhenThreaded { attached: true } => {
                "counts: under each call's mmap write lock (a traced process has threads); \
                 calls that began before were counted at syscall entry and exit"
                    .into()
            }
        }
    }
}

/// Why a load failed: the lock probes alone (the syscall count mode may
/// still run), or anything else.
enum LoadError {
    LockProbes(Failure),
    Other(Failure),
}

impl From<Failure> for LoadError {
    fn from(failure: Failure) -> LoadError {
        LoadError::Other(failure)
    }
}

impl From<anyhow::Error> for LoadError {
    fn from(error: anyhow::Error) -> LoadError {
        LoadError::Other(error.into())
    }
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
    /// Where the calls' counts are read.
    pub count_mode: CountMode,
    /// Stacks are sent by site, again after this many ns (0: each call's).
    pub stack_site_ns: u64,
    /// Every attachment, by program: detached together at the end.
    links: Vec<(String, TracePointLinkId)>,
    /// The `LOST` counters, read without a bpf() call.
    lost: MappedCounters,
    /// `LIMITS`, written without a bpf() call.
    limits: MappedCounters,
    /// The kernel's run-time statistics, on in windows, while the cost is
    /// wanted.
    cost: Option<CostSampler>,
    /// `category/event (program)` of every attachment, for reports.
    attached_to: Vec<String>,
    /// The lock probes are attached to mmap_lock events that make the
    /// kernel build a cgroup path on every mmap lock taken on the host.
    pub lock_probes_build_memcg_path: bool,
    /// Whether this kernel's mmap_lock events build that path: said once
    /// the lock probes are attached.
    lock_events_build_memcg_path: bool,
}

impl Probes {
    /// Lets vmatrace exit without waiting for the kernel to detach its
    /// programs: that takes a grace period per program, one after another
    /// under a kernel mutex (about 0.3 s for the seven here), whoever
    /// closes them. A child process keeps a copy of every descriptor until
    /// vmatrace has exited (the end of a pipe it waits on closes then), and
    /// the last close, its own, detaches them in the background. The
    /// programs run on for that moment with no one reading their events.
    /// Nothing else is held: the child closes standard input and output
    /// first, so no reader of vmatrace's output waits for it.
    pub fn detach_after_exit(&self) {
        let mut pipe = [0; 2];
        // SAFETY: pipe2 fills the two descriptors of a new pipe.
        if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        let [read_end, write_end] = pipe;
        // SAFETY: between fork and _exit the child calls only close, read
        // and _exit (async-signal-safe), as a multi-threaded parent needs.
        match unsafe { libc::fork() } {
            0 => unsafe {
                for fd in [0, 1, 2, write_end] {
                    libc::close(fd);
                }
                let mut byte = 0u8;
                while libc::read(read_end, (&raw mut byte).cast(), 1) < 0
                    && *libc::__errno_location() == libc::EINTR
                {}
                libc::_exit(0);
            },
            -1 => unsafe {
                libc::close(read_end);
                libc::close(write_end);
            },
            // The write end stays open until vmatrace exits.
            _ => unsafe {
                libc::close(read_end);
            },
        }
    }
}

impl Drop for Probes {
    /// Detaching a program waits for the kernel's grace period (50-80 ms
    /// each here): the links are dropped on threads of their own, so
    /// vmatrace exits after one wait, not one per program.
    fn drop(&mut self) {
        let mut links = Vec::new();
        for (program, id) in self.links.drain(..) {
            let program: Option<&mut TracePoint> = self
                .ebpf
                .program_mut(&program)
                .and_then(|p| p.try_into().ok());
            if let Some(link) = program.and_then(|p| p.take_link(id).ok()) {
                links.push(link);
            }
        }
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
    }
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
    /// Traced calls whose entry or exit program the kernel skipped, as the
    /// programs found when pairing entries with exits.
    pub unpaired_calls: u64,
    /// Runs of vmatrace's programs the kernel skipped (`recursion_misses`
    /// of each program, Linux 5.12+), system-wide. Not in
    /// [`LostCounts::total`]: the raw_syscalls programs run for every
    /// syscall of the host, and on 7.x kernels a few runs a trace are
    /// skipped whatever vmatrace traces (bpf() calls, vmatrace's own
    /// included, hold the recursion guard preemptibly). A traced call with
    /// one half skipped is counted in `unpaired_calls`; one with both halves
    /// skipped would be among these, which the summary says.
    pub kernel_skipped_runs: u64,
}

pub use super::cost::ProgramCost;

impl LostCounts {
    pub fn total(&self) -> u64 {
        self.ring_buffer_full
            + self.inflight_table_full
            + self.targets_table_full
            + self.lifecycle_ring_buffer_full
            + self.unpaired_calls
    }
}

impl Probes {
    /// Checks the machine, loads the programs with this kernel's offsets
    /// and attaches every one of them: with the lock probes where the
    /// kernel has the mmap_lock tracepoints and they attach (or
    /// `--count-mode lock`), else counting at syscall entry and exit.
    pub fn load(config: &ProbeConfig) -> Result<Probes, Failure> {
        if EBPF_OBJECT.is_empty() {
            return Err(Failure::environment(anyhow!(
                "this vmatrace was built without its eBPF programs (VMATRACE_SKIP_EBPF): it can read traces, not trace"
            )));
        }
        require_privileges()?;
        let tracefs = tracefs::ensure_tracefs()?;
        let lock = match config.count_mode {
            CountModeChoice::Syscall => Err("--count-mode syscall".to_string()),
            CountModeChoice::Lock => Ok(tracefs::lock_tracepoint_offsets(&tracefs)?),
            CountModeChoice::Auto => {
                let has = |event: &str| tracefs.join("events/mmap_lock").join(event).is_dir();
                if has("mmap_lock_acquire_returned") && has("mmap_lock_released") {
                    tracefs::lock_tracepoint_offsets(&tracefs)
                        .map_err(|e| format!("the mmap_lock tracepoints are not as expected: {e}"))
                } else {
                    Err("this kernel has no mmap_lock tracepoints".to_string())
                }
            }
        };
        let why = match lock {
            Ok(lock) => match Probes::load_in(config, &tracefs, Some(lock)) {
                Ok(probes) => return Ok(probes),
                Err(LoadError::LockProbes(failure))
                    if config.count_mode == CountModeChoice::Auto =>
                {
                    format!("the mmap_lock tracepoints could not be used: {failure}")
                }
                Err(LoadError::LockProbes(failure) | LoadError::Other(failure)) => {
                    return Err(failure);
                }
            },
            Err(why) => why,
        };
        match Probes::load_in(config, &tracefs, None) {
            Ok(mut probes) => {
                probes.count_mode = CountMode::Syscall { why };
                Ok(probes)
            }
            Err(LoadError::LockProbes(failure) | LoadError::Other(failure)) => Err(failure),
        }
    }

    /// Loads and attaches the programs: the lock probes with their offsets
    /// in `lock`, or without them, counting at syscall entry and exit.
    fn load_in(
        config: &ProbeConfig,
        tracefs: &Path,
        lock: Option<tracefs::LockTracepointOffsets>,
    ) -> Result<Probes, LoadError> {
        let offsets = btf::struct_offsets(&config.btf_path)?;
        let tp = tracefs::tracepoint_offsets(tracefs)?;
        let on_demand = config.lock_probes_on_demand && config.count_mode == CountModeChoice::Auto;
        let count_mode = match lock {
            Some(_) if on_demand => CountMode::LockWhenThreaded { attached: false },
            Some(_) => CountMode::Lock,
            None => CountMode::Syscall { why: String::new() },
        };
        // Unused without the lock probes: the defaults stand in.
        let lock = lock.unwrap_or(tracefs::LockTracepointOffsets {
            acquired_mm: 8,
            acquired_write: 24,
            acquired_success: 25,
            released_mm: 8,
            builds_memcg_path: false,
        });
        let mode_global = count_mode.global();
        // The lock mode never uses PROCESSES: one entry is all it costs.
        let processes_entries = match count_mode {
            CountMode::Lock => 1,
            CountMode::Syscall { .. } | CountMode::LockWhenThreaded { .. } => PROCESSES_ENTRIES,
        };
        let lock_on_demand = u8::from(matches!(count_mode, CountMode::LockWhenThreaded { .. }));

        let self_tgid = std::process::id();
        let trace_all = u8::from(config.trace_all);
        let follow = u8::from(config.follow_forks);
        // Wake the reader at a quarter full; it polls every few ms anyway.
        let wakeup_bytes = u64::from(config.ring_buffer_bytes / 4);
        let log_level = log_level(config.debug_probes);
        let send_events = u8::from(config.send_events);
        // Without the registers' offsets, no copies.
        let (user_stack_bytes, pt_regs) = match offsets.pt_regs {
            Some(pt_regs) if has_task_pt_regs() => (config.user_stack_bytes, pt_regs),
            _ => (
                0,
                btf::PtRegsOffsets {
                    ip: 0,
                    sp: 0,
                    bp: 0,
                    lr: 0,
                },
            ),
        };
        let user_stack_bytes = user_stack_bytes.min(vmatrace_common::USER_STACK_COPY_MAX as u32);
        let stack_site_ns = if user_stack_bytes == 0 {
            0
        } else {
            config.stack_site_ns
        };
        // The registers that name the syscall a change outside a traced
        // call happened in.
        let (syscall_regs, syscall_regs_offsets) = match offsets.syscall_regs {
            Some(regs) if has_task_pt_regs() => (1u8, regs),
            _ => (
                0,
                btf::SyscallRegsOffsets {
                    nr: 0,
                    nr_bytes: 8,
                    args: [0; 6],
                },
            ),
        };
        // `bpf_get_current_task_btf`: Linux 5.11.
        let task_btf = u8::from(kernel_at_least(5, 11));
        let stack_ring = stack_ring_bytes(config.capture_stacks, user_stack_bytes);
        let stack_wakeup_bytes = u64::from(stack_ring / 4);
        let mut loader = EbpfLoader::new();
        // No kernel BTF for aya: the programs have no CO-RE relocations
        // (the offsets come in as globals, from our own reading of BTF),
        // and aya parsing all of vmlinux's BTF again cost tens of MB.
        loader.btf(None);
        loader
            .override_global(names::TRACE_ALL, &trace_all, true)
            .override_global(names::FOLLOW_FORKS, &follow, true)
            .override_global(names::LOCK_PROBES_ON_DEMAND, &lock_on_demand, true)
            .override_global(names::SELF_TGID, &self_tgid, true)
            .override_global(names::TASK_MM_OFFSET, &offsets.task_mm, true)
            .override_global(names::MM_MAP_COUNT_OFFSET, &offsets.mm_map_count, true)
            .override_global(names::MM_USERS_OFFSET, &offsets.mm_users, true)
            .override_global(names::MM_START_STACK_OFFSET, &offsets.mm_start_stack, true)
            .override_global(
                names::TASK_FSBASE_OFFSET,
                &offsets.task_thread_pointer,
                true,
            )
            .override_global(names::TASK_COMM_OFFSET, &offsets.task_comm, true)
            .override_global(names::EXIT_GROUP_DEAD_OFFSET, &tp.exit_group_dead, true)
            .override_global(names::NEWTASK_PID_OFFSET, &tp.newtask_pid, true)
            .override_global(names::NEWTASK_FLAGS_OFFSET, &tp.newtask_clone_flags, true)
            .override_global(names::WAKEUP_BYTES, &wakeup_bytes, true)
            .override_global(names::STACK_WAKEUP_BYTES, &stack_wakeup_bytes, true)
            .override_global(names::STACK_SITE_NS, &stack_site_ns, true)
            .override_global(names::TASK_BTF, &task_btf, true)
            .override_global(names::CAPTURE_STACKS, &config.capture_stacks, true)
            .override_global(LOG_LEVEL, &log_level, true)
            .override_global(names::LOCK_ACQUIRED_MM_OFFSET, &lock.acquired_mm, true)
            .override_global(
                names::LOCK_ACQUIRED_WRITE_OFFSET,
                &lock.acquired_write,
                true,
            )
            .override_global(
                names::LOCK_ACQUIRED_SUCCESS_OFFSET,
                &lock.acquired_success,
                true,
            )
            .override_global(names::LOCK_RELEASED_MM_OFFSET, &lock.released_mm, true)
            .override_global(names::COUNT_MODE, &mode_global, true)
            .override_global(proc_stats::names::SEND_EVENTS, &send_events, true)
            .override_global(names::USER_STACK_BYTES, &user_stack_bytes, true)
            .override_global(names::PT_REGS_IP_OFFSET, &pt_regs.ip, true)
            .override_global(names::PT_REGS_SP_OFFSET, &pt_regs.sp, true)
            .override_global(names::PT_REGS_BP_OFFSET, &pt_regs.bp, true)
            .override_global(names::PT_REGS_LR_OFFSET, &pt_regs.lr, true)
            .override_global(names::SYSCALL_REGS, &syscall_regs, true)
            .override_global(names::PT_REGS_NR_OFFSET, &syscall_regs_offsets.nr, true)
            .override_global(
                names::PT_REGS_NR_BYTES,
                &syscall_regs_offsets.nr_bytes,
                true,
            )
            .override_global(names::PT_REGS_ARG_OFFSETS, &syscall_regs_offsets.args, true)
            .override_global(names::MM_OWNER_OFFSET, &offsets.mm_owner, true)
            .override_global(names::TASK_TGID_OFFSET, &offsets.task_tgid, true)
            .override_global(names::TASK_FLAGS_OFFSET, &offsets.task_flags, true)
            .map_max_entries(names::EVENTS, config.ring_buffer_bytes)
            .map_max_entries(names::USER_STACK_COPIES, stack_ring)
            .map_max_entries(names::PROCESSES, processes_entries)
            // A reader of the events keeps no counters in the kernel.
            .map_max_entries(
                proc_stats::names::PROC_STATS,
                if config.send_events {
                    1
                } else {
                    proc_stats::PROC_STATS_ENTRIES
                },
            );
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
        let lost = MappedCounters::new(
            ebpf.map(names::LOST).context("LOST map")?,
            lost::SLOTS as usize,
        )
        .map_err(Failure::environment)?;
        let limits = MappedCounters::writable(
            ebpf.map(names::LIMITS).context("LIMITS map")?,
            vmatrace_common::limits::SLOTS as usize,
        )
        .map_err(Failure::environment)?;
        let mut probes = Probes {
            ebpf,
            logs,
            offsets,
            missing_calls: Vec::new(),
            count_mode,
            stack_site_ns,
            links: Vec::new(),
            lost,
            limits,
            cost: None,
            attached_to: Vec::new(),
            lock_probes_build_memcg_path: false,
            lock_events_build_memcg_path: lock.builds_memcg_path,
        };
        if config.run_time_stats {
            probes.cost = CostSampler::start(super::monotonic_ns(), probes.program_totals());
        }
        probes.set_limits(config.max_map_count, config.warn_at);
        for pid in &config.targets {
            probes.add_target(*pid)?;
        }
        probes.attach_all(tracefs)?;
        match probes.count_mode {
            CountMode::Lock => probes.attach_lock_probes().map_err(LoadError::LockProbes)?,
            // Loaded now, so a kernel that refuses them refuses them at the
            // start, and the attachment later is quick.
            CountMode::LockWhenThreaded { .. } => {
                for (program, _, _) in LOCK_PROBES {
                    probes
                        .load_program(program)
                        .map_err(LoadError::LockProbes)?;
                }
            }
            CountMode::Syscall { .. } => {}
        }
        Ok(probes)
    }

    /// Attaches the lock probes, if they are not yet, and tells the
    /// programs so: a call that begins after this has its write section
    /// seen. Done once a traced process has more than one thread, with
    /// [`CountMode::LockWhenThreaded`]; never undone while tracing (a call
    /// in progress may be counting on them).
    pub fn attach_lock_probes(&mut self) -> Result<(), Failure> {
        if matches!(
            self.count_mode,
            CountMode::Syscall { .. } | CountMode::LockWhenThreaded { attached: true }
        ) || self.links.iter().any(|(p, _)| p == LOCK_PROBES[0].0)
        {
            return Ok(());
        }
        for (program, category, event) in LOCK_PROBES {
            self.attach_as(program, category, event)?;
        }
        self.lock_probes_build_memcg_path = self.lock_events_build_memcg_path;
        self.limits.set(vmatrace_common::limits::LOCK_PROBES, 1);
        if let CountMode::LockWhenThreaded { attached } = &mut self.count_mode {
            *attached = true;
        }
        Ok(())
    }

    /// Attaches every program as a perf-event tracepoint program: those
    /// run with preemption disabled on every kernel, while per-syscall
    /// (`syscalls/sys_enter_*`) and raw tracepoint programs run preemptible
    /// from Linux 6.13 on and are then skipped by the kernel's per-program
    /// recursion guard whenever a thread was preempted inside one on the
    /// same CPU (see vmatrace-ebpf's module doc).
    fn attach_all(&mut self, tracefs: &Path) -> Result<(), Failure> {
        self.fill_syscall_table(tracefs)?;
        // Exit before entry: an entry seen then always has its exit seen,
        // so an exit without its entry means the entry was skipped. The
        // syscall count mode has programs of its own, so the lock mode's
        // hot path carries nothing of it.
        let (enter, exit) = match self.count_mode.counts_at_syscalls() {
            false => ("raw_sys_enter", "raw_sys_exit"),
            true => ("raw_sys_enter_counted", "raw_sys_exit_counted"),
        };
        self.attach_as(exit, "raw_syscalls", "sys_exit")?;
        self.attach_as(enter, "raw_syscalls", "sys_enter")?;
        // Lifecycle first in intent, but attached after the syscalls: a
        // followed child can only appear once a traced call could be seen.
        self.attach_as("task_newtask", "task", "task_newtask")?;
        self.attach_as("sched_process_exec", "sched", "sched_process_exec")?;
        self.attach_as("sched_process_exit", "sched", "sched_process_exit")?;
        // The lock probes, if they are used, come last (`load_in`): a
        // failure there alone leaves the syscall count mode to try.
        Ok(())
    }

    /// Marks the syscall numbers of the traced calls this kernel has (it
    /// has `syscalls/sys_enter_<call>` for them) in `SYSCALL_CALLS`.
    fn fill_syscall_table(&mut self, tracefs: &Path) -> Result<(), Failure> {
        if !tracefs.join("events/raw_syscalls/sys_enter").is_dir() {
            return Err(Failure::environment(anyhow!(
                "this kernel has no tracepoint raw_syscalls/sys_enter (CONFIG_FTRACE_SYSCALLS=y is needed)"
            )));
        }
        let mut table: Array<&mut MapData, u8> = Array::try_from(
            self.ebpf
                .map_mut(names::SYSCALL_CALLS)
                .context("SYSCALL_CALLS map")?,
        )
        .map_err(|e| Failure::environment(anyhow!(e)))?;
        for call in Call::ALL {
            // A kernel without a watched call never runs it: nothing to
            // miss, and its number is looked up whatever tracefs says.
            let present = call.is_watched()
                || tracefs
                    .join("events/syscalls")
                    .join(format!("sys_enter_{}", call.name()))
                    .is_dir();
            if !present {
                if call.is_essential() {
                    return Err(Failure::environment(anyhow!(
                        "this kernel has no syscall {} (no syscalls/sys_enter_{0})",
                        call.name()
                    )));
                }
                self.missing_calls.push(call);
                continue;
            }
            table
                .set(syscall_number(call), call as u8 + 1, 0)
                .map_err(|e| Failure::environment(anyhow!(e).context("filling SYSCALL_CALLS")))?;
        }
        for (number, code) in new_space_syscalls() {
            table
                .set(number as u32, code, 0)
                .map_err(|e| Failure::environment(anyhow!(e).context("filling SYSCALL_CALLS")))?;
        }
        Ok(())
    }

    /// The program, loaded into the kernel (once).
    fn load_program(&mut self, program: &str) -> Result<&mut TracePoint, Failure> {
        let prog: &mut TracePoint = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("the eBPF object has no program {program}"))?
            .try_into()
            .with_context(|| format!("{program} is not a tracepoint program"))?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| {
                Failure::environment(
                    anyhow!(e).context(format!("the kernel refused the program {program}")),
                )
            })?;
        }
        Ok(prog)
    }

    fn attach_as(&mut self, program: &str, category: &str, event: &str) -> Result<(), Failure> {
        let prog = self.load_program(program)?;
        let link = prog.attach(category, event).map_err(|e| {
            Failure::environment(
                anyhow!(e).context(format!("cannot attach {program} to {category}/{event}")),
            )
        })?;
        self.links.push((program.to_string(), link));
        self.attached_to
            .push(format!("{category}/{event} ({program})"));
        Ok(())
    }

    /// Prints the diagnostics the programs logged since the last call.
    pub fn print_diagnostics(&mut self) {
        if let Some(logs) = self.logs.as_mut() {
            logs.flush();
        }
    }

    /// Adds a process to the in-kernel target set.
    /// Adds a process to the traced set. Prefer [`ProbeConfig::targets`]
    /// for the processes known before the programs are attached.
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

    /// The ring buffer of user registers and stack tops. Taken once.
    pub fn take_user_stack_copies(&mut self) -> anyhow::Result<RingBuf<aya::maps::MapData>> {
        let map = self
            .ebpf
            .take_map(names::USER_STACK_COPIES)
            .context("the USER_STACK_COPIES ring buffer was already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The per-process counters (`PROC_STATS`), for `serve` and `top -a`.
    pub fn take_proc_stats(
        &mut self,
    ) -> anyhow::Result<HashMap<MapData, u32, proc_stats::ProcStats>> {
        let map = self
            .ebpf
            .take_map(proc_stats::names::PROC_STATS)
            .context("PROC_STATS map")?;
        Ok(HashMap::try_from(map)?)
    }

    /// The losses so far. Reads no map through bpf() (see
    /// [`MappedCounters`]), so it can be called while tracing.
    pub fn lost(&self) -> anyhow::Result<LostCounts> {
        let slot = |index: u32| self.lost.get(index);
        Ok(LostCounts {
            ring_buffer_full: slot(lost::RINGBUF_FULL),
            inflight_table_full: slot(lost::INFLIGHT_FULL),
            targets_table_full: slot(lost::TARGETS_FULL),
            lifecycle_ring_buffer_full: slot(lost::LIFECYCLE_RINGBUF_FULL),
            stacks_unavailable: slot(lost::STACK_UNAVAILABLE),
            unpaired_calls: slot(lost::ENTRY_MISSED) + slot(lost::EXIT_MISSED),
            kernel_skipped_runs: self.kernel_skipped_runs(),
        })
    }

    /// Tells the programs `vm.max_map_count` and the NEAR-LIMIT threshold
    /// (again whenever the sysctl changes).
    pub fn set_limits(&self, max_map_count: u64, warn_at: u64) {
        use vmatrace_common::limits;
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.limits.set(limits::MAX_MAP_COUNT, clamp(max_map_count));
        self.limits.set(limits::WARN_AT, clamp(warn_at));
    }

    /// What each program is attached to: `category/event (program)`.
    pub fn attachments(&self) -> &[String] {
        &self.attached_to
    }

    /// Whether this kernel counts the runs it skipped (Linux 5.12+).
    pub fn counts_skips(&self) -> bool {
        self.ebpf
            .programs()
            .filter_map(|(_, program)| program.fd().ok())
            .any(|fd| prog_info::recursion_misses(fd.as_fd()).is_some())
    }

    /// Whether the kernel's run-time statistics are measured.
    pub fn measures_cost(&self) -> bool {
        self.cost.is_some()
    }

    /// What vmatrace's programs cost the kernel so far, if its run-time
    /// statistics are measured (in windows, see `kernel::cost`).
    pub fn cost(&self) -> Option<ProgramCost> {
        let totals = || self.program_totals();
        self.cost.as_ref()?.cost(super::monotonic_ns(), totals)
    }

    /// Opens and closes the cost's measuring windows: called often (every
    /// poll of the event loop).
    pub fn sample_cost(&mut self) {
        let Some(mut cost) = self.cost.take() else {
            return;
        };
        cost.tick(super::monotonic_ns(), || self.program_totals());
        self.cost = Some(cost);
    }

    /// The kernel's run time and runs of every loaded program so far.
    fn program_totals(&self) -> Totals {
        let (run_ns, runs) = self
            .ebpf
            .programs()
            .filter_map(|(_, program)| program.fd().ok())
            .filter_map(|fd| prog_info::run_time(fd.as_fd()))
            .fold((0, 0), |(ns, n), (run_ns, runs)| (ns + run_ns, n + runs));
        Totals { run_ns, runs }
    }

    /// The kernel's `recursion_misses`, summed over the loaded programs (0
    /// where the kernel has no such counter, before 5.12).
    fn kernel_skipped_runs(&self) -> u64 {
        self.ebpf
            .programs()
            .filter_map(|(_, program)| program.fd().ok())
            .filter_map(|fd| prog_info::recursion_misses(fd.as_fd()))
            .sum()
    }
}

/// The size of the ring buffer of user stacks: room for about 450 records
/// with 8 KiB copies (9 KiB each; when it is full, bare frame-pointer walks
/// of 1 KiB still fit), 1000 without copies, one page without stacks.
fn stack_ring_bytes(capture_stacks: u8, user_stack_bytes: u32) -> u32 {
    match (capture_stacks, user_stack_bytes) {
        (vmatrace_common::capture_stacks::NONE, _) => 4096,
        (_, 0) => 1 << 20,
        _ => 4 << 20,
    }
}

/// The syscalls that build a new address space (`SYSCALL_EXEC`,
/// `SYSCALL_FORK`): the exec and fork events tell its count.
fn new_space_syscalls() -> impl Iterator<Item = (libc::c_long, u8)> {
    let exec = [libc::SYS_execve, libc::SYS_execveat].map(|nr| (nr, SYSCALL_EXEC));
    let fork = arch::FORK_SYSCALLS.iter().map(|&nr| (nr, SYSCALL_FORK));
    exec.into_iter().chain(fork)
}

/// The lock probes: program, tracepoint category and event.
const LOCK_PROBES: [(&str, &str, &str); 2] = [
    (
        "mmap_lock_acquired",
        "mmap_lock",
        "mmap_lock_acquire_returned",
    ),
    ("mmap_lock_released", "mmap_lock", "mmap_lock_released"),
];

/// Processes the syscall count mode can follow at once (`PROCESSES`); a
/// process beyond them has every call marked inexact.
const PROCESSES_ENTRIES: u32 = 32768;

/// The syscall number of a call on the architecture vmatrace is built for.
fn syscall_number(call: Call) -> u32 {
    let number = match call {
        Call::Mmap => libc::SYS_mmap,
        Call::Munmap => libc::SYS_munmap,
        Call::Brk => libc::SYS_brk,
        Call::Mprotect => libc::SYS_mprotect,
        Call::PkeyMprotect => libc::SYS_pkey_mprotect,
        Call::Mremap => libc::SYS_mremap,
        Call::Madvise => libc::SYS_madvise,
        Call::Mlock => libc::SYS_mlock,
        Call::Mlock2 => libc::SYS_mlock2,
        Call::Munlock => libc::SYS_munlock,
        Call::Mlockall => libc::SYS_mlockall,
        Call::Munlockall => libc::SYS_munlockall,
        Call::Shmat => libc::SYS_shmat,
        Call::Shmdt => libc::SYS_shmdt,
        // Not named by every libc crate yet; 462 on every architecture.
        Call::Mseal => 462,
        Call::Mbind => libc::SYS_mbind,
        Call::SetMempolicyHomeNode => libc::SYS_set_mempolicy_home_node,
        Call::IoSetup => libc::SYS_io_setup,
        Call::IoDestroy => libc::SYS_io_destroy,
        Call::Ioctl => libc::SYS_ioctl,
        Call::Prctl => libc::SYS_prctl,
        Call::RemapFilePages => libc::SYS_remap_file_pages,
        // 453 on x86-64 (not named by every libc crate yet).
        Call::MapShadowStack => 453,
        Call::ProcessMadvise => libc::SYS_process_madvise,
    };
    let number = number as u32;
    debug_assert!(number < SYSCALL_TABLE_SIZE);
    number
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

/// Whether the kernel has `bpf_task_pt_regs` (Linux 5.15): the programs
/// read the user registers for stack copies with it, and a kernel without
/// it would refuse them, so older ones get no copies (the frame-pointer
/// walk alone).
pub(crate) fn has_task_pt_regs() -> bool {
    kernel_at_least(5, 15)
}

/// Whether the running kernel's release is `major.minor` or later.
fn kernel_at_least(wanted_major: u32, wanted_minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .trim()
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= (wanted_major, wanted_minor)
}
