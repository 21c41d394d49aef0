//! Reading and writing safetensors files as host tensors.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::error::CheckpointError;
use super::host_tensor::{HostTensor, NamedTensors, StoredDType};

const FORMAT: &str = "safetensors";

/// True when the bytes look like a safetensors header (little-endian length + '{').
pub fn looks_like_safetensors(prefix: &[u8]) -> bool {
    prefix.len() >= 9 && prefix[8] == b'{'
}

fn stored_dtype(dtype: Dtype) -> Option<StoredDType> {
    Some(match dtype {
        Dtype::F32 => StoredDType::F32,
        Dtype::F64 => StoredDType::F64,
        Dtype::F16 => StoredDType::F16,
        Dtype::BF16 => StoredDType::BF16,
        Dtype::I64 => StoredDType::I64,
        Dtype::I32 => StoredDType::I32,
        Dtype::I16 => StoredDType::I16,
        Dtype::I8 => StoredDType::I8,
        Dtype::U8 => StoredDType::U8,
        Dtype::BOOL => StoredDType::Bool,
        _ => return None,
    })
}

/// Why `bytes` are not a safetensors file, in words: a cut-off file says "truncated" with the
/// sizes, not the parser's "invalid header length" / "incomplete metadata".
fn safetensors_reason(bytes: &[u8], e: safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    let len = bytes.len();
    let header = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    match (e, header) {
        (E::HeaderTooSmall, _) | (_, None) => {
            format!("truncated: {len} bytes, fewer than the 8 of a safetensors length prefix")
        }
        (E::InvalidHeaderLength, Some(n)) => format!(
            "truncated (or not safetensors): the header is {n} bytes, the file {len} in all"
        ),
        (E::MetadataIncompleteBuffer, _) => {
            format!("truncated: its header lists more tensor data than the {len}-byte file holds")
        }
        (other, _) => other.to_string(),
    }
}

/// Every tensor of a safetensors file as f32 (in name order), and its `__metadata__`.
pub fn read_safetensors(
    path: &Path,
) -> Result<(NamedTensors, HashMap<String, String>), CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::io(path, e))?;
    let bad = |e| CheckpointError::malformed(path, FORMAT, safetensors_reason(&bytes, e));
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(bad)?;
    let st = SafeTensors::deserialize(&bytes).map_err(bad)?;
    let mut out = Vec::with_capacity(st.len());
    let mut names = st.names();
    names.sort();
    for name in names {
        let view = st
            .tensor(name)
            .map_err(|e| CheckpointError::malformed(path, FORMAT, e.to_string()))?;
        let dtype = stored_dtype(view.dtype()).ok_or_else(|| CheckpointError::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "tensor `{name}` has dtype {:?}, which dinoadapt does not read; convert the \
                 checkpoint to float32, float16 or bfloat16",
                view.dtype()
            ),
        })?;
        let data = view
            .data()
            .chunks_exact(dtype.size_of())
            .map(|c| dtype.decode(c))
            .collect();
        out.push((
            name.to_string(),
            HostTensor::new(view.shape().to_vec(), data),
        ));
    }
    let metadata = meta.metadata().clone().unwrap_or_default();
    Ok((out, metadata))
}

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    /// Byte range in the file.
    pub bytes: std::ops::Range<u64>,
}

/// The JSON header of a safetensors file and its size and the file's, reading nothing else.
fn read_header(
    path: &Path,
) -> Result<(serde_json::Map<String, serde_json::Value>, u64, u64), CheckpointError> {
    use std::io::Read;
    let bad = |reason: String| CheckpointError::malformed(path, FORMAT, reason);
    let mut file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| CheckpointError::io(path, e))?;
    let len = u64::from_le_bytes(len);
    let size = file
        .metadata()
        .map_err(|e| CheckpointError::io(path, e))?
        .len();
    if len > size.saturating_sub(8) || len > 100 << 20 {
        return Err(bad(format!("header of {len} bytes in a file of {size}")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| CheckpointError::io(path, e))?;
    let header = serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    Ok((header, len, size))
}

/// The `__metadata__` of a safetensors file, reading only its header (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>, CheckpointError> {
    let (header, _, _) = read_header(path)?;
    match header.get("__metadata__") {
        None => Ok(HashMap::new()),
        Some(m) => serde_json::from_value(m.clone())
            .map_err(|e| CheckpointError::malformed(path, FORMAT, format!("__metadata__: {e}"))),
    }
}

