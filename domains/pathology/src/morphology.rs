//! Binary image operations for tissue masks: median (majority) filter, dilation, erosion,
//! closing, opening with square windows (counted with an integral image, so the cost does not
//! depend on the window), hole filling and connected components.
//!
//! Connectivity follows the usual digital-topology pairing: foreground is 8-connected,
//! background 4-connected (so a diagonal gap never splits tissue and holes are well defined).

/// A binary image, row-major, `true` = foreground.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    pub width: usize,
    pub height: usize,
    pub data: Vec<bool>,
}

impl Binary {
    /// All-background image.
    pub fn new(width: usize, height: usize) -> Binary {
        Binary {
            width,
            height,
            data: vec![false; width * height],
        }
    }

    /// Pixel at (x, y).
    pub fn get(&self, x: usize, y: usize) -> bool {
        self.data[y * self.width + x]
    }

    /// Number of foreground pixels.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&v| v).count()
    }

    /// For every pixel, (foreground count, pixel count) in the window of radius `r` clipped to
    /// the image.
    fn window_counts(&self, r: usize, mut f: impl FnMut(usize, u32, u32) -> bool) -> Binary {
        let (w, h) = (self.width, self.height);
        let mut integral = vec![0u32; (w + 1) * (h + 1)];
        for y in 0..h {
            let mut row = 0u32;
            for x in 0..w {
                row += u32::from(self.data[y * w + x]);
                integral[(y + 1) * (w + 1) + x + 1] = integral[y * (w + 1) + x + 1] + row;
            }
        }
        let mut out = Binary::new(w, h);
        for y in 0..h {
            let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(h));
            for x in 0..w {
                let (x0, x1) = (x.saturating_sub(r), (x + r + 1).min(w));
                let s = integral[y1 * (w + 1) + x1] + integral[y0 * (w + 1) + x0]
                    - integral[y0 * (w + 1) + x1]
                    - integral[y1 * (w + 1) + x0];
                let n = ((y1 - y0) * (x1 - x0)) as u32;
                out.data[y * w + x] = f(y * w + x, s, n);
            }
        }
        out
    }

    /// Median filter of a binary image with a `size` x `size` window (odd): the majority.
    pub fn median(&self, size: usize) -> Binary {
        if size <= 1 {
            return self.clone();
        }
        self.window_counts(size / 2, |_, s, n| 2 * s > n)
    }

    /// Dilation with a square of radius `r`.
    pub fn dilate(&self, r: usize) -> Binary {
        self.window_counts(r, |_, s, _| s > 0)
    }

    /// Erosion with a square of radius `r` (pixels beyond the border do not erode).
    pub fn erode(&self, r: usize) -> Binary {
        self.window_counts(r, |_, s, n| s == n)
    }

    /// Closing (dilate then erode): bridges gaps narrower than `2r + 1`.
    pub fn close(&self, r: usize) -> Binary {
        if r == 0 {
            return self.clone();
        }
        self.dilate(r).erode(r)
    }

    /// Opening (erode then dilate): removes specks narrower than `2r + 1`.
    pub fn open(&self, r: usize) -> Binary {
        if r == 0 {
            return self.clone();
        }
        self.erode(r).dilate(r)
    }

    /// Fills background regions (4-connected) that do not touch the border and have at most
    /// `max_hole` pixels (every enclosed hole when None).
    pub fn fill_holes(&self, max_hole: Option<usize>) -> Binary {
        let (w, h) = (self.width, self.height);
        let mut seen = vec![false; w * h];
        let mut out = self.clone();
        let mut stack = Vec::new();
        let mut region = Vec::new();
        for start in 0..w * h {
            if self.data[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            stack.push(start);
            region.clear();
            let mut touches_border = false;
            while let Some(i) = stack.pop() {
                region.push(i);
                let (x, y) = (i % w, i / w);
                if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
                    touches_border = true;
                }
                let mut visit = |j: usize| {
                    if !self.data[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                };
                if x > 0 {
                    visit(i - 1);
                }
                if x + 1 < w {
                    visit(i + 1);
                }
                if y > 0 {
                    visit(i - w);
                }
                if y + 1 < h {
                    visit(i + w);
                }
            }
            if !touches_border && max_hole.is_none_or(|m| region.len() <= m) {
                for &i in &region {
                    out.data[i] = true;
                }
            }
        }
        out
    }

    /// 8-connected foreground components: a label per pixel (0 = background, 1.. = component)
    /// and the pixel count of each component (index 0 unused).
    pub fn components(&self) -> (Vec<u32>, Vec<usize>) {
        let (w, h) = (self.width, self.height);
        let mut labels = vec![0u32; w * h];
        let mut sizes = vec![0usize];
        let mut stack = Vec::new();
        for start in 0..w * h {
            if !self.data[start] || labels[start] != 0 {
                continue;
            }
            let label = sizes.len() as u32;
            let mut size = 0;
            labels[start] = label;
            stack.push(start);
            while let Some(i) = stack.pop() {
                size += 1;
                let (x, y) = ((i % w) as i64, (i / w) as i64);
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (nx, ny) = (x + dx, y + dy);
                        if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                            continue;
                        }
                        let j = ny as usize * w + nx as usize;
                        if self.data[j] && labels[j] == 0 {
                            labels[j] = label;
                            stack.push(j);
                        }
                    }
                }
            }
            sizes.push(size);
        }
        (labels, sizes)
    }
}

/// A mask drawn in text: `#` is set (for tests).
#[cfg(test)]
pub(crate) fn from_rows(rows: &[&str]) -> Binary {
    let (w, h) = (rows[0].len(), rows.len());
    Binary {
        width: w,
        height: h,
        data: rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| b == b'#'))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_removes_salt_and_keeps_blocks() {
        let b = from_rows(&[
            "#.......", "........", "...###..", "...###..", "...###..", "........",
        ]);
        let m = b.median(3);
        assert!(!m.get(0, 0));
        assert!(m.get(4, 3));
    }

    #[test]
    fn closing_bridges_and_opening_removes() {
        let b = from_rows(&["......", ".##.##", ".##.##", "......"]);
        assert!(b.close(1).get(3, 1));
        let specks = from_rows(&["#.....", "......", "..###.", "..###.", "..###."]);
        let o = specks.open(1);
        assert!(!o.get(0, 0));
        assert!(o.get(3, 3));
    }

    #[test]
    fn holes_fill_but_border_background_stays() {
        let b = from_rows(&["......", ".####.", ".#..#.", ".####.", "......"]);
        let f = b.fill_holes(None);
        assert!(f.get(2, 2) && f.get(3, 2));
        assert!(!f.get(0, 0));
        // A size limit keeps larger holes.
        assert!(!b.fill_holes(Some(1)).get(2, 2));
        assert!(b.fill_holes(Some(2)).get(2, 2));
    }

    #[test]
    fn diagonal_neighbours_are_one_component() {
        let b = from_rows(&["#...", ".#..", "...#"]);
        let (labels, sizes) = b.components();
        assert_eq!(sizes.len(), 3);
        assert_eq!(labels[0], labels[5]);
        assert_eq!(sizes[1], 2);
        assert_eq!(sizes[2], 1);
    }
}
