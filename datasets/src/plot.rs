//! Dependency-light PNG plotting for training metrics, histograms and step curves.
//!
//! Everything is drawn straight into an [`image::RgbImage`]: axes with "nice"
//! ticks (1/2/5 × 10^k), grid lines, a legend, and text in an embedded 5×8
//! bitmap font (printable ASCII), so no system fonts are needed. Non-finite
//! values (and non-positive values on log axes) are skipped, and degenerate
//! inputs such as empty or constant series never panic.

use std::io::Write;
use std::path::{Path, PathBuf};

use dinoadapt_core::io::write_atomically;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};

/// Size of one panel in the grid drawn by [`panels_png`] / [`render_panels`].
pub const PANEL_SIZE: (u32, u32) = (480, 320);
/// Size of the image drawn by [`histogram_png`] / [`render_histogram`].
pub const HISTOGRAM_SIZE: (u32, u32) = (640, 400);
/// Series colours (blue, orange, green, red, purple, brown, pink, cyan),
/// cycled when a panel has more than eight series.
#[rustfmt::skip]
pub const PALETTE: [Rgb<u8>; 8] = [
    Rgb([31, 119, 180]), Rgb([255, 127, 14]), Rgb([44, 160, 44]), Rgb([214, 39, 40]),
    Rgb([148, 103, 189]), Rgb([140, 86, 75]), Rgb([227, 119, 194]), Rgb([23, 190, 207]),
];
/// Background colour of every plot.
pub const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const TEXT: Rgb<u8> = Rgb([20, 20, 20]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const LEGEND_BORDER: Rgb<u8> = Rgb([170, 170, 170]);
/// Values of larger magnitude are skipped like non-finite ones, which keeps
/// every range computation finite.
const MAX_MAGNITUDE: f64 = 1e300;
/// Pixels kept free between the plot border and the extreme data values.
const INSET: i64 = 4;

/// Failure to write a plot file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot write plot {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode plot {path}: {message}")]
    Encode { path: PathBuf, message: String },
}

/// A named sequence of `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// How the points of a series are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Straight segments between consecutive points.
    Line,
    /// Horizontal then vertical segments (e.g. Kaplan–Meier curves).
    Step,
    /// Unconnected dots.
    Points,
}

/// One plot: title, axis labels and series drawn on shared axes.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub log_y: bool,
    pub style: Style,
}

impl Panel {
    /// An empty, linear, [`Style::Line`] panel with the given title.
    pub fn new(title: impl Into<String>) -> Self {
        Panel {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            log_y: false,
            style: Style::Line,
        }
    }

    /// Sets the x-axis label.
    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }

    /// Sets the y-axis label.
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }

    /// Uses a base-10 logarithmic y axis; non-positive values are skipped.
    pub fn log_y(mut self, log_y: bool) -> Self {
        self.log_y = log_y;
        self
    }

    /// Sets how points are connected.
    pub fn style(mut self, style: Style) -> Self {
        self.style = style;
        self
    }

    /// Adds a series, drawn in the next palette colour; an empty name keeps
    /// it out of the legend.
    pub fn series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        let name = name.into();
        self.series.push(Series { name, points });
        self
    }
}

/// Draws `panels` in a grid with `columns` columns (each panel [`PANEL_SIZE`])
/// and writes the PNG atomically.
pub fn panels_png(path: &Path, panels: &[Panel], columns: usize) -> Result<(), PlotError> {
    write_png(path, &render_panels(panels, columns))
}

/// Draws a histogram of `values` with `bins` equal bins over the range of the
/// finite values, plus labelled vertical `markers`, and writes the PNG atomically.
pub fn histogram_png(
    path: &Path,
    title: &str,
    x_label: &str,
    values: &[f64],
    bins: usize,
    markers: &[(String, f64)],
) -> Result<(), PlotError> {
    let image = render_histogram(title, x_label, values, bins, markers);
    write_png(path, &image)
}

/// Renders `panels` in a grid with `columns` columns (clamped to
/// `1..=panels.len()`); an empty slice renders one "no data" panel.
pub fn render_panels(panels: &[Panel], columns: usize) -> RgbImage {
    let (pw, ph) = PANEL_SIZE;
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().max(1).div_ceil(columns);
    let size = |n: usize, px: u32| u32::try_from(n).map_or(u32::MAX, |n| n.saturating_mul(px));
    let mut cv = Canvas::new(size(columns, pw), size(rows, ph));
    if panels.is_empty() {
        draw_panel(&mut cv, Rect::new(0, 0, pw, ph), &Panel::new(""));
    }
    for (i, panel) in panels.iter().enumerate() {
        let (x, y) = (size(i % columns, pw), size(i / columns, ph));
        draw_panel(&mut cv, Rect::new(x, y, pw, ph), panel);
    }
    cv.img
}

