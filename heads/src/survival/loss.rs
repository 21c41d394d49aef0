//! The two survival losses, on a batch of slides.
//!
//! - Cox: the negative partial log-likelihood with Breslow ties, averaged over the events,
//!   `−(1/E) Σ_{i: event} [r_i − log Σ_{j: T_j ≥ T_i} exp(r_j)]`.
//! - NLL: the discrete-time likelihood of PORPOISE / MCAT's `nll_loss` (hazards
//!   `h = sigmoid(logits)`, survival `S = cumprod(1 − h)`, `S_pad = [1, S]`, censorship
//!   `c = 1 − event`): `−(1 − c)(log S_pad[y] + log h[y]) − c·log S_pad[y + 1]` per slide, the
//!   uncensored part weighted up by `alpha`, probabilities clamped at 1e-7, mean over the batch.

use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::TimeBins;

/// MCAT's clamp of the probabilities inside the logs.
pub const NLL_EPS: f32 = 1e-7;

/// Which loss trains the head (and so what its outputs mean).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loss", rename_all = "lowercase")]
pub enum SurvivalLoss {
    /// One output: the log relative hazard.
    Cox,
    /// One output per time bin: discrete-time hazard logits; `alpha` weights the uncensored
    /// term up (MCAT's `alpha_surv`).
    Nll { bins: TimeBins, alpha: f64 },
}

impl SurvivalLoss {
    pub fn outputs(&self) -> usize {
        match self {
            SurvivalLoss::Cox => 1,
            SurvivalLoss::Nll { bins, .. } => bins.n_bins(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            SurvivalLoss::Cox => "cox",
            SurvivalLoss::Nll { .. } => "nll",
        }
    }

    /// The loss of a batch: `out` [S, outputs] (the stacked head outputs) of slides with these
    /// times and events. `None` when it is empty (a Cox batch without events).
    pub fn batch_loss<B: Backend>(
        &self,
        out: Tensor<B, 2>,
        time: &[f64],
        event: &[bool],
    ) -> Option<Tensor<B, 1>> {
        match self {
            SurvivalLoss::Cox => cox_ph_loss(out.flatten(0, 1), time, event),
            SurvivalLoss::Nll { bins, alpha } => {
                let bin: Vec<usize> = time.iter().map(|&t| bins.bin(t)).collect();
                Some(nll_loss(out, &bin, event, *alpha))
            }
        }
    }

    /// The risk (higher = earlier event) of each row of `out` [S, outputs]: the Cox output
    /// itself, or `−Σ S` of the hazard logits.
    pub fn risk<B: Backend>(&self, out: Tensor<B, 2>) -> Tensor<B, 1> {
        match self {
            SurvivalLoss::Cox => out.flatten(0, 1),
            SurvivalLoss::Nll { .. } => nll_risk(out),
        }
    }
}

/// Cox loss of `risk` [S] with per-slide `time` and `event`; `None` when the batch has no
/// event (the partial likelihood is then empty).
pub fn cox_ph_loss<B: Backend>(
    risk: Tensor<B, 1>,
    time: &[f64],
    event: &[bool],
) -> Option<Tensor<B, 1>> {
    let s = time.len();
    let events = event.iter().filter(|&&e| e).count();
    if events == 0 {
        return None;
    }
    let device = risk.device();
    // outside[i, j]: j is not at risk at T_i (T_j < T_i).
    let outside: Vec<bool> = (0..s * s).map(|k| time[k % s] < time[k / s]).collect();
    let outside = Tensor::<B, 2, Bool>::from_data(TensorData::new(outside, [s, s]), &device);
    let rows = risk.clone().unsqueeze::<2>().repeat_dim(0, s); // rows[i, j] = r_j
    let rows = rows.mask_fill(outside, -1e30);
    let max = rows.clone().max_dim(1).detach(); // [S, 1]
    let lse = (rows - max.clone()).exp().sum_dim(1).log() + max; // [S, 1]
    let e: Vec<f32> = event.iter().map(|&e| e as u8 as f32).collect();
    let e = Tensor::<B, 1>::from_data(TensorData::new(e, [s]), &device);
    let terms = (risk - lse.flatten(0, 1)) * e;
    Some(terms.sum().neg().div_scalar(events as f64))
}

fn one_hot<B: Backend>(
    index: impl Iterator<Item = usize>,
    s: usize,
    width: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut v = vec![0f32; s * width];
    for (row, k) in index.enumerate() {
        v[row * width + k] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [s, width]), device)
}

/// The survival curve `S = cumprod(1 − sigmoid(logits))` [S, n_bins].
pub fn survival_curve<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 2> {
    sigmoid(logits).neg().add_scalar(1.0).cumprod(1)
}

/// MCAT's risk for ranking from hazard logits [S, n_bins]: `−Σ_k S_k` [S].
pub fn nll_risk<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    survival_curve(logits).sum_dim(1).neg().flatten(0, 1)
}

