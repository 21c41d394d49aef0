//! `report.html`: one self-contained page per long run (`pretrain`, `heads train`, `pathology
//! embed`, `satellite predict`, `curate`, `demo`), for the people who decide from pictures and
//! tables rather than logs. It holds the exact command and recipe, the inputs as hashes (no file
//! names beyond the command itself, no patient data), seeds, versions, host, timings and
//! throughput, then the run's sections: pictures (PNG, inlined as data URIs, downscaled to at
//! most [`MAX_IMAGE_WIDTH`] px), tables (the first [`MAX_TABLE_ROWS`] rows) and text.
//!
//! The program marks the start of a command once ([`mark_start`]); the engine that knows what
//! its run produced builds the [`Report`] at the end and writes it beside its outputs.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dinoadapt_core::host::HostCpu;
use polars::prelude::DataFrame;
use sha2::{Digest, Sha256};

use crate::provenance::PROGRAM_VERSION;

/// Pictures wider than this are downscaled before they are inlined.
pub const MAX_IMAGE_WIDTH: u32 = 900;
/// Tables show at most this many rows.
pub const MAX_TABLE_ROWS: usize = 40;
/// Inputs are identified by the SHA-256 of their first this-many bytes and their size.
pub const HASHED_PREFIX: u64 = 16 << 20;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

struct Start {
    at: Instant,
    wall: SystemTime,
    argv: Vec<String>,
}

static START: OnceLock<Start> = OnceLock::new();

/// Records the command line and the start time of this process's command (the program calls
/// it first thing; later calls keep the first).
pub fn mark_start() {
    START.get_or_init(|| Start {
        at: Instant::now(),
        wall: SystemTime::now(),
        argv: std::env::args().collect(),
    });
}

/// Seconds since [`mark_start`] (0 when it was not called).
pub fn elapsed_seconds() -> f64 {
    START.get().map_or(0.0, |s| s.at.elapsed().as_secs_f64())
}

/// One part of a report: a heading, text, pictures and tables.
#[derive(Debug, Default)]
pub struct Section {
    pub title: String,
    pub text: Vec<String>,
    /// (caption, PNG file).
    pub images: Vec<(String, PathBuf)>,
    /// (caption, table).
    pub tables: Vec<(String, DataFrame)>,
}

impl Section {
    pub fn new(title: impl Into<String>) -> Self {
        Section {
            title: title.into(),
            ..Default::default()
        }
    }

    pub fn text(mut self, t: impl Into<String>) -> Self {
        self.text.push(t.into());
        self
    }

    /// A picture, if the file exists (a run that skipped a plot still gets its report).
    pub fn image(mut self, caption: impl Into<String>, png: impl AsRef<Path>) -> Self {
        if png.as_ref().is_file() {
            self.images
                .push((caption.into(), png.as_ref().to_path_buf()));
        }
        self
    }

    /// The PNG files of `dir` (not recursive, in name order), at most `max`, captioned by name.
    pub fn images_in(mut self, dir: &Path, max: usize) -> Self {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")));
        files.sort();
        for f in files.into_iter().take(max) {
            let caption = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.images.push((caption, f));
        }
        self
    }

    pub fn table(mut self, caption: impl Into<String>, df: DataFrame) -> Self {
        self.tables.push((caption.into(), df));
        self
    }

    /// The Parquet table `path`, if it reads.
    pub fn parquet(self, caption: impl Into<String>, path: &Path) -> Self {
        match crate::manifest::read_parquet(path) {
            Ok(df) => self.table(caption, df),
            Err(_) => self,
        }
    }
}

/// A run's report.
#[derive(Debug, Default)]
pub struct Report {
    pub title: String,
    /// The recipe file the run followed (shown whole).
    pub recipe: Option<PathBuf>,
    /// Input files or folders (hashed, never named).
    pub inputs: Vec<PathBuf>,
    /// (name, value): seeds, throughput, sizes — shown in the summary table.
    pub facts: Vec<(String, String)>,
    pub sections: Vec<Section>,
}

