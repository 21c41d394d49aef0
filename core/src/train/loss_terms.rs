//! The loss terms of one iteration by name, as the official `loss_dict` logs them
//! (`dino_local_crops_loss`, `dino_global_crops_loss`, `koleo_loss`, `ibot_loss`, and any term
//! a newer objective adds, such as DINOv3's `gram_loss`). The list is open: a new loss sets its
//! term in the objective and every table, plot and log that shows terms shows it. It stays a
//! small `Copy` value, so per-iteration records cost no allocation.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// DINO cross-entropy of the student's local crops against the teacher's global ones.
pub const DINO_LOCAL: &str = "dino_local_crops_loss";
/// DINO cross-entropy between the global crops.
pub const DINO_GLOBAL: &str = "dino_global_crops_loss";
/// KoLeo on the student's global class tokens (as logged: weighted, over both crops / 2).
pub const KOLEO: &str = "koleo_loss";
/// iBOT on the masked patches (as logged: / 2).
pub const IBOT: &str = "ibot_loss";
/// Gram anchoring (DINOv3), unweighted.
pub const GRAM: &str = "gram_loss";

/// The most terms one iteration reports.
pub const MAX_TERMS: usize = 12;

/// Named loss terms, in the order they were set.
#[derive(Clone, Copy, PartialEq, Default)]
pub struct LossTerms {
    entries: [(&'static str, f64); MAX_TERMS],
    len: usize,
}

impl LossTerms {
    /// Sets term `name` (replacing its value if it is there).
    pub fn set(&mut self, name: &'static str, value: f64) {
        if let Some(e) = self.entries[..self.len].iter_mut().find(|e| e.0 == name) {
            e.1 = value;
            return;
        }
        assert!(self.len < MAX_TERMS, "more than {MAX_TERMS} loss terms");
        self.entries[self.len] = (name, value);
        self.len += 1;
    }

    /// The value of term `name`, if the iteration reported it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The value of term `name`, 0 when the iteration did not report it.
    pub fn value(&self, name: &str) -> f64 {
        self.get(name).unwrap_or(0.0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.entries[..self.len].iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `name` as a `&'static str`: one leaked copy per distinct name read back from a table (the
/// names of the terms an objective has: a handful per process).
pub fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    for known in [DINO_LOCAL, DINO_GLOBAL, KOLEO, IBOT, GRAM] {
        if known == name {
            return known;
        }
    }
    if let Some(n) = names.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}

impl std::fmt::Debug for LossTerms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for LossTerms {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, &v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for LossTerms {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Terms;
        impl<'de> Visitor<'de> for Terms {
            type Value = LossTerms;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of loss term names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LossTerms, A::Error> {
                let mut terms = LossTerms::default();
                while let Some((k, v)) = map.next_entry::<String, f64>()? {
                    if terms.len == MAX_TERMS {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_TERMS} loss terms"
                        )));
                    }
                    terms.set(intern(&k), v);
                }
                Ok(terms)
            }
        }
        d.deserialize_map(Terms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_keep_their_order_replace_by_name_and_round_trip() {
        let mut t = LossTerms::default();
        t.set(DINO_LOCAL, 1.5);
        t.set(IBOT, 0.5);
        t.set("my_new_loss", 0.25);
        t.set(DINO_LOCAL, 2.0);
        let names: Vec<&str> = t.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [DINO_LOCAL, IBOT, "my_new_loss"]);
        assert_eq!(t.value(DINO_LOCAL), 2.0);
        assert_eq!(t.value(GRAM), 0.0);
        assert_eq!(t.get(GRAM), None);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"dino_local_crops_loss":2.0,"ibot_loss":0.5,"my_new_loss":0.25}"#
        );
        let back: LossTerms = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }
}