/// The entry of tensor `name` from a safetensors file's header, reading nothing else; `None`
/// when the file has no such tensor.
pub fn tensor_entry(path: &Path, name: &str) -> Result<Option<TensorEntry>, CheckpointError> {
    let bad = |reason: String| CheckpointError::malformed(path, FORMAT, reason);
    let (header, len, size) = read_header(path)?;
    let Some(entry) = header.get(name) else {
        return Ok(None);
    };
    let dtype: Dtype = serde_json::from_value(entry["dtype"].clone())
        .map_err(|e| bad(format!("`{name}` dtype: {e}")))?;
    let shape: Vec<usize> = serde_json::from_value(entry["shape"].clone())
        .map_err(|e| bad(format!("`{name}` shape: {e}")))?;
    let [start, end]: [u64; 2] = serde_json::from_value(entry["data_offsets"].clone())
        .map_err(|e| bad(format!("`{name}` data_offsets: {e}")))?;
    let dtype = stored_dtype(dtype).ok_or_else(|| CheckpointError::Unsupported {
        path: path.to_path_buf(),
        reason: format!("tensor `{name}` has dtype {dtype:?}, which dinoadapt does not read"),
    })?;
    let count: usize = shape.iter().product();
    let data = 8 + len;
    if end < start || end - start != (count * dtype.size_of()) as u64 || data + end > size {
        return Err(bad(format!(
            "`{name}`: offsets {start}..{end} do not hold its shape {shape:?} in a file of \
             {size} bytes"
        )));
    }
    Ok(Some(TensorEntry {
        dtype,
        shape,
        bytes: data + start..data + end,
    }))
}

/// Tensor `name` of a safetensors file as f32, reading only its header and its bytes; `None`
/// when the file has no such tensor.
pub fn read_tensor(path: &Path, name: &str) -> Result<Option<HostTensor>, CheckpointError> {
    use std::io::{Read, Seek, SeekFrom};
    let Some(entry) = tensor_entry(path, name)? else {
        return Ok(None);
    };
    let mut file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    file.seek(SeekFrom::Start(entry.bytes.start))
        .map_err(|e| CheckpointError::io(path, e))?;
    let mut bytes = vec![0u8; (entry.bytes.end - entry.bytes.start) as usize];
    file.read_exact(&mut bytes)
        .map_err(|e| CheckpointError::io(path, e))?;
    let data = bytes
        .chunks_exact(entry.dtype.size_of())
        .map(|c| entry.dtype.decode(c))
        .collect();
    Ok(Some(HostTensor::new(entry.shape, data)))
}

/// Write f32 tensors to a safetensors file atomically (temp file + rename).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, HostTensor)],
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), b, t.shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, b, s)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| CheckpointError::Write {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let data = safetensors::serialize(views, None).map_err(|e| CheckpointError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &with_sorted_metadata(&data, metadata))
}

/// `bytes` (a safetensors file without `__metadata__`) with `metadata` added to its header in key
/// order. The safetensors crate writes `__metadata__` in a `HashMap`'s iteration order, which
/// changes from run to run: the same tensors then gave files with different sha256. Tensor
/// entries and data are kept as written (tensors sorted by name); offsets are relative to the
/// data, so a longer header moves nothing. The header is padded with spaces to 8 bytes, as the
/// format asks.
fn with_sorted_metadata(bytes: &[u8], metadata: HashMap<String, String>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length")) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n])
        .expect("safetensors writes a UTF-8 header")
        .trim_end();
    let body = &bytes[8 + n..];
    let mut out = String::from("{");
    if !metadata.is_empty() {
        let sorted: std::collections::BTreeMap<_, _> = metadata.into_iter().collect();
        out.push_str("\"__metadata__\":");
        out.push_str(&serde_json::to_string(&sorted).expect("strings serialise"));
        if header != "{}" {
            out.push(',');
        }
    }
    out.push_str(&header[1..]);
    while out.len() % 8 != 0 {
        out.push(' ');
    }
    let mut file = Vec::with_capacity(8 + out.len() + body.len());
    file.extend_from_slice(&(out.len() as u64).to_le_bytes());
    file.extend_from_slice(out.as_bytes());
    file.extend_from_slice(body);
    file
}

