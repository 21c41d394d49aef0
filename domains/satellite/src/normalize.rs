//! From raw band values to model inputs: band selection, scaling to [0, 1] (divide by the type's
//! range, or a percentile stretch for 12/16-bit imagery), then per-channel mean/std.

use dinoadapt_core::vit::InputChannels;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SatelliteError};
use crate::raster::Raster;

/// ImageNet mean/std (DINOv2's own preprocessing).
pub const IMAGENET: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
/// The satellite mean/std of Meta's high-resolution canopy-height model (Tolan et al. 2024).
pub const CANOPY_SATELLITE: ([f32; 3], [f32; 3]) = ([0.420, 0.411, 0.296], [0.213, 0.156, 0.143]);

/// How raw values become [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Divide by a constant (255 for 8-bit imagery).
    Divide(f32),
    /// Per band: (v - low) / (high - low), clipped to [0, 1] (percentile stretch).
    Stretch { low: Vec<f32>, high: Vec<f32> },
    /// Values are used as they are.
    Identity,
}

/// The whole pixel pipeline of a chip, recorded in every output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub preset: String,
    pub scale: Scale,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// The preset a model takes unless told otherwise: `model` (its recorded channels' mean and
/// std after [0, 1] scaling, as its pre-training fed the chips) for a model grown to other
/// channels than RGB, `imagenet` for the rest.
pub fn default_preset(record: Option<&InputChannels>) -> &'static str {
    if record.is_some() {
        "model"
    } else {
        "imagenet"
    }
}

impl Normalization {
    /// [`Normalization::preset`], plus `model`: [0, 1] scaling as `unit`, then the mean and
    /// std of each channel the model's config records (`record`, one per band).
    pub fn for_model(
        name: &str,
        rasters: &[&Raster],
        bands: &[usize],
        record: Option<&InputChannels>,
    ) -> Result<Normalization> {
        if name != "model" {
            return Self::preset(name, rasters, bands);
        }
        let here = std::path::Path::new("--normalize");
        let Some(r) = record else {
            return Err(SatelliteError::invalid(
                here,
                "preset `model` needs a model that records its channels' normalisation \
                 (one grown with model.in_chans); use imagenet, canopy, band-stats, unit or none",
            ));
        };
        if r.mean.len() != bands.len() || r.std.len() != bands.len() {
            return Err(SatelliteError::invalid(
                here,
                format!(
                    "the model records {} channels ({}); {} bands are selected",
                    r.mean.len(),
                    r.names.join(", "),
                    bands.len()
                ),
            ));
        }
        Ok(Normalization {
            preset: "model".into(),
            mean: r.mean.clone(),
            std: r.std.clone(),
            ..Self::preset("unit", rasters, bands)?
        })
    }

    /// `imagenet` / `canopy` (3 bands, [0, 1] scaling then the preset's mean/std), `none`
    /// (raw values), `band-stats` (standardise each band by its mean/std over the rasters).
    /// 8-bit imagery is divided by 255; other types are stretched between the 2nd and 98th
    /// percentiles of each band.
    pub fn preset(name: &str, rasters: &[&Raster], bands: &[usize]) -> Result<Normalization> {
        let here = std::path::Path::new("--normalize");
        let n = bands.len();
        for r in rasters {
            r.check_bands(bands)?;
        }
        let all_u8 = rasters
            .iter()
            .all(|r| bands.iter().all(|&b| r.info().dtypes[b - 1] == "uint8"));
        let scale = || -> Result<Scale> {
            if all_u8 {
                Ok(Scale::Divide(255.0))
            } else {
                let (low, high) = percentiles(rasters, bands, 0.02, 0.98)?;
                Ok(Scale::Stretch { low, high })
            }
        };
        let three = |(m, s): ([f32; 3], [f32; 3])| -> Result<(Vec<f32>, Vec<f32>)> {
            if n != 3 {
                return Err(SatelliteError::invalid(
                    here,
                    format!("preset `{name}` is for 3 bands (RGB); {n} are selected"),
                ));
            }
            Ok((m.to_vec(), s.to_vec()))
        };
        let (scale, mean, std) = match name {
            "imagenet" => {
                let (m, s) = three(IMAGENET)?;
                (scale()?, m, s)
            }
            "canopy" => {
                let (m, s) = three(CANOPY_SATELLITE)?;
                (scale()?, m, s)
            }
            "none" => (Scale::Identity, vec![0.0; n], vec![1.0; n]),
            // [0, 1] as an 8-bit image is, any number of bands (pre-training chips, whose
            // mean and std the recipe's crops apply).
            "unit" => (scale()?, vec![0.0; n], vec![1.0; n]),
            "band-stats" => {
                let (m, s) = mean_std(rasters, bands)?;
                (Scale::Identity, m, s)
            }
            other => {
                return Err(SatelliteError::invalid(
                    here,
                    format!("unknown preset `{other}`: imagenet, canopy, band-stats, unit or none"),
                ))
            }
        };
        Ok(Normalization {
            preset: name.to_string(),
            scale,
            mean,
            std,
        })
    }

