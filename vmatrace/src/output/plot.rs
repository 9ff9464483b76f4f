//! The VMA count over time, per process, as an SVG for incident write-ups:
//! one line per process, the limit, and the flagged calls marked.

use std::io::Write;

use plotters::prelude::*;

use crate::outfile::PLOT_MARK;

/// One process's series: (seconds since start, VMA count).
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, i64)>,
    /// Flagged moments: (seconds, count, flag name).
    pub flagged: Vec<(f64, i64, &'static str)>,
}

/// At most this many points per line (the rest is thinned evenly), and this
/// many markers per flag kind, so a million-event trace stays a small file.
const MAX_POINTS: usize = 4000;
const MAX_MARKERS: usize = 500;

/// Draws the plot into `out` as SVG, marked as vmatrace's own so a later
/// run may replace it (see `outfile`).
pub fn draw(
    out: &mut impl Write,
    title: &str,
    limit: u64,
    series: &[Series],
) -> anyhow::Result<()> {
    let mut svg = String::new();
    render(&mut svg, title, limit, series)?;
    // Right after the opening tag: the file still starts with "<svg".
    let opening = svg.find('>').map_or(0, |i| i + 1);
    out.write_all(&svg.as_bytes()[..opening])?;
    write!(out, "\n{PLOT_MARK}")?;
    out.write_all(&svg.as_bytes()[opening..])?;
    out.flush()?;
    Ok(())
}

fn render(svg: &mut String, title: &str, limit: u64, series: &[Series]) -> anyhow::Result<()> {
    let x_max = series
        .iter()
        .flat_map(|s| s.points.last())
        .map(|p| p.0)
        .fold(0.001f64, f64::max);
    let y_max = (limit as f64 * 1.05).max(1.0) as i64;
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
    chart
        .draw_series(LineSeries::new(
            [(0.0, limit as i64), (x_max * 1.02, limit as i64)],
            RED.stroke_width(2),
        ))?
        .label(format!("vm.max_map_count = {limit}"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    for (index, s) in series.iter().enumerate() {
        // Palette99 starts with red, the limit's colour.
        let color = Palette99::pick(index + 1).to_rgba();
        let step = s.points.len().div_ceil(MAX_POINTS).max(1);
        let thinned = s
            .points
            .iter()
            .step_by(step)
            .chain(s.points.last())
            .copied();
        chart
            .draw_series(LineSeries::new(thinned, color.stroke_width(2)))?
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
