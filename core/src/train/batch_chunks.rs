//! The student backbone run as chunks of the batch, one per thread, each chunk in its own
//! autodiff graph.
//!
//! burn-flex 0.21 runs element-wise ops, copies and attention on one thread each; only the
//! matmuls, softmax and reductions use every core. A whole-batch forward and backward of the
//! student therefore leaves the second core of a 2-core machine idle for much of the iteration.
//! So the batch is split by image:
//!
//! 1. each chunk (both global crops and the local crops of a contiguous range of images) goes
//!    through its own copy of the backbone (the same weights as fresh autodiff leaves), all
//!    chunks at once;
//! 2. their final tokens, joined back in batch order, enter the objective's graph as leaves:
//!    the heads and losses run once over the whole batch (Sinkhorn-Knopp, KoLeo and the iBOT
//!    normalisation need all of it);
//! 3. after the objective's backward, each chunk backpropagates the gradient of its tokens
//!    through its own graph, all chunks at once; the backbone's gradient is the sum over chunks.
//!
//! The losses and gradients are those of the whole-batch pass, summed in another order.
//! Stochastic depth draws are keyed by image, so a chunk draws for its images what the whole
//! batch draws for them, and runs repeat.

use std::ops::Range;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use rayon::prelude::*;

use super::ssl::{crop_features, CropBatch, CropForward};
use crate::vit::stochastic_depth::{with_image_draws, ImageSpan};
use crate::vit::VisionTransformer;

/// The final tokens of a set of images: global class tokens [2b, D], global patch tokens
/// [2b, N, D] and local class tokens [L b, D], in the crop-major order of [`CropBatch`].
#[derive(Debug, Clone)]
pub struct CropTokens<B: Backend> {
    pub cls: Tensor<B, 2>,
    pub patches: Tensor<B, 3>,
    pub local: Option<Tensor<B, 2>>,
}

/// Contiguous image ranges of a batch of `images`, and where each range's crops sit in the
/// crop-major batch.
#[derive(Debug, Clone, PartialEq)]
struct ImageChunks {
    ranges: Vec<Range<usize>>,
    images: usize,
    local_crops: usize,
}

impl ImageChunks {
    /// At most `chunks` ranges of near-equal size (never an empty one).
    fn new(images: usize, local_crops: usize, chunks: usize) -> Self {
        let k = chunks.clamp(1, images.max(1));
        let ranges = (0..k)
            .map(|s| s * images / k..(s + 1) * images / k)
            .collect();
        ImageChunks {
            ranges,
            images,
            local_crops,
        }
    }

    fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Batch rows of chunk `s` when each image has `crops` crops, laid crop-major.
    fn rows(&self, s: usize, crops: usize) -> Vec<i64> {
        (0..crops)
            .flat_map(|c| {
                self.ranges[s]
                    .clone()
                    .map(move |i| (c * self.images + i) as i64)
            })
            .collect()
    }

    /// For each batch row, its position in the chunks' rows laid end to end.
    fn joined_order(&self, crops: usize) -> Vec<i64> {
        let mut order = vec![0i64; crops * self.images];
        let concatenated = (0..self.len()).flat_map(|s| self.rows(s, crops));
        for (position, row) in concatenated.enumerate() {
            order[row as usize] = position as i64;
        }
        order
    }
}

fn take<B: Backend, const D: usize>(x: Tensor<B, D>, rows: Vec<i64>) -> Tensor<B, D> {
    let n = rows.len();
    let device = x.device();
    x.select(
        0,
        Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &device),
    )
}

/// The chunks' rows laid end to end, put back in batch order.
fn join<B: Backend, const D: usize>(parts: Vec<Tensor<B, D>>, order: Vec<i64>) -> Tensor<B, D> {
    take(Tensor::cat(parts, 0), order)
}

/// The crops of chunk `s`, with the iBOT mask of its global crops.
fn chunk_inputs<B: Backend>(
    plan: &ImageChunks,
    batch: &CropBatch<B>,
    mask: &Tensor<B, 2, Bool>,
    s: usize,
) -> (Tensor<B, 4>, Tensor<B, 2, Bool>, Option<Tensor<B, 4>>) {
    let global = plan.rows(s, 2);
    let n = global.len();
    let device = batch.global.device();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(global, [n]), &device);
    let local = batch
        .local
        .clone()
        .map(|l| take(l, plan.rows(s, plan.local_crops)));
    (
        batch.global.clone().select(0, index.clone()),
        mask.clone().select(0, index),
        local,
    )
}

