//! Regions: the unit every domain hands to the backbone — a tile of a slide, a slice of a volume,
//! a chip of a raster — with where it lies in its source's physical or world coordinates.
//!
//! A domain plugin implements [`RegionSource`]; the program embeds any source the same way
//! (batches on a producer thread, the backbone on the device, features into the feature store)
//! and writes [`regions_table`] beside the features, one row per feature row.

use std::collections::HashMap;

use polars::prelude::DataFrame;

use crate::manifest::column as col;
use serde::Serialize;

/// One region of a source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Region {
    /// The source it comes from (a path, or an id the user controls).
    pub source: String,
    /// Index of the region within its source's layout.
    pub index: usize,
    /// Pixel window in the source (may extend past its edges).
    pub col: i64,
    pub row: i64,
    pub width: usize,
    pub height: usize,
    /// Extent in the source's coordinates: (min x, min y, max x, max y).
    pub bounds: [f64; 4],
    /// What the bounds are in: "EPSG:32618", a CRS name, "um" (slides), "mm" (volumes), "px".
    pub crs: String,
    /// Fraction of the region's pixels that hold data (not nodata, inside the source).
    pub valid_fraction: f64,
}

/// A region the source could not make model-ready (an unreadable image, one of another size),
/// with what was known about it, so that the caller can write a row saying why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedRegion {
    pub source: String,
    /// Index of the region within the source's layout.
    pub index: usize,
    /// The region's own size in pixels, when it was read (0 otherwise).
    pub width: usize,
    pub height: usize,
    /// The size it became after preprocessing, when it got that far (0 otherwise).
    pub input_width: usize,
    pub input_height: usize,
    pub error: String,
}

/// Regions ready for the backbone: normalised pixels `[n][3][height][width]`.
#[derive(Debug, Clone)]
pub struct RegionBatch {
    pub regions: Vec<Region>,
    pub pixels: Vec<f32>,
    pub size: (usize, usize),
    /// Regions of this batch's part of the layout that were skipped.
    pub skipped: Vec<SkippedRegion>,
}

/// A source of model-ready regions, read batch by batch (never all at once).
pub trait RegionSource: Send {
    /// (height, width) of every region's pixels.
    fn size(&self) -> (usize, usize);
    /// An upper bound on the number of regions (skipped regions make the real count smaller).
    fn max_regions(&self) -> usize;
    /// The next batch of at most `max` regions; None when the source is exhausted.
    fn next_batch(&mut self, max: usize) -> Result<Option<RegionBatch>, String>;
    /// What to record in every output about this source (preprocessing, layout, units).
    fn metadata(&self) -> HashMap<String, String>;
    /// What a region is called in progress reports ("tiles", "slices", "images").
    fn unit(&self) -> &'static str {
        "regions"
    }
    /// Channels of every region's pixels (RGB unless the source says otherwise).
    fn channels(&self) -> usize {
        3
    }
}

/// A boxed source is a source (a domain hands out its sources boxed, see
/// [`crate::EmbeddingInputs`]).
impl RegionSource for Box<dyn RegionSource> {
    fn size(&self) -> (usize, usize) {
        (**self).size()
    }
    fn max_regions(&self) -> usize {
        (**self).max_regions()
    }
    fn next_batch(&mut self, max: usize) -> Result<Option<RegionBatch>, String> {
        (**self).next_batch(max)
    }
    fn channels(&self) -> usize {
        (**self).channels()
    }
    fn metadata(&self) -> HashMap<String, String> {
        (**self).metadata()
    }
    fn unit(&self) -> &'static str {
        (**self).unit()
    }
}

/// The regions as a table: row `i` describes feature row `i`.
pub fn regions_table(regions: &[Region]) -> DataFrame {
    let f = |g: fn(&Region) -> f64| regions.iter().map(g).collect::<Vec<f64>>();
    let columns = vec![
        col::<u64>("feature_row", (0..regions.len() as u64).collect()),
        col::<String>("source", regions.iter().map(|r| r.source.clone()).collect()),
        col::<u64>(
            "region_index",
            regions.iter().map(|r| r.index as u64).collect(),
        ),
        col::<i64>("col", regions.iter().map(|r| r.col).collect()),
        col::<i64>("row", regions.iter().map(|r| r.row).collect()),
        col::<u64>("width", regions.iter().map(|r| r.width as u64).collect()),
        col::<u64>("height", regions.iter().map(|r| r.height as u64).collect()),
        col::<f64>("min_x", f(|r| r.bounds[0])),
        col::<f64>("min_y", f(|r| r.bounds[1])),
        col::<f64>("max_x", f(|r| r.bounds[2])),
        col::<f64>("max_y", f(|r| r.bounds[3])),
        col::<String>("crs", regions.iter().map(|r| r.crs.clone()).collect()),
        col::<f64>("valid_fraction", f(|r| r.valid_fraction)),
    ];
    DataFrame::new(regions.len(), columns).expect("columns have one length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_region_with_world_bounds() {
        let r = Region {
            source: "a.tif".into(),
            index: 3,
            col: 192,
            row: 0,
            width: 256,
            height: 256,
            bounds: [792988.5, 2048367.0, 795563.0, 2050382.25],
            crs: "EPSG:32618".into(),
            valid_fraction: 0.75,
        };
        let df = regions_table(&[r.clone(), Region { index: 4, ..r }]);
        assert_eq!(df.height(), 2);
        assert_eq!(
            df.column("min_x").unwrap().f64().unwrap().get(0),
            Some(792988.5)
        );
        assert_eq!(
            df.column("feature_row").unwrap().u64().unwrap().get(1),
            Some(1)
        );
        assert_eq!(
            df.column("crs").unwrap().str().unwrap().get(1),
            Some("EPSG:32618")
        );
    }
}
