//! A curated tile manifest as the pathology pre-training pool: the kept tiles of `curate --pool`
//! over a `pathology embed` folder, each read at its recorded level-0 region and resampled to
//! the recipe's `tile_size`, with the same H&E augmentation as the random tiles. The pool is
//! exactly the kept tiles, in manifest order; the run draws them by index with its seed (as it
//! draws image files), so it is deterministic and resumable.
//!
//! The manifest's `slide` column names each tile's slide by the id `pathology embed` gave it (a
//! CSV `slide_id`, else the file stem): with `paths` (the slides that were embedded) the ids
//! are looked up among those slides; without, `slide` must hold the slide's path (relative to
//! the manifest's folder).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dinoadapt_datasets::{DomainError, ImageError, ImageSource};
use image::DynamicImage;
use polars::prelude::{DataFrame, DataType, ParquetReader, SerReader};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::augment::HeAugment;
use crate::resample::{read_resampled, Resample};
use crate::slide_list::collect_slides;
use crate::{OpenOptions, Slide};

/// The columns a tile manifest needs: each tile's slide and level-0 region.
pub const TILE_COLUMNS: [&str; 5] = ["slide", "x", "y", "width", "height"];

/// One kept tile of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct CuratedTile {
    /// The row's id (`<slide>:<tile_index>`), or its position when the manifest has none.
    pub id: String,
    /// The slide id (or path) the manifest gives.
    pub slide: String,
    /// Level-0 x, y, width, height.
    pub rect0: [f64; 4],
    /// The pyramid level the tile was read at when embedded.
    pub level: Option<u32>,
}

/// The kept rows (`kept` true; every row when there is no `kept` column) of the tile manifest
/// `path`, in its order.
pub fn read_tile_manifest(path: &Path) -> Result<Vec<CuratedTile>, DomainError> {
    let bad = |what: String| DomainError::Input(format!("{}: {what}", path.display()));
    let file = std::fs::File::open(path)
        .map_err(|e| bad(format!("cannot open the tile manifest ({e})")))?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|e| bad(format!("not a readable Parquet table ({e})")))?;
    let missing: Vec<&str> = TILE_COLUMNS
        .into_iter()
        .filter(|c| df.column(c).is_err())
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "not a curated tile manifest: it lacks the column(s) {}; a tile manifest names each \
             tile's slide and level-0 region ({}), as `dinoadapt curate --pool DIR` writes for \
             the output folder DIR of `dinoadapt pathology embed`",
            missing.join(", "),
            TILE_COLUMNS.join(", ")
        )));
    }
    let floats = |name: &str| -> Result<Vec<Option<f64>>, DomainError> {
        let c = df
            .column(name)
            .and_then(|c| c.cast(&DataType::Float64))
            .map_err(|e| bad(format!("column `{name}`: {e}")))?;
        let c = c.f64().map_err(|e| bad(format!("column `{name}`: {e}")))?;
        Ok((0..c.len()).map(|i| c.get(i)).collect())
    };
    let strings = |name: &str| -> Result<Option<Vec<Option<String>>>, DomainError> {
        let Ok(c) = df.column(name) else {
            return Ok(None);
        };
        let c = c.str().map_err(|e| bad(format!("column `{name}`: {e}")))?;
        Ok(Some(
            (0..c.len()).map(|i| c.get(i).map(str::to_string)).collect(),
        ))
    };
    let kept = kept_rows(&df).map_err(bad)?;
    let slides = strings("slide")?.expect("checked above");
    let ids = strings("path")?;
    let [x, y, w, h] = ["x", "y", "width", "height"].map(floats);
    let (x, y, w, h) = (x?, y?, w?, h?);
    let level = match df.column("level") {
        Ok(_) => Some(floats("level")?),
        Err(_) => None,
    };
    let mut tiles = Vec::new();
    for r in (0..df.height()).filter(|r| kept[*r]) {
        let rect = [x[r], y[r], w[r], h[r]];
        let (Some(slide), [Some(x), Some(y), Some(w), Some(h)]) = (slides[r].clone(), rect) else {
            return Err(bad(format!(
                "row {r} is kept but has no slide or level-0 region (empty {})",
                TILE_COLUMNS.join(", ")
            )));
        };
        if !(w > 0.0 && h > 0.0 && x.is_finite() && y.is_finite()) {
            return Err(bad(format!(
                "row {r}: the region {w} x {h} at ({x}, {y}) is no tile"
            )));
        }
        tiles.push(CuratedTile {
            id: ids
                .as_ref()
                .and_then(|i| i[r].clone())
                .unwrap_or_else(|| r.to_string()),
            slide,
            rect0: [x, y, w, h],
            level: level
                .as_ref()
                .and_then(|l| l[r])
                .filter(|l| *l >= 0.0)
                .map(|l| l as u32),
        });
    }
    if tiles.is_empty() {
        return Err(bad("no kept tiles: nothing to pre-train on".into()));
    }
    Ok(tiles)
}

