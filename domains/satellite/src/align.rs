//! Label rasters (lidar canopy-height models, class maps) warped onto the imagery grid with
//! GDAL's warper: same CRS, resolution, extent and size as the imagery, so a chip window reads
//! the matching label window.

use std::collections::BTreeMap;
use std::path::Path;

use dinoadapt_core::io::{persist, temp_file_beside};
use gdal::raster::RasterCreationOptions;
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::DriverManager;

use crate::error::{Result, SatelliteError};
use crate::raster::{Raster, RasterInfo, Window};

/// Resampling for label rasters: nearest or mode for class maps, bilinear/average for heights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelResampling {
    Nearest,
    Bilinear,
    Average,
    Mode,
}

impl LabelResampling {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "nearest" => Some(Self::Nearest),
            "bilinear" => Some(Self::Bilinear),
            "average" => Some(Self::Average),
            "mode" => Some(Self::Mode),
            _ => None,
        }
    }

    fn gdal(self) -> gdal_sys::GDALResampleAlg::Type {
        use gdal_sys::GDALResampleAlg::*;
        match self {
            Self::Nearest => GRA_NearestNeighbour,
            Self::Bilinear => GRA_Bilinear,
            Self::Average => GRA_Average,
            Self::Mode => GRA_Mode,
        }
    }
}

fn traditional(wkt: &str, path: &Path) -> Result<SpatialRef> {
    let mut srs =
        SpatialRef::from_wkt(wkt).map_err(SatelliteError::gdal(path, "reading the CRS"))?;
    srs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    Ok(srs)
}

/// The label's bounds expressed in the imagery's CRS (densified edges, so curved reprojected
/// edges are enclosed).
pub fn label_bounds_in_image_crs(label: &RasterInfo, image: &RasterInfo) -> Result<[f64; 4]> {
    label.require_geotransform()?;
    let bounds = label.bounds();
    match (&label.crs, &image.crs) {
        (Some(l), Some(i)) => {
            let (from, to) = (
                traditional(&l.wkt, &label.path)?,
                traditional(&i.wkt, &image.path)?,
            );
            if from == to {
                return Ok(bounds);
            }
            let t = CoordTransform::new(&from, &to).map_err(SatelliteError::gdal(
                &label.path,
                "CRS transformation to the imagery",
            ))?;
            t.transform_bounds(&bounds, 21)
                .map_err(SatelliteError::gdal(
                    &label.path,
                    "transforming the label's bounds",
                ))
        }
        (None, None) => Ok(bounds),
        (None, Some(_)) => Err(SatelliteError::invalid(
            &label.path,
            "the label raster has no CRS but the imagery has one: assign it (gdal_edit.py -a_srs)",
        )),
        (Some(_), None) => Err(SatelliteError::invalid(
            &image.path,
            "the imagery has no CRS but the label raster has one: assign it (gdal_edit.py -a_srs)",
        )),
    }
}

