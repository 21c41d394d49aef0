//! The slice pipeline end to end on generated CT series with a permuted, flipped, oblique
//! orientation: DICOM -> volume -> canonical RAS -> slices (each axis) -> SliceSource batches
//! (count, shapes, world positions checked against the DICOM geometry by hand) -> predictions
//! back to NIfTI equal to the thresholded source; no path or identifying value in any output.

mod common;

use common::*;
use dinoadapt_datasets::RegionSource;
use dinoadapt_radiology::dicom::load_series;
use dinoadapt_radiology::inputs::{Channels, InputSpec};
use dinoadapt_radiology::intensity::Intensity;
use dinoadapt_radiology::nifti::read_nifti;
use dinoadapt_radiology::predictions::{write_predictions, SlicePrediction, SliceValues};
use dinoadapt_radiology::reorient::{to_canonical, Canonical};
use dinoadapt_radiology::slices::{slice, Axis};
use dinoadapt_radiology::source::{SliceOptions, SliceSource};
use dinoadapt_radiology::{Pseudonymizer, Volume};

const STUDY: &str = "1.2.826.0.1.3680043.8.498.222";
const SERIES: &str = "1.2.826.0.1.3680043.8.498.222.2";

/// Columns: row cosine -> patient Right, column cosine -> Inferior, normal -> Anterior
/// (a flipped coronal acquisition), then rotated 8 degrees about z (oblique).
fn geometry() -> [[f64; 3]; 3] {
    let p = [[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]];
    let rz = rotation(0.0, 8.0);
    let mut m = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            m[i][j] = (0..3).map(|k| rz[i][k] * p[k][j]).sum();
        }
    }
    m
}

fn add(a: [f64; 3], b: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] + s * b[0], a[1] + s * b[1], a[2] + s * b[2]]
}

fn close(a: [f64; 3], b: [f64; 3], tol: f64) -> bool {
    (0..3).all(|i| (a[i] - b[i]).abs() <= tol)
}

/// Writes a series (rows x cols x zs.len()), loads it back.
fn load(dir: &std::path::Path, rows: u16, cols: u16, spacing: [f64; 2], zs: &[f64]) -> Volume {
    let rot = geometry();
    let slices = stack(
        &rot,
        [12.5, -40.0, 80.25],
        zs,
        0.0,
        rows,
        cols,
        spacing,
        STUDY,
        SERIES,
    );
    for (n, s) in slices.iter().enumerate() {
        write_slice(&dir.join(format!("im{n}.dcm")), s);
    }
    let scan = load_series(&[dir], &Pseudonymizer::new("pipeline")).unwrap();
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    scan.series[0].volume.clone()
}

