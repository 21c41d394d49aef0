//! The token layout every dense head reads, and the resampling they share.
//!
//! Heads take `tokens` shaped `[batch, layers, 1 + patches, dim]`: for each chosen backbone layer
//! the class token followed by the patch tokens in row-major grid order (register tokens are
//! dropped: no head uses them). `grid` is the (rows, cols) patch grid.

use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::Tensor;

/// Patch tokens of layer `l` as a feature map: [batch, dim, rows, cols].
pub fn patch_map<B: Backend>(
    tokens: &Tensor<B, 4>,
    layer: usize,
    grid: (usize, usize),
) -> Tensor<B, 4> {
    let [b, _, t, d] = tokens.dims();
    tokens
        .clone()
        .narrow(1, layer, 1)
        .narrow(2, 1, t - 1)
        .reshape([b, t - 1, d])
        .swap_dims(1, 2)
        .reshape([b, d, grid.0, grid.1])
}

/// The class token of layer `l`: [batch, dim].
pub fn class_token<B: Backend>(tokens: &Tensor<B, 4>, layer: usize) -> Tensor<B, 2> {
    let [b, _, _, d] = tokens.dims();
    tokens
        .clone()
        .narrow(1, layer, 1)
        .narrow(2, 0, 1)
        .reshape([b, d])
}

/// Bilinear resampling of `x` [b, c, h, w] to `size` (half-pixel centres, as PyTorch's
/// `F.interpolate(..., mode="bilinear", align_corners=False)`).
pub fn resize<B: Backend>(x: Tensor<B, 4>, size: (usize, usize)) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    if (h, w) == size {
        return x;
    }
    interpolate(
        x,
        [size.0, size.1],
        InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn patch_tokens_fold_row_major_into_the_grid() {
        // 1 image, 2 layers, cls + 2x3 patches, dim 2; value = 100 * layer + 10 * token + channel.
        let (l, t, d) = (2, 7, 2);
        let data: Vec<f32> = (0..l * t * d)
            .map(|i| (100 * (i / (t * d)) + 10 * ((i / d) % t) + i % d) as f32)
            .collect();
        let x =
            Tensor::<Flex, 4>::from_data(TensorData::new(data, [1, l, t, d]), &Default::default());
        let m = patch_map(&x, 1, (2, 3));
        assert_eq!(m.dims(), [1, 2, 2, 3]);
        let v = m.into_data().to_vec::<f32>().unwrap();
        // channel 0, row 1, col 0 = patch 3 = token 4 of layer 1.
        assert_eq!(v[3], 140.0);
        // channel 1, row 0, col 2 = patch 2 = token 3.
        assert_eq!(v[6 + 2], 131.0);
        let c = class_token(&x, 0).into_data().to_vec::<f32>().unwrap();
        assert_eq!(c, vec![0.0, 1.0]);
    }
}
