//! k-fold cross-validation by patient: every slide of a patient lands in the same fold, and the
//! patients with an event and those censored are spread separately, so the folds hold about as
//! many events (and slides) as each other. The split is a function of the seed.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::SurvivalError;

/// The fold (`0..k`) of each slide. `patient` and `event` are per slide; a patient counts as
/// having an event when any of its slides has one.
pub fn patient_folds(
    patient: &[String],
    event: &[bool],
    k: usize,
    seed: u64,
) -> Result<Vec<usize>, SurvivalError> {
    if event.len() != patient.len() {
        return Err(SurvivalError::Length {
            what: "event",
            expected: patient.len(),
            found: event.len(),
        });
    }
    // Patients in order of first appearance, with their slides.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut slides: Vec<Vec<usize>> = Vec::new();
    let mut has_event: Vec<bool> = Vec::new();
    for (s, p) in patient.iter().enumerate() {
        let i = *index.entry(p.as_str()).or_insert_with(|| {
            slides.push(Vec::new());
            has_event.push(false);
            slides.len() - 1
        });
        slides[i].push(s);
        has_event[i] |= event[s];
    }
    let patients = slides.len();
    if k < 2 || patients < k {
        return Err(SurvivalError::Folds { folds: k, patients });
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut fold_events, mut fold_slides) = (vec![0usize; k], vec![0usize; k]);
    let mut patient_count = vec![0usize; k];
    let mut fold_of = vec![usize::MAX; patient.len()];
    for stratum in [true, false] {
        let mut group: Vec<usize> = (0..patients).filter(|&p| has_event[p] == stratum).collect();
        group.shuffle(&mut rng);
        // Patients with many slides first (stable: the shuffle breaks ties), each to the fold
        // with the fewest patients of this stratum, then the fewest slides.
        group.sort_by_key(|&p| std::cmp::Reverse(slides[p].len()));
        let mut in_stratum = vec![0usize; k];
        for p in group {
            let f = (0..k)
                .min_by_key(|&f| (in_stratum[f], fold_slides[f], patient_count[f], f))
                .expect("k >= 2");
            in_stratum[f] += 1;
            patient_count[f] += 1;
            fold_slides[f] += slides[p].len();
            if stratum {
                fold_events[f] += 1;
            }
            for &s in &slides[p] {
                fold_of[s] = f;
            }
        }
    }
    Ok(fold_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort() -> (Vec<String>, Vec<bool>) {
        let mut patient = Vec::new();
        let mut event = Vec::new();
        for p in 0..37 {
            let n = 1 + (p % 3 == 0) as usize + (p % 7 == 0) as usize;
            for _ in 0..n {
                patient.push(format!("P{p}"));
                event.push(p % 5 != 0 && p % 2 == 0);
            }
        }
        (patient, event)
    }

    #[test]
    fn patients_stay_whole_and_folds_are_balanced_and_seeded() {
        let (patient, event) = cohort();
        let folds = patient_folds(&patient, &event, 5, 7).unwrap();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (p, f) in patient.iter().zip(&folds) {
            assert_eq!(*seen.entry(p).or_insert(*f), *f, "{p} split across folds");
        }
        let events_per_fold: Vec<usize> = (0..5)
            .map(|f| {
                seen.iter()
                    .filter(|(p, &g)| {
                        g == f && event[patient.iter().position(|q| q == *p).unwrap()]
                    })
                    .count()
            })
            .collect();
        let (lo, hi) = (
            *events_per_fold.iter().min().unwrap(),
            *events_per_fold.iter().max().unwrap(),
        );
        assert!(hi - lo <= 1, "{events_per_fold:?}");
        let sizes: Vec<usize> = (0..5)
            .map(|f| folds.iter().filter(|&&g| g == f).count())
            .collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 3,
            "{sizes:?}"
        );
        assert_eq!(folds, patient_folds(&patient, &event, 5, 7).unwrap());
        assert_ne!(folds, patient_folds(&patient, &event, 5, 8).unwrap());
    }

    #[test]
    fn needs_as_many_patients_as_folds() {
        let p: Vec<String> = ["a", "a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            patient_folds(&p, &[true, true, false], 3, 0),
            Err(SurvivalError::Folds {
                folds: 3,
                patients: 2
            })
        );
    }
}
