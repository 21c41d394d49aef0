//! The one list of the domains this program knows: each is a plugin crate implementing
//! `dinoadapt_datasets::Domain`; adding a domain means adding its crate here.

use dinoadapt_datasets::Domain;

/// Every registered domain.
pub fn all() -> Vec<&'static dyn Domain> {
    vec![
        &dinoadapt_pathology::Pathology,
        &dinoadapt_radiology::Radiology,
        &dinoadapt_satellite::Satellite,
    ]
}
