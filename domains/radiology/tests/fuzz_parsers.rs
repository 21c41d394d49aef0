//! Fuzzing of the radiology readers (issue 18): NIfTI headers and volumes (plain and gzipped),
//! single DICOM files and DICOM series assembly, fed mutations of the shared samples.

#[path = "../../../core/tests/common/fuzz.rs"]
mod fuzz;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use dinoadapt_radiology::dicom::{load_series, read_dicom_file};
use dinoadapt_radiology::nifti::{read_nifti, read_nifti_header, NiftiHeader};
use dinoadapt_radiology::Pseudonymizer;
use fuzz::{refused_with_message, Sample, Scratch};

#[global_allocator]
static ALLOC: fuzz::BoundedAlloc = fuzz::BoundedAlloc;

const SALT: &str = "fuzz-salt";

fn files_in(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && keep(p))
        .collect();
    files.sort();
    files
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Offsets of the NIfTI-1 or NIfTI-2 header fields that size and place the data: sizeof_hdr,
/// dims, datatype, bitpix, pixdims, vox_offset, scaling, qform/sform codes and quaternions.
fn nifti_fields(bytes: &[u8]) -> Vec<usize> {
    let v1 = bytes.len() >= 4
        && (bytes[..4] == 348i32.to_le_bytes() || bytes[..4] == 348i32.to_be_bytes());
    let mut fields = vec![0];
    if v1 {
        fields.extend((40..56).step_by(2)); // dim[8]: i16
        fields.extend([70, 72]); // datatype, bitpix
        fields.extend((76..108).step_by(4)); // pixdim[8]: f32
        fields.extend([108, 112, 116, 252, 254]); // vox_offset, scl_slope, scl_inter, codes
        fields.extend((256..280).step_by(4)); // quatern_b..qoffset_z
        fields.extend((280..328).step_by(4)); // srow_x..z
    } else {
        fields.extend([12, 14]); // datatype, bitpix
        fields.extend((16..80).step_by(8)); // dim[8]: i64
        fields.extend((104..168).step_by(8)); // pixdim[8]: f64
        fields.extend([168, 176, 184, 344, 348]); // vox_offset, scl_slope, scl_inter, codes
        fields.extend((352..400).step_by(8)); // quatern_b..qoffset_z
        fields.extend((400..496).step_by(8)); // srow_x..z
    }
    fields.retain(|&f| f < bytes.len());
    fields
}

/// The NIfTI samples uncompressed (the gzipped ones unpacked), with their header fields.
fn nifti_samples() -> Option<Vec<Sample>> {
    let dir = fuzz::shared("data")?.join("nifti");
    let samples = files_in(&dir, |_| true)
        .iter()
        .map(|p| {
            let mut s = Sample::read(p);
            if s.name.ends_with(".gz") {
                s.bytes = gunzip(&s.bytes);
                s.name = s.name.trim_end_matches(".gz").to_string();
            }
            let fields = nifti_fields(&s.bytes);
            s.with_fields(fields)
        })
        .collect();
    Some(samples)
}

#[test]
fn fuzz_nifti_header() {
    let Some(samples) = nifti_samples() else {
        return;
    };
    let scratch = Scratch::new("nifti-header");
    fuzz::fuzz("fuzz_nifti_header", &samples, |_, bytes| {
        refused_with_message(NiftiHeader::parse(bytes))?;
        let path = scratch.write("volume.nii", bytes);
        refused_with_message(read_nifti_header(&path))
    });
}

#[test]
fn fuzz_nifti_volume() {
    let Some(samples) = nifti_samples() else {
        return;
    };
    let scratch = Scratch::new("nifti-volume");
    let pseudo = Pseudonymizer::new(SALT);
    fuzz::fuzz("fuzz_nifti_volume", &samples, |_, bytes| {
        let path = scratch.write("volume.nii", bytes);
        refused_with_message(read_nifti(&path, &pseudo))?;
        // The same bytes behind a valid gzip stream take the streaming reader's path.
        let path = scratch.write("volume.nii.gz", &gzip(bytes));
        refused_with_message(read_nifti(&path, &pseudo))
    });
}

#[test]
fn fuzz_nifti_gzip_stream() {
    let Some(data) = fuzz::shared("data") else {
        return;
    };
    let samples: Vec<Sample> = files_in(&data.join("nifti"), |p| {
        p.extension().is_some_and(|e| e == "gz")
    })
    .iter()
    .map(|p| Sample::read(p))
    .collect();
    let scratch = Scratch::new("nifti-gzip");
    let pseudo = Pseudonymizer::new(SALT);
    fuzz::fuzz("fuzz_nifti_gzip_stream", &samples, |_, bytes| {
        let path = scratch.write("volume.nii.gz", bytes);
        refused_with_message(read_nifti_header(&path))?;
        refused_with_message(read_nifti(&path, &pseudo))
    });
}

/// Every DICOM sample: the single files and the CT series' slices, with their size fields.
fn dicom_samples(data: &Path) -> Vec<Sample> {
    let dir = data.join("dicom");
    let mut files = files_in(&dir, |_| true);
    files.extend(files_in(&dir.join("series_ct5n"), |_| true));
    files
        .iter()
        .map(|p| {
            let s = Sample::read(p);
            let fields = fuzz::dicom_fields(&s.bytes);
            s.with_fields(fields)
        })
        .collect()
}

