//! Decoded DICOM pixel samples to f32 (sign, bits stored, planar configuration, rescale).

use std::path::Path;

use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::error::{error_chain, RadiologyError, Result};

/// Decoded pixel samples of a file, after the modality rescale.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    /// `values[((frame * rows + row) * columns + column) * samples + sample]` (DICOM order).
    pub values: Vec<f32>,
    pub frames: usize,
    pub rows: usize,
    pub columns: usize,
    pub samples: usize,
}

/// A rescale (slope, intercept) per frame, or one for all frames.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rescale {
    None,
    All(f64, f64),
    PerFrame(Vec<(f64, f64)>),
}

/// The human name of a transfer syntax UID ("unknown transfer syntax" when not registered).
pub fn transfer_syntax_name(uid: &str) -> String {
    TransferSyntaxRegistry
        .get(uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| "unknown transfer syntax".to_string())
}

/// Decodes the pixel data of `obj` to f32 samples with `rescale` applied.
pub(crate) fn decode(obj: &DefaultDicomObject, path: &Path, rescale: &Rescale) -> Result<Pixels> {
    let uid = obj.meta().transfer_syntax().to_string();
    let undecodable = |reason: String| RadiologyError::UndecodableTransferSyntax {
        path: path.to_path_buf(),
        uid: uid.clone(),
        name: transfer_syntax_name(&uid),
        reason,
    };
    let ts = TransferSyntaxRegistry
        .get(&uid)
        .ok_or_else(|| undecodable("transfer syntax not known to dicom-rs".into()))?;
    if !ts.can_decode_all() {
        return Err(undecodable(
            "dicom-rs has no decoder for it in this build; convert the file to an uncompressed transfer syntax, e.g. with `gdcmconv --raw`"
                .into(),
        ));
    }
    // dicom-rs's JPEG 2000 adapter panics on some damaged codestreams (a slice index past
    // the frame, found by fuzz_dicom_file): a panic there is this file's error, not the run's.
    let decoded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| obj.decode_pixel_data()))
            .map_err(|panic| {
                let what = dinoadapt_core::error_text::panic_message(panic.as_ref());
                undecodable(format!("the decoder failed on damaged data ({what})"))
            })?
            .map_err(|e| {
                if ts.is_encapsulated_pixel_data() {
                    undecodable(error_chain(&e))
                } else {
                    RadiologyError::PixelData {
                        path: path.to_path_buf(),
                        reason: error_chain(&e),
                    }
                }
            })?;
    let rows = decoded.rows() as usize;
    let columns = decoded.columns() as usize;
    let frames = decoded.number_of_frames().max(1) as usize;
    let samples = decoded.samples_per_pixel().max(1) as usize;
    let bits_allocated = decoded.bits_allocated();
    let bits_stored = decoded.bits_stored().clamp(1, bits_allocated.max(1));
    let signed = decoded.pixel_representation() == dicom_pixeldata::PixelRepresentation::Signed;
    let planar = decoded.planar_configuration() == dicom_pixeldata::PlanarConfiguration::PixelFirst
        && samples > 1;
    let n = frames * rows * columns * samples;
    let data = decoded.data();
    let raw: Vec<f64> = match bits_allocated {
        1 => data
            .iter()
            .take(n)
            .map(|&b| if b > 0 { 1.0 } else { 0.0 })
            .collect(),
        8 | 16 | 32 | 64 => {
            let bps = usize::from(bits_allocated / 8);
            if data.len() < n * bps {
                return Err(RadiologyError::PixelData {
                    path: path.to_path_buf(),
                    reason: format!(
                        "pixel data has {} bytes, {frames} frame(s) of {rows}x{columns}x{samples} samples at {bits_allocated} bits need {}",
                        data.len(),
                        n * bps
                    ),
                });
            }
            data.chunks_exact(bps)
                .take(n)
                .map(|c| sample(c, bits_stored, signed))
                .collect()
        }
        other => {
            return Err(RadiologyError::PixelData {
                path: path.to_path_buf(),
                reason: format!("BitsAllocated {other} is not supported (1, 8, 16, 32, 64)"),
            })
        }
    };
    if raw.len() < n {
        return Err(RadiologyError::PixelData {
            path: path.to_path_buf(),
            reason: format!("{} samples decoded, {n} expected", raw.len()),
        });
    }
    let raw = if planar {
        interleave(raw, frames, rows * columns, samples)
    } else {
        raw
    };
    let per_frame = rows * columns * samples;
    let values = raw
        .chunks(per_frame.max(1))
        .enumerate()
        .flat_map(|(f, chunk)| {
            let (s, i) = match rescale {
                Rescale::None => (1.0, 0.0),
                Rescale::All(s, i) => (*s, *i),
                Rescale::PerFrame(v) => v.get(f).copied().unwrap_or((1.0, 0.0)),
            };
            chunk.iter().map(move |v| (v * s + i) as f32)
        })
        .collect();
    Ok(Pixels {
        values,
        frames,
        rows,
        columns,
        samples,
    })
}

/// One little-endian sample; signed values are sign-extended from `bits_stored`.
fn sample(c: &[u8], bits_stored: u16, signed: bool) -> f64 {
    let mut buf = [0u8; 8];
    buf[..c.len()].copy_from_slice(c);
    let u = u64::from_le_bytes(buf);
    let bits = u32::from(bits_stored).min(c.len() as u32 * 8);
    if signed {
        let shift = 64 - bits;
        (((u << shift) as i64) >> shift) as f64
    } else {
        u as f64
    }
}

/// Planar configuration 1 (RRR..GGG..BBB.. per frame) to interleaved (RGBRGB..).
fn interleave(raw: Vec<f64>, frames: usize, pixels: usize, samples: usize) -> Vec<f64> {
    let mut out = vec![0.0; raw.len()];
    for f in 0..frames {
        let base = f * pixels * samples;
        for s in 0..samples {
            for p in 0..pixels {
                out[base + p * samples + s] = raw[base + s * pixels + p];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_extension_from_bits_stored() {
        // 12-bit signed -1 stored in 16 bits
        assert_eq!(sample(&[0xff, 0x0f], 12, true), -1.0);
        assert_eq!(sample(&[0xff, 0x0f], 12, false), 4095.0);
        assert_eq!(sample(&[0x00, 0x80], 16, true), -32768.0);
        assert_eq!(sample(&[0xff, 0xff, 0xff, 0xff], 32, true), -1.0);
        assert_eq!(sample(&[0x10, 0x27, 0x00, 0x00], 32, false), 10000.0);
    }

    #[test]
    fn planar_to_interleaved() {
        let raw = vec![1.0, 2.0, 10.0, 20.0, 100.0, 200.0];
        assert_eq!(
            interleave(raw, 1, 2, 3),
            vec![1.0, 10.0, 100.0, 2.0, 20.0, 200.0]
        );
    }
}
