//! The collapse and NaN guard: stops a run whose loss is no longer finite, whose class tokens
//! have collapsed to one point, whose student sits at the uniform fixed point (DINO terms at
//! ln K times their share), or whose teacher has become uniform, with a message that names the
//! symptom and its usual causes. The run keeps its last checkpoint, saved before the symptom.

use dinoadapt_core::train::loss_terms::{DINO_GLOBAL, DINO_LOCAL, IBOT, KOLEO};
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
    /// The student predicts the uniform distribution over the prototypes: the DINO
    /// cross-entropies equal ln K times their share of the loss terms, whatever the targets.
    UniformStudent {
        step: usize,
        dino: f64,
        ln_k: f64,
        iterations: usize,
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
                 causes: class tokens that are the same for every image (LayerScale 1e-5 on a \
                 fresh model: try model.layerscale = 0), teacher_temp too high, a centre that \
                 overwhelms the logits, or heads with too many prototypes for this data \
                 (recipes/mnist_tiny.toml shows settings that learn at small scale)."
            ),
            Symptom::UniformStudent {
                step,
                dino,
                ln_k,
                iterations,
            } => write!(
                f,
                "iteration {step}: the student sits at the uniform fixed point: the DINO \
                 losses (local + global, scaled to all crops) have been {dino:.4} = ln K = \
                 {ln_k:.4} for {iterations} iterations, i.e. the student predicts the same \
                 probability for every prototype and the teacher's class tokens no longer tell \
                 images apart. Likely causes: LayerScale 1e-5 with a tiny model and few \
                 iterations (try model.layerscale = 0 or 1.0), a teacher temperature at or \
                 below the spread of the teacher logits, or too low a learning rate; \
                 recipes/mnist_tiny.toml shows settings that learn at small scale."
            ),
        }
    }
}

/// The guard's running state.
#[derive(Debug, Clone)]
pub struct Guard {
    cfg: GuardSection,
    max_entropy: f64,
    /// (2L + 2) / (max(2L, 1) + 2): the sum of the two DINO terms over ln K at the uniform
    /// fixed point, for L local crops (1 with local crops).
    dino_share: f64,
    entropy_after: usize,
    low_std: usize,
    uniform: usize,
    uniform_student: usize,
}

impl Guard {
    /// `prototypes` sets the largest possible entropy, `local_crops` the shares of the DINO
    /// terms; `warmup_end` the default start of the entropy and uniform-student checks (the end
    /// of the teacher temperature and lr warm-ups).
    pub fn new(
        cfg: &GuardSection,
        prototypes: usize,
        local_crops: usize,
        warmup_end: usize,
    ) -> Self {
        let terms = (2 * local_crops).max(1) + 2;
        let shares = if local_crops > 0 { terms } else { 2 };
        Guard {
            max_entropy: (prototypes as f64).ln(),
            dino_share: shares as f64 / terms as f64,
            entropy_after: cfg.entropy_after.unwrap_or(warmup_end),
            cfg: cfg.clone(),
            low_std: 0,
            uniform: 0,
            uniform_student: 0,
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
            ("DINO local-crops loss", l.terms.value(DINO_LOCAL)),
            ("DINO global-crops loss", l.terms.value(DINO_GLOBAL)),
            ("iBOT loss", l.terms.value(IBOT)),
            ("KoLeo loss", l.terms.value(KOLEO)),
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
        // The DINO terms at ln K x their share, to a relative `uniform_tolerance`.
        let dino = (l.terms.value(DINO_LOCAL) + l.terms.value(DINO_GLOBAL)) / self.dino_share;
        let at_ln_k = step >= self.entropy_after
            && self.max_entropy > 0.0
            && ((dino - self.max_entropy) / self.max_entropy).abs() <= self.cfg.uniform_tolerance;
        self.uniform_student = if at_ln_k { self.uniform_student + 1 } else { 0 };
        let window = self.cfg.uniform_patience.max(1);
        if self.uniform_student >= window {
            return Some(Symptom::UniformStudent {
                step,
                dino,
                ln_k: self.max_entropy,
                iterations: window,
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
        let mut g = Guard::new(&cfg, 100, 4, 5);
        assert_eq!(g.check(0, &report(1.0, 0.1, 1.0)), None);
        let s = g.check(1, &report(f64::NAN, 0.1, 1.0)).unwrap();
        assert!(s.to_string().contains("total loss"), "{s}");
        assert_eq!(g.check(2, &report(1.0, 1e-6, 1.0)), None);
        let s = g.check(3, &report(1.0, 1e-6, 1.0)).unwrap();
        assert!(s.to_string().contains("collapsed"), "{s}");
        // A uniform teacher during the temperature warm-up is not a symptom...
        let ln = 100f64.ln();
        let mut g = Guard::new(&cfg, 100, 4, 5);
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

    fn dino(local: f64, global: f64) -> StepReport {
        let mut r = report(local + global + 1.0, 0.1, 1.0);
        r.loss.terms.set(DINO_LOCAL, local);
        r.loss.terms.set(DINO_GLOBAL, global);
        r
    }

    #[test]
    fn the_uniform_fixed_point_stops_the_run_after_its_window() {
        let cfg = GuardSection {
            uniform_patience: 3,
            ..GuardSection::default()
        };
        // K = 256, 4 local crops: the fixed point is ln K x 8/10 and ln K x 2/10 (the run the
        // issue describes: 4.436 and 1.110).
        let ln_k = 256f64.ln();
        let stuck = dino(ln_k * 0.8, ln_k * 0.2 + 1e-4);
        let mut g = Guard::new(&cfg, 256, 4, 10);
        // Not during the warm-ups...
        for step in 0..10 {
            assert_eq!(g.check(step, &stuck), None);
        }
        // ...nor when it is left (a learning run's terms are well below ln K)...
        assert_eq!(g.check(10, &stuck), None);
        assert_eq!(g.check(11, &stuck), None);
        assert_eq!(g.check(12, &dino(3.9, 0.9)), None);
        assert_eq!(g.check(13, &stuck), None);
        assert_eq!(g.check(14, &stuck), None);
        // ...but after `uniform_patience` iterations in a row at ln K, it stops.
        let s = g.check(15, &stuck).unwrap();
        assert!(
            matches!(s, Symptom::UniformStudent { step: 15, .. }),
            "{s:?}"
        );
        let text = s.to_string();
        assert!(
            text.contains("uniform fixed point") && text.contains("5.5452"),
            "{text}"
        );

        // Without local crops the global term alone is ln K x 2/3.
        let mut g = Guard::new(&cfg, 256, 0, 0);
        for step in 0..2 {
            assert_eq!(g.check(step, &dino(0.0, ln_k * 2.0 / 3.0)), None);
        }
        assert!(g.check(2, &dino(0.0, ln_k * 2.0 / 3.0)).is_some());
    }
}
