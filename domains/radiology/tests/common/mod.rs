//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `<workspace>/../shared/data`, or `None` (after printing a skip message) when it is missing.
/// Under `CI=true` a missing folder is a test failure.
pub fn shared_data() -> Option<PathBuf> {
    let manifest = crate_dir();
    let workspace = manifest.join("../..");
    let data = workspace.join("../shared/data");
    if data.join("REFERENCE.json").is_file() {
        return Some(data);
    }
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!(
            "shared test data missing at {} (CI=true: the reference tests must run)",
            data.display()
        );
    }
    eprintln!("SKIP: shared test data not found at {}", data.display());
    None
}

pub fn reference(data: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(data.join("REFERENCE.json")).expect("read REFERENCE.json");
    serde_json::from_str(&python_json_to_json(&text)).expect("parse REFERENCE.json")
}

/// Python's json writes bare NaN / Infinity / -Infinity; turn them (outside strings) into null.
fn python_json_to_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push_str("null");
            rest = &rest[t.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// Identifying values written into every generated file (tests check they never leak).
pub const PATIENT_NAME: &str = "Testperson^Wilhelmina";
pub const PATIENT_ID: &str = "PID-99887766";
pub const BIRTH_DATE: &str = "19471225";
pub const ACCESSION: &str = "ACC-5551234";
pub const INSTITUTION: &str = "Saint Example Hospital";
pub const REFERRING: &str = "Referrer^Dr Bartholomew";
pub const OPERATOR: &str = "Operator^Quentin";

/// Geometry and content of one generated CT slice (signed 16-bit, rescale -1024).
pub struct Slice {
    pub ipp: [f64; 3],
    pub iop: [f64; 6],
    /// [row spacing, column spacing] as DICOM stores it.
    pub pixel_spacing: [f64; 2],
    pub rows: u16,
    pub cols: u16,
    /// Raw stored values, row-major (rows x cols).
    pub raw: Vec<i16>,
    pub instance: i32,
    pub study_uid: String,
    pub series_uid: String,
}

/// Decimal strings of at most 16 characters (the DS limit), as precise as fits.
fn ds(values: &[f64]) -> PrimitiveValue {
    let strs: Vec<String> = values
        .iter()
        .map(|v| {
            for prec in (0..=12).rev() {
                let t = format!("{v:.prec$}");
                let t = if t.contains('.') {
                    t.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    t
                };
                if t.len() <= 16 {
                    return if t == "-0" { "0".to_string() } else { t };
                }
            }
            panic!("{v} does not fit a DS")
        })
        .collect();
    PrimitiveValue::Strs(strs.into())
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: PrimitiveValue) {
    obj.put(DataElement::new(tag, vr, v));
}

fn base_object(sop_uid: &str, study: &str, series: &str) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    put(
        &mut o,
        tags::SOP_CLASS_UID,
        VR::UI,
        "1.2.840.10008.5.1.4.1.1.2".into(),
    );
    put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop_uid.into());
    put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, study.into());
    put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, series.into());
    put(&mut o, tags::PATIENT_NAME, VR::PN, PATIENT_NAME.into());
    put(&mut o, tags::PATIENT_ID, VR::LO, PATIENT_ID.into());
    put(&mut o, tags::PATIENT_BIRTH_DATE, VR::DA, BIRTH_DATE.into());
    put(&mut o, tags::ACCESSION_NUMBER, VR::SH, ACCESSION.into());
    put(&mut o, tags::INSTITUTION_NAME, VR::LO, INSTITUTION.into());
    put(
        &mut o,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        REFERRING.into(),
    );
    put(&mut o, tags::OPERATORS_NAME, VR::PN, OPERATOR.into());
    put(&mut o, tags::MODALITY, VR::CS, "CT".into());
    put(
        &mut o,
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(1u16),
    );
    put(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2".into(),
    );
    put(
        &mut o,
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(16u16),
    );
    put(
        &mut o,
        tags::BITS_STORED,
        VR::US,
        PrimitiveValue::from(16u16),
    );
    put(&mut o, tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16));
    put(
        &mut o,
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(1u16),
    );
    put(&mut o, tags::RESCALE_SLOPE, VR::DS, ds(&[1.0]));
    put(&mut o, tags::RESCALE_INTERCEPT, VR::DS, ds(&[-1024.0]));
    o
}

fn write(obj: InMemDicomObject, path: &std::path::Path) {
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
        .expect("meta");
    file.write_to_file(path).expect("write dicom");
}

/// Writes one classic CT slice.
pub fn write_slice(path: &std::path::Path, s: &Slice) {
    let sop = format!("{}.{}", s.series_uid, s.instance);
    let mut o = base_object(&sop, &s.study_uid, &s.series_uid);
    put(
        &mut o,
        tags::INSTANCE_NUMBER,
        VR::IS,
        PrimitiveValue::from(s.instance.to_string()),
    );
    put(&mut o, tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&s.ipp));
    put(&mut o, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, ds(&s.iop));
    put(&mut o, tags::PIXEL_SPACING, VR::DS, ds(&s.pixel_spacing));
    put(&mut o, tags::SLICE_THICKNESS, VR::DS, ds(&[1.5]));
    put(&mut o, tags::ROWS, VR::US, PrimitiveValue::from(s.rows));
    put(&mut o, tags::COLUMNS, VR::US, PrimitiveValue::from(s.cols));
    let words: Vec<u16> = s.raw.iter().map(|v| *v as u16).collect();
    put(
        &mut o,
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(words.into()),
    );
    write(o, path);
}

