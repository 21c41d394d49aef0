//! The DINOv2 objective: losses (DINO with Sinkhorn-Knopp or centering, iBOT, KoLeo) and the
//! training schedules.

pub mod head;
pub mod losses;
pub mod masking;
pub mod param_groups;
pub mod schedule;

pub use schedule::{CosineSchedule, ScheduleConfig, TrainSchedules};
