//! The engine of `heads train|eval --task segment|canopy` on any domain's features: the head
//! configuration chosen from plain settings and the training targets, class targets from
//! per-pixel values, and a head trained and measured on its training and validation sets.

use burn::tensor::backend::AutodiffBackend;
use dinoadapt_core::checkpoint::NamedTensors;

use super::{
    evaluate, train, BinNorm, Bins, DenseError, DenseHeadConfig, DenseMetrics, DenseResult,
    DenseSet, DenseTargets, DenseTrainConfig, DptHeadConfig, DptOutput, EpochLog, LinearHeadConfig,
};

/// Which head to train and its settings (the program's flags, parsed).
#[derive(Debug, Clone, PartialEq)]
pub enum HeadChoice {
    /// Segmentation: DINOv2's linear head on the last layer (`layers` 1) or on the last 4
    /// (`layers` 4, multi-scale).
    Linear {
        layers: usize,
        /// Number of classes (default: the largest class value in the targets + 1).
        classes: Option<usize>,
        /// Target value ignored besides NaN (not counted when finding the classes).
        ignore_index: u32,
        /// Concatenate the class token to the patch tokens (DINOv2 does).
        use_cls: bool,
    },
    /// Canopy height: the DPT head, regression over `bins` bins (plain regression when 0).
    Dpt {
        bins: usize,
        bin_norm: BinNorm,
        min_height: f64,
        /// Highest height (default: the largest training target, rounded up).
        max_height: Option<f64>,
        /// Width of the DPT fusion path.
        features: usize,
    },
}

/// Errors of the targets a head configuration is read from.
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    #[error("the targets have no class values; give --classes")]
    NoClasses,
    #[error("the targets have no valid height")]
    NoHeights,
    #[error(
        "target value {value} is not a class in 0..{classes} (nor --ignore-index {ignore}); \
         give --classes or fix the targets"
    )]
    NotAClass {
        value: f32,
        classes: usize,
        ignore: u32,
    },
    #[error(transparent)]
    Dense(#[from] DenseError),
}

/// The head configuration of `choice` on tokens of dimension `dim`, its open settings read
/// from the training targets `values` (NaN where there is none).
pub fn head_config(
    choice: &HeadChoice,
    dim: usize,
    values: &[f32],
) -> Result<DenseHeadConfig, TargetsError> {
    Ok(match *choice {
        HeadChoice::Linear {
            layers,
            classes,
            ignore_index,
            use_cls,
        } => {
            let classes = match classes {
                Some(c) => c,
                None => {
                    let max = values
                        .iter()
                        .filter(|v| v.is_finite() && **v != ignore_index as f32)
                        .fold(-1f32, |m, &v| m.max(v));
                    if max < 0.0 {
                        return Err(TargetsError::NoClasses);
                    }
                    max as usize + 1
                }
            };
            DenseHeadConfig::Linear(
                LinearHeadConfig::new(dim, classes)
                    .with_layers(layers)
                    .with_use_cls(use_cls),
            )
        }
        HeadChoice::Dpt {
            bins,
            bin_norm,
            min_height,
            max_height,
            features: f,
        } => {
            let max = match max_height {
                Some(m) => m,
                None => {
                    let m = values
                        .iter()
                        .filter(|v| v.is_finite())
                        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    if !m.is_finite() {
                        return Err(TargetsError::NoHeights);
                    }
                    (m as f64).ceil()
                }
            };
            let output = if bins == 0 {
                DptOutput::Regression {
                    min: min_height,
                    max,
                }
            } else {
                DptOutput::Bins(Bins::new(bins, min_height, max, bin_norm)?)
            };
            DenseHeadConfig::Dpt(
                DptHeadConfig::new(dim, output)
                    .with_features(f)
                    .with_scale_channels([f / 2, f, 2 * f, 2 * f])
                    .with_head_channels(32.min(f)),
            )
        }
    })
}

/// Class targets from values (NaN and `ignore` ignored), refusing values that are not classes.
pub fn class_targets(
    values: &[f32],
    classes: usize,
    ignore: u32,
) -> Result<DenseTargets, TargetsError> {
    let values = values
        .iter()
        .map(|&v| {
            if !v.is_finite() || v == ignore as f32 {
                return Ok(ignore);
            }
            if v < 0.0 || v.fract() != 0.0 || v as usize >= classes {
                return Err(TargetsError::NotAClass {
                    value: v,
                    classes,
                    ignore,
                });
            }
            Ok(v as u32)
        })
        .collect::<Result<Vec<u32>, _>>()?;
    Ok(DenseTargets::Classes {
        values,
        classes,
        ignore_index: ignore,
    })
}