/// Writes one enhanced multi-frame CT object whose frames are the given slices (same size,
/// orientation and spacing), in the given (possibly shuffled) order.
pub fn write_enhanced(path: &std::path::Path, frames: &[Slice]) {
    let f0 = &frames[0];
    let mut o = base_object(
        &format!("{}.900", f0.series_uid),
        &f0.study_uid,
        &f0.series_uid,
    );
    put(
        &mut o,
        tags::SOP_CLASS_UID,
        VR::UI,
        "1.2.840.10008.5.1.4.1.1.2.1".into(),
    );
    put(
        &mut o,
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from(frames.len().to_string()),
    );
    put(&mut o, tags::ROWS, VR::US, PrimitiveValue::from(f0.rows));
    put(&mut o, tags::COLUMNS, VR::US, PrimitiveValue::from(f0.cols));
    let mut measures = InMemDicomObject::new_empty();
    put(
        &mut measures,
        tags::PIXEL_SPACING,
        VR::DS,
        ds(&f0.pixel_spacing),
    );
    put(&mut measures, tags::SLICE_THICKNESS, VR::DS, ds(&[1.5]));
    let mut orient = InMemDicomObject::new_empty();
    put(
        &mut orient,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        ds(&f0.iop),
    );
    let mut shared = InMemDicomObject::new_empty();
    shared.put(DataElement::new(
        tags::PIXEL_MEASURES_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![measures]),
    ));
    shared.put(DataElement::new(
        tags::PLANE_ORIENTATION_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![orient]),
    ));
    o.put(DataElement::new(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![shared]),
    ));
    let per: Vec<InMemDicomObject> = frames
        .iter()
        .map(|f| {
            let mut pos = InMemDicomObject::new_empty();
            put(&mut pos, tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&f.ipp));
            let mut item = InMemDicomObject::new_empty();
            item.put(DataElement::new(
                tags::PLANE_POSITION_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![pos]),
            ));
            item
        })
        .collect();
    o.put(DataElement::new(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(per),
    ));
    let words: Vec<u16> = frames
        .iter()
        .flat_map(|f| f.raw.iter().map(|v| *v as u16))
        .collect();
    put(
        &mut o,
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(words.into()),
    );
    write(o, path);
}

/// Rotation Rz(az) * Rx(ax) (degrees): columns are the row cosine, column cosine, normal.
pub fn rotation(ax_deg: f64, az_deg: f64) -> [[f64; 3]; 3] {
    let (a, b) = (ax_deg.to_radians(), az_deg.to_radians());
    let rx = [
        [1.0, 0.0, 0.0],
        [0.0, a.cos(), -a.sin()],
        [0.0, a.sin(), a.cos()],
    ];
    let rz = [
        [b.cos(), -b.sin(), 0.0],
        [b.sin(), b.cos(), 0.0],
        [0.0, 0.0, 1.0],
    ];
    let mut m = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            m[i][j] = (0..3).map(|k| rz[i][k] * rx[k][j]).sum();
        }
    }
    m
}

pub fn col(m: &[[f64; 3]; 3], c: usize) -> [f64; 3] {
    [m[0][c], m[1][c], m[2][c]]
}

/// A stack of slices at `origin + z * normal (+ shift * column cosine)` for each z.
#[allow(clippy::too_many_arguments)]
pub fn stack(
    rot: &[[f64; 3]; 3],
    origin: [f64; 3],
    zs: &[f64],
    shear_per_mm: f64,
    rows: u16,
    cols: u16,
    pixel_spacing: [f64; 2],
    study: &str,
    series: &str,
) -> Vec<Slice> {
    let (r, c, n) = (col(rot, 0), col(rot, 1), col(rot, 2));
    zs.iter()
        .enumerate()
        .map(|(k, z)| {
            let s = z * shear_per_mm;
            let ipp = [
                origin[0] + z * n[0] + s * c[0],
                origin[1] + z * n[1] + s * c[1],
                origin[2] + z * n[2] + s * c[2],
            ];
            let raw = (0..rows as usize * cols as usize)
                .map(|p| (1000 * k + p) as i16)
                .collect();
            Slice {
                ipp,
                iop: [r[0], r[1], r[2], c[0], c[1], c[2]],
                pixel_spacing,
                rows,
                cols,
                raw,
                instance: (zs.len() - k) as i32,
                study_uid: study.into(),
                series_uid: series.into(),
            }
        })
        .collect()
}

/// Whether `haystack` contains `needle` as bytes.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The crate's folder as cargo gives it when it runs the test (a test binary built in another
/// checkout that shares the target directory still finds this checkout's `../shared`), else
/// where the test was compiled.
pub fn crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
