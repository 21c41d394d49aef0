//! `dinoadapt-dev parity --fixtures DIR`: run the backbone on every reference fixture (the layout of
//! `../shared/fixtures`: Hugging Face, official DINOv2 and timm models with their inputs and
//! expected outputs) and report the worst absolute error per output. Every stored output is
//! checked; one that nothing computes is a failure, so a new fixture cannot pass unexamined.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use clap::Args;
use dinoadapt_core::backend::{matmul_precision, on_device, BackendJob, DeviceSpec};
use dinoadapt_core::checkpoint::infer::ArchOverrides;
use dinoadapt_core::checkpoint::safetensors_io::read_safetensors;
use dinoadapt_core::checkpoint::{load_checkpoint, HostTensor, LoadOptions};
use dinoadapt_core::vit::{patches_to_grid, MatmulPrecision, VisionTransformer, VitFeatures};
use serde::Serialize;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct ParityArgs {
    /// Folder of fixtures (one sub-folder per model, as ../shared/fixtures).
    #[arg(long, default_value = "../shared/fixtures")]
    pub fixtures: PathBuf,
    /// Only fixtures whose folder name contains this.
    #[arg(long)]
    pub only: Option<String>,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Largest allowed absolute error.
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f64,
    /// On CUDA, let matmuls run in TF32 instead of f32-accurate split products.
    #[arg(long)]
    pub tf32: bool,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One weights file of one fixture, checked.
#[derive(Debug, Serialize)]
pub struct FileReport {
    pub fixture: String,
    pub file: String,
    pub layout: String,
    /// Worst absolute error per stored output.
    pub errors: BTreeMap<String, f64>,
    /// Stored outputs nothing computed (a failure).
    pub unchecked: Vec<String>,
    pub worst: f64,
    pub passed: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Family {
    HuggingFace,
    Official,
    Timm,
}

fn family(name: &str) -> Option<Family> {
    if name.starts_with("hf_") {
        Some(Family::HuggingFace)
    } else if name.starts_with("official_") {
        Some(Family::Official)
    } else if name.starts_with("timm_") {
        Some(Family::Timm)
    } else {
        None
    }
}

/// The head count from the fixture's meta.json (official checkpoints cannot tell it).
fn meta_num_heads(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("meta.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    [
        "/constructor_kwargs/num_heads",
        "/model_args/num_heads",
        "/config/num_attention_heads",
    ]
    .iter()
    .find_map(|p| v.pointer(p).and_then(Value::as_u64))
    .map(|h| h as usize)
}

/// Weights files to check for a fixture: every format it ships.
fn weight_files(dir: &Path, fam: Family) -> Vec<PathBuf> {
    let names: &[&str] = match fam {
        Family::HuggingFace => &["model.safetensors"],
        Family::Official => &["model.pth", "model.safetensors"],
        Family::Timm => &["pytorch_model.bin", "model.safetensors"],
    };
    names
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.is_file())
        .collect()
}

fn is_input(name: &str) -> bool {
    name == "pixel_values"
        || name.starts_with("pixel_values_interp")
        || name == "bool_masked_pos"
        || name == "x"
        || name.starts_with("x_interp")
        || name == "masks"
}

struct Io {
    tensors: BTreeMap<String, HostTensor>,
}

impl Io {
    fn get(&self, k: &str) -> anyhow::Result<&HostTensor> {
        self.tensors
            .get(k)
            .with_context(|| format!("io.safetensors has no `{k}`"))
    }

    /// Interpolation cases: suffixes `interpJ` of inputs named `{prefix}_interpJ`.
    fn interp_cases(&self, prefix: &str) -> Vec<String> {
        self.tensors
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("{prefix}_")).map(str::to_string))
            .filter(|s| s.starts_with("interp"))
            .collect()
    }
}

struct Checker<B: Backend> {
    device: B::Device,
    errors: BTreeMap<String, f64>,
}

