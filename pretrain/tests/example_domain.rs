//! The example domain of `docs/adding-a-domain.md`: fluorescence microscopy, written as that
//! walk-through says (a config struct read from `[data.source]`, an image source, a `Domain`
//! implementation, a registry) and pre-trained on through the same calls the program makes;
//! its fields are embedded tile by tile as `dinoadapt embed --source` embeds them; its
//! dense-head methods (targets from a label image, prediction into a label image) are called as
//! `heads train|predict --task segment` call them.
//! If this test needs more than the walk-through describes, the walk-through is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use std::collections::HashMap;

use dinoadapt_core::checkpoint::{load_checkpoint, LoadOptions};
use dinoadapt_datasets::batch::{BatchConfig, Shard};
use dinoadapt_datasets::dense::{tagged_preprocessing, untagged_preprocessing};
use dinoadapt_datasets::embedding::{EmbedSettings, InputsBatch, Progress, RegionEmbedder, Silent};
use dinoadapt_datasets::{
    find_domain, run_batch, DenseLabels, DenseModel, DensePredictOptions, DenseTargetOptions,
    DenseValues, Domain, DomainError, EmbeddingInput, EmbeddingInputs, FeatureFile, ImageError,
    ImageSource, Region, RegionBatch, RegionSource, SourceOptions,
};
use dinoadapt_pretrain::{run, Recipe, RunOptions};
use image::{DynamicImage, ImageBuffer, Luma};
use serde::{Deserialize, Serialize};

// Step 1: the domain's `[data.source]` keys.
/// 16-bit single-channel fluorescence images, windowed to 8 bits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldsConfig {
    /// 16-bit grayscale PNG files, one fluorescence channel each.
    paths: Vec<PathBuf>,
    /// Raw intensities mapped to black and white.
    #[serde(default = "default_window")]
    window: [u16; 2],
    /// Side of the square tiles a field is embedded in.
    #[serde(default = "default_tile")]
    tile: usize,
}

fn default_tile() -> usize {
    16
}

fn default_window() -> [u16; 2] {
    [0, u16::MAX]
}

// Step 2: the pre-training image pool.
struct Fields {
    cfg: FieldsConfig,
}

impl ImageSource for Fields {
    fn len(&self) -> usize {
        self.cfg.paths.len()
    }

    fn image(&self, index: usize, _seed: u64) -> Result<DynamicImage, ImageError> {
        let gray = windowed(&self.cfg.paths[index], self.cfg.window)?;
        Ok(DynamicImage::ImageLuma8(gray).into_rgb8().into())
    }

    fn describe(&self) -> String {
        format!("{} fluorescence fields", self.cfg.paths.len())
    }
}

