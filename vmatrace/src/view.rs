//! The allocator's pattern, live: for each process, what happened since
//! the last look: call rates, the size classes mapped and unmapped, the
//! share of unmaps that split, the growth of the count and the time left
//! to the limit at that pace, the mappings its SPLITs cut and the call
//! sites that added VMAs. Status lines print its one-line form; `--top`
//! the whole of it: a full-screen view on a terminal (`draw`), text blocks
//! (`to_text`) or JSON lines otherwise.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Bar, BarChart, BarGroup, Block, Gauge, Paragraph, Row, Table},
};
use serde::Serialize;

use crate::{
    output::{human_bytes, splits_by_mapping},
    sites::{RankedSite, Sites},
    state::ProcessState,
};

/// How many sites and cut mappings the view lists.
const TOP_N: usize = 5;

/// The growth of the count, and the time to the limit from it, are taken
/// over this long: one interval's +1 or -1 would make the projection flap.
const GROWTH_HORIZON: Duration = Duration::from_secs(10);

/// What a process's counters were at the previous look.
#[derive(Clone, Debug)]
struct Counters {
    at: Instant,
    count: Option<i64>,
    calls: BTreeMap<&'static str, u64>,
    splits: u64,
    mmap_sizes: BTreeMap<u64, u64>,
    munmap_sizes: BTreeMap<u64, u64>,
}

impl Counters {
    fn of(state: &ProcessState, at: Instant) -> Counters {
        Counters {
            at,
            count: state.count,
            calls: state.calls.clone(),
            splits: state.splits,
            mmap_sizes: state.mmap_sizes.clone(),
            munmap_sizes: state.munmap_sizes.clone(),
        }
    }
}

/// One process over one window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Window {
    pub pid: u32,
    pub comm: String,
    pub allocator: Option<String>,
    pub vmas: Option<i64>,
    pub limit: u64,
    pub headroom: Option<i64>,
    pub peak: i64,
    /// The window's length; since tracing began for the first one.
    pub seconds: f64,
    /// Net VMAs per second over the last `growth_over_s` seconds (up to
    /// 10); `None` for the first window, with no earlier count to compare.
    pub growth_per_s: Option<f64>,
    pub growth_over_s: f64,
    /// Seconds until the limit at that growth, if the count grows.
    pub limit_in_s: Option<f64>,
    /// Calls per second, by call, over the window.
    pub rates: BTreeMap<&'static str, f64>,
    pub munmaps: u64,
    pub splits: u64,
    /// SPLITs per munmap (SPLITs of other calls included: capped at 1).
    pub split_share: Option<f64>,
    /// The window's successful mmap and munmap calls by size class.
    pub mmap_sizes: Vec<SizeClass>,
    pub munmap_sizes: Vec<SizeClass>,
    /// Since tracing began: the mappings SPLITs cut, most cut first.
    pub splits_by_mapping: Vec<(String, u64)>,
    /// Since tracing began: the call sites that added the most VMAs, of
    /// the calls with a stack (SPLIT and ENOMEM ones, or all with --stacks).
    pub top_sites: Vec<RankedSite>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SizeClass {
    /// The bucket's upper bound in bytes (a power of two).
    pub up_to: u64,
    pub calls: u64,
}

/// Every process's counters at the previous look.
pub struct Windows {
    previous: HashMap<u32, Counters>,
    /// Each process's counts over the growth horizon, oldest first.
    counts: HashMap<u32, VecDeque<(Instant, i64)>>,
    /// A process's first window starts when tracing did.
    started: Instant,
}

impl Default for Windows {
    fn default() -> Self {
        Windows::starting_at(Instant::now())
    }
}

impl Windows {
    pub fn starting_at(started: Instant) -> Windows {
        Windows {
            previous: HashMap::new(),
            counts: HashMap::new(),
            started,
        }
    }