    /// Normalise `data[band][pixel]` in place; invalid pixels become 0 (the mean after
    /// normalisation would bias nothing either way; 0 is the normalised mean).
    pub fn apply(&self, data: &mut [f32], valid: &[bool]) {
        let plane = valid.len();
        for (b, values) in data.chunks_mut(plane).enumerate() {
            let (mean, inv_std) = (self.mean[b], 1.0 / self.std[b]);
            let (lo, inv_range) = match &self.scale {
                Scale::Divide(d) => (0.0, 1.0 / d),
                Scale::Stretch { low, high } => (low[b], 1.0 / (high[b] - low[b]).max(1e-12)),
                Scale::Identity => (0.0, 1.0),
            };
            let clip = matches!(self.scale, Scale::Stretch { .. });
            for (v, &ok) in values.iter_mut().zip(valid) {
                if !ok {
                    *v = 0.0;
                    continue;
                }
                let mut x = (*v - lo) * inv_range;
                if clip {
                    x = x.clamp(0.0, 1.0);
                }
                *v = (x - mean) * inv_std;
            }
        }
    }
}

/// A decimated view of one band (at most ~1024² samples), for statistics over big rasters.
fn band_sample(raster: &Raster, band: usize) -> Result<Vec<f32>> {
    let info = raster.info();
    let f = ((info.width.max(info.height) as f64) / 1024.0)
        .ceil()
        .max(1.0) as usize;
    let (w, h) = (info.width.div_ceil(f), info.height.div_ceil(f));
    let b = raster
        .dataset()
        .rasterband(band)
        .map_err(SatelliteError::gdal(raster.path(), format!("band {band}")))?;
    let mut buf = vec![0f32; w * h];
    b.read_into_slice::<f32>((0, 0), (info.width, info.height), (w, h), &mut buf, None)
        .map_err(SatelliteError::gdal(raster.path(), "decimated read"))?;
    let nodata = info.nodata[band - 1].map(|v| v as f32);
    buf.retain(|v| v.is_finite() && Some(*v) != nodata);
    Ok(buf)
}

/// Per band: the `lo` and `hi` quantiles over all rasters (decimated samples).
pub fn percentiles(
    rasters: &[&Raster],
    bands: &[usize],
    lo: f64,
    hi: f64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (mut low, mut high) = (Vec::new(), Vec::new());
    for &b in bands {
        let mut all = Vec::new();
        for r in rasters {
            all.extend(band_sample(r, b)?);
        }
        if all.is_empty() {
            return Err(SatelliteError::invalid(
                rasters[0].path(),
                format!("band {b} has no valid pixels"),
            ));
        }
        all.sort_by(f32::total_cmp);
        let q = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
        low.push(q(lo));
        high.push(q(hi));
    }
    Ok((low, high))
}

/// Per band: mean and standard deviation over every valid pixel of all rasters (streamed).
pub fn mean_std(rasters: &[&Raster], bands: &[usize]) -> Result<(Vec<f32>, Vec<f32>)> {
    let (mut means, mut stds) = (Vec::new(), Vec::new());
    for &b in bands {
        let (mut n, mut sum, mut sq) = (0u64, 0f64, 0f64);
        for r in rasters {
            r.check_bands(&[b])?;
            let nodata = r.info().nodata[b - 1];
            for win in r.row_strips(1 << 20) {
                for v in r.read_band_f64(b, win)? {
                    if !v.is_finite() || Some(v) == nodata {
                        continue;
                    }
                    n += 1;
                    sum += v;
                    sq += v * v;
                }
            }
        }
        if n == 0 {
            return Err(SatelliteError::invalid(
                rasters[0].path(),
                format!("band {b} has no valid pixels"),
            ));
        }
        let mean = sum / n as f64;
        let var = (sq / n as f64 - mean * mean).max(0.0);
        means.push(mean as f32);
        stds.push(var.sqrt().max(1e-12) as f32);
    }
    Ok((means, stds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divide_then_standardise_and_zero_invalid() {
        let n = Normalization {
            preset: "imagenet".into(),
            scale: Scale::Divide(255.0),
            mean: IMAGENET.0.to_vec(),
            std: IMAGENET.1.to_vec(),
        };
        let mut data = vec![255.0, 0.0, 255.0, 0.0, 255.0, 0.0];
        n.apply(&mut data, &[true, false]);
        assert!((data[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert_eq!(data[1], 0.0);
        assert!((data[4] - (1.0 - 0.406) / 0.225).abs() < 1e-6);
    }

    #[test]
    fn stretch_clips_to_the_unit_range() {
        let n = Normalization {
            preset: "imagenet".into(),
            scale: Scale::Stretch {
                low: vec![100.0],
                high: vec![200.0],
            },
            mean: vec![0.0],
            std: vec![1.0],
        };
        let mut data = vec![50.0, 150.0, 4000.0];
        n.apply(&mut data, &[true, true, true]);
        assert_eq!(data, vec![0.0, 0.5, 1.0]);
    }
}
