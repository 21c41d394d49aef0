//! The example domain of `docs/adding-a-domain.md`: fluorescence microscopy, written as that
//! walk-through says (a config struct read from `[data.source]`, an image source, a `Domain`
//! implementation, a registry) and pre-trained on through the same calls the program makes.
//! If this test needs more than the walk-through describes, the walk-through is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use dinoadapt_datasets::{
    find_domain, Domain, DomainError, ImageError, ImageSource, SourceOptions,
};
use dinoadapt_pretrain::{run, Recipe, RunOptions};
use image::{DynamicImage, ImageBuffer, Luma};
use serde::Deserialize;

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
        let path = &self.cfg.paths[index];
        let raw = image::open(path)
            .map_err(|e| ImageError::Decode {
                path: path.clone(),
                reason: e.to_string(),
            })?
            .into_luma16();
        let [lo, hi] = self.cfg.window.map(f32::from);
        let gray = ImageBuffer::from_fn(raw.width(), raw.height(), |x, y| {
            let v = (f32::from(raw.get_pixel(x, y)[0]) - lo) / (hi - lo).max(1.0);
            Luma([(v.clamp(0.0, 1.0) * 255.0).round() as u8])
        });
        Ok(DynamicImage::ImageLuma8(gray).into_rgb8().into())
    }

    fn describe(&self) -> String {
        format!("{} fluorescence fields", self.cfg.paths.len())
    }
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
            let mut cfg: FieldsConfig = source.parse(self.name())?;
            cfg.paths = cfg.paths.iter().map(|p| source.anchor(p)).collect();
            if cfg.paths.is_empty() {
                return Err(DomainError::Options {
                    domain: "microscopy",
                    message: "paths: no images".into(),
                });
            }
            Ok(Arc::new(Fields { cfg }) as Arc<dyn ImageSource>)
        })())
    }
}

// Step 4: the registry (the program's is `src/domains.rs`).
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
