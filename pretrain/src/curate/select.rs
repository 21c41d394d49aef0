//! The curation decisions, given neighbours and clusters: near-duplicate groups, decontamination
//! against an evaluation set, retrieval of each seed's nearest pool items with a cluster
//! fallback, and hierarchical balanced sampling.

use std::collections::HashMap;

use super::search::{Knn, Metric};

/// True when `score` is at least as close as `threshold` (similarity for cosine, distance for L2).
fn close(metric: Metric, score: f32, threshold: f32) -> bool {
    match metric {
        Metric::Cosine => score >= threshold,
        Metric::L2 => score <= threshold,
    }
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Near-duplicate groups from a self-search: rows joined by a neighbour pair closer than
/// `threshold` form connected components; each component keeps its lowest pool index (the first
/// in pool order) and the others become its duplicates. Returns, per row, `Some((kept row, closest
/// score to any group member))` for the removed ones.
pub fn duplicates(knn: &Knn, threshold: f32) -> Vec<Option<(usize, f32)>> {
    let n = knn.queries();
    let mut parent: Vec<usize> = (0..n).collect();
    let mut best: Vec<Option<f32>> = vec![None; n];
    let better = |a: f32, b: Option<f32>| match (knn.metric, b) {
        (_, None) => true,
        (Metric::Cosine, Some(b)) => a > b,
        (Metric::L2, Some(b)) => a < b,
    };
    for i in 0..n {
        for (j, s) in knn.row(i) {
            if j < n && close(knn.metric, s, threshold) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                if a != b {
                    parent[a.max(b)] = a.min(b);
                }
                for x in [i, j] {
                    if better(s, best[x]) {
                        best[x] = Some(s);
                    }
                }
            }
        }
    }
    (0..n)
        .map(|i| {
            let root = find(&mut parent, i);
            (root != i).then(|| (root, best[i].unwrap_or(f32::NAN)))
        })
        .collect()
}

/// Pool rows closer than `threshold` to their nearest evaluation item (`knn`: pool rows as
/// queries against the evaluation set): `Some((evaluation row, score))`.
pub fn contaminated(knn: &Knn, threshold: f32) -> Vec<Option<(usize, f32)>> {
    (0..knn.queries())
        .map(|i| {
            knn.row(i)
                .next()
                .filter(|(_, s)| close(knn.metric, *s, threshold))
        })
        .collect()
}

/// Why a pool row is kept by retrieval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retrieved {
    /// Among the nearest rows of `seed`, at `score`.
    Neighbour { seed: usize, score: f32 },
    /// From the cluster of a seed with too few neighbours above the similarity floor.
    ClusterFallback { seed: usize, cluster: usize },
}

/// The outcome of retrieval.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieval {
    /// Per pool row, the first reason it was retrieved.
    pub kept: Vec<Option<Retrieved>>,
    /// Retrievals that hit a row another seed had already retrieved, over all retrievals.
    pub collision_rate: f64,
    /// Seeds that used the cluster fallback.
    pub fallback_seeds: usize,
}

/// Retrieval: for each seed its `n` nearest eligible pool rows closer than `floor`
/// (`seed_knn`: seeds as queries against the pool, with more than `n` neighbours so that
/// ineligible rows can be skipped). Seeds left short take the rows of their cluster
/// (`seed_clusters[seed]`) nearest to the cluster centre (`pool_clusters`: cluster and distance
/// of each pool row).
pub fn retrieve(
    seed_knn: &Knn,
    eligible: &[bool],
    n: usize,
    floor: f32,
    seed_clusters: Option<&[usize]>,
    pool_clusters: Option<(&[u32], &[f32])>,
) -> Retrieval {
    let mut kept: Vec<Option<Retrieved>> = vec![None; eligible.len()];
    let (mut hits, mut collisions, mut fallback_seeds) = (0usize, 0usize, 0usize);
    let mut by_cluster: HashMap<usize, Vec<usize>> = HashMap::new();
    if let Some((labels, dists)) = pool_clusters {
        for (i, &c) in labels.iter().enumerate() {
            if eligible[i] {
                by_cluster.entry(c as usize).or_default().push(i);
            }
        }
        for rows in by_cluster.values_mut() {
            rows.sort_by(|a, b| dists[*a].total_cmp(&dists[*b]).then(a.cmp(b)));
        }
    }
    let mut take = |row: usize, why: Retrieved, kept: &mut Vec<Option<Retrieved>>| {
        hits += 1;
        if kept[row].is_some() {
            collisions += 1;
        } else {
            kept[row] = Some(why);
        }
    };
    for seed in 0..seed_knn.queries() {
        let mut got = 0;
        for (row, score) in seed_knn.row(seed) {
            if got == n {
                break;
            }
            if eligible[row] && close(seed_knn.metric, score, floor) {
                take(row, Retrieved::Neighbour { seed, score }, &mut kept);
                got += 1;
            }
        }
        if got < n {
            if let Some(cluster) = seed_clusters.map(|c| c[seed]) {
                fallback_seeds += 1;
                for &row in by_cluster.get(&cluster).into_iter().flatten().take(n - got) {
                    take(row, Retrieved::ClusterFallback { seed, cluster }, &mut kept);
                }
            }
        }
    }
    Retrieval {
        kept,
        collision_rate: collisions as f64 / hits.max(1) as f64,
        fallback_seeds,
    }
}

