//! End-to-end: `heads train --task survival` on a synthetic cohort of .h5 feature bags (60
//! slides, some patients with two) with a planted signal: 5-fold cross-validation by patient,
//! the head, folds / predictions tables, the Kaplan–Meier plot and attention per tile; then
//! `heads predict` and `heads eval` with the saved head; and the head applied to a real slide
//! embedded by `pathology embed`.

mod common;

use std::path::Path;

use common::{dinoadapt, ok, p, shared, table};
use polars::prelude::SerReader;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// The feature dimension of ViT-S/14, so the head also takes the real slide's features.
const DIM: usize = 384;

/// The tests of this file take turns: a child process spawned by one inherits the descriptors
/// (and HDF5 file locks) of .h5 files the other is writing at that moment.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn normal(rng: &mut StdRng) -> f32 {
    let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

/// A cohort of `slides` .h5 bags in `bags` and its clinical table (CSV): patients P0.. with
/// every 6th patient holding two slides. A few "marker" tiles per slide carry a direction whose
/// strength sets the patient's hazard; times are exponential with that hazard, censored at an
/// independent exponential time.
fn cohort(dir: &Path, slides: usize, seed: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let bags = dir.join("bags");
    std::fs::create_dir_all(&bags).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut csv = String::from("slide_id,patient_id,time,event\n");
    let (mut s, mut patient) = (0, 0);
    while s < slides {
        let strength: f64 = rng.random_range(-1.0..1.0);
        let hazard = (3.0 * strength).exp();
        let t_event = -rng.random_range(1e-12f64..1.0).ln() / hazard;
        let t_censor = -rng.random_range(1e-12f64..1.0).ln() / 0.3;
        let (time, event) = (t_event.min(t_censor), (t_event <= t_censor) as u8);
        let copies = if patient % 6 == 5 { 2 } else { 1 };
        for _ in 0..copies.min(slides - s) {
            let id = format!("S{s:03}");
            let n = rng.random_range(12..30);
            let markers = rng.random_range(2..5);
            let mut x = Vec::with_capacity(n * DIM);
            let mut coords = Vec::with_capacity(2 * n);
            for t in 0..n {
                for d in 0..DIM {
                    let mut v = 0.3 * normal(&mut rng);
                    if t < markers && d == 0 {
                        v += 4.0;
                    }
                    if t < markers && d == 1 {
                        v += 3.0 * strength as f32;
                    }
                    x.push(v);
                }
                coords.extend([(t % 8) as i64 * 224, (t / 8) as i64 * 224]);
            }
            let f = hdf5_metno::File::create(bags.join(format!("{id}.h5"))).unwrap();
            f.new_dataset::<f32>()
                .shape((n, DIM))
                .create("features")
                .unwrap()
                .write_raw(&x)
                .unwrap();
            f.new_dataset::<i64>()
                .shape((n, 2))
                .create("coords")
                .unwrap()
                .write_raw(&coords)
                .unwrap();
            csv.push_str(&format!("{id},P{patient},{time:.4},{event}\n"));
            s += 1;
        }
        patient += 1;
    }
    let clinical = dir.join("clinical.csv");
    std::fs::write(&clinical, csv).unwrap();
    (bags, clinical)
}

fn train(bags: &Path, clinical: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut a = vec![
        "heads",
        "train",
        "--task",
        "survival",
        "--bags",
        p(bags),
        "--clinical",
        p(clinical),
        "--hidden",
        "64",
        "--lr",
        "2e-3",
        "--weight-decay",
        "1e-4",
        "--quiet",
        "-o",
        p(out),
    ];
    a.extend_from_slice(extra);
    serde_json::from_str(&ok(&a)).unwrap()
}