#[test]
fn slices_and_regions_have_the_dicom_world_positions() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // the folder is named like a patient, as exports often are
    let dir = tmp.path().join(PATIENT_NAME);
    std::fs::create_dir(&dir)?;
    let (rows, cols) = (5u16, 7u16);
    let (dx, dy, dz) = (1.0, 0.8, 2.5); // column step, row step, slice gap
    let zs: Vec<f64> = (0..4).map(|k| k as f64 * dz).collect();
    let v = load(&dir, rows, cols, [dy, dx], &zs);
    assert_eq!(v.dims, [7, 5, 4]);
    assert_eq!(v.orientation_code(), [Some("R"), Some("I"), Some("A")]);
    let rot = geometry();
    let (r, c, n) = (col(&rot, 0), col(&rot, 1), col(&rot, 2));
    let origin = [12.5, -40.0, 80.25];
    // LPS of source voxel (column i, row j, slice k), straight from the DICOM geometry
    let world = |i: f64, j: f64, k: f64| add(add(add(origin, r, i * dx), c, j * dy), n, k * dz);
    // stored value at (i, j, k): 1000 k + (j * cols + i) - 1024 HU
    let hu = |i: usize, j: usize, k: usize| (1000 * k + j * 7 + i) as f32 - 1024.0;

    let ras = to_canonical(&v, Canonical::Ras)?;
    assert_eq!(ras.orientation_code(), [Some("R"), Some("A"), Some("S")]);
    // canonical axes: R = source i, A = source k, S = source j reversed
    assert_eq!(ras.dims, [7, 4, 5]);

    // axial slice s is source row 4 - s; displayed with right on the left, anterior up
    let s = slice(&ras, Axis::Axial, 1)?;
    assert_eq!((s.width, s.height), (7, 4));
    assert_eq!(s.pixels[0], hu(6, 3, 3)); // right-most column, most anterior slice
    assert_eq!(s.pixels[6], hu(0, 3, 3));
    assert_eq!(s.pixels[7 * 3], hu(6, 3, 0));
    assert!(close(s.centre_lps, world(3.0, 3.0, 1.5), 1e-9));
    // the normal points superior: minus the column cosine
    assert!(close(s.normal_lps, [-c[0], -c[1], -c[2]], 1e-12));
    let cor = slice(&ras, Axis::Coronal, 2)?;
    assert_eq!((cor.width, cor.height), (7, 5));
    assert_eq!(cor.pixels[0], hu(6, 0, 2)); // right, superior (row 0 of the DICOM image)
    assert!(close(cor.centre_lps, world(3.0, 2.0, 2.0), 1e-9));
    let sag = slice(&ras, Axis::Sagittal, 0)?;
    assert_eq!((sag.width, sag.height), (4, 5));
    assert_eq!(sag.pixels[0], hu(0, 0, 3)); // anterior, superior
    assert!(close(sag.centre_lps, world(0.0, 2.0, 1.5), 1e-9));

    for (axis, count, w, h) in [
        (Axis::Axial, 5usize, 7usize, 4usize),
        (Axis::Coronal, 4, 7, 5),
        (Axis::Sagittal, 7, 4, 5),
    ] {
        let opts = SliceOptions {
            axis,
            input: InputSpec {
                intensity: "abdomen".parse()?,
                channels: Channels::Neighbours,
                size: 32,
                ..InputSpec::default()
            },
            step: 2,
            ..SliceOptions::default()
        };
        let mut src = SliceSource::new(&v, opts)?;
        let expected = count.div_ceil(2);
        assert_eq!(src.max_regions(), expected);
        assert_eq!(src.size(), (32, 32));
        let records = src.records().to_vec();
        assert_eq!(records.len(), expected);
        let mut seen = Vec::new();
        while let Some(b) = src.next_batch(2).map_err(anyhow::Error::msg)? {
            assert!(b.regions.len() <= 2);
            assert_eq!(b.pixels.len(), b.regions.len() * 3 * 32 * 32);
            assert!(b.pixels.iter().all(|x| x.is_finite()));
            seen.extend(b.regions);
        }
        assert_eq!(seen.len(), expected);
        for (row, (region, record)) in seen.iter().zip(&records).enumerate() {
            assert_eq!(region.index, 2 * row);
            assert_eq!(record.slice_index, region.index);
            assert_eq!((region.width, region.height), (w, h));
            assert_eq!(region.source, v.id);
            assert_eq!(region.crs, "LPS mm");
            let want = slice(&ras, axis, region.index)?.centre_lps;
            assert!(close(record.position_lps, want, 1e-9));
            // bounds contain the centre's in-plane coordinates
            let (a, b) = match axis {
                Axis::Axial => (0, 1),
                Axis::Coronal => (0, 2),
                Axis::Sagittal => (1, 2),
            };
            let bd = region.bounds;
            assert!(bd[0] < want[a] && want[a] < bd[2] && bd[1] < want[b] && want[b] < bd[3]);
        }
        // one axial region's bounds by hand: source row 4 - 0 = 4, columns 0..7, slices 0..4
        if axis == Axis::Axial {
            let corners = [
                world(-0.5, 4.0, -0.5),
                world(6.5, 4.0, -0.5),
                world(-0.5, 4.0, 3.5),
                world(6.5, 4.0, 3.5),
            ];
            let min_x = corners.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
            let max_y = corners
                .iter()
                .map(|p| p[1])
                .fold(f64::NEG_INFINITY, f64::max);
            assert!((seen[0].bounds[0] - min_x).abs() < 1e-9);
            assert!((seen[0].bounds[3] - max_y).abs() < 1e-9);
        }
        // nothing that identifies the patient or the folder in what the program records
        let json = serde_json::to_string(&(&seen, &records))?;
        let meta = serde_json::to_string(&src.metadata())?;
        for text in [&json, &meta] {
            assert!(!text.contains(PATIENT_NAME.split('^').next().unwrap()));
            assert!(!text.contains(tmp.path().to_str().unwrap()));
            assert!(!text.contains(SERIES) && !text.contains(STUDY));
        }
    }
    Ok(())
}