    /// The window of `state` since the previous look, starting the next.
    pub fn next(
        &mut self,
        state: &ProcessState,
        limit: u64,
        sites: Option<&Sites>,
        now: Instant,
    ) -> Window {
        let current = Counters::of(state, now);
        let previous = self.previous.insert(state.pid, current.clone());
        let growth = self.growth(state.pid, state.count, now);
        let before = previous.unwrap_or(Counters {
            at: self.started.min(now),
            count: None,
            calls: BTreeMap::new(),
            splits: 0,
            mmap_sizes: BTreeMap::new(),
            munmap_sizes: BTreeMap::new(),
        });
        window(state, limit, sites, &before, &current, growth)
    }

    /// Forgets the processes that are gone (`live` holds the others).
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) {
        self.previous.retain(|pid, _| live(*pid));
        self.counts.retain(|pid, _| live(*pid));
    }

    /// VMAs per second since the oldest count within the horizon, and over
    /// how many seconds.
    fn growth(&mut self, pid: u32, count: Option<i64>, now: Instant) -> Option<(f64, f64)> {
        let count = count?;
        let counts = self.counts.entry(pid).or_default();
        counts.push_back((now, count));
        // Keep the newest count at or before the horizon's start.
        while counts
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= GROWTH_HORIZON)
        {
            counts.pop_front();
        }
        let (first_at, first_count) = *counts.front()?;
        let seconds = now.duration_since(first_at).as_secs_f64();
        (seconds > 0.0).then(|| ((count - first_count) as f64 / seconds, seconds))
    }
}

fn window(
    state: &ProcessState,
    limit: u64,
    sites: Option<&Sites>,
    before: &Counters,
    now: &Counters,
    growth: Option<(f64, f64)>,
) -> Window {
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let since = |map: &BTreeMap<&'static str, u64>, key: &str| {
        now.calls
            .get(key)
            .copied()
            .unwrap_or(0)
            .saturating_sub(map.get(key).copied().unwrap_or(0))
    };
    let rates = now
        .calls
        .keys()
        .map(|call| (*call, since(&before.calls, call) as f64 / seconds))
        .collect();
    let munmaps = since(&before.calls, "munmap");
    let splits = now.splits.saturating_sub(before.splits);
    let growth_per_s = growth.map(|(per_s, _)| per_s);
    let limit_in_s = match (growth_per_s, now.count) {
        (Some(growth), Some(count)) if growth > 0.0 => {
            Some((limit as f64 - count as f64).max(0.0) / growth)
        }
        _ => None,
    };
    let mut by_mapping: Vec<(String, u64)> = state
        .splits_by_mapping
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    by_mapping.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_mapping.truncate(TOP_N);
    Window {
        pid: state.pid,
        comm: state.comm.clone(),
        allocator: state.allocator.map(|a| a.to_string()),
        vmas: state.count,
        limit,
        headroom: state.headroom(limit),
        peak: state.peak,
        seconds,
        growth_per_s,
        growth_over_s: growth.map_or(0.0, |(_, over)| over),
        limit_in_s,
        rates,
        munmaps,
        splits,
        split_share: (munmaps > 0).then(|| (splits as f64 / munmaps as f64).min(1.0)),
        mmap_sizes: size_classes(&before.mmap_sizes, &now.mmap_sizes),
        munmap_sizes: size_classes(&before.munmap_sizes, &now.munmap_sizes),
        splits_by_mapping: by_mapping,
        top_sites: sites.map(|s| s.top(TOP_N)).unwrap_or_default(),
    }
}

fn size_classes(before: &BTreeMap<u64, u64>, now: &BTreeMap<u64, u64>) -> Vec<SizeClass> {
    now.iter()
        .map(|(bucket, calls)| SizeClass {
            up_to: *bucket,
            calls: calls.saturating_sub(before.get(bucket).copied().unwrap_or(0)),
        })
        .filter(|class| class.calls > 0)
        .collect()
}

pub fn human_duration(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86400.0),
    }
}