/// A field's raw intensities windowed to 8 bits.
fn windowed(path: &Path, window: [u16; 2]) -> Result<image::GrayImage, ImageError> {
    let raw = image::open(path)
        .map_err(|e| ImageError::Decode {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?
        .into_luma16();
    let [lo, hi] = window.map(f32::from);
    Ok(ImageBuffer::from_fn(raw.width(), raw.height(), |x, y| {
        let v = (f32::from(raw.get_pixel(x, y)[0]) - lo) / (hi - lo).max(1.0);
        Luma([(v.clamp(0.0, 1.0) * 255.0).round() as u8])
    }))
}

// Step 3: the plugin.
struct Microscopy;

impl Domain for Microscopy {
    fn name(&self) -> &'static str {
        "microscopy"
    }

    fn pretraining_images(
        &self,
        source: &SourceOptions,
    ) -> Option<Result<Arc<dyn ImageSource>, DomainError>> {
        Some((|| {
            let cfg = source.parse_anchored(self.name(), |c: &mut FieldsConfig| &mut c.paths)?;
            if cfg.paths.is_empty() {
                return Err(DomainError::Options {
                    domain: "microscopy",
                    message: "paths: no images".into(),
                });
            }
            Ok(Arc::new(Fields { cfg }) as Arc<dyn ImageSource>)
        })())
    }

    fn embedding_inputs(
        &self,
        source: &SourceOptions,
    ) -> Option<Result<Box<dyn EmbeddingInputs>, DomainError>> {
        Some(
            source
                .parse_anchored(self.name(), |c: &mut FieldsConfig| &mut c.paths)
                .map(|cfg| Box::new(FieldInputs::new(cfg)) as Box<dyn EmbeddingInputs>),
        )
    }

    fn dense_targets(
        &self,
        file: &FeatureFile,
        options: &DenseTargetOptions,
    ) -> Option<Result<DenseLabels, DomainError>> {
        Some(field_labels(file, options))
    }

    fn dense_input_size(
        &self,
        preprocessing: &serde_json::Value,
    ) -> Option<Result<usize, DomainError>> {
        Some(untagged_preprocessing::<FieldTiles>("microscopy", preprocessing).map(|t| t.size))
    }

    fn dense_predict(
        &self,
        options: &DensePredictOptions,
        model: &mut dyn DenseModel,
        progress: &mut dyn Progress,
    ) -> Option<Result<serde_json::Value, DomainError>> {
        Some(predict_field(options, model, progress))
    }
}

// Step 4: embedding. Each field is one input, cut into square tiles on a grid; the tiles
// become one feature file, whose metadata says how (the dense heads read it back).
struct FieldInputs {
    cfg: FieldsConfig,
    inputs: Vec<EmbeddingInput>,
}

impl FieldInputs {
    fn new(cfg: FieldsConfig) -> FieldInputs {
        let inputs = cfg
            .paths
            .iter()
            .map(|p| EmbeddingInput {
                id: p.file_stem().unwrap().to_string_lossy().into_owned(),
                path: p.clone(),
            })
            .collect();
        FieldInputs { cfg, inputs }
    }
}

impl EmbeddingInputs for FieldInputs {
    fn inputs(&self) -> &[EmbeddingInput] {
        &self.inputs
    }

    fn for_each_source(
        &self,
        input: &EmbeddingInput,
        embed: &mut dyn FnMut(String, Result<Box<dyn RegionSource>, DomainError>),
    ) -> Result<(), DomainError> {
        let gray = windowed(&input.path, self.cfg.window).map_err(input_error)?;
        let size = self.cfg.tile;
        let origins: Vec<[u32; 2]> = (0..gray.height() as usize / size)
            .flat_map(|r| (0..gray.width() as usize / size).map(move |c| (c, r)))
            .map(|(c, r)| [(c * size) as u32, (r * size) as u32])
            .collect();
        let tiling = FieldTiles {
            size,
            window: self.cfg.window,
        };
        let source = FieldRegions {
            field: input.id.clone(),
            gray,
            tiling,
            origins,
            next: 0,
        };
        embed(input.id.clone(), Ok(Box::new(source)));
        Ok(())
    }
}

/// The tiles of one field, ImageNet-normalised, the gray value in all three channels.
struct FieldRegions {
    field: String,
    gray: image::GrayImage,
    tiling: FieldTiles,
    origins: Vec<[u32; 2]>,
    next: usize,
}

impl RegionSource for FieldRegions {
    fn size(&self) -> (usize, usize) {
        (self.tiling.size, self.tiling.size)
    }

    fn max_regions(&self) -> usize {
        self.origins.len()
    }

    fn next_batch(&mut self, max: usize) -> Result<Option<RegionBatch>, String> {
        let size = self.tiling.size;
        let end = (self.next + max).min(self.origins.len());
        if self.next == end {
            return Ok(None);
        }
        let (mut regions, mut pixels) = (Vec::new(), Vec::new());
        for (index, &[x0, y0]) in self.origins.iter().enumerate().take(end).skip(self.next) {
            for (mean, std) in [(0.485, 0.229), (0.456, 0.224), (0.406, 0.225)] {
                for y in 0..size as u32 {
                    for x in 0..size as u32 {
                        let v = f32::from(self.gray.get_pixel(x0 + x, y0 + y)[0]) / 255.0;
                        pixels.push((v - mean) / std);
                    }
                }
            }
            regions.push(Region {
                source: self.field.clone(),
                index,
                col: i64::from(x0),
                row: i64::from(y0),
                width: size,
                height: size,
                bounds: [
                    f64::from(x0),
                    f64::from(y0),
                    f64::from(x0) + size as f64,
                    f64::from(y0) + size as f64,
                ],
                crs: "px".into(),
                valid_fraction: 1.0,
            });
        }
        self.next = end;
        Ok(Some(RegionBatch {
            regions,
            pixels,
            size: (size, size),
            skipped: Vec::new(),
        }))
    }

    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("domain".into(), "microscopy".into()),
            ("field".into(), self.field.clone()),
            (
                "tiling".into(),
                serde_json::to_string(&self.tiling).unwrap(),
            ),
            (
                "tile_origins".into(),
                serde_json::to_string(&self.origins).unwrap(),
            ),
        ])
    }

    fn unit(&self) -> &'static str {
        "tiles"
    }
}

