//! Pseudonymous ids and the list of identifying DICOM attributes.
//!
//! A [`crate::Volume`] (and every report this crate serialises) carries only a pseudonymous
//! id: the first 16 hex characters of `sha256(salt || StudyInstanceUID || SeriesInstanceUID)`,
//! or an id the user mapped explicitly. No name, patient id, date, institution or original UID
//! is ever copied into a volume, a report or a written file.

use std::collections::HashMap;
use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use sha2::{Digest, Sha256};

use crate::error::{RadiologyError, Result};

/// Makes pseudonymous ids. The salt is a secret of the site; the same salt gives the same ids.
#[derive(Clone, Default)]
pub struct Pseudonymizer {
    salt: Vec<u8>,
    mapping: HashMap<String, String>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the salt and the mapping's keys (original UIDs) are not printed
        f.debug_struct("Pseudonymizer")
            .field("salt_len", &self.salt.len())
            .field("mapped", &self.mapping.len())
            .finish()
    }
}

/// `hex(sha256(salt || study_uid || series_uid))[..16]`.
pub fn pseudonymous_id(salt: &[u8], study_uid: &str, series_uid: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(study_uid.as_bytes());
    h.update(series_uid.as_bytes());
    hex16(&h.finalize())
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Pseudonymizer {
    /// A pseudonymizer with the given salt and no explicit mapping.
    pub fn new(salt: impl Into<Vec<u8>>) -> Self {
        Pseudonymizer {
            salt: salt.into(),
            mapping: HashMap::new(),
        }
    }

    /// Adds a user mapping from an original UID (SeriesInstanceUID, or StudyInstanceUID for the
    /// whole study) to the id to use. A series mapping wins over a study mapping.
    pub fn with_mapping(mut self, mapping: HashMap<String, String>) -> Self {
        self.mapping.extend(mapping);
        self
    }

    /// Loads a mapping from a JSON object `{ "<original UID>": "<id>", ... }`.
    pub fn load_mapping(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| RadiologyError::io(path, "cannot read id mapping", e))?;
        let map: HashMap<String, String> =
            serde_json::from_str(&text).map_err(|e| RadiologyError::InvalidAttribute {
                path: path.to_path_buf(),
                attribute: "id mapping",
                reason: format!("expected a JSON object of UID -> id strings: {e}"),
            })?;
        Ok(self.with_mapping(map))
    }

    /// The id of a series.
    pub fn series_id(&self, study_uid: &str, series_uid: &str) -> String {
        if let Some(id) = self
            .mapping
            .get(series_uid)
            .or_else(|| self.mapping.get(study_uid))
        {
            return id.clone();
        }
        pseudonymous_id(&self.salt, study_uid, series_uid)
    }

    /// The id of something without UIDs (a NIfTI file): a salted hash of its bytes.
    pub fn content_id(&self, bytes: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(&self.salt);
        h.update(b"content:");
        h.update(bytes);
        hex16(&h.finalize())
    }
}

