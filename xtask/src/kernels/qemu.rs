//! Booting a prepared kernel under QEMU (TCG) with the host's root shared
//! through virtiofs, and collecting what the command inside printed.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};

use super::Kernel;

const QEMU: &str = "qemu-system-x86_64";
/// QEMU's own virtiofsd (Debian 12's qemu-system-x86 ships it). It has no
/// read-only mode, so it is given a read-only bind mount of `/` made in a
/// mount namespace of its own: the host's mount table never changes.
const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";

/// How a guest is run.
#[derive(Clone, Debug)]
pub struct Guest {
    /// vCPUs. Under TCG each is a host thread; this machine has 2 cores.
    pub smp: u32,
    pub memory_mib: u32,
    /// Wall-clock limit for boot + command; QEMU is killed past it.
    pub timeout: Duration,
    /// Wall-clock limit for reaching the command: a kernel that hangs
    /// while booting is killed then, not at `timeout`.
    pub boot_timeout: Duration,
    /// Where the command starts (a host path: the guest sees the host's
    /// root).
    pub cwd: PathBuf,
    /// A host directory the guest may write to, mounted at the same path
    /// (the rest of the guest's root is the host's read-only with a tmpfs
    /// overlay, whose writes vanish at power-off). For large outputs.
    pub share_rw: Option<PathBuf>,
}

impl Guest {
    pub fn new(smp: u32) -> Guest {
        Guest {
            smp,
            memory_mib: 2048,
            timeout: Duration::from_secs(600),
            boot_timeout: Duration::from_secs(120),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            share_rw: None,
        }
    }
}

/// What a guest run left.
#[derive(Clone, Debug)]
pub struct GuestOutput {
    /// The command's stdout and stderr, interleaved as written.
    pub output: String,
    /// The kernel's console (serial port 0): boot messages, oopses.
    pub console: String,
    /// The command's exit status; `None` if it never finished (a boot
    /// failure, a panic or the time-out).
    pub status: Option<i32>,
    /// Guest uptime when the command started: the boot time.
    pub boot_seconds: Option<f64>,
    /// Guest uptime from the command's start to its end.
    pub command_seconds: Option<f64>,
    /// Host wall-clock time of the whole run, QEMU start to exit.
    pub wall: Duration,
    /// The run's directory (script, logs).
    pub run_dir: PathBuf,
}

impl GuestOutput {
    pub fn summary(&self, kernel: &Kernel, guest: &Guest) -> String {
        let seconds = |s: Option<f64>| s.map_or("?".into(), |s| format!("{s:.1} s"));
        format!(
            "{} = {} ({}), {} vCPU: boot {}, command {}, wall {:.1} s, status {} (logs in {})",
            kernel.name,
            kernel.release,
            kernel.suite,
            guest.smp,
            seconds(self.boot_seconds),
            seconds(self.command_seconds),
            self.wall.as_secs_f64(),
            self.status.map_or("none".into(), |s| s.to_string()),
            self.run_dir.display(),
        )
    }
}

