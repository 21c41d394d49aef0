//! Segmentation metrics from a pixel confusion matrix: per-class IoU (Jaccard) and Dice (F1),
//! their means, and pixel accuracy. Pixels whose truth is the ignore index are not counted.
//!
//! A class absent from both truth and prediction has no IoU or Dice (`None`, written as null)
//! and is left out of the means (mmsegmentation's `nanmean`); scikit-learn reports 0 for such
//! a class, which would pull the mean down for a class that was never there.

use serde::{Deserialize, Serialize};

/// `counts[truth * classes + predicted]` over the pixels seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationConfusion {
    pub classes: usize,
    /// Truth value that marks pixels to skip (e.g. 255, or nodata mapped to it).
    pub ignore_index: u32,
    pub counts: Vec<u64>,
}

/// What [`SegmentationConfusion::metrics`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationMetrics {
    /// Pixels counted (truth not ignored).
    pub pixels: u64,
    pub pixel_accuracy: f64,
    /// Mean IoU over the classes that occur in truth or prediction.
    pub miou: f64,
    /// Mean Dice over the same classes.
    pub mean_dice: f64,
    /// Per class: tp / (tp + fp + fn); None when the class occurs nowhere.
    pub iou: Vec<Option<f64>>,
    /// Per class: 2 tp / (2 tp + fp + fn); None when the class occurs nowhere.
    pub dice: Vec<Option<f64>>,
}

impl SegmentationConfusion {
    pub fn new(classes: usize, ignore_index: u32) -> Self {
        SegmentationConfusion {
            classes,
            ignore_index,
            counts: vec![0; classes * classes],
        }
    }

    /// Count `truth` against `predicted` (same length). Ignored truth pixels are skipped; a truth
    /// or prediction outside `0..classes` is an error (it names the first such value).
    pub fn add(&mut self, truth: &[u32], predicted: &[u32]) -> Result<(), OutOfRange> {
        assert_eq!(truth.len(), predicted.len(), "truth and prediction lengths");
        let c = self.classes as u32;
        for (&t, &p) in truth.iter().zip(predicted) {
            if t == self.ignore_index {
                continue;
            }
            if t >= c || p >= c {
                return Err(OutOfRange {
                    value: if t >= c { t } else { p },
                    classes: self.classes,
                });
            }
            self.counts[(t * c + p) as usize] += 1;
        }
        Ok(())
    }

    /// Add the counts of another confusion of the same classes.
    pub fn merge(&mut self, other: &SegmentationConfusion) {
        assert_eq!(
            self.classes, other.classes,
            "merging different class counts"
        );
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    pub fn metrics(&self) -> SegmentationMetrics {
        let c = self.classes;
        let at = |t: usize, p: usize| self.counts[t * c + p] as f64;
        let pixels: u64 = self.counts.iter().sum();
        let correct: f64 = (0..c).map(|k| at(k, k)).sum();
        let (mut iou, mut dice) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for k in 0..c {
            let tp = at(k, k);
            let actual: f64 = (0..c).map(|p| at(k, p)).sum();
            let predicted: f64 = (0..c).map(|t| at(t, k)).sum();
            let union = actual + predicted - tp;
            if union > 0.0 {
                iou.push(Some(tp / union));
                dice.push(Some(2.0 * tp / (actual + predicted)));
            } else {
                iou.push(None);
                dice.push(None);
            }
        }
        let mean = |v: &[Option<f64>]| {
            let present: Vec<f64> = v.iter().flatten().copied().collect();
            if present.is_empty() {
                0.0
            } else {
                present.iter().sum::<f64>() / present.len() as f64
            }
        };
        SegmentationMetrics {
            pixels,
            pixel_accuracy: correct / (pixels.max(1) as f64),
            miou: mean(&iou),
            mean_dice: mean(&dice),
            iou,
            dice,
        }
    }
}

/// A class value outside `0..classes` that is not the ignore index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("class value {value} is outside 0..{classes} and is not the ignore index")]
pub struct OutOfRange {
    pub value: u32,
    pub classes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn reference() -> Value {
        serde_json::from_str(include_str!("../tests/data/dense_reference.json")).unwrap()
    }

    fn u32s(v: &Value) -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    }

    fn f64s(v: &Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    #[test]
    fn matches_scikit_learn_jaccard_and_f1_with_an_ignore_index() {
        let r = &reference()["segmentation"];
        let classes = r["classes"].as_u64().unwrap() as usize;
        let ignore = r["ignore_index"].as_u64().unwrap() as u32;
        let mut conf = SegmentationConfusion::new(classes, ignore);
        let (truth, pred) = (u32s(&r["truth"]), u32s(&r["predicted"]));
        // Two halves merged give the same counts as one pass.
        let half = truth.len() / 2;
        conf.add(&truth[..half], &pred[..half]).unwrap();
        let mut rest = SegmentationConfusion::new(classes, ignore);
        rest.add(&truth[half..], &pred[half..]).unwrap();
        conf.merge(&rest);
        let m = conf.metrics();
        let mut worst = 0f64;
        for (k, (want_iou, want_dice)) in f64s(&r["jaccard"]).iter().zip(f64s(&r["f1"])).enumerate()
        {
            worst = worst.max((m.iou[k].unwrap() - want_iou).abs());
            worst = worst.max((m.dice[k].unwrap() - want_dice).abs());
        }
        worst = worst.max((m.pixel_accuracy - r["accuracy"].as_f64().unwrap()).abs());
        worst = worst.max((m.miou - r["miou"].as_f64().unwrap()).abs());
        worst = worst.max((m.mean_dice - r["mean_dice"].as_f64().unwrap()).abs());
        assert_eq!(m.pixels, r["pixels"].as_u64().unwrap());
        assert!(worst < 1e-12, "max abs difference {worst:e}");
        eprintln!("segmentation metrics vs scikit-learn: max abs difference {worst:e}");
    }

    #[test]
    fn absent_classes_are_none_and_left_out_of_the_means() {
        // 3 classes; class 2 never occurs. truth 0,0,1,1 pred 0,1,1,1 (+ one ignored pixel).
        let mut conf = SegmentationConfusion::new(3, 255);
        conf.add(&[0, 0, 1, 1, 255], &[0, 1, 1, 1, 2]).unwrap();
        let m = conf.metrics();
        assert_eq!(m.pixels, 4);
        assert_eq!(m.iou[2], None);
        assert!((m.iou[0].unwrap() - 0.5).abs() < 1e-12);
        assert!((m.iou[1].unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.miou - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((m.dice[0].unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.pixel_accuracy - 0.75).abs() < 1e-12);
        assert_eq!(
            conf.add(&[3], &[0]),
            Err(OutOfRange {
                value: 3,
                classes: 3
            })
        );
    }
}