/// DICOM attributes that identify a patient, a person or a site; none is ever copied out.
pub const IDENTIFYING_TAGS: &[(Tag, &str)] = &[
    (tags::PATIENT_NAME, "PatientName"),
    (tags::PATIENT_ID, "PatientID"),
    (tags::PATIENT_BIRTH_DATE, "PatientBirthDate"),
    (tags::PATIENT_BIRTH_TIME, "PatientBirthTime"),
    (tags::PATIENT_ADDRESS, "PatientAddress"),
    (tags::PATIENT_TELEPHONE_NUMBERS, "PatientTelephoneNumbers"),
    (tags::PATIENT_MOTHER_BIRTH_NAME, "PatientMotherBirthName"),
    (Tag(0x0010, 0x1000), "OtherPatientIDs"),
    (tags::OTHER_PATIENT_NAMES, "OtherPatientNames"),
    (tags::ISSUER_OF_PATIENT_ID, "IssuerOfPatientID"),
    (Tag(0x0010, 0x1090), "MedicalRecordLocator"),
    (tags::ACCESSION_NUMBER, "AccessionNumber"),
    (tags::STUDY_ID, "StudyID"),
    (tags::INSTITUTION_NAME, "InstitutionName"),
    (tags::INSTITUTION_ADDRESS, "InstitutionAddress"),
    (
        tags::INSTITUTIONAL_DEPARTMENT_NAME,
        "InstitutionalDepartmentName",
    ),
    (tags::REFERRING_PHYSICIAN_NAME, "ReferringPhysicianName"),
    (
        tags::REFERRING_PHYSICIAN_ADDRESS,
        "ReferringPhysicianAddress",
    ),
    (tags::PERFORMING_PHYSICIAN_NAME, "PerformingPhysicianName"),
    (
        tags::NAME_OF_PHYSICIANS_READING_STUDY,
        "NameOfPhysiciansReadingStudy",
    ),
    (tags::PHYSICIANS_OF_RECORD, "PhysiciansOfRecord"),
    (tags::OPERATORS_NAME, "OperatorsName"),
    (tags::STATION_NAME, "StationName"),
    (tags::DEVICE_SERIAL_NUMBER, "DeviceSerialNumber"),
    (tags::STUDY_DATE, "StudyDate"),
    (tags::SERIES_DATE, "SeriesDate"),
    (tags::ACQUISITION_DATE, "AcquisitionDate"),
    (tags::CONTENT_DATE, "ContentDate"),
    (tags::STUDY_TIME, "StudyTime"),
    (tags::PATIENT_AGE, "PatientAge"),
    (tags::PATIENT_WEIGHT, "PatientWeight"),
    (tags::PATIENT_SIZE, "PatientSize"),
    (tags::ADDITIONAL_PATIENT_HISTORY, "AdditionalPatientHistory"),
    (tags::PATIENT_COMMENTS, "PatientComments"),
    (tags::STUDY_DESCRIPTION, "StudyDescription"),
    (tags::REQUESTING_PHYSICIAN, "RequestingPhysician"),
];

/// Also never copied out (they link back to the original records), but not "values" a person
/// would recognise: the original instance UIDs.
pub const LINKING_UID_TAGS: &[(Tag, &str)] = &[
    (tags::STUDY_INSTANCE_UID, "StudyInstanceUID"),
    (tags::SERIES_INSTANCE_UID, "SeriesInstanceUID"),
    (tags::SOP_INSTANCE_UID, "SOPInstanceUID"),
    (tags::FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID"),
];

/// The identifying values present in a DICOM file (top-level data set): attribute keyword and
/// trimmed text value, non-empty values only. Meant for tests and audits that scan outputs.
pub fn identifying_values(path: impl AsRef<Path>) -> Result<Vec<(&'static str, String)>> {
    let path = path.as_ref();
    crate::dicom::read::lengths_fit(path, true)?;
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| RadiologyError::InvalidDicom {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut out = Vec::new();
    for (tag, name) in IDENTIFYING_TAGS.iter().chain(LINKING_UID_TAGS) {
        if let Ok(elem) = obj.element(*tag) {
            if let Ok(v) = elem.to_str() {
                let v = v
                    .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                    .to_string();
                if !v.is_empty() {
                    out.push((*name, v));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_sha256_prefix() {
        // sha256("") = e3b0c44298fc1c149afbf4c8996fb924...
        assert_eq!(pseudonymous_id(b"", "", ""), "e3b0c44298fc1c14");
        let a = pseudonymous_id(b"salt", "1.2.3", "1.2.3.4");
        assert_eq!(a.len(), 16);
        assert_ne!(a, pseudonymous_id(b"other", "1.2.3", "1.2.3.4"));
        assert_eq!(a, Pseudonymizer::new("salt").series_id("1.2.3", "1.2.3.4"));
    }

    #[test]
    fn mapping_wins_and_debug_hides_salt() {
        let p = Pseudonymizer::new("secret-salt").with_mapping(HashMap::from([
            ("1.2.3.4".to_string(), "case-007".to_string()),
            ("9.9".to_string(), "study-1".to_string()),
        ]));
        assert_eq!(p.series_id("1.2.3", "1.2.3.4"), "case-007");
        assert_eq!(p.series_id("9.9", "9.9.1"), "study-1");
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("secret") && !dbg.contains("1.2.3.4"), "{dbg}");
    }
}
