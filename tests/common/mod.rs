//! Helpers shared by the end-to-end tests of the `dinoadapt` program.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared` beside the repository. Under `CI=true` its absence fails the test; elsewhere the
/// test is skipped with a message.
pub fn shared() -> Option<PathBuf> {
    let dir = crate_dir().join("../shared");
    if dir.join("fixtures").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("../shared is missing beside the repository; CI needs it");
    }
    eprintln!("skipping: ../shared is not beside the repository");
    None
}

pub fn fixtures() -> Option<PathBuf> {
    shared().map(|s| s.join("fixtures"))
}

pub fn dinoadapt(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_dinoadapt"))
        .args(args)
        .output()
        .expect("run dinoadapt");
    echo(args, &out);
    out
}

/// The command and what it printed, on the test's stderr (shown when it fails).
fn echo(args: &[&str], out: &Output) {
    eprintln!(
        "$ dinoadapt {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn ok(args: &[&str]) -> String {
    let out = dinoadapt(args);
    assert!(out.status.success(), "dinoadapt {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Tensors of a safetensors file: name -> (shape, f32 data).
pub fn read_tensors(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k, (v.shape().to_vec(), data))
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The crate's folder as cargo gives it when it runs the test (a test binary built in another
/// checkout that shares the target directory still finds this checkout's `../shared`), else
/// where the test was compiled.
pub fn crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A Parquet file as a DataFrame.
pub fn table(path: &Path) -> polars::prelude::DataFrame {
    use polars::prelude::{ParquetReader, SerReader};
    ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap()
}

/// A path as a TOML string (for `--set KEY=VALUE`).
pub fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The arguments of `pretrain --recipe RECIPE` at tiny scale, writing to `out`: the sizes a
/// recipe test changes (one epoch of two iterations of two images, tiny heads, two local
/// crops), then `extra` (`KEY=VALUE`, later ones win).
pub fn tiny_pretrain_args(recipe: &Path, out: &Path, extra: &[String]) -> Vec<String> {
    let mut sets: Vec<String> = vec![
        format!("train.output_dir={}", quoted(out)),
        "train.device=\"cpu\"".into(),
        "train.checkpoint_every=2".into(),
        "data.batch_size=2".into(),
        "heads.prototypes=32".into(),
        "heads.hidden_dim=32".into(),
        "heads.bottleneck_dim=16".into(),
        "optim.epochs=1".into(),
        "optim.epoch_length=2".into(),
        "optim.warmup_epochs=0".into(),
        "crops.local_crops=2".into(),
    ];
    sets.extend(extra.iter().cloned());
    let mut args = vec![
        "pretrain".to_string(),
        "--recipe".into(),
        recipe.display().to_string(),
        "--quiet".into(),
    ];
    for s in sets {
        args.extend(["--set".to_string(), s]);
    }
    args
}

/// The python of the interop environment (`$DINOADAPT_PYTHON`, else
/// `~/.cache/dinoadapt/venv/bin/python`), if it exists.
pub fn venv_python() -> Option<PathBuf> {
    std::env::var_os("DINOADAPT_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/dinoadapt/venv/bin/python"))
        })
        .filter(|p| p.is_file())
}

/// An integer column of a table as i64 values.
pub fn ints(df: &polars::prelude::DataFrame, column: &str) -> Vec<i64> {
    let c = df
        .column(column)
        .unwrap()
        .cast(&polars::prelude::DataType::Int64)
        .unwrap();
    let c = c.i64().unwrap().clone();
    (0..c.len()).map(|i| c.get(i).unwrap()).collect()
}

/// Band `band` (1-based) of a raster, whole.
pub fn whole(r: &dinoadapt_satellite::Raster, band: usize) -> Vec<f32> {
    let i = r.info();
    r.read_window(
        &[band],
        dinoadapt_satellite::Window {
            col: 0,
            row: 0,
            width: i.width,
            height: i.height,
        },
    )
    .unwrap()
    .data
}

/// A tiny pre-training recipe (ViT of dimension 32, 3 iterations of 4 images, 32- and 16-px
/// crops) in `dir`, whose `[data]` section is `data` plus the batch size; it writes to `dir/run`.
pub fn tiny_pretrain_recipe(dir: &Path, data: &str) -> PathBuf {
    let recipe = dir.join("recipe.toml");
    std::fs::write(
        &recipe,
        format!(
            r#"
[model]
arch = "vits14"
embed_dim = 32
depth = 2
num_heads = 2
patch_size = 8
img_size = 32
mlp_ratio = 2.0

[heads]
prototypes = 64
hidden_dim = 32
bottleneck_dim = 16

[data]
batch_size = 4
{data}

[crops]
global_size = 32
local_size = 16
local_crops = 2
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]

[optim]
epochs = 1
epoch_length = 3
warmup_epochs = 0

[train]
output_dir = "run"
checkpoint_every = 3
"#
        ),
    )
    .unwrap();
    recipe
}

/// The iterations `dir/run/summary.json` reports.
pub fn pretrain_steps(dir: &Path) -> serde_json::Value {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/summary.json")).unwrap())
            .unwrap();
    summary["steps"].clone()
}

/// `dinoadapt args` under a virtual-memory limit (`ulimit -v`, KiB), killed after `limit`
/// (a hang fails the test); its output, echoed.
pub fn run_bounded(args: &[&str], memory_kib: u64, limit: std::time::Duration) -> Output {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {memory_kib}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_dinoadapt"))
        // Mapped memory grows with the thread count (each thread's stack and glibc malloc
        // arena, 64 MiB of reserved address space apiece), which differs between hosts: fix
        // both so that the limit measures what an input makes the program allocate.
        .env("RAYON_NUM_THREADS", "2")
        .env("MALLOC_ARENA_MAX", "2")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            child.kill().unwrap();
            panic!("dinoadapt {args:?} still running after {limit:?} (a hang)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    echo(args, &out);
    out
}

/// Classes 0 (bare), 1 (sparse), 2 (vegetated) by NDVI of rgbn.tif (band 4 NIR, band 1 red),
/// 255 where NIR + red is 0; written on the source grid.
pub fn vegetation_classes(src: &Path, out: &Path) {
    let r = dinoadapt_satellite::Raster::open(src).unwrap();
    let (nir, red) = (whole(&r, 4), whole(&r, 1));
    let classes: Vec<u8> = nir
        .iter()
        .zip(&red)
        .map(|(&n, &r)| {
            if n + r == 0.0 {
                return 255;
            }
            let ndvi = (n - r) / (n + r);
            if ndvi < 0.05 {
                0
            } else if ndvi < 0.25 {
                1
            } else {
                2
            }
        })
        .collect();
    let info = r.info();
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut ds = driver
        .create_with_band_type::<u8, _>(out, info.width, info.height, 1)
        .unwrap();
    ds.set_geo_transform(&info.geotransform.unwrap().0).unwrap();
    ds.set_projection(&info.crs.as_ref().unwrap().wkt).unwrap();
    let mut band = ds.rasterband(1).unwrap();
    band.set_no_data_value(Some(255.0)).unwrap();
    let mut buf = gdal::raster::Buffer::new((info.width, info.height), classes);
    band.write((0, 0), (info.width, info.height), &mut buf)
        .unwrap();
}

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The `__metadata__` of a safetensors file.
pub fn safetensors_metadata(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"].as_object().unwrap().clone()
}
