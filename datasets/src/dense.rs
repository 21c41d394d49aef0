//! Dense heads (per-pixel classes or heights) as a domain sees them: the targets of a feature
//! file read from the domain's own label format, and prediction over one of the domain's inputs
//! (a raster, a volume, a slide) written in the domain's own format. The heads crate trains
//! and runs the head; the domain only cuts inputs, reads labels and writes outputs, through the
//! [`Domain`](crate::Domain) methods `dense_*`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::domain::DomainError;

/// A feature file (`<domain> embed --layers ...`) as its domain sees it: where it is, the
/// metadata the domain recorded in it, and its number of rows (regions).
#[derive(Debug, Clone, Copy)]
pub struct FeatureFile<'a> {
    pub path: &'a Path,
    pub meta: &'a HashMap<String, String>,
    pub rows: usize,
}

impl FeatureFile<'_> {
    /// The metadata value `key`, or an error naming the file and the key.
    pub fn meta(&self, key: &str) -> Result<&str, DomainError> {
        self.meta.get(key).map(String::as_str).ok_or_else(|| {
            DomainError::Input(format!(
                "{}: no `{key}` in the metadata; embed with a `dinoadapt <domain> embed` command",
                self.path.display()
            ))
        })
    }

    /// The metadata value `key` read as JSON.
    pub fn meta_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, DomainError> {
        serde_json::from_str(self.meta(key)?).map_err(|e| {
            DomainError::Input(format!("{}: `{key}` metadata: {e}", self.path.display()))
        })
    }

    /// The table beside the file (same name, `.parquet`).
    pub fn table_beside(&self) -> std::path::PathBuf {
        self.path.with_extension("parquet")
    }
}

/// What a dense head predicts per pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseValues {
    /// Class ids (segmentation).
    Classes,
    /// Heights in metres (canopy).
    Heights,
}

/// Where the targets of one feature file come from.
#[derive(Debug, Clone, Copy)]
pub struct DenseTargetOptions<'a> {
    /// The labels in the domain's format: a label raster, a label volume, GeoJSON annotations.
    pub targets: &'a Path,
    /// The image the features were made from, when the domain needs it to align the labels
    /// (radiology: the image volume).
    pub volume: Option<&'a Path>,
    /// Resampling of the labels onto the inputs' grid, by name (default: the domain's own for
    /// `values`).
    pub resampling: Option<&'a str>,
    /// Class names in class order (may be empty: the domain's labels may name them).
    pub class_names: &'a [String],
    /// Target value to ignore.
    pub ignore_index: u32,
    pub values: DenseValues,
}

/// The targets of a feature file, as its domain read them.
#[derive(Debug, Clone)]
pub struct DenseLabels {
    /// How the domain's pixels became model inputs, as `head.json` records it: the domain's
    /// own JSON object, tagged with `"domain": <name>`. Prediction cuts its inputs the same way.
    pub preprocessing: Value,
    /// Side of the square model input, in pixels.
    pub input_size: usize,
    /// Target of every pixel of every row, `[rows, size, size]`, NaN where there is none.
    pub values: Vec<f32>,
    /// Class names in class order (when given or when the label format names them).
    pub class_names: Vec<String>,
    /// How the targets were made (recorded in `head.json` under `targets`).
    pub record: Value,
}

/// A backbone + dense head as a domain runs it: normalised pixels in, per-pixel maps out.
pub trait DenseModel {
    /// Channels of the maps: classes (probabilities) or 1 (heights in metres).
    fn channels(&self) -> usize;

    /// Maps `[n, channels, h, w]` of `pixels` `[n, 3, h, w]` (normalised as the preprocessing
    /// says).
    fn predict(
        &mut self,
        pixels: Vec<f32>,
        n: usize,
        size: (usize, usize),
    ) -> Result<Vec<f32>, String>;
}

