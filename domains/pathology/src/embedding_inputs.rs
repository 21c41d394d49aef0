//! What `dinoadapt embed --source` embeds of a pathology `[data.source]` table: each slide's
//! tissue tiles on a regular grid, at each resolution the table names (the tiles pre-training
//! drew at random), one feature file per slide and resolution.

use std::sync::Arc;

use dinoadapt_datasets::{DomainError, EmbeddingInput, EmbeddingInputs, RegionSource};

use crate::slide_list::{collect_slides, SlideEntry};
use crate::tiling::{plan_tiles, TilingConfig};
use crate::tissue::{detect_tissue, TissueConfig};
use crate::{OpenOptions, Slide, SlideTilesConfig, TileSource};

/// The slides of a `[data.source]` table and how their tiles are cut.
pub struct SlideInputs {
    inputs: Vec<EmbeddingInput>,
    entries: Vec<SlideEntry>,
    mpps: Vec<f64>,
    size: u32,
}

impl SlideInputs {
    /// The slides the table names (files, folders, CSV lists), listed, not yet opened.
    pub fn new(cfg: &SlideTilesConfig) -> Result<SlideInputs, DomainError> {
        let bad = |message: String| DomainError::Options {
            domain: "pathology",
            message,
        };
        if cfg.tiles.is_some() {
            return Err(bad(
                "tiles: a curated tile manifest is a pre-training pool; `embed --source` embeds \
                 the slides of `paths` on a grid (leave `tiles` out)"
                    .into(),
            ));
        }
        let entries = collect_slides(&cfg.paths).map_err(DomainError::input)?;
        if let Some(m) = cfg.mpp.iter().find(|m| !(m.is_finite() && **m > 0.0)) {
            return Err(bad(format!("mpp: {m} is not a positive resolution")));
        }
        if cfg.tile_size == 0 {
            return Err(bad("tile_size: must be positive".into()));
        }
        let inputs = entries
            .iter()
            .map(|e| EmbeddingInput {
                id: e.slide_id.clone(),
                path: e.path.clone(),
            })
            .collect();
        Ok(SlideInputs {
            inputs,
            entries,
            mpps: if cfg.mpp.is_empty() {
                vec![0.5]
            } else {
                cfg.mpp.clone()
            },
            size: cfg.tile_size,
        })
    }

    /// The feature file id of a slide at resolution `mpp`: the slide id, with the resolution
    /// when the table names several.
    fn source_id(&self, slide_id: &str, mpp: f64) -> String {
        if self.mpps.len() == 1 {
            slide_id.to_string()
        } else {
            format!("{slide_id}_mpp{mpp}")
        }
    }
}

impl EmbeddingInputs for SlideInputs {
    fn inputs(&self) -> &[EmbeddingInput] {
        &self.inputs
    }

    fn for_each_source(
        &self,
        input: &EmbeddingInput,
        embed: &mut dyn FnMut(String, Result<Box<dyn RegionSource>, DomainError>),
    ) -> Result<(), DomainError> {
        let entry = &self.entries[self.position(input)?];
        let slide = Slide::open_with(
            &entry.path,
            &OpenOptions {
                mpp_override: entry.mpp,
            },
        )
        .map_err(DomainError::input)?;
        let mask = detect_tissue(&slide, &TissueConfig::default())
            .map_err(DomainError::input)?
            .mask;
        let slide = Arc::new(slide);
        for &mpp in &self.mpps {
            let cfg = TilingConfig {
                target_mpp: mpp,
                size: self.size,
                stride: self.size,
                ..TilingConfig::default()
            };
            let id = self.source_id(&input.id, mpp);
            match plan_tiles(&slide, Some(&mask), &cfg) {
                Ok(plan) if plan.tiles.is_empty() => embed(
                    id,
                    Err(DomainError::Input(format!(
                        "no {}-px tile at {mpp} µm/px reaches the tissue threshold",
                        self.size
                    ))),
                ),
                Ok(plan) => {
                    if let Some(w) = &plan.warning {
                        tracing::warn!("{}: {w}", input.id);
                    }
                    let source = TileSource::new(slide.clone(), input.id.clone(), plan);
                    embed(id, Ok(Box::new(source)));
                }
                Err(e) => embed(id, Err(DomainError::input(e))),
            }
        }
        Ok(())
    }
}