/// Whether each row is kept (`kept`; every row without that column).
fn kept_rows(df: &DataFrame) -> Result<Vec<bool>, String> {
    let Ok(c) = df.column("kept") else {
        return Ok(vec![true; df.height()]);
    };
    let c = c.bool().map_err(|e| format!("column `kept`: {e}"))?;
    Ok((0..c.len()).map(|i| c.get(i) == Some(true)).collect())
}

/// The kept tiles of a manifest, read from their slides when drawn.
pub struct CuratedTiles {
    manifest: PathBuf,
    tiles: Vec<CuratedTile>,
    /// The slide of each tile, by position in `slides`.
    slide_of: Vec<usize>,
    slides: Vec<Arc<Slide>>,
    size: u32,
    augment: HeAugment,
}

impl CuratedTiles {
    /// The kept tiles of `manifest`, their slides found among `paths` by id (or, with no
    /// `paths`, opened at the path the manifest gives), resampled to `size` px.
    pub fn open(manifest: &Path, paths: &[PathBuf], size: u32) -> Result<Self, DomainError> {
        let bad = |what: String| DomainError::Input(format!("{}: {what}", manifest.display()));
        if size == 0 {
            return Err(DomainError::Options {
                domain: "pathology",
                message: "tile_size: must be positive".into(),
            });
        }
        let tiles = read_tile_manifest(manifest)?;
        // slide id -> (path, mpp override)
        let listed: Option<HashMap<String, (PathBuf, Option<f64>)>> = if paths.is_empty() {
            None
        } else {
            Some(
                collect_slides(paths)
                    .map_err(DomainError::input)?
                    .into_iter()
                    .map(|e| (e.slide_id, (e.path, e.mpp)))
                    .collect(),
            )
        };
        let base = manifest.parent().unwrap_or(Path::new("."));
        let (mut slides, mut slide_of) = (Vec::new(), Vec::with_capacity(tiles.len()));
        let mut opened: HashMap<String, usize> = HashMap::new();
        for t in &tiles {
            if let Some(&i) = opened.get(&t.slide) {
                slide_of.push(i);
                continue;
            }
            let (path, mpp) = match &listed {
                Some(l) => l.get(&t.slide).cloned().ok_or_else(|| {
                    let mut ids: Vec<&String> = l.keys().collect();
                    ids.sort();
                    bad(format!(
                        "slide `{}` of tile {} is not among the slides of `paths` (ids {ids:?}); \
                         give the slides that were embedded, with the same ids",
                        t.slide, t.id
                    ))
                })?,
                None => {
                    let p = base.join(&t.slide);
                    if !p.is_file() {
                        return Err(bad(format!(
                            "slide `{}` of tile {} is no file; the manifest names slides by \
                             the id `pathology embed` gave them: add `paths` (the slides that \
                             were embedded) to [data.source]",
                            t.slide, t.id
                        )));
                    }
                    (p, None)
                }
            };
            let slide = Slide::open_with(&path, &OpenOptions { mpp_override: mpp })
                .map_err(DomainError::input)?;
            opened.insert(t.slide.clone(), slides.len());
            slide_of.push(slides.len());
            slides.push(Arc::new(slide));
        }
        Ok(CuratedTiles {
            manifest: manifest.to_path_buf(),
            tiles,
            slide_of,
            slides,
            size,
            augment: HeAugment::default(),
        })
    }

    /// The kept tiles, in pool order.
    pub fn tiles(&self) -> &[CuratedTile] {
        &self.tiles
    }