/// NLL loss of `logits` [S, n_bins] with each slide's time bin and event.
pub fn nll_loss<B: Backend>(
    logits: Tensor<B, 2>,
    bin: &[usize],
    event: &[bool],
    alpha: f64,
) -> Tensor<B, 1> {
    let [s, k] = logits.dims();
    let device = logits.device();
    let hazards = sigmoid(logits.clone());
    let surv = survival_curve(logits);
    let s_pad = Tensor::cat(vec![Tensor::ones([s, 1], &device), surv], 1); // [S, k + 1]
    let at = |t: Tensor<B, 2>, idx: Tensor<B, 2>| (t * idx).sum_dim(1).flatten(0, 1);
    let s_y = at(
        s_pad.clone(),
        one_hot(bin.iter().copied(), s, k + 1, &device),
    );
    let s_y1 = at(s_pad, one_hot(bin.iter().map(|b| b + 1), s, k + 1, &device));
    let h_y = at(hazards, one_hot(bin.iter().copied(), s, k, &device));
    let c: Vec<f32> = event.iter().map(|&e| (!e) as u8 as f32).collect();
    let c = Tensor::<B, 1>::from_data(TensorData::new(c, [s]), &device);
    let uncensored = (s_y.clamp_min(NLL_EPS).log() + h_y.clamp_min(NLL_EPS).log())
        * c.clone().neg().add_scalar(1.0);
    let censored = s_y1.clamp_min(NLL_EPS).log() * c;
    let neg_l = (uncensored.clone() + censored).neg();
    (neg_l.mul_scalar(1.0 - alpha) - uncensored.mul_scalar(alpha)).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::survival::reference::{bools, cases, f64s, reference, usizes};
    use burn::backend::{Autodiff, Flex};

    fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
        t.into_data().convert::<f64>().into_vec::<f64>().unwrap()[0]
    }

    #[test]
    fn cox_and_nll_equal_numpy_and_mcat() {
        let r = reference();
        let device = Default::default();
        let (mut worst_cox, mut worst_nll, mut worst_risk) = (0.0f64, 0.0f64, 0.0f64);
        for case in cases(&r, "losses") {
            let (t, e) = (f64s(&case["time"]), bools(&case["event"]));
            let risk: Vec<f32> = f64s(&case["risk"]).iter().map(|&x| x as f32).collect();
            let n = risk.len();
            let rt = Tensor::<Flex, 1>::from_data(TensorData::new(risk, [n]), &device);
            let cox = scalar(cox_ph_loss(rt, &t, &e).unwrap());
            let want = case["cox"].as_f64().unwrap();
            worst_cox = worst_cox.max((cox - want).abs());
            assert!(
                (cox - want).abs() < 1e-5 * want.abs().max(1.0),
                "{cox} vs {want}"
            );

            let logits: Vec<f32> = case["logits"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(f64s)
                .map(|x| x as f32)
                .collect();
            let lt = Tensor::<Flex, 2>::from_data(TensorData::new(logits, [n, 4]), &device);
            let bins = usizes(&case["bin"]);
            for (alpha, want) in case["nll"].as_object().unwrap() {
                let alpha: f64 = alpha.parse().unwrap();
                let got = scalar(nll_loss(lt.clone(), &bins, &e, alpha));
                let want = want.as_f64().unwrap();
                worst_nll = worst_nll.max((got - want).abs());
                assert!(
                    (got - want).abs() < 1e-5 * want.abs().max(1.0),
                    "{alpha}: {got} vs {want}"
                );
            }
            let risk = nll_risk(lt)
                .into_data()
                .convert::<f64>()
                .into_vec::<f64>()
                .unwrap();
            for (a, b) in risk.iter().zip(f64s(&case["risk_from_logits"])) {
                worst_risk = worst_risk.max((a - b).abs());
                assert!((a - b).abs() < 1e-5);
            }
        }
        eprintln!(
            "losses (f32): max |rust - reference| cox {worst_cox:e}, nll {worst_nll:e}, \
             nll risk {worst_risk:e}"
        );
    }

    #[test]
    fn cox_gradient_matches_the_closed_form() {
        // d/dr_k of -(1/E) Σ_i e_i (r_i - log Σ_{j∈R_i} e^{r_j})
        //   = -(1/E) (e_k - Σ_i e_i [k ∈ R_i] e^{r_k} / Σ_{j∈R_i} e^{r_j}).
        let t = [1.0, 2.0, 2.0, 3.0, 5.0];
        let e = [true, false, true, true, false];
        let r = [0.3f64, -0.4, 1.2, 0.1, -0.9];
        let device = Default::default();
        let x =
            Tensor::<Autodiff<Flex>, 1>::from_floats(r.map(|v| v as f32), &device).require_grad();
        let g = cox_ph_loss(x.clone(), &t, &e).unwrap().backward();
        let got = x
            .grad(&g)
            .unwrap()
            .into_data()
            .convert::<f64>()
            .into_vec::<f64>()
            .unwrap();
        let events = e.iter().filter(|&&v| v).count() as f64;
        for k in 0..5 {
            let mut s = 0.0;
            for i in 0..5 {
                if e[i] && t[k] >= t[i] {
                    let denom: f64 = (0..5).filter(|&j| t[j] >= t[i]).map(|j| r[j].exp()).sum();
                    s += r[k].exp() / denom;
                }
            }
            let want = -((e[k] as u8 as f64) - s) / events;
            assert!((got[k] - want).abs() < 1e-6, "{k}: {} vs {want}", got[k]);
        }
        assert!(cox_ph_loss(x, &t, &[false; 5]).is_none());
    }
}