#[test]
fn survival_cross_validation_head_predict_and_eval_on_a_synthetic_cohort() {
    let _turn = turn();
    let tmp = tempfile::tempdir().unwrap();
    let (bags, clinical) = cohort(tmp.path(), 60, 7);
    let out = tmp.path().join("head");
    let summary = train(
        &bags,
        &clinical,
        &out,
        &["--folds", "5", "--epochs", "30", "--seed", "3"],
    );
    let folds = summary["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 5);
    let c: Vec<f64> = folds
        .iter()
        .map(|f| f["c_index"].as_f64().unwrap())
        .collect();
    let mean = summary["c_index_mean"].as_f64().unwrap();
    eprintln!("C-index per fold {c:?}, mean {mean:.3}");
    assert!(c.iter().all(|c| (0.0..=1.0).contains(c)));
    assert!((mean - c.iter().sum::<f64>() / 5.0).abs() < 1e-12);
    assert!(mean > 0.7, "mean C-index {mean}");
    assert_eq!(
        folds
            .iter()
            .map(|f| f["slides"].as_u64().unwrap())
            .sum::<u64>(),
        60
    );
    let p_value = summary["logrank"]["p_value"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p_value));
    assert_eq!(summary["bin_edges"].as_array().unwrap().len(), 5);

    // Outputs: the head, folds, out-of-fold predictions, KM plot, attention per slide.
    let head: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("head.json")).unwrap()).unwrap();
    assert_eq!(head["task"], "survival");
    assert_eq!(head["loss"], "nll");
    assert!(out.join("head.safetensors").is_file());
    let f = table(&out.join("metrics.parquet"));
    assert_eq!(f.height(), 5);
    let pred = table(&out.join("predictions.parquet"));
    assert_eq!(pred.height(), 60);
    // Patients stay whole: one fold per patient.
    let (pat, fold) = (
        pred.column("patient_id").unwrap().str().unwrap(),
        pred.column("fold").unwrap().u32().unwrap(),
    );
    let mut fold_of = std::collections::HashMap::new();
    for i in 0..60 {
        let f = fold.get(i).unwrap();
        assert_eq!(*fold_of.entry(pat.get(i).unwrap()).or_insert(f), f);
    }
    let png = image::open(out.join("km.png")).unwrap();
    assert!(png.width() > 100 && png.height() > 100);
    for s in 0..60 {
        assert!(out.join(format!("attention/S{s:03}.parquet")).is_file());
    }
    let att = table(&out.join("attention/S000.parquet"));
    let a = att.column("attention").unwrap().f32().unwrap();
    let sum: f32 = (0..att.height()).map(|i| a.get(i).unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4);
    assert_eq!(att.column("x").unwrap().i64().unwrap().get(1), Some(224));

    // predict: every bag of the folder, attention beside the table.
    let pred_out = tmp.path().join("pred/risk.parquet");
    ok(&[
        "heads",
        "predict",
        "--head",
        p(&out),
        "--bags",
        p(&bags),
        "--quiet",
        "-o",
        p(&pred_out),
    ]);
    let risk = table(&pred_out);
    assert_eq!(risk.height(), 60);
    let r = risk.column("risk").unwrap().f64().unwrap();
    assert!((0..60).all(|i| r.get(i).unwrap().is_finite()));
    assert!(tmp.path().join("pred/attention/S059.parquet").is_file());

    // eval with the clinical table as Parquet.
    let csv = polars::prelude::CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(clinical.clone()))
        .unwrap()
        .finish()
        .unwrap();
    let pq = tmp.path().join("clinical.parquet");
    dinoadapt_datasets::write_parquet(&pq, &mut csv.clone()).unwrap();
    let e: Value = serde_json::from_str(&ok(&[
        "heads",
        "eval",
        "--head",
        p(&out),
        "--bags",
        p(&bags),
        "--clinical",
        p(&pq),
        "--quiet",
    ]))
    .unwrap();
    let c = e["c_index"].as_f64().unwrap();
    eprintln!("eval on the training cohort: C-index {c:.3}");
    assert!(c > 0.7, "{e}");
    assert_eq!(e["slides"], 60);

    // A slide in the table without a bag is named.
    let mut text = std::fs::read_to_string(&clinical).unwrap();
    text.push_str("ghost_slide,P999,3.0,1\n");
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, text).unwrap();
    let r = dinoadapt(&[
        "heads",
        "train",
        "--task",
        "survival",
        "--bags",
        p(&bags),
        "--clinical",
        p(&bad),
        "-o",
        p(&tmp.path().join("x")),
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("ghost_slide"));
}

#[test]
fn a_head_trained_on_a_cohort_predicts_risk_and_attention_for_a_real_embedded_slide() {
    let Some(shared) = shared() else { return };
    let _turn = turn();
    let tmp = tempfile::tempdir().unwrap();
    let (bags, clinical) = cohort(tmp.path(), 24, 1);
    let head = tmp.path().join("head");
    train(
        &bags,
        &clinical,
        &head,
        &["--loss", "cox", "--folds", "2", "--epochs", "3"],
    );
    let slides = tmp.path().join("slides");
    std::fs::create_dir_all(&slides).unwrap();
    std::fs::copy(
        shared.join("data/pathology/CMU-1-Small-Region.svs"),
        slides.join("CMU-1-Small-Region.svs"),
    )
    .unwrap();
    let embedded = tmp.path().join("embedded");
    ok(&[
        "pathology",
        "embed",
        "--random-init",
        "--preset",
        "vits14",
        p(&slides),
        "-o",
        p(&embedded),
        "--size",
        "112",
        "--target-mpp",
        "1.0",
        "--quiet",
    ]);
    let out = tmp.path().join("real/risk.parquet");
    ok(&[
        "heads",
        "predict",
        "--task",
        "survival",
        "--head",
        p(&head),
        "--bags",
        p(&embedded),
        "--quiet",
        "-o",
        p(&out),
    ]);
    let risk = table(&out);
    assert_eq!(risk.height(), 1);
    assert_eq!(
        risk.column("slide_id").unwrap().str().unwrap().get(0),
        Some("CMU-1-Small-Region")
    );
    assert!(risk
        .column("risk")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap()
        .is_finite());
    let tiles = table(&embedded.join("tiles/CMU-1-Small-Region.parquet"));
    let att = table(&tmp.path().join("real/attention/CMU-1-Small-Region.parquet"));
    assert_eq!(att.height(), tiles.height());
    // The attention rows carry the tile table's level-0 coordinates.
    let (ax, tx) = (
        att.column("x").unwrap().i64().unwrap(),
        tiles.column("x").unwrap().i64().unwrap(),
    );
    assert!((0..att.height()).all(|i| ax.get(i) == tx.get(i)));
    let a = att.column("attention").unwrap().f32().unwrap();
    let sum: f32 = (0..att.height()).map(|i| a.get(i).unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4);
}
