//! The bad-input corpus (issue 18): from each kind of shared sample (image, slide, NIfTI, DICOM,
//! raster, checkpoint) the test makes broken and hostile variants — empty, random bytes,
//! truncations at several offsets, header only, flipped bytes, a FIFO, a symlink loop, a
//! dangling link, a header claiming a huge image — and odd names of good copies, then runs them,
//! with the good sample, through the commands that read that kind of file. Every run must end
//! (timeout) within a memory limit (`ulimit -v`) without a panic; the good files are done; every
//! bad file has a row or message saying why; no hidden or partial file is left behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{shared, table};

/// Virtual memory a run may map (KiB), 512 MiB: the backbone, its threads and one input at a
/// time fit (resident memory is less than what is mapped).
const MEMORY_KIB: u64 = 512 << 10;
const TIME_LIMIT: Duration = Duration::from_secs(180);

/// A deterministic byte stream (xorshift64*).
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// The broken variants of `sample` written into `dir` as `<stem>_<variant>.<ext>`, and odd
/// names of good copies; returns (bad paths, good paths).
fn corpus(sample: &Path, dir: &Path, ext: &str, seed: u64) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let bytes = std::fs::read(sample).unwrap();
    let mut rng = Bytes(seed | 1);
    let name = |v: &str| dir.join(format!("bad_{v}.{ext}"));
    let mut bad = Vec::new();
    let mut write = |v: &str, data: &[u8]| {
        std::fs::write(name(v), data).unwrap();
        bad.push(name(v));
    };
    write("empty", &[]);
    write("random", &rng.take(4096));
    for percent in [1, 10, 50, 90] {
        write(
            &format!("cut{percent}"),
            &bytes[..bytes.len() * percent / 100],
        );
    }
    write("header", &bytes[..(bytes.len() / 2).min(512)]);
    // The first bytes kept (the format is still recognised), the rest of the first 64 KiB
    // overwritten with noise.
    let mut noisy = bytes.clone();
    let end = noisy.len().min(65536);
    for b in &mut noisy[end.min(16)..end] {
        *b = rng.next();
    }
    write("noise", &noisy);
    let fifo = name("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    bad.push(fifo);
    let (a, b) = (name("loop"), dir.join(format!("bad_loop2.{ext}")));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    bad.push(a);
    let dangling = name("dangling");
    std::os::unix::fs::symlink(dir.join("nothing-here"), &dangling).unwrap();
    bad.push(dangling);
    let mut good = Vec::new();
    for odd in ["good", "good ünïcode, with comma", "-good dash"] {
        let p = dir.join(format!("{odd}.{ext}"));
        std::fs::copy(sample, &p).unwrap();
        good.push(p);
    }
    (bad, good)
}

/// `dinoadapt args` within the memory and time limits; panics and allocation failures fail.
fn run(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::run_bounded(&args, MEMORY_KIB, TIME_LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked"),
        "dinoadapt {args:?} panicked: {err}"
    );
    assert!(
        !err.contains("memory allocation of"),
        "dinoadapt {args:?} ran out of memory: {err}"
    );
    out
}

fn strings(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect()
}

/// Files under `dir` whose names mark them hidden or partial.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let n = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if n.starts_with('.') || n.ends_with(".partial") || n.ends_with(".tmp") {
                out.push(p);
            }
        }
    }
    out
}

/// A string column of a Parquet table.
fn column(path: &Path, name: &str) -> Vec<String> {
    let df = table(path);
    let c = df.column(name).unwrap().str().unwrap().clone();
    (0..c.len())
        .map(|i| c.get(i).unwrap_or("").to_string())
        .collect()
}

/// Counts for the note: files and runs per command.
fn tally(what: &str, files: usize, runs: usize) {
    eprintln!("corpus: {what}: {files} files in {runs} run(s)");
}

