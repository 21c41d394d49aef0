//! Probes on every domain's feature store (issue 21): `heads train --task classify` reads the
//! output of `pathology embed` (tiles), `radiology embed` (slices, and volumes
//! pooled) and `satellite embed` (chips, labels from a label raster) as it reads `embed`'s files.
//! Each store's metrics are reproduced two ways: by the same probes on the same rows written as
//! plain `embed` feature files by this test (its own reading of the store's tables, its own
//! labels), and by `heads eval` of the saved head on the store's validation split.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{ints, ok, p, read_tensors, shared, table, vegetation_classes};
use dinoadapt_datasets::{column as col, write_parquet, FeatureWriter};
use polars::prelude::DataFrame;
use serde_json::Value;

/// One sample as this test reads a store: its id, its features, its label and split.
struct Sample {
    id: String,
    x: Vec<f32>,
    label: String,
    split: &'static str,
}

/// `samples` of `split` as an `embed` feature file (`cls` + manifest of paths `<label>/<id>`,
/// so that `--labels folder` gives their classes).
fn write_embed_file(samples: &[Sample], split: &str, out: &Path) {
    let rows: Vec<&Sample> = samples.iter().filter(|s| s.split == split).collect();
    let d = rows[0].x.len();
    let mut w = FeatureWriter::create(
        out,
        &[("cls".into(), vec![rows.len(), d])],
        &Default::default(),
    )
    .unwrap();
    for s in &rows {
        w.append("cls", &s.x).unwrap();
    }
    w.finish().unwrap();
    let mut df = DataFrame::new(
        rows.len(),
        vec![
            col::<u32>("index", (0..rows.len() as u32).collect()),
            col::<String>(
                "path",
                rows.iter()
                    .map(|s| format!("{}/{}", s.label, s.id))
                    .collect(),
            ),
        ],
    )
    .unwrap();
    write_parquet(&out.with_extension("parquet"), &mut df).unwrap();
}

/// The `metrics.parquet` of a head folder as (method, split) -> accuracy, balanced accuracy.
fn metrics(head: &Path) -> BTreeMap<(String, String), (f64, f64)> {
    let df = table(&head.join("metrics.parquet"));
    let s = |c: &str| df.column(c).unwrap().str().unwrap().clone();
    let f = |c: &str| df.column(c).unwrap().f64().unwrap().clone();
    let (m, sp, acc, bal) = (
        s("method"),
        s("split"),
        f("accuracy"),
        f("balanced_accuracy"),
    );
    (0..df.height())
        .map(|i| {
            let key = (
                m.get(i).unwrap().to_string(),
                sp.get(i).unwrap().to_string(),
            );
            (key, (acc.get(i).unwrap(), bal.get(i).unwrap()))
        })
        .collect()
}

const PROBE: [&str; 6] = ["--lrs", "0.01,0.1", "--wds", "0,0.001", "--epochs", "60"];

/// `heads train --task classify` with `args`; the head folder `out`.
fn train(args: &[&str], out: &Path) {
    let mut a = vec!["heads", "train", "--task", "classify", "-o", p(out)];
    a.extend(args);
    a.extend(PROBE);
    ok(&a);
}

/// The same probes on `samples` written as `embed` files: their metrics must be the store's.
fn same_metrics_as_plain_files(samples: &[Sample], dir: &Path, store_head: &Path) {
    let (tr, va) = (
        dir.join("plain_train.safetensors"),
        dir.join("plain_val.safetensors"),
    );
    write_embed_file(samples, "train", &tr);
    write_embed_file(samples, "val", &va);
    let head = dir.join("plain_head");
    train(&["--train", p(&tr), "--val", p(&va)], &head);
    let (a, b) = (metrics(store_head), metrics(&head));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        eprintln!("{k:?}: store {v:?}, plain files {:?}", b[k]);
        assert_eq!(*v, b[k], "{k:?}");
    }
}

