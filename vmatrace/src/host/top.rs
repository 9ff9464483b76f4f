//! `vmatrace top -a` (or `-p PID...`): every process ranked by risk, from
//! the kernel's per-process counters: the count against the limit, its
//! peak, growth and time to the limit, splits per second, ENOMEMs, the
//! allocator, and a sparkline of the count. Full screen on a terminal
//! (q quits; s, or the keys 1-7, change the sort), a text table per
//! refresh when piped, JSON lines with `--json`.

use std::{
    collections::HashMap,
    io::{self, IsTerminal, Write},
    time::{Duration, Instant},
};

use anyhow::anyhow;
use clap::{Args, ValueEnum};
use ratatui::{
    crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Cell, Paragraph, Row as TableRow, Table, TableState},
};
use serde_json::json;

use super::collector::{Collector, CollectorConfig, Row, Scope};
use crate::{
    error::{Failure, exit_code},
    kernel::probes::{CountModeChoice, require_privileges},
    model::{allocator, anatomy::Anatomy},
};

/// How the processes are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// ENOMEMs at the VMA limit first, then count (or peak) against the
    /// limit, raised by a time to the limit under an hour.
    Risk,
    Vmas,
    Peak,
    Growth,
    /// Soonest at the limit first.
    Eta,
    Splits,
    Enomem,
}

impl SortKey {
    /// The name `--sort` takes.
    fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_string())
    }
}

const SORT_KEYS: [SortKey; 7] = [
    SortKey::Risk,
    SortKey::Vmas,
    SortKey::Peak,
    SortKey::Growth,
    SortKey::Eta,
    SortKey::Splits,
    SortKey::Enomem,
];

/// Options of `vmatrace top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Every process on the host.
    #[arg(short = 'a', long = "all", conflicts_with = "pids")]
    pub all: bool,

    /// Only these processes (repeat for several).
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID",
        conflicts_with = "cgroups"
    )]
    pub pids: Vec<u32>,

    /// Only the processes in this cgroup or below it (repeat for several),
    /// a path as /proc/PID/cgroup shows it, e.g. /system.slice/mariadb.service.
    #[arg(long = "cgroup", value_name = "PATH", conflicts_with = "all")]
    pub cgroups: Vec<String>,

    /// Seconds between refreshes.
    #[arg(short = 'i', long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,

    /// Stop after SECONDS.
    #[arg(short = 'd', long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Show the first N processes.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 20)]
    pub count: usize,

    /// How to rank them.
    #[arg(long, value_enum, default_value_t = SortKey::Risk)]
    pub sort: SortKey,

    /// One JSON object a refresh, instead of the table.
    #[arg(long)]
    pub json: bool,

    /// NEAR-LIMIT threshold, in percent of vm.max_map_count.
    #[arg(long, value_name = "PERCENT", default_value_t = 90.0)]
    pub warn_at: f64,

    #[arg(
        long,
        value_name = "PATH",
        default_value = "/sys/kernel/btf/vmlinux",
        hide = true
    )]
    pub btf: std::path::PathBuf,

    #[arg(long, value_name = "MODE", value_enum, default_value_t = CountModeChoice::Auto, hide = true)]
    pub count_mode: CountModeChoice,
}

/// Ranks rows by `key`, most at risk first.
pub fn rank(rows: &mut [Row], key: SortKey) {
    let by = |row: &Row| -> f64 {
        match key {
            SortKey::Risk => row.risk(),
            SortKey::Vmas => row.vmas as f64,
            SortKey::Peak => row.peak as f64,
            SortKey::Growth => row.growth_per_s.unwrap_or(0.0),
            SortKey::Eta => row.seconds_to_limit.map_or(f64::MIN, |s| -s),
            SortKey::Splits => row.splits_per_s + row.splits as f64 * 1e-9,
            SortKey::Enomem => row.enomem_total() as f64,
        }
    };
    rows.sort_by(|a, b| {
        by(b)
            .total_cmp(&by(a))
            .then(b.vmas.cmp(&a.vmas))
            .then(a.pid.cmp(&b.pid))
    });
}

