//! Fuzzing of the checkpoint readers (issue 18): the safetensors header and tensors, and the
//! torch zip-pickle reader, fed mutations of the shared fixture checkpoints.

#[path = "common/fuzz.rs"]
mod fuzz;

use std::path::PathBuf;

use dinoadapt_core::checkpoint::safetensors_io::{read_metadata, read_safetensors, tensor_entry};
use dinoadapt_core::checkpoint::torch_pickle::read_torch_checkpoint;
use fuzz::{refused_with_message, Sample, Scratch};

#[global_allocator]
static ALLOC: fuzz::BoundedAlloc = fuzz::BoundedAlloc;

/// Every file called `name` in the fixture folders.
fn fixture_files(name: &str) -> Option<Vec<PathBuf>> {
    let root = fuzz::shared("fixtures")?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path().join(name))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Some(files)
}

/// Offsets of every occurrence of `needle`.
fn find_all(bytes: &[u8], needle: &[u8]) -> Vec<usize> {
    bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// The header length, and the digits of the header's numbers (data offsets, shapes).
fn safetensors_fields(bytes: &[u8]) -> Vec<usize> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = &bytes[8..(8 + header_len).min(bytes.len())];
    let mut fields = vec![0];
    fields.extend(
        header
            .iter()
            .enumerate()
            .filter(|(i, b)| b.is_ascii_digit() && i % 7 == 0)
            .map(|(i, _)| 8 + i),
    );
    fields
}

/// The sizes, offsets and counts of the zip's local headers, central directory and its end.
fn zip_fields(bytes: &[u8]) -> Vec<usize> {
    let mut fields = Vec::new();
    for at in find_all(bytes, b"PK\x03\x04") {
        fields.extend([at + 8, at + 18, at + 22, at + 26, at + 28]);
    }
    for at in find_all(bytes, b"PK\x01\x02") {
        fields.extend([at + 10, at + 20, at + 24, at + 28, at + 30, at + 42]);
    }
    for at in find_all(bytes, b"PK\x05\x06") {
        fields.extend([at + 8, at + 10, at + 12, at + 16]);
    }
    fields.retain(|&f| f < bytes.len());
    fields
}

#[test]
fn fuzz_safetensors_header() {
    let Some(files) = fixture_files("model.safetensors") else {
        return;
    };
    let mut samples: Vec<Sample> = files
        .iter()
        .map(|p| {
            let s = Sample::read(p);
            let fields = safetensors_fields(&s.bytes);
            s.with_fields(fields)
        })
        .collect();
    // The small io.safetensors of the loss fixture: a different set of tensors to splice.
    if let Some(losses) = fixture_files("io.safetensors") {
        samples.extend(losses.iter().take(1).map(|p| {
            let s = Sample::read(p);
            let fields = safetensors_fields(&s.bytes);
            s.with_fields(fields)
        }));
    }
    let scratch = Scratch::new("safetensors");
    fuzz::fuzz("fuzz_safetensors_header", &samples, |_, bytes| {
        let path = scratch.write("model.safetensors", bytes);
        refused_with_message(read_metadata(&path))?;
        refused_with_message(tensor_entry(&path, "cls_token"))?;
        refused_with_message(read_safetensors(&path))
    });
}

#[test]
fn fuzz_torch_pickle() {
    let Some(files) = fixture_files("model.pth") else {
        return;
    };
    let samples: Vec<Sample> = files
        .iter()
        .map(|p| {
            let s = Sample::read(p);
            let fields = zip_fields(&s.bytes);
            s.with_fields(fields)
        })
        .collect();
    let scratch = Scratch::new("torch-pickle");
    fuzz::fuzz("fuzz_torch_pickle", &samples, |_, bytes| {
        let path = scratch.write("model.pth", bytes);
        refused_with_message(read_torch_checkpoint(&path))
    });
}
