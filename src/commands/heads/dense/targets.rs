//! Per-pixel targets of a feature file, from the domain's own label format: a label raster
//! (satellite), a label volume (radiology), GeoJSON annotations (pathology).

use std::path::Path;

use anyhow::bail;
use serde_json::Value;

use super::folder::Preprocessing;
use super::{pathology, radiology, satellite};
use crate::commands::heads::Task;
use dinoadapt_heads::dense::features::Features;

/// Where the targets of a feature file come from.
#[derive(Clone, Copy)]
pub struct TargetArgs<'a> {
    pub task: Task,
    /// Label raster, label volume or GeoJSON annotations.
    pub targets: &'a Path,
    /// Radiology: the image volume the features were made from.
    pub volume: Option<&'a Path>,
    /// Satellite: resampling of the label raster onto the imagery grid.
    pub resampling: Option<&'a str>,
    /// Class names in class order (pathology: class 0 is the background).
    pub class_names: &'a [String],
    pub ignore_index: u32,
}

/// Targets of every feature row, `[n, size, size]`, NaN where there is none.
pub struct Labelled {
    pub preprocessing: Preprocessing,
    pub values: Vec<f32>,
    /// Class names in class order (when the label format names them).
    pub class_names: Vec<String>,
    /// How the targets were made (recorded in head.json).
    pub record: Value,
}

/// The targets of `f`, read by the domain that made it.
pub fn labelled(f: &Features, t: &TargetArgs) -> anyhow::Result<Labelled> {
    let domain = f.domain();
    if t.task == Task::Canopy && domain != "satellite" {
        bail!(
            "{}: canopy heads train on satellite features; these are {domain} features",
            f.path.display()
        );
    }
    let l = match domain {
        "satellite" => satellite::labelled(f, t)?,
        "radiology" => radiology::labelled(f, t)?,
        "pathology" => pathology::labelled(f, t)?,
        d => bail!(
            "{}: features of domain `{d}`; dense heads train on `satellite|radiology|pathology \
             embed --layers ...` features",
            f.path.display()
        ),
    };
    let size = l.preprocessing.input_size();
    if l.values.len() != f.n * size * size {
        bail!(
            "{}: {} target values for {} inputs of {size}x{size} px",
            f.path.display(),
            l.values.len(),
            f.n
        );
    }
    Ok(l)
}
