//! Command-line arguments, in the forms strace users know.

use std::{ffi::OsString, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::kernel::{btf::DEFAULT_BTF_PATH, probes::CountModeChoice};

/// `0.1.0 (git 443274d1a2b3 2026-11-29, x86_64)`: the release, the commit
/// it was built from (vmatrace/build.rs) and the architecture, so a binary
/// copied to a production box still says which source and build it is.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("VMATRACE_COMMIT"),
    ", ",
    crate::arch::name_literal!(),
    ")"
);

const ABOUT: &str = "Trace the calls that create, split and remove memory mappings (VMAs), \
with the kernel's own live VMA count per process against vm.max_map_count.";

const LONG_ABOUT: &str = "\
Trace the calls that create, split and remove memory mappings (VMAs), with the
kernel's own live VMA count per process against vm.max_map_count.

A process may hold at most vm.max_map_count VMAs (the lines of /proc/PID/maps;
65530 by default). An munmap that punches a hole in a mapping cuts it in two;
at the limit such a call fails with ENOMEM and allocators such as jemalloc
abort with `Error in munmap(): Cannot allocate memory`. vmatrace shows every
mmap, munmap, brk, mprotect, mremap, madvise, mlock, shmat and mseal call of
the traced processes (and mbind, io_setup, userfaultfd's ioctls and the other
calls that change the count now and then, when they did), the VMA count after
it (read from the kernel's mm->map_count), and flags:

  SPLIT       the call cut an existing VMA and the pieces stay mapped, so the
              process holds more VMAs than the call itself created (a hole
              punched in a mapping; trimming a mapping's end is not one);
              exact per call, also when other threads map and unmap at once
              (never flagged on a count marked inexact, ~)
  ENOMEM      the call failed with ENOMEM, shown with the count and the limit
  NEAR-LIMIT  the count crossed --warn-at percent of the limit

Whatever else changes the count (a syscall vmatrace does not decode, the
kernel's own mappings, another process sharing the address space) is shown as
a change of its own, so the count is always the kernel's.

Events go to stdout (one line each, or JSON with --json); status lines and the
closing summary go to stderr (the summary is the last JSON line with --json).
With -o FILE (or `vmatrace record`), every event is also recorded to FILE, to
be read back later, anywhere and without root, by `vmatrace replay`, `report`
and `export`. Tracing needs root, a kernel with BTF (/sys/kernel/btf/vmlinux)
and tracefs (mounted if missing).";

const AFTER_HELP: &str = "\
Examples:
  sudo vmatrace -p 1234                       watch a running process
  sudo vmatrace -p 1234 --only-flagged        only SPLIT, ENOMEM, NEAR-LIMIT
  sudo vmatrace -q -p 1234                    status lines and summary only
  sudo vmatrace -f -- ./server --port 80      run a command, follow its children
  sudo vmatrace --json -p 1234 | jq .         JSON lines for scripts
  sudo vmatrace -a -d 10 --only-flagged       every process, for 10 seconds
  sudo vmatrace --top --stacks -p 1234        the allocator's pattern, live
  sudo vmatrace record -q -p 1234 -o db.vmat  record overnight, quietly
  vmatrace report db.vmat                     what happened, per process
  vmatrace replay db.vmat --only-flagged      the flagged events again
  vmatrace export db.vmat --format chrome > t.json   for ui.perfetto.dev
  vmatrace maps -p 1234                       what holds its VMAs now (no tracing)
  vmatrace maps ticket-smaps.txt              the same from a saved maps or smaps

Exit status:
  0  the trace ran and is complete
  1  could not trace (not root, no BTF, no tracefs, a probe the kernel refused)
  2  bad arguments, or no such process
  3  the trace ran, but events were lost (see the summary)
  4  (reading a trace or maps file) it cannot be read: missing, no permission, a directory
  5  (reading) it is empty or not a vmatrace trace (maps: not maps or smaps)
  6  (reading) a newer vmatrace wrote it
  7  (reading) a damaged record: what preceded it was used
  8  (reading) the file is cut inside a record: what preceded it was used
  With -- CMD, a complete trace exits with the command's own status (as strace
  does), 128+N if a signal N killed it.";

#[derive(Debug, Parser)]
#[command(
    name = "vmatrace",
    version = VERSION,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace as the plain command does and record every event to -o FILE.
    Record(LiveArgs),
    /// Print a recorded trace's events as the live view printed them.
    Replay(ReplayArgs),
    /// Summarize a recorded trace per process.
    Report(ReportArgs),
    /// Convert a recorded trace for other tools.
    Export(ExportArgs),
    /// Export every process's VMA count, splits and ENOMEMs to Prometheus
    /// (GET /metrics), from counters kept in the kernel.
    Serve(crate::host::serve::ServeArgs),
    /// Rank every process (-a) or some (-p) by their risk of reaching
    /// vm.max_map_count, live.
    Top(crate::host::top::TopArgs),
    /// Explain the VMAs a process already holds: its mappings in groups
    /// (holes, protection patchworks, thread stacks, mapped files, ...),
    /// largest first, with what each means and what to do. From a live
    /// process (-p PID; no root for one's own) or a saved maps or smaps
    /// file.
    Maps(crate::host::maps::MapsArgs),
    /// Say what vmatrace finds on this kernel (tracepoints, offsets, count
    /// mode and why, stacks, skip counts): attach it to a bug report.
    ProbeReport(ProbeReportArgs),
}

#[derive(Debug, Args)]
pub struct ProbeReportArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    /// BTF file with the kernel's types.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_BTF_PATH)]
    pub btf: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The trace file.
    pub file: PathBuf,
    /// Only this process (repeat for several).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Print only events flagged SPLIT, ENOMEM or NEAR-LIMIT.
    #[arg(long)]
    pub only_flagged: bool,
    /// Only events from SECONDS after the recording started.
    #[arg(long, value_name = "SECONDS")]
    pub since: Option<f64>,
    /// Only events until SECONDS after the recording started.
    #[arg(long, value_name = "SECONDS")]
    pub until: Option<f64>,
    /// Print events as JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The trace file.
    pub file: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also draw the VMA count over time per process, with the limit and
    /// the flagged calls, as an SVG file (an older plot there is replaced;
    /// a link or any other file is left alone unless --force).
    #[arg(long, value_name = "SVG")]
    pub plot: Option<PathBuf>,
    /// Also draw a VMA flame graph as an SVG file: the stacks of the
    /// recorded calls, as wide as the VMAs they added (see --weight). From
    /// the stacks the recording carries: every call's with `record
    /// --stacks`, the flagged calls' otherwise (the graph says which).
    #[arg(long, value_name = "SVG")]
    pub flamegraph: Option<PathBuf>,
    /// Also write one self-contained HTML page for a write-up: the
    /// verdict, the count plot, the flame graph, the top call sites and the
    /// lost events.
    #[arg(long, value_name = "HTML")]
    pub html: Option<PathBuf>,
    /// What a flame graph's widths stand for: VMAs added, SPLITs, ENOMEMs
    /// or calls.
    #[arg(long, value_enum, default_value_t = crate::output::flame::Weight::Vmas)]
    pub weight: crate::output::flame::Weight,
    /// Replace what is at the --plot, --flamegraph or --html path even if
    /// it is not a vmatrace drawing of this user's (a link is replaced, never
    /// followed).
    #[arg(long)]
    pub force: bool,
    /// Also rank the N call sites that added the most VMAs, with their
    /// SPLITs and ENOMEMs (needs stacks: all of them with `record --stacks`,
    /// those of flagged calls otherwise).
    #[arg(
        long,
        value_name = "N",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "10"
    )]
    pub top_sites: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Chrome trace-event JSON (Perfetto UI, chrome://tracing).
    Chrome,
    /// One JSON object per event.
    Jsonl,
    /// Folded stacks (`comm;root;...;leaf;call WEIGHT`), weighted by
    /// --weight: for FlameGraph.pl, inferno and speedscope.
    Folded,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The trace file.
    pub file: PathBuf,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// With --format folded: what a stack's weight counts.
    #[arg(long, value_enum, default_value_t = crate::output::flame::Weight::Vmas)]
    pub weight: crate::output::flame::Weight,
}

