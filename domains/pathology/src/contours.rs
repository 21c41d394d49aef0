//! Polygons around mask components: pixel-edge ("crack") tracing, Douglas–Peucker
//! simplification and GeoJSON that QuPath imports as annotations.
//!
//! Tracing walks the pixel edges between foreground and background, keeping foreground on the
//! right (in image coordinates, y down). Outer boundaries then have positive shoelace area,
//! holes negative. Where two foreground pixels touch only at a corner the walk turns left, which
//! keeps them in one ring (foreground 8-connected, as the components are).

use serde_json::{json, Value};

use crate::morphology::Binary;

/// A polygon in some pixel frame: one exterior ring and its holes; rings are closed (the first
/// point repeats at the end).
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    pub exterior: Vec<[f64; 2]>,
    pub holes: Vec<Vec<[f64; 2]>>,
}

impl Polygon {
    /// Multiplies every coordinate by `sx`, `sy` (mask pixels to level-0 pixels).
    pub fn scaled(&self, sx: f64, sy: f64) -> Polygon {
        let f = |r: &Vec<[f64; 2]>| r.iter().map(|p| [p[0] * sx, p[1] * sy]).collect();
        Polygon {
            exterior: f(&self.exterior),
            holes: self.holes.iter().map(f).collect(),
        }
    }

    /// Area of the exterior minus the holes.
    pub fn area(&self) -> f64 {
        signed_area(&self.exterior).abs()
            - self.holes.iter().map(|h| signed_area(h).abs()).sum::<f64>()
    }
}

/// Shoelace area of a closed ring (positive for this module's outer rings).
pub fn signed_area(ring: &[[f64; 2]]) -> f64 {
    ring.windows(2)
        .map(|p| p[0][0] * p[1][1] - p[1][0] * p[0][1])
        .sum::<f64>()
        / 2.0
}

// Directions: 0 = +x, 1 = +y, 2 = -x, 3 = -y (image coordinates, y down).
const STEP: [(i64, i64); 4] = [(1, 0), (0, 1), (-1, 0), (0, -1)];

/// Traces every boundary ring of `mask` and groups rings into polygons by the component (from
/// `labels`, as [`Binary::components`] gives) they bound. Vertices are pixel corners; only
/// corners where the direction changes are kept.
pub fn trace_polygons(mask: &Binary, labels: &[u32]) -> Vec<(u32, Polygon)> {
    let (w, h) = (mask.width as i64, mask.height as i64);
    let fg =
        |x: i64, y: i64| x >= 0 && y >= 0 && x < w && y < h && mask.get(x as usize, y as usize);
    let vw = w + 1;
    let vid = |x: i64, y: i64| (y * vw + x) as usize;
    // Out-edge bits per vertex.
    let mut out = vec![0u8; ((w + 1) * (h + 1)) as usize];
    for y in 0..h {
        for x in 0..w {
            if !fg(x, y) {
                continue;
            }
            if !fg(x, y - 1) {
                out[vid(x, y)] |= 1 << 0;
            }
            if !fg(x + 1, y) {
                out[vid(x + 1, y)] |= 1 << 1;
            }
            if !fg(x, y + 1) {
                out[vid(x + 1, y + 1)] |= 1 << 2;
            }
            if !fg(x - 1, y) {
                out[vid(x, y + 1)] |= 1 << 3;
            }
        }
    }
    // The foreground pixel right of an edge leaving (x, y) in direction d.
    let right_pixel = |x: i64, y: i64, d: usize| match d {
        0 => (x, y),
        1 => (x - 1, y),
        2 => (x - 1, y - 1),
        _ => (x, y - 1),
    };
    let mut outers: Vec<(u32, Vec<[f64; 2]>)> = Vec::new();
    let mut holes: Vec<(u32, Vec<[f64; 2]>)> = Vec::new();
    for start in 0..out.len() {
        while out[start] != 0 {
            let (sx, sy) = ((start as i64) % vw, (start as i64) / vw);
            let d0 = out[start].trailing_zeros() as usize;
            let (px, py) = right_pixel(sx, sy, d0);
            let label = labels[(py * w + px) as usize];
            let mut ring = vec![[sx as f64, sy as f64]];
            let (mut x, mut y, mut d) = (sx, sy, d0);
            loop {
                out[vid(x, y)] &= !(1 << d);
                let (dx, dy) = STEP[d];
                x += dx;
                y += dy;
                let at_start = (x, y) == (sx, sy);
                // The start edge is already cleared; it still counts as a way out here.
                let bits = out[vid(x, y)] | if at_start { 1 << d0 } else { 0 };
                let next = match bits.count_ones() {
                    0 => break,
                    1 => bits.trailing_zeros() as usize,
                    _ => (d + 3) % 4, // a saddle: turn left, keep diagonal pixels together
                };
                if at_start && next == d0 {
                    break;
                }
                if next != d {
                    ring.push([x as f64, y as f64]);
                }
                d = next;
            }
            // The start vertex is a corner unless the ring arrives and leaves in direction d0.
            if d == d0 && ring.len() > 1 {
                ring.remove(0);
            }
            let first = ring[0];
            ring.push(first);
            if signed_area(&ring) > 0.0 {
                outers.push((label, ring));
            } else {
                holes.push((label, ring));
            }
        }
    }
    let mut polys: Vec<(u32, Polygon)> = outers
        .into_iter()
        .map(|(l, r)| {
            (
                l,
                Polygon {
                    exterior: r,
                    holes: Vec::new(),
                },
            )
        })
        .collect();
    for (label, ring) in holes {
        if let Some((_, p)) = polys.iter_mut().find(|(l, _)| *l == label) {
            p.holes.push(ring);
        }
    }
    polys
}

