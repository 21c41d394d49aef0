//! The collapse and NaN guard: stops a run whose loss is no longer finite, whose class tokens
//! have collapsed to one point, or whose teacher has become uniform, with a message that names
//! the symptom and its usual causes. The run keeps its last checkpoint, saved before the symptom.

use std::fmt;

use dinoadapt_core::train::StepReport;

use crate::recipe::GuardSection;

/// What went wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum Symptom {
    NonFinite {
        step: usize,
        terms: Vec<&'static str>,
    },
    FeatureCollapse {
        step: usize,
        std: f64,
        limit: f64,
    },
    UniformTeacher {
        step: usize,
        entropy: f64,
        max: f64,
    },
}

impl fmt::Display for Symptom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Symptom::NonFinite { step, terms } => write!(
                f,
                "iteration {step}: non-finite values in {}. Likely causes: a learning rate too \
                 high for this batch size (lower optim.base_lr), a gradient explosion (check \
                 optim.clip_grad), or an input image that decodes to NaN/Inf.",
                terms.join(", ")
            ),
            Symptom::FeatureCollapse { step, std, limit } => write!(
                f,
                "iteration {step}: the student's class tokens have collapsed (std over the batch \
                 {std:.3e} < {limit:.1e}): every image maps to the same feature. Likely causes: \
                 a teacher temperature too high or warmed up too fast, too little centring \
                 (use loss.centering = \"sinkhorn_knopp\"), KoLeo disabled, or a learning rate \
                 too high."
            ),
            Symptom::UniformTeacher { step, entropy, max } => write!(
                f,
                "iteration {step}: the teacher's targets are uniform (entropy {entropy:.4} of a \
                 possible {max:.4} nats): the DINO loss no longer carries information. Likely \
                 causes: teacher_temp too high, a centre that overwhelms the logits, or heads \
                 with too many prototypes for this data."
            ),
        }
    }
}

/// The guard's running state.
#[derive(Debug, Clone)]
pub struct Guard {
    cfg: GuardSection,
    max_entropy: f64,
    entropy_after: usize,
    low_std: usize,
    uniform: usize,
}

impl Guard {
    /// `prototypes` sets the largest possible entropy; `warmup_end` the default start of the
    /// entropy check (the end of the teacher temperature warm-up).
    pub fn new(cfg: &GuardSection, prototypes: usize, warmup_end: usize) -> Self {
        Guard {
            max_entropy: (prototypes as f64).ln(),
            entropy_after: cfg.entropy_after.unwrap_or(warmup_end),
            cfg: cfg.clone(),
            low_std: 0,
            uniform: 0,
        }
    }

    /// The symptom of iteration `step`, if the run must stop.
    pub fn check(&mut self, step: usize, r: &StepReport) -> Option<Symptom> {
        if !self.cfg.enabled {
            return None;
        }
        let l = &r.loss;
        let named = [
            ("total loss", l.total),
            ("DINO local-crops loss", l.dino_local),
            ("DINO global-crops loss", l.dino_global),
            ("iBOT loss", l.ibot),
            ("KoLeo loss", l.koleo),
            ("backbone gradient norm", r.grad_norm_backbone),
            ("DINO head gradient norm", r.grad_norm_dino_head),
            ("iBOT head gradient norm", r.grad_norm_ibot_head),
        ];
        let terms: Vec<&'static str> = named
            .iter()
            .filter(|(_, v)| !v.is_finite())
            .map(|(n, _)| *n)
            .collect();
        if !terms.is_empty() {
            return Some(Symptom::NonFinite { step, terms });
        }
        let patience = self.cfg.patience.max(1);
        self.low_std = if l.cls_std < self.cfg.min_cls_std {
            self.low_std + 1
        } else {
            0
        };
        if self.low_std >= patience {
            return Some(Symptom::FeatureCollapse {
                step,
                std: l.cls_std,
                limit: self.cfg.min_cls_std,
            });
        }
        let uniform = step >= self.entropy_after
            && l.teacher_entropy >= self.cfg.max_entropy_fraction * self.max_entropy;
        self.uniform = if uniform { self.uniform + 1 } else { 0 };
        (self.uniform >= patience).then_some(Symptom::UniformTeacher {
            step,
            entropy: l.teacher_entropy,
            max: self.max_entropy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(total: f64, std: f64, entropy: f64) -> StepReport {
        let mut r = StepReport::default();
        r.loss.total = total;
        r.loss.cls_std = std;
        r.loss.teacher_entropy = entropy;
        r
    }

    #[test]
    fn names_each_symptom_after_its_patience() {
        let cfg = GuardSection {
            patience: 2,
            ..GuardSection::default()
        };
        let mut g = Guard::new(&cfg, 100, 5);
        assert_eq!(g.check(0, &report(1.0, 0.1, 1.0)), None);
        let s = g.check(1, &report(f64::NAN, 0.1, 1.0)).unwrap();
        assert!(s.to_string().contains("total loss"), "{s}");
        assert_eq!(g.check(2, &report(1.0, 1e-6, 1.0)), None);
        let s = g.check(3, &report(1.0, 1e-6, 1.0)).unwrap();
        assert!(s.to_string().contains("collapsed"), "{s}");
        // A uniform teacher during the temperature warm-up is not a symptom...
        let ln = 100f64.ln();
        let mut g = Guard::new(&cfg, 100, 5);
        for step in 0..5 {
            assert_eq!(g.check(step, &report(1.0, 0.1, ln)), None);
        }
        // ...after it, it is.
        assert_eq!(g.check(5, &report(1.0, 0.1, ln)), None);
        assert!(matches!(
            g.check(6, &report(1.0, 0.1, ln)),
            Some(Symptom::UniformTeacher { .. })
        ));
    }
}