/// Tracing options, for the plain command and `record`.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Trace the running process PID (repeat for several).
    #[arg(short = 'p', long = "pid", value_name = "PID", conflicts_with = "all")]
    pub pids: Vec<i32>,

    /// Also trace the child processes that traced processes fork.
    #[arg(short = 'f', long = "follow-forks")]
    pub follow_forks: bool,

    /// Trace every process on the system (except vmatrace).
    #[arg(short = 'a', long = "all", conflicts_with = "command")]
    pub all: bool,

    /// Print events as JSON lines, and the summary as a last JSON line.
    #[arg(long)]
    pub json: bool,

    /// Print only events flagged SPLIT, ENOMEM or NEAR-LIMIT.
    #[arg(long)]
    pub only_flagged: bool,

    /// Capture and symbolize the user stack of every event, not only of the
    /// flagged ones (SPLIT, ENOMEM, the call that crossed NEAR-LIMIT).
    #[arg(long, conflicts_with = "no_stacks")]
    pub stacks: bool,

    /// Capture no user stacks at all.
    #[arg(long)]
    pub no_stacks: bool,

    /// Capture a call site's stack once a second, not each flagged call's:
    /// the kernel tells a site by the return address above the syscall
    /// stub and the stack's depth, and the site's calls in between share
    /// its stack (the output says when a stack stands for more calls). A
    /// split storm then costs about what a count does, but two callers
    /// that reach the stub at the same depth share one stack: on MariaDB
    /// with jemalloc, 12% of the shared calls named the wrong caller. Not
    /// in a recording (-o, record), which keeps each call's own.
    #[arg(long, conflicts_with_all = ["no_stacks", "stacks"])]
    pub site_stacks: bool,

    /// How user stacks are walked: `fp` follows frame pointers (plus the
    /// caller of a syscall stub, read at the stack pointer), `dwarf` unwinds
    /// a copy of the stack's top with the modules' call-frame information
    /// (.eh_frame, .debug_frame), `auto` unwinds with DWARF as far as the
    /// copy reaches and continues with the frame-pointer walk.
    #[arg(long, value_enum, default_value_t = crate::stacks::unwind::UnwindMode::Auto)]
    pub unwind: crate::stacks::unwind::UnwindMode,

    /// Read the DWARF of separate debug files (Debian's libc6-dbg and
    /// -dbgsym packages, RHEL's -debuginfo) for file:line in the libraries
    /// they belong to. Their sections are compressed and are held
    /// decompressed while tracing: 11 MB for libc's, hundreds for a large
    /// server's. Without it those files name functions only, from their
    /// symbol tables; DWARF a binary carries itself is always read.
    #[arg(long)]
    pub debug_info: bool,

    /// Bytes of user stack copied for DWARF unwinding of each call that
    /// gets a stack (at most 16384).
    #[arg(long, value_name = "BYTES", default_value_t = 8192)]
    pub stack_bytes: u32,

    /// On a terminal, print at most N flagged lines of one flag and call
    /// site a second, and one line saying how many more there were; 0
    /// prints every line. Default: 5 on a terminal, every line when piped
    /// or with --json (scripts count lines).
    #[arg(long, value_name = "N")]
    pub max_rate: Option<u32>,

    /// Print no events: status lines and the summary only.
    #[arg(short = 'q', long, conflicts_with = "only_flagged")]
    pub quiet: bool,

    /// Leave the kernel's run-time statistics of BPF programs off: no
    /// "tracing cost" in the summary and --top. While on they time every
    /// run of every BPF program on the host (two clock reads each), so
    /// vmatrace turns them on for the first second and then for a tenth
    /// of each second, and scales the cost from the time measured.
    #[arg(long)]
    pub no_cost: bool,

    /// Instead of events, show each process's allocator pattern, refreshed
    /// every -i seconds (default 1): the count against the limit, growth
    /// and time to the limit, call rates, mmap/munmap size classes, the
    /// share of unmaps that split, the mappings cut and the call sites that
    /// added VMAs (of calls with a stack: the flagged ones, all with
    /// --stacks).
    /// Full-screen on a terminal (q quits), text blocks or JSON lines
    /// (--json) otherwise.
    #[arg(long, conflicts_with_all = ["quiet", "only_flagged"])]
    pub top: bool,

    /// NEAR-LIMIT threshold, in percent of vm.max_map_count.
    #[arg(long, value_name = "PERCENT", default_value = "90", value_parser = parse_percent)]
    pub warn_at: f64,

    /// Seconds between status lines on stderr, or between --top refreshes
    /// [default: 1 on a terminal or with --top, none otherwise; 0: none].
    #[arg(short = 'i', long, value_name = "SECONDS")]
    pub interval: Option<f64>,

    /// Stop after SECONDS.
    #[arg(short = 'd', long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Size of the kernel-to-userspace ring buffer (a power of two, >= 4096;
    /// suffixes K, M, G).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_buffer_size)]
    pub buffer_size: u32,

    /// Also record every event to FILE (created mode 0600), for replay,
    /// report and export. An older trace there is kept as FILE.old; a link
    /// or any other file is left alone unless --force.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Replace what is at the output path even if it is not a vmatrace
    /// file of this user's (a link is replaced, never followed).
    #[arg(long)]
    pub force: bool,

    /// Keep the recording within SIZE bytes, newest part first: FILE and
    /// FILE.1 hold up to half each; when FILE is full it becomes FILE.1 and
    /// a new FILE starts (suffixes K, M, G).
    #[arg(long, value_name = "SIZE", requires = "output", value_parser = parse_size)]
    pub max_size: Option<u64>,

    /// Read kernel type information from this BTF file.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_BTF_PATH, hide_short_help = true)]
    pub btf: PathBuf,

    /// Print the kernel programs' own diagnostics on stderr: why a call was
    /// not traced or not reported, a slot that could not be made, a lock
    /// sequence they did not expect. Off, they cost nothing: the verifier
    /// removes them.
    #[arg(long, hide_short_help = true)]
    pub debug_probes: bool,

    /// Where each call's VMA counts are read: `lock`, when the call takes
    /// and releases the mmap write lock (the mmap_lock tracepoints, Linux
    /// 5.11+; exact under any concurrency); `syscall`, at syscall entry and
    /// exit (any kernel; a call that overlaps another call of its process
    /// is marked inexact); `auto`, at syscall entry and exit while the
    /// traced processes are single-threaded (exact there, and cheaper for
    /// the whole host), lock from the moment one has threads, where the
    /// kernel allows it.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = CountModeChoice::Auto,
          hide_short_help = true)]
    pub count_mode: CountModeChoice,

    /// The command to run and trace from its first instruction.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// What to trace, once the arguments are checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    Pids(Vec<i32>),
    Command(Vec<OsString>),
    All,
}