impl Window {
    fn rate(&self, call: &str) -> f64 {
        self.rates.get(call).copied().unwrap_or(0.0)
    }

    fn split_share_text(&self) -> String {
        self.split_share
            .map_or("-".to_string(), |share| format!("{:.0}%", share * 100.0))
    }

    /// The status line's tail: the pattern since the previous line (empty
    /// for the first window).
    pub fn trend(&self) -> String {
        let Some(growth) = self.growth_per_s else {
            return String::new();
        };
        let eta = self.limit_in_s.map_or(String::new(), |s| {
            format!(", limit in {}", human_duration(s))
        });
        format!(
            " | last {:.1}s: {:.0} mmap/s, {:.0} munmap/s, {} of unmaps split | {growth:+.1} vmas/s over {:.0}s{eta}",
            self.seconds,
            self.rate("mmap"),
            self.rate("munmap"),
            self.split_share_text(),
            self.growth_over_s,
        )
    }

    fn heading(&self) -> String {
        format!(
            "pid {} ({}, {})",
            self.pid,
            self.comm,
            self.allocator.as_deref().unwrap_or("allocator unknown")
        )
    }

    fn count_text(&self) -> String {
        let count = self.vmas.map_or("?".into(), |c| c.to_string());
        let pct = self.vmas.map_or(String::new(), |c| {
            format!(" ({:.1}%)", c as f64 * 100.0 / self.limit.max(1) as f64)
        });
        let headroom = self.headroom.map_or("?".into(), |h| h.to_string());
        format!(
            "vmas {count}/{}{pct}  headroom {headroom}  peak {}",
            self.limit, self.peak
        )
    }

    fn pace_text(&self) -> String {
        let growth = self.growth_per_s.map_or("growth -".into(), |g| {
            format!("{g:+.1} vmas/s over {:.0} s", self.growth_over_s)
        });
        let eta = self.limit_in_s.map_or("limit not in sight".into(), |s| {
            format!("limit in {}", human_duration(s))
        });
        format!(
            "{growth}, {eta}; last {:.1} s: {} of {} unmaps split",
            self.seconds,
            self.split_share_text(),
            self.munmaps
        )
    }

    fn rates_text(&self) -> String {
        let busy: Vec<String> = self
            .rates
            .iter()
            .filter(|(_, rate)| **rate > 0.0)
            .map(|(call, rate)| format!("{call} {rate:.0}"))
            .collect();
        if busy.is_empty() {
            "calls/s: none".into()
        } else {
            format!("calls/s: {}", busy.join(", "))
        }
    }

