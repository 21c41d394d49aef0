//! Survival from slide feature bags: the gated-attention MIL head (ABMIL, Ilse et al. 2018, as
//! CLAM and PORPOISE build it), its two losses (Cox partial likelihood with Breslow ties, and
//! the discrete-time NLL of PORPOISE / MCAT over quantile time bins), the metrics a survival
//! study reports (Harrell's C-index, Kaplan–Meier, the log-rank test) and k-fold splits by
//! patient.
//!
//! Times are in whatever unit the clinical table uses (days, months); nothing here converts them.
//! Events are `true` for an observed event (death, recurrence) and `false` for a censoring.
//!
//! On disk: a [`Cohort`] is feature bags ([`bag_files`]: `pathology embed` output or CLAM /
//! TRIDENT `.h5`) matched to a [`Clinical`] table (CSV or Parquet); a [`Study`] cross-validates
//! heads on it by patient and writes the head folder ([`store`]) with its tables and plots
//! ([`report`]); a [`SurvivalHead`] read back predicts risk and attention for any cohort.

pub mod abmil;
pub mod bag_files;
pub mod bags;
pub mod bins;
pub mod clinical;
pub mod cohort;
pub mod concordance;
pub mod error;
pub mod folds;
pub mod kaplan_meier;
pub mod logrank;
pub mod loss;
pub mod report;
pub mod store;
pub mod study;
pub mod train;

#[cfg(test)]
pub(crate) mod reference;

pub use abmil::{Abmil, AbmilConfig, AbmilOutput};
pub use bag_files::{BagFiles, BagHeader, Coords};
pub use bags::{BagReader, BagSet, Bags};
pub use bins::TimeBins;
pub use clinical::{Clinical, ClinicalColumns, ColumnRole, CovariateScale};
pub use cohort::{Cohort, CohortConfig};
pub use concordance::{concordance_index, Concordance};
pub use error::StudyError;
pub use folds::patient_folds;
pub use kaplan_meier::KaplanMeier;
pub use logrank::{logrank_test, LogRank};
pub use loss::{cox_ph_loss, nll_loss, nll_risk, SurvivalLoss};
pub use store::{head_covariates, save_head, SurvivalHead, SurvivalRecord};
pub use study::{
    evaluate, write_predictions, CrossValidation, Study, StudyConfig, StudyLoss, DEFAULT_BINS,
    DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_WEIGHT_DECAY,
};
pub use train::{predict, train, train_valid, Prediction, SurvivalTrainConfig, TrainProgress};

/// Why a survival computation could not be done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SurvivalError {
    #[error("{what}: {found} values, expected {expected} (one per sample)")]
    Length {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("{what} has a non-finite value at row {row}")]
    NonFinite { what: &'static str, row: usize },
    #[error("no comparable pair: the C-index needs an event earlier than another sample's time")]
    NoComparablePairs,
    #[error("no samples")]
    Empty,
    #[error("the log-rank test needs two or more groups, found {0}")]
    Groups(usize),
    #[error("{bins} time bins need {bins} distinct quantiles of the event times; {reason}")]
    Bins { bins: usize, reason: String },
    #[error("{folds} folds need at least {folds} patients, found {patients}")]
    Folds { folds: usize, patients: usize },
    #[error("bag {index} has dimension {found}, the head takes {expected}")]
    Dimension {
        index: usize,
        expected: usize,
        found: usize,
    },
    #[error("bag {0} has no tiles")]
    EmptyBag(usize),
    #[error("{0}")]
    Config(String),
}

/// Check that every per-sample slice has `n` values and that times are finite.
pub(crate) fn check_samples(n: usize, time: &[f64], event: &[bool]) -> Result<(), SurvivalError> {
    if n == 0 {
        return Err(SurvivalError::Empty);
    }
    for (what, len) in [("time", time.len()), ("event", event.len())] {
        if len != n {
            return Err(SurvivalError::Length {
                what,
                expected: n,
                found: len,
            });
        }
    }
    finite("time", time)
}

pub(crate) fn finite(what: &'static str, v: &[f64]) -> Result<(), SurvivalError> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(row) => Err(SurvivalError::NonFinite { what, row }),
        None => Ok(()),
    }
}