/// `heads eval` of the saved head on the store's validation rows reproduces the linear probe's
/// validation metrics.
fn eval_reproduces(head: &Path, store: &Path, labels: &str) {
    let out = ok(&[
        "heads",
        "eval",
        "--head",
        p(head),
        "--features",
        p(store),
        "--labels",
        labels,
        "--split",
        "val",
    ]);
    let m: Value = serde_json::from_str(&out).unwrap();
    let (acc, bal) = metrics(head)[&("linear".to_string(), "val".to_string())];
    assert_eq!(m["accuracy"].as_f64().unwrap(), acc);
    assert_eq!(m["balanced_accuracy"].as_f64().unwrap(), bal);
}

/// Feature rows of a file in `feature_row` order with the table's `index` column.
fn rows_of(features: &Path, regions: &Path, index: &str) -> Vec<(i64, Vec<f32>)> {
    let (shape, cls) = read_tensors(features)["cls"].clone();
    let d = shape[1];
    let t = table(regions);
    let (row, idx) = (ints(&t, "feature_row"), ints(&t, index));
    let mut out: Vec<(i64, i64)> = row.into_iter().zip(idx).collect();
    out.sort();
    out.into_iter()
        .map(|(r, i)| (i, cls[r as usize * d..(r as usize + 1) * d].to_vec()))
        .collect()
}

#[test]
fn probes_on_slide_tiles_reproduce_their_metrics() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let slide = shared.join("data/pathology/CMU-1-Small-Region.svs");
    let model = shared.join("fixtures/hf_dinov2");
    ok(&[
        "pathology",
        "embed",
        "--model",
        p(&model),
        p(&slide),
        "-o",
        p(&d("store")),
        "--target-mpp",
        "2",
        "--size",
        "56",
        "--no-h5",
        "--quiet",
    ]);
    // Labels of this test: the upper and lower halves of the slide; every third tile is for
    // validation. Tiles named by `<slide>:<tile_index>`.
    let t = table(&d("store/tiles/CMU-1-Small-Region.parquet"));
    let (y, ti) = (ints(&t, "y"), ints(&t, "tile_index"));
    let half: BTreeMap<i64, &str> = ti
        .iter()
        .zip(&y)
        .map(|(i, y)| (*i, if *y < 2967 / 2 { "upper" } else { "lower" }))
        .collect();
    let samples: Vec<Sample> = rows_of(
        &d("store/features/CMU-1-Small-Region.safetensors"),
        &d("store/tiles/CMU-1-Small-Region.parquet"),
        "tile_index",
    )
    .into_iter()
    .map(|(i, x)| Sample {
        id: format!("CMU-1-Small-Region:{i}"),
        x,
        label: half[&i].to_string(),
        split: if i % 3 == 0 { "val" } else { "train" },
    })
    .collect();
    assert!(samples.len() > 30, "{} tiles", samples.len());
    let csv: Vec<String> = std::iter::once("tile,split,label".to_string())
        .chain(
            samples
                .iter()
                .map(|s| format!("{},{},{}", s.id, s.split, s.label)),
        )
        .collect();
    std::fs::write(d("tiles.csv"), csv.join("\n")).unwrap();
    let store = d("store");
    let labels = format!("csv:{}", p(&d("tiles.csv")));
    let head = d("tiles_head");
    train(
        &[
            "--train",
            p(&store),
            "--val",
            p(&store),
            "--labels",
            &labels,
        ],
        &head,
    );
    same_metrics_as_plain_files(&samples, dir.path(), &head);
    eval_reproduces(&head, &store, &labels);
    // Predictions name each tile.
    ok(&[
        "heads",
        "predict",
        "--head",
        p(&head),
        "--features",
        p(&store),
        "-o",
        p(&d("pred.parquet")),
    ]);
    let pred = table(&d("pred.parquet"));
    assert_eq!(pred.height(), samples.len());
    let first = pred
        .column("path")
        .unwrap()
        .str()
        .unwrap()
        .get(0)
        .unwrap()
        .to_string();
    assert!(first.starts_with("CMU-1-Small-Region:"), "{first}");
}