// Step 5: dense heads. How a field became model inputs (recorded in the features' metadata
// by the domain's embed, and in head.json): square tiles of `size` px, windowed as above.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FieldTiles {
    size: usize,
    window: [u16; 2],
}

fn input_error(e: impl std::fmt::Display) -> DomainError {
    DomainError::Input(e.to_string())
}

/// Per-tile classes of a feature file from an 8-bit label image of its field (the value is
/// the class; `ignore_index` pixels have no target).
fn field_labels(f: &FeatureFile, t: &DenseTargetOptions) -> Result<DenseLabels, DomainError> {
    if t.values == DenseValues::Heights {
        return Err(DomainError::Input(format!(
            "{}: microscopy labels are classes, not heights",
            f.path.display()
        )));
    }
    let tiles: FieldTiles = f.meta_json("tiling")?;
    let origins: Vec<[u32; 2]> = f.meta_json("tile_origins")?;
    let labels = image::open(t.targets).map_err(input_error)?.into_luma8();
    let size = tiles.size;
    let mut values = Vec::with_capacity(origins.len() * size * size);
    for [x0, y0] in &origins {
        for y in 0..size as u32 {
            for x in 0..size as u32 {
                let v = u32::from(labels.get_pixel(x0 + x, y0 + y)[0]);
                values.push(if v == t.ignore_index {
                    f32::NAN
                } else {
                    v as f32
                });
            }
        }
    }
    Ok(DenseLabels {
        preprocessing: tagged_preprocessing("microscopy", &tiles)?,
        input_size: size,
        values,
        class_names: t.class_names.to_vec(),
        record: serde_json::json!({"labels": "label image", "units": "class"}),
    })
}

/// A field through `model`, tile by tile: an 8-bit label image (the most probable class) at
/// `o.out`.
fn predict_field(
    o: &DensePredictOptions,
    model: &mut dyn DenseModel,
    progress: &mut dyn Progress,
) -> Result<serde_json::Value, DomainError> {
    let tiles: FieldTiles = untagged_preprocessing("microscopy", o.preprocessing)?;
    let field = Fields {
        cfg: FieldsConfig {
            paths: vec![o.input.to_path_buf()],
            window: tiles.window,
            tile: tiles.size,
        },
    };
    let rgb = field.image(0, 0).map_err(input_error)?.into_rgb8();
    let (w, h, size) = (rgb.width() as usize, rgb.height() as usize, tiles.size);
    let origins: Vec<(usize, usize)> = (0..h / size)
        .flat_map(|ty| (0..w / size).map(move |tx| (tx * size, ty * size)))
        .collect();
    let (channels, plane) = (model.channels(), size * size);
    let mut out = image::GrayImage::new(w as u32, h as u32);
    progress.start(origins.len(), "tiles");
    for (done, &(x0, y0)) in origins.iter().enumerate() {
        let mut pixels = Vec::with_capacity(3 * plane);
        for c in 0..3 {
            for y in y0..y0 + size {
                for x in x0..x0 + size {
                    pixels.push(f32::from(rgb.get_pixel(x as u32, y as u32)[c]) / 255.0);
                }
            }
        }
        let maps = model
            .predict(pixels, 1, (size, size))
            .map_err(DomainError::Input)?;
        for q in 0..plane {
            let class = dinoadapt_datasets::class_planes::argmax_at(&maps, channels, plane, q);
            let (x, y) = (x0 + q % size, y0 + q / size);
            out.put_pixel(x as u32, y as u32, Luma([class as u8]));
        }
        progress.set(done + 1);
    }
    progress.finish();
    out.save(o.out).map_err(input_error)?;
    Ok(serde_json::json!({"tiles": origins.len(), "mask": o.out}))
}