pub fn run(args: TopArgs) -> Result<i32, Failure> {
    if !args.all && args.pids.is_empty() && args.cgroups.is_empty() {
        return Err(Failure::usage(anyhow!(
            "top needs -a (every process), -p PID or --cgroup PATH"
        )));
    }
    require_privileges()?;
    let scope = if args.all {
        Scope::All
    } else if !args.cgroups.is_empty() {
        Scope::Cgroups(args.cgroups.clone())
    } else {
        Scope::Pids(args.pids.clone())
    };
    let mut collector = Collector::start(&CollectorConfig {
        scope,
        warn_fraction: args.warn_at / 100.0,
        btf_path: args.btf.clone(),
        count_mode: args.count_mode,
    })?;
    let terminal = !args.json && io::stdout().is_terminal();
    let mut view = View {
        sort: args.sort,
        allocators: HashMap::new(),
        started: Instant::now(),
        selected: 0,
        anatomies: HashMap::new(),
    };
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    let interval = Duration::from_secs_f64(args.interval.max(0.1));
    let result = if terminal {
        let mut screen = ratatui::try_init().map_err(|e| {
            Failure::environment(anyhow!(e).context("setting up the terminal for top"))
        })?;
        let result = view.full_screen(&mut collector, &mut screen, &args, interval, deadline);
        ratatui::restore();
        result
    } else {
        view.lines(&mut collector, &args, interval, deadline)
    };
    result.map_err(|e| Failure::environment(anyhow!(e)))?;
    Ok(exit_code::OK)
}

struct View {
    sort: SortKey,
    /// Allocators of the processes shown, detected once each.
    allocators: HashMap<u32, String>,
    started: Instant,
    /// The row the arrows select (full screen).
    selected: usize,
    /// What holds the VMAs of processes looked at, and when it was read:
    /// reading maps takes the process's mmap lock, so not every refresh.
    anatomies: HashMap<u32, (Instant, Option<Anatomy>)>,
}

/// How long a process's anatomy stands before it is read again.
const ANATOMY_REFRESH: Duration = Duration::from_secs(10);

impl View {
    /// What holds `pid`'s VMAs, read at most every `ANATOMY_REFRESH`.
    fn anatomy(&mut self, pid: u32, limit: u64) -> Option<&Anatomy> {
        let stale = self
            .anatomies
            .get(&pid)
            .is_none_or(|(at, _)| at.elapsed() >= ANATOMY_REFRESH);
        if stale {
            let read = super::maps::live(pid, limit, 0).ok();
            self.anatomies.insert(pid, (Instant::now(), read));
        }
        self.anatomies.get(&pid).and_then(|(_, a)| a.as_ref())
    }

    /// Whether a row holds enough of the limit for its anatomy to be read
    /// unasked (the lines and JSON; the screen reads the selected row's).
    fn crowded(row: &Row, limit: u64) -> bool {
        row.vmas.max(0) as u64 * 4 > limit
    }

    fn ranked(&mut self, collector: &mut Collector, shown: usize) -> (Vec<Row>, usize) {
        let mut rows = collector.sample();
        let total = rows.len();
        rank(&mut rows, self.sort);
        rows.truncate(shown);
        let live: std::collections::HashSet<u32> = rows.iter().map(|r| r.pid).collect();
        self.allocators.retain(|pid, _| live.contains(pid));
        for row in &rows {
            self.allocators
                .entry(row.pid)
                .or_insert_with(|| allocator_of(row.pid));
        }
        (rows, total)
    }

