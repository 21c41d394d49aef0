//! What `dinoadapt doctor` checks of the radiology domain: the DICOM transfer syntaxes this
//! build decodes (the codecs compiled in) and gzip-compressed NIfTI.

use std::io::{Read, Write};

use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dinoadapt_datasets::Check;

const AREA: &str = "radiology";

/// The transfer syntaxes scanners and PACS exports commonly use: (UID, family).
pub const COMMON_SYNTAXES: [(&str, &str); 9] = [
    ("1.2.840.10008.1.2", "implicit VR"),
    ("1.2.840.10008.1.2.1", "explicit VR"),
    ("1.2.840.10008.1.2.1.99", "deflate"),
    ("1.2.840.10008.1.2.4.50", "JPEG baseline"),
    ("1.2.840.10008.1.2.4.70", "JPEG lossless"),
    ("1.2.840.10008.1.2.4.80", "JPEG-LS"),
    ("1.2.840.10008.1.2.4.90", "JPEG 2000"),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000 lossy"),
    ("1.2.840.10008.1.2.5", "RLE"),
];

/// The DICOM decoders and gzip NIfTI.
pub fn checks() -> Vec<Check> {
    let registered = TransferSyntaxRegistry.iter().count();
    let decoded = TransferSyntaxRegistry
        .iter()
        .filter(|ts| ts.can_decode_all())
        .count();
    let common: Vec<(&str, bool)> = COMMON_SYNTAXES
        .iter()
        .map(|(uid, family)| {
            let decodes = TransferSyntaxRegistry
                .get(uid)
                .is_some_and(|ts| ts.can_decode_all());
            (*family, decodes)
        })
        .collect();
    vec![dicom_check(&common, decoded, registered), nifti_check()]
}

/// The DICOM check: `common` families and whether each decodes, `decoded` of `registered`
/// transfer syntaxes in all.
pub fn dicom_check(common: &[(&str, bool)], decoded: usize, registered: usize) -> Check {
    let names = |want: bool| -> Vec<&str> {
        common
            .iter()
            .filter(|(_, d)| *d == want)
            .map(|(n, _)| *n)
            .collect()
    };
    let (yes, no) = (names(true), names(false));
    let mut detail = format!(
        "decodes {decoded} of {registered} transfer syntaxes: {}",
        yes.join(", ")
    );
    if no.is_empty() {
        return Check::ok(AREA, "dicom codecs", detail);
    }
    detail.push_str(&format!("; not {}", no.join(", ")));
    Check::warn(
        AREA,
        "dicom codecs",
        detail,
        "convert such files to an uncompressed syntax first (`gdcmconv --raw`, `dcmdjpeg`, \
         `dcmdjpls`), or rebuild with the dicom-pixeldata codec features (openjp2, charls)",
    )
}

/// NIfTI is read by dinoadapt itself; `.nii.gz` needs gzip, checked by a round trip.
fn nifti_check() -> Check {
    let data = b"dinoadapt doctor: nifti gzip round trip";
    let round_trip = || -> std::io::Result<Vec<u8>> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data)?;
        let packed = gz.finish()?;
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&packed[..]).read_to_end(&mut back)?;
        Ok(back)
    };
    match round_trip() {
        Ok(back) if back == data => Check::ok(
            AREA,
            "nifti",
            "NIfTI-1 and NIfTI-2, .nii and gzip .nii.gz (read and written)",
        ),
        other => Check::fail(
            AREA,
            "nifti",
            format!("gzip round trip failed: {other:?}"),
            "report this build: its gzip (flate2) does not round-trip; use uncompressed .nii",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dinoadapt_datasets::CheckStatus;

    #[test]
    fn doctor_lists_the_dicom_decoders_of_this_build_and_gzip_nifti() {
        let checks = checks();
        assert_eq!(checks.len(), 2);
        assert!(checks[0].detail.contains("explicit VR"), "{checks:?}");
        assert!(checks[0].detail.contains("JPEG baseline"), "{checks:?}");
        assert_eq!(checks[1].status, CheckStatus::Ok, "{checks:?}");
        let missing = dicom_check(&[("RLE", true), ("JPEG-LS", false)], 20, 30);
        assert_eq!(missing.status, CheckStatus::Warn);
        assert_eq!(
            missing.detail,
            "decodes 20 of 30 transfer syntaxes: RLE; not JPEG-LS"
        );
        assert!(missing.fix.contains("gdcmconv"), "{missing:?}");
    }
}