/// Write bytes to `path` whole or not at all (a temporary file beside it, renamed into place).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    crate::io::write_atomically(path, |w| w.write_all(data)).map_err(|e| CheckpointError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_same_tensors_and_metadata_give_the_same_bytes() {
        let dir = tempfile_dir();
        let tensors = vec![
            ("b".to_string(), HostTensor::new(vec![2], vec![1.0, 2.0])),
            (
                "a".to_string(),
                HostTensor::new(vec![1, 3], vec![3.0, 4.0, 5.0]),
            ),
        ];
        let meta = |order: &[usize]| -> HashMap<String, String> {
            let keys = ["format", "model", "sha256", "layout", "seed", "version"];
            order
                .iter()
                .map(|&i| (keys[i].to_string(), format!("value {i}")))
                .collect()
        };
        let (p1, p2) = (dir.join("1.safetensors"), dir.join("2.safetensors"));
        write_safetensors(&p1, &tensors, meta(&[0, 1, 2, 3, 4, 5])).unwrap();
        write_safetensors(&p2, &tensors, meta(&[5, 3, 1, 0, 4, 2])).unwrap();
        let (b1, b2) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
        assert_eq!(b1, b2);
        let n = u64::from_le_bytes(b1[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let (read, metadata) = read_safetensors(&p1).unwrap();
        assert_eq!(metadata, meta(&[0, 1, 2, 3, 4, 5]));
        let read: HashMap<_, _> = read.into_iter().collect();
        assert_eq!(read["a"], tensors[1].1);
        assert_eq!(read["b"], tensors[0].1);
        // Without metadata the file is what the safetensors crate writes.
        write_safetensors(&p1, &tensors, HashMap::new()).unwrap();
        assert!(read_safetensors(&p1).unwrap().1.is_empty());
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dinoadapt-st-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    use super::*;

    #[test]
    fn one_tensor_reads_from_its_header_and_bytes_alone() {
        let dir = std::env::temp_dir().join(format!("dinoadapt-st1-{}", std::process::id()));
        let path = dir.join("t.safetensors");
        let a = HostTensor::new(vec![2, 3], (0..6).map(|v| v as f32).collect());
        let b = HostTensor::new(vec![4], vec![-1.5, 0.0, 2.0, 9.0]);
        write_safetensors(
            &path,
            &[("a".into(), a.clone()), ("b".into(), b.clone())],
            HashMap::new(),
        )
        .unwrap();
        let entry = tensor_entry(&path, "b").unwrap().unwrap();
        assert_eq!(
            (entry.dtype, entry.shape.clone()),
            (StoredDType::F32, vec![4])
        );
        assert_eq!(entry.bytes.end - entry.bytes.start, 16);
        assert_eq!(read_tensor(&path, "a").unwrap(), Some(a));
        assert_eq!(read_tensor(&path, "b").unwrap(), Some(b));
        assert_eq!(read_tensor(&path, "c").unwrap(), None);
        // Cut short: the header promises bytes the file does not have.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = read_tensor(&path, "b").unwrap_err().to_string();
        assert!(err.contains("do not hold its shape"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn round_trips_tensors_and_metadata() {
        let dir = std::env::temp_dir().join(format!("dinoadapt-st-{}", std::process::id()));
        let path = dir.join("t.safetensors");
        let t = vec![
            (
                "a".to_string(),
                HostTensor::new(vec![2, 3], (0..6).map(|v| v as f32).collect()),
            ),
            ("b.c".to_string(), HostTensor::new(vec![1], vec![-1.5])),
        ];
        let meta = HashMap::from([("k".to_string(), "v".to_string())]);
        write_safetensors(&path, &t, meta.clone()).unwrap();
        let (back, m) = read_safetensors(&path).unwrap();
        assert_eq!(back, t);
        assert_eq!(m, meta);
        std::fs::write(&path, b"not a safetensors file").unwrap();
        assert!(matches!(
            read_safetensors(&path),
            Err(CheckpointError::Malformed { .. })
        ));
        std::fs::remove_dir_all(dir).ok();
    }
}
