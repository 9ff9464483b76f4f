//! Running vmatrace and the test workloads as real processes.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The vmatrace under test: `$VMATRACE_BIN` when set (`cargo xtask test`
/// runs the core tests again with the static musl build, and the kernel
/// matrix runs that build in its guests), else the one cargo built beside
/// the tests.
pub fn vmatrace_bin() -> PathBuf {
    match std::env::var_os("VMATRACE_BIN") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "VMATRACE_BIN={} is no file", path.display());
            path
        }
        _ => PathBuf::from(env!("CARGO_BIN_EXE_vmatrace")),
    }
}

/// The `workload` example, which `cargo test` builds beside the tests.
pub fn workload_bin() -> PathBuf {
    example_bin("workload")
}

/// An example program, built by `cargo test` beside the tests.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let workload = profile_dir.join("examples").join(name);
    assert!(
        workload.exists(),
        "{} is missing: run the tests with plain `cargo test` (or `cargo xtask test`), \
         which builds the examples too",
        workload.display()
    );
    workload
}

/// The first of `paths` that exists, after installing Debian's `package`
/// if none does (tests run as root on Debian machines).
pub fn debian_package(package: &str, paths: &[&str]) -> PathBuf {
    let installed = || paths.iter().map(PathBuf::from).find(|p| p.exists());
    if let Some(path) = installed() {
        return path;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "-qq", "--no-install-recommends", package];
    if !apt(&install) {
        assert!(apt(&["update", "-qq"]), "apt-get update failed");
        assert!(apt(&install), "apt-get install {package} failed");
    }
    installed().unwrap_or_else(|| panic!("{package} installed but none of {paths:?} exists"))
}

pub fn max_map_count() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// VMAs in /proc/PID/maps, without the [vsyscall] gate area, which the
/// kernel lists there but does not count in mm->map_count.
pub fn maps_count(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| !l.ends_with("[vsyscall]"))
        .count() as u64
}

fn lines_of(reader: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running process whose stdout and stderr are read line by line.
pub struct Running {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    pub stdout_lines: Vec<String>,
    pub stderr_lines: Vec<String>,
}

impl Running {
    pub fn spawn(program: &PathBuf, args: &[&str]) -> Running {
        Running::spawn_with_env(program, args, &[])
    }

    pub fn spawn_with_env(program: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Running {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            stdout_lines: Vec::new(),
            stderr_lines: Vec::new(),
        }
    }

    pub fn vmatrace(args: &[&str]) -> Running {
        Running::spawn(&vmatrace_bin(), args)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            self.collect_stdout();
            match self.stderr.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    self.stderr_lines.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "stderr closed before {needle:?}; stderr so far:\n{}",
                    self.stderr_lines.join("\n")
                ),
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}; stderr:\n{}",
                self.stderr_lines.join("\n")
            );
        }
    }

    fn collect_stdout(&mut self) {
        while let Ok(line) = self.stdout.try_recv() {
            self.stdout_lines.push(line);
        }
    }

    /// Waits until a JSON event on stdout satisfies `pred`.
    pub fn wait_event(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = 0;
        loop {
            self.collect_stdout();
            for line in &self.stdout_lines[seen..] {
                if let Ok(value) = serde_json::from_str::<Value>(line)
                    && pred(&value)
                {
                    return value;
                }
            }
            seen = self.stdout_lines.len();
            assert!(Instant::now() < deadline, "timed out waiting for an event");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn send_line(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(b"\n").expect("writing to stdin");
        stdin.flush().unwrap();
    }

    /// Waits for the process to exit and collects everything it printed.
    pub fn finish(mut self) -> Finished {
        drop(self.stdin.take());
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "timed out waiting for exit; stderr:\n{}",
                    self.stderr_lines.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The readers end at EOF, once the process is gone.
        for line in self.stdout.iter() {
            self.stdout_lines.push(line);
        }
        for line in self.stderr.iter() {
            self.stderr_lines.push(line);
        }
        Finished {
            status,
            stdout: self.stdout_lines,
            stderr: self.stderr_lines,
        }
    }
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Finished {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.join("\n")
    }

    /// Every JSON line on stdout (all of them must parse).
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The event lines: not the summary, status lines or notices.
    pub fn events(&self) -> Vec<Value> {
        self.json()
            .into_iter()
            .filter(|v| {
                ["syscall", "exec", "fork", "exit", "change"]
                    .contains(&v["type"].as_str().unwrap_or(""))
            })
            .collect()
    }

    pub fn summary(&self) -> Value {
        let json = self.json();
        let last = json.last().cloned().expect("some output");
        assert_eq!(last["type"], "summary", "the summary is the last line");
        last
    }

    /// The summary's losses by cause, when the output has a JSON summary.
    pub fn lost_breakdown(&self) -> String {
        let last = self
            .stdout
            .last()
            .and_then(|l| serde_json::from_str::<Value>(l).ok());
        match last {
            Some(last) if last["type"] == "summary" => format!("lost: {}", last["lost"]),
            _ => String::new(),
        }
    }

    /// Asserts the trace ended with status 0 and lost nothing.
    pub fn assert_complete(&self) {
        assert_eq!(
            self.code(),
            0,
            "{}{}",
            self.stderr_text(),
            self.lost_breakdown()
        );
        self.assert_nothing_lost();
    }

    /// Asserts the run lost nothing, the fifth promise of every test.
    pub fn assert_nothing_lost(&self) {
        let summary = self.summary();
        assert_eq!(
            summary["lost_total"],
            0,
            "lost events: {}\n{}",
            summary["lost"],
            self.stderr_text()
        );
    }
}

/// Runs vmatrace as the unprivileged user nobody.
pub fn vmatrace_as_nobody(args: &[&str]) -> Finished {
    let bin = vmatrace_bin().display().to_string();
    let mut setpriv = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        bin.as_str(),
    ];
    setpriv.extend_from_slice(args);
    Running::spawn(&"setpriv".into(), &setpriv).finish()
}

/// Asserts every event has its delta exact (`"exact": true`).
pub fn assert_all_exact(events: &[Value]) {
    let inexact: Vec<&Value> = events.iter().filter(|e| e["exact"] == false).collect();
    assert!(
        inexact.is_empty(),
        "{} inexact, the first: {:?}",
        inexact.len(),
        inexact.first()
    );
}

pub fn is_marker(event: &Value) -> bool {
    event["call"] == "madvise" && event["args"]["addr"] == 0 && event["args"]["length"] == 0
}

pub fn has_flag(event: &Value, flag: &str) -> bool {
    event["flags"]
        .as_array()
        .is_some_and(|flags| flags.iter().any(|f| f == flag))
}

/// The function names of an event's stack, innermost first (panics if
/// the event has no stack).
pub fn stack_functions(event: &Value) -> Vec<&str> {
    event["stack"]["frames"]
        .as_array()
        .unwrap_or_else(|| panic!("no stack: {event}"))
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect()
}

/// Parses `key=value` pairs out of a workload's report line.
pub fn field(line: &str, key: &str) -> i64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}
