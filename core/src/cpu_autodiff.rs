//! The training student's tensors on the CPU backend as burn-autodiff's own, for the operations
//! that carry their own backward pass there (attention, LayerNorm and GELU in [`crate::vit`], the
//! soft cross-entropies in [`crate::objective`]): the model is generic over its backend, and these helpers
//! recognise `Autodiff<CpuBackend>` by its type and move tensors between the two spellings of
//! that one type (no copies, no `unsafe`).

use std::any::{Any, TypeId};
use std::borrow::Cow;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_flex::FlexTensor;

use crate::backend::CpuBackend;

/// The training student's backend on the CPU.
pub(crate) type CpuAutodiff = Autodiff<CpuBackend>;

/// A float tensor of [`CpuAutodiff`]: the CPU tensor (`primitive`) and its graph node.
pub(crate) type AutodiffTensor = FloatTensor<CpuAutodiff>;

/// Whether `x` is an f32 tensor of the CPU backend under autodiff.
pub(crate) fn is_cpu_autodiff<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    TypeId::of::<B>() == TypeId::of::<CpuAutodiff>() && x.dtype() == DType::F32
}

/// `x` as the autodiff tensor it is; only for `x` where [`is_cpu_autodiff`] holds.
pub(crate) fn to_autodiff<B: Backend, const D: usize>(x: Tensor<B, D>) -> AutodiffTensor {
    let primitive: Box<dyn Any> = Box::new(x.into_primitive().tensor());
    *primitive
        .downcast::<AutodiffTensor>()
        .expect("B is Autodiff<CpuBackend>")
}

/// The inverse of [`to_autodiff`].
pub(crate) fn from_autodiff<B: Backend, const D: usize>(x: AutodiffTensor) -> Tensor<B, D> {
    let primitive: Box<dyn Any> = Box::new(x);
    let primitive = *primitive
        .downcast::<FloatTensor<B>>()
        .expect("B is Autodiff<CpuBackend>");
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// The elements of an f32 tensor in row-major order: borrowed where they lie that way in its
/// buffer, else copied once.
pub(crate) fn row_major(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.layout().contiguous_offsets() {
        Some((start, end)) => Cow::Borrowed(&t.storage::<f32>()[start..end]),
        None => Cow::Owned(
            t.to_contiguous()
                .into_data()
                .into_vec::<f32>()
                .expect("an f32 tensor holds f32"),
        ),
    }
}

/// A contiguous f32 tensor of `shape` from its elements.
pub(crate) fn flex_tensor(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(burn::tensor::TensorData::new(values, shape.to_vec()))
}