/// Renders the histogram of [`histogram_png`] into an image of [`HISTOGRAM_SIZE`].
/// `bins` is clamped to `1..=10_000`; the x axis also spans the finite markers
/// (non-finite ones are ignored), which are listed in the legend with the count.
pub fn render_histogram(
    title: &str,
    x_label: &str,
    values: &[f64],
    bins: usize,
    markers: &[(String, f64)],
) -> RgbImage {
    let (w, h) = HISTOGRAM_SIZE;
    let (mut cv, rect) = (Canvas::new(w, h), Rect::new(0, 0, w, h));
    let finite: Vec<f64> = values.iter().copied().filter(|&v| usable(v)).collect();
    let markers: Vec<&(String, f64)> = markers.iter().filter(|m| usable(m.1)).collect();
    let Some((lo, hi)) = min_max(finite.iter().copied()) else {
        let plot = draw_frame(&mut cv, rect, title, x_label, "count", None);
        cv.no_data(plot);
        return cv.img;
    };
    let (lo, hi) = widen(lo, hi);
    let bins = bins.clamp(1, 10_000);
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for v in &finite {
        counts[(((v - lo) / width).max(0.0) as usize).min(bins - 1)] += 1;
    }
    let max_count = counts.iter().copied().max().unwrap_or(0) as f64;
    let (x_lo, x_hi) = min_max(markers.iter().map(|m| m.1).chain([lo, hi])).unwrap_or((lo, hi));
    let x_axis = Axis::linear(x_lo, x_hi, 6);
    let y_axis = Axis::linear(0.0, max_count.max(5.0), 5);
    let axes = Some((&x_axis, &y_axis));
    let plot = draw_frame(&mut cv, rect, title, x_label, "count", axes);
    cv.clip = plot;
    let (fill, edge) = (Rgb([158, 196, 222]), PALETTE[0]);
    let base = y_axis.y_px(plot, 0.0);
    for (i, &count) in counts.iter().enumerate().filter(|(_, &c)| c > 0) {
        let x0 = x_axis.x_px(plot, lo + i as f64 * width);
        let x1 = x_axis.x_px(plot, lo + (i + 1) as f64 * width).max(x0 + 1);
        let bar = Rect::span(x0, y_axis.y_px(plot, count as f64), x1, base);
        cv.fill(bar, fill);
        match x1 - x0 >= 4 {
            true => cv.outline(bar, edge),
            false => cv.line((x0, bar.y), (x1, bar.y), edge, 1),
        }
    }
    let mut legend = vec![(format!("n = {}", finite.len()), edge)];
    for (i, (name, value)) in markers.into_iter().enumerate() {
        let colour = PALETTE[(3 + i) % PALETTE.len()];
        let x = x_axis.x_px(plot, *value);
        for y in (plot.y..=plot.bottom()).step_by(8) {
            cv.line((x, y), (x, y + 4), colour, 2);
        }
        let label = format_tick(*value, value.abs() * 1e-3);
        legend.push((format!("{name} = {label}"), colour));
    }
    cv.clip = rect;
    cv.legend(plot, &legend);
    cv.img
}