    /// The level tile `t` of `slide` is read at: the level it was embedded at, unless that
    /// would upsample to `size` (a larger tile_size than the embedding's), then the coarsest
    /// level that does not.
    fn level(&self, slide: &Slide, t: &CuratedTile) -> u32 {
        let fit = slide.level_for_downsample(t.rect0[2].min(t.rect0[3]) / f64::from(self.size));
        t.level
            .filter(|l| *l <= fit && (*l as usize) < slide.levels().len())
            .unwrap_or(fit)
    }
}

impl ImageSource for CuratedTiles {
    fn len(&self) -> usize {
        self.tiles.len()
    }

    fn image(&self, index: usize, seed: u64) -> Result<DynamicImage, ImageError> {
        let t = &self.tiles[index % self.tiles.len()];
        let slide = &self.slides[self.slide_of[index % self.tiles.len()]];
        let level = self.level(slide, t);
        let img = read_resampled(
            slide,
            level,
            t.rect0,
            self.size,
            self.size,
            Resample::Lanczos3,
        )
        .map_err(|e| ImageError::Decode {
            path: format!("tile {} of {}", t.id, self.manifest.display()).into(),
            reason: e.to_string(),
        })?;
        let img = self.augment.apply(&img, &mut StdRng::seed_from_u64(seed));
        Ok(DynamicImage::ImageRgb8(img))
    }

    fn describe(&self) -> String {
        format!(
            "{} curated tiles of {} slides from {} at {} px",
            self.tiles.len(),
            self.slides.len(),
            self.manifest.display(),
            self.size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dinoadapt_datasets::{column as col, write_parquet};

    fn manifest(dir: &Path, with_place: bool) -> PathBuf {
        let path = dir.join("curated.parquet");
        let mut columns = vec![
            col::<u32>("index", vec![0, 1, 2]),
            col::<String>("path", vec!["s:0".into(), "s:1".into(), "s:2".into()]),
            col::<bool>("kept", vec![true, false, true]),
            col::<String>("slide", vec!["slide.png".into(); 3]),
        ];
        if with_place {
            columns.extend([
                col::<i64>("x", vec![0, 8, 16]),
                col::<i64>("y", vec![0, 0, 8]),
                col::<f64>("width", vec![8.0; 3]),
                col::<f64>("height", vec![8.0; 3]),
                col::<u32>("level", vec![0; 3]),
            ]);
        }
        let mut df = DataFrame::new(3, columns).unwrap();
        write_parquet(&path, &mut df).unwrap();
        path
    }

    #[test]
    fn the_pool_is_the_kept_tiles_read_at_their_region() {
        let dir = tempfile::tempdir().unwrap();
        // Left half red, right half blue: tile s:2 (x 16..24) is blue.
        let img = image::RgbImage::from_fn(32, 16, |x, _| {
            image::Rgb(if x < 16 { [200, 0, 0] } else { [0, 0, 200] })
        });
        img.save(dir.path().join("slide.png")).unwrap();
        let m = manifest(dir.path(), true);
        let tiles = read_tile_manifest(&m).unwrap();
        assert_eq!(tiles.len(), 2);
        assert_eq!(tiles[1].id, "s:2");
        assert_eq!(tiles[1].rect0, [16.0, 8.0, 8.0, 8.0]);
        // No `paths`: the manifest's slide is a path beside it.
        let mut pool = CuratedTiles::open(&m, &[], 4).unwrap();
        pool.augment = HeAugment::none();
        assert_eq!(pool.len(), 2);
        let a = pool.image(1, 7).unwrap().to_rgb8();
        assert_eq!(a.dimensions(), (4, 4));
        assert!(a.pixels().all(|p| p.0[2] > 150 && p.0[0] < 50), "{a:?}");
        assert!(pool.describe().starts_with("2 curated tiles of 1 slides"));
        // With `paths`, slides are found by id.
        let err = CuratedTiles::open(&m, &[dir.path().join("slide.png")], 4)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("slide `slide.png`") && err.contains("\"slide\""),
            "{err}"
        );
    }

    #[test]
    fn a_manifest_without_the_tile_columns_is_refused_with_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path(), false);
        let err = read_tile_manifest(&m).unwrap_err().to_string();
        assert!(err.starts_with(&m.display().to_string()), "{err}");
        assert!(
            err.contains("lacks the column(s) x, y, width, height"),
            "{err}"
        );
    }
}
