//! The DINOv2 objective, piece by piece, each checked against the official code's outputs:
//! the DINO/iBOT heads, the losses (DINO with Sinkhorn-Knopp or centering, iBOT, KoLeo), iBOT
//! block masking, Gram anchoring (DINOv3), the EMA teacher update, the schedules and the per-parameter multipliers.
//! The training engine that drives them is [`crate::train`].

pub mod cpu_cross_entropy;
pub mod ema;
pub mod gram;
pub mod head;
pub mod losses;
pub mod masking;
pub mod param_groups;
pub mod schedule;

pub use schedule::{CosineSchedule, ScheduleConfig, TrainSchedules};