impl Report {
    pub fn new(title: impl Into<String>) -> Self {
        Report {
            title: title.into(),
            ..Default::default()
        }
    }

    pub fn recipe(mut self, path: impl AsRef<Path>) -> Self {
        self.recipe = Some(path.as_ref().to_path_buf());
        self
    }

    pub fn input(mut self, path: impl AsRef<Path>) -> Self {
        self.inputs.push(path.as_ref().to_path_buf());
        self
    }

    pub fn inputs<P: AsRef<Path>>(mut self, paths: &[P]) -> Self {
        self.inputs
            .extend(paths.iter().map(|p| p.as_ref().to_path_buf()));
        self
    }

    pub fn fact(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        self.facts.push((name.into(), value.to_string()));
        self
    }

    pub fn section(mut self, s: Section) -> Self {
        self.sections.push(s);
        self
    }

    /// Writes the page to `path` (temp file + rename); returns its path.
    pub fn write(&self, path: &Path) -> Result<PathBuf, ReportError> {
        let html = self.html();
        let io = |source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("html.tmp");
        std::fs::write(&tmp, html).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(path.to_path_buf())
    }

    /// The page.
    pub fn html(&self) -> String {
        let mut h = String::with_capacity(1 << 16);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
            esc(&self.title),
            esc(&self.title)
        );
        // The run: command, timings, versions, host, facts.
        let start = START.get();
        let mut rows: Vec<(String, String)> = Vec::new();
        if let Some(s) = start {
            rows.push(("command".into(), shell_words(&s.argv)));
            let t = s.wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            rows.push(("started (UTC)".into(), utc(t)));
            rows.push(("wall time".into(), format!("{:.1} s", elapsed_seconds())));
        }
        rows.push(("dinoadapt".into(), PROGRAM_VERSION.to_string()));
        rows.push(("host".into(), HostCpu::detect().summary()));
        rows.push(("threads".into(), rayon::current_num_threads().to_string()));
        rows.extend(self.facts.iter().cloned());
        h.push_str("<h2>Run</h2>\n<table class=\"kv\">");
        for (k, v) in &rows {
            let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
        }
        h.push_str("</table>\n");
        if !self.inputs.is_empty() {
            h.push_str(
                "<h2>Inputs</h2>\n<p>SHA-256 of each input file's first 16 MiB, and its size; \
                 file names are not repeated here.</p>\n<table><tr><th>#</th><th>kind</th>\
                 <th>size</th><th>sha256</th></tr>",
            );
            for (i, (kind, size, hash)) in input_hashes(&self.inputs).iter().enumerate() {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    i + 1,
                    esc(kind),
                    human_bytes(*size),
                    hash
                );
            }
            h.push_str("</table>\n");
        }
        if let Some(r) = &self.recipe {
            let text = std::fs::read_to_string(r).unwrap_or_else(|e| format!("(unreadable: {e})"));
            let _ = write!(h, "<h2>Recipe</h2>\n<pre>{}</pre>\n", esc(&text));
        }
        for s in &self.sections {
            let _ = writeln!(h, "<h2>{}</h2>", esc(&s.title));
            for t in &s.text {
                let _ = writeln!(h, "<p>{}</p>", esc(t));
            }
            if !s.images.is_empty() {
                h.push_str("<div class=\"figs\">");
                for (caption, png) in &s.images {
                    match data_uri(png) {
                        Some(uri) => {
                            let _ = write!(
                                h,
                                "<figure><img src=\"{uri}\" alt=\"{c}\"><figcaption>{c}\
                                 </figcaption></figure>",
                                c = esc(caption)
                            );
                        }
                        None => {
                            let _ = write!(h, "<p>({}: unreadable picture)</p>", esc(caption));
                        }
                    }
                }
                h.push_str("</div>\n");
            }
            for (caption, df) in &s.tables {
                h.push_str(&table_html(caption, df));
            }
        }
        h.push_str("</body></html>\n");
        h
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;\
color:#222;padding:0 1em}h1{border-bottom:2px solid #444}h2{margin-top:1.6em;\
border-bottom:1px solid #ccc}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f2f2f2}\
table.kv th{width:11em}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}\
.figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figure img{max-width:100%;\
border:1px solid #ddd}figcaption{font-size:.85em;color:#555}caption{text-align:left;\
font-weight:600;padding:.3em 0}";