/// Installs QEMU from Debian when it is missing (idempotent: a present
/// QEMU costs two stat calls).
pub fn ensure_installed() -> Result<()> {
    if Path::new(VIRTIOFSD).is_file() && which(QEMU) {
        return Ok(());
    }
    eprintln!("xtask: installing qemu-system-x86 (QEMU and virtiofsd) from Debian");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .arg("qemu-system-x86")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !install()?.success() {
        // A fresh machine may have no package lists yet.
        Command::new("apt-get").args(["update", "-q"]).status()?;
        if !install()?.success() {
            bail!("apt-get install qemu-system-x86 failed");
        }
    }
    Ok(())
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

pub fn run(kernel: &Kernel, guest: &Guest, command: &[&str], runs: &Path) -> Result<GuestOutput> {
    let run_dir = new_run_dir(runs)?;
    let script = run_dir.join("command.sh");
    fs::write(&script, command_script(guest, command))?;
    for path in [&script, &run_dir].into_iter().chain(&guest.share_rw) {
        if path.to_string_lossy().contains(char::is_whitespace) {
            bail!(
                "{} has white space: it cannot go on the kernel command line",
                path.display()
            );
        }
    }

    let root_mount = runs.join("root-ro");
    fs::create_dir_all(&root_mount)?;
    let mut daemons = vec![Daemon::virtiofsd(
        &run_dir.join("root.sock"),
        &root_mount,
        true,
        &run_dir.join("virtiofsd-root.log"),
    )?];
    if let Some(share) = &guest.share_rw {
        daemons.push(Daemon::virtiofsd(
            &run_dir.join("rw.sock"),
            share,
            false,
            &run_dir.join("virtiofsd-rw.log"),
        )?);
    }

    let start = Instant::now();
    let mut qemu = qemu_command(kernel, guest, &run_dir, &script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(run_dir.join("qemu.log"))?)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let output_log = run_dir.join("output.log");
    let booted = || read_lossy(&output_log).contains("<<guest-booted");
    let finished = wait_with_timeout(&mut qemu, guest.timeout, guest.boot_timeout, booted)?;
    let wall = start.elapsed();
    for daemon in &mut daemons {
        daemon.stop();
    }
    if !finished {
        eprintln!("xtask: the guest ran past {:?}; killed", guest.timeout);
    }

    let console = read_lossy(&run_dir.join("console.log"));
    let raw = read_lossy(&run_dir.join("output.log"));
    if !raw.contains("<<guest-booted") {
        let qemu_log = read_lossy(&run_dir.join("qemu.log"));
        bail!(
            "the guest never reached its command ({}).\nqemu: {qemu_log}\nconsole (last lines):\n{}",
            kernel.release,
            tail(&console, 30)
        );
    }
    Ok(parse_output(&raw, console, wall, run_dir))
}

/// The script the guest's init runs with `sh`: the command in the right
/// directory with a root's environment. Every argument is quoted, so
/// `-- sh -c '...'` is how a shell command line is passed.
fn command_script(guest: &Guest, command: &[&str]) -> String {
    let mut script = String::from(
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n",
    );
    let _ = writeln!(
        script,
        "cd {} || exit 125",
        quote(&guest.cwd.to_string_lossy())
    );
    let words: Vec<String> = command.iter().map(|w| quote(w)).collect();
    let _ = writeln!(script, "exec {}", words.join(" "));
    script
}

fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn qemu_command(kernel: &Kernel, guest: &Guest, run_dir: &Path, script: &Path) -> Command {
    let mut append = format!(
        // oops=panic: a guest whose kernel oopsed is done for; with panic=-1
        // and -no-reboot it powers off at once instead of hanging until the
        // time-out.
        "console=ttyS0 panic=-1 oops=panic loglevel=4 guest.script={}",
        script.display()
    );
    if let Some(share) = &guest.share_rw {
        append.push_str(&format!(" guest.rw={}", share.display()));
    }
    // For diagnosing a guest: more kernel parameters (`loglevel=8`...).
    if let Ok(extra) = std::env::var("VMATRACE_KERNEL_APPEND") {
        append.push(' ');
        append.push_str(&extra);
    }
    let memory = guest.memory_mib;
    // The emulated CPU model; `max` unless VMATRACE_QEMU_CPU says otherwise.
    let cpu = std::env::var("VMATRACE_QEMU_CPU").unwrap_or_else(|_| "max".into());
    let mut qemu = Command::new(QEMU);
    qemu.args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-accel", "tcg", "-cpu", &cpu, "-no-reboot"])
        .args(["-m", &format!("{memory}M"), "-smp", &guest.smp.to_string()])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&kernel.initramfs)
        .args(["-append", &append])
        // ttyS0: the kernel's console; ttyS1: the command's output.
        .arg("-chardev")
        .arg(format!(
            "file,id=console,path={}",
            run_dir.join("console.log").display()
        ))
        .args(["-serial", "chardev:console"])
        .arg("-chardev")
        .arg(format!(
            "file,id=output,path={}",
            run_dir.join("output.log").display()
        ))
        .args(["-serial", "chardev:output"])
        // vhost-user devices need the guest's memory shared with virtiofsd.
        .arg("-object")
        .arg(format!(
            "memory-backend-memfd,id=mem,size={memory}M,share=on"
        ))
        .args(["-numa", "node,memdev=mem"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=root,path={}",
            run_dir.join("root.sock").display()
        ))
        .args(["-device", "vhost-user-fs-pci,chardev=root,tag=hostroot"]);
    if guest.share_rw.is_some() {
        qemu.arg("-chardev")
            .arg(format!(
                "socket,id=rw,path={}",
                run_dir.join("rw.sock").display()
            ))
            .args(["-device", "vhost-user-fs-pci,chardev=rw,tag=hostrw"]);
    }
    qemu
}

