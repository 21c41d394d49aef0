//! Slices as model inputs: intensity mapping, three channels (2.5D) or one (gray, for models
//! grown to one input channel), resizing to the model's square input, normalisation.
//!
//! For each slice the steps are:
//! 1. the slices of the three channels ([`Channels`]) are mapped to `[0, 1]` by their
//!    [`Intensity`];
//! 2. each channel is resized **bilinearly** (torch's `align_corners=False`, no antialiasing,
//!    edges clamped) into a `size × size` canvas. With `keep_aspect` (the default) the slice
//!    keeps its **physical** aspect ratio (mm, so thick-slice coronal / sagittal slices are not
//!    squashed): its longer side fills the canvas, it is centred, and the rest is padded with
//!    0 (black, after intensity mapping). Without it the slice is stretched to fill the canvas;
//! 3. every channel is normalised with the model's mean / std (ImageNet by default), giving
//!    `[3][size][size]` values, channel-major.
//!
//! [`Fit`] records where the slice lies in the canvas; predictions use it to go back.

use std::fmt;
use std::str::FromStr;

use dinoadapt_core::vit::InputChannels;
use dinoadapt_datasets::transforms::{IMAGENET_MEAN, IMAGENET_STD};
use serde::{Deserialize, Serialize};

use crate::error::{RadiologyError, Result};
use crate::intensity::{Intensity, IntensityMap, ParseIntensityError};
use crate::slices::{check_canonical_ras, slice_pixels, Axis};
use crate::volume::Volume;

/// What the input channels hold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Channels {
    /// The slice three times (`repeat`).
    Repeat,
    /// The slice once, as the one channel of a gray model (`gray`: `model.in_chans = 1`).
    Gray,
    /// Slices `k - 1`, `k`, `k + 1`, clamped at the ends (`neighbours`).
    Neighbours,
    /// The same slice under three intensity mappings, as R, G, B
    /// (`windows:lung;mediastinum;bone`); these replace the input's intensity.
    Windows([Intensity; 3]),
}

impl fmt::Display for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channels::Repeat => f.write_str("repeat"),
            Channels::Gray => f.write_str("gray"),
            Channels::Neighbours => f.write_str("neighbours"),
            Channels::Windows([a, b, c]) => write!(f, "windows:{a};{b};{c}"),
        }
    }
}

/// A string that is not a [`Channels`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseChannelsError {
    #[error("unknown channel layout {0:?}: use repeat, neighbours, windows:A;B;C or gray")]
    Unknown(String),
    #[error("windows:A;B;C needs three intensity mappings separated by ';', got {0:?}")]
    Count(String),
    #[error(transparent)]
    Intensity(#[from] ParseIntensityError),
}

impl FromStr for Channels {
    type Err = ParseChannelsError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "repeat" => return Ok(Channels::Repeat),
            "gray" | "grey" => return Ok(Channels::Gray),
            "neighbours" | "neighbors" => return Ok(Channels::Neighbours),
            _ => {}
        }
        let Some(rest) = t.strip_prefix("windows:") else {
            return Err(ParseChannelsError::Unknown(s.to_string()));
        };
        let parts: Vec<&str> = rest.split(';').collect();
        if parts.len() != 3 {
            return Err(ParseChannelsError::Count(s.to_string()));
        }
        Ok(Channels::Windows([
            parts[0].parse()?,
            parts[1].parse()?,
            parts[2].parse()?,
        ]))
    }
}

impl Channels {
    /// The number of model-input channels: 1 for [`Channels::Gray`], else 3.
    pub fn count(self) -> usize {
        match self {
            Channels::Gray => 1,
            _ => 3,
        }
    }
}

