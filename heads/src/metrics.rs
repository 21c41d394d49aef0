//! Classification metrics from labels and per-class scores.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    pub samples: usize,
    pub accuracy: f64,
    /// Mean per-class recall over the classes present in the labels.
    pub balanced_accuracy: f64,
    /// Mean per-class F1 over the classes present in the labels or predictions.
    pub macro_f1: f64,
    /// Mean one-vs-rest AUROC over the classes that have both positives and negatives
    /// (None when no class has).
    pub auroc: Option<f64>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// The index of the largest score of each row (ties to the lower class).
pub fn argmax_rows(scores: &[f64], classes: usize) -> Vec<usize> {
    scores
        .chunks(classes)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |b, (c, &v)| if v > b.1 { (c, v) } else { b },
                )
                .0
        })
        .collect()
}

/// Area under the ROC curve of `scores` for `positive` labels: the Mann-Whitney statistic with
/// ties counted half (as scikit-learn's `roc_auc_score`). None without both classes.
pub fn binary_auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks (1-based) over ties.
    let mut ranks = vec![0f64; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = rank;
        }
        i = j + 1;
    }
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let sum_pos: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(r, _)| r)
        .sum();
    Some((sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

impl ClassificationMetrics {
    /// Metrics of `scores` ([n, classes], higher = more likely) against `labels`.
    pub fn compute(labels: &[usize], scores: &[f64], classes: usize) -> Self {
        let pred = argmax_rows(scores, classes);
        let n = labels.len();
        let mut confusion = vec![vec![0u64; classes]; classes];
        for (&t, &p) in labels.iter().zip(&pred) {
            confusion[t][p] += 1;
        }
        let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
        let (mut recalls, mut f1s) = (Vec::new(), Vec::new());
        for (c, row) in confusion.iter().enumerate() {
            let tp = row[c] as f64;
            let actual: u64 = row.iter().sum();
            let predicted: u64 = (0..classes).map(|t| confusion[t][c]).sum();
            if actual > 0 {
                recalls.push(tp / actual as f64);
            }
            if actual > 0 || predicted > 0 {
                f1s.push(2.0 * tp / (actual + predicted) as f64);
            }
        }
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let aucs: Vec<f64> = (0..classes)
            .filter_map(|c| {
                let s: Vec<f64> = scores.chunks(classes).map(|r| r[c]).collect();
                let pos: Vec<bool> = labels.iter().map(|&l| l == c).collect();
                binary_auroc(&s, &pos)
            })
            .collect();
        ClassificationMetrics {
            samples: n,
            accuracy: correct as f64 / n.max(1) as f64,
            balanced_accuracy: mean(&recalls),
            macro_f1: mean(&f1s),
            auroc: (!aucs.is_empty()).then(|| mean(&aucs)),
            confusion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_matches_scikit_learn_examples() {
        // roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        let a = binary_auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((a - 0.75).abs() < 1e-12);
        // Ties count half: roc_auc_score([0, 1], [0.5, 0.5]) == 0.5
        assert_eq!(binary_auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(binary_auroc(&[0.5, 0.7], &[true, true]), None);
    }

    #[test]
    fn accuracy_balanced_accuracy_and_macro_f1_by_hand() {
        // 3 classes; truth 0,0,0,1,2 ; prediction 0,0,1,1,1.
        let labels = [0, 0, 0, 1, 2];
        let one_hot = |c: usize| {
            let mut v = vec![0.0; 3];
            v[c] = 1.0;
            v
        };
        let scores: Vec<f64> = [0, 0, 1, 1, 1].iter().flat_map(|&c| one_hot(c)).collect();
        let m = ClassificationMetrics::compute(&labels, &scores, 3);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        // recalls 2/3, 1, 0 -> 5/9
        assert!((m.balanced_accuracy - 5.0 / 9.0).abs() < 1e-12);
        // F1: class 0: 2*2/(3+2)=0.8; class 1: 2*1/(1+3)=0.5; class 2: 0 -> 1.3/3
        assert!((m.macro_f1 - 1.3 / 3.0).abs() < 1e-12);
        assert_eq!(m.confusion[0], vec![2, 1, 0]);
    }

    /// Every metric equals scikit-learn's on the cases of
    /// tests/data/make_classification_reference.py (ties, a class never predicted, a class
    /// absent from the labels, two classes).
    #[test]
    fn equals_scikit_learn_on_the_reference_cases() {
        let path = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
            + "/tests/data/classification_reference.json";
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = reference["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 5);
        for (i, case) in cases.iter().enumerate() {
            let classes = case["classes"].as_u64().unwrap() as usize;
            let labels: Vec<usize> = case["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let scores: Vec<f64> = case["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let m = ClassificationMetrics::compute(&labels, &scores, classes);
            let f = |k: &str| case[k].as_f64().unwrap();
            let close = |a: f64, b: f64, what: &str| {
                assert!((a - b).abs() < 1e-12, "case {i} {what}: {a} vs {b}")
            };
            close(m.accuracy, f("accuracy"), "accuracy");
            close(
                m.balanced_accuracy,
                f("balanced_accuracy"),
                "balanced accuracy",
            );
            close(m.macro_f1, f("macro_f1"), "macro-F1");
            close(m.auroc.unwrap(), f("auroc"), "AUROC");
            let confusion: Vec<Vec<u64>> =
                serde_json::from_value(case["confusion"].clone()).unwrap();
            assert_eq!(m.confusion, confusion, "case {i} confusion");
        }
    }
}
