//! Learning on real images: a tiny ViT pre-trained for a few minutes on CPU with the repository's
//! MNIST recipe gives class-token features whose kNN accuracy on the held-out digits beats the
//! same model at initialisation. Also checks the kNN evaluation itself on raw pixels.

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use dinoadapt_core::eval::knn_accuracy;
use dinoadapt_pretrain::monitor::LabelledImages;
use dinoadapt_pretrain::{run, Recipe, RunOptions};

/// The crate's folder as cargo gives it at run time, else where the test was compiled.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `../shared/data/mnist5k` beside the repository (required under `CI=true`).
fn digits() -> Option<PathBuf> {
    let dir = crate_dir().join("../../shared/data/mnist5k");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("../shared/data/mnist5k is missing beside the repository; CI needs it");
    }
    eprintln!("skipping: ../shared/data not found");
    None
}

fn pixels(set: &LabelledImages) -> Vec<f32> {
    set.paths
        .iter()
        .flat_map(|p| {
            image::open(p)
                .unwrap()
                .to_luma32f()
                .into_raw()
                .into_iter()
                .map(|v| v - 0.1307)
        })
        .collect()
}

#[test]
fn knn_on_raw_pixels_classifies_the_digits() {
    let Some(d) = digits() else { return };
    let train = LabelledImages::open(&d.join("train"), Some(100)).unwrap();
    let val = LabelledImages::open(&d.join("val"), Some(30)).unwrap();
    assert_eq!(train.classes.len(), 10);
    assert_eq!((train.paths.len(), val.paths.len()), (1000, 300));
    let acc = knn_accuracy(
        &pixels(&train),
        &train.labels,
        &pixels(&val),
        &val.labels,
        784,
        10,
        20,
        0.07,
    );
    assert!(acc > 0.8, "pixel kNN accuracy {acc}");
}

#[test]
fn pretraining_improves_knn_accuracy_over_initialisation() {
    let Some(_) = digits() else { return };
    let out = tempfile::tempdir().unwrap();
    let recipe_path = crate_dir().join("../recipes/mnist_tiny.toml");
    let recipe = Recipe::load(
        &recipe_path,
        &[format!(
            "train.output_dir={:?}",
            out.path().display().to_string()
        )],
    )
    .unwrap();
    let summary =
        run::<Autodiff<Flex>>(&recipe, &RunOptions::default(), &Default::default()).unwrap();
    let start = summary.knn.first().unwrap();
    let end = summary.knn.last().unwrap();
    eprintln!("kNN accuracy: {:?}", summary.knn);
    assert_eq!((start.when.as_str(), end.when.as_str()), ("start", "end"));
    assert!(
        end.accuracy > start.accuracy + MARGIN,
        "kNN accuracy {:.4} after {} iterations vs {:.4} at initialisation",
        end.accuracy,
        summary.steps,
        start.accuracy
    );
}

/// The improvement the test requires (the recipe's run gains far more; see the issue note).
const MARGIN: f64 = 0.03;