#[test]
fn probes_on_volume_slices_and_pooled_volumes_reproduce_their_metrics() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let model = shared.join("fixtures/hf_dinov2");
    let data = shared.join("data");
    let volumes: Vec<PathBuf> = [
        "nifti/anatomical.nii",
        "nifti/standard.nii.gz",
        "nifti/example_nifti2.nii.gz",
        "nifti/reoriented_anat_moved.nii",
        "dicom/series_ct5n",
        "dicom/CT_small.dcm",
        "dicom/MR_small.dcm",
        "dicom/emri_small.dcm",
    ]
    .iter()
    .map(|v| data.join(v))
    .collect();
    let store = d("store");
    let mut args = vec!["radiology", "embed", "--model", p(&model)];
    args.extend(volumes.iter().map(|v| p(v)));
    args.extend(["--size", "28", "--step", "2", "-o", p(&store), "--quiet"]);
    ok(&args);
    // Labels by volume: its file format (the store's volume table), NIfTI or DICOM; volumes
    // alternate between the splits in id order, so that both splits hold both.
    let vt = table(&d("store/volumes.parquet"));
    let s = |c: &str| vt.column(c).unwrap().str().unwrap().clone();
    let (ids, modality, status) = (s("volume_id"), s("kind"), s("status"));
    let mut by_modality: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..vt.height() {
        if status.get(i) == Some("ok") {
            let m = modality.get(i).unwrap_or("").to_string();
            by_modality
                .entry(m)
                .or_default()
                .push(ids.get(i).unwrap().to_string());
        }
    }
    eprintln!("volumes by format: {by_modality:?}");
    let mut volume: BTreeMap<String, (String, &'static str)> = BTreeMap::new();
    for (m, vs) in &by_modality {
        let mut vs = vs.clone();
        vs.sort();
        for (k, v) in vs.iter().enumerate() {
            volume.insert(
                v.clone(),
                (m.clone(), if k % 2 == 0 { "train" } else { "val" }),
            );
        }
    }
    assert!(by_modality.len() >= 2 && by_modality.values().all(|v| v.len() >= 2));
    let csv: Vec<String> = std::iter::once("volume_id,label,split".to_string())
        .chain(volume.iter().map(|(v, (m, s))| format!("{v},{m},{s}")))
        .collect();
    std::fs::write(d("volumes.csv"), csv.join("\n")).unwrap();
    let labels = format!("csv:{}", p(&d("volumes.csv")));

    // Slices: each slice labelled by its volume's row of the CSV.
    let mut slices = Vec::new();
    for (v, (m, split)) in &volume {
        let rows = rows_of(
            &d(&format!("store/{v}.safetensors")),
            &d(&format!("store/{v}.parquet")),
            "slice_index",
        );
        for (i, x) in rows {
            slices.push(Sample {
                id: format!("{v}:{i}"),
                x,
                label: m.clone(),
                split,
            });
        }
    }
    let head = d("slices_head");
    train(
        &[
            "--train",
            p(&store),
            "--val",
            p(&store),
            "--labels",
            &labels,
            "--unit",
            "slices",
        ],
        &head,
    );
    same_metrics_as_plain_files(&slices, dir.path(), &head);
    eval_reproduces(&head, &store, &labels);

    // Volumes: the mean of each volume's slices.
    let pooled: Vec<Sample> = volume
        .iter()
        .map(|(v, (m, split))| {
            let rows: Vec<&Sample> = slices
                .iter()
                .filter(|s| s.id.starts_with(&format!("{v}:")))
                .collect();
            let d = rows[0].x.len();
            let mut x = vec![0f64; d];
            for r in &rows {
                x.iter_mut().zip(&r.x).for_each(|(a, b)| *a += *b as f64);
            }
            Sample {
                id: v.clone(),
                x: x.iter().map(|a| (a / rows.len() as f64) as f32).collect(),
                label: m.clone(),
                split,
            }
        })
        .collect();
    let head = d("volumes_head");
    train(
        &[
            "--train",
            p(&store),
            "--val",
            p(&store),
            "--labels",
            &labels,
            "--unit",
            "volumes",
            "--k",
            "1",
        ],
        &head,
    );
    let hj: Value =
        serde_json::from_str(&std::fs::read_to_string(head.join("head.json")).unwrap()).unwrap();
    assert_eq!(hj["unit"], "groups", "{hj}");
    let (tr, va) = (d("pool_train.safetensors"), d("pool_val.safetensors"));
    write_embed_file(&pooled, "train", &tr);
    write_embed_file(&pooled, "val", &va);
    let plain = d("pool_plain");
    train(&["--train", p(&tr), "--val", p(&va), "--k", "1"], &plain);
    let (a, b) = (metrics(&head), metrics(&plain));
    for (k, v) in &a {
        let w = b[k];
        eprintln!("{k:?}: store {v:?}, plain files {w:?}");
        assert!(
            (v.0 - w.0).abs() < 1e-12 && (v.1 - w.1).abs() < 1e-12,
            "{k:?}"
        );
    }
    eval_reproduces(&head, &store, &labels);
}