/// The targets of `values` for the head `config`: classes (`ignore` ignored) or heights.
pub fn targets_for(
    config: &DenseHeadConfig,
    values: &[f32],
    ignore: u32,
) -> Result<DenseTargets, TargetsError> {
    Ok(match config {
        DenseHeadConfig::Linear(c) => class_targets(values, c.classes, ignore)?,
        DenseHeadConfig::Dpt(_) => DenseTargets::Heights(values.to_vec()),
    })
}

/// A trained head's weights, its per-epoch log and its metrics per split (`train`, then `val`
/// when there is a validation set).
pub struct TrainedHead {
    pub tensors: NamedTensors,
    pub log: Vec<EpochLog>,
    pub metrics: Vec<(String, DenseMetrics)>,
    /// Heights: the residuals (prediction − target, m) of the last split measured (`val` when
    /// there is one); empty for classes.
    pub residuals: Vec<f32>,
}

/// Trains the head `config` on `train` (`on_epoch` after each epoch) and measures it on `train`
/// and `val`.
pub fn train_and_measure<B: AutodiffBackend>(
    config: &DenseHeadConfig,
    train_set: &DenseSet,
    val: Option<&DenseSet>,
    cfg: &DenseTrainConfig,
    device: &B::Device,
    on_epoch: impl FnMut(&EpochLog),
) -> DenseResult<TrainedHead> {
    let trained = train::<B>(config, train_set, val, cfg, device, on_epoch)?;
    let on_train = evaluate(&trained.head, config, train_set, cfg, device)?;
    let mut residuals = on_train.residuals;
    let mut metrics = vec![("train".to_string(), on_train.metrics)];
    if let Some(v) = val {
        let on_val = evaluate(&trained.head, config, v, cfg, device)?;
        metrics.push(("val".into(), on_val.metrics));
        residuals = on_val.residuals;
    }
    Ok(TrainedHead {
        tensors: trained.head.to_named(),
        log: trained.log,
        metrics,
        residuals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(classes: Option<usize>) -> HeadChoice {
        HeadChoice::Linear {
            layers: 1,
            classes,
            ignore_index: 255,
            use_cls: true,
        }
    }

    #[test]
    fn the_classes_come_from_the_targets_unless_given() {
        let values = [0.0, 2.0, f32::NAN, 255.0, 1.0];
        match head_config(&linear(None), 8, &values).unwrap() {
            DenseHeadConfig::Linear(c) => assert_eq!(c.classes, 3),
            other => panic!("{other:?}"),
        }
        match head_config(&linear(Some(5)), 8, &values).unwrap() {
            DenseHeadConfig::Linear(c) => assert_eq!(c.classes, 5),
            other => panic!("{other:?}"),
        }
        let none = head_config(&linear(None), 8, &[f32::NAN, 255.0]).unwrap_err();
        assert_eq!(
            none.to_string(),
            "the targets have no class values; give --classes"
        );
    }

    #[test]
    fn the_highest_bin_is_the_largest_height_rounded_up() {
        let dpt = |max_height| HeadChoice::Dpt {
            bins: 4,
            bin_norm: BinNorm::default(),
            min_height: 0.0,
            max_height,
            features: 16,
        };
        match head_config(&dpt(None), 8, &[1.0, 12.3, f32::NAN]).unwrap() {
            DenseHeadConfig::Dpt(c) => match c.output {
                DptOutput::Bins(b) => assert_eq!((b.n, b.max), (4, 13.0)),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        let none = head_config(&dpt(None), 8, &[f32::NAN]).unwrap_err();
        assert_eq!(none.to_string(), "the targets have no valid height");
    }

    #[test]
    fn class_targets_ignore_nan_and_refuse_what_is_not_a_class() {
        match class_targets(&[0.0, f32::NAN, 2.0, 255.0], 3, 255).unwrap() {
            DenseTargets::Classes { values, .. } => assert_eq!(values, [0, 255, 2, 255]),
            other => panic!("{other:?}"),
        }
        let e = class_targets(&[0.0, 1.5], 3, 255).unwrap_err();
        assert_eq!(
            e.to_string(),
            "target value 1.5 is not a class in 0..3 (nor --ignore-index 255); give --classes \
             or fix the targets"
        );
        assert!(class_targets(&[3.0], 3, 255).is_err());
    }
}