/// HTML-escaped text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

/// The command line as one would type it again.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `YYYY-MM-DD hh:mm:ss` of seconds since the Unix epoch (UTC).
fn utc(t: u64) -> String {
    let (days, rem) = (t / 86400, t % 86400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// (kind, size, sha256 of the first [`HASHED_PREFIX`] bytes) of every input file: files as
/// they are, folders as the files in them (recursively, in name order, at most 200).
fn input_hashes(inputs: &[PathBuf]) -> Vec<(String, u64, String)> {
    let mut files = Vec::new();
    for p in inputs {
        collect_files(p, &mut files, 200);
    }
    files
        .iter()
        .map(|f| {
            let kind = f
                .extension()
                .map(|e| format!(".{}", e.to_string_lossy()))
                .unwrap_or_else(|| "file".into());
            let size = std::fs::metadata(f).map_or(0, |m| m.len());
            let hash = std::fs::File::open(f)
                .and_then(|file| {
                    let mut hasher = Sha256::new();
                    let mut buf = vec![0u8; 1 << 16];
                    let mut take = file.take(HASHED_PREFIX);
                    loop {
                        let n = take.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                    }
                    Ok(format!("{:x}", hasher.finalize()))
                })
                .unwrap_or_else(|e| format!("unreadable ({e})"));
            (kind, size, hash)
        })
        .collect()
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>, max: usize) {
    if out.len() >= max {
        return;
    }
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            collect_files(&e, out, max);
        }
    } else if p.is_file() {
        out.push(p.to_path_buf());
    }
}

