//! The training engine: the student/teacher pair and one pass of the objective ([`ssl`]),
//! AdamW with per-parameter lr and weight decay ([`optimizer`]), clipping by global norm per
//! module ([`clip`]), parameters by path for saving and restoring ([`named`]), the iteration
//! that ties them together ([`trainer`]) and data parallelism over replicas ([`replicas`]). Data, files and the run loop live in
//! `dinoadapt-pretrain`.

pub mod batch_chunks;
pub mod clip;
pub mod loss_terms;
pub mod optimizer;
pub mod param_paths;
pub mod replicas;
pub mod ssl;
pub mod trainer;

pub use loss_terms::LossTerms;
pub use ssl::{
    Centering, CropBatch, CropForward, LossReport, SslLossConfig, SslModel, StudentPass,
};
pub use trainer::{OptimConfig, StepReport, StepValues, Trainer};
