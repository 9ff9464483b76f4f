//! The VMA count over time, per process, as an SVG for incident write-ups:
//! one line per process, the limit, and the flagged calls marked. Each line
//! is a step function (a count holds until it changes), thinned by an
//! envelope that keeps every bucket's first, lowest, highest and last
//! count: what the plot shows is what the process held.

use std::io::Write;

use plotters::prelude::*;

use crate::outfile::PLOT_MARK;

/// One process's series: its count over time, and until when it held.
pub struct Series {
    pub label: String,
    pub counts: Envelope,
    /// Where the line ends (the end of the recording, or the process's):
    /// the last count held until then.
    pub end_s: f64,
    /// Flagged moments: (seconds, count, flag name).
    pub flagged: Vec<(f64, i64, &'static str)>,
}

/// At most this many markers per flag kind, so a million-event trace stays
/// a small file.
const MAX_MARKERS: usize = 500;

/// A count over time in bounded memory, thinned without lying: time is cut
/// into buckets, whose width doubles whenever there are too many, and each
/// bucket keeps its first, lowest, highest and last reading. So a count
/// held stays flat, one that fell at once falls at once, and no peak or
/// trough is lost however long the recording.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    /// Seconds a bucket spans (0 before the first reading).
    width: f64,
    buckets: Vec<Bucket>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    index: u64,
    first: (f64, i64),
    low: (f64, i64),
    high: (f64, i64),
    last: (f64, i64),
}

impl Bucket {
    fn new(index: u64, reading: (f64, i64)) -> Bucket {
        Bucket {
            index,
            first: reading,
            low: reading,
            high: reading,
            last: reading,
        }
    }

    fn add(&mut self, reading: (f64, i64)) {
        if reading.1 < self.low.1 {
            self.low = reading;
        }
        if reading.1 > self.high.1 {
            self.high = reading;
        }
        self.last = reading;
    }

    /// `self` then `later`, as one bucket.
    fn merge(self, later: Bucket) -> Bucket {
        Bucket {
            index: self.index,
            first: self.first,
            low: if later.low.1 < self.low.1 {
                later.low
            } else {
                self.low
            },
            high: if later.high.1 > self.high.1 {
                later.high
            } else {
                self.high
            },
            last: later.last,
        }
    }
}

impl Envelope {
    /// Buckets kept at most: 4 readings each, a few thousand points a line.
    const MAX_BUCKETS: usize = 2048;
    /// The first width: a millisecond.
    const FIRST_WIDTH: f64 = 0.001;

    /// A reading of the count at `t` seconds (in time order; one a little
    /// early, from another CPU, joins the newest bucket).
    pub fn push(&mut self, t: f64, count: i64) {
        if self.width == 0.0 {
            self.width = Self::FIRST_WIDTH;
        }
        let t = t.max(0.0);
        let index = (t / self.width) as u64;
        match self.buckets.last_mut() {
            Some(bucket) if index <= bucket.index => bucket.add((t, count)),
            _ => {
                self.buckets.push(Bucket::new(index, (t, count)));
                if self.buckets.len() > Self::MAX_BUCKETS {
                    self.coarsen();
                }
            }
        }
    }

