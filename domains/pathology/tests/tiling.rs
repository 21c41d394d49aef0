//! Tiles of the real H&E slide at a target pixel size, and the tile source over them.

mod common;

use std::sync::Arc;

use dinoadapt_datasets::RegionSource;
use dinoadapt_pathology::{
    detect_tissue, plan_tiles, read_tile, Resample, Slide, TileSource, TilingConfig, TissueConfig,
};

fn cfg(target_mpp: f64, min_tissue: f64) -> TilingConfig {
    TilingConfig {
        target_mpp,
        size: 224,
        stride: 224,
        min_tissue,
        resample: Resample::Lanczos3,
    }
}

#[test]
fn tiles_at_half_a_micron_cover_exactly_112_um() {
    let Some(path) = common::cmu_small() else {
        return;
    };
    let slide = Arc::new(Slide::open(&path).unwrap());
    let mask = detect_tissue(&slide, &TissueConfig::default())
        .unwrap()
        .mask;
    let all = plan_tiles(&slide, Some(&mask), &cfg(0.5, 0.0)).unwrap();
    let kept = plan_tiles(&slide, Some(&mask), &cfg(0.5, 0.5)).unwrap();
    // 2220 x 2967 px at 0.499 um/px: tiles of 224.449 px → 9 x 13.
    assert_eq!(all.grid, (9, 13));
    assert_eq!(all.tiles.len(), 117);
    assert!(
        kept.tiles.len() < all.tiles.len(),
        "background tiles are dropped"
    );
    assert!(!kept.tiles.is_empty());
    assert!(kept.tiles.iter().all(|t| t.tissue_fraction >= 0.5));
    assert!(kept.warning.is_none());
    for t in &kept.tiles {
        assert_eq!(t.level, 0);
        assert!(t.x >= 0 && t.y >= 0);
        assert!(
            t.x as f64 + t.width <= 2220.0 && t.y as f64 + t.height <= 2967.0,
            "{t:?}"
        );
    }
    let mut src = TileSource::new(slide.clone(), "cmu-1-small", kept.clone());
    let batch = src.next_batch(4).unwrap().unwrap();
    assert_eq!(batch.size, (224, 224));
    assert_eq!(batch.pixels.len(), 4 * 3 * 224 * 224);
    for r in &batch.regions {
        assert_eq!(r.source, "cmu-1-small");
        assert_eq!(r.crs, "um");
        assert!(((r.bounds[2] - r.bounds[0]) - 112.0).abs() < 1e-9, "{r:?}");
        assert!(((r.bounds[3] - r.bounds[1]) - 112.0).abs() < 1e-9, "{r:?}");
        assert!((r.bounds[0] - r.col as f64 * 0.499).abs() < 1e-9);
    }
    assert!(batch.pixels.iter().all(|v| v.is_finite()));
}

#[test]
fn tiles_at_one_micron_are_read_from_level_0_and_downsampled() {
    let Some(path) = common::cmu_small() else {
        return;
    };
    let slide = Slide::open(&path).unwrap();
    let plan = plan_tiles(&slide, None, &cfg(1.0, 0.0)).unwrap();
    assert_eq!(plan.level, 0);
    let t = &plan.tiles[plan.tiles.len() / 2];
    assert!((t.width - 224.0 / 0.499).abs() < 1e-9);
    let img = read_tile(&slide, t, &plan.config).unwrap();
    assert_eq!(img.dimensions(), (224, 224));
    // The same place read at 0.5 um/px and shrunk 2x matches closely.
    let fine_cfg = TilingConfig {
        size: 448,
        ..cfg(0.5, 0.0)
    };
    let fine = read_tile(&slide, t, &fine_cfg).unwrap();
    let small = image::imageops::resize(&fine, 224, 224, image::imageops::FilterType::Triangle);
    let diff: f64 = img
        .pixels()
        .zip(small.pixels())
        .map(|(a, b)| (f64::from(a.0[1]) - f64::from(b.0[1])).abs())
        .sum::<f64>()
        / (224.0 * 224.0);
    assert!(diff < 6.0, "mean abs difference {diff}");
}