impl<B: Backend> Checker<B> {
    fn input4(&self, t: &HostTensor) -> Tensor<B, 4> {
        let s: [usize; 4] = t.shape.clone().try_into().expect("NCHW input");
        Tensor::from_data(TensorData::new(t.data.clone(), s), &self.device)
    }

    fn mask(&self, t: &HostTensor) -> Tensor<B, 2, Bool> {
        let s: [usize; 2] = t.shape.clone().try_into().expect("(B, N) mask");
        let v: Vec<bool> = t.data.iter().map(|v| *v > 0.5).collect();
        Tensor::from_data(TensorData::new(v, s), &self.device)
    }

    fn compare<const D: usize>(
        &mut self,
        io: &Io,
        name: &str,
        got: Tensor<B, D>,
    ) -> anyhow::Result<()> {
        let Some(want) = io.tensors.get(name) else {
            return Ok(());
        };
        let shape = got.dims().to_vec();
        let err = if shape != want.shape {
            tracing::error!("{name}: shape {shape:?}, expected {:?}", want.shape);
            f64::INFINITY
        } else {
            let got = got
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            got.iter()
                .zip(&want.data)
                .map(|(a, b)| {
                    if a.is_nan() || b.is_nan() {
                        f64::INFINITY
                    } else {
                        (a - b).abs() as f64
                    }
                })
                .fold(0.0, f64::max)
        };
        self.errors.insert(name.to_string(), err);
        Ok(())
    }

    fn pos_embed(
        &mut self,
        io: &Io,
        model: &VisionTransformer<B>,
        case: &str,
        input: &HostTensor,
    ) -> anyhow::Result<()> {
        let (h, w) = (input.shape[2], input.shape[3]);
        let (prefix, grid) = model.pos_embed_for(model.grid_of(h, w), (h, w));
        let table = match prefix {
            Some(p) => Tensor::cat(vec![p, grid], 0),
            None => grid,
        };
        self.compare(
            io,
            &format!("pos_embed_{case}"),
            table.unsqueeze_dim::<3>(0),
        )
    }
}

fn check_hf<B: Backend>(
    c: &mut Checker<B>,
    io: &Io,
    m: &VisionTransformer<B>,
) -> anyhow::Result<()> {
    let depth = m.config.depth;
    let all: Vec<usize> = (0..depth).collect();
    let x = io.get("pixel_values")?;
    let f = m.forward_features(c.input4(x), None, &all);
    c.compare(io, "last_hidden_state", f.tokens.clone())?;
    c.compare(io, "pooler_output", f.cls())?;
    let (emb, _) = m.prepare_tokens(c.input4(x), None);
    c.compare(io, "hidden_states_0", emb)?;
    for (i, layer) in f.layers.into_iter().enumerate() {
        c.compare(io, &format!("hidden_states_{}", i + 1), layer)?;
    }
    if let Ok(mask) = io.get("bool_masked_pos") {
        let f = m.forward_features(c.input4(x), Some(c.mask(mask)), &[]);
        c.compare(io, "last_hidden_state_masked", f.tokens.clone())?;
        c.compare(io, "pooler_output_masked", f.cls())?;
    }
    for case in io.interp_cases("pixel_values") {
        let x = io.get(&format!("pixel_values_{case}"))?;
        let f = m.forward_features(c.input4(x), None, &[]);
        c.compare(io, &format!("last_hidden_state_{case}"), f.tokens.clone())?;
        c.compare(io, &format!("pooler_output_{case}"), f.cls())?;
        c.pos_embed(io, m, &case, x)?;
    }
    Ok(())
}