// Step 6: the registry (the program's is `src/domains.rs`).
fn domains() -> Vec<&'static dyn Domain> {
    vec![&Microscopy]
}

/// What `dinoadapt pretrain` does with a recipe's `[data.source]`.
fn images(recipe: &Recipe) -> Result<Arc<dyn ImageSource>, DomainError> {
    let source = recipe.data.source.as_ref().expect("[data.source]");
    let domain = find_domain(&domains(), &source.domain)?;
    let options = SourceOptions {
        options: serde_json::to_value(&source.options).expect("TOML values are JSON values"),
        base: &source.base,
        seed: recipe.train.seed,
        scratch: &recipe.train.output_dir,
    };
    domain
        .pretraining_images(&options)
        .expect("feeds pre-training")
}

/// What `dinoadapt embed --source` does with a recipe's `[data.source]`.
fn embedding_inputs(recipe: &Recipe) -> Result<Box<dyn EmbeddingInputs>, DomainError> {
    let source = recipe.data.source.as_ref().expect("[data.source]");
    let domain = find_domain(&domains(), &source.domain)?;
    let options = SourceOptions {
        options: serde_json::to_value(&source.options).expect("TOML values are JSON values"),
        base: &source.base,
        seed: recipe.train.seed,
        scratch: &recipe.train.output_dir,
    };
    domain.embedding_inputs(&options).expect("embeds")
}

/// Nuclei-like blobs on a dark background, 16 bits.
fn write_fields(dir: &Path, n: usize) {
    for i in 0..n {
        let img = ImageBuffer::from_fn(40, 40, |x, y| {
            let (cx, cy) = (8.0 + 3.0 * i as f32, 30.0 - 2.0 * i as f32);
            let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
            Luma([(400.0 + 3000.0 * (-d2 / 40.0).exp()) as u16])
        });
        img.save(dir.join(format!("field{i}.png"))).unwrap();
    }
}

fn recipe(dir: &Path, source: &str) -> Result<Recipe, String> {
    let text = format!(
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
{source}

[crops]
global_size = 32
local_size = 16
local_crops = 2

[optim]
epochs = 1
epoch_length = 3
warmup_epochs = 0

[train]
output_dir = "run"
checkpoint_every = 3
"#
    );
    Recipe::parse(&text, &dir.join("recipe.toml"), &[]).map_err(|e| e.to_string())
}