impl TryFrom<String> for Channels {
    type Error = ParseChannelsError;
    fn try_from(s: String) -> std::result::Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Channels> for String {
    fn from(c: Channels) -> String {
        c.to_string()
    }
}

/// How slices become model inputs (recorded in every output).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Intensity mapping of every channel (unless [`Channels::Windows`]).
    pub intensity: Intensity,
    pub channels: Channels,
    /// The model's input side in pixels.
    pub size: usize,
    /// Keep the slice's physical aspect ratio and pad (true), or stretch (false).
    pub keep_aspect: bool,
    /// Per-channel normalisation after intensity mapping: `(x - mean) / std` (a gray input
    /// uses the first entry).
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl InputSpec {
    /// The spec a model of `in_chans` input channels with the channel record `record` takes.
    /// A one-channel model gets the slice once (`gray`), normalised with the record's mean and
    /// std as its pre-training run fed it; a 3-channel model with a record gets the record's
    /// normalisation. `explicit` says whether the caller chose the channel layout: a layout
    /// whose count is not the model's is refused then, with the reason.
    pub fn for_model(
        mut self,
        in_chans: usize,
        record: Option<&InputChannels>,
        explicit: bool,
    ) -> Result<Self> {
        if in_chans == 1 && !explicit {
            self.channels = Channels::Gray;
        }
        if self.channels.count() != in_chans {
            return Err(RadiologyError::InvalidVolume {
                reason: format!(
                    "the model takes {in_chans} input channel(s); --channels {} gives {}{}",
                    self.channels,
                    self.channels.count(),
                    if in_chans == 1 {
                        " (use --channels gray, or leave it out)"
                    } else {
                        ""
                    }
                ),
            });
        }
        if let Some(r) = record.filter(|r| r.mean.len() == in_chans && r.std.len() == in_chans) {
            for c in 0..3 {
                self.mean[c] = r.mean[c.min(in_chans - 1)];
                self.std[c] = r.std[c.min(in_chans - 1)];
            }
        }
        Ok(self)
    }
}

impl Default for InputSpec {
    /// Min-max intensity, repeated slice, 224 px, aspect kept, ImageNet mean / std.
    fn default() -> Self {
        InputSpec {
            intensity: Intensity::MinMax,
            channels: Channels::Repeat,
            size: 224,
            keep_aspect: true,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }
}

/// Where a `width × height` slice lies in the `size × size` canvas: columns `x0 .. x0 + w`,
/// rows `y0 .. y0 + h` (the rest is padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fit {
    pub size: usize,
    pub x0: usize,
    pub y0: usize,
    pub w: usize,
    pub h: usize,
}

impl Fit {
    /// The placement of a `width × height` slice with pixel steps `spacing` (column, row mm).
    pub fn new(
        width: usize,
        height: usize,
        spacing: [f64; 2],
        size: usize,
        keep_aspect: bool,
    ) -> Self {
        if !keep_aspect {
            return Fit {
                size,
                x0: 0,
                y0: 0,
                w: size,
                h: size,
            };
        }
        let (wmm, hmm) = (width as f64 * spacing[0], height as f64 * spacing[1]);
        let scale = size as f64 / wmm.max(hmm);
        let w = ((wmm * scale).round() as usize).clamp(1, size);
        let h = ((hmm * scale).round() as usize).clamp(1, size);
        Fit {
            size,
            x0: (size - w) / 2,
            y0: (size - h) / 2,
            w,
            h,
        }
    }
}

/// Source position of destination pixel `d` when resizing `n_src -> n_dst` (pixel centres,
/// `align_corners=False`), clamped to the source.
fn src_pos(d: usize, n_src: usize, n_dst: usize) -> f64 {
    let x = (d as f64 + 0.5) * n_src as f64 / n_dst as f64 - 0.5;
    x.clamp(0.0, (n_src - 1) as f64)
}

/// Bilinear resize of a row-major `w × h` image to `dw × dh`.
pub fn resize_bilinear(src: &[f32], w: usize, h: usize, dw: usize, dh: usize) -> Vec<f32> {
    let xs: Vec<(usize, usize, f32)> = (0..dw)
        .map(|d| {
            let x = src_pos(d, w, dw);
            let lo = x.floor() as usize;
            (lo, (lo + 1).min(w - 1), (x - lo as f64) as f32)
        })
        .collect();
    let mut out = Vec::with_capacity(dw * dh);
    for dy in 0..dh {
        let y = src_pos(dy, h, dh);
        let y0 = y.floor() as usize;
        let y1 = (y0 + 1).min(h - 1);
        let fy = (y - y0 as f64) as f32;
        let (r0, r1) = (&src[y0 * w..(y0 + 1) * w], &src[y1 * w..(y1 + 1) * w]);
        for &(x0, x1, fx) in &xs {
            let top = r0[x0] + fx * (r0[x1] - r0[x0]);
            let bottom = r1[x0] + fx * (r1[x1] - r1[x0]);
            out.push(top + fy * (bottom - top));
        }
    }
    out
}

/// Nearest-neighbour resize of a row-major `w × h` image to `dw × dh` (ties round up).
pub fn resize_nearest<T: Copy>(src: &[T], w: usize, h: usize, dw: usize, dh: usize) -> Vec<T> {
    let near =
        |d: usize, n: usize, nd: usize| ((src_pos(d, n, nd) + 0.5).floor() as usize).min(n - 1);
    let xs: Vec<usize> = (0..dw).map(|d| near(d, w, dw)).collect();
    let mut out = Vec::with_capacity(dw * dh);
    for dy in 0..dh {
        let row = near(dy, h, dh) * w;
        out.extend(xs.iter().map(|x| src[row + x]));
    }
    out
}

/// An [`InputSpec`] resolved for one volume (percentiles / min-max computed once).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedInput {
    pub spec: InputSpec,
    /// The intensity map of each channel.
    pub maps: [IntensityMap; 3],
}

