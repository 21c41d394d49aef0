//! Slide annotations as segmentation targets: GeoJSON polygons in level-0 pixels (QuPath's
//! export, and the tissue contours `pathology tissue` writes), each with a class name, rasterised
//! onto the pixel grid of a tile.
//!
//! The class of a polygon is `properties.classification.name` (QuPath), else
//! `properties.class` / `properties.label`, else the collection's default. Where polygons of
//! several classes overlap, the later one in the file wins. Rings are filled with the even-odd
//! rule, so holes are holes.

use std::path::Path;

use serde_json::Value;

use crate::contours::Polygon;
use crate::error::{PathologyError, Result};

/// Polygons with their class names, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    pub polygons: Vec<(String, Polygon)>,
}

fn ring(v: &Value) -> Option<Vec<[f64; 2]>> {
    v.as_array()?
        .iter()
        .map(|p| {
            let p = p.as_array()?;
            Some([p.first()?.as_f64()?, p.get(1)?.as_f64()?])
        })
        .collect()
}

fn polygon(rings: &Value) -> Option<Polygon> {
    let mut rings = rings.as_array()?.iter().map(ring);
    let exterior = rings.next()??;
    let holes = rings.collect::<Option<Vec<_>>>()?;
    Some(Polygon { exterior, holes })
}

fn class_of(properties: &Value, default: &str) -> String {
    properties["classification"]["name"]
        .as_str()
        .or_else(|| properties["class"].as_str())
        .or_else(|| properties["label"].as_str())
        .unwrap_or(default)
        .to_string()
}

