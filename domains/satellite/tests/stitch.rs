//! Tiled inference with the band-passthrough "model" reproduces the input exactly (chip grid,
//! blending, nodata and georeferencing), on a shared GeoTIFF and on generated rasters; label
//! rasters in a rotated grid or another CRS land on the imagery grid; bad inputs fail clearly.

mod common;

use std::path::Path;

use dinoadapt_satellite::align::{warp_to_grid, LabelResampling};
use dinoadapt_satellite::predict::{predict_raster, BandPassthrough, PredictConfig};
use dinoadapt_satellite::{Blend, GeoTransform, Raster, SatelliteError, Window};
use gdal::raster::Buffer;
use gdal::spatial_ref::SpatialRef;
use gdal::{Dataset, DriverManager, Metadata};

/// A float32 GeoTIFF with `bands` planes given by `value(band, col, row)`.
fn make_raster(
    path: &Path,
    (w, h): (usize, usize),
    bands: usize,
    gt: Option<[f64; 6]>,
    epsg: Option<u32>,
    nodata: Option<f64>,
    value: impl Fn(usize, usize, usize) -> f32,
) {
    let driver = DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = driver
        .create_with_band_type::<f32, _>(path, w, h, bands)
        .unwrap();
    if let Some(gt) = gt {
        ds.set_geo_transform(&gt).unwrap();
    }
    if let Some(code) = epsg {
        ds.set_spatial_ref(&SpatialRef::from_epsg(code).unwrap())
            .unwrap();
    }
    for b in 0..bands {
        let mut band = ds.rasterband(b + 1).unwrap();
        band.set_no_data_value(nodata).unwrap();
        let data: Vec<f32> = (0..h)
            .flat_map(|r| (0..w).map(move |c| (r, c)))
            .map(|(r, c)| value(b, c, r))
            .collect();
        band.write((0, 0), (w, h), &mut Buffer::new((w, h), data))
            .unwrap();
    }
}

fn read_all(path: &Path, band: usize) -> Vec<f32> {
    let ds = Dataset::open(path).unwrap();
    let (w, h) = ds.raster_size();
    ds.rasterband(band)
        .unwrap()
        .read_as::<f32>((0, 0), (w, h), (w, h), None)
        .unwrap()
        .data()
        .to_vec()
}

fn config(bands: Vec<usize>, size: usize, stride: usize, blend: Blend, cog: bool) -> PredictConfig {
    PredictConfig {
        bands,
        chip_size: size,
        stride,
        blend,
        batch_size: 3,
        nodata: None,
        cog,
    }
}

#[test]
fn passthrough_reproduces_a_shared_geotiff_with_its_crs_and_geotransform() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let src = data.join("satellite/rgbn.tif");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nir.tif");
    let raster = Raster::open(&src).unwrap();
    let mut model = BandPassthrough { band: 1 };
    let summary = predict_raster(
        &raster,
        &out,
        &config(vec![1, 4], 64, 48, Blend::Cosine, false),
        &mut model,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(summary.chips > 50);
    let want: Vec<f32> = read_all(&src, 4);
    let got = read_all(&out, 1);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "stitched NIR band differs from the input");
    let (a, b) = (Dataset::open(&src).unwrap(), Dataset::open(&out).unwrap());
    assert_eq!(a.geo_transform().unwrap(), b.geo_transform().unwrap());
    assert!(a.spatial_ref().unwrap() == b.spatial_ref().unwrap());
    assert_eq!(
        b.rasterband(1).unwrap().band_type(),
        gdal::raster::GdalDataType::Float32
    );
    assert_eq!(
        b.metadata_item("COMPRESSION", "IMAGE_STRUCTURE").as_deref(),
        Some("DEFLATE")
    );
}

