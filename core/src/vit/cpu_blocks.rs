//! The transformer blocks of a ViT forward on the CPU backend, computed on the token rows in
//! place: inference only (embedding, the teacher), where burn-flex runs each op as its own pass
//! over a freshly allocated tensor — bias add, GELU, LayerScale and the residual add each read
//! and write the whole activation, and every intermediate costs page faults (11% of a ViT-S/14
//! forward in the CPU profile, bench/README.md). Here the tokens stay one `Vec<f32>` through all
//! blocks, updated in place by the residual adds; the intermediates live in buffers allocated
//! once per forward; each matrix product (the `gemm` crate, burn-flex's own) is followed by one
//! fused pass: bias (qkv), bias + GELU (fc1), gate · value (SwiGLU), or bias + LayerScale +
//! residual (proj, fc2). Same operations as the burn path, so the same results up to f32
//! rounding order (the unit tests compare the two). Anything else — GPU and autodiff backends,
//! other dtypes, other precisions — runs the burn path.

use std::any::Any;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::cpu_attention::attend_rows;
use super::erf_gelu::gelu_in_place;
use super::layers::{Block, Ffn, LayerScale};
use crate::backend::CpuBackend;

/// Rows per task of the element-wise passes (enough work to be worth a rayon task).
const ROWS_PER_TASK: usize = 16;

/// The blocks of a forward on the token rows `x` [B, T, D]: the final tokens and the outputs of
/// the blocks in `keep` (by index, in block order). `Err(x)` untouched where the fast path does
/// not apply (another backend, or weights that are not f32).
// `&Vec`, not a slice: the backend is found by downcasting it (`Any` needs a sized type).
#[allow(clippy::type_complexity, clippy::ptr_arg)]
pub(crate) fn forward_blocks<B: burn::tensor::backend::Backend>(
    blocks: &Vec<Block<B>>,
    x: Tensor<B, 3>,
    norm_eps: f64,
    keep: &[usize],
) -> Result<(Tensor<B, 3>, Vec<(usize, Tensor<B, 3>)>), Tensor<B, 3>> {
    let Some(cpu_blocks) = (blocks as &dyn Any).downcast_ref::<Vec<Block<CpuBackend>>>() else {
        return Err(x);
    };
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    let Some(params) = cpu_blocks
        .iter()
        .map(BlockParams::of)
        .collect::<Option<Vec<_>>>()
    else {
        return Err(x);
    };
    let [b, t, d] = x.dims();
    if params.iter().any(|p| p.dim() != d) {
        return Err(x);
    }
    let mut rows = x
        .into_data()
        .into_vec::<f32>()
        .expect("an f32 tensor holds f32");
    let mut kept = Vec::with_capacity(keep.len());
    let mut buffers = Buffers::default();
    let eps = norm_eps as f32;
    for (i, p) in params.iter().enumerate() {
        p.view().forward(&mut rows, t, eps, &mut buffers);
        if keep.contains(&i) {
            kept.push((i, rows.clone()));
        }
    }
    let tensor = |rows: Vec<f32>| -> Tensor<B, 3> {
        // The CPU backend has one device.
        let cpu = Tensor::<CpuBackend, 3>::from_data(
            TensorData::new(rows, [b, t, d]),
            &Default::default(),
        );
        *(Box::new(cpu) as Box<dyn Any>)
            .downcast::<Tensor<B, 3>>()
            .expect("B is the CPU backend (checked above)")
    };
    let kept = kept.into_iter().map(|(i, r)| (i, tensor(r))).collect();
    Ok((tensor(rows), kept))
}

/// The intermediates of one block, reused by every block of a forward.
#[derive(Default)]
struct Buffers {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    heads: Vec<f32>,
    branch: Vec<f32>,
    hidden: Vec<f32>,
    gated: Vec<f32>,
}

fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    &mut buffer[..len]
}

/// A block's parameters as burn-flex tensors (O(1) clones of the parameters' storage).
struct BlockParams {
    norm1: NormParams,
    qkv: LinearParams,
    proj: LinearParams,
    heads: usize,
    ls1: Option<FlexTensor>,
    norm2: NormParams,
    ffn: FfnParams,
    ls2: Option<FlexTensor>,
}

