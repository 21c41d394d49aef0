//! A tensor held in host memory as it comes out of a checkpoint file, before it becomes a burn
//! parameter: row-major, contiguous, converted to f32.

/// Tensors by name, in file order.
pub type NamedTensors = Vec<(String, HostTensor)>;

/// A contiguous row-major f32 tensor read from a checkpoint file.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// A burn tensor's values (as f32) under a `shape` of the same size, e.g. the PyTorch
    /// shape of a weight stored in burn's layout.
    pub fn from_tensor<B: burn::tensor::backend::Backend, const D: usize>(
        t: burn::tensor::Tensor<B, D>,
        shape: Vec<usize>,
    ) -> Self {
        let data = t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 data");
        HostTensor::new(shape, data)
    }
}

/// The element types found in checkpoint files; all are converted to f32 on load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StoredDType {
    pub fn size_of(self) -> usize {
        match self {
            StoredDType::F64 | StoredDType::I64 => 8,
            StoredDType::F32 | StoredDType::I32 => 4,
            StoredDType::F16 | StoredDType::BF16 | StoredDType::I16 => 2,
            StoredDType::I8 | StoredDType::U8 | StoredDType::Bool => 1,
        }
    }

    /// Decode one little-endian element to f32.
    pub fn decode(self, b: &[u8]) -> f32 {
        match self {
            StoredDType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            StoredDType::F64 => {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
            StoredDType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            StoredDType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            StoredDType::I64 => {
                i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
            StoredDType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            StoredDType::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
            StoredDType::I8 => b[0] as i8 as f32,
            StoredDType::U8 => b[0] as f32,
            StoredDType::Bool => (b[0] != 0) as u8 as f32,
        }
    }
}

/// Gather a strided view of `storage` (elements of `dtype`, starting at element `offset`) into a
/// contiguous f32 tensor.
pub fn gather_strided(
    storage: &[u8],
    dtype: StoredDType,
    offset: usize,
    shape: &[usize],
    strides: &[usize],
) -> Option<Vec<f32>> {
    let n: usize = shape.iter().product();
    let es = dtype.size_of();
    // Bounds check: the largest element touched.
    if n > 0 {
        let last = offset
            + shape
                .iter()
                .zip(strides)
                .map(|(d, s)| (d - 1) * s)
                .sum::<usize>();
        if (last + 1) * es > storage.len() {
            return None;
        }
    }
    let mut out = Vec::with_capacity(n);
    let contiguous = {
        let mut expect = 1usize;
        let mut ok = true;
        for (d, s) in shape.iter().zip(strides).rev() {
            if *d != 1 && *s != expect {
                ok = false;
                break;
            }
            expect *= d;
        }
        ok
    };
    if contiguous {
        let bytes = &storage[offset * es..(offset + n) * es];
        out.extend(bytes.chunks_exact(es).map(|c| dtype.decode(c)));
        return Some(out);
    }
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        let e = offset + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        out.push(dtype.decode(&storage[e * es..(e + 1) * es]));
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_a_transposed_view() {
        let storage: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        // A (2,3) tensor stored row-major, viewed transposed as (3,2) with strides (1,3).
        let t = gather_strided(&storage, StoredDType::F32, 0, &[3, 2], &[1, 3]).unwrap();
        assert_eq!(t, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert!(gather_strided(&storage, StoredDType::F32, 1, &[2, 3], &[3, 1]).is_none());
    }

    #[test]
    fn decodes_half_precision() {
        let b = half::bf16::from_f32(1.5).to_le_bytes();
        assert_eq!(StoredDType::BF16.decode(&b), 1.5);
        let h = half::f16::from_f32(-2.25).to_le_bytes();
        assert_eq!(StoredDType::F16.decode(&h), -2.25);
    }
}
