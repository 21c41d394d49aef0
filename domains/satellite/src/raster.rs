//! A raster opened through GDAL: geometry, CRS, bands, and windowed reads (never the whole file).

use std::path::{Path, PathBuf};

use gdal::raster::{GdalDataType, ResampleAlg};
use gdal::spatial_ref::SpatialRef;
use gdal::Dataset;
use serde::Serialize;

use crate::error::{Result, SatelliteError};
use crate::geotransform::GeoTransform;

/// A coordinate reference system as GDAL reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Crs {
    /// WKT1 (GDAL flavour), as `OSRExportToWkt` and rasterio's `crs.to_wkt()` give it.
    pub wkt: String,
    /// The EPSG code when the CRS is (or matches, at ≥ 70% confidence) an EPSG definition.
    pub epsg: Option<u32>,
}

impl Crs {
    fn from_spatial_ref(srs: &SpatialRef) -> Option<Crs> {
        let wkt = srs.to_wkt().ok().filter(|w| !w.is_empty())?;
        Some(Crs {
            wkt,
            epsg: epsg_of(srs),
        })
    }

    pub fn spatial_ref(&self) -> std::result::Result<SpatialRef, gdal::errors::GdalError> {
        SpatialRef::from_wkt(&self.wkt)
    }
}

/// The EPSG code of a CRS: its own authority code, else the best EPSG match GDAL finds with at
/// least 70% confidence (rasterio's `to_epsg()` rule).
fn epsg_of(srs: &SpatialRef) -> Option<u32> {
    if srs.auth_name().as_deref() == Some("EPSG") {
        if let Ok(code) = srs.auth_code() {
            return u32::try_from(code).ok();
        }
    }
    // SAFETY: OSRFindMatches returns an array of `n` owned handles (freed with
    // OSRFreeSRSArray) and a confidence array freed with CPLFree; both are read before freeing.
    unsafe {
        let mut n: std::ffi::c_int = 0;
        let mut confidence: *mut std::ffi::c_int = std::ptr::null_mut();
        let matches = gdal_sys::OSRFindMatches(
            srs.to_c_hsrs(),
            std::ptr::null_mut(),
            &mut n,
            &mut confidence,
        );
        if matches.is_null() {
            return None;
        }
        let mut found = None;
        for i in 0..n.max(0) as usize {
            if *confidence.add(i) < 70 {
                continue;
            }
            let h = *matches.add(i);
            let name = gdal_sys::OSRGetAuthorityName(h, std::ptr::null());
            let code = gdal_sys::OSRGetAuthorityCode(h, std::ptr::null());
            if name.is_null() || code.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(name).to_string_lossy();
            if name == "EPSG" {
                found = std::ffi::CStr::from_ptr(code)
                    .to_string_lossy()
                    .parse::<u32>()
                    .ok();
                break;
            }
        }
        gdal_sys::OSRFreeSRSArray(matches);
        gdal_sys::VSIFree(confidence as *mut std::ffi::c_void);
        found
    }
}

/// numpy's name for a GDAL pixel type (what rasterio reports as `dtypes`).
pub fn dtype_name(t: GdalDataType) -> &'static str {
    match t {
        GdalDataType::UInt8 => "uint8",
        GdalDataType::UInt16 => "uint16",
        GdalDataType::Int16 => "int16",
        GdalDataType::UInt32 => "uint32",
        GdalDataType::Int32 => "int32",
        GdalDataType::UInt64 => "uint64",
        GdalDataType::Int64 => "int64",
        GdalDataType::Float32 => "float32",
        GdalDataType::Float64 => "float64",
        _ => "unknown",
    }
}

/// Everything about a raster except its pixels.
#[derive(Debug, Clone, Serialize)]
pub struct RasterInfo {
    pub path: PathBuf,
    pub driver: String,
    pub width: usize,
    pub height: usize,
    pub dtypes: Vec<&'static str>,
    /// Per band.
    pub nodata: Vec<Option<f64>>,
    /// None when the file has no geotransform (GDAL's default identity is not georeferencing).
    pub geotransform: Option<GeoTransform>,
    pub crs: Option<Crs>,
    /// The natural block size of band 1 (columns, rows).
    pub block_size: (usize, usize),
}

