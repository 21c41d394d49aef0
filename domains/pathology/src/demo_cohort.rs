//! A demonstration survival cohort made from real tile features when no clinical data is at
//! hand (`dinoadapt demo`'s pathology job): the tiles of embedded slides are cut into spatial blocks, each block
//! a pseudo-slide of its own pseudo-patient, written as a CLAM / TRIDENT `.h5` bag (`features`
//! [N, D], `coords` [N, 2]). Survival times are drawn from a planted hazard: the score of a
//! block is its mean tile feature projected on the first principal direction of all tiles
//! (standardised over blocks), the hazard exp(`strength` × score); times are exponential with
//! that hazard, censored at an independent exponential time. Not clinical data: a cohort whose
//! signal is known, to watch the survival head find it.

use std::path::{Path, PathBuf};

use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use polars::prelude::{DataType, ParquetReader, SerReader};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use dinoadapt_datasets::DomainError;

/// How the cohort is cut and drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoCohortConfig {
    /// Blocks per side of each slide's tile grid (blocks² pseudo-slides per slide at most).
    pub blocks: usize,
    /// Blocks with fewer tiles are left out.
    pub min_tiles: usize,
    /// Log-hazard per standard deviation of the score.
    pub strength: f64,
    /// Rate of the censoring times (the event times have rate ~1).
    pub censoring_rate: f64,
    pub seed: u64,
}

impl Default for DemoCohortConfig {
    fn default() -> Self {
        DemoCohortConfig {
            blocks: 6,
            min_tiles: 4,
            strength: 1.5,
            censoring_rate: 0.3,
            seed: 0,
        }
    }
}

/// What was written: the bag folder, the clinical table, and the counts.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoCohort {
    pub bags: PathBuf,
    pub clinical: PathBuf,
    pub patients: usize,
    pub events: usize,
}

fn bad(path: &Path, what: impl Into<String>) -> DomainError {
    DomainError::Input(format!("{}: {}", path.display(), what.into()))
}

/// One slide's tile features (`[n, d]` row-major, `d`) and level-0 corners.
type SlideTiles = (Vec<f32>, usize, Vec<[i64; 2]>);

/// One slide's tiles from a `pathology embed` folder.
fn slide_tiles(embed: &Path, id: &str) -> Result<SlideTiles, DomainError> {
    let features = embed.join("features").join(format!("{id}.safetensors"));
    let (tensors, _) =
        read_safetensors(&features).map_err(|e| bad(&features, format!("not readable: {e}")))?;
    let cls = tensors
        .iter()
        .find(|(n, _)| n == "cls")
        .map(|(_, t)| t)
        .ok_or_else(|| bad(&features, "no `cls` tensor"))?;
    let (n, d) = (cls.shape[0], cls.shape[1]);
    let table = embed.join("tiles").join(format!("{id}.parquet"));
    let file = std::fs::File::open(&table).map_err(|e| bad(&table, e.to_string()))?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|e| bad(&table, e.to_string()))?;
    let int = |c: &str| -> Result<Vec<i64>, DomainError> {
        let col = df
            .column(c)
            .and_then(|s| s.cast(&DataType::Int64))
            .map_err(|e| bad(&table, format!("`{c}`: {e}")))?;
        let ca = col.i64().map_err(|e| bad(&table, e.to_string()))?;
        Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or(0)).collect())
    };
    let (row, x, y) = (int("feature_row")?, int("x")?, int("y")?);
    let mut coords = vec![[0i64; 2]; n];
    for ((r, x), y) in row.iter().zip(&x).zip(&y) {
        if let Some(c) = coords.get_mut(*r as usize) {
            *c = [*x, *y];
        }
    }
    Ok((cls.data.clone(), d, coords))
}

/// The first principal direction of `x` [n, d] (power iteration on the centred covariance).
fn first_direction(x: &[f32], d: usize) -> Vec<f64> {
    let n = x.len() / d;
    let mut mean = vec![0f64; d];
    for r in x.chunks(d) {
        mean.iter_mut()
            .zip(r)
            .for_each(|(m, v)| *m += *v as f64 / n as f64);
    }
    let mut v: Vec<f64> = (0..d).map(|i| 1.0 + (i as f64 * 0.37).sin()).collect();
    for _ in 0..50 {
        let mut w = vec![0f64; d];
        for r in x.chunks(d) {
            let dot: f64 = r
                .iter()
                .zip(&mean)
                .zip(&v)
                .map(|((a, m), b)| (*a as f64 - m) * b)
                .sum();
            w.iter_mut()
                .zip(r.iter().zip(&mean))
                .for_each(|(w, (a, m))| *w += dot * (*a as f64 - m));
        }
        let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
        v = w.into_iter().map(|a| a / norm).collect();
    }
    v
}

