//! PNG charts for `load --plot` and `compare --plot`: latency percentile curves (HdrHistogram
//! style: the x axis spreads the tail, 90% / 99% / 99.9% / 99.99% evenly) and throughput against
//! connections, so a reader can look rather than read.
//!
//! Text needs a TrueType font: DejaVu Sans from Debian's fonts-dejavu-core (tests/setup.sh installs
//! it), or the file named by COREPLEX_PLOT_FONT.

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// A named series of points.
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

/// Quantiles sampled for percentile curves.
pub const QUANTILES: [f64; 12] = [
    0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0,
];

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn load_font() -> Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let path = std::env::var("COREPLEX_PLOT_FONT")
            .ok()
            .or_else(|| {
                FONT_PATHS
                    .iter()
                    .find(|p| Path::new(p).exists())
                    .map(|p| p.to_string())
            })
            .ok_or("no TrueType font found: install fonts-dejavu-core (tests/setup.sh) or set COREPLEX_PLOT_FONT")?;
        let bytes: &'static [u8] = Box::leak(
            std::fs::read(&path)
                .map_err(|e| format!("{path}: {e}"))?
                .into_boxed_slice(),
        );
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path}: not a usable font"))
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// Maps a quantile to the x axis: -log10(1 - q), so 0.9 -> 1, 0.99 -> 2, 0.999 -> 3 (1.0 -> 6).
pub fn tail_x(q: f64) -> f64 {
    -(1.0 - q).max(1e-6).log10()
}

fn palette(i: usize) -> RGBColor {
    [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ][i % 6]
}

fn draw_latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..6f64, 0f64..ymax)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "0%".into(),
            1 => "90%".into(),
            2 => "99%".into(),
            3 => "99.9%".into(),
            4 => "99.99%".into(),
            5 => "99.999%".into(),
            _ => "max".into(),
        })
        .x_labels(7)
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    draw_series(&mut chart, series, false, SeriesLabelPosition::UpperLeft)
}

fn draw_throughput<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let (xmin, xmax) = (
        xs.iter().cloned().fold(f64::INFINITY, f64::min).max(1.0),
        xs.iter().cloned().fold(1.0f64, f64::max),
    );
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((xmin * 0.8..xmax * 1.25).log_scale(), 0f64..ymax)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("connections")
        .y_desc("requests/s")
        .x_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    draw_series(&mut chart, series, true, SeriesLabelPosition::LowerRight)
}

/// Draws each series as a line (with point markers if `markers`) and the legend.
fn draw_series<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    series: &[Series],
    markers: bool,
    legend: SeriesLabelPosition,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: plotters::coord::CoordTranslate<From = (f64, f64)>,
{
    for (i, s) in series.iter().enumerate() {
        let color = palette(i);
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        if markers {
            chart
                .draw_series(s.points.iter().map(|p| Circle::new(*p, 4, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

fn check_png(path: &Path) -> Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("png") {
        bail!(
            "{}: plots are written as PNG: use a .png file name",
            path.display()
        );
    }
    Ok(())
}

/// One chart: latency percentile curves.
pub fn latency(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    check_png(path)?;
    load_font()?;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    draw_latency(&root, title, series)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Two charts side by side: latency curves and throughput against connections.
pub fn latency_and_throughput(
    path: &Path,
    latency_title: &str,
    latency: &[Series],
    throughput: &[Series],
) -> Result<()> {
    check_png(path)?;
    load_font()?;
    let root = BitMapBackend::new(path, (1600, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (left, right) = root.split_horizontally(800);
    draw_latency(&left, latency_title, latency)?;
    draw_throughput(&right, "throughput vs connections (pipeline 1)", throughput)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
