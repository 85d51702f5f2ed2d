//! Loss and accuracy curves, side by side, as SVG or PNG (chosen by the
//! file's extension). Text is set in DejaVu Sans, embedded, so no system
//! fonts are needed; the image is rendered in memory and written atomically.

use super::fsutil::write_atomic;
use super::EpochMetrics;
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const SIZE: (u32, u32) = (1000, 400);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the `dejavu` crate.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.display().to_string(),
        what: format!("cannot draw the plot: {e}"),
    }
}

type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[Series<'_>],
    epochs: usize,
) -> std::result::Result<(), String> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (_, pts, _) in series {
        for &(_, y) in pts {
            if y.is_finite() {
                lo = lo.min(y);
                hi = hi.max(y);
            }
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1f64..(epochs.max(2) as f64), (lo - pad)..(hi + pad))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epochs.clamp(2, 12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, pts, color) in series {
        let c = *color;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)).point_size(3))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, history: &[EpochMetrics]) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let pts = |f: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|m| f(m).map(|y| (m.epoch as f64, y)))
            .collect()
    };
    let epochs = history.last().map_or(1, |m| m.epoch);
    panel(
        &left,
        "loss",
        &[
            ("train", pts(&|m| Some(m.train_loss)), BLUE),
            ("validation", pts(&|m| m.val_loss), RED),
        ],
        epochs,
    )?;
    panel(
        &right,
        "accuracy",
        &[
            ("train", pts(&|m| Some(m.train_acc)), BLUE),
            ("validation", pts(&|m| m.val_acc), RED),
        ],
        epochs,
    )?;
    root.present().map_err(|e| e.to_string())
}

/// Draws the curves of `history` into `path` (`.svg` or `.png`).
pub fn write(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    register_font();
    match plot_format(path)? {
        PlotFormat::Svg => {
            let mut s = String::new();
            draw(SVGBackend::with_string(&mut s, SIZE).into_drawing_area(), history).map_err(|e| plot_err(path, e))?;
            write_atomic(path, s.as_bytes())
        }
        PlotFormat::Png => {
            let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
            draw(BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(), history)
                .map_err(|e| plot_err(path, e))?;
            let mut out = Vec::new();
            {
                let mut enc = png::Encoder::new(&mut out, SIZE.0, SIZE.1);
                enc.set_color(png::ColorType::Rgb);
                enc.set_depth(png::BitDepth::Eight);
                let mut w = enc.write_header().map_err(|e| plot_err(path, e))?;
                w.write_image_data(&rgb).map_err(|e| plot_err(path, e))?;
            }
            write_atomic(path, &out)
        }
    }
}

/// The image formats `--plot` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotFormat {
    /// `.svg`
    Svg,
    /// `.png`
    Png,
}

/// The format `path`'s extension asks for, or an error naming `--plot`.
pub fn plot_format(path: &Path) -> Result<PlotFormat> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("svg") => Ok(PlotFormat::Svg),
        Some("png") => Ok(PlotFormat::Png),
        _ => Err(Error::invalid(
            "--plot",
            format!("{}: expected a file name ending in .svg or .png", path.display()),
        )),
    }
}