#[test]
fn skip_empty_and_valid_fraction() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let zs: Vec<f64> = (0..4).map(|k| k as f64).collect();
    let v = load(tmp.path(), 4, 4, [1.0, 1.0], &zs);
    // source slice k holds 1000 k - 1024 .. 1000 k - 1009 HU; background <= -1000 HU leaves
    // source slices 1..4 non-empty, i.e. coronal slices 1..4
    let opts = SliceOptions {
        axis: Axis::Coronal,
        skip_empty: true,
        background: Some(-1000.0),
        ..SliceOptions::default()
    };
    let src = SliceSource::new(&v, opts)?;
    let idx: Vec<usize> = src.records().iter().map(|r| r.slice_index).collect();
    assert_eq!(idx, [1, 2, 3]);
    assert!(src.regions().iter().all(|r| r.valid_fraction == 1.0));
    // axial slices cut through all source slices: 3 of 4 columns of voxels are foreground
    let src = SliceSource::new(
        &v,
        SliceOptions {
            axis: Axis::Axial,
            ..opts
        },
    )?;
    assert_eq!(src.max_regions(), 4);
    assert!(src.regions().iter().all(|r| r.valid_fraction == 0.75));
    Ok(())
}

#[test]
fn predictions_come_back_onto_the_source_grid() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tempfile::tempdir()?;
    // a 6 mm cube of 1 mm voxels: slices fill the 6 x 6 canvas exactly on every axis
    let zs: Vec<f64> = (0..6).map(|k| k as f64).collect();
    let v = load(tmp.path(), 6, 6, [1.0, 1.0], &zs);
    let (low, high) = (-2000.0f64, 5000.0f64);
    let threshold_hu = 0.5;
    let want: Vec<f32> = v
        .voxels
        .iter()
        .map(|x| f32::from(f64::from(*x) > threshold_hu))
        .collect();
    assert!(want.contains(&0.0) && want.contains(&1.0));
    for axis in Axis::ALL {
        let input = InputSpec {
            intensity: Intensity::Window { low, high },
            channels: Channels::Repeat,
            size: 6,
            ..InputSpec::default()
        };
        let mut src = SliceSource::new(
            &v,
            SliceOptions {
                axis,
                input,
                ..SliceOptions::default()
            },
        )?;
        // "the model": threshold channel 0 of the normalised input at 0.5 HU
        let t = (((threshold_hu - low) / (high - low)) as f32 - input.mean[0]) / input.std[0];
        let mut preds = Vec::new();
        while let Some(b) = src.next_batch(4).map_err(anyhow::Error::msg)? {
            for (n, r) in b.regions.iter().enumerate() {
                let ch0 = &b.pixels[n * 108..n * 108 + 36];
                preds.push(SlicePrediction {
                    index: r.index,
                    values: SliceValues::U8(ch0.iter().map(|x| u8::from(*x > t)).collect()),
                });
            }
        }
        let path = out.path().join(format!("pred_{axis}.nii.gz"));
        let written = write_predictions(&path, &v, axis, &input, &preds)?;
        assert_eq!(written.voxels, want);
        let back = read_nifti(&path, &Pseudonymizer::default())?;
        assert_eq!(back.volume.voxels, want, "{axis}");
        v.same_grid(&back.volume, 1e-4)?;
        let (a, b) = (back.info.affine_ras, v.affine_ras());
        for i in 0..4 {
            for j in 0..4 {
                assert!(
                    (a[i][j] - b[i][j]).abs() < 1e-4,
                    "{axis}: affine {a:?} vs {b:?}"
                );
            }
        }
        assert_eq!(back.info.dtype, "uint8");
    }
    Ok(())
}