fn forward<B: Backend>(
    backbone: &VisionTransformer<B>,
    global: Tensor<B, 4>,
    mask: Tensor<B, 2, Bool>,
    local: Option<Tensor<B, 4>>,
    crops: CropForward,
) -> CropTokens<B> {
    let (g, l) = crop_features(backbone, global, mask, local, crops);
    CropTokens {
        cls: g.cls(),
        patches: g.patches(),
        local: l.map(|l| l.cls()),
    }
}

/// The chunks' tokens joined in batch order.
fn join_tokens<B: Backend>(plan: &ImageChunks, parts: Vec<CropTokens<B>>) -> CropTokens<B> {
    let (mut cls, mut patches, mut local) = (Vec::new(), Vec::new(), Vec::new());
    for p in parts {
        cls.push(p.cls);
        patches.push(p.patches);
        local.extend(p.local);
    }
    let global = plan.joined_order(2);
    CropTokens {
        cls: join(cls, global.clone()),
        patches: join(patches, global),
        local: (!local.is_empty()).then(|| join(local, plan.joined_order(plan.local_crops))),
    }
}

/// A backbone outside any autodiff graph (the head warm-up) over `chunks` chunks at once.
pub fn frozen_tokens<B: Backend>(
    backbone: &VisionTransformer<B>,
    batch: &CropBatch<B>,
    mask: Tensor<B, 2, Bool>,
    crops: CropForward,
    chunks: usize,
) -> CropTokens<B> {
    let plan = ImageChunks::new(batch.images(), batch.local_crops(), chunks);
    let parts = (0..plan.len())
        .into_par_iter()
        .map(|s| {
            let (g, m, l) = chunk_inputs(&plan, batch, &mask, s);
            forward(backbone, g, m, l, crops)
        })
        .collect();
    join_tokens(&plan, parts)
}

/// One chunk's copy of the backbone and its tokens, in the chunk's own graph.
struct ChunkGraph<B: AutodiffBackend> {
    backbone: VisionTransformer<B>,
    tokens: CropTokens<B>,
}

/// The student backbone's forward over chunks, waiting for the objective's gradient.
pub struct ChunkedStudent<B: AutodiffBackend> {
    plan: ImageChunks,
    graphs: Vec<ChunkGraph<B>>,
    /// The joined tokens: leaves of the objective's graph.
    pub tokens: CropTokens<B>,
}

impl<B: AutodiffBackend> ChunkedStudent<B> {
    /// Step 1: the chunks forward, concurrently; `seed` seeds their stochastic depth, keyed by
    /// image of `span` (the batch's images): every image draws what the whole batch draws.
    pub fn forward(
        backbone: &VisionTransformer<B>,
        batch: &CropBatch<B::InnerBackend>,
        mask: Tensor<B::InnerBackend, 2, Bool>,
        crops: CropForward,
        chunks: usize,
        seed: u64,
        span: ImageSpan,
    ) -> Self {
        let plan = ImageChunks::new(batch.images(), batch.local_crops(), chunks);
        let graphs: Vec<ChunkGraph<B>> = (0..plan.len())
            .into_par_iter()
            .map(|s| {
                // (`valid()` per chunk: a clone of the inner module would forget which
                // parameters take gradients.)
                let copy = VisionTransformer::<B>::from_inner(backbone.valid());
                let (g, m, l) = chunk_inputs(&plan, batch, &mask, s);
                let images = plan.ranges[s].clone();
                let chunk = ImageSpan {
                    first: span.first + images.start,
                    count: images.len(),
                };
                let tokens = with_image_draws(seed, chunk, || {
                    forward(
                        &copy,
                        Tensor::from_inner(g),
                        Tensor::from_inner(m),
                        l.map(Tensor::from_inner),
                        crops,
                    )
                });
                ChunkGraph {
                    backbone: copy,
                    tokens,
                }
            })
            .collect();
        let inner = graphs
            .iter()
            .map(|g| CropTokens {
                cls: g.tokens.cls.clone().inner(),
                patches: g.tokens.patches.clone().inner(),
                local: g.tokens.local.clone().map(|l| l.inner()),
            })
            .collect();
        let joined = join_tokens(&plan, inner);
        let tokens = CropTokens {
            cls: Tensor::from_inner(joined.cls).require_grad(),
            patches: Tensor::from_inner(joined.patches).require_grad(),
            local: joined.local.map(|l| Tensor::from_inner(l).require_grad()),
        };
        ChunkedStudent {
            plan,
            graphs,
            tokens,
        }
    }