/// Encodes `img` as PNG, writes it to a temporary file next to `path` and
/// renames it into place, so readers never see a partial file. Missing parent
/// directories are created.
fn write_png(path: &Path, img: &RgbImage) -> Result<(), PlotError> {
    let mut bytes = Vec::new();
    let (w, h) = img.dimensions();
    let encoded = PngEncoder::new(&mut bytes).write_image(img, w, h, ExtendedColorType::Rgb8);
    encoded.map_err(|e| PlotError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomically(path, |w| w.write_all(&bytes)).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Draws one panel (frame, series and legend) into `rect`.
fn draw_panel(cv: &mut Canvas, rect: Rect, panel: &Panel) {
    let project = |&(x, y): &(f64, f64)| {
        let y = match panel.log_y {
            true if y > 0.0 => y.log10(),
            true => f64::NAN,
            false => y,
        };
        (usable(x) && usable(y)).then_some((x, y))
    };
    let project_all = |s: &Series| -> Vec<_> { s.points.iter().map(project).collect() };
    let data: Vec<Vec<_>> = panel.series.iter().map(project_all).collect();
    let valid = || data.iter().flatten().flatten();
    let ranges = min_max(valid().map(|p| p.0)).zip(min_max(valid().map(|p| p.1)));
    let (title, x_label, y_label) = (&panel.title, &panel.x_label, &panel.y_label);
    let Some(((x_lo, x_hi), (y_lo, y_hi))) = ranges else {
        let plot = draw_frame(cv, rect, title, x_label, y_label, None);
        cv.no_data(plot);
        return;
    };
    let x_axis = Axis::linear(x_lo, x_hi, 6);
    let y_axis = match panel.log_y {
        true => Axis::log10(y_lo, y_hi),
        false => Axis::linear(y_lo, y_hi, 5),
    };
    let plot = draw_frame(cv, rect, title, x_label, y_label, Some((&x_axis, &y_axis)));
    cv.clip = plot;
    for (points, &colour) in data.iter().zip(PALETTE.iter().cycle()) {
        let to_px = |&(x, y): &(f64, f64)| (x_axis.x_px(plot, x), y_axis.y_px(plot, y));
        let pixels: Vec<_> = points.iter().map(|p| p.as_ref().map(to_px)).collect();
        // Skipped points split a curve into separately drawn runs.
        for run in pixels.split(Option::is_none) {
            let run: Vec<(i64, i64)> = run.iter().flatten().copied().collect();
            match (panel.style, run.len()) {
                (Style::Points, _) | (_, 1) => run.iter().for_each(|&p| cv.dot(p, colour)),
                (Style::Line, _) => run.windows(2).for_each(|w| cv.line(w[0], w[1], colour, 2)),
                (Style::Step, _) => {
                    for w in run.windows(2) {
                        let corner = (w[1].0, w[0].1);
                        cv.line(w[0], corner, colour, 2);
                        cv.line(corner, w[1], colour, 2);
                    }
                }
            }
        }
    }
    cv.clip = rect;
    let names = panel.series.iter().map(|s| s.name.as_str());
    let entries: Vec<_> = names.zip(PALETTE.iter().cycle().copied()).collect();
    cv.legend(plot, &entries);
}

/// Draws title, axis labels, grid, ticks and border inside `rect` and returns
/// the plot area; without axes only the border is drawn.
fn draw_frame(
    cv: &mut Canvas,
    rect: Rect,
    title: &str,
    x_label: &str,
    y_label: &str,
    axes: Option<(&Axis, &Axis)>,
) -> Rect {
    cv.clip = rect;
    let title_scale = 1 + i64::from(text_width(title, 2) <= rect.w - 16);
    let title_at = (rect.x + rect.w / 2, rect.y + 6);
    cv.text(title_at, title, title_scale, Align::Center);
    let plot = plot_area(rect, y_label, axes.map(|a| a.1));
    let y_label_at = (rect.x + 6, plot.y + (plot.h + text_width(y_label, 1)) / 2);
    cv.text_up(y_label_at, y_label);
    let x_label_at = (plot.x + plot.w / 2, plot.bottom() + 18);
    cv.text(x_label_at, x_label, 1, Align::Center);
    if let Some((x_axis, y_axis)) = axes {
        for (v, label) in &x_axis.ticks {
            let x = x_axis.x_px(plot, *v);
            cv.line((x, plot.y), (x, plot.bottom()), GRID, 1);
            cv.line((x, plot.bottom()), (x, plot.bottom() + 3), AXIS, 1);
            cv.text((x, plot.bottom() + 6), label, 1, Align::Center);
        }
        for (v, label) in &y_axis.ticks {
            let y = y_axis.y_px(plot, *v);
            cv.line((plot.x, y), (plot.right(), y), GRID, 1);
            cv.line((plot.x - 3, y), (plot.x, y), AXIS, 1);
            cv.text((plot.x - 5, y - 3), label, 1, Align::Right);
        }
    }
    cv.outline(plot, AXIS);
    plot
}

/// The plot area inside `rect`, leaving room for title, labels and y tick labels.
fn plot_area(rect: Rect, y_label: &str, y_axis: Option<&Axis>) -> Rect {
    let ticks = y_axis.map_or(&[][..], |a| &a.ticks[..]);
    let tick_width = ticks.iter().map(|t| text_width(&t.1, 1)).max().unwrap_or(0);
    let label_width = if y_label.is_empty() { 0 } else { 12 };
    let left = rect.x + 14 + label_width + tick_width;
    Rect::span(left, rect.y + 28, rect.right() - 20, rect.bottom() - 32)
}

/// A plotted range with its ticks, in plotting space (log10 of the value on
/// logarithmic axes).
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    /// Tick positions and their labels.
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// A linear axis covering `[lo, hi]`, extended to multiples of a nice step
    /// (1, 2 or 5 × 10^k) that gives about `target` intervals.
    fn linear(lo: f64, hi: f64, target: usize) -> Self {
        let (lo, hi) = widen(lo, hi);
        let step = nice_step((hi - lo) / target.max(1) as f64);
        let (first, last) = ((lo / step).floor(), (hi / step).ceil());
        let ticks = (0..=((last - first) as usize).min(100))
            .map(|i| (first + i as f64) * step)
            .map(|v| (v, format_tick(v, step)))
            .collect();
        let (lo, hi) = (first * step, last * step);
        Axis { lo, hi, ticks }
    }

    /// A logarithmic axis over the log10 range `[lo, hi]`, extended to whole
    /// decades; ranges of at most two decades also get ticks at 2 and 5 × 10^k.
    fn log10(lo: f64, hi: f64) -> Self {
        let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
        let every = ((hi - lo) / 6.0).ceil().max(1.0);
        let mantissas = &[1.0f64, 2.0, 5.0][..if hi - lo <= 2.0 { 3 } else { 1 }];
        let mut ticks = Vec::new();
        for decade in 0..=((hi - lo) / every) as usize {
            let exponent = lo + decade as f64 * every;
            for m in mantissas {
                let (t, v) = (exponent + m.log10(), m * 10f64.powf(exponent));
                ticks.extend((t <= hi + 1e-9).then(|| (t, format_tick(v, v))));
            }
        }
        Axis { lo, hi, ticks }
    }

    /// Position of `v` as a fraction of the axis range.
    fn fraction(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }

    /// Pixel column of `v` inside `plot`.
    fn x_px(&self, plot: Rect, v: f64) -> i64 {
        let span = (plot.w - 1 - 2 * INSET) as f64;
        to_pixel((plot.x + INSET) as f64 + self.fraction(v) * span)
    }

    /// Pixel row of `v` inside `plot` (larger values are higher up).
    fn y_px(&self, plot: Rect, v: f64) -> i64 {
        let span = (plot.h - 1 - 2 * INSET) as f64;
        to_pixel((plot.bottom() - INSET) as f64 - self.fraction(v) * span)
    }
}

/// Rounds a pixel coordinate, bounding it so line drawing stays cheap.
fn to_pixel(v: f64) -> i64 {
    (v.round() as i64).clamp(-100_000, 100_000)
}

/// The smallest 1, 2 or 5 × 10^k that is at least `raw` (which must be positive).
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let nice = [1.0, 2.0, 5.0].into_iter().find(|&m| raw / magnitude <= m);
    nice.unwrap_or(10.0) * magnitude
}