struct NormParams {
    gamma: FlexTensor,
    beta: Option<FlexTensor>,
}

struct LinearParams {
    weight: FlexTensor,
    bias: Option<FlexTensor>,
}

enum FfnParams {
    Mlp(LinearParams, LinearParams),
    SwiGlu(LinearParams, LinearParams, usize),
}

fn flex<const D: usize>(p: &Param<Tensor<CpuBackend, D>>) -> Option<FlexTensor> {
    let t = p.val().into_primitive().tensor();
    (t.dtype() == DType::F32 && t.layout().has_positive_strides()).then_some(t)
}

impl NormParams {
    fn of(n: &LayerNorm<CpuBackend>) -> Option<Self> {
        Some(NormParams {
            gamma: flex(&n.gamma)?,
            beta: optional(n.beta.as_ref())?,
        })
    }
}

impl LinearParams {
    fn of(l: &Linear<CpuBackend>) -> Option<Self> {
        Some(LinearParams {
            weight: flex(&l.weight)?,
            bias: optional(l.bias.as_ref())?,
        })
    }
}

/// An optional parameter: `Some(None)` where absent, `None` where present but not usable.
fn optional(p: Option<&Param<Tensor<CpuBackend, 1>>>) -> Option<Option<FlexTensor>> {
    match p {
        None => Some(None),
        Some(p) => flex(p).map(Some),
    }
}

fn layer_scale(ls: &Option<LayerScale<CpuBackend>>) -> Option<Option<FlexTensor>> {
    optional(ls.as_ref().map(|ls| &ls.gamma))
}

impl BlockParams {
    fn of(block: &Block<CpuBackend>) -> Option<Self> {
        Some(BlockParams {
            norm1: NormParams::of(&block.norm1)?,
            qkv: LinearParams::of(&block.attn.qkv)?,
            proj: LinearParams::of(&block.attn.proj)?,
            heads: block.attn.num_heads,
            ls1: layer_scale(&block.ls1)?,
            norm2: NormParams::of(&block.norm2)?,
            ffn: match &block.mlp {
                Ffn::Mlp(m) => FfnParams::Mlp(LinearParams::of(&m.fc1)?, LinearParams::of(&m.fc2)?),
                Ffn::SwiGlu(s) => FfnParams::SwiGlu(
                    LinearParams::of(&s.w12)?,
                    LinearParams::of(&s.w3)?,
                    s.hidden,
                ),
            },
            ls2: layer_scale(&block.ls2)?,
        })
    }

    /// The model width, from the qkv weight ([D, 3D]).
    fn dim(&self) -> usize {
        self.qkv.weight.layout().shape()[0]
    }

    fn view(&self) -> BlockView<'_> {
        BlockView {
            norm1: self.norm1.view(),
            qkv: self.qkv.view(),
            proj: self.proj.view(),
            heads: self.heads,
            ls1: self.ls1.as_ref().map(vector),
            norm2: self.norm2.view(),
            ffn: match &self.ffn {
                FfnParams::Mlp(fc1, fc2) => FfnView::Mlp(fc1.view(), fc2.view()),
                FfnParams::SwiGlu(w12, w3, hidden) => {
                    FfnView::SwiGlu(w12.view(), w3.view(), *hidden)
                }
            },
            ls2: self.ls2.as_ref().map(vector),
        }
    }
}

impl NormParams {
    fn view(&self) -> NormView<'_> {
        NormView {
            gamma: vector(&self.gamma),
            beta: self.beta.as_ref().map(vector),
        }
    }
}

impl LinearParams {
    fn view(&self) -> LinearView<'_> {
        let layout = self.weight.layout();
        let (rows, cols, row_stride, col_stride) =
            layout.as_2d_strides().expect("a linear weight is 2-D");
        LinearView {
            weight: &self.weight.storage::<f32>()[layout.start_offset()..],
            d_in: rows,
            d_out: cols,
            row_stride,
            col_stride,
            bias: self.bias.as_ref().map(vector),
        }
    }
}