#[test]
fn fuzz_dicom_file() {
    let Some(data) = fuzz::shared("data") else {
        return;
    };
    let samples = dicom_samples(&data);
    let scratch = Scratch::new("dicom-file");
    let pseudo = Pseudonymizer::new(SALT);
    fuzz::fuzz("fuzz_dicom_file", &samples, |_, bytes| {
        let path = scratch.write("image.dcm", bytes);
        match read_dicom_file(&path, &pseudo) {
            Ok(file) => refused_with_message(file.to_volume()),
            Err(e) => refused_with_message(Err::<(), _>(e)),
        }
    });
}

#[test]
fn fuzz_dicom_series() {
    let Some(data) = fuzz::shared("data") else {
        return;
    };
    let series = data.join("dicom/series_ct5n");
    let slices = files_in(&series, |_| true);
    let samples: Vec<Sample> = slices
        .iter()
        .map(|p| {
            let s = Sample::read(p);
            let fields = fuzz::dicom_fields(&s.bytes);
            s.with_fields(fields)
        })
        .collect();
    let scratch = Scratch::new("dicom-series");
    for (p, s) in slices.iter().zip(&samples) {
        std::fs::copy(p, scratch.0.join(&s.name)).unwrap();
    }
    let pseudo = Pseudonymizer::new(SALT);
    fuzz::fuzz("fuzz_dicom_series", &samples, |target, bytes| {
        // The mutated slice replaces its original in the series folder, and is put back after.
        scratch.write(&target.name, bytes);
        let scan = load_series(&[&scratch.0], &pseudo);
        scratch.write(&target.name, &target.bytes);
        let scan = match scan {
            Ok(scan) => scan,
            Err(e) => return refused_with_message(Err::<(), _>(e)),
        };
        match scan.errors.iter().find(|e| e.message.trim().is_empty()) {
            Some(e) => Err(format!("file error with an empty message for {}", e.file)),
            None => Ok(()),
        }
    });
}

/// Crashes the fuzzing found, kept as mutation recipes of the shared samples: each made dicom-rs
/// ask for a declared length of hundreds of MB; each is now refused before it is parsed.
#[test]
fn regression_dicom_lengths_past_the_end() {
    let Some(data) = fuzz::shared("data") else {
        return;
    };
    let dicom = data.join("dicom");
    // "DERIVED" cut out of ImageType: the headers shift, a 318 MB length.
    let mut cut = std::fs::read(dicom.join("JPGExtended.dcm")).unwrap();
    cut.drain(344..351);
    // Five zero bytes inserted in a slice of the series: a 542 MB length.
    let mut padded = std::fs::read(dicom.join("series_ct5n/2062")).unwrap();
    padded.splice(1865..1865, [0u8; 5]);
    // Eleven bytes inserted in a deflated data set: the stream breaks after a 1.4 GB length.
    let mut deflated = std::fs::read(dicom.join("image_dfl.dcm")).unwrap();
    deflated.splice(
        717..717,
        [
            0xcf, 0x28, 0xb7, 0x05, 0x02, 0x5a, 0x09, 0x0d, 0x00, 0x00, 0x00,
        ],
    );
    let scratch = Scratch::new("dicom-regression");
    let pseudo = Pseudonymizer::new(SALT);
    for (name, bytes) in [
        ("JPGExtended.dcm", cut),
        ("2062", padded),
        ("image_dfl.dcm", deflated),
    ] {
        let path = scratch.write(name, &bytes);
        let (read, refused) = fuzz::refused_during(|| read_dicom_file(&path, &pseudo));
        assert_eq!(refused, 0, "{name}: asked for {refused} bytes");
        let err = read.expect_err(name).to_string();
        assert!(err.contains("declares"), "{name}: {err}");
    }
}

/// Crashes the fuzzing found in decoders we cannot fix here: one byte of the JPEG 2000
/// codestream, or of an RLE segment, damaged makes dicom-rs's adapter index past its buffer (a
/// panic); it is caught, and the file's error says the decoder failed on damaged data.
#[test]
fn regression_decoder_panics_are_the_files_error() {
    let Some(data) = fuzz::shared("data") else {
        return;
    };
    let scratch = Scratch::new("decoder-panic-regression");
    let pseudo = Pseudonymizer::new(SALT);
    for (name, at, byte) in [
        ("MR_small_jp2klossless.dcm", 1563, 0x7c),
        ("MR_small_RLE.dcm", 1617, 0x4d),
    ] {
        let mut bytes = std::fs::read(data.join("dicom").join(name)).unwrap();
        bytes[at] = byte;
        let path = scratch.write(name, &bytes);
        let file = read_dicom_file(&path, &pseudo).expect("the header reads");
        let err = file.to_volume().expect_err("damaged pixels").to_string();
        assert!(
            err.contains("the decoder failed on damaged data") && err.contains("out of"),
            "{name}: {err}"
        );
    }
}