fn point_line_distance(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len = dx.hypot(dy);
    if len < 1e-12 {
        return (p[0] - a[0]).hypot(p[1] - a[1]);
    }
    ((p[0] - a[0]) * dy - (p[1] - a[1]) * dx).abs() / len
}

fn dp(points: &[[f64; 2]], eps: f64, keep: &mut [bool]) {
    if points.len() < 3 {
        return;
    }
    let (a, b) = (points[0], points[points.len() - 1]);
    let (mut imax, mut dmax) = (0, 0.0);
    for (i, p) in points.iter().enumerate().take(points.len() - 1).skip(1) {
        let d = point_line_distance(*p, a, b);
        if d > dmax {
            (imax, dmax) = (i, d);
        }
    }
    if dmax > eps {
        keep[imax] = true;
        dp(&points[..=imax], eps, &mut keep[..=imax]);
        dp(&points[imax..], eps, &mut keep[imax..]);
    }
}

/// Douglas–Peucker simplification of a closed ring with tolerance `eps`; returns the ring
/// unchanged when simplification would leave fewer than 3 distinct points.
pub fn simplify_ring(ring: &[[f64; 2]], eps: f64) -> Vec<[f64; 2]> {
    if ring.len() <= 4 || eps <= 0.0 {
        return ring.to_vec();
    }
    // Split the closed ring at the point farthest from its first point.
    let far = (1..ring.len() - 1)
        .max_by(|&i, &j| {
            let d = |k: usize| (ring[k][0] - ring[0][0]).hypot(ring[k][1] - ring[0][1]);
            d(i).total_cmp(&d(j))
        })
        .unwrap_or(1);
    let mut keep = vec![false; ring.len()];
    keep[0] = true;
    keep[far] = true;
    keep[ring.len() - 1] = true;
    dp(&ring[..=far], eps, &mut keep[..=far]);
    dp(&ring[far..], eps, &mut keep[far..]);
    let out: Vec<[f64; 2]> = ring
        .iter()
        .zip(&keep)
        .filter(|(_, &k)| k)
        .map(|(p, _)| *p)
        .collect();
    if out.len() < 4 {
        ring.to_vec()
    } else {
        out
    }
}