/// A prediction run of a dense head over one input of its domain.
#[derive(Debug, Clone, Copy)]
pub struct DensePredictOptions<'a> {
    /// What to predict: a raster, a volume or series, a slide.
    pub input: &'a Path,
    /// Where the domain writes its output (a file or a folder, as the domain documents).
    pub out: &'a Path,
    /// The head's preprocessing (as [`DenseLabels::preprocessing`] made it).
    pub preprocessing: &'a Value,
    pub values: DenseValues,
    /// The head's class names in class order (may be empty).
    pub class_names: &'a [String],
    /// Slides: level-0 µm/px for a slide that records none.
    pub mpp: Option<f64>,
    /// Rasters: the output's nodata value (default: NaN).
    pub nodata: Option<f64>,
    /// Input stride in pixels (default: the domain's own; a stride larger than the input is
    /// replaced by the default).
    pub stride: Option<usize>,
    /// Blending of overlapping inputs by name (cosine, gaussian, uniform).
    pub blend: &'a str,
    /// Inputs per model call.
    pub batch: usize,
    /// Rasters: write a Cloud-Optimised GeoTIFF.
    pub cog: bool,
}

impl DensePredictOptions<'_> {
    /// The name of class `k` (its index when the head names none).
    pub fn class_name(&self, k: usize) -> String {
        self.class_names
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("class {k}"))
    }
}

/// `value` (a domain's preprocessing struct) as a JSON object tagged `"domain": domain`.
pub fn tagged_preprocessing(
    domain: &str,
    value: &impl serde::Serialize,
) -> Result<Value, DomainError> {
    let fields = serde_json::to_value(value)
        .map_err(|e| DomainError::Input(format!("{domain} preprocessing: {e}")))?;
    let mut object = serde_json::Map::new();
    object.insert("domain".into(), Value::String(domain.into()));
    match fields {
        Value::Object(map) => object.extend(map),
        other => {
            return Err(DomainError::Input(format!(
                "{domain} preprocessing: an object, not {other}"
            )))
        }
    }
    Ok(Value::Object(object))
}

/// The domain's preprocessing struct of a `head.json` `preprocessing` object tagged
/// `"domain": domain` (as [`tagged_preprocessing`] wrote it).
pub fn untagged_preprocessing<T: serde::de::DeserializeOwned>(
    domain: &str,
    value: &Value,
) -> Result<T, DomainError> {
    if value["domain"].as_str() != Some(domain) {
        return Err(DomainError::Input(format!(
            "a {} head's preprocessing, not a {domain} one",
            value["domain"].as_str().unwrap_or("unknown")
        )));
    }
    let mut fields = value.clone();
    if let Value::Object(map) = &mut fields {
        map.remove("domain");
    }
    serde_json::from_value(fields).map_err(|e| {
        DomainError::Input(format!(
            "not a dense head (segment / canopy) description of the {domain} domain: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Tiles {
        size: usize,
    }

    #[test]
    fn preprocessing_is_tagged_with_its_domain_and_read_back_by_that_domain_only() {
        let v = tagged_preprocessing("microscopy", &Tiles { size: 56 }).unwrap();
        assert_eq!(v, serde_json::json!({"domain": "microscopy", "size": 56}));
        let back: Tiles = untagged_preprocessing("microscopy", &v).unwrap();
        assert_eq!(back, Tiles { size: 56 });
        let other = untagged_preprocessing::<Tiles>("satellite", &v).unwrap_err();
        assert!(other.to_string().contains("a microscopy head"), "{other}");
    }

    #[test]
    fn a_missing_metadata_key_is_named() {
        let meta = HashMap::from([("tiling".to_string(), "{\"size\": 3}".to_string())]);
        let f = FeatureFile {
            path: Path::new("a.safetensors"),
            meta: &meta,
            rows: 1,
        };
        let e = f.meta("chip_size").unwrap_err().to_string();
        assert!(
            e.contains("a.safetensors") && e.contains("`chip_size`"),
            "{e}"
        );
        let t: Tiles = f.meta_json("tiling").unwrap();
        assert_eq!(t.size, 3);
    }
}