#[test]
fn an_example_microscopy_domain_feeds_pretraining_through_the_plugin_trait() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fields")).unwrap();
    write_fields(&dir.path().join("fields"), 6);
    let recipe = recipe(
        dir.path(),
        "[data.source]\ndomain = \"microscopy\"\npaths = [\"fields/field0.png\", \"fields/field1.png\", \
         \"fields/field2.png\", \"fields/field3.png\", \"fields/field4.png\", \"fields/field5.png\"]\n\
         window = [300, 3600]",
    )
    .unwrap();
    let pool = images(&recipe).unwrap();
    assert_eq!(pool.len(), 6);
    let first = pool.image(0, 0).unwrap().into_rgb8();
    assert_eq!(first.dimensions(), (40, 40));
    // Background 400 → (400 - 300) / 3300 of white.
    assert_eq!(first.get_pixel(39, 0)[0], 8);
    let options = RunOptions {
        images: Some(pool),
        ..RunOptions::default()
    };
    let summary = run::<Autodiff<Flex>>(&recipe, &options, &Default::default()).unwrap();
    assert_eq!(summary.steps, 3);
    assert!(summary.teacher.exists(), "{}", summary.teacher.display());

    // The same table, embedded with the teacher, as `dinoadapt embed --source` does it.
    let inputs = embedding_inputs(&recipe).unwrap();
    assert_eq!(inputs.inputs().len(), 6);
    let ck = load_checkpoint(&summary.teacher, &LoadOptions::default()).unwrap();
    let settings = EmbedSettings {
        layers: Vec::new(),
        norm_layers: false,
        batch_size: 3,
        precision: Default::default(),
        chunks: 1,
        metadata: HashMap::new(),
    };
    let embedder = RegionEmbedder::<Flex>::new(&ck, Default::default(), settings).unwrap();
    let out = dir.path().join("embedded");
    let mut job = InputsBatch {
        inputs: &*inputs,
        embedder: &embedder,
        out: out.clone(),
        progress: &mut Silent,
    };
    let cfg = BatchConfig {
        out: out.clone(),
        shard: Shard { index: 0, count: 1 },
        statuses: true,
        resume: false,
        strict: false,
    };
    let items = inputs.inputs().to_vec();
    let batch = run_batch(&cfg, &items, &mut job, "fields", &mut Silent).unwrap();
    assert_eq!((batch.done, batch.failed), (6, 0));
    // 40-px fields in 16-px tiles: 2 x 2 tiles each, 32-d class tokens.
    let bytes = std::fs::read(out.join("features/field0.safetensors")).unwrap();
    let features = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(features.tensor("cls").unwrap().shape(), [4, 32]);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["domain"], "microscopy");
    assert_eq!(meta["tile_origins"], "[[0,0],[16,0],[0,16],[16,16]]");
    assert!(out.join("regions/field5.parquet").is_file());
    assert!(out.join("manifest.parquet").is_file());

    // A key the domain does not take, and a domain nobody registered.
    let typo = recipe_error(
        dir.path(),
        "[data.source]\ndomain = \"microscopy\"\npaths = []\nwindw = [0, 1]",
    );
    assert!(
        typo.contains("[data.source] of domain `microscopy`: unknown field `windw`"),
        "{typo}"
    );
    let unknown = recipe_error(
        dir.path(),
        "[data.source]\ndomain = \"cryo-em\"\npaths = []",
    );
    assert!(unknown.contains("the domains are microscopy"), "{unknown}");
}

fn recipe_error(dir: &Path, source: &str) -> String {
    match images(&recipe(dir, source).unwrap()) {
        Ok(_) => panic!("accepted: {source}"),
        Err(e) => e.to_string(),
    }
}

/// A per-pixel model of two classes: nucleus where the pixel is brighter than `threshold`
/// (probability 1), background elsewhere: what a trained head learns on these fields.
struct Threshold {
    threshold: f32,
}

impl DenseModel for Threshold {
    fn channels(&self) -> usize {
        2
    }

    fn predict(
        &mut self,
        pixels: Vec<f32>,
        n: usize,
        (h, w): (usize, usize),
    ) -> Result<Vec<f32>, String> {
        let plane = h * w;
        let mut maps = Vec::with_capacity(n * 2 * plane);
        for image in pixels.chunks(3 * plane) {
            let nucleus: Vec<f32> = image[..plane]
                .iter()
                .map(|&v| f32::from(u8::from(v > self.threshold)))
                .collect();
            maps.extend(nucleus.iter().map(|p| 1.0 - p));
            maps.extend(nucleus);
        }
        Ok(maps)
    }
}

/// The nucleus of field `i` of [`write_fields`] as an 8-bit label image (1 inside).
fn write_nucleus_labels(path: &Path, i: usize) {
    let (cx, cy) = (8.0 + 3.0 * i as f32, 30.0 - 2.0 * i as f32);
    ImageBuffer::from_fn(40, 40, |x, y| {
        let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
        Luma([u8::from(d2 < 56.8)])
    })
    .save(path)
    .unwrap();
}