/// Widens an empty or numerically negligible range so it can hold ticks.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    let mag = lo.abs().max(hi.abs());
    if hi - lo > mag * 1e-9 && hi - lo > 1e-200 {
        return (lo, hi);
    }
    let pad = if mag > 1e-200 { mag / 10.0 } else { 1.0 };
    (lo - pad, hi + pad)
}

/// Formats a tick value compactly (`0.001`, `1200`, `2.5e-5`, `1.2e6`) with as
/// many digits as a tick spacing of `step` needs.
fn format_tick(v: f64, step: f64) -> String {
    let step = step.abs();
    if v == 0.0 || v.abs() < step * 1e-6 {
        return "0".to_string();
    }
    let text = if (1e-3..1e5).contains(&v.abs()) {
        let digits = (-step.log10().floor()).clamp(0.0, 12.0) as usize;
        format!("{v:.digits$}")
    } else {
        let digits = (v.abs().log10().floor() - step.log10().floor()).clamp(0.0, 6.0) as usize;
        format!("{v:.digits$e}")
    };
    let trim = |m: &str| match m.contains('.') {
        true => m.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => m.to_string(),
    };
    match text.split_once('e') {
        Some((mantissa, exponent)) => format!("{}e{exponent}", trim(mantissa)),
        None => trim(&text),
    }
}

/// Whether `v` can be plotted: finite and not absurdly large.
fn usable(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_MAGNITUDE
}

/// Smallest and largest of `values`, or `None` when there are none.
fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| {
        let (lo, hi) = acc.unwrap_or((v, v));
        Some((lo.min(v), hi.max(v)))
    })
}

/// An axis-aligned pixel rectangle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    x: i64,
    y: i64,
    w: i64,
    h: i64,
}

impl Rect {
    fn new(x: u32, y: u32, w: u32, h: u32) -> Self {
        let [x, y, w, h] = [x, y, w, h].map(i64::from);
        Rect { x, y, w, h }
    }