    /// The whole view of this process, as plain text.
    pub fn to_text(&self) -> String {
        let sizes = |classes: &[SizeClass]| {
            if classes.is_empty() {
                return "-".to_string();
            }
            classes
                .iter()
                .map(|c| format!("<={} {}", human_bytes(c.up_to), c.calls))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = format!(
            "{}: {}\n  {}\n  {}\n  mmap sizes: {}\n  munmap sizes: {}\n",
            self.heading(),
            self.count_text(),
            self.pace_text(),
            self.rates_text(),
            sizes(&self.mmap_sizes),
            sizes(&self.munmap_sizes),
        );
        if !self.splits_by_mapping.is_empty() {
            let map: BTreeMap<String, u64> = self.splits_by_mapping.iter().cloned().collect();
            text.push_str(&format!(
                "  SPLITs by mapping: {}\n",
                splits_by_mapping(&map)
            ));
        }
        if !self.top_sites.is_empty() {
            text.push_str("  top sites: VMAs added, SPLIT, ENOMEM, calls\n");
            for site in &self.top_sites {
                let s = &site.stats;
                text.push_str(&format!(
                    "    {:>8} {:>7} {:>5} {:>8}  {}\n",
                    s.vmas_added, s.splits, s.enomem, s.calls, site.site
                ));
            }
        }
        text
    }

    /// The whole view of this process, drawn in `area`.
    fn draw(&self, frame: &mut Frame, area: Rect) {
        let block = Block::bordered()
            .title(Line::from(self.heading()).style(Style::default().add_modifier(Modifier::BOLD)));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let [gauge, pace, sizes, sites] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(3),
            Constraint::Length(10),
            Constraint::Min(0),
        ])
        .areas(inner);
        let ratio = self.vmas.map_or(0.0, |c| {
            (c.max(0) as f64 / self.limit.max(1) as f64).min(1.0)
        });
        let color = match ratio {
            r if r >= 0.9 => Color::Red,
            r if r >= 0.7 => Color::Yellow,
            _ => Color::Green,
        };
        frame.render_widget(
            Gauge::default()
                .ratio(ratio)
                .label(self.count_text())
                .gauge_style(Style::default().fg(color)),
            gauge,
        );
        let mut lines = vec![Line::from(self.pace_text()), Line::from(self.rates_text())];
        if !self.splits_by_mapping.is_empty() {
            let map: BTreeMap<String, u64> = self.splits_by_mapping.iter().cloned().collect();
            lines.push(Line::from(format!(
                "SPLITs by mapping: {}",
                splits_by_mapping(&map)
            )));
        }
        frame.render_widget(Paragraph::new(lines), pace);
        let [mmaps, munmaps] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(sizes);
        draw_sizes(
            frame,
            mmaps,
            "mmap sizes (calls)",
            &self.mmap_sizes,
            Color::Cyan,
        );
        draw_sizes(
            frame,
            munmaps,
            "munmap sizes (calls)",
            &self.munmap_sizes,
            Color::Magenta,
        );
        if !self.top_sites.is_empty() {
            let rows = self.top_sites.iter().map(|site| {
                let s = &site.stats;
                Row::new(vec![
                    s.vmas_added.to_string(),
                    s.splits.to_string(),
                    s.enomem.to_string(),
                    s.calls.to_string(),
                    site.site.clone(),
                ])
            });
            let table = Table::new(
                rows,
                [
                    Constraint::Length(9),
                    Constraint::Length(8),
                    Constraint::Length(7),
                    Constraint::Length(9),
                    Constraint::Fill(1),
                ],
            )
            .header(
                Row::new(vec!["VMAs+", "SPLIT", "ENOMEM", "calls", "top sites"])
                    .style(Style::default().add_modifier(Modifier::BOLD)),
            );
            frame.render_widget(table, sites);
        }
    }
}

fn draw_sizes(frame: &mut Frame, area: Rect, title: &str, classes: &[SizeClass], color: Color) {
    let bars: Vec<Bar> = classes
        .iter()
        .map(|c| {
            Bar::default()
                .value(c.calls)
                .label(Line::from(human_bytes(c.up_to)))
        })
        .collect();
    let chart = BarChart::default()
        .block(Block::bordered().title(title.to_string()))
        .data(BarGroup::default().bars(&bars))
        .bar_width(7)
        .bar_gap(1)
        .bar_style(Style::default().fg(color));
    frame.render_widget(chart, area);
}

/// The full-screen view: one panel per process, busiest first.
pub fn draw(frame: &mut Frame, windows: &[Window], footer: &str) {
    let [body, foot] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(frame.area());
    frame.render_widget(Paragraph::new(footer.to_string()), foot);
    if windows.is_empty() {
        frame.render_widget(Paragraph::new("no live traced process"), body);
        return;
    }
    // Panels need room: the processes with the most VMAs come first.
    let fit = (body.height / 16).max(1) as usize;
    let shown = &windows[..windows.len().min(fit)];
    let areas = Layout::vertical(vec![Constraint::Fill(1); shown.len()]).split(body);
    for (window, area) in shown.iter().zip(areas.iter()) {
        window.draw(frame, *area);
    }
}