/// Warp `label` onto `image`'s grid into a float32 GeoTIFF at `out`; pixels the label does not
/// cover are nodata (the label's nodata, else NaN). A label that does not overlap the imagery is
/// an error, never an all-nodata file.
pub fn warp_to_grid(
    label: &Raster,
    image: &RasterInfo,
    out: &Path,
    resampling: LabelResampling,
) -> Result<Raster> {
    let gt = image.require_geotransform()?;
    let l = label.info();
    let lb = label_bounds_in_image_crs(l, image)?;
    let ib = image.bounds();
    let (ix0, iy0, ix1, iy1) = (
        lb[0].max(ib[0]),
        lb[1].max(ib[1]),
        lb[2].min(ib[2]),
        lb[3].min(ib[3]),
    );
    if !(ix1 > ix0 && iy1 > iy0) {
        return Err(SatelliteError::NoOverlap {
            label: l.path.clone(),
            image: image.path.clone(),
            label_bounds: lb,
            image_bounds: ib,
        });
    }
    let nodata = l.nodata[0].unwrap_or(f64::NAN);
    let driver = DriverManager::get_driver_by_name("GTiff")
        .map_err(SatelliteError::gdal(out, "the GTiff driver"))?;
    let options =
        RasterCreationOptions::from_iter(["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]);
    let io = |source| SatelliteError::Io {
        path: out.to_path_buf(),
        source,
    };
    let tmp = temp_file_beside(out).map_err(io)?;
    let part = tmp.path();
    {
        let mut ds = driver
            .create_with_band_type_with_options::<f32, _>(
                part,
                image.width,
                image.height,
                l.count(),
                &options,
            )
            .map_err(SatelliteError::gdal(
                part,
                "creating the aligned label raster",
            ))?;
        ds.set_geo_transform(&gt.0)
            .map_err(SatelliteError::gdal(part, "setting the geotransform"))?;
        if let Some(c) = &image.crs {
            ds.set_projection(&c.wkt)
                .map_err(SatelliteError::gdal(part, "setting the CRS"))?;
        }
        for b in 1..=l.count() {
            let mut band = ds
                .rasterband(b)
                .map_err(SatelliteError::gdal(part, format!("band {b}")))?;
            band.set_no_data_value(Some(nodata))
                .map_err(SatelliteError::gdal(part, "setting nodata"))?;
            band.fill(nodata, None)
                .map_err(SatelliteError::gdal(part, "filling with nodata"))?;
        }
        let wkt = |c: &Option<crate::raster::Crs>| {
            std::ffi::CString::new(c.as_ref().map(|c| c.wkt.clone()).unwrap_or_default())
                .unwrap_or_default()
        };
        let (src_wkt, dst_wkt) = (wkt(&l.crs), wkt(&image.crs));
        let ptr = |s: &std::ffi::CString| {
            if s.as_bytes().is_empty() {
                std::ptr::null()
            } else {
                s.as_ptr()
            }
        };
        // SAFETY: both handles are open datasets owned here; the WKT strings outlive the call;
        // null progress and options are allowed by GDALReprojectImage.
        let rv = unsafe {
            gdal_sys::GDALReprojectImage(
                label.dataset().c_dataset(),
                ptr(&src_wkt),
                ds.c_dataset(),
                ptr(&dst_wkt),
                resampling.gdal(),
                256.0 * 1024.0 * 1024.0,
                0.125,
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rv != gdal_sys::CPLErr::CE_None {
            return Err(SatelliteError::invalid(
                &l.path,
                format!(
                    "GDAL could not warp the label raster onto {}",
                    image.path.display()
                ),
            ));
        }
        ds.flush_cache()
            .map_err(SatelliteError::gdal(part, "flushing"))?;
    }
    persist(tmp, out).map_err(io)?;
    Raster::open(out)
}

/// Band 1 of `label` under every chip (`(source raster, window)`, each `size` × `size` px), NaN
/// where the label has no data: the label warped (`resampling`) onto each source raster's grid
/// once, into `scratch` (an existing folder the caller removes), chip after chip.
pub fn chip_targets(
    label: &Raster,
    chips: &[(String, Window)],
    size: usize,
    resampling: LabelResampling,
    scratch: &Path,
) -> Result<Vec<f32>> {
    let mut aligned: BTreeMap<&str, Raster> = BTreeMap::new();
    let mut out = Vec::with_capacity(chips.len() * size * size);
    for (source, window) in chips {
        if !aligned.contains_key(source.as_str()) {
            let image =
                Raster::open(Path::new(source)).map_err(|e| SatelliteError::SourceRaster {
                    name: source.clone(),
                    source: Box::new(e),
                })?;
            let dest = scratch.join(format!("{}.tif", aligned.len()));
            let a = warp_to_grid(label, image.info(), &dest, resampling)?;
            aligned.insert(source, a);
        }
        let px = aligned[source.as_str()].read_window(&[1], *window)?;
        if px.width * px.height != size * size {
            return Err(SatelliteError::ChipSize {
                width: px.width,
                height: px.height,
                size,
            });
        }
        out.extend(
            px.data
                .iter()
                .zip(&px.valid)
                .map(|(&v, &ok)| if ok { v } else { f32::NAN }),
        );
    }
    Ok(out)
}