#[test]
fn passthrough_keeps_nodata_holes_and_writes_a_cog() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("holes.tif");
    let nodata = -9999.0;
    // 300x200, Web Mercator; a nodata disc, a nodata block larger than a chip, and noise values.
    make_raster(
        &src,
        (300, 200),
        2,
        Some([-8.0e6, 30.0, 0.0, 4.5e6, 0.0, -30.0]),
        Some(3857),
        Some(nodata),
        |b, c, r| {
            let (x, y) = (c as f32, r as f32);
            if (x - 80.0).powi(2) + (y - 60.0).powi(2) < 400.0 || (c >= 200 && r >= 100) {
                nodata as f32
            } else {
                ((c * 7919 + r * 104729 + b * 31) % 1000) as f32 * 0.37 - 50.0
            }
        },
    );
    let out = dir.path().join("pred.tif");
    let raster = Raster::open(&src).unwrap();
    let summary = predict_raster(
        &raster,
        &out,
        &config(vec![2], 32, 24, Blend::Gaussian, true),
        &mut BandPassthrough { band: 0 },
        &mut |_, _| {},
    )
    .unwrap();
    assert!(summary.chips_skipped_nodata > 0, "{summary:?}");
    assert_eq!(read_all(&out, 1), read_all(&src, 2));
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.rasterband(1).unwrap().no_data_value(), Some(nodata));
    assert_eq!(
        ds.metadata_item("LAYOUT", "IMAGE_STRUCTURE").as_deref(),
        Some("COG")
    );
    assert!(ds.spatial_ref().unwrap() == SpatialRef::from_epsg(3857).unwrap());
}

#[test]
fn a_raster_without_georeferencing_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("plain.tif");
    make_raster(&src, (40, 30), 1, None, None, None, |_, c, r| {
        (c + r) as f32
    });
    let raster = Raster::open(&src).unwrap();
    assert!(raster.info().geotransform.is_none());
    let err = predict_raster(
        &raster,
        &dir.path().join("out.tif"),
        &config(vec![1], 16, 16, Blend::Uniform, false),
        &mut BandPassthrough { band: 0 },
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, SatelliteError::NoGeoreference { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no georeferencing"), "{err}");
    assert!(!dir.path().join("out.tif").exists());
}

/// Nearest-neighbour expectation: the label value under each imagery pixel centre.
fn expected_nearest(
    image_gt: &GeoTransform,
    (w, h): (usize, usize),
    to_label_world: impl Fn(f64, f64) -> (f64, f64),
    label_gt: &GeoTransform,
    (lw, lh): (usize, usize),
    value: impl Fn(usize, usize) -> f32,
) -> Vec<Option<f32>> {
    let inv = label_gt.invert().unwrap();
    let mut out = Vec::with_capacity(w * h);
    for r in 0..h {
        for c in 0..w {
            let (x, y) = image_gt.apply(c as f64 + 0.5, r as f64 + 0.5);
            let (x, y) = to_label_world(x, y);
            let (lc, lr) = inv.apply(x, y);
            out.push(
                (lc >= 0.0 && lr >= 0.0 && (lc as usize) < lw && (lr as usize) < lh)
                    .then(|| value(lc as usize, lr as usize)),
            );
        }
    }
    out
}

fn agreement(got: &[f32], want: &[Option<f32>]) -> f64 {
    let pairs: Vec<(f32, f32)> = got
        .iter()
        .zip(want)
        .filter_map(|(&g, w)| w.map(|w| (g, w)))
        .collect();
    assert!(pairs.len() > want.len() / 4, "too little overlap");
    pairs.iter().filter(|(g, w)| g == w).count() as f64 / pairs.len() as f64
}

#[test]
fn a_rotated_label_raster_lands_on_the_imagery_grid() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.tif");
    let label = dir.path().join("label.tif");
    let image_gt = GeoTransform([500_000.0, 10.0, 0.0, 4_000_000.0, 0.0, -10.0]);
    make_raster(
        &image,
        (120, 90),
        1,
        Some(image_gt.0),
        Some(32618),
        None,
        |_, c, _| c as f32,
    );
    // The label grid: 7 m pixels rotated by ~17°, same CRS.
    let (s, a) = (7.0, 0.3f64);
    let label_gt = GeoTransform([
        499_900.0,
        s * a.cos(),
        s * a.sin(),
        4_000_150.0,
        s * a.sin(),
        -s * a.cos(),
    ]);
    let value = |c: usize, r: usize| (c / 6 + 10 * (r / 5)) as f32;
    make_raster(
        &label,
        (260, 220),
        1,
        Some(label_gt.0),
        Some(32618),
        Some(-1.0),
        |_, c, r| value(c, r),
    );
    let warped = warp_to_grid(
        &Raster::open(&label).unwrap(),
        Raster::open(&image).unwrap().info(),
        &dir.path().join("aligned.tif"),
        LabelResampling::Nearest,
    )
    .unwrap();
    let info = warped.info();
    assert_eq!((info.width, info.height), (120, 90));
    assert_eq!(info.geotransform, Some(image_gt));
    let got = warped
        .read_window(
            &[1],
            Window {
                col: 0,
                row: 0,
                width: 120,
                height: 90,
            },
        )
        .unwrap()
        .data;
    let want = expected_nearest(
        &image_gt,
        (120, 90),
        |x, y| (x, y),
        &label_gt,
        (260, 220),
        value,
    );
    let ok = agreement(&got, &want);
    assert!(ok > 0.99, "nearest agreement {ok}");
}

