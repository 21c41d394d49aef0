//! PNG plots of training metrics, histograms and step curves, drawn with plotters into an
//! [`image::RgbImage`]: axes with "nice" ticks (1/2/5 × 10^k), grid lines, a legend, and text
//! in an embedded DejaVu Sans, so no system fonts are needed. Non-finite values (and
//! non-positive values on log axes) are skipped, and degenerate inputs such as empty or
//! constant series never panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dinoadapt_core::io::write_atomically;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};
use plotters::chart::SeriesAnno;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
/// Room kept free between the plot border and the extreme data values, as a
/// fraction of the axis range.
const INSET: f64 = 0.015;

/// Failure to draw or write a plot file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot write plot {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode plot {path}: {message}")]
    Encode { path: PathBuf, message: String },
    #[error("cannot draw plot: {0}")]
    Draw(String),
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
    write_png(path, &render_panels(panels, columns)?)
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
    let image = render_histogram(title, x_label, values, bins, markers)?;
    write_png(path, &image)
}

/// Renders `panels` in a grid with `columns` columns (clamped to
/// `1..=panels.len()`); an empty slice renders one "no data" panel.
pub fn render_panels(panels: &[Panel], columns: usize) -> Result<RgbImage, PlotError> {
    let (pw, ph) = PANEL_SIZE;
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().max(1).div_ceil(columns);
    let size = |n: usize, px: u32| u32::try_from(n).map_or(u32::MAX, |n| n.saturating_mul(px));
    render((size(columns, pw), size(rows, ph)), |root| {
        let cells = root.split_evenly((rows, columns));
        if panels.is_empty() {
            draw_panel(&cells[0], &Panel::new(""))?;
        }
        for (cell, panel) in cells.iter().zip(panels) {
            draw_panel(cell, panel)?;
        }
        Ok(())
    })
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
) -> Result<RgbImage, PlotError> {
    render(HISTOGRAM_SIZE, |root| {
        draw_histogram(root, title, x_label, values, bins, markers)
    })
}

/// The plotters drawing area of one image or panel.
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// Data coordinates of a panel: linear axes (log10 of the value on a
/// logarithmic y axis) whose grid lines and labels are the [`Axis`] ticks.
type Coords = Cartesian2d<Scale, Scale>;
type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Coords>;

/// DejaVu Sans 2.37 (Bitstream Vera licence, `datasets/fonts/LICENSE-DejaVu.txt`): every
/// plot's text, so no system font is needed.
static FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
/// The name [`FONT_BYTES`] is registered under with plotters.
const FONT: &str = "DejaVu Sans";

/// Registers the embedded font with plotters (once per process).
fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = REGISTERED.get_or_init(|| {
        // Also as plotters' default family, which its legend falls back to.
        [FONT, "sans-serif"]
            .into_iter()
            .all(|name| plotters::style::register_font(name, FontStyle::Normal, FONT_BYTES).is_ok())
    });
    match registered {
        true => Ok(()),
        false => Err(PlotError::Draw("the embedded font cannot be read".into())),
    }
}

/// Draws with `draw` on a white `size` image.
fn render(
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area) -> Result<(), PlotError>,
) -> Result<RgbImage, PlotError> {
    register_font()?;
    let mut buffer = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&colour(BACKGROUND)).map_err(draw_error)?;
        draw(&root)?;
        root.present().map_err(draw_error)?;
    }
    Ok(RgbImage::from_raw(width, height, buffer).expect("the buffer holds width × height pixels"))
}