#[test]
fn images_slides_volumes_rasters_and_checkpoints_survive_the_corpus() {
    let Some(shared) = shared() else { return };
    let data = shared.join("data");
    let model = shared.join("fixtures/hf_dinov2_reg").display().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let m = |dir: &str| {
        let d = tmp.path().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        d
    };

    // Images: one folder through `embed`; one manifest row per file, in path order.
    let images = m("images");
    let (mut bad, mut good) = corpus(&data.join("pathology/he_tile_240.png"), &images, "png", 1);
    let (b2, g2) = corpus(&data.join("pathology/retina.jpg"), &images, "jpg", 2);
    bad.extend(b2);
    good.extend(g2);
    let features = m("images-out").join("f.safetensors");
    let out = run(&strings(&[
        "embed".into(),
        "--model".into(),
        model.clone().into(),
        images.clone(),
        "-o".into(),
        features.clone(),
        "--quiet".into(),
        "--resize".into(),
        "56".into(),
        "--crop-size".into(),
        "56".into(),
    ]));
    assert!(out.status.success());
    let (paths, errors) = (
        column(&features.with_extension("parquet"), "path"),
        column(&features.with_extension("parquet"), "error"),
    );
    for g in &good {
        let row = paths.iter().position(|p| Path::new(p) == g).unwrap();
        assert_eq!(errors[row], "", "{}", g.display());
    }
    let mut refused = 0;
    for (p, e) in paths.iter().zip(&errors) {
        if p.contains("bad_") && !e.is_empty() {
            refused += 1;
        }
    }
    // Every bad image but the noisy ones (still decodable) is refused with a reason.
    assert!(
        refused >= bad.len() - 2 - 2,
        "{refused} of {} refused",
        bad.len()
    );
    tally("embed (images)", bad.len() + good.len(), 1);

    // Slides: one folder through `pathology tile` (tissue detection, tiling).
    let slides = m("slides");
    let (bad, good) = corpus(
        &data.join("pathology/CMU-1-Small-Region.svs"),
        &slides,
        "svs",
        3,
    );
    let tiles = m("slides-out");
    let out = run(&strings(&[
        "pathology".into(),
        "tile".into(),
        slides.clone(),
        "-o".into(),
        tiles.clone(),
        "--target-mpp".into(),
        "2.0".into(),
        "--size".into(),
        "112".into(),
        "--quiet".into(),
    ]));
    assert!(out.status.success());
    let manifest = tiles.join("manifest.parquet");
    let (ids, status) = (column(&manifest, "slide_id"), column(&manifest, "status"));
    for (id, s) in ids.iter().zip(&status) {
        let want = if id.starts_with("bad_") && !id.starts_with("bad_noise") {
            "failed"
        } else if id.starts_with("bad_noise") {
            s.as_str()
        } else {
            "done"
        };
        assert_eq!(s, want, "slide {id}");
    }
    assert!(ids.iter().filter(|i| i.contains("good")).count() == good.len());
    tally("pathology tile", bad.len() + good.len(), 1);

    // NIfTI and DICOM: every file an input of `radiology convert`.
    for (sample, ext, seed) in [
        (data.join("nifti/standard.nii.gz"), "nii.gz", 4),
        (data.join("nifti/anatomical.nii"), "nii", 5),
        (data.join("dicom/CT_small.dcm"), "dcm", 6),
    ] {
        let dir = m(&format!("volumes-{ext}"));
        let (mut bad, good) = corpus(&sample, &dir, ext, seed);
        if ext == "nii" {
            // A header claiming 2^15 x 2^15 x 2^15 float64 voxels over a few hundred bytes.
            let mut bomb = std::fs::read(&sample).unwrap();
            for (i, d) in [3i16, 32767, 32767, 32767].iter().enumerate() {
                bomb[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
            }
            bomb[70..72].copy_from_slice(&64i16.to_le_bytes());
            bomb.truncate(2048);
            let p = dir.join("bad_dims.nii");
            std::fs::write(&p, bomb).unwrap();
            bad.push(p);
        }
        let converted = m(&format!("volumes-{ext}-out"));
        let mut args = vec!["radiology".to_string(), "convert".into()];
        args.extend(strings(&good));
        args.extend(strings(&bad));
        args.extend(["-o".into(), converted.display().to_string()]);
        let out = run(&args);
        assert!(out.status.success());
        let status = column(&converted.join("volumes.parquet"), "status");
        let index: Vec<u64> = {
            let df = table(&converted.join("volumes.parquet"));
            let c = df.column("input_index").unwrap().u64().unwrap().clone();
            (0..c.len()).map(|i| c.get(i).unwrap()).collect()
        };
        for (i, s) in index.iter().zip(&status) {
            let is_good = (*i as usize) < good.len();
            let noisy = (*i as usize) == good.len() + 7; // "noise" may still read
            if is_good {
                assert_eq!(s, "ok", "good input #{i} ({ext})");
            } else if !noisy {
                assert_eq!(s, "failed", "bad input #{i} ({ext})");
            }
        }
        assert!(
            leftovers(&converted).is_empty(),
            "{:?}",
            leftovers(&converted)
        );
        tally(
            &format!("radiology convert ({ext})"),
            bad.len() + good.len(),
            1,
        );
    }

    // Rasters: per-raster batch of `satellite embed`.
    let rasters = m("rasters");
    let (bad, good) = corpus(&data.join("satellite/rmnp-rgb.tif"), &rasters, "tif", 7);
    let folder = m("rasters-out");
    let mut args = strings(&[
        "satellite".into(),
        "embed".into(),
        "--model".into(),
        model.clone().into(),
        "--size".into(),
        "56".into(),
        "--resume".into(),
        "--quiet".into(),
        "-o".into(),
        folder.join("f.safetensors"),
    ]);
    args.extend(strings(&good));
    args.extend(strings(&bad));
    let out = run(&args);
    assert!(out.status.success());
    for g in &good {
        let stem = g.file_stem().unwrap().to_string_lossy();
        assert!(
            folder.join(format!("f/{stem}.safetensors")).is_file(),
            "{stem} embedded"
        );
    }
    assert!(leftovers(&folder).is_empty(), "{:?}", leftovers(&folder));
    tally("satellite embed", bad.len() + good.len(), 1);

    // Checkpoints: each variant alone through `inspect --model` (exit 2 with the file named).
    let mut runs = 0;
    for (sample, ext, seed) in [
        (
            shared.join("fixtures/hf_dinov2_reg/model.safetensors"),
            "safetensors",
            8,
        ),
        (shared.join("fixtures/official_dinov2/model.pth"), "pth", 9),
    ] {
        let dir = m(&format!("checkpoints-{ext}"));
        let (bad, _) = corpus(&sample, &dir, ext, seed);
        for b in &bad {
            let out = run(&strings(&["inspect".into(), "--model".into(), b.clone()]));
            runs += 1;
            let err = String::from_utf8_lossy(&out.stderr);
            let name = b.file_name().unwrap().to_string_lossy();
            assert_eq!(out.status.code(), Some(2), "{name}: {err}");
            assert!(err.contains(name.as_ref()), "{name} not named: {err}");
        }
    }
    tally("inspect --model", runs, runs);
}