impl RasterInfo {
    pub fn count(&self) -> usize {
        self.dtypes.len()
    }

    /// GDAL's geotransform, or its default identity when there is none.
    pub fn geotransform_or_identity(&self) -> GeoTransform {
        self.geotransform
            .unwrap_or(GeoTransform([0.0, 1.0, 0.0, 0.0, 0.0, 1.0]))
    }

    /// (min x, min y, max x, max y) of the whole raster.
    pub fn bounds(&self) -> [f64; 4] {
        self.geotransform_or_identity().window_bounds(
            0.0,
            0.0,
            self.width as f64,
            self.height as f64,
        )
    }

    /// The geotransform, or a clear error: chips and stitched outputs need georeferencing.
    pub fn require_geotransform(&self) -> Result<GeoTransform> {
        self.geotransform
            .ok_or_else(|| SatelliteError::NoGeoreference {
                path: self.path.clone(),
            })
    }
}

/// A raster open for reading.
pub struct Raster {
    path: PathBuf,
    ds: Dataset,
    info: RasterInfo,
}

/// Pixels of a window: `data[band][row][col]` for the requested bands, and `valid[row][col]`:
/// inside the raster, not nodata in any band, not NaN.
#[derive(Debug, Clone)]
pub struct WindowPixels {
    pub bands: usize,
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
    pub valid: Vec<bool>,
}

impl WindowPixels {
    pub fn valid_fraction(&self) -> f64 {
        if self.valid.is_empty() {
            return 0.0;
        }
        self.valid.iter().filter(|&&v| v).count() as f64 / self.valid.len() as f64
    }
}

/// A pixel window (may extend past the raster's edges; those pixels read as invalid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub col: i64,
    pub row: i64,
    pub width: usize,
    pub height: usize,
}