impl ResolvedInput {
    /// Resolves `spec` for `volume` (its voxel values decide percentiles and min-max).
    pub fn new(spec: InputSpec, volume: &Volume) -> Result<Self> {
        if spec.size == 0 {
            return Err(RadiologyError::InvalidVolume {
                reason: "model input size must be at least 1 pixel".into(),
            });
        }
        if spec.std.iter().any(|s| !(s.is_finite() && *s != 0.0)) {
            return Err(RadiologyError::InvalidVolume {
                reason: format!(
                    "normalisation std must be finite and non-zero, got {:?}",
                    spec.std
                ),
            });
        }
        let maps = match spec.channels {
            Channels::Windows(w) => w.map(|i| i.resolve(&volume.voxels)),
            _ => {
                let m = spec.intensity.resolve(&volume.voxels);
                [m; 3]
            }
        };
        Ok(ResolvedInput { spec, maps })
    }

    /// Where slices along `axis` of `volume` lie in the canvas.
    pub fn fit(&self, volume: &Volume, axis: Axis) -> Fit {
        let (w, h) = axis.plane_size(volume.dims);
        Fit::new(
            w,
            h,
            axis.pixel_spacing(volume.spacing),
            self.spec.size,
            self.spec.keep_aspect,
        )
    }

    /// The model input `[C][size][size]` (channel-major, C = `channels.count()`) of slice
    /// `index` along `axis` of the canonical RAS `volume` (frame 0).
    pub fn render(&self, volume: &Volume, axis: Axis, index: usize) -> Result<Vec<f32>> {
        check_canonical_ras(volume)?;
        let count = axis.count(volume.dims);
        if index >= count {
            return Err(RadiologyError::InvalidVolume {
                reason: format!("{axis} slice {index} out of range (0..{count})"),
            });
        }
        let (w, h) = axis.plane_size(volume.dims);
        let fit = self.fit(volume, axis);
        let size = self.spec.size;
        let sources = match self.spec.channels {
            Channels::Neighbours => [index.saturating_sub(1), index, (index + 1).min(count - 1)],
            _ => [index; 3],
        };
        let channels = self.spec.channels.count();
        let mut out = Vec::with_capacity(channels * size * size);
        let mut previous: Option<(usize, IntensityMap, Vec<f32>)> = None;
        for c in 0..channels {
            let map = self.maps[c];
            let canvas = match &previous {
                Some((k, m, canvas)) if *k == sources[c] && *m == map => canvas.clone(),
                _ => {
                    let mapped: Vec<f32> = slice_pixels(volume, axis, sources[c])
                        .into_iter()
                        .map(|v| map.map(v))
                        .collect();
                    let resized = resize_bilinear(&mapped, w, h, fit.w, fit.h);
                    let mut canvas = vec![0.0f32; size * size];
                    for (r, row) in resized.chunks_exact(fit.w).enumerate() {
                        let start = (fit.y0 + r) * size + fit.x0;
                        canvas[start..start + fit.w].copy_from_slice(row);
                    }
                    canvas
                }
            };
            let (mean, std) = (self.spec.mean[c], self.spec.std[c]);
            out.extend(canvas.iter().map(|v| (v - mean) / std));
            previous = Some((sources[c], map, canvas));
        }
        Ok(out)
    }
}