fn draw_error(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

fn colour(c: Rgb<u8>) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

fn font(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().color(&colour(TEXT))
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

/// Draws one panel (frame, series and legend) into `area`; returns its data
/// coordinates, or `None` for a panel without drawable points ("no data").
fn draw_panel(area: &Area, panel: &Panel) -> Result<Option<Coords>, PlotError> {
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
        draw_no_data(area, title, x_label, y_label)?;
        return Ok(None);
    };
    let x_axis = Axis::linear(x_lo, x_hi, 6);
    let y_axis = match panel.log_y {
        true => Axis::log10(y_lo, y_hi),
        false => Axis::linear(y_lo, y_hi, 5),
    };
    let mut chart = draw_frame(area, title, x_label, y_label, &x_axis, &y_axis)?;
    for ((series, points), c) in panel.series.iter().zip(&data).zip(PALETTE.iter().cycle()) {
        let line = colour(*c).stroke_width(2);
        let mut labelled = false;
        // Skipped points split a curve into separately drawn runs.
        for run in points.split(Option::is_none) {
            let run: Vec<(f64, f64)> = run.iter().flatten().copied().collect();
            let drawn = match (panel.style, run.len()) {
                (_, 0) => continue,
                (Style::Points, _) | (_, 1) => {
                    let dots = run.iter().map(|&p| Circle::new(p, 2, line.filled()));
                    chart.draw_series(dots)
                }
                (Style::Line, _) => chart.draw_series(LineSeries::new(run, line)),
                (Style::Step, _) => {
                    let corners = run.windows(2).flat_map(|w| [w[0], (w[1].0, w[0].1)]);
                    let path: Vec<_> = corners.chain(run.last().copied()).collect();
                    chart.draw_series(LineSeries::new(path, line))
                }
            }
            .map_err(draw_error)?;
            if !labelled && !series.name.is_empty() {
                legend_entry(drawn, &series.name, *c);
                labelled = true;
            }
        }
        if !labelled && !series.name.is_empty() {
            let empty = chart.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>());
            legend_entry(empty.map_err(draw_error)?, &series.name, *c);
        }
    }
    let points: Vec<(f64, f64)> = valid().copied().collect();
    draw_legend(&mut chart, &x_axis, &y_axis, &points)?;
    Ok(Some(chart.as_coord_spec().clone()))
}

/// Draws the histogram of [`render_histogram`] into `area`.
fn draw_histogram(
    area: &Area,
    title: &str,
    x_label: &str,
    values: &[f64],
    bins: usize,
    markers: &[(String, f64)],
) -> Result<(), PlotError> {
    let finite: Vec<f64> = values.iter().copied().filter(|&v| usable(v)).collect();
    let markers: Vec<&(String, f64)> = markers.iter().filter(|m| usable(m.1)).collect();
    let Some((lo, hi)) = min_max(finite.iter().copied()) else {
        return draw_no_data(area, title, x_label, "count");
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
    let mut chart = draw_frame(area, title, x_label, "count", &x_axis, &y_axis)?;
    let (fill, edge) = (RGBColor(158, 196, 222), colour(PALETTE[0]));
    let mut tops = Vec::new();
    for (i, &count) in counts.iter().enumerate().filter(|(_, &c)| c > 0) {
        let (x0, x1) = (lo + i as f64 * width, lo + (i + 1) as f64 * width);
        let (top, base) = ((x0, count as f64), (x1, 0.0));
        let pixels = |p: &(f64, f64)| chart.backend_coord(p).0;
        let wide = pixels(&base) - pixels(&top) >= 4;
        let bar = Rectangle::new([top, base], fill.filled());
        let outline = match wide {
            true => vec![top, (x1, count as f64), base, (x0, 0.0), top],
            false => vec![top, (x1, count as f64)],
        };
        let bar_drawn = chart.draw_series([bar]);
        bar_drawn.map_err(draw_error)?;
        let outline = PathElement::new(outline, edge.stroke_width(1));
        chart.draw_series([outline]).map_err(draw_error)?;
        tops.push(((x0 + x1) / 2.0, count as f64));
    }
    let counted = chart.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>());
    legend_entry(
        counted.map_err(draw_error)?,
        &format!("n = {}", finite.len()),
        PALETTE[0],
    );
    for (i, (name, value)) in markers.into_iter().enumerate() {
        let c = PALETTE[(3 + i) % PALETTE.len()];
        let line = vec![(*value, y_axis.lo), (*value, y_axis.hi)];
        let dashes = DashedLineSeries::new(line, 4, 4, colour(c).stroke_width(2));
        let drawn = chart.draw_series(dashes).map_err(draw_error)?;
        let label = format_tick(*value, value.abs() * 1e-3);
        legend_entry(drawn, &format!("{name} = {label}"), c);
    }
    draw_legend(&mut chart, &x_axis, &y_axis, &tops)
}