/// Windows ordered for the view: most VMAs first.
pub fn busiest_first(mut windows: Vec<Window>) -> Vec<Window> {
    windows.sort_by_key(|w| (std::cmp::Reverse(w.vmas.unwrap_or(0)), w.pid));
    windows
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::{Terminal, backend::TestBackend};

    use super::*;

    fn state(count: i64, munmaps: u64, splits: u64) -> ProcessState {
        let mut state = ProcessState::new(42);
        state.comm = "mysqld".into();
        state.allocator = Some(crate::allocator::Detected {
            allocator: crate::allocator::Allocator::Jemalloc,
            linked_in: false,
        });
        state.count = Some(count);
        state.peak = count;
        state.calls.insert("mmap", munmaps / 2);
        state.calls.insert("munmap", munmaps);
        state.splits = splits;
        state.munmap_sizes.insert(4096, munmaps);
        state.mmap_sizes.insert(2 << 20, munmaps / 2);
        state.splits_by_mapping.insert("anon".into(), splits);
        state
    }

    fn two_windows() -> (Window, Window) {
        let t0 = Instant::now();
        let mut windows = Windows::starting_at(t0);
        let first = windows.next(&state(60_000, 0, 0), 65530, None, t0);
        let second = windows.next(
            &state(61_000, 2000, 1000),
            65530,
            None,
            t0 + Duration::from_secs(2),
        );
        (first, second)
    }

    #[test]
    fn a_window_holds_rates_sizes_splits_and_the_time_to_the_limit() {
        let (first, second) = two_windows();
        assert_eq!(first.growth_per_s, None, "nothing to compare with yet");
        assert!(
            first.seconds <= 0.001,
            "the first window starts with tracing"
        );
        assert_eq!(first.trend(), "");
        assert_eq!(second.growth_per_s, Some(500.0));
        assert_eq!(second.rate("munmap"), 1000.0);
        assert_eq!(second.split_share, Some(0.5));
        assert_eq!(
            second.munmap_sizes,
            vec![SizeClass {
                up_to: 4096,
                calls: 2000
            }]
        );
        assert!((second.limit_in_s.unwrap() - 9.06).abs() < 0.01);
        assert_eq!(
            second.trend(),
            " | last 2.0s: 500 mmap/s, 1000 munmap/s, 50% of unmaps split | +500.0 vmas/s over 2s, limit in 9 s"
        );
        let text = second.to_text();
        assert!(text.contains("munmap sizes: <=4.0KiB 2000"), "{text}");
        assert!(text.contains("SPLITs by mapping: anon 1000"), "{text}");
    }

    #[test]
    fn growth_is_taken_over_ten_seconds() {
        let t0 = Instant::now();
        let mut windows = Windows::starting_at(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        windows.next(&state(1000, 0, 0), 65530, None, at(0));
        // +1 then -1 a second: a 1 s window would flap between growing
        // and not; over 10 s the count grew 10.
        for s in 1..=20 {
            let count = 1000 + s as i64 / 2 + (s as i64 % 2);
            let window = windows.next(&state(count, 0, 0), 65530, None, at(s));
            if s == 20 {
                assert_eq!(window.growth_over_s, 10.0);
                assert_eq!(window.growth_per_s, Some(0.5));
                assert!(window.limit_in_s.is_some());
            }
        }
    }

    #[test]
    fn the_full_screen_view_draws_every_part() {
        let (_, second) = two_windows();
        let mut terminal = Terminal::new(TestBackend::new(110, 24)).unwrap();
        terminal
            .draw(|frame| draw(frame, std::slice::from_ref(&second), "q quits"))
            .unwrap();
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|cell| cell.symbol())
            .collect();
        for needle in [
            "pid 42 (mysqld, jemalloc)",
            "vmas 61000/65530",
            "limit in 9 s",
            "munmap sizes",
            "4.0KiB",
            "2000",
            "SPLITs by mapping: anon 1000",
            "q quits",
        ] {
            assert!(
                screen.contains(needle),
                "{needle:?} missing from the screen"
            );
        }
    }
}
