//! The allocator's pattern, shown: a window's one-line form for status
//! lines, its text block and its full-screen panel for `--top`.

use std::collections::BTreeMap;

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Bar, BarChart, BarGroup, Block, Gauge, Paragraph, Row, Table},
};

use super::units::{human_bytes, human_duration, splits_by_mapping};
use crate::model::window::{SizeClass, Window};

impl Window {
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
        let pace = match self.swing_text() {
            Some(swing) => format!("{swing}{eta}"),
            None => format!("{growth:+.1} vmas/s over {:.0}s{eta}", self.growth_over_s),
        };
        format!(
            " | last {:.1}s: {:.0} mmap/s, {:.0} munmap/s, {} of unmaps split | {pace}",
            self.seconds,
            self.rate("mmap"),
            self.rate("munmap"),
            self.split_share_text(),
        )
    }

    /// "swings 200..64000 in 60 s, peaks at 97.7% of the limit about every
    /// 5 s, 1530 left at peak": what a swinging count does, which its value
    /// at one instant hides.
    fn swing_text(&self) -> Option<String> {
        let swing = self.swing?;
        let every = swing
            .every_s()
            .map_or(String::new(), |s| format!(" about every {s:.0} s"));
        Some(format!(
            "swings {}..{} in {} s, peaks at {:.1}% of the limit{every}, {} left at peak",
            swing.low,
            swing.high,
            swing.over_s,
            swing.high as f64 * 100.0 / self.limit.max(1) as f64,
            self.limit as i64 - swing.high
        ))
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
        let growth = match self.swing_text() {
            Some(swing) => swing,
            None => self.growth_per_s.map_or("growth -".into(), |g| {
                format!("{g:+.1} vmas/s over {:.0} s", self.growth_over_s)
            }),
        };
        let eta = match self.limit_in_s {
            Some(s) => format!("limit in {}", human_duration(s)),
            None if self.idle => "idle (no mapping calls)".into(),
            None => "limit not in sight".into(),
        };
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
/// The full-screen view: the verdicts of the processes at risk on top (if
/// any), then one panel per process, busiest first.
pub fn draw(frame: &mut Frame, windows: &[Window], verdicts: &str, footer: &str) {
    let verdict_rows = if verdicts.is_empty() {
        0
    } else {
        // Wrapped to the screen's width, at most a third of its height.
        let width = frame.area().width.max(20) as usize;
        let rows: usize = verdicts
            .lines()
            .map(|line| line.len().div_ceil(width).max(1))
            .sum();
        (rows as u16).min(frame.area().height / 3)
    };
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(verdict_rows),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(footer.to_string()), foot);
    if verdict_rows > 0 {
        frame.render_widget(
            Paragraph::new(verdicts.to_string())
                .style(Style::default().add_modifier(Modifier::BOLD))
                .wrap(ratatui::widgets::Wrap { trim: true }),
            head,
        );
    }
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

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::model::window::tests::two_windows;

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
    fn a_swinging_count_is_said_to_swing() {
        let (_, mut second) = two_windows();
        second.swing = Some(crate::model::history::Swing {
            low: 222,
            high: 64_628,
            over_s: 60,
            peaks: 12,
        });
        second.limit_in_s = None;
        let trend = second.trend();
        assert!(
            trend.ends_with(
                "swings 222..64628 in 60 s, peaks at 98.6% of the limit about every 5 s, 902 left at peak"
            ),
            "{trend}"
        );
        assert!(second.to_text().contains("swings 222..64628"));
    }

    #[test]
    fn the_full_screen_view_draws_every_part() {
        let (_, second) = two_windows();
        let mut terminal = Terminal::new(TestBackend::new(110, 24)).unwrap();
        terminal
            .draw(|frame| draw(frame, std::slice::from_ref(&second), "", "q quits"))
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

    #[test]
    fn the_full_screen_view_opens_with_the_verdicts() {
        let (_, second) = two_windows();
        let mut terminal = Terminal::new(TestBackend::new(110, 30)).unwrap();
        let verdict = "pid 42 (mysqld) came near the VMA limit: its count peaked at 61000";
        terminal
            .draw(|frame| draw(frame, std::slice::from_ref(&second), verdict, "q quits"))
            .unwrap();
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|cell| cell.symbol())
            .collect();
        let top_line: String = screen.chars().take(110).collect();
        assert!(
            top_line.contains("pid 42 (mysqld) came near the VMA limit"),
            "{top_line}"
        );
        assert!(screen.contains("vmas 61000/65530"));
    }
}