/// A 1-D parameter's elements (copied once where its layout is not contiguous).
fn vector(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.layout().contiguous_offsets() {
        Some((start, end)) => std::borrow::Cow::Borrowed(&t.storage::<f32>()[start..end]),
        None => std::borrow::Cow::Owned(
            t.clone()
                .into_data()
                .into_vec::<f32>()
                .expect("checked f32"),
        ),
    }
}

type Vector<'a> = std::borrow::Cow<'a, [f32]>;

struct NormView<'a> {
    gamma: Vector<'a>,
    beta: Option<Vector<'a>>,
}

/// `x · W + b` with W [d_in, d_out] read through its strides, from `weight[0]`.
struct LinearView<'a> {
    weight: &'a [f32],
    d_in: usize,
    d_out: usize,
    row_stride: isize,
    col_stride: isize,
    bias: Option<Vector<'a>>,
}

enum FfnView<'a> {
    Mlp(LinearView<'a>, LinearView<'a>),
    SwiGlu(LinearView<'a>, LinearView<'a>, usize),
}

struct BlockView<'a> {
    norm1: NormView<'a>,
    qkv: LinearView<'a>,
    proj: LinearView<'a>,
    heads: usize,
    ls1: Option<Vector<'a>>,
    norm2: NormView<'a>,
    ffn: FfnView<'a>,
    ls2: Option<Vector<'a>>,
}

impl BlockView<'_> {
    /// `x + ls1 · proj(attn(norm1(x)))`, then `x + ls2 · ffn(norm2(x))`, on `x` [B·T, D] in
    /// place.
    fn forward(&self, x: &mut [f32], t: usize, eps: f32, buffers: &mut Buffers) {
        let d = self.qkv.d_in;
        let n = x.len() / d;
        let normed = sized(&mut buffers.normed, n * d);
        self.norm1.apply(x, normed, eps);
        let qkv = sized(&mut buffers.qkv, n * 3 * d);
        self.qkv.product(normed, qkv);
        add_bias(qkv, self.qkv.bias.as_deref());
        let heads = sized(&mut buffers.heads, n * d);
        attend_rows(qkv, t, d, self.heads, heads);
        let branch = sized(&mut buffers.branch, n * d);
        self.proj.product(heads, branch);
        add_residual(x, branch, d, self.proj.bias.as_deref(), self.ls1.as_deref());

        self.norm2.apply(x, normed, eps);
        let (hidden, out) = match &self.ffn {
            FfnView::Mlp(fc1, fc2) => {
                let hidden = sized(&mut buffers.hidden, n * fc1.d_out);
                fc1.product(normed, hidden);
                add_bias_gelu(hidden, fc1.bias.as_deref());
                (&*hidden, fc2)
            }
            FfnView::SwiGlu(w12, w3, h) => {
                let both = sized(&mut buffers.hidden, n * w12.d_out);
                w12.product(normed, both);
                let gated = sized(&mut buffers.gated, n * h);
                swiglu(both, w12.bias.as_deref(), gated, *h);
                (&*gated, w3)
            }
        };
        out.product(hidden, branch);
        add_residual(x, branch, d, out.bias.as_deref(), self.ls2.as_deref());
    }
}

impl NormView<'_> {
    /// Layer norm of every row of `x` into `out` (mean and biased variance over the row, as
    /// burn's and PyTorch's).
    fn apply(&self, x: &[f32], out: &mut [f32], eps: f32) {
        let d = self.gamma.len();
        let (gamma, beta) = (&*self.gamma, self.beta.as_deref());
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(out, x)| {
                for (o, x) in out.chunks_mut(d).zip(x.chunks(d)) {
                    let mean = x.iter().sum::<f32>() / d as f32;
                    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                    let inv = 1.0 / (var + eps).sqrt();
                    match beta {
                        Some(beta) => {
                            for (((o, x), g), b) in o.iter_mut().zip(x).zip(gamma).zip(beta) {
                                *o = (x - mean) * inv * g + b;
                            }
                        }
                        None => {
                            for ((o, x), g) in o.iter_mut().zip(x).zip(gamma) {
                                *o = (x - mean) * inv * g;
                            }
                        }
                    }
                }
            });
    }
}

