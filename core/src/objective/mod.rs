//! The DINOv2 objective: schedules (and, as they land, the losses and heads).

pub mod schedule;

pub use schedule::{CosineSchedule, ScheduleConfig, TrainSchedules};
