//! End-to-end: hostile inputs (issue 18) — special files where images are expected, and a
//! gzip bomb behind a valid NIfTI header — are refused or read in bounded memory and time,
//! with a message naming the file, and the good inputs of the same batch are still done.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{run_bounded, shared};

/// A FIFO at `path`.
fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

/// `src` (a .nii.gz) decompressed, then `extra_gib` GiB of zeros, as a multi-member gzip file
/// of a few MB.
fn nifti_gzip_bomb(src: &Path, dst: &Path, extra_gib: usize) {
    let mut image = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(src).unwrap()),
        &mut image,
    )
    .unwrap();
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let zeros = gzip(&vec![0u8; 64 << 20]);
    let mut out = std::fs::File::create(dst).unwrap();
    out.write_all(&gzip(&image)).unwrap();
    for _ in 0..extra_gib * 16 {
        out.write_all(&zeros).unwrap();
    }
}

const MEMORY_KIB: u64 = 1 << 20;

#[test]
fn a_nifti_gzip_bomb_is_read_in_bounded_memory() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.nii.gz");
    // 2 GiB of zeros after the image: reading the whole stream needs more than the 1 GiB the
    // process may map.
    nifti_gzip_bomb(&shared.join("data/nifti/standard.nii.gz"), &bomb, 2);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 16 << 20);
    let b = bomb.to_str().unwrap();
    let out = run_bounded(
        &["inspect", b, "--json"],
        MEMORY_KIB,
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["shape"], serde_json::json!([4, 5, 7]), "{report}");
    let conv = dir.path().join("converted");
    let out = run_bounded(
        &["radiology", "convert", b, "-o", conv.to_str().unwrap()],
        MEMORY_KIB,
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    let table = common::table(&conv.join("volumes.parquet"));
    assert_eq!(
        table.column("status").unwrap().str().unwrap().get(0),
        Some("ok")
    );
}

#[test]
fn fifos_and_devices_named_like_volumes_are_refused_without_hanging() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.nii");
    mkfifo(&fifo);
    let zero = dir.path().join("zero.nii.gz");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for special in [&fifo, &zero] {
        let s = special.to_str().unwrap();
        let out = run_bounded(&["inspect", s], MEMORY_KIB, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(s) && err.contains("not a regular file"),
            "{err}"
        );
    }
    // In a batch, the special files are rows that say why; the good volume is embedded.
    let good = shared.join("data/nifti/standard.nii.gz");
    let model = shared.join("fixtures/hf_dinov2_reg");
    let out_dir = dir.path().join("embedded");
    let out = run_bounded(
        &[
            "radiology",
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--size",
            "56",
            good.to_str().unwrap(),
            fifo.to_str().unwrap(),
            zero.to_str().unwrap(),
            "-o",
            out_dir.to_str().unwrap(),
            "--quiet",
        ],
        4 * MEMORY_KIB,
        Duration::from_secs(120),
    );
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("input #1 : input #1"),
        "a clause said twice: {err}"
    );
    let table = common::table(&out_dir.join("volumes.parquet"));
    let status = table.column("status").unwrap().str().unwrap();
    let error = table.column("error").unwrap().str().unwrap();
    assert_eq!(
        (0..3).map(|i| status.get(i).unwrap()).collect::<Vec<_>>(),
        ["ok", "failed", "failed"]
    );
    assert!(error.get(1).unwrap().contains("not a regular file"));
}