/// Balanced sampling over a cluster hierarchy: `budget` rows split evenly over the top-level
/// clusters (what a small cluster cannot use goes to the others), recursively over their
/// sub-clusters; at the last level the rows nearest to their centre are taken. `paths[i]` is the
/// cluster path of row i (one label per level), `distances[i]` its distance to its leaf centre.
pub fn balanced_sample(paths: &[Vec<u32>], distances: &[f32], budget: usize) -> Vec<bool> {
    fn split(
        rows: Vec<usize>,
        level: usize,
        budget: usize,
        paths: &[Vec<u32>],
        d: &[f32],
        out: &mut Vec<bool>,
    ) {
        if rows.len() <= budget {
            rows.into_iter().for_each(|r| out[r] = true);
            return;
        }
        if level >= paths[rows[0]].len() {
            let mut rows = rows;
            rows.sort_by(|a, b| d[*a].total_cmp(&d[*b]).then(a.cmp(b)));
            rows.into_iter().take(budget).for_each(|r| out[r] = true);
            return;
        }
        let mut groups: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
        for r in rows {
            groups.entry(paths[r][level]).or_default().push(r);
        }
        let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
        groups.sort_by_key(|g| g.len());
        let mut left = budget;
        let mut remaining = groups.len();
        for g in groups {
            // An even share of what is left; smaller groups first, so their unused share flows on.
            let share = left.div_ceil(remaining).min(left);
            let used = share.min(g.len());
            split(g, level + 1, used, paths, d, out);
            left -= used;
            remaining -= 1;
        }
    }
    let mut out = vec![false; paths.len()];
    split(
        (0..paths.len()).collect(),
        0,
        budget,
        paths,
        distances,
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knn(rows: Vec<Vec<(u32, f32)>>, k: usize) -> Knn {
        let mut indices = Vec::new();
        let mut scores = Vec::new();
        for r in rows {
            for j in 0..k {
                let (i, s) = r.get(j).copied().unwrap_or((u32::MAX, f32::NEG_INFINITY));
                indices.push(i);
                scores.push(s);
            }
        }
        Knn {
            k,
            metric: Metric::Cosine,
            indices,
            scores,
        }
    }

    #[test]
    fn duplicate_chains_collapse_to_the_first_row() {
        // 0~2 and 2~3 are duplicates (a chain), 1 is alone.
        let k = knn(
            vec![
                vec![(2, 0.99), (1, 0.2)],
                vec![(3, 0.3), (0, 0.2)],
                vec![(0, 0.99), (3, 0.97)],
                vec![(2, 0.97), (1, 0.3)],
            ],
            2,
        );
        let d = duplicates(&k, 0.95);
        assert_eq!(d[0], None);
        assert_eq!(d[1], None);
        assert_eq!(d[2], Some((0, 0.99)));
        assert_eq!(d[3], Some((0, 0.97)));
        let c = contaminated(&k, 0.98);
        assert_eq!(c, vec![Some((2, 0.99)), None, Some((0, 0.99)), None]);
    }

    #[test]
    fn retrieval_skips_ineligible_rows_counts_collisions_and_falls_back() {
        let seeds = knn(
            vec![
                vec![(0, 0.9), (1, 0.8), (2, 0.7)],
                vec![(1, 0.9), (3, 0.85), (2, 0.2)],
                vec![(4, 0.1)],
            ],
            3,
        );
        let eligible = [false, true, true, true, true, true];
        let labels = [0u32, 0, 0, 1, 1, 1];
        let dists = [0.0f32, 0.1, 0.2, 0.3, 0.2, 0.1];
        let r = retrieve(
            &seeds,
            &eligible,
            2,
            0.5,
            Some(&[0, 1, 1]),
            Some((&labels, &dists)),
        );
        assert_eq!(r.kept[0], None); // ineligible (e.g. a duplicate)
        assert_eq!(
            r.kept[1],
            Some(Retrieved::Neighbour {
                seed: 0,
                score: 0.8
            })
        );
        assert_eq!(
            r.kept[2],
            Some(Retrieved::Neighbour {
                seed: 0,
                score: 0.7
            })
        );
        assert_eq!(
            r.kept[3],
            Some(Retrieved::Neighbour {
                seed: 1,
                score: 0.85
            })
        );
        // Seed 2 has nothing above the floor: its cluster's rows nearest the centre (5, then 4).
        assert_eq!(
            r.kept[5],
            Some(Retrieved::ClusterFallback {
                seed: 2,
                cluster: 1
            })
        );
        assert_eq!(
            r.kept[4],
            Some(Retrieved::ClusterFallback {
                seed: 2,
                cluster: 1
            })
        );
        assert_eq!(r.fallback_seeds, 1);
        // Seed 1 retrieved row 1 again: 1 collision in 6 retrievals.
        assert!((r.collision_rate - 1.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn balanced_sampling_spreads_the_budget_over_clusters() {
        // Top level: cluster 0 has 8 rows, cluster 1 has 2; budget 6 -> 2 from the small one,
        // 4 from the large one, split 2 + 2 over its two sub-clusters.
        let paths: Vec<Vec<u32>> = (0..10)
            .map(|i| {
                if i < 8 {
                    vec![0, (i % 2) as u32]
                } else {
                    vec![1, 0]
                }
            })
            .collect();
        let d: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let s = balanced_sample(&paths, &d, 6);
        assert_eq!(s.iter().filter(|x| **x).count(), 6);
        assert!(s[8] && s[9]);
        let picked: Vec<usize> = (0..8).filter(|i| s[*i]).collect();
        assert_eq!(picked, vec![0, 1, 2, 3]);
    }
}
