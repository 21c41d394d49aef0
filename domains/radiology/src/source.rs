//! [`SliceSource`]: the slices of one volume as a [`RegionSource`] (one region per slice).
//!
//! The volume is reoriented to canonical RAS ([`crate::reorient`]) and sliced along one
//! [`Axis`] ([`crate::slices`]); every slice becomes a `[3][size][size]` model input
//! ([`crate::inputs`]). Which slices: every `step`-th from index 0 (`0, step, 2·step, ...`),
//! and, with `skip_empty`, only those with at least one non-background voxel.
//!
//! Each [`Region`] describes its slice:
//! - `source`: the volume's pseudonymous id (never a path or a DICOM value);
//! - `index`: the slice index along the canonical axis;
//! - `col`, `row`, `width`, `height`: the whole slice's pixel window in its plane
//!   (`0, 0, width, height` in display pixels, before resizing);
//! - `bounds`: the slice's extent in LPS mm along the plane's two in-plane world axes:
//!   (x, y) for axial, (x, z) for coronal, (y, z) for sagittal, i.e.
//!   `(min a, min b, max a, max b)` over the four corners of the slice (pixel edges, not
//!   centres). For an oblique volume this is the bounding box of the tilted plane projected
//!   onto those two axes;
//! - `crs`: `"LPS mm"`;
//! - `valid_fraction`: the fraction of the slice's voxels above the background level.
//!
//! [`SliceSource::records`] gives one [`SliceRecord`] per region, in the order the regions are
//! produced (row `n` describes feature row `n`): the slice index and the LPS position of the
//! slice centre.

use std::collections::HashMap;

use dinoadapt_datasets::{Region, RegionBatch, RegionSource};
use serde::{Deserialize, Serialize};

use crate::error::{RadiologyError, Result};
use crate::inputs::{Fit, InputSpec, ResolvedInput};
use crate::reorient::{Canonical, Reorientation};
use crate::slices::{pixel_to_lps, slice_centre, slice_normal, Axis};
use crate::volume::Volume;

/// Which slices a [`SliceSource`] yields and how they become model inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SliceOptions {
    pub axis: Axis,
    pub input: InputSpec,
    /// Every `step`-th slice (1 = all).
    pub step: usize,
    /// Leave out slices whose voxels are all background.
    pub skip_empty: bool,
    /// Voxels `<= background` are background; `None` = the volume's minimum.
    pub background: Option<f32>,
}

impl Default for SliceOptions {
    /// Axial, every slice, none skipped, default [`InputSpec`].
    fn default() -> Self {
        SliceOptions {
            axis: Axis::Axial,
            input: InputSpec::default(),
            step: 1,
            skip_empty: false,
            background: None,
        }
    }
}

/// Where one feature row's slice lies (the table the program writes beside the features).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceRecord {
    /// Pseudonymous volume id.
    pub volume_id: String,
    pub axis: Axis,
    /// Index along the canonical (RAS) slicing axis.
    pub slice_index: usize,
    /// LPS position (mm) of the slice centre.
    pub position_lps: [f64; 3],
    /// Unit plane normal (LPS), towards increasing slice index.
    pub normal_lps: [f64; 3],
    /// Fraction of the slice's voxels above the background level.
    pub valid_fraction: f64,
}

/// The slices of one volume as model-ready regions.
#[derive(Debug, Clone)]
pub struct SliceSource {
    canonical: Volume,
    reorientation: Reorientation,
    options: SliceOptions,
    input: ResolvedInput,
    fit: Fit,
    background: f32,
    source_axcodes: String,
    regions: Vec<Region>,
    records: Vec<SliceRecord>,
    next: usize,
}

/// Per slice along `axis`: fraction of voxels `> background`.
fn valid_fractions(v: &Volume, axis: Axis, background: f32) -> Vec<f64> {
    let a = axis.volume_axis();
    let [nx, ny, _] = v.dims;
    let mut counts = vec![0usize; axis.count(v.dims)];
    for (n, x) in v.voxels[..v.voxels_per_frame()].iter().enumerate() {
        if *x > background {
            let ijk = [n % nx, (n / nx) % ny, n / (nx * ny)];
            counts[ijk[a]] += 1;
        }
    }
    let per_slice = (v.voxels_per_frame() / counts.len()) as f64;
    counts.into_iter().map(|c| c as f64 / per_slice).collect()
}

/// `(min a, min b, max a, max b)` of the slice's corners on its two in-plane LPS axes.
fn slice_bounds(v: &Volume, axis: Axis, index: usize) -> [f64; 4] {
    let (w, h) = axis.plane_size(v.dims);
    let (a, b) = match axis {
        Axis::Axial => (0, 1),
        Axis::Coronal => (0, 2),
        Axis::Sagittal => (1, 2),
    };
    let mut out = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for (col, row) in [
        (-0.5, -0.5),
        (w as f64 - 0.5, -0.5),
        (-0.5, h as f64 - 0.5),
        (w as f64 - 0.5, h as f64 - 0.5),
    ] {
        let p = pixel_to_lps(v, axis, index as f64, col, row);
        out[0] = out[0].min(p[a]);
        out[1] = out[1].min(p[b]);
        out[2] = out[2].max(p[a]);
        out[3] = out[3].max(p[b]);
    }
    out
}

