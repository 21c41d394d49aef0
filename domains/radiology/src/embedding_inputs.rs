//! What `dinoadapt embed --source` embeds of a radiology `[data.source]` table: every
//! non-empty slice of each volume (the slices pre-training draws from), one feature file per
//! volume named by its pseudonymous id; inputs are named by a salted hash of their path.

use std::path::Path;

use dinoadapt_datasets::{DomainError, EmbeddingInput, EmbeddingInputs, RegionSource};

use crate::source::SliceOptions;
use crate::volume_inputs::{for_each_sliced_volume_of, input_id, InputVolumes};
use crate::{Pseudonymizer, VolumeSlicesConfig};

/// The volume inputs of a `[data.source]` table and how their slices are cut.
pub struct VolumeInputs {
    inputs: Vec<EmbeddingInput>,
    pseudo: Pseudonymizer,
    options: SliceOptions,
}

impl VolumeInputs {
    /// The inputs the table names (NIfTI files, DICOM files or folders), not yet read; ids
    /// from the salt in `$DINOADAPT_ID_SALT` (as `radiology embed` without `--id-salt`).
    pub fn new(cfg: &VolumeSlicesConfig) -> Result<VolumeInputs, DomainError> {
        let options = cfg.slice_options()?;
        let volumes = InputVolumes {
            paths: cfg.paths.clone(),
            id_salt: None,
            id_map: None,
        };
        let pseudo = volumes.pseudonymizer().map_err(DomainError::input)?;
        let inputs = cfg
            .paths
            .iter()
            .map(|p| EmbeddingInput {
                id: input_id(&pseudo, p),
                path: p.clone(),
            })
            .collect();
        Ok(VolumeInputs {
            inputs,
            pseudo,
            options,
        })
    }
}

impl EmbeddingInputs for VolumeInputs {
    fn inputs(&self) -> &[EmbeddingInput] {
        &self.inputs
    }

    /// One source per volume (a DICOM folder may hold several series); a volume that could
    /// not be read is handed on as its error.
    fn for_each_source(
        &self,
        input: &EmbeddingInput,
        embed: &mut dyn FnMut(String, Result<Box<dyn RegionSource>, DomainError>),
    ) -> Result<(), DomainError> {
        let index = self.position(input)?;
        let mut rows = Vec::new();
        let mut sources = 0;
        for_each_sliced_volume_of(
            &self.pseudo,
            index,
            Path::new(&input.path),
            self.options,
            &mut rows,
            |volume, source, _row| -> Result<(), crate::RadiologyError> {
                sources += 1;
                embed(volume.id.clone(), Ok(Box::new(source)));
                Ok(())
            },
        )
        .map_err(DomainError::input)?;
        let failures: Vec<_> = rows.iter().filter(|r| r.status == "failed").collect();
        if sources == 0 {
            if let Some(first) = failures.first() {
                return Err(DomainError::Input(first.error.clone()));
            }
        }
        for (k, row) in failures.iter().enumerate() {
            let what = match row.file.as_str() {
                "" => row.error.clone(),
                file => format!("{file}: {}", row.error),
            };
            let id = match row.id.as_str() {
                "" => format!("{}-failed-{k}", input.id),
                id => id.to_string(),
            };
            embed(id, Err(DomainError::Input(what)));
        }
        Ok(())
    }
}