/// Title, axis labels, grid at the axis ticks, tick labels and border inside
/// `area`; returns the chart to draw the data on.
fn draw_frame<'a, 'b>(
    area: &'a Area<'b>,
    title: &str,
    x_label: &str,
    y_label: &str,
    x_axis: &Axis,
    y_axis: &Axis,
) -> Result<Chart<'a, 'b>, PlotError> {
    let tick_width = y_axis.ticks.iter().map(|t| t.1.chars().count()).max();
    let label_width = if y_label.is_empty() { 0 } else { 18 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, font(16))
        .margin(8)
        .margin_right(20)
        .x_label_area_size(36)
        .y_label_area_size(12 + label_width + 7 * tick_width.unwrap_or(0) as u32)
        .build_cartesian_2d(x_axis.range(), y_axis.range())
        .map_err(draw_error)?;
    let label = |axis: &Axis, v: f64| -> String {
        let near = |t: &&(f64, String)| (t.0 - v).abs() <= (axis.hi - axis.lo) * 1e-9;
        axis.ticks
            .iter()
            .find(near)
            .map_or(String::new(), |t| t.1.clone())
    };
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(x_axis.ticks.len())
        .y_labels(y_axis.ticks.len())
        .x_label_formatter(&|v| label(x_axis, *v))
        .y_label_formatter(&|v| label(y_axis, *v))
        .label_style(font(12))
        .axis_desc_style(font(13))
        .bold_line_style(colour(GRID))
        .light_line_style(TRANSPARENT)
        .axis_style(colour(AXIS))
        .draw()
        .map_err(draw_error)?;
    let (x, y) = (chart.x_range(), chart.y_range());
    let border = Rectangle::new([(x.start, y.start), (x.end, y.end)], colour(AXIS));
    chart.draw_series([border]).map_err(draw_error)?;
    Ok(chart)
}

/// The frame of a panel without drawable points, with a centred "no data".
fn draw_no_data(area: &Area, title: &str, x_label: &str, y_label: &str) -> Result<(), PlotError> {
    let empty = |lo, hi| Axis {
        lo,
        hi,
        ticks: Vec::new(),
    };
    let mut chart = draw_frame(
        area,
        title,
        x_label,
        y_label,
        &empty(0.0, 1.0),
        &empty(0.0, 1.0),
    )?;
    let notice = Text::new(
        "no data",
        (0.5, 0.5),
        font(20).pos(Pos::new(HPos::Center, VPos::Center)),
    );
    chart.draw_series([notice]).map_err(draw_error)?;
    Ok(())
}

/// Gives a drawn series its legend row: `name` (at most 48 characters) after a
/// short line in colour `c`.
fn legend_entry(series: &mut SeriesAnno<'_, BitMapBackend<'_>>, name: &str, c: Rgb<u8>) {
    let name: String = name.chars().take(48).collect();
    let line = colour(c).stroke_width(2);
    series
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], line));
}

/// Draws the boxed legend of the labelled series in whichever corner of the
/// plot holds the fewest of `points`.
fn draw_legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    x_axis: &Axis,
    y_axis: &Axis,
    points: &[(f64, f64)],
) -> Result<(), PlotError> {
    let (mid_x, mid_y) = ((x_axis.lo + x_axis.hi) / 2.0, (y_axis.lo + y_axis.hi) / 2.0);
    let count = |right: bool, top: bool| {
        let inside = |p: &&(f64, f64)| (p.0 >= mid_x) == right && (p.1 >= mid_y) == top;
        points.iter().filter(inside).count()
    };
    let corners = [
        (SeriesLabelPosition::UpperRight, count(true, true)),
        (SeriesLabelPosition::UpperLeft, count(false, true)),
        (SeriesLabelPosition::LowerRight, count(true, false)),
        (SeriesLabelPosition::LowerLeft, count(false, false)),
    ];
    let corner = corners.into_iter().min_by_key(|c| c.1).map(|c| c.0);
    chart
        .configure_series_labels()
        .position(corner.unwrap_or(SeriesLabelPosition::UpperRight))
        .margin(6)
        .label_font(font(12))
        .background_style(colour(BACKGROUND).filled())
        .border_style(colour(LEGEND_BORDER))
        .draw()
        .map_err(draw_error)
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

    /// The plotted range: the ticks' span and an [`INSET`] either side.
    fn range(&self) -> Scale {
        let pad = (self.hi - self.lo) * INSET;
        let ticks = self.ticks.iter().map(|t| t.0).collect();
        Scale {
            lo: self.lo - pad,
            hi: self.hi + pad,
            ticks,
        }
    }
}