#[test]
fn probes_on_raster_chips_labelled_by_a_label_raster_reproduce_their_metrics() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let raster = shared.join("data/satellite/rgbn.tif");
    let model = shared.join("fixtures/hf_dinov2");
    let classes = d("classes.tif");
    vegetation_classes(&raster, &classes);
    // Training chips on one grid, validation chips on another.
    for (name, stride) in [("train", "56"), ("val", "40")] {
        ok(&[
            "satellite",
            "embed",
            "--model",
            p(&model),
            p(&raster),
            "--size",
            "56",
            "--stride",
            stride,
            "--bands",
            "1,2,3",
            "-o",
            p(&d(&format!("{name}.safetensors"))),
            "--quiet",
        ]);
    }
    let labels = format!("targets:{}", p(&classes));
    let head = d("chips_head");
    train(
        &[
            "--train",
            p(&d("train.safetensors")),
            "--val",
            p(&d("val.safetensors")),
            "--labels",
            &labels,
        ],
        &head,
    );
    // This test's own labels: the most frequent class of the label raster under each chip's
    // window (the label raster is on the imagery grid), 255 (no data) left out.
    let r = dinoadapt_satellite::Raster::open(&classes).unwrap();
    let class = common::whole(&r, 1);
    let width = r.info().width;
    let mut samples = Vec::new();
    for split in ["train", "val"] {
        let f = d(&format!("{split}.safetensors"));
        let t = table(&f.with_extension("parquet"));
        let get = |c: &str| ints(&t, c);
        let (cols, rows, ws, hs) = (get("col"), get("row"), get("width"), get("height"));
        let (shape, cls) = read_tensors(&f)["cls"].clone();
        let dim = shape[1];
        let frow = get("feature_row");
        for k in 0..t.height() {
            let mut counts = [0usize; 3];
            for yy in rows[k]..rows[k] + hs[k] {
                for xx in cols[k]..cols[k] + ws[k] {
                    let c = class[yy as usize * width + xx as usize];
                    if c < 3.0 {
                        counts[c as usize] += 1;
                    }
                }
            }
            let Some(best) = (0..3)
                .filter(|&c| counts[c] > 0)
                .max_by(|&a, &b| counts[a].cmp(&counts[b]).then(b.cmp(&a)))
            else {
                continue;
            };
            let r = frow[k] as usize;
            samples.push(Sample {
                id: format!("{split}:{k}"),
                x: cls[r * dim..(r + 1) * dim].to_vec(),
                label: best.to_string(),
                split: if split == "train" { "train" } else { "val" },
            });
        }
    }
    same_metrics_as_plain_files(&samples, dir.path(), &head);
    // `heads eval` with the label raster reproduces the validation metrics.
    let out = ok(&[
        "heads",
        "eval",
        "--head",
        p(&head),
        "--features",
        p(&d("val.safetensors")),
        "--labels",
        &labels,
    ]);
    let m: Value = serde_json::from_str(&out).unwrap();
    let (acc, _) = metrics(&head)[&("linear".to_string(), "val".to_string())];
    assert_eq!(m["accuracy"].as_f64().unwrap(), acc);
}
