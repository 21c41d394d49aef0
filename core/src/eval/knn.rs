//! The weighted k-nearest-neighbour classifier of DINO / DINOv2's `eval_knn`: cosine similarity
//! to the training features, the top k neighbours vote for their class with weight
//! `exp(similarity / T)`, the class with the largest vote wins (ties to the lower class id).

/// Row-wise L2 normalisation of `rows` (each `dim` long), in place.
pub fn l2_normalise(rows: &mut [f32], dim: usize) {
    for r in rows.chunks_mut(dim) {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        r.iter_mut().for_each(|v| *v /= n);
    }
}

/// The class votes of each query row: `[M, classes]`, each row normalised to sum to 1 (the
/// scores AUROC needs). `train` and `query` are row-major [N, dim] / [M, dim] features
/// (normalised here); `train_labels` are in `0..classes`.
pub fn knn_votes(
    train: &[f32],
    train_labels: &[usize],
    query: &[f32],
    dim: usize,
    classes: usize,
    k: usize,
    temperature: f64,
) -> Vec<f64> {
    let mut train = train.to_vec();
    let mut query = query.to_vec();
    l2_normalise(&mut train, dim);
    l2_normalise(&mut query, dim);
    let k = k.min(train_labels.len()).max(1);
    let mut sims: Vec<(f32, usize)> = Vec::with_capacity(train_labels.len());
    let mut out = Vec::with_capacity(query.len() / dim.max(1) * classes);
    for q in query.chunks(dim) {
        sims.clear();
        sims.extend(
            train
                .chunks(dim)
                .map(|t| t.iter().zip(q).map(|(a, b)| a * b).sum::<f32>())
                .zip(train_labels.iter().copied()),
        );
        sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        let mut votes = vec![0f64; classes];
        for &(s, label) in &sims[..k] {
            votes[label] += (s as f64 / temperature).exp();
        }
        let total: f64 = votes.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        out.extend(votes.iter().map(|v| v / total));
    }
    out
}

/// Predicted class of each query row: the largest [`knn_votes`] (ties to the lower class id).
pub fn knn_predict(
    train: &[f32],
    train_labels: &[usize],
    query: &[f32],
    dim: usize,
    classes: usize,
    k: usize,
    temperature: f64,
) -> Vec<usize> {
    knn_votes(train, train_labels, query, dim, classes, k, temperature)
        .chunks(classes.max(1))
        .map(|votes| {
            votes
                .iter()
                .enumerate()
                .fold(
                    (0, f64::MIN),
                    |best, (c, &v)| if v > best.1 { (c, v) } else { best },
                )
                .0
        })
        .collect()
}

/// Top-1 accuracy of [`knn_predict`] against `query_labels`.
#[allow(clippy::too_many_arguments)]
pub fn knn_accuracy(
    train: &[f32],
    train_labels: &[usize],
    query: &[f32],
    query_labels: &[usize],
    dim: usize,
    classes: usize,
    k: usize,
    temperature: f64,
) -> f64 {
    let pred = knn_predict(train, train_labels, query, dim, classes, k, temperature);
    let right = pred
        .iter()
        .zip(query_labels)
        .filter(|(p, l)| p == l)
        .count();
    right as f64 / query_labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_vote_with_their_similarity() {
        // Two clusters on the unit circle; the query near the second.
        let train = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9, 0.2, 0.8];
        let labels = [0, 0, 1, 1, 1];
        assert_eq!(
            knn_predict(&train, &labels, &[0.05, 1.0], 2, 2, 3, 0.07),
            vec![1]
        );
        assert_eq!(
            knn_predict(&train, &labels, &[1.0, 0.02], 2, 2, 2, 0.07),
            vec![0]
        );
        // k larger than the pool uses the whole pool; the closer class outweighs the larger one.
        assert_eq!(
            knn_predict(&train, &labels, &[1.0, 0.0], 2, 2, 50, 0.07),
            vec![0]
        );
        assert_eq!(
            knn_accuracy(
                &train,
                &labels,
                &[1.0, 0.0, 0.0, 1.0],
                &[0, 1],
                2,
                2,
                3,
                0.07
            ),
            1.0
        );
    }
}
