//! Training checkpoints on disk: `<output>/checkpoints/step-NNNNNNNN/` holding
//! `state.safetensors` (student, teacher, optimizer moments, centres) and `state.json` (the
//! iteration, the optimizer step counts, the best loss so far, the recipe). A checkpoint folder
//! is written under a temporary name and renamed into place, so a killed run never leaves a
//! half-written checkpoint behind; the last `keep_last` and the best are kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dinoadapt_core::checkpoint::safetensors_io::{
    read_safetensors, write_atomic, write_safetensors,
};
use dinoadapt_core::checkpoint::{CheckpointError, HostTensor, NamedTensors};
use dinoadapt_core::io::{persist_dir, temp_dir_beside};
use serde::{Deserialize, Serialize};

/// What `state.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Iterations completed.
    pub step: usize,
    pub seed: u64,
    /// AdamW step count per parameter path.
    pub optimizer_steps: Vec<(String, u64)>,
    /// Lowest smoothed total loss so far and the checkpoint it was saved with.
    pub best_loss: Option<f64>,
    pub best_step: Option<usize>,
    pub program_version: String,
    /// The recipe the run was started with (TOML).
    pub recipe: String,
    /// kNN accuracies measured so far: (iteration, when, accuracy).
    #[serde(default)]
    pub knn: Vec<(usize, String, f64)>,
}

fn root(output: &Path) -> PathBuf {
    output.join("checkpoints")
}

/// The folder of the checkpoint after `step` iterations.
pub fn checkpoint_dir(output: &Path, step: usize) -> PathBuf {
    root(output).join(format!("step-{step:08}"))
}

/// Write a checkpoint atomically; returns its folder.
pub fn save(
    output: &Path,
    tensors: &NamedTensors,
    meta: &CheckpointMeta,
) -> Result<PathBuf, CheckpointError> {
    let dir = checkpoint_dir(output, meta.step);
    let werr = |e: std::io::Error| CheckpointError::Write {
        path: dir.clone(),
        reason: e.to_string(),
    };
    let tmp_dir = temp_dir_beside(&dir).map_err(werr)?;
    let tmp = tmp_dir.path();
    let provenance = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("dinoadapt.step".to_string(), meta.step.to_string()),
    ]);
    write_safetensors(&tmp.join("state.safetensors"), tensors, provenance)?;
    let json = serde_json::to_string_pretty(meta).expect("metadata serialises");
    write_atomic(&tmp.join("state.json"), json.as_bytes())?;
    persist_dir(tmp_dir, &dir).map_err(werr)?;
    Ok(dir)
}

/// Completed checkpoints in `output`, by iteration, oldest first.
pub fn list(output: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root(output)) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let step = name.strip_prefix("step-")?.parse().ok()?;
            p.join("state.json").is_file().then_some((step, p))
        })
        .collect();
    found.sort();
    found
}

/// The most recent completed checkpoint.
pub fn latest(output: &Path) -> Option<(usize, PathBuf)> {
    list(output).pop()
}

/// Read a checkpoint folder.
pub fn load(dir: &Path) -> Result<(HashMap<String, HostTensor>, CheckpointMeta), CheckpointError> {
    let json_path = dir.join("state.json");
    let text =
        std::fs::read_to_string(&json_path).map_err(|e| CheckpointError::io(&json_path, e))?;
    let meta: CheckpointMeta = serde_json::from_str(&text)
        .map_err(|e| CheckpointError::malformed(&json_path, "training state", e.to_string()))?;
    let (tensors, _) = read_safetensors(&dir.join("state.safetensors"))?;
    Ok((tensors.into_iter().collect(), meta))
}

/// Delete all but the last `keep_last` checkpoints and the one of `best_step`.
pub fn prune(output: &Path, keep_last: usize, best_step: Option<usize>) {
    let all = list(output);
    let cut = all.len().saturating_sub(keep_last.max(1));
    for (step, dir) in &all[..cut] {
        if Some(*step) != best_step {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                tracing::warn!("could not remove old checkpoint {}: {e}", dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(step: usize) -> CheckpointMeta {
        CheckpointMeta {
            step,
            seed: 1,
            optimizer_steps: vec![("a".into(), step as u64)],
            best_loss: Some(1.0),
            best_step: Some(2),
            program_version: "test".into(),
            recipe: String::new(),
            knn: vec![(0, "start".into(), 0.5)],
        }
    }

    #[test]
    fn saves_lists_loads_and_prunes() {
        let out = tempfile::tempdir().unwrap();
        let t = vec![("x".to_string(), HostTensor::new(vec![2], vec![1.0, 2.0]))];
        for s in [1, 2, 3, 4] {
            save(out.path(), &t, &meta(s)).unwrap();
        }
        // A crashed write leaves only a hidden temp folder, which is not a checkpoint.
        std::fs::create_dir_all(out.path().join("checkpoints/.step-00000005.tmp1")).unwrap();
        assert_eq!(latest(out.path()).unwrap().0, 4);
        prune(out.path(), 1, Some(2));
        let steps: Vec<usize> = list(out.path()).into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![2, 4]);
        let (tensors, m) = load(&checkpoint_dir(out.path(), 4)).unwrap();
        assert_eq!(m, meta(4));
        assert_eq!(tensors["x"].data, vec![1.0, 2.0]);
    }
}