/// A PNG as a data URI, downscaled to at most [`MAX_IMAGE_WIDTH`] px wide.
fn data_uri(png: &Path) -> Option<String> {
    let bytes = std::fs::read(png).ok()?;
    let img = image::load_from_memory(&bytes).ok()?;
    let bytes = if img.width() > MAX_IMAGE_WIDTH {
        let h = (img.height() as f64 * MAX_IMAGE_WIDTH as f64 / img.width() as f64).round();
        let small = img.resize(
            MAX_IMAGE_WIDTH,
            (h as u32).max(1),
            image::imageops::FilterType::Triangle,
        );
        let mut out = std::io::Cursor::new(Vec::new());
        small.write_to(&mut out, image::ImageFormat::Png).ok()?;
        out.into_inner()
    } else {
        bytes
    };
    Some(format!("data:image/png;base64,{}", base64(&bytes)))
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                o.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// A table's first [`MAX_TABLE_ROWS`] rows as HTML.
fn table_html(caption: &str, df: &DataFrame) -> String {
    let mut h = String::new();
    let _ = write!(h, "<table><caption>{}", esc(caption));
    if df.height() > MAX_TABLE_ROWS {
        let _ = write!(h, " (first {MAX_TABLE_ROWS} of {} rows)", df.height());
    }
    h.push_str("</caption><tr>");
    for c in df.columns() {
        let _ = write!(h, "<th>{}</th>", esc(c.name().as_str()));
    }
    h.push_str("</tr>");
    for r in 0..df.height().min(MAX_TABLE_ROWS) {
        h.push_str("<tr>");
        for c in df.columns() {
            let v = c.get(r).map(|v| cell(&v)).unwrap_or_default();
            let _ = write!(h, "<td>{}</td>", esc(&v));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>\n");
    h
}

/// A cell as text: floats to 4 significant digits, strings without quotes.
fn cell(v: &polars::prelude::AnyValue) -> String {
    use polars::prelude::AnyValue;
    match v {
        AnyValue::Null => String::new(),
        AnyValue::Float64(x) => fmt_float(*x),
        AnyValue::Float32(x) => fmt_float(f64::from(*x)),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn fmt_float(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if (1e-3..1e6).contains(&a) {
        let digits = (3 - a.log10().floor() as i32).max(0) as usize;
        format!("{x:.digits$}")
    } else {
        format!("{x:.3e}")
    }
}

/// The "Jobs and timings" section of a run of jobs: one row per step of every job.
pub fn jobs_section(jobs: &[crate::jobs::JobRecord]) -> Section {
    use crate::column as col;
    let rows: Vec<(&str, &str, f64)> = jobs
        .iter()
        .flat_map(|j| {
            j.steps
                .iter()
                .map(move |s| (j.job.as_str(), s.step.as_str(), s.seconds))
        })
        .collect();
    let timings = DataFrame::new(
        rows.len(),
        vec![
            col::<String>("job", rows.iter().map(|r| r.0.to_string()).collect()),
            col::<String>("step", rows.iter().map(|r| r.1.to_string()).collect()),
            col::<f64>("seconds", rows.iter().map(|r| r.2).collect()),
        ],
    )
    .expect("columns of one length");
    Section::new("Jobs and timings")
        .text(
            "Each job ran its recipe script (recipes/*.sh, copied to recipes/ in this folder) on \
             the built-in samples (inputs/; sources and licences in inputs/MANIFEST.tsv); each \
             job's log is in logs/.",
        )
        .table("steps", timings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::column as col;

    #[test]
    fn base64_and_dates_are_the_standard_ones() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_796_428_800), "2026-12-05 00:00:00");
        assert_eq!(utc(951_825_600), "2000-02-29 12:00:00");
        assert_eq!(fmt_float(0.123456), "0.1235");
        assert_eq!(fmt_float(1234.5678), "1235");
        assert_eq!(fmt_float(1.5e-7), "1.500e-7");
    }

    #[test]
    fn a_report_inlines_its_pictures_hashes_its_inputs_and_escapes_text() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("curve.png");
        image::RgbImage::from_pixel(1200, 300, image::Rgb([200, 10, 10]))
            .save(&png)
            .unwrap();
        let input = dir.path().join("patient_smith.svs");
        std::fs::write(&input, b"abc").unwrap();
        let df = DataFrame::new(
            2,
            vec![
                col::<String>("split", vec!["val".into(), "<test>".into()]),
                col::<f64>("accuracy", vec![0.5, 0.25]),
            ],
        )
        .unwrap();
        mark_start();
        let r = Report::new("probe & co")
            .input(&input)
            .fact("seed", 7)
            .section(
                Section::new("Metrics")
                    .text("a < b")
                    .image("loss", &png)
                    .image("missing", dir.path().join("none.png"))
                    .table("metrics", df),
            );
        let out = r.write(&dir.path().join("sub/report.html")).unwrap();
        let html = std::fs::read_to_string(out).unwrap();
        assert!(html.contains("<title>probe &amp; co</title>"));
        assert!(html.contains("data:image/png;base64,"));
        assert_eq!(
            html.matches("<img").count(),
            1,
            "a missing picture is left out"
        );
        // sha256("abc"), and the input's name is not in the page.
        assert!(html.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        assert!(!html.contains("patient_smith"));
        assert!(html.contains("&lt;test&gt;") && html.contains("a &lt; b"));
        assert!(html.contains("<th>seed</th><td>7</td>"));
        // The inlined picture was downscaled to the page's width.
        let b64 = html
            .split("base64,")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(b64.len() < 40_000, "{} base64 bytes", b64.len());
    }
}
