//! PNG chart of scrape latency against interface count (log-log).
//!
//! plotters draws the lines with its bitmap backend and no font feature;
//! every piece of text is drawn here from the 8x8 bitmap font in the
//! `font8x8` crate, so the chart needs no TTF file, fontconfig or FreeType
//! and renders the same on any machine.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Report;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 700;

/// (tool id, legend, colour).
const SERIES: [(&str, &str, RGBColor); 5] = [
    (
        "collector-ebpf",
        "collector (eBPF on)",
        RGBColor(0, 90, 181),
    ),
    (
        "collector-no-ebpf",
        "collector --no-ebpf",
        RGBColor(86, 180, 233),
    ),
    (
        "node-exporter-netdev",
        "node_exporter netdev",
        RGBColor(230, 159, 0),
    ),
    (
        "node-exporter-netclass",
        "node_exporter netdev+netclass",
        RGBColor(204, 51, 17),
    ),
    (
        "seed-script",
        "parse_ip_stats.sh (seed)",
        RGBColor(0, 140, 100),
    ),
];

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws `text` with its top-left corner at (x, y), `scale` pixels per font pixel.
fn text(area: &Area, text: &str, x: i32, y: i32, scale: i32, color: &RGBColor) -> Result<()> {
    for (i, c) in text.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY
            .get(c as usize)
            .copied()
            .unwrap_or(font8x8::legacy::BASIC_LEGACY[b'?' as usize]);
        let origin_x = x + i as i32 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for bit in 0..8 {
                if bits & (1 << bit) != 0 {
                    let px = origin_x + bit * scale;
                    let py = y + row as i32 * scale;
                    for dx in 0..scale {
                        for dy in 0..scale {
                            area.draw_pixel((px + dx, py + dy), color)
                                .map_err(|e| anyhow!("drawing text: {e}"))?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn text_width(text: &str, scale: i32) -> i32 {
    text.chars().count() as i32 * 8 * scale
}

fn latency_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", ms / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// p50 points (interfaces, ms) of one tool.
fn points(report: &Report, tool: &str) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = if tool == "seed-script" {
        report
            .script
            .iter()
            .map(|s| (s.interfaces as f64, s.latency.p50_ms))
            .collect()
    } else {
        report
            .scrapes
            .iter()
            .filter(|s| s.tool == tool)
            .map(|s| (s.interfaces as f64, s.latency.p50_ms))
            .collect()
    };
    points.retain(|(x, y)| *x > 0.0 && *y > 0.0 && y.is_finite());
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

pub fn draw(report: &Report, path: &Path) -> Result<()> {
    let all: Vec<(f64, f64)> = SERIES
        .iter()
        .flat_map(|(tool, _, _)| points(report, tool))
        .collect();
    if all.is_empty() {
        return Err(anyhow!("no scrape results to chart"));
    }
    let (x_min, x_max) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let (y_min, y_max) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let y_lo = 10f64.powf(y_min.log10().floor());
    let y_hi = 10f64.powf(y_max.log10().ceil()).max(y_lo * 10.0);
    let (x_lo, x_hi) = (x_min / 1.6, x_max * 1.6);

    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let black = RGBColor(20, 20, 20);
    let grey = RGBColor(215, 215, 215);

    let title = "Scrape latency (p50) vs interface count, log-log";
    text(
        &root,
        title,
        (WIDTH as i32 - text_width(title, 2)) / 2,
        14,
        2,
        &black,
    )?;
    let subtitle = format!(
        "{}, {} CPUs, kernel {}{}",
        report.machine["cpu"].as_str().unwrap_or("?"),
        report.machine["cpus"],
        report.machine["kernel"].as_str().unwrap_or("?"),
        if report.quick { " (quick run)" } else { "" }
    );
    let subtitle: String = subtitle.chars().take(120).collect();
    text(
        &root,
        &subtitle,
        (WIDTH as i32 - text_width(&subtitle, 1)) / 2,
        38,
        1,
        &black,
    )?;

    let plot = root.margin(60, 70, 100, 30);
    let mut chart = ChartBuilder::on(&plot)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
        .map_err(|e| anyhow!("{e}"))?;

    // Grid: every decade (and 2x, 5x) of latency, every measured size.
    let mut decade = y_lo;
    let mut y_ticks = Vec::new();
    while decade <= y_hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let y = decade * m;
            if y <= y_hi * 1.0001 {
                chart
                    .draw_series(LineSeries::new(vec![(x_lo, y), (x_hi, y)], grey))
                    .map_err(|e| anyhow!("{e}"))?;
                if m == 1.0 {
                    y_ticks.push(y);
                }
            }
        }
        decade *= 10.0;
    }
    let mut sizes: Vec<f64> = all.iter().map(|p| p.0).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    for &x in &sizes {
        chart
            .draw_series(LineSeries::new(vec![(x, y_lo), (x, y_hi)], grey))
            .map_err(|e| anyhow!("{e}"))?;
    }
    // Frame.
    let corners = [
        (x_lo, y_lo),
        (x_hi, y_lo),
        (x_hi, y_hi),
        (x_lo, y_hi),
        (x_lo, y_lo),
    ];
    chart
        .draw_series(LineSeries::new(corners.to_vec(), black))
        .map_err(|e| anyhow!("{e}"))?;

    for (tool, _, color) in SERIES {
        let data = points(report, tool);
        if data.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(3)))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(data.iter().map(|p| Circle::new(*p, 5, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }

    // Tick labels, placed from the chart's own coordinate mapping.
    for y in y_ticks {
        let (px, py) = chart.backend_coord(&(x_lo, y));
        let label = latency_label(y);
        text(
            &root,
            &label,
            px - 10 - text_width(&label, 1),
            py - 4,
            1,
            &black,
        )?;
    }
    for &x in &sizes {
        let (px, py) = chart.backend_coord(&(x, y_lo));
        let label = format!("{x:.0}");
        text(
            &root,
            &label,
            px - text_width(&label, 1) / 2,
            py + 10,
            1,
            &black,
        )?;
    }
    let (_, bottom) = chart.backend_coord(&(x_lo, y_lo));
    let x_title = "veth interfaces in the namespace";
    text(
        &root,
        x_title,
        (WIDTH as i32 - text_width(x_title, 1)) / 2,
        bottom + 32,
        1,
        &black,
    )?;
    let (left, top) = chart.backend_coord(&(x_lo, y_hi));
    text(
        &root,
        "p50 per scrape / run",
        left - 90,
        top - 16,
        1,
        &black,
    )?;

    // Legend, top left inside the frame.
    for (i, (tool, legend, color)) in SERIES.iter().enumerate() {
        if points(report, tool).is_empty() {
            continue;
        }
        let y = top + 14 + i as i32 * 22;
        root.draw(&Rectangle::new(
            [(left + 14, y), (left + 38, y + 12)],
            color.filled(),
        ))
        .map_err(|e| anyhow!("{e}"))?;
        text(&root, legend, left + 46, y + 2, 1, &black)?;
    }
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(latency_label(0.1), "0.1 ms");
        assert_eq!(latency_label(10.0), "10 ms");
        assert_eq!(latency_label(1000.0), "1 s");
        assert_eq!(text_width("abc", 2), 48);
    }
}