    fn lines(
        &mut self,
        collector: &mut Collector,
        args: &TopArgs,
        interval: Duration,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        loop {
            let (rows, total) = self.ranked(collector, args.count);
            let lost = collector.lost().total();
            let elapsed = self.started.elapsed().as_secs_f64();
            let mut out = io::stdout().lock();
            if args.json {
                let processes: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|row| {
                        let mut value = serde_json::to_value(row).unwrap_or_default();
                        value["allocator"] = json!(self.allocators.get(&row.pid));
                        value["risk"] = json!(row.risk());
                        if Self::crowded(row, collector.limit)
                            && let Some(anatomy) = self.anatomy(row.pid, collector.limit)
                        {
                            value["anatomy"] = json!(brief_groups(anatomy));
                        }
                        value
                    })
                    .collect();
                let line = json!({
                    "type": "host_top",
                    "elapsed_s": elapsed,
                    "limit": collector.limit,
                    "sort": self.sort,
                    "total_processes": total,
                    "lost_total": lost,
                    "processes": processes,
                });
                serde_json::to_writer(&mut out, &line)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "--- vmatrace top, +{elapsed:.1} s, {total} processes, vm.max_map_count {}, \
                     sorted by {}, lost events {lost} ---",
                    collector.limit,
                    self.sort.name()
                )?;
                writeln!(out, "{}", header().join(" "))?;
                for row in &rows {
                    writeln!(out, "{}", self.cells(row).join(" "))?;
                    if Self::crowded(row, collector.limit)
                        && let Some(anatomy) = self.anatomy(row.pid, collector.limit)
                    {
                        writeln!(out, "{:>8} holds: {}", "", anatomy_brief(anatomy, 4))?;
                    }
                }
            }
            out.flush()?;
            drop(out);
            let next = Instant::now() + interval;
            if deadline.is_some_and(|d| next > d + Duration::from_millis(50)) {
                return Ok(());
            }
            std::thread::sleep(interval);
        }
    }

    fn full_screen(
        &mut self,
        collector: &mut Collector,
        screen: &mut ratatui::DefaultTerminal,
        args: &TopArgs,
        interval: Duration,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        loop {
            let shown = screen.size()?.height.saturating_sub(3).max(1) as usize;
            let (rows, total) = self.ranked(collector, shown.min(args.count.max(shown)));
            let lost = collector.lost().total();
            let title = format!(
                " vmatrace top · {total} processes · vm.max_map_count {} · sorted by {} · lost {lost} · s/1-7 sort, q quits ",
                collector.limit,
                self.sort.name()
            );
            let widths = [
                Constraint::Length(8),
                Constraint::Length(16),
                Constraint::Length(7),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(7),
                Constraint::Length(14),
                Constraint::Min(10),
            ];
            let table_rows: Vec<TableRow> = rows
                .iter()
                .map(|row| TableRow::new(self.cells(row).into_iter().map(Cell::from)))
                .collect();
            self.selected = self.selected.min(rows.len().saturating_sub(1));
            let detail = match rows.get(self.selected) {
                Some(row) => {
                    let (pid, vmas, limit) = (row.pid, row.vmas, collector.limit);
                    match self.anatomy(pid, limit) {
                        Some(anatomy) => format!(
                            " pid {pid} holds {vmas}: {} (vmatrace maps -p {pid})",
                            anatomy_brief(anatomy, 5)
                        ),
                        None => format!(" pid {pid}: its maps cannot be read"),
                    }
                }
                None => String::new(),
            };
            let mut table_state = TableState::default().with_selected(Some(self.selected));
            let header_row = TableRow::new(
                header()
                    .into_iter()
                    .map(|h| Cell::from(h.trim().to_string())),
            )
            .style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED));
            screen.draw(|frame| {
                let [body, held, foot] = Layout::vertical([
                    Constraint::Min(1),
                    Constraint::Length(1),
                    Constraint::Length(1),
                ])
                .areas(frame.area());
                frame.render_stateful_widget(
                    Table::new(table_rows, widths)
                        .header(header_row)
                        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
                        .block(Block::bordered().title(title)),
                    body,
                    &mut table_state,
                );
                frame.render_widget(Paragraph::new(Line::from(detail)), held);
                frame.render_widget(
                    Paragraph::new(Line::from(
                        " 1 risk  2 vmas  3 peak  4 growth  5 eta  6 splits  7 enomem  ↑↓ select",
                    )),
                    foot,
                );
            })?;
            let until = Instant::now() + interval;
            while Instant::now() < until {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(());
                }
                if !event::poll(Duration::from_millis(100))? {
                    continue;
                }
                let TermEvent::Key(key) = event::read()? else {
                    continue;
                };
                if key.kind != KeyEventKind::Press {
                    continue;
                }
                let ctrl_c =
                    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
                match key.code {
                    _ if ctrl_c => return Ok(()),
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Down | KeyCode::Char('j') => {
                        self.selected += 1;
                        break;
                    }
                    KeyCode::Up | KeyCode::Char('k') => {
                        self.selected = self.selected.saturating_sub(1);
                        break;
                    }
                    KeyCode::Char('s') => {
                        let at = SORT_KEYS.iter().position(|k| *k == self.sort).unwrap_or(0);
                        self.sort = SORT_KEYS[(at + 1) % SORT_KEYS.len()];
                        break;
                    }
                    KeyCode::Char(c @ '1'..='7') => {
                        self.sort = SORT_KEYS[c as usize - '1' as usize];
                        break;
                    }
                    _ => {}
                }
            }
        }
    }

    fn cells(&self, row: &Row) -> Vec<String> {
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_string(), f);
        vec![
            format!("{:>8}", row.pid),
            format!("{:<16}", truncate(&row.comm, 16)),
            format!("{:>7}", row.vmas),
            format!("{:>5.1}%", row.used * 100.0),
            format!("{:>7}", row.peak),
            format!("{:>9}", opt(row.growth_per_s, &|g| format!("{g:+.1}/s"))),
            format!("{:>9}", opt(row.seconds_to_limit, &duration)),
            format!("{:>9.1}", row.splits_per_s),
            format!("{:>8}", row.splits),
            format!("{:>7}", row.enomem_total()),
            format!(
                "{:<14}",
                truncate(self.allocators.get(&row.pid).map_or("", |a| a), 14)
            ),
            sparkline(&row.recent, 20),
        ]
    }
}

