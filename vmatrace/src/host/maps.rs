//! `vmatrace maps`: what holds a process's VMAs, from a live process's
//! /proc files or from a saved maps or smaps file. No probe is loaded: a
//! user may explain their own processes without root.
//!
//! Reading /proc/PID/maps (and smaps, numa_maps) takes the process's mmap
//! lock for reading, as `pmap` and `cat` do: the process's own mapping
//! calls wait while the kernel writes each page of the text.

use std::{
    collections::HashMap,
    io::{Read, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, anyhow};
use clap::{ArgGroup, Args};

use crate::{
    error::{Failure, exit_code},
    kernel::max_map_count,
    model::{
        anatomy::{self, Anatomy, LiveFacts},
        maps_file,
        snapshot::{ProcessInfo, maps_snapshot_count},
    },
    output,
};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["pid", "file"])))]
pub struct MapsArgs {
    /// The live process to explain (root, or the process's own user).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: Option<u32>,
    /// A saved /proc/PID/maps or /proc/PID/smaps, as attached to a ticket
    /// (`-` reads standard input).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Example lines shown per group.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub examples: usize,
    /// The limit to measure against (default: this machine's
    /// vm.max_map_count; a saved file may come from another).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

/// Runs `vmatrace maps`.
pub fn run(args: &MapsArgs) -> Result<i32, Failure> {
    let limit = match args.limit {
        Some(0) => return Err(Failure::usage(anyhow!("--limit must be above 0"))),
        Some(limit) => limit,
        None => max_map_count()?,
    };
    let (whose, anatomy) = match (args.pid, &args.file) {
        (Some(pid), _) => {
            let anatomy = live(pid, limit, args.examples)?;
            (format!("pid {pid} ({})", comm(pid)), anatomy)
        }
        (None, Some(file)) => {
            let text = read_saved(file)?;
            let vmas = maps_file::parse(&text).map_err(|e| Failure {
                code: exit_code::NOT_A_TRACE,
                error: anyhow!(e)
                    .context(format!("{} is not a maps or smaps file", file.display())),
            })?;
            if vmas.is_empty() {
                return Err(Failure {
                    code: exit_code::NOT_A_TRACE,
                    error: anyhow!("{} holds no mapping", file.display()),
                });
            }
            let anatomy = anatomy::classify(&vmas, &text, None, limit, args.examples);
            (file.display().to_string(), anatomy)
        }
        (None, None) => return Err(Failure::usage(anyhow!("maps needs -p PID or a FILE"))),
    };
    let text = if args.json {
        let mut value = serde_json::to_value(&anatomy).context("the anatomy as JSON")?;
        value["type"] = "maps".into();
        value["source"] = whose.clone().into();
        if let Some(pid) = args.pid {
            value["pid"] = pid.into();
        }
        format!("{value}\n")
    } else {
        output::anatomy::full(&whose, &anatomy)
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("writing the anatomy")?;
    Ok(exit_code::OK)
}

/// The anatomy of a live process, with its threads' stacks; smaps and
/// numa_maps are read only when maps alone cannot say why adjacent
/// pieces stayed apart (both cost the kernel more than maps).
pub fn live(pid: u32, limit: u64, examples: usize) -> Result<Anatomy, Failure> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let text = read_proc(pid, &proc.join("maps"))?;
    if text.is_empty() {
        return Err(Failure::usage(anyhow!(
            "pid {pid} ({}) has no address space: a kernel thread",
            comm(pid)
        )));
    }
    let facts = live_facts(&proc);
    let mut vmas = maps_file::parse(&text)
        .map_err(|e| Failure::environment(anyhow!(e).context("reading the kernel's maps")))?;
    let anatomy = anatomy::classify(&vmas, &text, Some(&facts), limit, examples);
    if !anatomy.merge_blockers.contains_key("unknown") {
        return Ok(anatomy);
    }
    if let Ok(smaps) = std::fs::File::open(proc.join("smaps")) {
        maps_file::add_flags(&mut vmas, std::io::BufReader::new(smaps));
    }
    let facts = LiveFacts {
        policies: numa_policies(&proc),
        ..facts
    };
    Ok(anatomy::classify(
        &vmas,
        &text,
        Some(&facts),
        limit,
        examples,
    ))
}

/// A process holding more than this share of the limit when a trace
/// attaches gets its anatomy said at once.
const ATTACH_NOTE_SHARE: u64 = 4;

/// `pid 10993 (holder) already holds 30022 VMAs (45.8% of the limit):
/// holes 29999 (45.8%), ...`, for a process that holds more than a
/// quarter of the limit, from the snapshot read at attach.
pub fn note_at_attach(snapshot: &ProcessInfo, limit: u64) -> Option<String> {
    let count = maps_snapshot_count(&snapshot.maps);
    if count * ATTACH_NOTE_SHARE <= limit {
        return None;
    }
    let vmas = maps_file::parse(&snapshot.maps).ok()?;
    let facts = live_facts(&PathBuf::from(format!("/proc/{}", snapshot.pid)));
    let anatomy = anatomy::classify(&vmas, &snapshot.maps, Some(&facts), limit, 0);
    Some(format!(
        "pid {} ({}) already holds {} VMAs ({:.1}% of the limit): {}; \
         `vmatrace maps -p {}` explains them",
        snapshot.pid,
        comm(snapshot.pid),
        anatomy.vmas,
        anatomy::percent(anatomy.vmas, limit),
        output::anatomy::brief(&anatomy, 4),
        snapshot.pid
    ))
}

/// The notes of `note_at_attach` for every process on the host that holds
/// more than a quarter of the limit (`-a`: a process at risk may make no
/// call while traced). Each process's maps is read once to count it, as
/// `top -a` seeds its counts.
pub fn notes_for_host(limit: u64) -> Vec<String> {
    let mut buf = Vec::new();
    let me = std::process::id();
    let mut notes = Vec::new();
    for pid in super::seed::all_pids() {
        let count = super::seed::maps_count(pid, &mut buf).unwrap_or(0);
        if pid == me || (count.max(0) as u64) * ATTACH_NOTE_SHARE <= limit {
            continue;
        }
        let snapshot = crate::model::snapshot::snapshot_process(pid, 0);
        notes.extend(note_at_attach(&snapshot, limit));
    }
    notes
}

fn read_proc(pid: u32, path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Failure::usage(anyhow!("no process {pid}")),
        std::io::ErrorKind::PermissionDenied => Failure::environment(anyhow!(
            "reading {}: permission denied (run as root or as the process's user)",
            path.display()
        )),
        _ => Failure::environment(anyhow!(e).context(format!("reading {}", path.display()))),
    })
}