    /// Twice as wide buckets, neighbours merged.
    fn coarsen(&mut self) {
        self.width *= 2.0;
        let mut merged: Vec<Bucket> = Vec::with_capacity(self.buckets.len() / 2 + 1);
        for bucket in self.buckets.drain(..) {
            let index = bucket.index / 2;
            match merged.last_mut() {
                Some(last) if last.index == index => *last = last.merge(bucket),
                _ => merged.push(Bucket { index, ..bucket }),
            }
        }
        self.buckets = merged;
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The readings kept, in time order: each bucket's first, lowest,
    /// highest and last (the lowest and highest in the order they came).
    pub fn points(&self) -> Vec<(f64, i64)> {
        let mut points: Vec<(f64, i64)> = Vec::with_capacity(self.buckets.len() * 4);
        for bucket in &self.buckets {
            let (a, b) = if bucket.low.0 <= bucket.high.0 {
                (bucket.low, bucket.high)
            } else {
                (bucket.high, bucket.low)
            };
            for reading in [bucket.first, a, b, bucket.last] {
                if points.last() != Some(&reading) {
                    points.push(reading);
                }
            }
        }
        points
    }

    /// The line to draw: a step function through the readings kept (a
    /// count holds until the next reading), from the first reading to
    /// `end_s`.
    pub fn steps(&self, end_s: f64) -> Vec<(f64, i64)> {
        let points = self.points();
        let mut line = Vec::with_capacity(points.len() * 2 + 1);
        for (i, &(t, count)) in points.iter().enumerate() {
            if i > 0 {
                line.push((t, points[i - 1].1));
            }
            line.push((t, count));
        }
        if let Some(&(t, count)) = points.last()
            && end_s > t
        {
            line.push((end_s, count));
        }
        line
    }

    pub fn highest(&self) -> Option<i64> {
        self.buckets.iter().map(|b| b.high.1).max()
    }
}

/// Draws the plot into `out` as SVG, marked as vmatrace's own so a later
/// run may replace it (see `outfile`).
/// `limits`: `vm.max_map_count` from each of these seconds on (the first
/// at 0); `end_s`: the end of the recording.
pub fn draw(
    out: &mut impl Write,
    title: &str,
    limits: &[(f64, u64)],
    end_s: f64,
    series: &[Series],
) -> anyhow::Result<()> {
    let mut svg = String::new();
    render(&mut svg, title, limits, end_s, series)?;
    // Right after the opening tag: the file still starts with "<svg".
    let opening = svg.find('>').map_or(0, |i| i + 1);
    out.write_all(&svg.as_bytes()[..opening])?;
    write!(out, "\n{PLOT_MARK}")?;
    out.write_all(&svg.as_bytes()[opening..])?;
    out.flush()?;
    Ok(())
}

fn render(
    svg: &mut String,
    title: &str,
    limits: &[(f64, u64)],
    end_s: f64,
    series: &[Series],
) -> anyhow::Result<()> {
    let x_max = series
        .iter()
        .map(|s| s.end_s)
        .fold(end_s.max(0.001), f64::max);
    let limit = limits.iter().map(|l| l.1).max().unwrap_or(0);
    let highest = series
        .iter()
        .filter_map(|s| s.counts.highest())
        .max()
        .unwrap_or(0);
    let y_max = ((limit.max(highest.max(0) as u64)) as f64 * 1.05).max(1.0) as i64;
    let root = SVGBackend::with_string(svg, (1100, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max * 1.02, 0i64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the recording started; x marks: ENOMEM (red), NEAR-LIMIT (magenta), SPLIT (blue)")
        .y_desc("VMAs (mm->map_count)")
        .draw()?;
    // The limit as a step too: an operator may change it while tracing.
    let limit_line: Vec<(f64, i64)> = limits
        .iter()
        .enumerate()
        .flat_map(|(i, &(t, l))| {
            let until = limits.get(i + 1).map_or(x_max * 1.02, |next| next.0);
            [(t, l as i64), (until, l as i64)]
        })
        .collect();
    let limit_label = match limits {
        [(_, only)] => format!("vm.max_map_count = {only}"),
        _ => format!(
            "vm.max_map_count: {}",
            limits
                .iter()
                .map(|(t, l)| format!("{l} from +{t:.1} s"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    chart
        .draw_series(LineSeries::new(limit_line, RED.stroke_width(2)))?
        .label(limit_label)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    for (index, s) in series.iter().enumerate() {
        // Palette99 starts with red, the limit's colour.
        let color = Palette99::pick(index + 1).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.counts.steps(s.end_s),
                color.stroke_width(2),
            ))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        for (flag, marker_color) in [
            ("SPLIT", BLUE.mix(0.25)),
            ("NEAR-LIMIT", MAGENTA.mix(0.9)),
            ("ENOMEM", RED.mix(0.9)),
        ] {
            let marks: Vec<(f64, i64)> = s
                .flagged
                .iter()
                .filter(|f| f.2 == flag)
                .map(|f| (f.0, f.1))
                .collect();
            let step = marks.len().div_ceil(MAX_MARKERS).max(1);
            chart.draw_series(marks.iter().step_by(step).map(|p| {
                Cross::new(
                    *p,
                    if flag == "SPLIT" { 2 } else { 6 },
                    marker_color.stroke_width(2),
                )
            }))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_held_stays_flat_and_a_fall_falls_at_once() {
        let mut counts = Envelope::default();
        counts.push(0.0, 10);
        // 20,000 holes over a second, held half a second, then all unmapped
        // at once: three times.
        for round in 0..3 {
            let start = round as f64 * 2.0;
            for i in 0..20_000 {
                counts.push(start + i as f64 / 20_000.0, 10 + i);
            }
            counts.push(start + 1.5, 10);
        }
        let line = counts.steps(6.0);
        // Thinned: a few thousand points for 60,000 readings.
        assert!(line.len() < 10_000, "{}", line.len());
        assert_eq!(counts.highest(), Some(20_009));
        // Held flat from the peak until the fall, which is vertical.
        for round in 0..3 {
            let fall = round as f64 * 2.0 + 1.5;
            let at_fall: Vec<&(f64, i64)> = line.iter().filter(|p| p.0 == fall).collect();
            assert_eq!(
                at_fall.iter().map(|p| p.1).collect::<Vec<_>>(),
                [20_009, 10],
                "round {round}"
            );
            let before = line
                .iter()
                .rev()
                .find(|p| p.0 < fall)
                .expect("a point before the fall");
            assert_eq!(before.1, 20_009, "held until the fall: {before:?}");
        }
        // The start and the end are drawn.
        assert_eq!(line.first(), Some(&(0.0, 10)));
        assert_eq!(line.last(), Some(&(6.0, 10)));
        // A step function: every segment is flat or vertical.
        for pair in line.windows(2) {
            assert!(pair[0].0 == pair[1].0 || pair[0].1 == pair[1].1, "{pair:?}");
        }
    }

    #[test]
    fn the_envelope_keeps_every_dip_and_peak() {
        let mut counts = Envelope::default();
        for i in 0..100_000u32 {
            // A slow climb with a one-reading dip every 10,000.
            let count = if i % 10_000 == 5_000 {
                0
            } else {
                i64::from(i / 10)
            };
            counts.push(f64::from(i) * 0.0001, count);
        }
        let kept = counts.points();
        assert_eq!(kept.iter().filter(|p| p.1 == 0).count(), 10 + 1, "dips");
        assert_eq!(kept.last().map(|p| p.1), Some(9_999));
        assert!(kept.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
    }
}