    /// Step 3: the gradients of the joined tokens (taken out of `grads`) through every chunk's
    /// graph, concurrently; the backbone's gradients summed over chunks.
    pub fn backward(self, grads: &mut B::Gradients) -> GradientsParams {
        let ChunkedStudent {
            plan,
            graphs,
            tokens,
        } = self;
        let g_cls = tokens.cls.grad_remove(grads);
        let g_patches = tokens.patches.grad_remove(grads);
        let g_local = tokens.local.and_then(|l| l.grad_remove(grads));
        let parts: Vec<(VisionTransformer<B>, GradientsParams)> = graphs
            .into_par_iter()
            .enumerate()
            .map(|(s, graph)| {
                let global = plan.rows(s, 2);
                let mut terms: Vec<Tensor<B, 1>> = Vec::new();
                if let Some(g) = &g_cls {
                    let g = Tensor::from_inner(take(g.clone(), global.clone()));
                    terms.push((graph.tokens.cls * g).sum());
                }
                if let Some(g) = &g_patches {
                    let g = Tensor::from_inner(take(g.clone(), global));
                    terms.push((graph.tokens.patches * g).sum());
                }
                if let (Some(g), Some(l)) = (&g_local, graph.tokens.local) {
                    let g = Tensor::from_inner(take(g.clone(), plan.rows(s, plan.local_crops)));
                    terms.push((l * g).sum());
                }
                let grads = match terms.into_iter().reduce(|a, b| a + b) {
                    Some(proxy) => GradientsParams::from_grads(proxy.backward(), &graph.backbone),
                    None => GradientsParams::new(),
                };
                (graph.backbone, grads)
            })
            .collect();
        let mut total = GradientsParams::new();
        for (backbone, part) in parts {
            add_gradients::<B, _>(&backbone, part, &mut total);
        }
        total
    }
}

/// Adds the gradients of a module's parameters from one set into another.
struct AddInto<'a, B: AutodiffBackend> {
    from: GradientsParams,
    into: &'a mut GradientsParams,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for AddInto<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.from.remove::<B::InnerBackend, D>(param.id) {
            let sum = match self.into.remove::<B::InnerBackend, D>(param.id) {
                Some(acc) => acc + g,
                None => g,
            };
            self.into.register(param.id, sum);
        }
    }
}

/// Move `module`'s gradients from `from` into `into` (adding where both have one).
pub fn add_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    from: GradientsParams,
    into: &mut GradientsParams,
) {
    module.visit(&mut AddInto::<B> {
        from,
        into,
        _b: std::marker::PhantomData,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_batch_and_join_back_in_order() {
        let plan = ImageChunks::new(5, 3, 2);
        assert_eq!(plan.ranges, vec![0..2, 2..5]);
        assert_eq!(plan.rows(0, 2), vec![0, 1, 5, 6]);
        assert_eq!(plan.rows(1, 2), vec![2, 3, 4, 7, 8, 9]);
        // Laid end to end: [0 1 5 6 | 2 3 4 7 8 9]; row r sits at order[r].
        assert_eq!(plan.joined_order(2), vec![0, 1, 4, 5, 6, 2, 3, 7, 8, 9]);
        let mut all: Vec<i64> = (0..plan.len()).flat_map(|s| plan.rows(s, 3)).collect();
        all.sort();
        assert_eq!(all, (0..15).collect::<Vec<_>>());
        assert_eq!(ImageChunks::new(1, 0, 4).ranges, vec![0..1]);
        assert_eq!(ImageChunks::new(4, 0, 0).ranges, vec![0..4]);
    }
}