fn read_saved(file: &Path) -> Result<String, Failure> {
    let unreadable = |e: std::io::Error| Failure {
        code: exit_code::UNREADABLE,
        error: anyhow!(e).context(format!("reading {}", file.display())),
    };
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
    } else {
        bytes = std::fs::read(file).map_err(unreadable)?;
    }
    String::from_utf8(bytes).map_err(|e| Failure {
        code: exit_code::NOT_A_TRACE,
        error: anyhow!(
            "{} is not a maps or smaps file: not text (byte {})",
            file.display(),
            e.utf8_error().valid_up_to()
        ),
    })
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The threads besides the main one, and the stack pointers of those
/// blocked in the kernel (`/proc/PID/task/TID/syscall` ends with the
/// user stack pointer and program counter; a running thread says
/// `running`).
fn live_facts(proc: &Path) -> LiveFacts {
    let mut facts = LiveFacts::default();
    let main = proc.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Ok(tasks) = std::fs::read_dir(proc.join("task")) else {
        return facts;
    };
    for task in tasks.flatten() {
        if task.file_name().to_str() == Some(main) || is_io_worker(&task.path()) {
            continue;
        }
        facts.threads += 1;
        // A thread caught running may be blocked a moment later.
        let sp = (0..SP_READS).find_map(|attempt| {
            if attempt > 0 {
                std::thread::yield_now();
            }
            let syscall = std::fs::read_to_string(task.path().join("syscall")).ok()?;
            stack_pointer(&syscall)
        });
        facts.thread_sps.extend(sp);
    }
    facts
}

/// io_uring's workers share the address space but run in the kernel, on
/// no user stack.
fn is_io_worker(task: &Path) -> bool {
    std::fs::read_to_string(task.join("comm"))
        .is_ok_and(|comm| comm.starts_with("iou-wrk-") || comm.starts_with("iou-sqp-"))
}

/// Reads of a thread's `syscall` file before it counts as running.
const SP_READS: usize = 3;

fn stack_pointer(syscall: &str) -> Option<u64> {
    let fields: Vec<&str> = syscall.split_whitespace().collect();
    if fields.len() < 3 {
        return None;
    }
    let sp = fields[fields.len() - 2].strip_prefix("0x")?;
    u64::from_str_radix(sp, 16).ok()
}

/// Each VMA's NUMA policy, by its start (`default`, `bind:0`, ...).
fn numa_policies(proc: &Path) -> HashMap<u64, String> {
    let text = std::fs::read_to_string(proc.join("numa_maps")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let start = u64::from_str_radix(fields.next()?, 16).ok()?;
            Some((start, fields.next()?.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_threads_stack_pointer_is_read() {
        let blocked = "202 0x7f0c 0x80 0x2 0x0 0x0 0x0 0x7f0b2a7fdc40 0x7f0b2c8a1e2e\n";
        assert_eq!(stack_pointer(blocked), Some(0x7f0b2a7fdc40));
        assert_eq!(stack_pointer("running\n"), None);
        assert_eq!(
            stack_pointer("-1 0x7ffd1e6c5f00 0x401000\n"),
            Some(0x7ffd1e6c5f00)
        );
    }

    #[test]
    fn this_process_is_explained_live() {
        let me = std::process::id();
        let anatomy = live(me, 65530, 1).unwrap();
        assert_eq!(
            anatomy.groups.iter().map(|g| g.vmas).sum::<u64>(),
            anatomy.vmas
        );
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let counted = crate::model::snapshot::maps_snapshot_count(&maps);
        // The test harness's threads map and unmap as it runs.
        assert!(
            anatomy.vmas.abs_diff(counted) < 50,
            "{} vs {counted}",
            anatomy.vmas
        );
    }
}
