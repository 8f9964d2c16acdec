//! SVG figures in the manner of the paper's figures 5–7: one line per model
//! (or per priority), charts side by side in one file.
//!
//! Drawn with `plotters`' SVG backend only: text goes into the SVG as `<text>`
//! elements and its size is estimated, so no font library is needed to build or
//! to run.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// One chart.
#[derive(Clone, Debug)]
pub struct Chart {
    /// Title above the chart.
    pub title: String,
    /// X axis label.
    pub x: String,
    /// Y axis label.
    pub y: String,
    /// Logarithmic x axis.
    pub x_log: bool,
    /// Logarithmic y axis.
    pub y_log: bool,
    /// The lines.
    pub series: Vec<Series>,
}

/// Writes `charts` side by side into one SVG at `path`.
///
/// # Errors
/// The file cannot be written.
pub fn svg(path: &Path, charts: &[Chart]) -> Result<()> {
    let n = charts.len().max(1) as u32;
    let root = SVGBackend::new(path, (560 * n, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let areas = root.split_evenly((1, n as usize));
    for (area, chart) in areas.iter().zip(charts) {
        draw_one(area, chart)?;
    }
    root.present()
        .map_err(|e| anyhow!("writing {}: {e:?}", path.display()))?;
    Ok(())
}

/// Ranges covering every point (positive only on a log axis), with a margin.
fn bounds(chart: &Chart) -> ((f64, f64), (f64, f64)) {
    let pts = chart.series.iter().flat_map(|s| s.points.iter());
    let ok = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
    let xs: Vec<f64> = pts
        .clone()
        .map(|p| p.0)
        .filter(|&v| ok(v, chart.x_log))
        .collect();
    let ys: Vec<f64> = pts.map(|p| p.1).filter(|&v| ok(v, chart.y_log)).collect();
    let span = |v: &[f64], log: bool| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() {
            return if log { (1.0, 10.0) } else { (0.0, 1.0) };
        }
        if log {
            (lo / 1.5, hi * 1.5)
        } else {
            let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.05).max(1e-9);
            ((lo - pad).min(0.0_f64.max(lo - pad)), hi + pad)
        }
    };
    (span(&xs, chart.x_log), span(&ys, chart.y_log))
}

fn draw_one<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<()> {
    let ((x0, x1), (y0, y1)) = bounds(chart);
    match (chart.x_log, chart.y_log) {
        (false, false) => draw(area, chart, x0..x1, y0..y1),
        (true, false) => draw(area, chart, (x0..x1).log_scale(), y0..y1),
        (false, true) => draw(area, chart, x0..x1, (y0..y1).log_scale()),
        (true, true) => draw(area, chart, (x0..x1).log_scale(), (y0..y1).log_scale()),
    }
}

fn draw<DB, X, Y>(area: &DrawingArea<DB, Shift>, chart: &Chart, xr: X, yr: Y) -> Result<()>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing {}: {e:?}", chart.title);
    let mut c = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(xr, yr)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc(chart.x.as_str())
        .y_desc(chart.y.as_str())
        .label_style(("sans-serif", 11))
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(err)?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| {
                x.is_finite()
                    && y.is_finite()
                    && (!chart.x_log || x > 0.0)
                    && (!chart.y_log || y > 0.0)
            })
            .collect();
        c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// An axis label: a few significant digits, thousands as `k`.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 10_000.0 {
        format!("{}k", trim(v / 1_000.0))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short() {
        assert_eq!(short(0.700_000_000_000_1), "0.7");
        assert_eq!(short(2.0), "2");
        assert_eq!(short(1_500.0), "1500");
        assert_eq!(short(20_000.0), "20k");
        assert_eq!(short(0.125), "0.125");
    }

    #[test]
    fn writes_an_svg_with_every_series_named() {
        let dir = std::env::temp_dir().join(format!("ssbench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.svg");
        let chart = |log| Chart {
            title: "t".into(),
            x: "connections".into(),
            y: "µs".into(),
            x_log: log,
            y_log: log,
            series: vec![
                Series {
                    name: "kcuc".into(),
                    points: vec![(1.0, 10.0), (2.0, 20.0), (4.0, 0.0)],
                },
                Series {
                    name: "tokio".into(),
                    points: vec![],
                },
            ],
        };
        svg(&path, &[chart(true), chart(false)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..40.min(text.len())]);
        assert!(text.contains("kcuc") && text.contains("tokio"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
