//! The processes to trace: checking pids given with `-p`, and starting a
//! command held at the door until its pid is in the kernel's target set.

use std::{
    ffi::OsString,
    io::{Read, Write},
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Child, Command, ExitStatus},
};

use anyhow::{Context, anyhow};
use procfs::process::{MMapPath, Process};

use crate::error::Failure;

/// A running process vmatrace is about to trace.
#[derive(Clone, Debug)]
pub struct TargetInfo {
    pub pid: u32,
    pub comm: String,
    /// VMAs in /proc/PID/maps (without the gate area, see [`maps_count`]).
    pub count: Option<u64>,
}

/// Whether the process has more than one thread (false if it is gone).
pub fn has_threads(pid: u32) -> bool {
    Process::new(pid as i32)
        .and_then(|process| process.status())
        .is_ok_and(|status| status.threads > 1)
}

/// Checks that `pid` names a live user process and reads its state.
pub fn inspect_pid(pid: i32) -> Result<TargetInfo, Failure> {
    if pid <= 0 {
        return Err(Failure::usage(anyhow!(
            "invalid pid {pid}: pids are positive"
        )));
    }
    let process =
        Process::new(pid).map_err(|_| Failure::usage(anyhow!("no such process: {pid}")))?;
    let status = process
        .status()
        .map_err(|_| Failure::usage(anyhow!("no such process: {pid} (it exited)")))?;
    if status.tgid != pid {
        return Err(Failure::usage(anyhow!(
            "{pid} is a thread of process {}: trace the process with -p {}",
            status.tgid,
            status.tgid
        )));
    }
    let count = maps_count(pid as u32).map_err(Failure::usage)?;
    if count == 0 {
        return Err(Failure::usage(anyhow!(
            "{pid} ({}) is a kernel thread: it has no address space to trace",
            status.name
        )));
    }
    Ok(TargetInfo {
        pid: pid as u32,
        comm: status.name,
        count: Some(count),
    })
}

/// The number of VMAs in `/proc/PID/maps`, as the kernel counts them in
/// `mm->map_count`: the `[vsyscall]` gate area is listed there but is not a
/// VMA of the process, so it is left out.
pub fn maps_count(pid: u32) -> anyhow::Result<u64> {
    let maps = Process::new(pid as i32)
        .and_then(|p| p.maps())
        .with_context(|| format!("reading /proc/{pid}/maps"))?;
    Ok(maps
        .iter()
        .filter(|m| m.pathname != MMapPath::Vsyscall)
        .count() as u64)
}