impl LiveArgs {
    pub fn targets(&self) -> Result<Targets, String> {
        match (self.pids.is_empty(), self.command.is_empty(), self.all) {
            (false, true, false) => Ok(Targets::Pids(self.pids.clone())),
            (true, false, false) => Ok(Targets::Command(self.command.clone())),
            (true, true, true) => Ok(Targets::All),
            (true, true, false) => {
                Err("nothing to trace: give -p PID, -- CMD [ARGS...], or --all".into())
            }
            _ => Err("give one of -p PID, -- CMD, or --all".into()),
        }
    }
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage"))?;
    if value > 0.0 && value <= 100.0 {
        Ok(value)
    } else {
        Err(format!("{value} is not in (0, 100]"))
    }
}

/// A byte count with an optional K, M or G suffix (powers of 1024).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let (digits, multiplier) = match text.chars().last() {
        Some('K' | 'k') => (&text[..text.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&text[..text.len() - 1], 1 << 20),
        Some('G' | 'g') => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .map_err(|_| format!("{text:?} is not a size"))?
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text} is too large"))
}

fn parse_size(text: &str) -> Result<u64, String> {
    let value = parse_bytes(text)?;
    if value < 128 << 10 {
        return Err(format!("{text} is too small: at least 128K"));
    }
    Ok(value)
}