#[test]
fn the_example_domain_gives_dense_head_targets_and_writes_dense_predictions() {
    let dir = tempfile::tempdir().unwrap();
    write_fields(dir.path(), 1);
    let labels = dir.path().join("labels.png");
    write_nucleus_labels(&labels, 0);
    // A feature file as the domain's embed would record it: 4 tiles of 16 px of field0.
    let tiling = FieldTiles {
        size: 16,
        window: [300, 3600],
    };
    let meta = HashMap::from([
        ("domain".to_string(), "microscopy".to_string()),
        (
            "tiling".to_string(),
            serde_json::to_string(&tiling).unwrap(),
        ),
        (
            "tile_origins".to_string(),
            "[[0,0],[16,0],[0,16],[16,16]]".to_string(),
        ),
    ]);
    let file = FeatureFile {
        path: &dir.path().join("field0.safetensors"),
        meta: &meta,
        rows: 4,
    };
    // The program finds the domain from the file's `domain` metadata.
    let domain = find_domain(&domains(), &meta["domain"]).unwrap();
    let names = ["background".to_string(), "nucleus".to_string()];
    let mut options = DenseTargetOptions {
        targets: &labels,
        volume: None,
        resampling: None,
        class_names: &names,
        ignore_index: 255,
        values: DenseValues::Classes,
    };
    let l = domain.dense_targets(&file, &options).unwrap().unwrap();
    assert_eq!((l.input_size, l.values.len()), (16, 4 * 16 * 16));
    assert_eq!(l.preprocessing["domain"], "microscopy");
    assert_eq!(l.class_names, names);
    // Tile 3 (origin 16,16) pixel (2, 3) is label pixel (18, 19); the nucleus is at (8, 30).
    let label = image::open(&labels).unwrap().into_luma8();
    assert_eq!(
        l.values[3 * 256 + 3 * 16 + 2],
        f32::from(label.get_pixel(18, 19)[0])
    );
    assert_eq!(
        l.values[2 * 256 + 14 * 16 + 8],
        1.0,
        "the nucleus centre is class 1"
    );
    assert_eq!(
        domain.dense_input_size(&l.preprocessing).unwrap().unwrap(),
        16
    );
    // Class labels only: canopy heights are refused with why.
    options.values = DenseValues::Heights;
    let refused = domain.dense_targets(&file, &options).unwrap().unwrap_err();
    assert!(refused.to_string().contains("not heights"), "{refused}");
    // Nothing joins class lists of several files here.
    assert!(domain
        .dense_class_names(std::slice::from_ref(&labels))
        .is_none());

    // Prediction over the whole field, as head.json recorded the preprocessing.
    let out = dir.path().join("field0.mask.png");
    let predict = DensePredictOptions {
        input: &dir.path().join("field0.png"),
        out: &out,
        preprocessing: &l.preprocessing,
        values: DenseValues::Classes,
        class_names: &names,
        mpp: None,
        nodata: None,
        stride: None,
        blend: "uniform",
        batch: 1,
        cog: false,
    };
    let mut model = Threshold { threshold: 0.25 };
    let summary = domain
        .dense_predict(&predict, &mut model, &mut Silent)
        .unwrap()
        .unwrap();
    assert_eq!(summary["tiles"], 4);
    let mask = image::open(&out).unwrap().into_luma8();
    // The 2 x 2 tiles cover the top-left 32 x 32 pixels of the field.
    let covered: Vec<(u32, u32)> = (0..32).flat_map(|y| (0..32).map(move |x| (x, y))).collect();
    let agree = covered
        .iter()
        .filter(|&&(x, y)| mask.get_pixel(x, y)[0] == label.get_pixel(x, y)[0])
        .count();
    assert!(agree as f64 > 0.97 * 1024.0, "{agree} of 1024 pixels agree");
    let nucleus = covered
        .iter()
        .filter(|&&(x, y)| mask.get_pixel(x, y)[0] == 1)
        .count();
    assert!(nucleus > 50, "{nucleus} nucleus pixels predicted");
}