#[test]
fn a_label_raster_in_another_crs_is_reprojected() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.tif");
    let label = dir.path().join("label.tif");
    // UTM 18N imagery near 75°W, 36°N; the label in geographic WGS 84 covering it.
    let image_gt = GeoTransform([500_000.0, 20.0, 0.0, 3_990_000.0, 0.0, -20.0]);
    make_raster(
        &image,
        (100, 80),
        1,
        Some(image_gt.0),
        Some(32618),
        None,
        |_, _, _| 1.0,
    );
    let label_gt = GeoTransform([-75.02, 0.0003, 0.0, 36.07, 0.0, -0.0003]);
    let value = |c: usize, r: usize| (c / 4 + 1000 * (r / 4)) as f32;
    make_raster(
        &label,
        (200, 160),
        1,
        Some(label_gt.0),
        Some(4326),
        Some(-1.0),
        |_, c, r| value(c, r),
    );
    let warped = warp_to_grid(
        &Raster::open(&label).unwrap(),
        Raster::open(&image).unwrap().info(),
        &dir.path().join("aligned.tif"),
        LabelResampling::Nearest,
    )
    .unwrap();
    let got = warped
        .read_window(
            &[1],
            Window {
                col: 0,
                row: 0,
                width: 100,
                height: 80,
            },
        )
        .unwrap()
        .data;
    let mut utm = SpatialRef::from_epsg(32618).unwrap();
    let mut wgs = SpatialRef::from_epsg(4326).unwrap();
    use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform};
    utm.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    wgs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let t = CoordTransform::new(&utm, &wgs).unwrap();
    let to_lonlat = |x: f64, y: f64| {
        let (mut xs, mut ys, mut zs) = ([x], [y], [0.0]);
        t.transform_coords(&mut xs, &mut ys, &mut zs).unwrap();
        (xs[0], ys[0])
    };
    let want = expected_nearest(
        &image_gt,
        (100, 80),
        to_lonlat,
        &label_gt,
        (200, 160),
        value,
    );
    let ok = agreement(&got, &want);
    assert!(ok > 0.97, "nearest agreement {ok}");
}

#[test]
fn labels_that_do_not_overlap_or_lack_a_crs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.tif");
    make_raster(
        &image,
        (50, 50),
        1,
        Some([500_000.0, 10.0, 0.0, 4_000_000.0, 0.0, -10.0]),
        Some(32618),
        None,
        |_, _, _| 0.0,
    );
    let far = dir.path().join("far.tif");
    make_raster(
        &far,
        (50, 50),
        1,
        Some([600_000.0, 10.0, 0.0, 4_000_000.0, 0.0, -10.0]),
        Some(32618),
        None,
        |_, _, _| 0.0,
    );
    let info = Raster::open(&image).unwrap().info().clone();
    let out = dir.path().join("aligned.tif");
    let err = warp_to_grid(
        &Raster::open(&far).unwrap(),
        &info,
        &out,
        LabelResampling::Nearest,
    )
    .err()
    .unwrap();
    assert!(matches!(err, SatelliteError::NoOverlap { .. }), "{err}");
    assert!(err.to_string().contains("does not overlap"), "{err}");
    assert!(!out.exists());

    let no_crs = dir.path().join("no_crs.tif");
    make_raster(
        &no_crs,
        (50, 50),
        1,
        Some([500_000.0, 10.0, 0.0, 4_000_000.0, 0.0, -10.0]),
        None,
        None,
        |_, _, _| 0.0,
    );
    let err = warp_to_grid(
        &Raster::open(&no_crs).unwrap(),
        &info,
        &out,
        LabelResampling::Nearest,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("has no CRS"), "{err}");
}

#[test]
fn an_unopenable_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.tif");
    std::fs::write(&bad, b"II*\0 this is not a tiff").unwrap();
    let err = Raster::open(&bad).err().unwrap();
    assert!(err.to_string().contains("GDAL cannot open it"), "{err}");
    let err = Raster::open(&dir.path().join("missing.tif")).err().unwrap();
    assert!(err.to_string().contains("no such file"), "{err}");
}
