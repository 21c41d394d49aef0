//! The DINOv2 training schedules, exactly as the official `CosineScheduler` and `train.py`
//! build them (see `../shared/fixtures/README.md` §8).

/// A precomputed per-iteration schedule: `freeze_iters` zeros, a linear warm-up that includes
/// its end point (numpy `linspace`), then a half-cosine from `base` towards `final` that never
/// reaches it inside the array. Indexing at or past `total_iters` gives `final`.
#[derive(Debug, Clone, PartialEq)]
pub struct CosineSchedule {
    values: Vec<f64>,
    final_value: f64,
}

impl CosineSchedule {
    pub fn new(
        base: f64,
        final_value: f64,
        total_iters: usize,
        warmup_iters: usize,
        start_warmup_value: f64,
        freeze_iters: usize,
    ) -> Self {
        let mut values = vec![0.0; freeze_iters.min(total_iters)];
        // numpy.linspace(start, stop, n): start + i * (stop - start) / (n - 1), end point exact.
        for i in 0..warmup_iters {
            let v = if warmup_iters == 1 {
                start_warmup_value
            } else if i == warmup_iters - 1 {
                base
            } else {
                start_warmup_value
                    + i as f64 * ((base - start_warmup_value) / (warmup_iters - 1) as f64)
            };
            values.push(v);
        }
        let n = total_iters.saturating_sub(warmup_iters + freeze_iters);
        for i in 0..n {
            let cos = (std::f64::consts::PI * i as f64 / n as f64).cos();
            values.push(final_value + 0.5 * (base - final_value) * (1.0 + cos));
        }
        values.truncate(total_iters);
        CosineSchedule {
            values,
            final_value,
        }
    }

    /// The value at iteration `it`.
    pub fn at(&self, it: usize) -> f64 {
        self.values.get(it).copied().unwrap_or(self.final_value)
    }

    /// Zero the first `n` iterations (the frozen last layer of the DINO head).
    pub fn freeze_first(mut self, n: usize) -> Self {
        for v in self.values.iter_mut().take(n) {
            *v = 0.0;
        }
        self
    }
}

/// The optimisation settings the schedules come from (the official `optim` / `teacher` config).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    /// Iterations per "epoch" (`OFFICIAL_EPOCH_LENGTH`).
    pub epoch_length: usize,
    pub epochs: usize,
    pub warmup_epochs: usize,
    pub warmup_teacher_temp_epochs: usize,
    pub freeze_last_layer_epochs: usize,
    /// Global batch size (per GPU x world size), for the sqrt(batch/1024) lr scaling.
    pub batch_size: usize,
    pub base_lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub weight_decay_end: f64,
    pub momentum_teacher: f64,
    pub final_momentum_teacher: f64,
    pub warmup_teacher_temp: f64,
    pub teacher_temp: f64,
}

/// The five schedules of a DINOv2 run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSchedules {
    pub lr: CosineSchedule,
    pub wd: CosineSchedule,
    pub momentum: CosineSchedule,
    pub teacher_temp: CosineSchedule,
    pub last_layer_lr: CosineSchedule,
}

impl ScheduleConfig {
    /// The peak learning rate after the `sqrt_wrt_1024` scaling rule.
    pub fn scaled_lr(&self) -> f64 {
        self.base_lr * (self.batch_size as f64 / 1024.0).sqrt()
    }

    /// `train.py` `build_schedulers`.
    pub fn build(&self) -> TrainSchedules {
        let e = self.epoch_length;
        let total = self.epochs * e;
        let lr = CosineSchedule::new(
            self.scaled_lr(),
            self.min_lr,
            total,
            self.warmup_epochs * e,
            0.0,
            0,
        );
        let teacher_warmup = self.warmup_teacher_temp_epochs * e;
        TrainSchedules {
            last_layer_lr: lr.clone().freeze_first(self.freeze_last_layer_epochs * e),
            lr,
            wd: CosineSchedule::new(self.weight_decay, self.weight_decay_end, total, 0, 0.0, 0),
            momentum: CosineSchedule::new(
                self.momentum_teacher,
                self.final_momentum_teacher,
                total,
                0,
                0.0,
                0,
            ),
            teacher_temp: CosineSchedule::new(
                self.teacher_temp,
                self.teacher_temp,
                teacher_warmup,
                teacher_warmup,
                self.warmup_teacher_temp,
                0,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_includes_its_end_point_and_cosine_never_reaches_final() {
        let s = CosineSchedule::new(1.0, 0.0, 10, 3, 0.5, 2);
        assert_eq!(s.at(0), 0.0);
        assert_eq!(s.at(1), 0.0);
        assert_eq!(s.at(2), 0.5);
        assert_eq!(s.at(4), 1.0);
        assert_eq!(s.at(5), 1.0);
        assert!(s.at(9) > 0.0);
        assert_eq!(s.at(10), 0.0);
        assert_eq!(s.at(1000), 0.0);
    }
}
