//! What the kernel's verifier did to load vmatrace's programs: for each,
//! the instructions it processed and its own time, as the kernel reports
//! them at log level 4 (`BPF_LOG_STATS`). Loading the programs is most of
//! vmatrace's start, and the instruction count, unlike a time, does not
//! move with the machine's load: it is what tells whether a change made
//! the verifier's walk longer.
//!
//! aya keeps the verifier's log only when a load fails, so a small
//! preloaded library asks the kernel for the statistics of every
//! `BPF_PROG_LOAD` and prints them; it needs the glibc build (a static
//! binary ignores `LD_PRELOAD`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::workspace_root;

/// Wraps libc's `syscall()`, aya's way into `bpf()`: a program load without
/// a log of its own gets the statistics level and a buffer, and the
/// statistics go to stderr after the program's name.
const SHIM_SOURCE: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/bpf.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/syscall.h>

static char log_buf[1 << 16];

long syscall(long nr, ...) {
    static long (*real)(long, ...);
    long a[6];
    va_list ap;
    va_start(ap, nr);
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    union bpf_attr *attr = (union bpf_attr *)a[1];
    if (nr != SYS_bpf || a[0] != BPF_PROG_LOAD || attr->log_level != 0)
        return real(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    log_buf[0] = 0;
    attr->log_level = 4;
    attr->log_buf = (unsigned long)log_buf;
    attr->log_size = sizeof log_buf;
    long ret = real(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    fprintf(stderr, "xtask-verifier %s: %s\n", attr->prog_name, log_buf);
    attr->log_level = 0;
    attr->log_buf = 0;
    attr->log_size = 0;
    return ret;
}
"#;

/// One program's load.
pub struct ProgramLoad {
    /// As the kernel keeps it: the first 15 bytes of the name.
    pub name: String,
    pub insns_processed: u64,
    pub verification_us: u64,
}

/// The verifier's statistics for each program `vmatrace -q -- /bin/true`
/// loads (the default programs of this kernel), in load order.
pub fn program_loads(vmatrace: &Path) -> Result<Vec<ProgramLoad>> {
    let shim = build_shim()?;
    let output = Command::new(vmatrace)
        .args(["-q", "--", "/bin/true"])
        .env("LD_PRELOAD", &shim)
        .output()
        .with_context(|| format!("running {}", vmatrace.display()))?;
    if !output.status.success() {
        bail!(
            "{} -q -- /bin/true failed: {}",
            vmatrace.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let loads = parse_stats(&String::from_utf8_lossy(&output.stderr));
    if loads.is_empty() {
        bail!(
            "no verifier statistics from {} (a static build ignores LD_PRELOAD)",
            vmatrace.display()
        );
    }
    Ok(loads)
}

/// The loads with real programs in them; aya's feature probes (a few
/// instructions each) are left out.
fn parse_stats(stderr: &str) -> Vec<ProgramLoad> {
    const PROBE_INSNS: u64 = 16;
    let mut loads = Vec::new();
    let mut current: Option<ProgramLoad> = None;
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("xtask-verifier ") {
            loads.extend(current.take());
            let (name, rest) = rest.split_once(": ").unwrap_or((rest, ""));
            current = Some(ProgramLoad {
                name: name.to_string(),
                insns_processed: 0,
                verification_us: number_after(rest, "verification time ").unwrap_or(0),
            });
            continue;
        }
        let Some(load) = current.as_mut() else {
            continue;
        };
        if let Some(us) = number_after(line, "verification time ") {
            load.verification_us = us;
        }
        if let Some(insns) = number_after(line, "processed ") {
            load.insns_processed = insns;
        }
    }
    loads.extend(current);
    loads.retain(|load| load.insns_processed > PROBE_INSNS);
    loads
}

fn number_after(text: &str, label: &str) -> Option<u64> {
    let (_, rest) = text.split_once(label)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Compiles the preloaded library into target/xtask (again when this
/// file's source of it changed).
fn build_shim() -> Result<PathBuf> {
    let dir = workspace_root().join("target/xtask");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let source = dir.join("verifier_stats.c");
    let library = dir.join("verifier_stats.so");
    let unchanged = fs::read_to_string(&source).is_ok_and(|s| s == SHIM_SOURCE);
    if unchanged && library.exists() {
        return Ok(library);
    }
    fs::write(&source, SHIM_SOURCE).with_context(|| format!("writing {}", source.display()))?;
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .status()
        .context("running cc (Debian's gcc) for the verifier statistics")?;
    if !status.success() {
        bail!("cc could not build {}", library.display());
    }
    Ok(library)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_read_per_program_and_probes_left_out() {
        let stderr = "\
xtask-verifier aya_name_check: verification time 12 usec
stack depth 0
processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0

xtask-verifier raw_sys_exit_co: verification time 8384 usec
stack depth 88+0
processed 4368 insns (limit 1000000) max_states_per_insn 4 total_states 220 peak_states 192 mark_read 0

vmatrace: tracing /bin/true (pid 1); vm.max_map_count 65530
xtask-verifier raw_sys_enter_c: verification time 4690 usec
processed 1648 insns (limit 1000000) max_states_per_insn 3 total_states 95 peak_states 95 mark_read 0
";
        let loads = parse_stats(stderr);
        let got: Vec<(&str, u64, u64)> = loads
            .iter()
            .map(|l| (l.name.as_str(), l.insns_processed, l.verification_us))
            .collect();
        assert_eq!(
            got,
            [
                ("raw_sys_exit_co", 4368, 8384),
                ("raw_sys_enter_c", 1648, 4690)
            ]
        );
    }
}
