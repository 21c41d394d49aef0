//! `inspect RASTER --json`: the raster's geometry as GDAL reports it, with per-band statistics.
//!
//! Key names follow rasterio's vocabulary (`width`, `height`, `count`, `dtypes`, `nodata`,
//! `bounds`) plus `geotransform_gdal` in GDAL's own order.

use serde::Serialize;

use crate::error::Result;
use crate::raster::Raster;

/// Min, max and mean of a band over its valid pixels (nodata excluded; a NaN pixel makes all
/// three NaN, which JSON writes as null, as numpy would propagate it).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BandStats {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub valid_pixels: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RasterReport {
    pub kind: &'static str,
    pub path: String,
    pub driver: String,
    pub width: usize,
    pub height: usize,
    pub count: usize,
    pub dtypes: Vec<&'static str>,
    /// Band 1's nodata value (rasterio's `dataset.nodata`).
    #[serde(serialize_with = "nodata_json::one")]
    pub nodata: Option<f64>,
    /// Every band's nodata value.
    #[serde(serialize_with = "nodata_json::each")]
    pub nodatavals: Vec<Option<f64>>,
    pub georeferenced: bool,
    /// GDAL's order: origin x, pixel width, row rotation, origin y, column rotation, pixel height.
    pub geotransform_gdal: [f64; 6],
    /// (left, bottom, right, top) in CRS units.
    pub bounds: [f64; 4],
    pub crs_wkt: Option<String>,
    pub epsg: Option<u32>,
    pub block_size: [usize; 2],
    pub band_stats_excluding_nodata: Vec<BandStats>,
}

/// Nodata values in JSON as `gdalinfo -json` writes them: a number, or "nan" / "inf" / "-inf"
/// (JSON has no NaN; serde would write null, which reads as "no nodata" — wrong for the NaN
/// nodata of float rasters, ours included).
mod nodata_json {
    use serde::ser::{SerializeSeq, Serializer};

    enum Value {
        Number(f64),
        Text(&'static str),
    }

    fn value(v: f64) -> Value {
        if v.is_nan() {
            Value::Text("nan")
        } else if v == f64::INFINITY {
            Value::Text("inf")
        } else if v == f64::NEG_INFINITY {
            Value::Text("-inf")
        } else {
            Value::Number(v)
        }
    }

    impl serde::Serialize for Value {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Value::Number(v) => s.serialize_f64(*v),
                Value::Text(t) => s.serialize_str(t),
            }
        }
    }

    pub fn one<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&value(*v)),
            None => s.serialize_none(),
        }
    }

    pub fn each<S: Serializer>(vs: &[Option<f64>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(vs.len()))?;
        for v in vs {
            seq.serialize_element(&v.map(value))?;
        }
        seq.end()
    }
}

/// Streamed statistics of one band (rows at a time, never the whole band in memory).
pub fn band_stats(raster: &Raster, band: usize) -> Result<BandStats> {
    let nodata = raster.info().nodata[band - 1];
    let (mut min, mut max, mut sum, mut n, mut nan) =
        (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, 0u64, false);
    for win in raster.row_strips(1 << 20) {
        for v in raster.read_band_f64(band, win)? {
            if nodata == Some(v) || (nodata.is_some_and(f64::is_nan) && v.is_nan()) {
                continue;
            }
            if v.is_nan() {
                nan = true;
                continue;
            }
            min = min.min(v);
            max = max.max(v);
            sum += v;
            n += 1;
        }
    }
    if nan || n == 0 {
        return Ok(BandStats {
            min: f64::NAN,
            max: f64::NAN,
            mean: f64::NAN,
            valid_pixels: n,
        });
    }
    Ok(BandStats {
        min,
        max,
        mean: sum / n as f64,
        valid_pixels: n,
    })
}

/// The report for one raster; `stats` adds a full pass over the pixels.
pub fn report(raster: &Raster, stats: bool) -> Result<RasterReport> {
    let info = raster.info();
    let band_stats_excluding_nodata = if stats {
        (1..=info.count())
            .map(|b| band_stats(raster, b))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    Ok(RasterReport {
        kind: "raster",
        path: info.path.display().to_string(),
        driver: info.driver.clone(),
        width: info.width,
        height: info.height,
        count: info.count(),
        dtypes: info.dtypes.clone(),
        nodata: info.nodata[0],
        nodatavals: info.nodata.clone(),
        georeferenced: info.geotransform.is_some(),
        geotransform_gdal: info.geotransform_or_identity().0,
        bounds: info.bounds(),
        crs_wkt: info.crs.as_ref().map(|c| c.wkt.clone()),
        epsg: info.crs.as_ref().and_then(|c| c.epsg),
        block_size: [info.block_size.0, info.block_size.1],
        band_stats_excluding_nodata,
    })
}

/// A georeferenced TIFF is a raster for certain (OpenSlide may open it too); anything else GDAL
/// may open (VRT, JP2, PNG, ...) is possibly a raster: the domain of last resort.
pub fn claim(path: &std::path::Path) -> dinoadapt_datasets::FileClaim {
    use dinoadapt_datasets::FileClaim;
    let tiff = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("tif") || e.eq_ignore_ascii_case("tiff"));
    if tiff && Raster::open(path).is_ok_and(|r| r.info().geotransform.is_some()) {
        FileClaim::Certain
    } else {
        FileClaim::Possible
    }
}

/// The raster's geometry and band statistics, as JSON and as text.
pub fn describe(
    path: &std::path::Path,
) -> std::result::Result<dinoadapt_datasets::FileDescription, dinoadapt_datasets::DomainError> {
    use dinoadapt_datasets::DomainError;
    let raster = Raster::open(path).map_err(DomainError::input)?;
    let r = report(&raster, true).map_err(DomainError::input)?;
    let json = serde_json::to_value(&r).map_err(DomainError::input)?;
    let mut text = vec![
        format!("raster        {} ({})", r.path, r.driver),
        format!(
            "size          {} x {} px, {} bands {:?}",
            r.width, r.height, r.count, r.dtypes
        ),
        format!("nodata        {:?}", r.nodatavals),
    ];
    text.push(match (&r.epsg, &r.crs_wkt) {
        (Some(code), _) => format!("crs           EPSG:{code}"),
        (None, Some(w)) => format!("crs           {}", w.split('"').nth(1).unwrap_or("custom")),
        (None, None) => "crs           none".to_string(),
    });
    if r.georeferenced {
        text.push(format!("geotransform  {:?}", r.geotransform_gdal));
        text.push(format!("bounds        {:?}", r.bounds));
    } else {
        text.push("geotransform  none (not georeferenced)".to_string());
    }
    for (b, s) in r.band_stats_excluding_nodata.iter().enumerate() {
        text.push(format!(
            "band {}        min {} max {} mean {:.4} ({} valid px)",
            b + 1,
            s.min,
            s.max,
            s.mean,
            s.valid_pixels
        ));
    }
    Ok(dinoadapt_datasets::FileDescription { json, text })
}
