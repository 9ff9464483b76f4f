//! `--top`: the live allocator view (`view`) refreshed every interval, in
//! place of the event lines. Full-screen on a terminal (q, Esc or Ctrl-C
//! ends the trace); elsewhere a text block per refresh, or with `--json`
//! one `{"type":"top"}` line, so it can be logged or piped.

use std::{
    io::{self, IsTerminal, Write},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ratatui::{
    DefaultTerminal,
    crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers},
};
use serde_json::json;
use tokio::sync::mpsc;

use super::summary::verdicts_text;
use crate::{
    kernel::{monotonic_ns, probes::ProgramCost},
    model::{
        processes::Processes,
        sites::SharedSites,
        verdict::{self, Verdict},
        window::{self, Window, Windows},
    },
};

enum Screen {
    Terminal(DefaultTerminal),
    Text,
    Json,
}

pub struct Top {
    screen: Screen,
    windows: Windows,
    /// Filled by the printer, which symbolizes the stacks.
    sites: SharedSites,
    /// Told when the user asks to quit from the full-screen view.
    quit: Option<mpsc::UnboundedReceiver<()>>,
    keys_done: Arc<AtomicBool>,
    started: Instant,
    /// `started` on CLOCK_MONOTONIC, the clock of the events.
    start_ns: u64,
    /// The full screen's last picture, left as text when it closes.
    last_drawn: Vec<Window>,
}

impl Top {
    /// Full-screen if stdout is a terminal (and not `--json`).
    pub fn new(json: bool) -> io::Result<Top> {
        let keys_done = Arc::new(AtomicBool::new(false));
        let (screen, quit) = if json {
            (Screen::Json, None)
        } else if io::stdout().is_terminal() {
            let terminal = ratatui::try_init()?;
            let (tx, rx) = mpsc::unbounded_channel();
            let done = keys_done.clone();
            std::thread::spawn(move || read_keys(tx, done));
            (Screen::Terminal(terminal), Some(rx))
        } else {
            (Screen::Text, None)
        };
        Ok(Top {
            screen,
            windows: Windows::default(),
            sites: SharedSites::default(),
            quit,
            keys_done,
            started: Instant::now(),
            start_ns: monotonic_ns(),
            last_drawn: Vec::new(),
        })
    }

    /// Where the call sites are to be counted.
    pub fn sites(&self) -> SharedSites {
        self.sites.clone()
    }

    /// Resolves when the user quits the full-screen view; never otherwise.
    pub async fn quit_requested(&mut self) {
        match self.quit.as_mut() {
            Some(rx) => {
                if rx.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Shows every live process's window since the previous refresh.
    /// Draws the view; `cost` is what vmatrace's programs cost the kernel
    /// so far, when it measures that.
    pub fn show(
        &mut self,
        processes: &Processes,
        lost: u64,
        cost: Option<ProgramCost>,
    ) -> io::Result<()> {
        let limit = processes.detector.limit;
        let now = Instant::now();
        self.windows
            .retain(|pid| processes.by_pid.get(&pid).is_some_and(|s| !s.exited));
        let windows: Vec<Window> = {
            let sites = self
                .sites
                .lock()
                .map_err(|_| io::Error::other("the call sites' lock is poisoned"))?;
            processes
                .by_pid
                .values()
                .filter(|s| !s.exited)
                .map(|s| self.windows.next(s, limit, sites.get(&s.pid), now))
                .collect()
        };
        let windows = window::busiest_first(windows);
        let verdicts = self.verdicts(processes)?;
        let elapsed = self.started.elapsed().as_secs_f64();
        // The programs' share of one CPU since tracing began.
        let cpu_share = cost.map(|c| c.run_ns as f64 / 1e9 / elapsed.max(1e-3));
        let cost_text = cpu_share.map_or(String::new(), |share| {
            format!(" · tracing cost {:.2}% of a CPU", share * 100.0)
        });
        match &mut self.screen {
            Screen::Terminal(terminal) => {
                let footer = format!(
                    " vmatrace top · {elapsed:.0} s · vm.max_map_count {limit} · lost events {lost}{cost_text} · q quits"
                );
                let said: Vec<String> = verdicts.iter().map(Verdict::to_text).collect();
                let said = said.join("\n");
                terminal.draw(|frame| super::window::draw(frame, &windows, &said, &footer))?;
                self.last_drawn = windows;
            }
            Screen::Text => {
                let mut out = io::stdout().lock();
                writeln!(
                    out,
                    "--- vmatrace top, +{elapsed:.1} s, lost events {lost}{} ---",
                    cost_text.replace(" · ", ", ")
                )?;
                if !verdicts.is_empty() {
                    write!(out, "{}", verdicts_text(&verdicts, processes))?;
                }
                for window in &windows {
                    write!(out, "{}", window.to_text())?;
                }
                out.flush()?;
            }
            Screen::Json => {
                let mut out = io::stdout().lock();
                let line = json!({
                    "type": "top",
                    "elapsed_s": elapsed,
                    "limit": limit,
                    "lost_total": lost,
                    "cost_cpu_share": cpu_share,
                    "verdicts": verdicts,
                    "processes": windows,
                });
                serde_json::to_writer(&mut out, &line)?;
                writeln!(out)?;
                out.flush()?;
            }
        }
        Ok(())
    }
}

impl Top {
    /// The verdicts of the live processes at risk, with the call sites
    /// ranked so far.
    fn verdicts(&self, processes: &Processes) -> io::Result<Vec<Verdict>> {
        let sites = self
            .sites
            .lock()
            .map_err(|_| io::Error::other("the call sites' lock is poisoned"))?;
        let top_site = |pid: u32| {
            let site = sites.get(&pid)?.top(1).into_iter().next()?;
            (site.stats.splits > 0).then_some(site.site)
        };
        let ctx = verdict::Context {
            limit: processes.detector.limit,
            warn_at: processes.detector.warn_at,
            start_ns: self.start_ns,
            top_site: &top_site,
        };
        Ok(verdict::verdicts(
            processes.by_pid.values().filter(|s| !s.exited),
            &ctx,
        ))
    }

    /// Leaves the full screen, and keeps its last picture on the terminal
    /// as text: the view does not vanish with the traced process.
    pub fn close(mut self) {
        self.leave_screen();
        if self.last_drawn.is_empty() {
            return;
        }
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "--- vmatrace top, the last view ---");
        for window in &self.last_drawn {
            let _ = write!(out, "{}", window.to_text());
        }
        let _ = out.flush();
    }

    fn leave_screen(&mut self) {
        self.keys_done.store(true, Ordering::Relaxed);
        if matches!(self.screen, Screen::Terminal(_)) {
            ratatui::restore();
            self.screen = Screen::Text;
        }
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        self.leave_screen();
    }
}

/// Raw mode turns Ctrl-C into a key: q, Esc and Ctrl-C all quit.
fn read_keys(quit: mpsc::UnboundedSender<()>, done: Arc<AtomicBool>) {
    while !done.load(Ordering::Relaxed) {
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let Ok(TermEvent::Key(key)) = event::read() else {
            continue;
        };
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        if key.kind == KeyEventKind::Press
            && (ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc))
        {
            let _ = quit.send(());
            return;
        }
    }
}
