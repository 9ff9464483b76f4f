use std::io::Write;

use clap::Parser;
use vmatrace::{
    cli::{Cli, Command, LiveArgs},
    error::{Failure, exit_code},
    readback, trace,
};

/// glibc raises its mmap threshold to the size of each large block freed
/// (up to 32 MB): the kernel's BTF, read and parsed twice at start (5.5 MB
/// of file, by vmatrace and by aya), then came from the heap and stayed
/// there, so the peak held both. Fixed at the default, each large block is
/// its own mapping and goes back to the system when freed.
/// mimalloc (the static build's) kept the two parses' freed memory
/// resident for the whole trace (52 MB peak, 28 MB of it freed): it
/// purges 10 ms later, when the thread allocates again, and with its
/// arenas committed eagerly a purge only marks the pages MADV_FREE, which
/// stay resident until the system runs short. Purged at once and
/// decommitted: a 26 MB peak.
fn keep_large_allocations_apart() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tunable; called before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    #[cfg(target_env = "musl")]
    // SAFETY: sets options, before any thread.
    unsafe {
        mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay`, the same in
/// mimalloc 2 and 3 (include/mimalloc.h).
#[cfg(target_env = "musl")]
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
#[cfg(target_env = "musl")]
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

#[cfg(target_env = "musl")]
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

// musl's own malloc is slow under vmatrace's load (one lock; events
// allocated by the reader and freed by the printer and writer threads):
// the static build (`cargo xtask dist`) takes mimalloc instead. Measured
// with `cargo xtask bench --static`, figures in docs/overhead.md ("The
// static build").
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    keep_large_allocations_apart();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match vmatrace::generate::requested(&args) {
        Some(Ok(what)) => generate(what),
        Some(Err(usage)) => {
            eprintln!("vmatrace: {usage}");
            std::process::exit(exit_code::USAGE);
        }
        None => {}
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed.
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::OK
            });
        }
    };
    let result = match cli.command {
        None => trace(cli.live),
        Some(Command::Record(live)) if live.output.is_none() => {
            Err(Failure::usage(anyhow::anyhow!("record needs -o FILE")))
        }
        Some(Command::Record(live)) => trace(live),
        Some(Command::Replay(args)) => readback::replay(&args),
        Some(Command::Report(args)) => readback::report(&args),
        Some(Command::Export(args)) => readback::export(&args),
        Some(Command::Serve(args)) => vmatrace::host::serve::run(args),
        Some(Command::Top(args)) => vmatrace::host::top::run(args),
        Some(Command::Maps(args)) => vmatrace::host::maps::run(&args),
        Some(Command::ProbeReport(args)) => vmatrace::kernel::report::run(args.json, &args.btf),
    };
    match result {
        Ok(code) => std::process::exit(code),
        // A reader that closed the pipe (`| head`) wants no more: not an error.
        Err(failure) if is_broken_pipe(&failure.error) => std::process::exit(exit_code::OK),
        Err(failure) => {
            eprintln!("vmatrace: {failure}");
            std::process::exit(failure.code);
        }
    }
}

/// `--generate WHAT`: prints it and exits.
fn generate(what: vmatrace::generate::Generated) -> ! {
    let mut stdout = std::io::stdout().lock();
    let written = vmatrace::generate::generate(what, &mut stdout).and_then(|()| stdout.flush());
    match written {
        Ok(()) => std::process::exit(exit_code::OK),
        Err(e) => {
            eprintln!("vmatrace: writing the generated {what:?}: {e}");
            std::process::exit(exit_code::ENVIRONMENT)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn trace(live: LiveArgs) -> Result<i32, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::environment(anyhow::anyhow!(e).context("starting the runtime")))?;
    runtime.block_on(trace::run(live))
}
