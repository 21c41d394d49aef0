//! `heads train|eval|predict --task classify`: runs the probes of DINOv2's evaluation on feature files that `embed`
//! wrote: kNN (k = 20, T = 0.07), the linear probe with an lr × weight-decay sweep chosen on the
//! validation split, and optional few-shot subsets. Labels come from the image paths of the
//! manifest beside each feature file (the parent folder, ImageFolder style) or from a CSV.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

use super::{required, Common};
use dinoadapt_core::checkpoint::safetensors_io::{read_safetensors, write_safetensors};
use dinoadapt_core::eval::knn::knn_votes as knn_scores;
use dinoadapt_datasets::column as col;
use dinoadapt_datasets::write_parquet;
use dinoadapt_heads::metrics::ClassificationMetrics;
use dinoadapt_heads::{few_shot, sweep_linear, LinearProbe, LinearProbeConfig};
use polars::prelude::{DataFrame, IntoColumn, NamedFrom, ParquetReader, SerReader, Series};
use serde_json::json;

#[derive(Args, Debug, Clone)]
pub struct FeatureArgs {
    /// classify: which features, `cls` or `cls+avgpool` (class token and mean patch token
    /// concatenated, as DINOv2's linear evaluation does).
    #[arg(long, default_value = "cls")]
    pub features: String,
    /// classify: labels, `folder` (the parent folder of each image path in the manifest beside
    /// the feature file) or `csv:FILE` (columns path,label).
    #[arg(long, default_value = "folder")]
    pub labels: String,
}

/// `heads train --task classify`.
#[derive(Args, Debug)]
pub struct ClassifyTrainArgs {
    /// classify: training features (safetensors from `embed`, with its .parquet manifest).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// classify: validation features (the sweep is chosen on them).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// classify: test features (reported, never used for choices).
    #[arg(long)]
    pub test: Option<PathBuf>,
    #[command(flatten)]
    pub feats: FeatureArgs,
    /// classify: kNN neighbours and temperature.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f64,
    /// classify: learning rates of the linear sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.001,0.003,0.01,0.03,0.1"
    )]
    pub lrs: Vec<f64>,
    /// classify: weight decays of the linear sweep.
    #[arg(long, value_delimiter = ',', default_value = "0,0.0001,0.001,0.01")]
    pub wds: Vec<f64>,
    /// classify: also run few-shot probes with these many training samples per class (e.g. 1,5,10).
    #[arg(long, value_delimiter = ',')]
    pub few_shot: Vec<usize>,
}

/// Features of one file and the image path of each row.
struct Split {
    x: Vec<f32>,
    dim: usize,
    paths: Vec<String>,
}

fn load_features(path: &Path, kind: &str) -> anyhow::Result<Split> {
    let (tensors, _) = read_safetensors(path)?;
    let get = |name: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .with_context(|| format!("{}: no `{name}` features", path.display()))
    };
    let cls = get("cls")?;
    let (n, d) = (cls.shape[0], cls.shape[1]);
    let (x, dim) = match kind {
        "cls" => (cls.data.clone(), d),
        "cls+avgpool" => {
            let patch = get("patch")?;
            let p = patch.shape[1];
            let mut x = Vec::with_capacity(n * 2 * d);
            for i in 0..n {
                x.extend_from_slice(&cls.data[i * d..(i + 1) * d]);
                let tokens = &patch.data[i * p * d..(i + 1) * p * d];
                let mut mean = vec![0f32; d];
                for t in tokens.chunks(d) {
                    mean.iter_mut().zip(t).for_each(|(m, v)| *m += v / p as f32);
                }
                x.extend(mean);
            }
            (x, 2 * d)
        }
        other => bail!("--features `{other}`: cls or cls+avgpool"),
    };
    // Feature row i is the manifest row whose `index` is i.
    let manifest = path.with_extension("parquet");
    let df =
        ParquetReader::new(std::fs::File::open(&manifest).with_context(|| {
            format!("{}: the manifest beside the features", manifest.display())
        })?)
        .finish()?;
    let index = df.column("index")?.u32()?.clone();
    let p = df.column("path")?.str()?.clone();
    let mut paths = vec![String::new(); n];
    for r in 0..df.height() {
        if let (Some(i), Some(path)) = (index.get(r), p.get(r)) {
            if (i as usize) < n {
                paths[i as usize] = path.to_string();
            }
        }
    }
    Ok(Split { x, dim, paths })
}

fn label_names(split: &Split, spec: &str) -> anyhow::Result<Vec<String>> {
    if spec == "folder" {
        return split
            .paths
            .iter()
            .map(|p| {
                Path::new(p)
                    .parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .with_context(|| format!("`{p}` has no parent folder to name its class"))
            })
            .collect();
    }
    let file = spec
        .strip_prefix("csv:")
        .with_context(|| format!("--labels `{spec}`: folder or csv:FILE"))?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let map: HashMap<String, String> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(p, l)| (p.trim().to_string(), l.trim().to_string()))
        .collect();
    split
        .paths
        .iter()
        .map(|p| {
            map.get(p)
                .or_else(|| {
                    let name = Path::new(p).file_name()?.to_str()?;
                    map.get(name)
                })
                .cloned()
                .with_context(|| format!("{file}: no label for `{p}`"))
        })
        .collect()
}

