//! `vmatrace serve` scraped by a real Prometheus server (Debian's
//! `prometheus` package, installed here when missing), its cardinality cap
//! and its freshness, and `vmatrace top -a` on a pseudo-terminal and piped.
//! Needs root, like the other tests with real probes.

mod support;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Running, debian_package, maps_count, vmatrace_bin, workload_bin};

/// The tests that load probes for the whole host run one at a time: each
/// counts the others' processes otherwise.
static HOST_WIDE: Mutex<()> = Mutex::new(());

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET on loopback: the body.
fn http_get(port: u16, path: &str, accept: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| {
        // Keep the head for content-type checks.
        format!("{head}\r\n\r\n{body}")
    })
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `prometheus` from Debian's package, installed once (idempotent).
fn prometheus_bin() -> PathBuf {
    debian_package(
        "prometheus",
        &["/usr/bin/prometheus", "/usr/local/bin/prometheus"],
    )
}

/// A Prometheus server on loopback scraping `target` every second, with
/// the shipped alert rules at a threshold of `share` of the limit and no
/// wait (`for: 0s`).
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16, share: f64) -> Prometheus {
        let bin = prometheus_bin();
        let dir = tempfile::tempdir().unwrap();
        let shipped =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/vmatrace-alerts.yml");
        let rules = std::fs::read_to_string(&shipped).unwrap();
        assert!(rules.contains("process_memory_map_areas_limit > 0.9"));
        assert!(rules.contains("for: 5m"));
        let rules = rules
            .replace(
                "process_memory_map_areas_limit > 0.9",
                &format!("process_memory_map_areas_limit > {share}"),
            )
            .replace("for: 5m", "for: 0s");
        let rules_path = dir.path().join("rules.yml");
        std::fs::write(&rules_path, rules).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: vmatrace\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
            rules_path.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        let prometheus = Prometheus {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // Go answers an HTTP/1.0 request as HTTP/1.0.
        while http_get(port, "/-/ready", None)
            .is_none_or(|r| !r.lines().next().is_some_and(|l| l.contains(" 200")))
        {
            assert!(Instant::now() < deadline, "prometheus did not get ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    fn api(&self, path: &str) -> Value {
        let response = http_get(self.port, path, None).expect("prometheus answers");
        serde_json::from_str(body(&response)).unwrap_or(Value::Null)
    }

    /// The value of an instant query's single series, if there is one.
    fn query_one(&self, query: &str) -> Option<f64> {
        let result = self.api(&format!("/api/v1/query?query={}", percent_encode(query)));
        let series = result["data"]["result"].as_array()?;
        if series.len() != 1 {
            return None;
        }
        series[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `check` holds, or panics with what it saw last.
    fn wait_for<T: std::fmt::Debug>(&self, what: &str, mut check: impl FnMut(&Self) -> (bool, T)) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (ok, seen) = check(self);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last seen {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ends a process when dropped, also when an assertion fails first.
struct Reaped(Option<Running>);

impl Reaped {
    fn running(&mut self) -> &mut Running {
        self.0.as_mut().expect("running")
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").pid()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut running) = self.0.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

/// `vmatrace serve` on a free port, once it serves.
fn start_serve(extra: &[&str]) -> (Reaped, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["serve", "--listen", listen.as_str()];
    args.extend_from_slice(extra);
    let mut serve = Reaped(Some(Running::vmatrace(&args)));
    serve.running().wait_stderr("serving http://");
    (serve, port)
}

/// Stops vmatrace as an operator would (SIGTERM); it must exit 0.
fn stop(mut reaped: Reaped) {
    let mut running = reaped.0.take().expect("running");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(running.pid() as i32, libc::SIGTERM) };
    let status = running.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A workload holding `pages / 2` holes in one mapping: as many splits,
/// paused with its mappings held. Started (with `--wait`) before vmatrace,
/// so its start-up calls are not counted; released by `go`.
fn holding_workload(pages: usize) -> Reaped {
    let mut workload = Reaped(Some(Running::spawn(
        &workload_bin(),
        &["incident", &pages.to_string(), "--wait", "--pause"],
    )));
    workload.running().wait_stderr("ready pid=");
    workload
}

fn go(workload: &mut Reaped) -> u64 {
    let workload = workload.running();
    workload.send_line();
    let line = workload.wait_stderr("incident base=");
    workload.wait_stderr("paused pid=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("holes="))
        .and_then(|n| n.parse().ok())
        .expect("holes=N")
}

#[test]
fn prometheus_scrapes_counts_splits_and_fires_the_alert() {
    let _host = HOST_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    let mut workload = holding_workload(4000);
    let pid = workload.pid();
    let (serve, port) = start_serve(&["--max-series", "100"]);
    // Both formats, before Prometheus comes.
    let text = http_get(port, "/metrics", None).expect("metrics");
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    assert!(body(&text).contains("# TYPE vmatrace_splits_total counter"));
    let om = http_get(
        port,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .expect("metrics");
    assert!(om.contains("application/openmetrics-text"), "{om}");
    assert!(body(&om).ends_with("# EOF\n"));

    // 1% of the limit: the workload's ~2000 VMAs are above it.
    let limit = support::max_map_count() as f64;
    let share = 1000.0 / limit;
    let prometheus = Prometheus::start(port, share);
    let holes = go(&mut workload);
    assert!(holes >= 1900, "{holes}");
    let count = maps_count(pid) as f64;
    assert!(count > 1000.0, "{count}");

    prometheus.wait_for("the workload's count", |p| {
        let seen = p.query_one(&format!("process_memory_map_areas{{pid=\"{pid}\"}}"));
        (seen == Some(count), seen)
    });
    prometheus.wait_for("the workload's splits", |p| {
        let seen = p.query_one(&format!("vmatrace_splits_total{{pid=\"{pid}\"}}"));
        (seen == Some(holes as f64), seen)
    });
    assert_eq!(
        prometheus.query_one(&format!("process_memory_map_areas_limit{{pid=\"{pid}\"}}")),
        Some(limit)
    );
    assert_eq!(
        prometheus.query_one(&format!("vmatrace_peak_map_areas{{pid=\"{pid}\"}}")),
        Some(count)
    );
    prometheus.wait_for("the alert firing", |p| {
        let alerts = p.api("/api/v1/alerts");
        let firing = alerts["data"]["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "ProcessNearVmaLimit"
                    && a["labels"]["pid"] == pid.to_string().as_str()
                    && a["state"] == "firing"
            })
        });
        (firing, alerts["data"]["alerts"].as_array().map(|a| a.len()))
    });
    assert_eq!(
        prometheus.query_one("vmatrace_lost_events_total"),
        Some(0.0)
    );
    workload.running().send_line();
    stop(serve);
}

#[test]
fn enomem_at_the_limit_is_counted_with_its_cause() {
    let _host = HOST_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    // The whole incident: munmap fails with ENOMEM 3 times at the limit.
    let mut workload = Reaped(Some(Running::spawn(
        &workload_bin(),
        &["incident", "--wait", "--pause"],
    )));
    workload.running().wait_stderr("ready pid=");
    let pid = workload.pid();
    let (serve, port) = start_serve(&[]);
    workload.running().send_line();
    let line = workload.running().wait_stderr("incident base=");
    workload.running().wait_stderr("paused pid=");
    assert!(line.contains("enomem=3"), "{line}");
    let metrics = http_get(port, "/metrics", None).unwrap();
    let text = body(&metrics);
    let enomem = series_of(text, "vmatrace_enomem_total", pid);
    assert!(
        enomem
            .iter()
            .any(|l| l.contains("call=\"munmap\",cause=\"vma_limit\"") && l.ends_with("} 3")),
        "{text}"
    );
    let near = series_of(text, "vmatrace_near_limit_total", pid);
    assert!(near.iter().any(|l| l.ends_with("} 1")), "{text}");
    stop(serve);
}

/// The count exported is the kernel's whatever changed it (issue 21): a
/// process that cuts its mappings with mbind and userfaultfd and merges
/// them back by closing the userfaultfd (a syscall vmatrace does not
/// decode) is exported with /proc/PID/maps's count, its cuts as splits and
/// the close as a change outside a traced call.
#[test]
fn serve_follows_the_count_through_calls_outside_the_mapping_ones() {
    let _host = HOST_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    let mut workload = Reaped(Some(Running::spawn(
        &workload_bin(),
        &["outside", "300", "0", "--wait", "--pause"],
    )));
    workload.running().wait_stderr("ready pid=");
    let pid = workload.pid();
    let (serve, port) = start_serve(&[]);
    workload.running().send_line();
    let line = workload.running().wait_stderr("outside mbind=");
    workload.running().wait_stderr("paused pid=");
    let cuts = support::field(&line, "mbind")
        + support::field(&line, "registered")
        + support::field(&line, "named");
    let count = maps_count(pid);
    let value = |text: &str, metric: &str| -> Option<f64> {
        series_of(text, metric, pid)
            .first()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let started = std::time::Instant::now();
    let text = loop {
        let metrics = http_get(port, "/metrics", None).unwrap();
        let text = body(&metrics).to_string();
        if value(&text, "process_memory_map_areas") == Some(count as f64)
            || started.elapsed() > Duration::from_secs(20)
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        value(&text, "process_memory_map_areas"),
        Some(count as f64),
        "vs /proc/{pid}/maps: {text}"
    );
    assert_eq!(value(&text, "vmatrace_splits_total"), Some(cuts as f64));
    assert_eq!(
        value(&text, "vmatrace_changes_outside_calls_total"),
        Some(1.0),
        "{text}"
    );
    workload.running().send_line();
    stop(serve);
}

/// The lines of `metric`'s series for `pid` (whatever its other labels).
fn series_of<'a>(text: &'a str, metric: &str, pid: u32) -> Vec<&'a str> {
    let start = format!("{metric}{{pid=\"{pid}\",");
    text.lines().filter(|l| l.starts_with(&start)).collect()
}

/// The pids of `metric`'s series in a text exposition.
fn pids_of(text: &str, metric: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            let at = l.find("pid=\"")? + 5;
            let end = l[at..].find('"')?;
            Some(l[at..at + end].to_string())
        })
        .collect()
}

#[test]
fn many_processes_stay_within_max_series_and_leave_no_stale_series() {
    let _host = HOST_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    let (serve, port) = start_serve(&["--max-series", "20"]);
    // 300 processes alive at once, each with a few calls, then gone.
    struct Children(Vec<Child>);
    impl Drop for Children {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    let mut children = Children(
        (0..300)
            .map(|_| {
                Command::new(workload_bin())
                    .args(["mmap", "3", "--pause"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let pids: Vec<String> = children.0.iter().map(|c| c.id().to_string()).collect();
    std::thread::sleep(Duration::from_secs(2));
    let during = body(&http_get(port, "/metrics", None).unwrap()).to_string();
    for metric in [
        "process_memory_map_areas",
        "vmatrace_splits_total",
        "vmatrace_peak_map_areas",
        "vmatrace_calls_total",
    ] {
        let series = pids_of(&during, metric);
        assert!(series.len() <= 20, "{metric}: {} series", series.len());
    }
    let folded: f64 = during
        .lines()
        .find_map(|l| l.strip_prefix("vmatrace_folded_processes "))
        .and_then(|v| v.parse().ok())
        .expect("vmatrace_folded_processes");
    assert!(folded >= 280.0, "{folded}");
    assert!(during.contains("process_memory_map_areas{comm=\"other\"}"));
    for child in &mut children.0 {
        drop(child.stdin.take());
    }
    for child in &mut children.0 {
        let _ = child.wait();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let after = body(&http_get(port, "/metrics", None).unwrap()).to_string();
    let stale: Vec<String> = pids_of(&after, "process_memory_map_areas")
        .into_iter()
        .filter(|p| pids.contains(p))
        .collect();
    assert!(stale.is_empty(), "series of exited processes: {stale:?}");
    let folded_after: f64 = after
        .lines()
        .find_map(|l| l.strip_prefix("vmatrace_folded_processes "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(folded_after < folded - 250.0, "{folded_after} vs {folded}");
    stop(serve);
}

/// A new pseudo-terminal of 160x40 (as in tests/trace.rs).
fn open_pty() -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two new descriptors.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    (std::fs::File::from(master), slave)
}

/// Terminal output without its escape sequences.
fn strip_escapes(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn top_all_ranks_the_workload_first_on_a_terminal_and_piped() {
    let _host = HOST_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    // Hold far more VMAs than anything else here: 20,000.
    let mut workload = holding_workload(40_000);
    go(&mut workload);
    let pid = workload.pid();

    // Piped, JSON: the first process of each refresh.
    let out = Command::new(vmatrace_bin())
        .args(["top", "-a", "--json", "-i", "0.5", "-d", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["type"], "host_top");
        let first = &line["processes"][0];
        assert_eq!(first["pid"], pid, "{line}");
        assert_eq!(first["vmas"], maps_count(pid), "{line}");
        assert!(line["processes"].as_array().unwrap().len() <= 20);
    }

    // Piped, text: a table, the workload on its first row.
    let out = Command::new(vmatrace_bin())
        .args(["top", "-a", "-d", "0.5"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let first_row = text.lines().nth(2).unwrap_or_default();
    assert!(
        first_row.split_whitespace().next() == Some(pid.to_string().as_str()),
        "{text}"
    );

    // On a terminal: full screen, the workload first under the header.
    let (mut master, slave) = open_pty();
    let mut child = Command::new(vmatrace_bin())
        .args(["top", "-a", "-d", "2"])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        raw
    });
    let status = child.wait().unwrap();
    assert!(status.success());
    let raw = reader.join().unwrap();
    let shown = strip_escapes(&raw);
    assert!(
        String::from_utf8_lossy(&raw).contains("\x1b[?1049h"),
        "no alternate screen"
    );
    let after_header = shown.split_once("COUNT").expect("the header").1;
    let first_pid = after_header
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty());
    assert_eq!(first_pid, Some(pid.to_string().as_str()), "{shown}");
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `.../unified` on a
/// hybrid host).
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount")
}

/// A cgroup of its own, removed when dropped.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `--cgroup PATH` exports the processes in that cgroup, each series with
/// its `cgroup` label, and none outside it.
#[test]
fn cgroup_scope_exports_only_that_cgroup_with_its_label() {
    let _host = HOST_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("vmatrace-test-{}", std::process::id());
    let cgroup = TestCgroup(cgroup2_root().join(&name));
    std::fs::create_dir(&cgroup.0).unwrap();
    let mut inside = holding_workload(200);
    let mut outside = holding_workload(200);
    let pid_inside = inside.running().pid();
    std::fs::write(cgroup.0.join("cgroup.procs"), pid_inside.to_string()).unwrap();
    let path = format!("/{name}");
    let (serve, port) = start_serve(&["--cgroup", &path]);
    let holes = go(&mut inside);
    go(&mut outside);
    let pid_outside = outside.running().pid();
    let want = format!("vmatrace_splits_total{{pid=\"{pid_inside}\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = http_get(port, "/metrics", None).map(|r| body(&r).to_string());
        if let Some(text) = text.filter(|t| t.contains(&want)) {
            break text;
        }
        assert!(Instant::now() < deadline, "no series for {pid_inside}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let series = text
        .lines()
        .find(|l| l.starts_with(&want))
        .expect("the splits series");
    assert!(series.contains(&format!("cgroup=\"{path}\"")), "{series}");
    assert!(
        series.ends_with(&format!(" {holes}")),
        "{series} vs {holes} holes"
    );
    let pids = pids_of(&text, "process_memory_map_areas");
    assert_eq!(
        pids,
        vec![pid_inside.to_string()],
        "only the cgroup's process"
    );
    assert!(!text.contains(&format!("pid=\"{pid_outside}\"")));
    stop(serve);
    drop(inside);
    drop(outside);
}

/// The shipped ENOMEM alert fires on a process's first burst: its series
/// appears already above 0, which `increase()` alone does not count
/// (found in a field trial with Redis). Checked with Prometheus's own rule
/// tester.
#[test]
fn the_enomem_alert_fires_on_the_first_burst() {
    let prometheus = prometheus_bin();
    let promtool = prometheus.with_file_name("promtool");
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/vmatrace-alerts.yml");
    let dir = tempfile::tempdir().unwrap();
    let test = format!(
        r#"rule_files:
  - {}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'vmatrace_enomem_total{{pid="42",comm="redis-server",call="munmap",cause="vma_limit"}}'
        values: '_ _ _ 82 82 82 82 82 82 82'
    alert_rule_test:
      - eval_time: 2m
        alertname: ProcessHitVmaLimit
        exp_alerts: []
      - eval_time: 3m
        alertname: ProcessHitVmaLimit
        exp_alerts:
          - exp_labels:
              severity: critical
              pid: "42"
              comm: redis-server
              call: munmap
              cause: vma_limit
            exp_annotations:
              summary: "redis-server (pid 42) on : munmap failed with ENOMEM at the VMA limit"
              description: "A mapping call failed because the process reached vm.max_map_count."
      - eval_time: 9m
        alertname: ProcessHitVmaLimit
        exp_alerts: []
"#,
        shipped.display()
    );
    let test_path = dir.path().join("enomem_test.yml");
    std::fs::write(&test_path, test).unwrap();
    let out = Command::new(&promtool)
        .arg("test")
        .arg("rules")
        .arg(&test_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