pub fn is_alive(pid: u32) -> bool {
    // Signal 0 checks existence; a zombie still exists but has no mm.
    // SAFETY: kill with signal 0 sends nothing.
    let exists = unsafe { libc::kill(pid as i32, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map(|s| s.state == 'Z' || s.state == 'X')
        .unwrap_or(true)
}

/// A command started by vmatrace, stopped before `exec` until released.
/// Dropped unreleased (vmatrace failed before it could trace), it is
/// killed: it never runs untraced.
pub struct Gated {
    pub pid: u32,
    release: Option<std::fs::File>,
    spawned: Option<std::thread::JoinHandle<std::io::Result<Child>>>,
}

impl Drop for Gated {
    fn drop(&mut self) {
        if self.release.is_none() {
            return;
        }
        // SAFETY: the pid is our own child, not yet reaped (its spawning
        // thread holds it until exec, which it has not been let to do).
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        drop(self.release.take());
        if let Some(spawned) = self.spawned.take() {
            let _ = spawned.join();
        }
    }
}

impl Gated {
    /// Forks `argv`; the child reports its pid and waits for
    /// [`Gated::release`] before it execs, so not one of its calls is missed.
    pub fn spawn(argv: &[OsString]) -> Result<Gated, Failure> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Failure::usage(anyhow!("no command given after --")))?;
        let (pid_read, pid_write) = pipe().map_err(Failure::environment)?;
        let (gate_read, gate_write) = pipe().map_err(Failure::environment)?;
        let mut command = Command::new(program);
        command.args(args);
        let pid_fd = pid_write.as_raw_fd();
        let gate_fd = gate_read.as_raw_fd();
        // SAFETY: the closure only calls async-signal-safe functions
        // (getpid, write, read, close) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let pid = libc::getpid().to_ne_bytes();
                libc::write(pid_fd, pid.as_ptr().cast(), pid.len());
                let mut byte = 0u8;
                // EOF (vmatrace died) or a byte both let the child go on;
                // nothing is traced then, and vmatrace is gone anyway.
                loop {
                    let n = libc::read(gate_fd, (&mut byte as *mut u8).cast(), 1);
                    if n >= 0 || *libc::__errno_location() != libc::EINTR {
                        break;
                    }
                }
                libc::close(gate_fd);
                libc::close(pid_fd);
                Ok(())
            });
        }
        let program_name = program.to_string_lossy().into_owned();
        // spawn() returns only once the child has exec'd, which it does only
        // after release: spawn in a thread and learn the pid from the pipe.
        // The child's pipe ends stay open in that thread until spawn()
        // returns, so the fork always inherits them; if the fork fails,
        // closing them turns the pid read below into an EOF.
        let spawned = std::thread::spawn(move || {
            let child = command.spawn();
            drop((pid_write, gate_read));
            child
        });
        let mut pid_bytes = [0u8; 4];
        let mut pid_read = pid_read;
        if pid_read.read_exact(&mut pid_bytes).is_err() {
            let error = match spawned.join() {
                Ok(Err(e)) => anyhow!(e),
                _ => anyhow!("the child exited before reporting its pid"),
            };
            return Err(Failure::usage(
                error.context(format!("cannot start {program_name}")),
            ));
        }
        Ok(Gated {
            pid: i32::from_ne_bytes(pid_bytes) as u32,
            release: Some(gate_write),
            spawned: Some(spawned),
        })
    }

    /// Lets the child exec. Returns it once exec succeeded.
    pub fn release(mut self) -> Result<Child, Failure> {
        if let Some(mut gate) = self.release.take() {
            let _ = gate.write_all(&[1]);
        }
        let spawned = self.spawned.take().expect("released once");
        match spawned.join() {
            Ok(Ok(child)) => Ok(child),
            Ok(Err(e)) => Err(Failure::usage(anyhow!(e).context("cannot run the command"))),
            Err(_) => Err(Failure::environment(anyhow!(
                "the spawning thread panicked"
            ))),
        }
    }
}

fn pipe() -> anyhow::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints; O_CLOEXEC keeps the ends
    // out of the exec'd command.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(anyhow!(std::io::Error::last_os_error()).context("pipe2"));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

/// The exit code a shell would report for `status`.
pub fn shell_exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_maps_are_counted_without_the_gate_area() {
        let count = maps_count(std::process::id()).expect("own maps");
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let lines = text.lines().filter(|l| !l.ends_with("[vsyscall]")).count() as u64;
        // The reads are not atomic together; this process is quiet enough.
        assert!(count.abs_diff(lines) <= 2, "{count} vs {lines}");
    }

    #[test]
    fn bad_pids_are_usage_errors() {
        assert_eq!(inspect_pid(0).unwrap_err().code, 2);
        assert_eq!(inspect_pid(-5).unwrap_err().code, 2);
        assert_eq!(inspect_pid(i32::MAX).unwrap_err().code, 2);
        // A kernel thread (kthreadd) has no address space.
        let err = inspect_pid(2).unwrap_err();
        assert!(err.to_string().contains("kernel thread"), "{err}");
    }

    #[test]
    fn gated_command_waits_for_release() {
        let gated = Gated::spawn(&["true".into()]).expect("spawn");
        assert!(is_alive(gated.pid), "held before exec");
        let mut child = gated.release().expect("release");
        assert!(child.wait().unwrap().success());
        let held = Gated::spawn(&["/nonexistent/cmd".into()]).expect("fork works");
        let err = held.release().expect_err("exec fails");
        assert_eq!(err.code, 2);
        assert!(format!("{err}").contains("No such file"), "{err}");
    }
}
