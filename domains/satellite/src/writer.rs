//! Georeferenced float32 outputs: a tiled, compressed GeoTIFF (or a COG) with the source's CRS
//! and geotransform, written in row strips and renamed into place only when complete.

use std::path::{Path, PathBuf};

use dinoadapt_core::io::{persist, temp_file_beside, NamedTempFile};
use gdal::raster::{Buffer, RasterCreationOptions};
use gdal::{Dataset, DriverManager};

use crate::error::{Result, SatelliteError};
use crate::geotransform::GeoTransform;
use crate::raster::Crs;

/// What the output file looks like.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub width: usize,
    pub height: usize,
    pub bands: usize,
    pub geotransform: GeoTransform,
    pub crs: Option<Crs>,
    pub nodata: f64,
    /// Write a Cloud-Optimised GeoTIFF (internal overviews, COG layout) instead of a tiled GTiff.
    pub cog: bool,
}

/// A float32 raster being written; `finish` makes it appear under its name.
pub struct GeoTiffWriter {
    path: PathBuf,
    /// The file GDAL writes, beside `path`; moved onto it by `finish`.
    part: NamedTempFile,
    ds: Dataset,
    spec: OutputSpec,
}

fn temp_beside(path: &Path) -> Result<NamedTempFile> {
    temp_file_beside(path).map_err(|source| SatelliteError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl GeoTiffWriter {
    pub fn create(path: &Path, spec: OutputSpec) -> Result<GeoTiffWriter> {
        let part = temp_beside(path)?;
        let tmp = part.path();
        let driver = DriverManager::get_driver_by_name("GTiff")
            .map_err(SatelliteError::gdal(path, "the GTiff driver"))?;
        let options = RasterCreationOptions::from_iter([
            "TILED=YES",
            "BLOCKXSIZE=256",
            "BLOCKYSIZE=256",
            "COMPRESS=DEFLATE",
            "PREDICTOR=3",
            "BIGTIFF=IF_SAFER",
        ]);
        let mut ds = driver
            .create_with_band_type_with_options::<f32, _>(
                tmp,
                spec.width,
                spec.height,
                spec.bands,
                &options,
            )
            .map_err(SatelliteError::gdal(tmp, "creating the output GeoTIFF"))?;
        ds.set_geo_transform(&spec.geotransform.0)
            .map_err(SatelliteError::gdal(tmp, "setting the geotransform"))?;
        if let Some(crs) = &spec.crs {
            let srs = crs
                .spatial_ref()
                .map_err(SatelliteError::gdal(tmp, "the source CRS"))?;
            ds.set_spatial_ref(&srs)
                .map_err(SatelliteError::gdal(tmp, "setting the CRS"))?;
        }
        for b in 1..=spec.bands {
            let mut band = ds
                .rasterband(b)
                .map_err(SatelliteError::gdal(tmp, format!("band {b}")))?;
            band.set_no_data_value(Some(spec.nodata))
                .map_err(SatelliteError::gdal(tmp, "setting nodata"))?;
        }
        Ok(GeoTiffWriter {
            path: path.to_path_buf(),
            part,
            ds,
            spec,
        })
    }

    pub fn spec(&self) -> &OutputSpec {
        &self.spec
    }

    /// Write `rows` full rows starting at `row0`; `data` is band-major: [band][row][col].
    pub fn write_rows(&mut self, row0: usize, rows: usize, data: Vec<f32>) -> Result<()> {
        let w = self.spec.width;
        debug_assert_eq!(data.len(), self.spec.bands * rows * w);
        for (b, plane) in data.chunks(rows * w).enumerate() {
            let mut band = self.ds.rasterband(b + 1).map_err(SatelliteError::gdal(
                self.part.path(),
                format!("band {}", b + 1),
            ))?;
            let mut buf = Buffer::new((w, rows), plane.to_vec());
            band.write((0, row0 as isize), (w, rows), &mut buf)
                .map_err(SatelliteError::gdal(
                    self.part.path(),
                    format!("writing rows at {row0}"),
                ))?;
        }
        Ok(())
    }

    /// Flush, convert to COG if asked, and rename into place.
    pub fn finish(self) -> Result<PathBuf> {
        let GeoTiffWriter {
            path,
            part,
            mut ds,
            spec,
        } = self;
        ds.flush_cache()
            .map_err(SatelliteError::gdal(part.path(), "flushing"))?;
        if spec.cog {
            let cog = temp_beside(&path)?;
            let driver = DriverManager::get_driver_by_name("COG")
                .map_err(SatelliteError::gdal(&path, "the COG driver"))?;
            let options = RasterCreationOptions::from_iter([
                "COMPRESS=DEFLATE",
                "PREDICTOR=YES",
                "BIGTIFF=IF_SAFER",
                "OVERVIEWS=AUTO",
            ]);
            let out = ds
                .create_copy(&driver, cog.path(), &options)
                .map_err(SatelliteError::gdal(cog.path(), "writing the COG"))?;
            drop(out);
            drop(ds);
            drop(part);
            persist_onto(cog, &path)?;
        } else {
            drop(ds);
            persist_onto(part, &path)?;
        }
        Ok(path)
    }
}

fn persist_onto(tmp: NamedTempFile, to: &Path) -> Result<()> {
    persist(tmp, to).map_err(|source| SatelliteError::Io {
        path: to.to_path_buf(),
        source,
    })
}