/// A virtiofsd serving one directory to one guest (it exits when the guest
/// disconnects; `stop` makes sure).
struct Daemon {
    child: Child,
}

impl Daemon {
    fn virtiofsd(socket: &Path, source: &Path, read_only: bool, log: &Path) -> Result<Daemon> {
        let log_path = log.to_path_buf();
        let _ = fs::remove_file(socket);
        let serve = format!("exec {VIRTIOFSD} --socket-path=\"$1\" -o source=\"$2\" -o cache=auto");
        let script = if read_only {
            // $2 is an empty directory: / is bound there read-only.
            format!("mount --bind / \"$2\" && mount -o remount,bind,ro \"$2\" && {serve}")
        } else {
            serve
        };
        let log = fs::File::create(log)?;
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .arg(socket)
            .arg(source)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting virtiofsd under unshare")?;
        let mut daemon = Daemon { child };
        // QEMU connects at start-up: the socket must be there first.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline || daemon.child.try_wait()?.is_some() {
                daemon.stop();
                bail!("virtiofsd did not start: {}", read_lossy(&log_path));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    fn stop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// True if the child exited in time; otherwise it is killed, at `timeout`
/// or at `boot_timeout` if `booted` is not true by then.
fn wait_with_timeout(
    child: &mut Child,
    timeout: Duration,
    boot_timeout: Duration,
    booted: impl Fn() -> bool,
) -> Result<bool> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut boot_deadline = Some(start + boot_timeout);
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if let Some(at) = boot_deadline {
            if booted() {
                boot_deadline = None;
            } else if Instant::now() > at {
                eprintln!("xtask: the guest did not reach its command in {boot_timeout:?}");
                let _ = child.kill();
                let _ = child.wait();
                return Ok(false);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn new_run_dir(runs: &Path) -> Result<PathBuf> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let dir = runs.join(format!("{stamp}-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Splits ttyS1's text at the markers `/init` writes around the command.
fn parse_output(raw: &str, console: String, wall: Duration, run_dir: PathBuf) -> GuestOutput {
    let marker_value = |line: &str, prefix: &str| -> Vec<String> {
        line.trim()
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(">>"))
            .map(|rest| rest.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (booted_line, rest) = raw
        .split_once("<<guest-booted")
        .map(|(_, rest)| rest.split_once('\n').unwrap_or((rest, "")))
        .unwrap_or(("", raw));
    let booted: Option<f64> =
        marker_value(&format!("<<guest-booted{booted_line}"), "<<guest-booted")
            .first()
            .and_then(|v| v.parse().ok());
    let (output, status, ended) = match rest.rfind("<<guest-exit-status ") {
        Some(at) => {
            let values = marker_value(
                rest[at..].lines().next().unwrap_or(""),
                "<<guest-exit-status",
            );
            let output = rest[..at].strip_suffix('\n').unwrap_or(&rest[..at]);
            (
                output.to_string(),
                values.first().and_then(|v| v.parse().ok()),
                values.get(1).and_then(|v| v.parse::<f64>().ok()),
            )
        }
        None => (rest.to_string(), None, None),
    };
    GuestOutput {
        output,
        console,
        status,
        boot_seconds: booted,
        command_seconds: booted.zip(ended).map(|(b, e)| e - b),
        wall,
        run_dir,
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
