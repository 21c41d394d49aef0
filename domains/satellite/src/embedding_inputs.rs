//! What `dinoadapt embed --source` embeds of a satellite `[data.source]` table: each raster's
//! chips on a regular grid (no overlap), of the bands pre-training draws, one feature file per
//! raster named by its file stem.

use dinoadapt_datasets::{DomainError, EmbeddingInput, EmbeddingInputs, RegionSource};

use crate::source::{ChipConfig, ChipSource};
use crate::{Normalization, Raster, RasterChipsConfig};

/// Chips with more nodata than this are left out (pre-training draws again below half valid).
const MAX_NODATA: f64 = 0.5;

/// The rasters of a `[data.source]` table and how their chips are cut.
pub struct RasterInputs {
    inputs: Vec<EmbeddingInput>,
    chips: ChipConfig,
}

impl RasterInputs {
    /// The rasters the table names, not yet opened.
    pub fn new(cfg: &RasterChipsConfig) -> Result<RasterInputs, DomainError> {
        let bad = |message: String| DomainError::Options {
            domain: "satellite",
            message,
        };
        if cfg.bands.len() != 3 || cfg.bands.contains(&0) {
            return Err(bad(format!(
                "bands: three 1-based bands (RGB order), not {:?}",
                cfg.bands
            )));
        }
        if cfg.chip_size == 0 {
            return Err(bad("chip_size: must be positive".into()));
        }
        let inputs = cfg
            .paths
            .iter()
            .map(|p| EmbeddingInput {
                id: p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| p.display().to_string()),
                path: p.clone(),
            })
            .collect();
        Ok(RasterInputs {
            inputs,
            chips: ChipConfig {
                bands: cfg.bands.clone(),
                size: cfg.chip_size,
                stride: cfg.chip_size,
                max_nodata: MAX_NODATA,
            },
        })
    }
}

impl EmbeddingInputs for RasterInputs {
    fn inputs(&self) -> &[EmbeddingInput] {
        &self.inputs
    }

    /// One source per raster, scaled as pre-training scales it (the `imagenet` preset over
    /// the raster's own value range).
    fn for_each_source(
        &self,
        input: &EmbeddingInput,
        embed: &mut dyn FnMut(String, Result<Box<dyn RegionSource>, DomainError>),
    ) -> Result<(), DomainError> {
        let raster = Raster::open(&input.path).map_err(DomainError::input)?;
        let norm = Normalization::preset("imagenet", &[&raster], &self.chips.bands)
            .map_err(DomainError::input)?;
        let source =
            ChipSource::new(vec![raster], self.chips.clone(), norm).map_err(DomainError::input)?;
        embed(input.id.clone(), Ok(Box::new(source)));
        Ok(())
    }
}