/// Cuts the slides `ids` of the `pathology embed` folder `embed` into a demo cohort in `out`
/// (`out/bags/<slide>_b<k>.h5`, `out/clinical.csv`).
pub fn demo_cohort(
    embed: &Path,
    ids: &[String],
    out: &Path,
    cfg: &DemoCohortConfig,
) -> Result<DemoCohort, DomainError> {
    let bags = out.join("bags");
    std::fs::create_dir_all(&bags).map_err(|e| bad(&bags, e.to_string()))?;
    // Blocks of every slide.
    let mut blocks: Vec<(String, Vec<f32>, Vec<[i64; 2]>)> = Vec::new();
    let mut dim = 0;
    for id in ids {
        let (x, d, coords) = slide_tiles(embed, id)?;
        dim = d;
        let (lo, hi) = coords
            .iter()
            .fold(([i64::MAX; 2], [i64::MIN; 2]), |(lo, hi), c| {
                (
                    [lo[0].min(c[0]), lo[1].min(c[1])],
                    [hi[0].max(c[0]), hi[1].max(c[1])],
                )
            });
        let k = cfg.blocks.max(1) as i64;
        let cell = |c: i64, a: usize| {
            let span = (hi[a] - lo[a] + 1).max(1);
            ((c - lo[a]) * k / span).clamp(0, k - 1)
        };
        // Each tile into its block, in one pass.
        let mut cells: Vec<(Vec<f32>, Vec<[i64; 2]>)> =
            vec![(Vec::new(), Vec::new()); (k * k) as usize];
        for (t, c) in coords.iter().enumerate() {
            let cell = &mut cells[(cell(c[1], 1) * k + cell(c[0], 0)) as usize];
            cell.0.extend_from_slice(&x[t * d..(t + 1) * d]);
            cell.1.push(*c);
        }
        for (b, (feats, corners)) in cells.into_iter().enumerate() {
            if corners.len() >= cfg.min_tiles {
                blocks.push((format!("{id}_b{b:02}"), feats, corners));
            }
        }
    }
    if blocks.len() < 4 {
        return Err(bad(
            embed,
            format!(
                "{} blocks of at least {} tiles: too few for a cohort (more tiles, or fewer \
                 blocks)",
                blocks.len(),
                cfg.min_tiles
            ),
        ));
    }
    let all: Vec<f32> = blocks.iter().flat_map(|b| b.1.iter().copied()).collect();
    let dir = first_direction(&all, dim);
    let scores: Vec<f64> = blocks
        .iter()
        .map(|(_, x, _)| {
            let n = x.len() / dim;
            x.chunks(dim)
                .map(|r| r.iter().zip(&dir).map(|(a, b)| *a as f64 * b).sum::<f64>())
                .sum::<f64>()
                / n as f64
        })
        .collect();
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let sd = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / scores.len() as f64)
        .sqrt()
        .max(1e-12);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut csv = String::from("slide_id,patient_id,time,event,planted_score\n");
    let mut events = 0;
    for (i, ((id, x, coords), s)) in blocks.iter().zip(&scores).enumerate() {
        let z = (s - mean) / sd;
        let hazard = (cfg.strength * z).exp();
        let t_event = -rng.random_range(1e-12f64..1.0).ln() / hazard;
        let t_censor = -rng.random_range(1e-12f64..1.0).ln() / cfg.censoring_rate;
        let (time, event) = (t_event.min(t_censor), t_event <= t_censor);
        events += usize::from(event);
        csv.push_str(&format!(
            "{id},P{i:03},{time:.4},{},{z:.4}\n",
            u8::from(event)
        ));
        let path = bags.join(format!("{id}.h5"));
        write_h5(&path, x, dim, coords).map_err(|e| bad(&path, e.to_string()))?;
    }
    let clinical = out.join("clinical.csv");
    std::fs::write(&clinical, csv).map_err(|e| bad(&clinical, e.to_string()))?;
    Ok(DemoCohort {
        bags,
        clinical,
        patients: blocks.len(),
        events,
    })
}

/// A CLAM / TRIDENT bag: `features` [N, D] f32, `coords` [N, 2] i64.
fn write_h5(path: &Path, x: &[f32], d: usize, coords: &[[i64; 2]]) -> hdf5_metno::Result<()> {
    let f = hdf5_metno::File::create(path)?;
    let n = coords.len();
    f.new_dataset::<f32>()
        .shape((n, d))
        .create("features")?
        .write_raw(x)?;
    let flat: Vec<i64> = coords.iter().flat_map(|c| c.iter().copied()).collect();
    f.new_dataset::<i64>()
        .shape((n, 2))
        .create("coords")?
        .write_raw(&flat)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_direction_is_the_direction_of_largest_spread() {
        // Points spread along (1, 1) / sqrt(2), little across.
        let x: Vec<f32> = (0..40)
            .flat_map(|i| {
                let t = i as f32 - 20.0;
                let e = if i % 2 == 0 { 0.1 } else { -0.1 };
                [t + e, t - e]
            })
            .collect();
        let v = first_direction(&x, 2);
        let c = (v[0] * v[1]).abs();
        assert!((c - 0.5).abs() < 1e-3, "{v:?}");
    }
}