fn encode(names: &[String], classes: &[String]) -> anyhow::Result<Vec<usize>> {
    names
        .iter()
        .map(|n| {
            classes.iter().position(|c| c == n).with_context(|| {
                format!("class `{n}` is not among the training classes {classes:?}")
            })
        })
        .collect()
}

fn results_table(rows: &[(String, String, ClassificationMetrics)]) -> anyhow::Result<DataFrame> {
    Ok(DataFrame::new(
        rows.len(),
        vec![
            col::<String>("method", rows.iter().map(|r| r.0.clone()).collect()),
            col::<String>("split", rows.iter().map(|r| r.1.clone()).collect()),
            col::<u64>("samples", rows.iter().map(|r| r.2.samples as u64).collect()),
            col::<f64>("accuracy", rows.iter().map(|r| r.2.accuracy).collect()),
            col::<f64>(
                "balanced_accuracy",
                rows.iter().map(|r| r.2.balanced_accuracy).collect(),
            ),
            col::<f64>("macro_f1", rows.iter().map(|r| r.2.macro_f1).collect()),
            Series::new(
                "auroc".into(),
                rows.iter().map(|r| r.2.auroc).collect::<Vec<_>>(),
            )
            .into_column(),
        ],
    )?)
}

fn save_head(
    dir: &Path,
    probe: &LinearProbe,
    classes: &[String],
    feats: &FeatureArgs,
) -> anyhow::Result<()> {
    let meta = HashMap::from([
        ("dinoadapt.head".to_string(), "linear".to_string()),
        ("classes".to_string(), serde_json::to_string(classes)?),
        ("features".to_string(), feats.features.clone()),
        ("config".to_string(), serde_json::to_string(&probe.config)?),
    ]);
    let (c, d) = (probe.classes, probe.dim);
    let host = |shape: Vec<usize>, data: &[f32]| dinoadapt_core::checkpoint::HostTensor {
        shape,
        data: data.to_vec(),
    };
    write_safetensors(
        &dir.join("head.safetensors"),
        &[
            ("weight".to_string(), host(vec![c, d], &probe.weight)),
            ("bias".to_string(), host(vec![c], &probe.bias)),
            ("feature_mean".to_string(), host(vec![d], &probe.mean)),
            ("feature_std".to_string(), host(vec![d], &probe.std)),
        ],
        meta,
    )?;
    std::fs::write(
        dir.join("head.json"),
        serde_json::to_string_pretty(&json!({
            "head": "linear",
            "task": "classify",
            "classes": classes,
            "features": feats.features,
            "dim": d,
            "config": probe.config,
        }))?,
    )?;
    Ok(())
}

fn load_head(dir: &Path) -> anyhow::Result<(LinearProbe, Vec<String>, String)> {
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("head.json"))
            .with_context(|| format!("{}: not a head folder (no head.json)", dir.display()))?,
    )?;
    let classes: Vec<String> = serde_json::from_value(info["classes"].clone())?;
    let features = info["features"].as_str().unwrap_or("cls").to_string();
    let config: LinearProbeConfig = serde_json::from_value(info["config"].clone())?;
    let (tensors, _) = read_safetensors(&dir.join("head.safetensors"))?;
    let t = |n: &str| {
        tensors
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, t)| t.clone())
            .with_context(|| format!("head.safetensors: no `{n}`"))
    };
    let weight = t("weight")?;
    Ok((
        LinearProbe {
            classes: weight.shape[0],
            dim: weight.shape[1],
            weight: weight.data,
            bias: t("bias")?.data,
            mean: t("feature_mean")?.data,
            std: t("feature_std")?.data,
            config,
        },
        classes,
        features,
    ))
}