fn official_case<B: Backend>(
    c: &mut Checker<B>,
    io: &Io,
    m: &VisionTransformer<B>,
    case: &str,
    f: &VitFeatures<B>,
) -> anyhow::Result<()> {
    c.compare(io, &format!("ff_{case}_x_norm_clstoken"), f.cls())?;
    if let Some(r) = f.registers() {
        c.compare(io, &format!("ff_{case}_x_norm_regtokens"), r)?;
    }
    c.compare(io, &format!("ff_{case}_x_norm_patchtokens"), f.patches())?;
    // get_intermediate_layers(n, reshape=True, return_class_token=True, norm=True)
    for (k, layer) in f.layers.iter().enumerate() {
        let normed = m.apply_norm(layer.clone());
        let cls = dinoadapt_core::vit::model::cls_of(&normed);
        let patches = dinoadapt_core::vit::model::patches_of(&normed, m.config.num_register_tokens);
        c.compare(io, &format!("gil_{case}_{k}_cls"), cls)?;
        c.compare(
            io,
            &format!("gil_{case}_{k}_patch"),
            patches_to_grid(patches, f.grid),
        )?;
    }
    Ok(())
}

fn check_official<B: Backend>(
    c: &mut Checker<B>,
    io: &Io,
    m: &VisionTransformer<B>,
) -> anyhow::Result<()> {
    let n_gil = io
        .tensors
        .keys()
        .filter_map(|k| {
            k.strip_prefix("gil_native_")?
                .strip_suffix("_cls")?
                .parse::<usize>()
                .ok()
        })
        .count();
    let gil = m.last_layers(n_gil);
    let depth = m.config.depth;
    let mut layers = gil.clone();
    layers.push(depth - 1);
    let x = io.get("x")?;
    let mut f = m.forward_features(c.input4(x), None, &layers);
    let prenorm = f.layers.pop().expect("asked for the last block");
    c.compare(io, "ff_native_x_prenorm", prenorm)?;
    c.compare(io, "forward_native", f.cls())?;
    official_case(c, io, m, "native", &f)?;
    if let Ok(mask) = io.get("masks") {
        let f = m.forward_features(c.input4(x), Some(c.mask(mask)), &gil);
        official_case(c, io, m, "masked", &f)?;
    }
    for case in io.interp_cases("x") {
        let x = io.get(&format!("x_{case}"))?;
        let f = m.forward_features(c.input4(x), None, &gil);
        official_case(c, io, m, &case, &f)?;
        c.pos_embed(io, m, &case, x)?;
    }
    Ok(())
}

fn check_timm<B: Backend>(
    c: &mut Checker<B>,
    io: &Io,
    m: &VisionTransformer<B>,
) -> anyhow::Result<()> {
    let mut cases = vec!["native".to_string()];
    cases.extend(io.interp_cases("x"));
    for case in cases {
        let input = if case == "native" {
            "x".to_string()
        } else {
            format!("x_{case}")
        };
        let x = io.get(&input)?;
        let f = m.forward_features(c.input4(x), None, &[]);
        c.compare(io, &format!("forward_features_{case}"), f.tokens.clone())?;
        c.compare(io, &format!("forward_{case}"), f.cls())?;
        if case != "native" {
            c.pos_embed(io, m, &case, x)?;
        }
    }
    Ok(())
}

struct ParityJob {
    files: Vec<(String, Family, PathBuf, Option<usize>)>,
    tolerance: f64,
    precision: MatmulPrecision,
}

fn check_file<B: Backend>(
    device: &B::Device,
    fam: Family,
    file: &Path,
    heads: Option<usize>,
    precision: MatmulPrecision,
) -> anyhow::Result<(String, BTreeMap<String, f64>, Vec<String>)> {
    let dir = file.parent().expect("fixture file has a folder");
    let options = LoadOptions {
        overrides: ArchOverrides {
            num_heads: heads,
            ..Default::default()
        },
    };
    let target = if fam == Family::HuggingFace {
        dir
    } else {
        file
    };
    let ck = load_checkpoint(target, &options)?;
    let model = ck.build::<B>(device)?.with_precision(precision);
    let (tensors, _) = read_safetensors(&dir.join("io.safetensors"))?;
    let io = Io {
        tensors: tensors.into_iter().collect(),
    };
    let mut checker = Checker::<B> {
        device: device.clone(),
        errors: BTreeMap::new(),
    };
    match fam {
        Family::HuggingFace => check_hf(&mut checker, &io, &model)?,
        Family::Official => check_official(&mut checker, &io, &model)?,
        Family::Timm => check_timm(&mut checker, &io, &model)?,
    }
    let unchecked = io
        .tensors
        .keys()
        .filter(|k| !is_input(k) && !checker.errors.contains_key(*k))
        .cloned()
        .collect();
    Ok((ck.layout.short().to_string(), checker.errors, unchecked))
}