impl Annotations {
    /// Parses a GeoJSON FeatureCollection (or a single Feature) of Polygons / MultiPolygons;
    /// other geometries (points, lines) are skipped. Polygons without a class get `default`.
    pub fn from_geojson(text: &str, default: &str) -> std::result::Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let features: Vec<&Value> = match v["type"].as_str() {
            Some("FeatureCollection") => v["features"]
                .as_array()
                .ok_or("a FeatureCollection without `features`")?
                .iter()
                .collect(),
            Some("Feature") => vec![&v],
            // QuPath also exports a bare array of features.
            None if v.is_array() => v.as_array().into_iter().flatten().collect(),
            other => return Err(format!("GeoJSON of type {other:?}, not features")),
        };
        let mut polygons = Vec::new();
        for (i, f) in features.iter().enumerate() {
            let class = class_of(&f["properties"], default);
            let g = &f["geometry"];
            let bad = || format!("feature {i}: malformed {} coordinates", g["type"]);
            match g["type"].as_str() {
                Some("Polygon") => {
                    polygons.push((class, polygon(&g["coordinates"]).ok_or_else(bad)?));
                }
                Some("MultiPolygon") => {
                    for p in g["coordinates"].as_array().ok_or_else(bad)? {
                        polygons.push((class.clone(), polygon(p).ok_or_else(bad)?));
                    }
                }
                _ => {}
            }
        }
        Ok(Annotations { polygons })
    }

    /// Reads a GeoJSON file (see [`Annotations::from_geojson`]).
    pub fn read(path: &Path, default: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(PathologyError::io(path, "cannot read the annotations"))?;
        Annotations::from_geojson(&text, default).map_err(|what| PathologyError::Invalid {
            path: path.to_path_buf(),
            what,
        })
    }

    /// The classes of annotation files: the background, then every annotation class in
    /// first-seen order over the files (one class list, so that ids agree across slides).
    pub fn class_names_of(files: &[std::path::PathBuf], background: &str) -> Result<Vec<String>> {
        let mut names = vec![background.to_string()];
        for f in files {
            for c in Annotations::read(f, "annotation")?.classes() {
                if !names.contains(&c) {
                    names.push(c);
                }
            }
        }
        Ok(names)
    }

    /// Class ids (as `f32`) of every level-0 rectangle `[x, y, w, h]` of `rects` rasterised
    /// onto `size` × `size` pixels ([`rasterise`](Self::rasterise), class 0 the background),
    /// rectangle after rectangle.
    pub fn rasterise_tiles(&self, classes: &[String], rects: &[[f64; 4]], size: usize) -> Vec<f32> {
        let mut values = Vec::with_capacity(rects.len() * size * size);
        for &[x, y, w, h] in rects {
            let ids = self.rasterise(classes, 0, (x, y), (w, h), (size, size));
            values.extend(ids.into_iter().map(f32::from));
        }
        values
    }

    /// The class names in first-seen order.
    pub fn classes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (c, _) in &self.polygons {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        out
    }

    /// Class ids of an `out_w` x `out_h` grid covering the level-0 rectangle at (`x0`, `y0`) of
    /// `extent_w` x `extent_h` pixels, sampled at pixel centres: the id of a polygon's class in
    /// `classes`, `background` where no polygon lies; polygons of classes not listed are skipped.
    #[allow(clippy::too_many_arguments)]
    pub fn rasterise(
        &self,
        classes: &[String],
        background: u8,
        (x0, y0): (f64, f64),
        (extent_w, extent_h): (f64, f64),
        (out_w, out_h): (usize, usize),
    ) -> Vec<u8> {
        let mut out = vec![background; out_w * out_h];
        let (sx, sy) = (extent_w / out_w as f64, extent_h / out_h as f64);
        let mut crossings: Vec<f64> = Vec::new();
        for (class, p) in &self.polygons {
            let Some(id) = classes.iter().position(|c| c == class) else {
                continue;
            };
            let rings = || std::iter::once(&p.exterior).chain(&p.holes);
            // Skip polygons whose bounding box misses the tile.
            let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
            for q in p.exterior.iter() {
                for a in 0..2 {
                    lo[a] = lo[a].min(q[a]);
                    hi[a] = hi[a].max(q[a]);
                }
            }
            if hi[0] < x0 || lo[0] > x0 + extent_w || hi[1] < y0 || lo[1] > y0 + extent_h {
                continue;
            }
            for row in 0..out_h {
                let y = y0 + (row as f64 + 0.5) * sy;
                crossings.clear();
                for r in rings() {
                    let n = r.len();
                    for i in 0..n {
                        let (a, b) = (r[i], r[(i + 1) % n]);
                        // Half-open in y so a vertex on the scanline counts once.
                        if (a[1] <= y) != (b[1] <= y) {
                            crossings.push(a[0] + (y - a[1]) / (b[1] - a[1]) * (b[0] - a[0]));
                        }
                    }
                }
                crossings.sort_by(f64::total_cmp);
                for pair in crossings.chunks_exact(2) {
                    // Pixel centres x0 + (c + 0.5) sx inside [pair[0], pair[1]).
                    let c0 = ((pair[0] - x0) / sx - 0.5).ceil().max(0.0) as usize;
                    let c1 = (((pair[1] - x0) / sx - 0.5).ceil().max(0.0) as usize).min(out_w);
                    for c in c0..c1 {
                        out[row * out_w + c] = id as u8;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARE_WITH_HOLE: &str = r#"{"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
         "geometry": {"type": "Polygon", "coordinates": [
            [[0, 0], [8, 0], [8, 8], [0, 8], [0, 0]],
            [[2, 2], [6, 2], [6, 6], [2, 6], [2, 2]]]}},
        {"type": "Feature", "properties": {"class": "Stroma"},
         "geometry": {"type": "MultiPolygon", "coordinates": [
            [[[10, 0], [12, 0], [12, 2], [10, 2], [10, 0]]]]}},
        {"type": "Feature", "properties": {},
         "geometry": {"type": "Point", "coordinates": [1, 1]}}
    ]}"#;

    #[test]
    fn polygons_fill_with_holes_and_classes() {
        let a = Annotations::from_geojson(SQUARE_WITH_HOLE, "Other").unwrap();
        assert_eq!(a.classes(), vec!["Tumor", "Stroma"]);
        let classes = vec!["Background".to_string(), "Tumor".into(), "Stroma".into()];
        // One output pixel per level-0 pixel over x 0..12, y 0..8.
        let m = a.rasterise(&classes, 0, (0.0, 0.0), (12.0, 8.0), (12, 8));
        let at = |x: usize, y: usize| m[y * 12 + x];
        assert_eq!(at(0, 0), 1);
        assert_eq!(at(7, 7), 1);
        assert_eq!(at(3, 3), 0, "the hole");
        assert_eq!(at(1, 4), 1);
        assert_eq!(at(8, 0), 0, "right of the square");
        assert_eq!(at(10, 1), 2);
        assert_eq!(at(11, 1), 2);
        assert_eq!(at(11, 2), 0);
        let tumor: usize = m.iter().filter(|&&v| v == 1).count();
        assert_eq!(tumor, 64 - 16);
    }

    #[test]
    fn tiles_sample_their_own_window_at_their_own_scale() {
        let a = Annotations::from_geojson(SQUARE_WITH_HOLE, "Other").unwrap();
        let classes = vec!["Background".to_string(), "Tumor".into()];
        // A 2 x 2 grid over level-0 (4, 4)..(12, 12): 4 px per output pixel.
        let m = a.rasterise(&classes, 0, (4.0, 4.0), (8.0, 8.0), (2, 2));
        // Centres (6, 6) on the hole's edge (half-open: outside the hole -> tumour), (10, 6)
        // outside, (6, 10) and (10, 10) outside.
        assert_eq!(m, vec![1, 0, 0, 0]);
    }

    #[test]
    fn malformed_geometry_is_an_error() {
        let bad = r#"{"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[["a", 0]]]}}]}"#;
        assert!(Annotations::from_geojson(bad, "x")
            .unwrap_err()
            .contains("feature 0"));
    }
}
