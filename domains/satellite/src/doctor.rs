//! What `dinoadapt doctor` checks of the satellite domain: the GDAL library it links, the
//! drivers the outputs are written with, and the PROJ database reprojection needs.

use dinoadapt_datasets::Check;
use gdal::spatial_ref::SpatialRef;
use gdal::version::VersionInfo;
use gdal::DriverManager;

const AREA: &str = "satellite";

/// GDAL's version, the GTiff and COG drivers, and the PROJ database.
pub fn checks() -> Vec<Check> {
    let gdal = format!(
        "GDAL {} ({} drivers)",
        VersionInfo::release_name(),
        DriverManager::count()
    );
    vec![
        Check::ok(AREA, "gdal", gdal),
        driver("GTiff", "GeoTIFF inputs and every raster output", true),
        driver("COG", "Cloud-Optimised GeoTIFF outputs (--cog)", false),
        proj(),
    ]
}

/// Whether GDAL has the driver `name`, used for `what`; a missing one fails when `required`.
fn driver(name: &str, what: &str, required: bool) -> Check {
    let check = format!("driver {name}");
    if DriverManager::get_driver_by_name(name).is_ok() {
        return Check::ok(AREA, check, format!("present, for {what}"));
    }
    let version = VersionInfo::release_name();
    let detail = format!("GDAL {version} has no {name} driver ({what})");
    if required {
        let fix = "install a GDAL built with GeoTIFF support (Debian: libgdal-dev)";
        Check::fail(AREA, check, detail, fix)
    } else {
        let fix = "install GDAL 3.1 or newer (Debian: libgdal-dev), or write plain GeoTIFFs";
        Check::warn(AREA, check, detail, fix)
    }
}

/// Whether PROJ's database resolves EPSG codes (a UTM zone), which aligning labels in another
/// CRS needs.
fn proj() -> Check {
    match SpatialRef::from_epsg(32633) {
        Ok(_) => Check::ok(
            AREA,
            "proj database",
            "EPSG codes resolve (label alignment, reprojection)",
        ),
        Err(e) => Check::warn(
            AREA,
            "proj database",
            format!("EPSG:32633 does not resolve: {e}"),
            "install PROJ's data (Debian: proj-data) or set PROJ_DATA to the folder holding \
             proj.db; labels in another CRS cannot be aligned without it",
        ),
    }
}

#[cfg(test)]
mod tests {
    use dinoadapt_datasets::CheckStatus;

    #[test]
    fn doctor_finds_gdal_and_its_geotiff_drivers() {
        let checks = super::checks();
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["gdal", "driver GTiff", "driver COG", "proj database"]
        );
        assert!(checks[0].detail.starts_with("GDAL 3."), "{checks:?}");
        assert!(checks.iter().all(|c| c.area == "satellite"));
        assert_eq!(checks[1].status, CheckStatus::Ok, "{checks:?}");
    }
}