impl BackendJob for ParityJob {
    type Output = Vec<FileReport>;

    fn run<B: Backend>(self, device: B::Device) -> Vec<FileReport> {
        let mut reports = Vec::new();
        for (fixture, fam, file, heads) in self.files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let report = match check_file::<B>(&device, fam, &file, heads, self.precision) {
                Ok((layout, errors, unchecked)) => {
                    let worst = errors.values().copied().fold(0.0, f64::max);
                    FileReport {
                        passed: worst <= self.tolerance
                            && unchecked.is_empty()
                            && !errors.is_empty(),
                        fixture,
                        file: name,
                        layout,
                        errors,
                        unchecked,
                        worst,
                        error: None,
                    }
                }
                Err(e) => FileReport {
                    fixture,
                    file: name,
                    layout: String::new(),
                    errors: BTreeMap::new(),
                    unchecked: Vec::new(),
                    worst: f64::INFINITY,
                    passed: false,
                    error: Some(format!("{e:#}")),
                },
            };
            // Progress as each file completes (the first CUDA runs compile and tune kernels).
            eprintln!(
                "parity: {} {} worst {:.3e} {}",
                report.fixture,
                report.file,
                report.worst,
                if report.passed { "ok" } else { "FAIL" }
            );
            reports.push(report);
        }
        reports
    }
}

pub fn run(args: ParityArgs) -> anyhow::Result<ExitCode> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&args.fixtures)
        .with_context(|| format!("reading fixtures folder {}", args.fixtures.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("io.safetensors").is_file())
        .collect();
    dirs.sort();
    let mut files = Vec::new();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if args
            .only
            .as_ref()
            .is_some_and(|o| !name.contains(o.as_str()))
        {
            continue;
        }
        let Some(fam) = family(&name) else { continue };
        let heads = meta_num_heads(&dir);
        for f in weight_files(&dir, fam) {
            files.push((name.clone(), fam, f, heads));
        }
    }
    if files.is_empty() {
        bail!("no backbone fixtures found in {}", args.fixtures.display());
    }
    let reports = on_device(
        args.device,
        ParityJob {
            files,
            tolerance: args.tolerance,
            precision: matmul_precision(args.device, args.tf32),
        },
    )?;
    println!(
        "{:<26} {:<18} {:<12} {:>12}  result",
        "fixture", "file", "layout", "worst |err|"
    );
    for r in &reports {
        println!(
            "{:<26} {:<18} {:<12} {:>12.3e}  {}",
            r.fixture,
            r.file,
            r.layout,
            r.worst,
            if r.passed { "ok" } else { "FAIL" }
        );
        if let Some(e) = &r.error {
            println!("    error: {e}");
        }
        if !r.unchecked.is_empty() {
            println!("    outputs not checked: {:?}", r.unchecked);
        }
        if !r.passed {
            for (k, v) in r.errors.iter().filter(|(_, v)| **v > args.tolerance) {
                println!("    {k}: {v:.3e}");
            }
        }
    }
    let failed = reports.iter().filter(|r| !r.passed).count();
    println!(
        "parity summary: {} of {} checkpoint files within {:e} on {}",
        reports.len() - failed,
        reports.len(),
        args.tolerance,
        args.device
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