#[test]
fn fifos_among_images_slides_and_rasters_are_failed_rows_not_hangs() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = shared.join("data");
    let model = shared.join("fixtures/hf_dinov2_reg");
    let m = model.to_str().unwrap();
    let limit = Duration::from_secs(120);
    let run = |args: &[&str]| run_bounded(args, 4 * MEMORY_KIB, limit);

    // embed: a folder of two images, one of them a FIFO.
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::copy(d.join("pathology/he_tile_240.png"), images.join("a.png")).unwrap();
    mkfifo(&images.join("b.png"));
    let features = dir.path().join("images.safetensors");
    let out = run(&[
        "embed",
        "--model",
        m,
        images.to_str().unwrap(),
        "-o",
        features.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(out.status.success());
    let manifest = common::table(&features.with_extension("parquet"));
    let error = manifest.column("error").unwrap().str().unwrap();
    assert_eq!(error.get(0), Some(""));
    assert!(error.get(1).unwrap().contains("not a regular file"));

    // pathology embed: a slide and a FIFO named like one.
    let slides = dir.path().join("slides");
    std::fs::create_dir(&slides).unwrap();
    std::fs::copy(
        d.join("pathology/CMU-1-Small-Region.svs"),
        slides.join("a.svs"),
    )
    .unwrap();
    mkfifo(&slides.join("b.svs"));
    let out_dir = dir.path().join("pathology");
    let out = run(&[
        "pathology",
        "embed",
        "--model",
        m,
        slides.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
        "--target-mpp",
        "2.0",
        "--size",
        "112",
        "--quiet",
    ]);
    assert!(out.status.success());
    let manifest = common::table(&out_dir.join("manifest.parquet"));
    let status = manifest.column("status").unwrap().str().unwrap();
    let error = manifest.column("error").unwrap().str().unwrap();
    assert_eq!(
        (status.get(0), status.get(1)),
        (Some("done"), Some("failed"))
    );
    assert!(error.get(1).unwrap().contains("not a regular file"));

    // satellite embed: a raster and a FIFO named like one.
    let fifo = dir.path().join("scene.tif");
    mkfifo(&fifo);
    let rgb = d.join("satellite/rmnp-rgb.tif");
    let out_dir = dir.path().join("satellite");
    let out = run(&[
        "satellite",
        "embed",
        "--model",
        m,
        rgb.to_str().unwrap(),
        fifo.to_str().unwrap(),
        "--size",
        "56",
        "--resume",
        "-o",
        out_dir.join("f.safetensors").to_str().unwrap(),
        "--quiet",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a regular file"), "{err}");
}

/// `src`'s three bands as float32, with +Inf / -Inf in a block of the top-left chip.
fn raster_with_infinities(src: &Path, dst: &Path) {
    let r = dinoadapt_satellite::Raster::open(src).unwrap();
    let info = r.info().clone();
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = driver
        .create_with_band_type::<f32, _>(dst, info.width, info.height, 3)
        .unwrap();
    ds.set_geo_transform(&info.geotransform.unwrap().0).unwrap();
    ds.set_projection(&info.crs.as_ref().unwrap().wkt).unwrap();
    for b in 1..=3 {
        let mut v = common::whole(&r, b);
        for y in 0..8 {
            for x in 0..8 {
                v[y * info.width + x] = if b == 2 {
                    f32::NEG_INFINITY
                } else {
                    f32::INFINITY
                };
            }
        }
        let mut buf = gdal::raster::Buffer::new((info.width, info.height), v);
        ds.rasterband(b)
            .unwrap()
            .write((0, 0), (info.width, info.height), &mut buf)
            .unwrap();
    }
}

/// Issue 18, defect 8: ±Inf pixels of a float raster are invalid like NaN (they made every
/// feature NaN, with exit status 0).
#[test]
fn infinite_raster_pixels_are_nodata_and_features_stay_finite() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let inf = dir.path().join("inf.tif");
    raster_with_infinities(&shared.join("data/satellite/rmnp-rgb.tif"), &inf);
    let features = dir.path().join("f.safetensors");
    let model = shared.join("fixtures/hf_dinov2_reg");
    let out = common::dinoadapt(&[
        "satellite",
        "embed",
        "--model",
        model.to_str().unwrap(),
        inf.to_str().unwrap(),
        "--size",
        "56",
        "-o",
        features.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(out.status.success());
    let tensors = common::read_tensors(&features);
    for (name, (_, values)) in &tensors {
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        assert_eq!(bad, 0, "{name}: {bad} non-finite values");
    }
    let chips = common::table(&features.with_extension("parquet"));
    let valid = chips.column("valid_fraction").unwrap().f64().unwrap();
    assert!(
        valid.get(0).unwrap() < 1.0,
        "the infinite pixels count as nodata"
    );
}

/// Issue 18, defect 8: corrupt pixels passed silently — a JPEG cut in half was embedded (its
/// lower half gray) and an all-NaN NIfTI was `ok`.
#[test]
fn a_cut_jpeg_and_an_all_nan_volume_are_refused() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = shared.join("data");
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let jpeg = std::fs::read(d.join("pathology/retina.jpg")).unwrap();
    std::fs::write(images.join("a_whole.jpg"), &jpeg).unwrap();
    std::fs::write(images.join("b_half.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    let features = dir.path().join("f.safetensors");
    let model = shared.join("fixtures/hf_dinov2_reg");
    let m = model.to_str().unwrap();
    let out = common::dinoadapt(&[
        "embed",
        "--model",
        m,
        images.to_str().unwrap(),
        "-o",
        features.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(out.status.success());
    let manifest = common::table(&features.with_extension("parquet"));
    let error = manifest.column("error").unwrap().str().unwrap();
    assert_eq!(error.get(0), Some(""));
    assert!(
        error.get(1).unwrap().contains("truncated JPEG"),
        "{:?}",
        error.get(1)
    );

    // standard.nii.gz's header, as float32, every voxel NaN.
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(
            std::fs::File::open(d.join("nifti/standard.nii.gz")).unwrap(),
        ),
        &mut bytes,
    )
    .unwrap();
    let offset = f32::from_le_bytes(bytes[108..112].try_into().unwrap()) as usize;
    let voxels = (bytes.len() - offset) as u32; // uint8: one byte each
    let mut nan = bytes[..offset].to_vec();
    nan[70..72].copy_from_slice(&16i16.to_le_bytes()); // datatype float32
    nan[72..74].copy_from_slice(&32i16.to_le_bytes()); // bitpix
    for _ in 0..voxels {
        nan.extend_from_slice(&f32::NAN.to_le_bytes());
    }
    let path = dir.path().join("nan.nii");
    std::fs::write(&path, nan).unwrap();
    let out = common::dinoadapt(&["inspect", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nan.nii") && err.contains("no finite voxel"),
        "{err}"
    );
}

/// Issue 18, defect 12: messages below standard — a symlink loop was "no such file: no such
/// file", GDAL's refusals came wrapped in the binding's "returned a NULL pointer. Error msg:",
/// an empty folder named `x.png` was "no DICOM images could be loaded from x.png: no files"
/// and radiology said "input #0" three times in one line.
#[test]
fn unreachable_and_unreadable_inputs_are_told_in_plain_words() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("loop_a.tif"), dir.path().join("loop_b.tif"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let cut = dir.path().join("cut.tif");
    let tif = std::fs::read(shared.join("data/satellite/rgbn.tif")).unwrap();
    std::fs::write(&cut, &tif[..100]).unwrap();
    let folder = dir.path().join("x.png");
    std::fs::create_dir(&folder).unwrap();
    let model = shared.join("fixtures/hf_dinov2_reg");
    let m = model.to_str().unwrap();
    let stderr = |args: &[&str]| {
        let out = common::dinoadapt(args);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let a = a.to_str().unwrap();
    let err = stderr(&["embed", "--model", m, a, "-o", "unused.safetensors"]);
    assert!(err.contains("a symbolic link that loops"), "{err}");
    let err = stderr(&["inspect", cut.to_str().unwrap()]);
    assert!(
        err.contains("TIFFReadDirectory") && !err.contains("NULL pointer"),
        "{err}"
    );
    let err = stderr(&["inspect", folder.to_str().unwrap()]);
    assert!(err.contains("a folder with no files in it"), "{err}");
    let out = dir.path().join("r");
    let err = stderr(&[
        "radiology",
        "embed",
        "--model",
        m,
        a,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("input #0: a symbolic link that loops"),
        "{err}"
    );
    assert_eq!(err.matches("input #0").count(), 1, "{err}");
}

/// Issue 18, defect 13: the base name of a failing file inside a folder went into
/// volumes.parquet and stderr (a file named after a patient leaks), and ids were salted with a
/// public constant without a word.
#[test]
fn failing_files_inside_folders_are_named_by_place_and_the_public_salt_is_told() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("study");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(shared.join("data/dicom/CT_small.dcm"), folder.join("a.dcm")).unwrap();
    let ct = std::fs::read(shared.join("data/dicom/MR_small.dcm")).unwrap();
    std::fs::write(folder.join("DOE^JOHN.dcm"), &ct[..ct.len() / 3]).unwrap();
    let out_dir = dir.path().join("converted");
    let out = Command::new(env!("CARGO_BIN_EXE_dinoadapt"))
        .args(["radiology", "convert", folder.to_str().unwrap(), "-o"])
        .arg(&out_dir)
        .env_remove("DINOADAPT_ID_SALT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(out.status.success());
    assert!(!err.contains("DOE^JOHN"), "{err}");
    assert!(err.contains("public default"), "{err}");
    let table = common::table(&out_dir.join("volumes.parquet"));
    let text = format!("{table:?}");
    assert!(!text.contains("DOE^JOHN"), "{text}");
    let file = table.column("file").unwrap().str().unwrap();
    assert!(
        (0..table.height()).any(|r| file.get(r) == Some("file #0")),
        "{text}"
    );
}
