//! `inspect` against what rasterio/GDAL report for every shared raster
//! (`../shared/data/REFERENCE.json`, made with rasterio 1.4.4 / GDAL 3.10.3).

mod common;

use dinoadapt_satellite::inspect::report;
use dinoadapt_satellite::{Normalization, Raster};
use serde_json::Value;

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn inspect_matches_gdal_for_every_shared_raster() {
    let Some(data) = common::shared_data() else {
        return;
    };
    // Python's json writes NaN bare; JSON proper has no NaN, so read it as null.
    let text = std::fs::read_to_string(data.join("REFERENCE.json")).unwrap();
    let reference: Value = serde_json::from_str(&text.replace("NaN", "null")).unwrap();
    let mut checked = 0;
    for (key, want) in reference.as_object().unwrap() {
        if want.get("kind").and_then(Value::as_str) != Some("raster") {
            continue;
        }
        let raster = Raster::open(&data.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        let got = serde_json::to_value(report(&raster, true).unwrap()).unwrap();
        for field in ["width", "height", "count", "dtypes", "epsg"] {
            assert_eq!(got[field], want[field], "{key}: {field}");
        }
        assert_eq!(
            got["nodata"].as_f64(),
            want["nodata"].as_f64(),
            "{key}: nodata"
        );
        for field in ["geotransform_gdal", "bounds"] {
            let (g, w) = (
                got[field].as_array().unwrap(),
                want[field].as_array().unwrap(),
            );
            assert_eq!(g.len(), w.len());
            for (a, b) in g.iter().zip(w) {
                assert!(
                    close(a.as_f64().unwrap(), b.as_f64().unwrap(), 1e-12),
                    "{key}: {field} {g:?} vs {w:?}"
                );
            }
        }
        // The CRS: the same definition (GDAL's OSRIsSame), when the reference has one. merc.tif
        // carries a user-defined Mercator/NAD27 CRS in GeoKeys that GDAL 3.6 (Debian) reads and
        // rasterio's GDAL 3.10 drops; neither has an EPSG code, which is compared above.
        match (want["crs_wkt"].as_str(), got["crs_wkt"].as_str()) {
            (Some(w), Some(g)) => {
                let (w, g) = (
                    gdal::spatial_ref::SpatialRef::from_wkt(w).unwrap(),
                    gdal::spatial_ref::SpatialRef::from_wkt(g).unwrap(),
                );
                assert!(w == g, "{key}: CRS differs");
            }
            (Some(_), None) => panic!("{key}: GDAL reports a CRS, we report none"),
            (None, Some(_)) => assert_eq!(want["epsg"], Value::Null, "{key}"),
            (None, None) => {}
        }
        let (gs, ws) = (
            got["band_stats_excluding_nodata"].as_array().unwrap(),
            want["band_stats_excluding_nodata"].as_array().unwrap(),
        );
        assert_eq!(gs.len(), ws.len(), "{key}: band count of stats");
        for (b, (g, w)) in gs.iter().zip(ws).enumerate() {
            for s in ["min", "max", "mean"] {
                match (g[s].as_f64(), w[s].as_f64()) {
                    (Some(a), Some(e)) => {
                        assert!(close(a, e, 1e-9), "{key}: band {} {s} {a} vs {e}", b + 1)
                    }
                    // NaN in the reference (Python's json) is null in ours.
                    (None, None) => {}
                    (a, e) => panic!("{key}: band {} {s} {a:?} vs {e:?}", b + 1),
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} rasters in the reference");
}

/// Issue 18, defect 1: a band the raster lacks (any band but 1 of the one-band `merc.tif`) was
/// indexed in the dtype list before it was checked, and `satellite embed`/`predict` panicked.
#[test]
fn a_band_the_raster_lacks_is_refused_not_indexed() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let raster = Raster::open(&data.join("satellite/merc.tif")).unwrap();
    assert_eq!(raster.info().count(), 1);
    for bands in [vec![1, 2, 3], vec![0, 1, 1], vec![1, 1, 4]] {
        let e = Normalization::preset("imagenet", &[&raster], &bands).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{bands:?}: {e}");
    }
    assert!(Normalization::preset("none", &[&raster], &[1]).is_ok());
}