/// A GeoJSON FeatureCollection of polygons as QuPath annotations of class `class`.
pub fn geojson(polygons: &[Polygon], class: &str, color: [u8; 3]) -> Value {
    let ring = |r: &Vec<[f64; 2]>| -> Value {
        Value::Array(
            r.iter()
                .map(|p| json!([round3(p[0]), round3(p[1])]))
                .collect(),
        )
    };
    let features: Vec<Value> = polygons
        .iter()
        .map(|p| {
            let mut rings = vec![ring(&p.exterior)];
            rings.extend(p.holes.iter().map(ring));
            json!({
                "type": "Feature",
                "geometry": { "type": "Polygon", "coordinates": rings },
                "properties": {
                    "objectType": "annotation",
                    "classification": { "name": class, "color": color },
                    "isLocked": false
                }
            })
        })
        .collect();
    json!({ "type": "FeatureCollection", "features": features })
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::morphology::from_rows;

    fn trace(rows: &[&str]) -> Vec<(u32, Polygon)> {
        let b = from_rows(rows);
        let (labels, _) = b.components();
        trace_polygons(&b, &labels)
    }

    #[test]
    fn a_square_is_four_corners() {
        let p = trace(&["....", ".##.", ".##.", "...."]);
        assert_eq!(p.len(), 1);
        let ring = &p[0].1.exterior;
        assert_eq!(ring.len(), 5, "{ring:?}");
        assert_eq!(ring[0], ring[4]);
        assert_eq!(p[0].1.area(), 4.0);
    }

    #[test]
    fn a_ring_has_a_hole() {
        let p = trace(&[".....", ".###.", ".#.#.", ".###.", "....."]);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].1.holes.len(), 1);
        assert_eq!(p[0].1.area(), 8.0);
    }

    #[test]
    fn diagonal_pixels_make_one_ring_and_separate_blobs_two() {
        let p = trace(&["#.", ".#"]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].1.area(), 2.0);
        let q = trace(&["#..#", "#..#"]);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn areas_match_pixel_counts_on_a_blob() {
        let rows = [
            "..........",
            ".####.....",
            ".#..###...",
            ".###.##.#.",
            "...####.#.",
            "..........",
        ];
        let b = from_rows(&rows);
        let (labels, sizes) = b.components();
        let polys = trace_polygons(&b, &labels);
        for (label, p) in &polys {
            assert_eq!(p.area() as usize, sizes[*label as usize], "{p:?}");
        }
    }

    #[test]
    fn simplification_keeps_corners_and_drops_jaggies() {
        let mut ring = vec![[0.0, 0.0]];
        for i in 1..=10 {
            ring.push([i as f64, if i % 2 == 0 { 0.0 } else { 0.2 }]);
        }
        ring.extend([[10.0, 10.0], [0.0, 10.0], [0.0, 0.0]]);
        let s = simplify_ring(&ring, 0.5);
        assert_eq!(
            s,
            vec![
                [0.0, 0.0],
                [10.0, 0.0],
                [10.0, 10.0],
                [0.0, 10.0],
                [0.0, 0.0]
            ]
        );
    }

    #[test]
    fn geojson_is_a_qupath_feature_collection() {
        let p = Polygon {
            exterior: vec![[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 0.0]],
            holes: vec![],
        };
        let g = geojson(&[p], "Tissue", [0, 200, 0]);
        assert_eq!(g["type"], "FeatureCollection");
        let f = &g["features"][0];
        assert_eq!(f["type"], "Feature");
        assert_eq!(f["geometry"]["type"], "Polygon");
        assert_eq!(f["properties"]["objectType"], "annotation");
        assert_eq!(f["properties"]["classification"]["name"], "Tissue");
        assert_eq!(f["geometry"]["coordinates"][0][1], json!([2.0, 0.0]));
    }
}