fn parse_buffer_size(text: &str) -> Result<u32, String> {
    let value = parse_bytes(text)?;
    if value < 4096 || !value.is_power_of_two() || value > (1 << 30) {
        return Err(format!("{text} must be a power of two from 4K to 1G"));
    }
    Ok(value as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<LiveArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("vmatrace").chain(args.iter().copied()))?;
        assert!(cli.command.is_none());
        Ok(cli.live)
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from(["vmatrace", "record", "-o", "t.vmat", "--", "ls"]).unwrap();
        match cli.command {
            Some(Command::Record(live)) => {
                assert_eq!(live.output, Some(PathBuf::from("t.vmat")));
                assert_eq!(live.targets(), Ok(Targets::Command(vec!["ls".into()])));
            }
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["vmatrace", "replay", "t.vmat", "--only-flagged", "-p", "3"])
                .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Replay(ReplayArgs {
                only_flagged: true,
                ..
            }))
        ));
        let cli =
            Cli::try_parse_from(["vmatrace", "export", "t.vmat", "--format", "chrome"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Export(ExportArgs {
                format: ExportFormat::Chrome,
                ..
            }))
        ));
        assert!(Cli::try_parse_from(["vmatrace", "export", "t.vmat", "--format", "svg"]).is_err());
        let cli = Cli::try_parse_from(["vmatrace", "-o", "t.vmat", "-p", "1", "--max-size", "1G"])
            .unwrap();
        assert_eq!(cli.live.output, Some(PathBuf::from("t.vmat")));
        assert_eq!(cli.live.max_size, Some(1 << 30));
        assert!(
            Cli::try_parse_from(["vmatrace", "-p", "1", "--max-size", "1G"]).is_err(),
            "needs -o"
        );
        assert!(
            Cli::try_parse_from(["vmatrace", "-o", "t", "-p", "1", "--max-size", "1K"]).is_err()
        );
    }

    #[test]
    fn strace_forms_parse() {
        let cli = parse(&["-p", "12", "-p", "34"]).unwrap();
        assert_eq!(cli.targets(), Ok(Targets::Pids(vec![12, 34])));
        let cli = parse(&["-f", "--", "ls", "-l"]).unwrap();
        assert!(cli.follow_forks);
        assert_eq!(
            cli.targets(),
            Ok(Targets::Command(vec!["ls".into(), "-l".into()]))
        );
        assert_eq!(parse(&["--all"]).unwrap().targets(), Ok(Targets::All));
    }

    #[test]
    fn bad_arguments_are_rejected() {
        assert!(parse(&["-p", "abc"]).is_err());
        assert!(parse(&["--all", "-p", "1"]).is_err());
        assert!(parse(&["--warn-at", "0"]).is_err());
        assert!(parse(&["--warn-at", "101"]).is_err());
        assert!(parse(&["--buffer-size", "3000"]).is_err());
        assert_eq!(parse(&["--warn-at", "95%"]).unwrap().warn_at, 95.0);
        assert_eq!(
            parse(&["--buffer-size", "64M"]).unwrap().buffer_size,
            64 << 20
        );
        assert!(parse(&[]).unwrap().targets().is_err());
        assert!(parse(&["-p", "1", "--", "ls"]).unwrap().targets().is_err());
    }
}