/// `holes 29999 (45.8%), libraries 14`
fn anatomy_brief(anatomy: &Anatomy, groups: usize) -> String {
    crate::output::anatomy::brief(anatomy, groups)
}

/// The groups of an anatomy, without their words and lines (JSON).
fn brief_groups(anatomy: &Anatomy) -> serde_json::Value {
    anatomy
        .groups
        .iter()
        .map(|g| json!({"kind": g.kind, "vmas": g.vmas, "share_of_limit": g.share_of_limit}))
        .collect()
}

fn header() -> Vec<String> {
    [
        "     PID",
        "COMM            ",
        "   VMAS",
        "  USED",
        "   PEAK",
        "   GROWTH",
        " TO LIMIT",
        " SPLITS/s",
        "  SPLITS",
        " ENOMEM",
        "ALLOCATOR     ",
        "COUNT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn truncate(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

fn duration(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0}s")
    } else if seconds < 7200.0 {
        format!("{:.0}m", seconds / 60.0)
    } else if seconds < 172_800.0 {
        format!("{:.0}h", seconds / 3600.0)
    } else {
        format!("{:.0}d", seconds / 86400.0)
    }
}

/// The last `width` counts as block characters, scaled between their low
/// and high.
pub fn sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let values = &values[values.len().saturating_sub(width)..];
    let (Some(low), Some(high)) = (values.iter().min(), values.iter().max()) else {
        return String::new();
    };
    let span = (high - low).max(1) as f64;
    values
        .iter()
        .map(|v| {
            if high == low {
                BARS[0]
            } else {
                BARS[(((v - low) as f64 / span) * 7.0).round() as usize]
            }
        })
        .collect()
}

/// The process's allocator, from its mappings (read once).
fn allocator_of(pid: u32) -> String {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return String::new();
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    allocator::detect(&maps, exe.as_deref()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_risk() {
        let row = |pid, vmas, enomem: bool| Row {
            pid,
            vmas,
            peak: vmas,
            limit: 65530,
            enomem: if enomem {
                vec![super::super::collector::Enomem {
                    call: "munmap",
                    cause: "vma_limit",
                    count: 1,
                }]
            } else {
                Vec::new()
            },
            ..Row::default()
        };
        let mut rows = vec![row(1, 100, false), row(2, 60000, false), row(3, 10, true)];
        rank(&mut rows, SortKey::Risk);
        assert_eq!(
            rows.iter().map(|r| r.pid).collect::<Vec<_>>(),
            vec![3, 2, 1]
        );
        rank(&mut rows, SortKey::Vmas);
        assert_eq!(
            rows.iter().map(|r| r.pid).collect::<Vec<_>>(),
            vec![2, 1, 3]
        );
    }

    #[test]
    fn sparkline_scales() {
        assert_eq!(sparkline(&[1, 2, 3], 10), "▁▅█");
        assert_eq!(sparkline(&[5, 5], 10), "▁▁");
        assert_eq!(sparkline(&[], 10), "");
    }
}