    /// The rectangle between two inclusive corners, given in either order.
    fn span(x0: i64, y0: i64, x1: i64, y1: i64) -> Self {
        let (x, w) = (x0.min(x1), (x1 - x0).abs() + 1);
        let (y, h) = (y0.min(y1), (y1 - y0).abs() + 1);
        Rect { x, y, w, h }
    }

    fn right(self) -> i64 {
        self.x + self.w - 1
    }

    fn bottom(self) -> i64 {
        self.y + self.h - 1
    }
}

/// Horizontal text alignment relative to the anchor point (the discriminant
/// is the anchor's offset from the left edge in half text widths).
#[derive(Debug, Clone, Copy)]
enum Align {
    Left = 0,
    Center = 1,
    Right = 2,
}

/// Width in pixels of `s` drawn at `scale`.
fn text_width(s: &str, scale: i64) -> i64 {
    (s.chars().count() as i64 * 6 - 1).max(0) * scale
}

/// An image plus a clipping rectangle that bounds every drawing call.
struct Canvas {
    img: RgbImage,
    clip: Rect,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        let img = RgbImage::from_pixel(width, height, BACKGROUND);
        let clip = Rect::new(0, 0, width, height);
        Canvas { img, clip }
    }

    /// Fills `r` (clipped).
    fn fill(&mut self, r: Rect, colour: Rgb<u8>) {
        let (c, (w, h)) = (self.clip, self.img.dimensions());
        let (x0, y0) = (r.x.max(c.x).max(0), r.y.max(c.y).max(0));
        let x1 = r.right().min(c.right()).min(i64::from(w) - 1);
        let y1 = r.bottom().min(c.bottom()).min(i64::from(h) - 1);
        for (x, y) in (y0..=y1).flat_map(|y| (x0..=x1).map(move |x| (x, y))) {
            self.img.put_pixel(x as u32, y as u32, colour);
        }
    }

    fn outline(&mut self, r: Rect, colour: Rgb<u8>) {
        let (x0, y0, x1, y1) = (r.x, r.y, r.right(), r.bottom());
        self.fill(Rect::span(x0, y0, x1, y0), colour);
        self.fill(Rect::span(x0, y1, x1, y1), colour);
        self.fill(Rect::span(x0, y0, x0, y1), colour);
        self.fill(Rect::span(x1, y0, x1, y1), colour);
    }

    /// Bresenham line; a `width` of 2 draws 2×2 blocks for a bolder stroke.
    fn line(&mut self, from: (i64, i64), to: (i64, i64), colour: Rgb<u8>, width: i64) {
        let ((mut x, mut y), (x1, y1)) = (from, to);
        let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
        let (sx, sy) = ((x1 - x).signum(), (y1 - y).signum());
        let mut err = dx + dy;
        loop {
            self.fill(Rect::span(x, y, x + width - 1, y + width - 1), colour);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// A small filled disc centred on `(x, y)`.
    fn dot(&mut self, (x, y): (i64, i64), colour: Rgb<u8>) {
        for (dx, dy) in (-2..=2).flat_map(|dx| (-2..=2).map(move |dy| (dx, dy))) {
            if dx * dx + dy * dy <= 5 {
                self.fill(Rect::span(x + dx, y + dy, x + dx, y + dy), colour);
            }
        }
    }

    /// Draws `s` with its top edge at `y`, aligned horizontally on `x`.
    fn text(&mut self, (x, y): (i64, i64), s: &str, scale: i64, align: Align) {
        let left = x - text_width(s, scale) * align as i64 / 2;
        for (i, ch) in s.chars().take(200).enumerate() {
            for (col, row) in glyph_pixels(ch) {
                let (x, y) = (left + (i as i64 * 6 + col) * scale, y + row * scale);
                self.fill(Rect::span(x, y, x + scale - 1, y + scale - 1), TEXT);
            }
        }
    }

    /// Draws `s` turned a quarter anticlockwise (reading upwards), glyph tops
    /// on column `x` and the first glyph ending at row `bottom`.
    fn text_up(&mut self, (x, bottom): (i64, i64), s: &str) {
        for (i, ch) in s.chars().take(200).enumerate() {
            for (col, row) in glyph_pixels(ch) {
                let (x, y) = (x + row, bottom - (i as i64 * 6 + col));
                self.fill(Rect::span(x, y, x, y), TEXT);
            }
        }
    }

    /// Centred "no data" notice for a plot area without drawable points.
    fn no_data(&mut self, plot: Rect) {
        let centre = (plot.x + plot.w / 2, plot.y + plot.h / 2 - 7);
        self.text(centre, "no data", 2, Align::Center);
    }

    /// Draws a boxed legend of the entries with non-empty names (as many as
    /// fit) in whichever corner of `plot` covers the fewest data pixels.
    fn legend<S: AsRef<str>>(&mut self, plot: Rect, entries: &[(S, Rgb<u8>)]) {
        let fit = ((plot.h - 12) / 11).max(0) as usize;
        let named = entries.iter().filter(|e| !e.0.as_ref().is_empty());
        let shorten = |(name, colour): &(S, _)| (name.as_ref().chars().take(48).collect(), *colour);
        let rows: Vec<(String, Rgb<u8>)> = named.take(fit).map(shorten).collect();
        let Some(text_w) = rows.iter().map(|r| text_width(&r.0, 1)).max() else {
            return;
        };
        let (w, h) = (text_w + 26, rows.len() as i64 * 11 + 7);
        let (left, top) = (plot.x + 6, plot.y + 6);
        let (right, bottom) = (plot.right() - 6 - w, plot.bottom() - 6 - h);
        let busy = |&(x, y): &(i64, i64)| {
            let pixels = (y..y + h).flat_map(|py| (x..x + w).map(move |px| (px, py)));
            let quiet = [BACKGROUND, GRID, AXIS];
            let is_data = |&(px, py): &(i64, i64)| {
                let pixel = self.img.get_pixel_checked(px as u32, py as u32);
                pixel.is_some_and(|p| !quiet.contains(p))
            };
            pixels.filter(is_data).count()
        };
        let corners = [(right, top), (left, top), (right, bottom), (left, bottom)];
        let (x, y) = corners.into_iter().min_by_key(busy).unwrap_or((right, top));
        self.fill(Rect { x, y, w, h }, BACKGROUND);
        self.outline(Rect { x, y, w, h }, LEGEND_BORDER);
        for (i, (name, colour)) in rows.iter().enumerate() {
            let row_y = y + 5 + i as i64 * 11;
            self.line((x + 5, row_y + 3), (x + 17, row_y + 3), *colour, 2);
            self.text((x + 21, row_y), name, 1, Align::Left);
        }
    }
}

/// The set pixels `(column 0..5, row 0..8)` of `ch`'s glyph, row 0 at the top;
/// characters outside printable ASCII render as '?'.
fn glyph_pixels(ch: char) -> impl Iterator<Item = (i64, i64)> {
    let index = (ch as usize).wrapping_sub(32);
    let bits = *FONT.get(index).unwrap_or(&FONT[31]); // 31: '?'
    (0..8i64)
        .flat_map(|row| (0..5i64).map(move |col| (col, row)))
        .filter(move |&(col, row)| (bits >> ((7 - row) * 8 + (4 - col))) & 1 == 1)
}

/// 5×8 glyphs for ASCII 32..=126, one byte per row (top row most significant,
/// bit 4 = leftmost column); capitals and digits use the top seven rows, the
/// eighth holds descenders.
#[rustfmt::skip]
const FONT: [u64; 95] = [
    0x0000000000000000, 0x0404040404000400, 0x0A0A000000000000, 0x0A0A1F0A1F0A0A00, //  !"#
    0x040F140E051E0400, 0x1819020408130300, 0x0C12140815120D00, 0x0404080000000000, // $%&'
    0x0204080808040200, 0x0804020202040800, 0x0004150E15040000, 0x0004041F04040000, // ()*+
    0x00000000000C0408, 0x0000001F00000000, 0x00000000000C0C00, 0x0001020408100000, // ,-./
    0x0E11131519110E00, 0x040C040404040E00, 0x0E11010204081F00, 0x1F02040201110E00, // 0123
    0x02060A121F020200, 0x1F101E0101110E00, 0x0608101E11110E00, 0x1F01020408080800, // 4567
    0x0E11110E11110E00, 0x0E11110F01020C00, 0x000C0C000C0C0000, 0x000C0C00000C0408, // 89:;
    0x0204081008040200, 0x00001F001F000000, 0x0804020102040800, 0x0E11010204000400, // <=>?
    0x0E11010D15150E00, 0x0E11111F11111100, 0x1E11111E11111E00, 0x0E11101010110E00, // @ABC
    0x1C12111111121C00, 0x1F10101E10101F00, 0x1F10101E10101000, 0x0E11101711110F00, // DEFG
    0x1111111F11111100, 0x0E04040404040E00, 0x0702020202120C00, 0x1112141814121100, // HIJK
    0x1010101010101F00, 0x111B151511111100, 0x1111191513111100, 0x0E11111111110E00, // LMNO
    0x1E11111E10101000, 0x0E11111115120D00, 0x1E11111E14121100, 0x0F10100E01011E00, // PQRS
    0x1F04040404040400, 0x1111111111110E00, 0x11111111110A0400, 0x1111111515150A00, // TUVW
    0x11110A040A111100, 0x11110A0404040400, 0x1F01020408101F00, 0x0E08080808080E00, // XYZ[
    0x0010080402010000, 0x0E02020202020E00, 0x040A110000000000, 0x0000000000001F00, // \]^_
    0x0804020000000000, 0x00000E010F110F00, 0x1010161911111E00, 0x00000E1010110E00, // `abc
    0x01010D1311110F00, 0x00000E111F100E00, 0x0609081C08080800, 0x00000F11110F010E, // defg
    0x1010161911111100, 0x04000C0404040E00, 0x020006020202120C, 0x1010121418141200, // hijk
    0x0C04040404040E00, 0x00001A1515111100, 0x0000161911111100, 0x00000E1111110E00, // lmno
    0x00001E11111E1010, 0x00000F11110F0101, 0x0000161910101000, 0x00000F100E011E00, // pqrs
    0x08081C0808090600, 0x0000111111130D00, 0x00001111110A0400, 0x0000111115150A00, // tuvw
    0x0000110A040A1100, 0x00001111110F010E, 0x00001F0204081F00, 0x0204040804040200, // xyz{
    0x0404040404040400, 0x0804040204040800, 0x0000081502000000, // |}~
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        let ranges = [(0.0, 1.0), (0.31, 2.4), (-3.0, 7.0), (1e-6, 3e-5)];
        let odd = [(1234.0, 98765.0), (5.0, 5.0), (0.0, 0.0), (-1e7, 2e9)];
        for (lo, hi) in ranges.into_iter().chain(odd) {
            let axis = Axis::linear(lo, hi, 5);
            let ticks: Vec<f64> = axis.ticks.iter().map(|t| t.0).collect();
            let (first, last) = (ticks[0], ticks[ticks.len() - 1]);
            assert!((3..=12).contains(&ticks.len()), "{lo}..{hi}: {ticks:?}");
            assert!(first <= lo && last >= hi && (axis.lo, axis.hi) == (first, last));
            let step = ticks[1] - ticks[0];
            let mantissa = step / 10f64.powf(step.log10().floor());
            let nice = [1.0, 2.0, 5.0, 10.0].map(|m| (mantissa - m).abs() < 1e-9);
            assert!(nice.contains(&true), "{lo}..{hi}: step {step}");
            for pair in ticks.windows(2) {
                assert!((pair[1] - pair[0] - step).abs() <= step * 1e-6);
            }
        }
        let labels = |a: Axis| a.ticks.into_iter().map(|t| t.1 + " ").collect::<String>();
        assert_eq!(labels(Axis::linear(0.31, 2.4, 5)), "0 0.5 1 1.5 2 2.5 ");
        assert_eq!(labels(Axis::log10(-2.5, 1.2)), "0.001 0.01 0.1 1 10 100 ");
        assert_eq!(labels(Axis::log10(-0.7, -0.2)), "0.1 0.2 0.5 1 ");
    }

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(format_tick(0.001, 0.001), "0.001");
        assert_eq!(format_tick(2.5e-5, 5e-6), "2.5e-5");
        assert_eq!(format_tick(1200.0, 200.0), "1200");
        assert_eq!(format_tick(1.2e6, 2e5), "1.2e6");
        assert_eq!(format_tick(0.1 + 0.2, 0.1), "0.3");
        assert_eq!(format_tick(-1.5, 0.5), "-1.5");
        assert_eq!(format_tick(1e-17, 0.1), "0");
    }

    #[test]
    fn glyph_renders_expected_pixels() {
        let mut cv = Canvas::new(8, 10);
        cv.text((1, 1), "A", 1, Align::Left);
        let on = |x, y| cv.img.get_pixel(x, y) == &TEXT;
        let row = |y| (0..8).map(|x| if on(x, y) { '#' } else { '.' }).collect();
        let art: Vec<String> = (0..10).map(row).collect();
        let expected = [
            "........", "..###...", ".#...#..", ".#...#..", ".#####..", ".#...#..", ".#...#..",
            ".#...#..", "........", "........",
        ];
        assert_eq!(art, expected);
        let mut big = Canvas::new(10, 16);
        big.text((0, 0), "T", 2, Align::Left);
        let on = |x, y| big.img.get_pixel(x, y) == &TEXT;
        assert!(on(9, 1) && on(4, 13) && !on(3, 13));
        assert!(glyph_pixels('é').eq(glyph_pixels('?')));
        assert_eq!(glyph_pixels('g').map(|p| p.1).max(), Some(7), "descender");
    }

    #[test]
    fn panel_draws_series_only_where_data_lies() {
        let points: Vec<(f64, f64)> = (0..=10).map(|i| (i as f64, i as f64)).collect();
        let panel = Panel::new("diag").y_label("loss").series("y=x", points);
        let img = render_panels(std::slice::from_ref(&panel), 2);
        assert_eq!(img.dimensions(), PANEL_SIZE);
        let (x_axis, y_axis) = (Axis::linear(0.0, 10.0, 6), Axis::linear(0.0, 10.0, 5));
        let plot = plot_area(Rect::new(0, 0, 480, 320), "loss", Some(&y_axis));
        let at = |x, y| *img.get_pixel(x_axis.x_px(plot, x) as u32, y_axis.y_px(plot, y) as u32);
        assert_eq!(at(5.0, 5.0), PALETTE[0]);
        assert_eq!((at(7.0, 1.0), at(9.0, 3.0)), (BACKGROUND, BACKGROUND));

        let grid = render_panels(&[panel.clone(), panel.clone(), panel], 2);
        assert_eq!(grid.dimensions(), (960, 640));
        let blank = |(x, y, p): (u32, u32, &Rgb<u8>)| x < 480 || y < 320 || *p == BACKGROUND;
        assert!(grid.enumerate_pixels().all(blank), "unused cell");
    }

    #[test]
    fn png_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/curves.png");
        let p = || vec![(0.0, 2.0), (1.0, 0.5)];
        let panels = [
            Panel::new("loss").log_y(true).series("a", p()),
            Panel::new("km").style(Style::Step).series("", p()),
            Panel::new("lr").style(Style::Points).series("c", p()),
        ];
        let dims = |p: &Path| image::open(p).unwrap().to_rgb8().dimensions();
        panels_png(&path, &panels, 3).unwrap();
        assert_eq!(dims(&path), (1440, 320));
        let hist = dir.path().join("hist.png");
        let (values, markers) = ([0.1, 0.5, 0.5, 0.9], [("cut".to_string(), 0.42)]);
        histogram_png(&hist, "cosine", "x", &values, 10, &markers).unwrap();
        assert_eq!(dims(&hist), HISTOGRAM_SIZE);
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 2, "no temporary files are left behind");
        let err = panels_png(&hist.join("x.png"), &panels, 1).unwrap_err();
        assert!(matches!(err, PlotError::Io { .. }), "{err}");
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let inputs = [
            vec![(nan, nan); 5],
            vec![],
            vec![(0.0, 3.0), (1.0, 3.0), (2.0, 3.0)],
            vec![(5.0, 0.0)],
            vec![(0.0, -1.0), (1.0, 0.0), (2.0, 1e-300), (3.0, 5e-324)],
            vec![(0.0, nan), (nan, 1.0), (inf, 2.0), (1.0, -3.0)],
            vec![(1.0, 1e308), (2.0, -inf), (3.0, f64::MIN_POSITIVE)],
            vec![(-1e300, 1e300), (1e300, -1e300)],
            vec![(1.0, 1.0), (1.0 + 1e-15, 1.0 + 1e-15)],
        ];
        let mut panels = vec![Panel::new("é∞".repeat(300)).y_label("y".repeat(400))];
        for (points, log_y) in inputs.iter().flat_map(|p| [(p, false), (p, true)]) {
            for style in [Style::Line, Style::Step, Style::Points] {
                let panel = Panel::new("p").style(style).log_y(log_y);
                panels.push(panel.series("s", points.clone()).series("", points.clone()));
            }
        }
        for columns in [0, 1, 4, usize::MAX] {
            render_panels(&panels, columns);
        }
        let blank = render_panels(&[], 3);
        assert_eq!(blank.dimensions(), PANEL_SIZE);
        assert!(blank.pixels().any(|p| *p == TEXT), "says no data");
        let markers = [("nan".to_string(), nan), ("far".to_string(), 1e6)];
        for values in [&[][..], &[nan, f64::INFINITY], &[2.0; 7], &[0.0, 1.0, nan]] {
            for bins in [0, 1, 3, usize::MAX] {
                render_histogram("h", "x", values, bins, &markers);
            }
        }
    }
}