/// A linear plotters coordinate over `lo..hi` whose key points (grid lines and
/// tick labels) are exactly an [`Axis`]'s ticks.
#[derive(Debug, Clone)]
struct Scale {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for Scale {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, (from, to): (i32, i32)) -> i32 {
        let fraction = (v - self.lo) / (self.hi - self.lo);
        let pixel = f64::from(from) + fraction * f64::from(to - from);
        // Bounded, so far-off values stay cheap to draw.
        pixel.round().clamp(-100_000.0, 100_000.0) as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
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

    /// Pixels of text: dark, as anti-aliased glyph cores in [`TEXT`] are.
    fn inked(p: &Rgb<u8>) -> bool {
        p.0.iter().all(|&c| c < 100)
    }

    #[test]
    fn text_is_drawn_with_the_embedded_font() {
        let with_title = render_panels(&[Panel::new("Validation loss")], 1).unwrap();
        let without = render_panels(&[Panel::new("")], 1).unwrap();
        let title_band = |img: &RgbImage| {
            let band = img.enumerate_pixels().filter(|(_, y, _)| *y < 26);
            band.filter(|(_, _, p)| inked(p)).count()
        };
        assert!(title_band(&with_title) > 50, "the title is written");
        assert_eq!(title_band(&without), 0);
        assert!(without.pixels().any(inked), "says no data");
    }

    #[test]
    fn panel_draws_series_only_where_data_lies() {
        let points: Vec<(f64, f64)> = (0..=10).map(|i| (i as f64, i as f64)).collect();
        let panel = Panel::new("diag").y_label("loss").series("y=x", points);
        let (w, h) = PANEL_SIZE;
        let mut buffer = vec![0u8; (w * h * 3) as usize];
        register_font().unwrap();
        let root = BitMapBackend::with_buffer(&mut buffer, PANEL_SIZE).into_drawing_area();
        root.fill(&colour(BACKGROUND)).unwrap();
        let coords = draw_panel(&root, &panel).unwrap().expect("data to draw");
        root.present().unwrap();
        drop(root);
        let img = RgbImage::from_raw(w, h, buffer).unwrap();
        assert_eq!(img, render_panels(std::slice::from_ref(&panel), 2).unwrap());
        let at = |x, y| {
            let (px, py) = coords.translate(&(x, y));
            *img.get_pixel(px as u32, py as u32)
        };
        assert_eq!(at(5.0, 5.0), PALETTE[0]);
        assert_eq!((at(7.0, 1.0), at(9.0, 3.0)), (BACKGROUND, BACKGROUND));

        let grid = render_panels(&[panel.clone(), panel.clone(), panel], 2).unwrap();
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
            render_panels(&panels, columns).unwrap();
        }
        let blank = render_panels(&[], 3).unwrap();
        assert_eq!(blank.dimensions(), PANEL_SIZE);
        assert!(blank.pixels().any(inked), "says no data");
        let markers = [("nan".to_string(), nan), ("far".to_string(), 1e6)];
        for values in [&[][..], &[nan, f64::INFINITY], &[2.0; 7], &[0.0, 1.0, nan]] {
            for bins in [0, 1, 3, usize::MAX] {
                render_histogram("h", "x", values, bins, &markers).unwrap();
            }
        }
    }
}
