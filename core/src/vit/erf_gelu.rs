//! Exact (erf) GELU for inference on the CPU backend: `x/2 (1 + erf(x/√2))` with erf from a
//! rational approximation (odd degree-13 numerator over even degree-8 denominator, on x clamped
//! to [-4, 4], outside which erf is ±1 in f32) whose loop the compiler vectorises, instead of
//! burn-flex's element-by-element libm `erff`, which took 7% of a ViT-S/14 forward in the CPU
//! profile (bench/README.md). The training student on the CPU (`Autodiff<CpuBackend>`) gets the
//! same forward and a vectorised backward, `g · (Φ(x) + x φ(x))`, as its own autodiff op (burn-flex
//! differentiates with libm's `erff` and `expf` element by element). Elsewhere (GPU backends)
//! burn's GELU runs.

use std::any::TypeId;

use burn::tensor::backend::Backend;
use burn::tensor::{activation, DType, Tensor, TensorData};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn_flex::FlexTensor;

use super::cpu_attention::exp_nonpositive;
use crate::backend::CpuBackend;
use crate::cpu_autodiff::{flex_tensor, from_autodiff, is_cpu_autodiff, row_major, to_autodiff};

const ALPHA: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];
const BETA: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329e-3,
    -1.426_474e-2,
];

/// erf(x) to within 1e-6 (the unit test's grid), with `madd(a, b, c) = a * b + c`.
#[inline(always)]
fn erf_with(x: f32, madd: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = ALPHA[0];
    for a in &ALPHA[1..] {
        p = madd(x2, p, *a);
    }
    let mut q = BETA[0];
    for b in &BETA[1..] {
        q = madd(x2, q, *b);
    }
    x * p / q
}

#[inline(always)]
fn gelu_with(v: &mut [f32], madd: impl Fn(f32, f32, f32) -> f32 + Copy) {
    for e in v.iter_mut() {
        let x = *e;
        *e = 0.5 * x * (1.0 + erf_with(x * std::f32::consts::FRAC_1_SQRT_2, madd));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_avx2_fma(v: &mut [f32]) {
    gelu_with(v, f32::mul_add);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gelu_avx512(v: &mut [f32]) {
    gelu_with(v, f32::mul_add);
}

/// GELU of every element, in place (AVX-512, or AVX2 + FMA, where the CPU has them).
pub fn gelu_in_place(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { gelu_avx512(v) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { gelu_avx2_fma(v) };
        }
    }
    gelu_with(v, |a, b, c| a * b + c);
}

#[inline(always)]
fn gelu_grad_with(x: &[f32], g: &mut [f32], madd: impl Fn(f32, f32, f32) -> f32 + Copy) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for (g, &x) in g.iter_mut().zip(x) {
        let cdf = 0.5 * (1.0 + erf_with(x * std::f32::consts::FRAC_1_SQRT_2, madd));
        let pdf = INV_SQRT_2PI * exp_nonpositive(-0.5 * x * x, madd);
        *g *= madd(x, pdf, cdf);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gelu_grad_avx512(x: &[f32], g: &mut [f32]) {
    gelu_grad_with(x, g, f32::mul_add);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gelu_grad_avx2_fma(x: &[f32], g: &mut [f32]) {
    gelu_grad_with(x, g, f32::mul_add);
}

/// `g[i] *= GELU'(x[i])`: the gradient of GELU's input from its output's, in place.
pub fn gelu_grad_in_place(x: &[f32], g: &mut [f32]) {
    assert_eq!(x.len(), g.len());
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { gelu_grad_avx512(x, g) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { gelu_grad_avx2_fma(x, g) };
        }
    }
    gelu_grad_with(x, g, |a, b, c| a * b + c);
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<CpuBackend, 1> for GeluBackward {
    /// GELU's input.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<CpuBackend, _>(ops.parents, ops.node, grads, |grad| {
            let mut g = row_major(&grad).into_owned();
            gelu_grad_in_place(&row_major(&x), &mut g);
            flex_tensor(g, grad.layout().shape())
        });
    }
}

/// GELU of the student's tensors on the CPU, with [`GeluBackward`].
fn gelu_autodiff<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let x = to_autodiff(x);
    let mut y = row_major(&x.primitive).into_owned();
    gelu_in_place(&mut y);
    let y = flex_tensor(y, x.primitive.layout().shape());
    let out = match GeluBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(x.primitive, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    from_autodiff(out)
}

/// Exact GELU: the vectorised form on the CPU backend (with its own backward under autodiff),
/// burn's elsewhere.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if is_cpu_autodiff(&x) {
        return gelu_autodiff(x);
    }
    if TypeId::of::<B>() != TypeId::of::<CpuBackend>() || x.dtype() != DType::F32 {
        return activation::gelu(x);
    }
    let (shape, device) = (x.shape(), x.device());
    let mut v = x
        .into_data()
        .into_vec::<f32>()
        .expect("an f32 tensor holds f32");
    gelu_in_place(&mut v);
    Tensor::from_data(TensorData::new(v, shape), &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// erf in f64: the C library's.
    fn erf64(x: f64) -> f64 {
        extern "C" {
            fn erf(x: f64) -> f64;
        }
        // SAFETY: libm's erf is a pure function of its argument.
        unsafe { erf(x) }
    }

    #[test]
    fn erf_is_within_1e_6_everywhere() {
        let worst = (-80_000..=80_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| {
                let got = erf_with(x, |a, b, c| a * b + c) as f64;
                (got - erf64(x as f64)).abs()
            })
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "{worst}");
        let mut v: Vec<f32> = (-2000..2000).map(|i| i as f32 * 5e-3).collect();
        let want: Vec<f64> = v
            .iter()
            .map(|&x| 0.5 * x as f64 * (1.0 + erf64(x as f64 / 2f64.sqrt())))
            .collect();
        gelu_in_place(&mut v);
        let worst = v
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max);
        assert!(worst < 2e-6, "{worst}");
    }

    #[test]
    fn the_autodiff_form_matches_burns_gelu_and_its_gradient() {
        use crate::cpu_autodiff::CpuAutodiff;
        let device = Default::default();
        let x =
            Tensor::<CpuAutodiff, 3>::random([2, 5, 64], Distribution::Normal(0.0, 3.0), &device)
                .require_grad();
        let w = Tensor::<CpuAutodiff, 3>::random([2, 5, 64], Distribution::Default, &device);
        let run = |ours: bool| {
            let y = match ours {
                true => gelu(x.clone()),
                false => activation::gelu(x.clone()),
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            let g = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            (y.inner().into_data().to_vec::<f32>().unwrap(), g)
        };
        let ((y, g), (want_y, want_g)) = (run(true), run(false));
        let worst = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        };
        assert!(worst(&y, &want_y) < 2e-6);
        assert!(worst(&g, &want_g) < 2e-6, "{}", worst(&g, &want_g));
    }

    #[test]
    fn the_cpu_form_matches_burns_gelu() {
        let device = Default::default();
        let x =
            Tensor::<CpuBackend, 3>::random([2, 5, 64], Distribution::Normal(0.0, 3.0), &device);
        let want = activation::gelu(x.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let got = gelu(x).into_data().to_vec::<f32>().unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f32::max);
        assert!(worst < 2e-6, "{worst}");
    }
}