impl Raster {
    /// Open any raster GDAL reads (GeoTIFF, COG, VRT, JP2, ...), read-only.
    pub fn open(path: &Path) -> Result<Raster> {
        quiet_gdal_errors();
        if !path.exists() {
            return Err(SatelliteError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    dinoadapt_core::io::why_unreachable(path),
                ),
            });
        }
        dinoadapt_core::io::refuse_special_file(path).map_err(|source| SatelliteError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let ds = Dataset::open(path).map_err(|e| SatelliteError::Open {
            path: path.to_path_buf(),
            message: crate::error::gdal_reason(&e),
        })?;
        let (width, height) = ds.raster_size();
        let count = ds.raster_count();
        if count == 0 || width == 0 || height == 0 {
            return Err(SatelliteError::Open {
                path: path.to_path_buf(),
                message: format!("no raster bands ({width}x{height}, {count} bands)"),
            });
        }
        let mut dtypes = Vec::with_capacity(count);
        let mut nodata = Vec::with_capacity(count);
        let mut block_size = (width, 1);
        for b in 1..=count {
            let band = ds
                .rasterband(b)
                .map_err(SatelliteError::gdal(path, format!("band {b}")))?;
            dtypes.push(dtype_name(band.band_type()));
            nodata.push(band.no_data_value());
            if b == 1 {
                block_size = band.block_size();
            }
        }
        let geotransform = ds.geo_transform().ok().map(GeoTransform);
        let crs = ds
            .spatial_ref()
            .ok()
            .and_then(|s| Crs::from_spatial_ref(&s));
        let info = RasterInfo {
            path: path.to_path_buf(),
            driver: ds.driver().short_name(),
            width,
            height,
            dtypes,
            nodata,
            geotransform,
            crs,
            block_size,
        };
        Ok(Raster {
            path: path.to_path_buf(),
            ds,
            info,
        })
    }

    pub fn info(&self) -> &RasterInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dataset(&self) -> &Dataset {
        &self.ds
    }

    /// Check a 1-based band list against the raster.
    pub fn check_bands(&self, bands: &[usize]) -> Result<()> {
        if bands.is_empty() {
            return Err(SatelliteError::invalid(&self.path, "no bands selected"));
        }
        if let Some(b) = bands.iter().find(|&&b| b == 0 || b > self.info.count()) {
            return Err(SatelliteError::invalid(
                &self.path,
                format!(
                    "band {b} does not exist (bands are numbered 1..={})",
                    self.info.count()
                ),
            ));
        }
        Ok(())
    }

    /// Read `bands` (1-based) over `win` as f32; pixels outside the raster are 0 and invalid.
    pub fn read_window(&self, bands: &[usize], win: Window) -> Result<WindowPixels> {
        self.check_bands(bands)?;
        let (w, h) = (win.width, win.height);
        let mut out = WindowPixels {
            bands: bands.len(),
            width: w,
            height: h,
            data: vec![0.0; bands.len() * w * h],
            valid: vec![false; w * h],
        };
        // The part of the window inside the raster.
        let c0 = win.col.max(0);
        let r0 = win.row.max(0);
        let c1 = (win.col + w as i64).min(self.info.width as i64);
        let r1 = (win.row + h as i64).min(self.info.height as i64);
        if c1 <= c0 || r1 <= r0 {
            return Ok(out);
        }
        let (iw, ih) = ((c1 - c0) as usize, (r1 - r0) as usize);
        let (dx, dy) = ((c0 - win.col) as usize, (r0 - win.row) as usize);
        for y in 0..ih {
            out.valid[(dy + y) * w + dx..(dy + y) * w + dx + iw].fill(true);
        }
        let mut buf = vec![0f32; iw * ih];
        for (i, &b) in bands.iter().enumerate() {
            let band = self
                .ds
                .rasterband(b)
                .map_err(SatelliteError::gdal(&self.path, format!("band {b}")))?;
            band.read_into_slice::<f32>(
                (c0 as isize, r0 as isize),
                (iw, ih),
                (iw, ih),
                &mut buf,
                Some(ResampleAlg::NearestNeighbour),
            )
            .map_err(SatelliteError::gdal(
                &self.path,
                format!("reading band {b} at col {c0} row {r0} ({iw}x{ih})"),
            ))?;
            let nodata = self.info.nodata[b - 1].map(|v| v as f32);
            let plane = &mut out.data[i * w * h..(i + 1) * w * h];
            for y in 0..ih {
                let src = &buf[y * iw..(y + 1) * iw];
                let row = (dy + y) * w + dx;
                plane[row..row + iw].copy_from_slice(src);
                for (x, &v) in src.iter().enumerate() {
                    if !v.is_finite() || nodata == Some(v) {
                        out.valid[row + x] = false;
                    }
                }
            }
        }
        Ok(out)
    }

    /// One band over a window as f64 (full precision, for statistics).
    pub fn read_band_f64(&self, band: usize, win: Window) -> Result<Vec<f64>> {
        self.check_bands(&[band])?;
        let b = self
            .ds
            .rasterband(band)
            .map_err(SatelliteError::gdal(&self.path, format!("band {band}")))?;
        let mut buf = vec![0f64; win.width * win.height];
        b.read_into_slice::<f64>(
            (win.col as isize, win.row as isize),
            (win.width, win.height),
            (win.width, win.height),
            &mut buf,
            None,
        )
        .map_err(SatelliteError::gdal(
            &self.path,
            format!("reading band {band}"),
        ))?;
        Ok(buf)
    }

    /// Windows of whole rows covering the raster, about `target_pixels` each (for streaming).
    pub fn row_strips(&self, target_pixels: usize) -> Vec<Window> {
        let (w, h) = (self.info.width, self.info.height);
        let block_rows = self.info.block_size.1.max(1);
        let rows = (target_pixels / w.max(1)).max(1);
        let rows = rows.div_ceil(block_rows) * block_rows;
        (0..h)
            .step_by(rows)
            .map(|r| Window {
                col: 0,
                row: r as i64,
                width: w,
                height: rows.min(h - r),
            })
            .collect()
    }
}

/// GDAL prints its errors to stderr by default; route them to the log instead (they also come
/// back as the error values that this crate reports).
pub fn quiet_gdal_errors() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gdal::config::set_error_handler(|class, number, message| {
            tracing::debug!("GDAL {class:?} {number}: {message}");
        });
    });
}