pub fn train(args: &ClassifyTrainArgs, common: &Common) -> anyhow::Result<ExitCode> {
    let train_path = required(&args.train, "--train", "classify")?;
    let val_path = required(&args.val, "--val", "classify")?;
    let out = required(&common.out, "--out", "classify")?;
    let epochs = common.epochs.unwrap_or(300);
    let tr = load_features(train_path, &args.feats.features)?;
    let va = load_features(val_path, &args.feats.features)?;
    let tr_names = label_names(&tr, &args.feats.labels)?;
    let classes: Vec<String> = tr_names
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if classes.len() < 2 {
        bail!(
            "the training features have {} class(es); a probe needs two or more",
            classes.len()
        );
    }
    let (c, dim) = (classes.len(), tr.dim);
    let ytr = encode(&tr_names, &classes)?;
    let yva = encode(&label_names(&va, &args.feats.labels)?, &classes)?;
    let test = match &args.test {
        Some(p) => {
            let s = load_features(p, &args.feats.features)?;
            let y = encode(&label_names(&s, &args.feats.labels)?, &classes)?;
            Some((s, y))
        }
        None => None,
    };
    let mut rows: Vec<(String, String, ClassificationMetrics)> = Vec::new();
    let mut eval_splits: Vec<(&str, &[f32], &[usize])> = vec![("val", &va.x, &yva)];
    if let Some((s, y)) = &test {
        eval_splits.push(("test", &s.x, y));
    }
    // kNN.
    for (name, x, y) in &eval_splits {
        let s = knn_scores(&tr.x, &ytr, x, dim, c, args.k, args.temperature);
        rows.push((
            format!("knn{}", args.k),
            name.to_string(),
            ClassificationMetrics::compute(y, &s, c),
        ));
    }
    // Linear sweep on val; the best probe reported on every split.
    let (sweep, best) = sweep_linear(
        &tr.x,
        &ytr,
        &va.x,
        &yva,
        dim,
        c,
        &args.lrs,
        &args.wds,
        epochs,
        common.seed,
    );
    for (name, x, y) in &eval_splits {
        rows.push((
            "linear".into(),
            name.to_string(),
            ClassificationMetrics::compute(y, &best.predict_proba(x), c),
        ));
    }
    // Few-shot: k samples per class from train, the best sweep settings.
    for &k in &args.few_shot {
        let pick = few_shot(&ytr, c, k, common.seed);
        let xs: Vec<f32> = pick
            .iter()
            .flat_map(|&i| tr.x[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        let ys: Vec<usize> = pick.iter().map(|&i| ytr[i]).collect();
        let probe = LinearProbe::train(&xs, &ys, dim, c, best.config);
        for (name, x, y) in &eval_splits {
            rows.push((
                format!("linear_{k}shot"),
                name.to_string(),
                ClassificationMetrics::compute(y, &probe.predict_proba(x), c),
            ));
            let s = knn_scores(
                &xs,
                &ys,
                x,
                dim,
                c,
                args.k.min(xs.len() / dim),
                args.temperature,
            );
            rows.push((
                format!("knn_{k}shot"),
                name.to_string(),
                ClassificationMetrics::compute(y, &s, c),
            ));
        }
    }
    std::fs::create_dir_all(out)?;
    write_parquet(&out.join("results.parquet"), &mut results_table(&rows)?)?;
    let mut sweep_df = DataFrame::new(
        sweep.len(),
        vec![
            col::<f64>("lr", sweep.iter().map(|p| p.lr).collect()),
            col::<f64>(
                "weight_decay",
                sweep.iter().map(|p| p.weight_decay).collect(),
            ),
            col::<f64>(
                "val_accuracy",
                sweep.iter().map(|p| p.val.accuracy).collect(),
            ),
            col::<f64>(
                "val_balanced_accuracy",
                sweep.iter().map(|p| p.val.balanced_accuracy).collect(),
            ),
        ],
    )?;
    write_parquet(&out.join("sweep.parquet"), &mut sweep_df)?;
    save_head(out, &best, &classes, &args.feats)?;
    let summary: Vec<_> = rows
        .iter()
        .map(|(m, s, r)| {
            json!({"method": m, "split": s, "accuracy": r.accuracy,
            "balanced_accuracy": r.balanced_accuracy, "macro_f1": r.macro_f1, "auroc": r.auroc})
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "classes": classes, "train": ytr.len(), "val": yva.len(),
            "linear_lr": best.config.lr, "linear_weight_decay": best.config.weight_decay,
            "results": summary,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

/// A saved head and the features it is applied to, in the head's feature kind.
fn head_and_features(
    head: &Path,
    features_path: &Path,
) -> anyhow::Result<(LinearProbe, Vec<String>, Split)> {
    let (probe, classes, features) = load_head(head)?;
    let s = load_features(features_path, &features)?;
    if s.dim != probe.dim {
        bail!(
            "the features have dimension {}, the head takes {}",
            s.dim,
            probe.dim
        );
    }
    Ok((probe, classes, s))
}

pub fn eval(head: &Path, features_path: &Path, labels: &str) -> anyhow::Result<ExitCode> {
    let (probe, classes, s) = head_and_features(head, features_path)?;
    let y = encode(&label_names(&s, labels)?, &classes)?;
    let m = ClassificationMetrics::compute(&y, &probe.predict_proba(&s.x), classes.len());
    println!("{}", serde_json::to_string_pretty(&m)?);
    Ok(ExitCode::SUCCESS)
}

pub fn predict(head: &Path, features_path: &Path, out: &Path) -> anyhow::Result<ExitCode> {
    let (probe, classes, s) = head_and_features(head, features_path)?;
    let p = probe.predict_proba(&s.x);
    let c = classes.len();
    let best = dinoadapt_heads::metrics::argmax_rows(&p, c);
    let mut columns = vec![
        col::<String>("path", s.paths.clone()),
        col::<String>(
            "predicted",
            best.iter().map(|&b| classes[b].clone()).collect(),
        ),
    ];
    for (k, name) in classes.iter().enumerate() {
        columns.push(col::<f64>(
            &format!("p_{name}"),
            p.chunks(c).map(|r| r[k]).collect(),
        ));
    }
    let mut df = DataFrame::new(s.paths.len(), columns)?;
    write_parquet(out, &mut df)?;
    eprintln!("{} predictions -> {}", s.paths.len(), out.display());
    Ok(ExitCode::SUCCESS)
}
