//! What `dinoadapt doctor` checks of the pathology domain: the OpenSlide library slides are
//! read with and the HDF5 library `.h5` feature bags are written with.

use dinoadapt_datasets::Check;

use crate::openslide_slide::openslide_version;

const AREA: &str = "pathology";

/// OpenSlide's and HDF5's versions.
pub fn checks() -> Vec<Check> {
    vec![
        openslide(&openslide_version()),
        hdf5(hdf5_metno::library_version()),
    ]
}

/// The check of the linked OpenSlide, `version` as it reports itself ("unknown" when it does
/// not).
pub fn openslide(version: &str) -> Check {
    let fix = "install OpenSlide 3.4 or newer (Debian: libopenslide0, and libopenslide-dev to \
               build dinoadapt)";
    let Some(major) = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
    else {
        return Check::warn(
            AREA,
            "openslide",
            format!("the linked OpenSlide reports no version ({version})"),
            fix,
        );
    };
    let formats = "Aperio, Hamamatsu, Leica, MIRAX, Philips, Sakura, Trestle, Ventana, \
                   generic tiled TIFF";
    let dicom = if major >= 4 {
        "DICOM WSI through OpenSlide"
    } else {
        "DICOM WSI through dinoadapt's own reader"
    };
    Check::ok(
        AREA,
        "openslide",
        format!("OpenSlide {version}: {formats}; {dicom}"),
    )
}

/// The check of the linked HDF5, `version` as it reports itself ((0, 0, 0) when it cannot).
pub fn hdf5(version: (u8, u8, u8)) -> Check {
    match version {
        (0, 0, 0) => Check::warn(
            AREA,
            "hdf5",
            "the linked HDF5 reports no version",
            "install HDF5 1.10 or newer (Debian: libhdf5-dev); needed for .h5 feature bags",
        ),
        (major, minor, patch) => Check::ok(
            AREA,
            "hdf5",
            format!("HDF5 {major}.{minor}.{patch}: .h5 feature bags (CLAM / TRIDENT layout)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use dinoadapt_datasets::CheckStatus;

    #[test]
    fn doctor_reports_openslide_and_hdf5_versions() {
        let checks = super::checks();
        assert_eq!(checks.len(), 2);
        assert!(
            checks.iter().all(|c| c.status == CheckStatus::Ok),
            "{checks:?}"
        );
        assert!(checks[0].detail.starts_with("OpenSlide "), "{checks:?}");
        assert!(checks[1].detail.starts_with("HDF5 1."), "{checks:?}");
        let old = super::openslide("3.4.1");
        assert!(old.detail.contains("dinoadapt's own reader"), "{old:?}");
        assert!(super::openslide("4.0.0")
            .detail
            .contains("through OpenSlide"));
        let unknown = super::openslide("unknown");
        assert_eq!(unknown.status, CheckStatus::Warn);
        assert!(unknown.fix.contains("libopenslide0"), "{unknown:?}");
        let none = super::hdf5((0, 0, 0));
        assert_eq!(none.status, CheckStatus::Warn);
        assert!(none.fix.contains("libhdf5-dev"), "{none:?}");
    }
}