impl SliceSource {
    /// The slices of `volume` (any orientation, one frame) as `options` asks.
    pub fn new(volume: &Volume, options: SliceOptions) -> Result<Self> {
        volume.validate()?;
        if volume.frames != 1 {
            return Err(RadiologyError::InvalidVolume {
                reason: format!(
                    "slices need a 3D volume, this one has {} frames; select one with Volume::frame",
                    volume.frames
                ),
            });
        }
        if options.step == 0 {
            return Err(RadiologyError::InvalidVolume {
                reason: "slice step must be at least 1".into(),
            });
        }
        let reorientation = Reorientation::to_canonical(volume, Canonical::Ras)?;
        let canonical = reorientation.apply(volume)?;
        let input = ResolvedInput::new(options.input, &canonical)?;
        let fit = input.fit(&canonical, options.axis);
        let background = options.background.unwrap_or_else(|| {
            canonical
                .intensity_range()
                .map(|s| s.min as f32)
                .unwrap_or(f32::NEG_INFINITY)
        });
        let axis = options.axis;
        let fractions = valid_fractions(&canonical, axis, background);
        let (w, h) = axis.plane_size(canonical.dims);
        let mut regions = Vec::new();
        let mut records = Vec::new();
        for index in (0..axis.count(canonical.dims)).step_by(options.step) {
            let valid = fractions[index];
            if options.skip_empty && valid == 0.0 {
                continue;
            }
            regions.push(Region {
                source: canonical.id.clone(),
                index,
                col: 0,
                row: 0,
                width: w,
                height: h,
                bounds: slice_bounds(&canonical, axis, index),
                crs: "LPS mm".into(),
                valid_fraction: valid,
            });
            records.push(SliceRecord {
                volume_id: canonical.id.clone(),
                axis,
                slice_index: index,
                position_lps: slice_centre(&canonical, axis, index),
                normal_lps: slice_normal(&canonical, axis),
                valid_fraction: valid,
            });
        }
        Ok(SliceSource {
            canonical,
            reorientation,
            options,
            input,
            fit,
            background,
            source_axcodes: volume
                .orientation_code()
                .iter()
                .map(|c| c.unwrap_or("?"))
                .collect(),
            regions,
            records,
            next: 0,
        })
    }

    /// One record per region, in production order (record `n` describes feature row `n`).
    pub fn records(&self) -> &[SliceRecord] {
        &self.records
    }

    /// Every region this source yields, in order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The canonical RAS volume the slices come from.
    pub fn canonical(&self) -> &Volume {
        &self.canonical
    }

    /// How the input volume was reoriented to canonical RAS.
    pub fn reorientation(&self) -> &Reorientation {
        &self.reorientation
    }

    /// Where each slice lies in the model's canvas.
    pub fn fit(&self) -> Fit {
        self.fit
    }

    pub fn options(&self) -> &SliceOptions {
        &self.options
    }

    /// The resolved intensity maps (percentiles / min-max of this volume).
    pub fn input(&self) -> &ResolvedInput {
        &self.input
    }
}

impl RegionSource for SliceSource {
    fn size(&self) -> (usize, usize) {
        (self.options.input.size, self.options.input.size)
    }

    fn channels(&self) -> usize {
        self.options.input.channels.count()
    }

    fn max_regions(&self) -> usize {
        self.regions.len()
    }

    fn next_batch(&mut self, max: usize) -> std::result::Result<Option<RegionBatch>, String> {
        if self.next >= self.regions.len() {
            return Ok(None);
        }
        let end = (self.next + max.max(1)).min(self.regions.len());
        let regions = self.regions[self.next..end].to_vec();
        let c = self.channels();
        let mut pixels = Vec::with_capacity(regions.len() * c * self.fit.size * self.fit.size);
        for r in &regions {
            let x = self
                .input
                .render(&self.canonical, self.options.axis, r.index)
                .map_err(|e| format!("volume {}: {e}", self.canonical.id))?;
            pixels.extend(x);
        }
        self.next = end;
        Ok(Some(RegionBatch {
            regions,
            pixels,
            size: self.size(),
            skipped: Vec::new(),
        }))
    }

    fn metadata(&self) -> HashMap<String, String> {
        let o = &self.options;
        let spec = &o.input;
        let codes = |v: &Volume| {
            v.orientation_code()
                .iter()
                .map(|c| c.unwrap_or("?"))
                .collect::<String>()
        };
        let entries = [
            ("domain", "radiology".to_string()),
            ("volume_id", self.canonical.id.clone()),
            ("modality", self.canonical.modality.clone().unwrap_or_default()),
            ("axis", o.axis.to_string()),
            (
                "orientation",
                format!("canonical {} (from {})", codes(&self.canonical), self.source_axcodes),
            ),
            ("display", "axial: right on image left, anterior up; coronal: right on image left, superior up; sagittal: anterior on image left, superior up".into()),
            ("intensity", spec.intensity.to_string()),
            ("intensity_maps", serde_json::to_string(&self.input.maps).unwrap_or_default()),
            ("channels", spec.channels.to_string()),
            ("size", spec.size.to_string()),
            ("keep_aspect", spec.keep_aspect.to_string()),
            ("resize", "bilinear, align_corners=false, pad 0 after intensity mapping".into()),
            ("fit", serde_json::to_string(&self.fit).unwrap_or_default()),
            ("mean", format!("{:?}", spec.mean)),
            ("std", format!("{:?}", spec.std)),
            ("step", o.step.to_string()),
            ("slice_options", serde_json::to_string(o).unwrap_or_default()),
            ("skip_empty", o.skip_empty.to_string()),
            ("background", self.background.to_string()),
            ("spacing_mm", format!("{:?}", self.canonical.spacing)),
            ("dims", format!("{:?}", self.canonical.dims)),
            ("crs", "LPS mm".into()),
        ];
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}