impl LinearView<'_> {
    /// `out` [N, d_out] = `x` [N, d_in] · W (no bias: the caller's pass after adds it).
    fn product(&self, x: &[f32], out: &mut [f32]) {
        let n = x.len() / self.d_in;
        assert!(x.len() == n * self.d_in && out.len() == n * self.d_out);
        let last = (self.d_in.max(1) - 1) as isize * self.row_stride
            + (self.d_out.max(1) - 1) as isize * self.col_stride;
        assert!((last as usize) < self.weight.len());
        // Parallel above burn-flex's threshold (~7M multiply-adds), as burn-flex decides.
        let parallelism = match n * self.d_in * self.d_out >= 192 * 192 * 192 {
            true => Parallelism::Rayon(0),
            false => Parallelism::None,
        };
        // SAFETY: x is [n, d_in] row-major, out [n, d_out] row-major (lengths checked above);
        // every weight element read, (i, j) -> i * row_stride + j * col_stride with i < d_in,
        // j < d_out, lies inside `weight` (the largest is checked above; strides are >= 0).
        unsafe {
            gemm(
                n,
                self.d_out,
                self.d_in,
                out.as_mut_ptr(),
                1,
                self.d_out as isize,
                false,
                x.as_ptr(),
                1,
                self.d_in as isize,
                self.weight.as_ptr(),
                self.col_stride,
                self.row_stride,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

/// `rows[i] += bias` for every row.
fn add_bias(rows: &mut [f32], bias: Option<&[f32]>) {
    let Some(bias) = bias else { return };
    rows.par_chunks_mut(bias.len() * ROWS_PER_TASK)
        .for_each(|rows| {
            for row in rows.chunks_mut(bias.len()) {
                row.iter_mut().zip(bias).for_each(|(r, b)| *r += b);
            }
        });
}

/// `rows[i] = GELU(rows[i] + bias)` for every row.
fn add_bias_gelu(rows: &mut [f32], bias: Option<&[f32]>) {
    let Some(bias) = bias else {
        return rows.par_chunks_mut(4096).for_each(gelu_in_place);
    };
    rows.par_chunks_mut(bias.len() * ROWS_PER_TASK)
        .for_each(|rows| {
            for row in rows.chunks_mut(bias.len()) {
                row.iter_mut().zip(bias).for_each(|(r, b)| *r += b);
                gelu_in_place(row);
            }
        });
}

/// SwiGLU's `silu(gate) · value` of every row of `both` [N, 2H] (plus its bias) into `out`
/// [N, H].
fn swiglu(both: &[f32], bias: Option<&[f32]>, out: &mut [f32], h: usize) {
    out.par_chunks_mut(h * ROWS_PER_TASK)
        .zip(both.par_chunks(2 * h * ROWS_PER_TASK))
        .for_each(|(out, both)| {
            for (o, row) in out.chunks_mut(h).zip(both.chunks(2 * h)) {
                for (c, o) in o.iter_mut().enumerate() {
                    let (mut g, mut v) = (row[c], row[h + c]);
                    if let Some(b) = bias {
                        g += b[c];
                        v += b[h + c];
                    }
                    *o = g / (1.0 + (-g).exp()) * v;
                }
            }
        });
}

/// `x += ls ⊙ (branch + bias)` for every row of width `d` (LayerScale `ls` and `bias` where
/// present).
fn add_residual(x: &mut [f32], branch: &[f32], d: usize, bias: Option<&[f32]>, ls: Option<&[f32]>) {
    x.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(branch.par_chunks(d * ROWS_PER_TASK))
        .for_each(|(x, branch)| {
            for (x, y) in x.chunks_mut(d).zip(branch.chunks(d)) {
                match (bias, ls) {
                    (Some(b), Some(g)) => {
                        for (((x, y), b), g) in x.iter_mut().zip(y).zip(b).zip(g) {
                            *x += (y + b) * g;
                        }
                    }
                    (Some(b), None) => {
                        for ((x, y), b) in x.iter_mut().zip(y).zip(b) {
                            *x += y + b;
                        }
                    }
                    (None, Some(g)) => {
                        for ((x, y), g) in x.iter_mut().zip(y).zip(g) {
                            *x += y * g;
                        }
                    }
                    (None, None) => x.iter_mut().zip(y).for_each(|(x, y)| *x += y),
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vit::{FfnConfig, MatmulPrecision, VisionTransformer, VitConfig};
    use burn::tensor::Distribution;

    fn random<const D: usize>(shape: [usize; D]) -> Param<Tensor<CpuBackend, D>> {
        let t = Tensor::random(shape, Distribution::Normal(0.0, 0.5), &Default::default());
        Param::from_tensor(t)
    }

    /// Random values in every bias, norm and LayerScale (init gives zeros and ones).
    fn randomise(model: &mut VisionTransformer<CpuBackend>) {
        let vector = |p: &mut Param<Tensor<CpuBackend, 1>>| *p = random([p.dims()[0]]);
        let linear = |l: &mut Linear<CpuBackend>| {
            if let Some(b) = l.bias.as_mut() {
                vector(b)
            }
        };
        let norm = |n: &mut LayerNorm<CpuBackend>| {
            vector(&mut n.gamma);
            if let Some(b) = n.beta.as_mut() {
                vector(b)
            }
        };
        for block in &mut model.blocks {
            norm(&mut block.norm1);
            norm(&mut block.norm2);
            linear(&mut block.attn.qkv);
            linear(&mut block.attn.proj);
            match &mut block.mlp {
                Ffn::Mlp(m) => {
                    linear(&mut m.fc1);
                    linear(&mut m.fc2);
                }
                Ffn::SwiGlu(s) => {
                    linear(&mut s.w12);
                    linear(&mut s.w3);
                }
            }
            for ls in [&mut block.ls1, &mut block.ls2].into_iter().flatten() {
                vector(&mut ls.gamma);
            }
        }
    }

    /// The fused CPU blocks against burn's ops (`Block::forward`), block by block.
    fn compare(cfg: VitConfig) {
        let device = Default::default();
        let mut model = VisionTransformer::<CpuBackend>::init(&cfg, &device);
        randomise(&mut model);
        let x = Tensor::<CpuBackend, 3>::random(
            [3, 17, cfg.embed_dim],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let mut want = x.clone();
        let mut wants = vec![];
        for block in &model.blocks {
            want = block.forward(want, MatmulPrecision::Backend);
            wants.push(want.clone());
        }
        let (got, kept) = forward_blocks(&model.blocks, x, cfg.norm_eps, &[1, 0])
            .map_err(|_| ())
            .expect("the CPU path applies");
        let worst = |a: Tensor<CpuBackend, 3>, b: &Tensor<CpuBackend, 3>| -> f32 {
            let scale = b.clone().abs().max().into_scalar();
            a.sub(b.clone()).abs().max().into_scalar() / scale
        };
        let last = worst(got, wants.last().unwrap());
        assert!(last < 1e-5, "{last}");
        assert_eq!(kept.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1]);
        for (i, t) in kept {
            let e = worst(t, &wants[i]);
            assert!(e < 1e-5, "block {i}: {e}");
        }
    }

    #[test]
    fn fused_blocks_match_burns_ops_with_layer_scale_and_gelu() {
        compare(VitConfig::tiny("vits14", 32, 4, 4));
    }

    #[test]
    fn fused_blocks_match_burns_ops_with_swiglu_and_no_biases_or_layer_scale() {
        let mut cfg = VitConfig::tiny("vitg14", 48, 4, 4);
        assert!(matches!(cfg.ffn, FfnConfig::SwiGlu { .. }));
        (cfg.layer_scale, cfg.qkv_bias, cfg.proj_bias, cfg.ffn_bias) = (false, false, false, false);
        compare(cfg);
    }

    #[test]
    fn other_backends_take_the_burn_path() {
        type Ad = burn::backend::Autodiff<CpuBackend>;
        let cfg = VitConfig::tiny("vits14", 32, 4, 4);
        let model = VisionTransformer::<Ad>::init(&cfg, &Default::default());
        let x = Tensor::<Ad, 3>::zeros([1, 5, 32], &Default::default());
        assert!(forward_blocks(&model.blocks, x, cfg.norm_eps, &[]).is_err());
    }
}