/// Model-input pixels ([C][size][size], normalised with `spec`'s mean and std) back to 8-bit
/// RGB bytes [size][size][3], as `radiology slices` writes them and pre-training draws them
/// (a gray input gives its one channel as R, G and B).
pub fn to_rgb(pixels: &[f32], spec: &InputSpec) -> Vec<u8> {
    let plane = spec.size * spec.size;
    let channels = spec.channels.count();
    let mut rgb = vec![0u8; 3 * plane];
    for c in 0..3 {
        let k = c.min(channels - 1);
        for (i, v) in pixels[k * plane..(k + 1) * plane].iter().enumerate() {
            let x = v * spec.std[k] + spec.mean[k];
            rgb[3 * i + c] = (x.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ras(dims: [usize; 3], spacing: [f64; 3]) -> Volume {
        let n: usize = dims.iter().product();
        Volume::new(
            (0..n).map(|v| v as f32).collect(),
            dims,
            1,
            spacing,
            [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
            [0.0; 3],
            None,
            "v".into(),
        )
        .unwrap()
    }

    #[test]
    fn bilinear_resize_matches_torch_align_corners_false() {
        // torch.nn.functional.interpolate([[0, 1], [2, 3]], size=4, mode="bilinear")
        let out = resize_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4);
        let row0 = [0.0, 0.25, 0.75, 1.0];
        for (i, v) in out[..4].iter().enumerate() {
            assert!((v - row0[i]).abs() < 1e-6);
        }
        assert!((out[5] - 0.75).abs() < 1e-6); // (1, 1): 0.25 * 2 + 0.25
        assert_eq!(
            resize_bilinear(&[1.0, 2.0, 3.0], 3, 1, 3, 1),
            [1.0, 2.0, 3.0]
        );
        // nearest up then down is the identity
        let labels: Vec<u8> = (0..12).collect();
        let up = resize_nearest(&labels, 4, 3, 8, 6);
        assert_eq!(resize_nearest(&up, 8, 6, 4, 3), labels);
    }

    #[test]
    fn fit_keeps_physical_aspect() {
        // 100 x 20 pixels of 1 x 5 mm: 100 mm wide, 100 mm high -> fills the canvas
        assert_eq!(
            Fit::new(100, 20, [1.0, 5.0], 50, true),
            Fit {
                size: 50,
                x0: 0,
                y0: 0,
                w: 50,
                h: 50
            }
        );
        // 100 x 50 mm -> 50 x 25, centred vertically
        let f = Fit::new(100, 50, [1.0, 1.0], 50, true);
        assert_eq!((f.x0, f.y0, f.w, f.h), (0, 12, 50, 25));
        assert_eq!(Fit::new(100, 50, [1.0, 1.0], 50, false).h, 50);
    }

    #[test]
    fn a_one_channel_model_gets_the_slice_once_with_its_recorded_normalisation() {
        let v = ras([4, 2, 3], [1.0, 1.0, 1.0]);
        let record = InputChannels {
            names: vec!["gray".into()],
            mean: vec![0.3],
            std: vec![0.2],
        };
        let spec = InputSpec {
            size: 4,
            ..InputSpec::default()
        };
        let gray = spec.for_model(1, Some(&record), false).unwrap();
        assert_eq!(gray.channels, Channels::Gray);
        assert_eq!((gray.mean, gray.std), ([0.3; 3], [0.2; 3]));
        let repeat = InputSpec {
            channels: Channels::Repeat,
            ..gray
        };
        let one = ResolvedInput::new(gray, &v).unwrap();
        let three = ResolvedInput::new(repeat, &v).unwrap();
        let x = one.render(&v, Axis::Axial, 1).unwrap();
        let y = three.render(&v, Axis::Axial, 1).unwrap();
        assert_eq!(x.len(), 16);
        assert_eq!(x, y[..16], "gray is the repeated slice's first channel");
        // Asked for three channels, a one-channel model refuses with the reason.
        let err = spec.for_model(1, Some(&record), true).unwrap_err();
        assert!(err.to_string().contains("--channels gray"), "{err}");
        // An RGB model keeps the layout asked for; a gray layout is refused for it.
        assert_eq!(spec.for_model(3, None, false).unwrap(), spec);
        let gray_rgb = InputSpec {
            channels: Channels::Gray,
            ..spec
        };
        assert!(gray_rgb.for_model(3, None, true).is_err());
        assert_eq!(to_rgb(&x, &one.spec).len(), 3 * 16);
    }

    #[test]
    fn render_pads_normalises_and_stacks_neighbours() {
        let v = ras([4, 2, 3], [1.0, 1.0, 1.0]);
        let spec = InputSpec {
            intensity: Intensity::Window {
                low: 0.0,
                high: 23.0,
            },
            channels: Channels::Neighbours,
            size: 4,
            keep_aspect: true,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let r = ResolvedInput::new(spec, &v).unwrap();
        let fit = r.fit(&v, Axis::Axial);
        assert_eq!((fit.x0, fit.y0, fit.w, fit.h), (0, 1, 4, 2));
        let x = r.render(&v, Axis::Axial, 0).unwrap();
        assert_eq!(x.len(), 3 * 16);
        // padding rows are 0
        assert!(x[..4].iter().all(|v| *v == 0.0));
        assert!(x[12..16].iter().all(|v| *v == 0.0));
        // channel 0 = slice max(0 - 1, 0) = 0, channel 2 = slice 1; top-left: i = 3, j = 1
        let at = |c: usize, row: usize, col: usize| x[c * 16 + row * 4 + col];
        assert!((at(0, 1, 0) - 7.0 / 23.0).abs() < 1e-6);
        assert!((at(1, 1, 0) - 7.0 / 23.0).abs() < 1e-6);
        assert!((at(2, 1, 0) - 15.0 / 23.0).abs() < 1e-6);
        // ImageNet normalisation of a padded pixel
        let spec = InputSpec {
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            ..spec
        };
        let x = ResolvedInput::new(spec, &v)
            .unwrap()
            .render(&v, Axis::Axial, 2)
            .unwrap();
        assert!((x[0] + 0.485 / 0.229).abs() < 1e-6);
        assert!((x[32] + 0.406 / 0.225).abs() < 1e-6);
    }

    #[test]
    fn channel_strings_roundtrip() {
        for s in [
            "repeat",
            "neighbours",
            "windows:lung;mediastinum;bone",
            "windows:window:-100,300;abdomen;none",
        ] {
            let c: Channels = s.parse().unwrap();
            assert_eq!(c.to_string(), s);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Channels>(&json).unwrap(), c);
        }
        assert!("windows:lung;bone".parse::<Channels>().is_err());
        assert!("rgb".parse::<Channels>().is_err());
        let spec = InputSpec::default();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<InputSpec>(&json).unwrap(), spec);
    }
}
