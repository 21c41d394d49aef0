//! Reading pixels of a DICOM whole-slide image with dicom-rs, for OpenSlide builds older than 4
//! (Debian's 3.4.1) that cannot open DICOM.
//!
//! Each VOLUME instance is a level, cut into frames of `Columns` x `Rows` pixels laid over the
//! Total Pixel Matrix either row by row (TILED_FULL) or at the positions each frame's Plane
//! Position (Slide) Sequence gives (TILED_SPARSE; the first frame at a position wins, i.e. the
//! first focal plane and optical path). A region read decodes the frames it overlaps.
//! JPEG baseline frames (by far the most common) are read one fragment at a time from the file;
//! other transfer syntaxes (JPEG 2000, JPEG-LS, RLE, native) are decoded by dicom-pixeldata from
//! the instance, which it holds in memory once a region of that level is read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;
use image::{ImageFormat, RgbImage};

use super::fragments::{self, Fragment};
use super::{first_item, number, text};
use crate::error::{PathologyError, Result};

const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

/// Decoded frames kept per level (a tile read usually touches 1-4 frames; neighbouring tiles
/// share them).
const CACHED_FRAMES: usize = 64;

/// How a level's frames are reached.
enum Frames {
    /// One JPEG baseline fragment per frame, read from the open file on demand.
    Jpeg(std::fs::File, Vec<Fragment>),
    /// Decoded by dicom-pixeldata from the whole instance, opened on first use.
    Decoder(Mutex<Option<Arc<DefaultDicomObject>>>),
}

/// 8-bit RGB of a decoded frame: RGB or YBR_FULL(_422) colour (either planar configuration),
/// or monochrome (MONOCHROME1 inverted).
fn to_rgb(d: &dicom_pixeldata::DecodedPixelData<'_>) -> std::result::Result<RgbImage, String> {
    use dicom_pixeldata::{PhotometricInterpretation as Pi, PlanarConfiguration};
    let (w, h) = (d.columns(), d.rows());
    let n = w as usize * h as usize;
    if d.bits_allocated() != 8 {
        return Err(format!(
            "{}-bit samples (whole-slide frames are 8-bit)",
            d.bits_allocated()
        ));
    }
    let data = d.data();
    let spp = usize::from(d.samples_per_pixel());
    if data.len() < n * spp {
        return Err(format!(
            "{} bytes decoded, {} expected",
            data.len(),
            n * spp
        ));
    }
    let mut rgb = vec![0u8; n * 3];
    match spp {
        1 => {
            let invert = *d.photometric_interpretation() == Pi::Monochrome1;
            for (o, &v) in rgb.chunks_exact_mut(3).zip(data) {
                o.fill(if invert { 255 - v } else { v });
            }
        }
        3 => {
            let planar = d.planar_configuration() == PlanarConfiguration::PixelFirst;
            for (i, o) in rgb.chunks_exact_mut(3).enumerate() {
                for (c, v) in o.iter_mut().enumerate() {
                    *v = if planar {
                        data[c * n + i]
                    } else {
                        data[i * 3 + c]
                    };
                }
            }
            if matches!(d.photometric_interpretation(), Pi::YbrFull | Pi::YbrFull422) {
                for o in rgb.chunks_exact_mut(3) {
                    let (y, cb, cr) = (
                        f32::from(o[0]),
                        f32::from(o[1]) - 128.0,
                        f32::from(o[2]) - 128.0,
                    );
                    let c = |v: f32| v.round().clamp(0.0, 255.0) as u8;
                    o[0] = c(y + 1.402 * cr);
                    o[1] = c(y - 0.344136 * cb - 0.714136 * cr);
                    o[2] = c(y + 1.772 * cb);
                }
            }
        }
        other => return Err(format!("{other} samples per pixel")),
    }
    Ok(RgbImage::from_raw(w, h, rgb).expect("sized above"))
}

/// One VOLUME instance.
pub(crate) struct DicomLevel {
    pub path: PathBuf,
    pub width: u64,
    pub height: u64,
    tile: (u32, u32),
    /// Frame index of each tile position (column, row in tiles).
    positions: HashMap<(u64, u64), u32>,
    frames: Frames,
    cache: Mutex<Vec<(u32, Arc<RgbImage>)>>,
}

impl std::fmt::Debug for DicomLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomLevel")
            .field("path", &self.path)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("tile", &self.tile)
            .finish()
    }
}

fn invalid(path: &Path, what: impl Into<String>) -> PathologyError {
    PathologyError::Invalid {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Frame positions from the Per-Frame Functional Groups (1-based pixel positions).
fn sparse_positions(ds: &InMemDicomObject, tile: (u32, u32)) -> HashMap<(u64, u64), u32> {
    let mut positions = HashMap::new();
    let Some(groups) = ds
        .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
    else {
        return positions;
    };
    for (frame, group) in groups.iter().enumerate() {
        let Some(plane) = first_item(group, tags::PLANE_POSITION_SLIDE_SEQUENCE) else {
            continue;
        };
        let (Some(c), Some(r)) = (
            number(plane, tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX),
            number(plane, tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX),
        ) else {
            continue;
        };
        let key = (
            ((c - 1.0).max(0.0) as u64) / u64::from(tile.0),
            ((r - 1.0).max(0.0) as u64) / u64::from(tile.1),
        );
        positions.entry(key).or_insert(frame as u32);
    }
    positions
}

impl DicomLevel {
    /// Opens one VOLUME instance's geometry and frame layout (its pixel data is not read).
    pub fn open(path: &Path) -> Result<DicomLevel> {
        super::lengths_fit(path, true)
            .map_err(|e| invalid(path, format!("not a readable DICOM file: {e}")))?;
        let obj = dicom_object::OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
            .map_err(|e| invalid(path, format!("not a readable DICOM file: {e}")))?;
        let ts = obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        let need = |tag, name: &str| {
            number(&obj, tag).ok_or_else(|| invalid(path, format!("no {name} in the instance")))
        };
        let tile = (
            need(tags::COLUMNS, "Columns")? as u32,
            need(tags::ROWS, "Rows")? as u32,
        );
        if tile.0 == 0 || tile.1 == 0 {
            return Err(invalid(path, "frames of zero size"));
        }
        let width = number(&obj, tags::TOTAL_PIXEL_MATRIX_COLUMNS).unwrap_or(tile.0.into()) as u64;
        let height = number(&obj, tags::TOTAL_PIXEL_MATRIX_ROWS).unwrap_or(tile.1.into()) as u64;
        let n_frames = number(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1.0) as u32;
        let across = width.div_ceil(u64::from(tile.0));
        let down = height.div_ceil(u64::from(tile.1));
        let organisation = text(&obj, tags::DIMENSION_ORGANIZATION_TYPE);
        let positions = if organisation.as_deref() == Some("TILED_SPARSE") {
            sparse_positions(&obj, tile)
        } else {
            // TILED_FULL (and instances that say nothing): frames fill the matrix row by row.
            (0..u64::from(n_frames).min(across * down))
                .map(|f| ((f % across, f / across), f as u32))
                .collect()
        };
        let frames = match (ts.as_str(), fragments::locate(path)) {
            (JPEG_BASELINE, Ok(Some(frags))) if frags.len() == n_frames as usize => {
                let file = std::fs::File::open(path)
                    .map_err(PathologyError::io(path, "cannot open the level"))?;
                Frames::Jpeg(file, frags)
            }
            _ => Frames::Decoder(Mutex::new(None)),
        };
        Ok(DicomLevel {
            path: path.to_path_buf(),
            width,
            height,
            tile,
            positions,
            frames,
            cache: Mutex::new(Vec::new()),
        })
    }

    fn decode(&self, frame: u32) -> Result<RgbImage> {
        let fail = |why: String| invalid(&self.path, format!("frame {frame}: {why}"));
        match &self.frames {
            Frames::Jpeg(file, frags) => {
                let bytes = fragments::read(file, frags[frame as usize])
                    .map_err(PathologyError::io(&self.path, "cannot read a frame"))?;
                image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg)
                    .map(|i| i.to_rgb8())
                    .map_err(|e| fail(e.to_string()))
            }
            Frames::Decoder(obj) => {
                let obj = {
                    let mut slot = obj.lock().unwrap_or_else(|e| e.into_inner());
                    if slot.is_none() {
                        super::lengths_fit(&self.path, false).map_err(fail)?;
                        let o = open_file(&self.path).map_err(|e| fail(e.to_string()))?;
                        *slot = Some(Arc::new(o));
                    }
                    slot.clone().expect("just set")
                };
                let decoded = obj
                    .decode_pixel_data_frame(frame)
                    .map_err(|e| fail(e.to_string()))?;
                to_rgb(&decoded).map_err(fail)
            }
        }
    }

    fn frame(&self, frame: u32) -> Result<Arc<RgbImage>> {
        if let Some((_, img)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(f, _)| *f == frame)
        {
            return Ok(img.clone());
        }
        let img = Arc::new(self.decode(frame)?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHED_FRAMES {
            cache.remove(0);
        }
        cache.push((frame, img.clone()));
        Ok(img)
    }

    /// `w` x `h` pixels at (`x0`, `y0`) of this level; outside the matrix and missing frames
    /// (sparse tiling) are white.
    pub fn read(&self, x0: u64, y0: u64, w: u32, h: u32) -> Result<RgbImage> {
        let mut out = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
        let (tw, th) = (u64::from(self.tile.0), u64::from(self.tile.1));
        let x1 = (x0 + u64::from(w)).min(self.width);
        let y1 = (y0 + u64::from(h)).min(self.height);
        if x0 >= x1 || y0 >= y1 {
            return Ok(out);
        }
        for ty in y0 / th..=(y1 - 1) / th {
            for tx in x0 / tw..=(x1 - 1) / tw {
                let Some(&frame) = self.positions.get(&(tx, ty)) else {
                    continue;
                };
                let img = self.frame(frame)?;
                // The part of this frame inside both the region and the matrix.
                let (fx0, fy0) = (tx * tw, ty * th);
                let sx = x0.max(fx0);
                let sy = y0.max(fy0);
                let ex = x1.min(fx0 + tw).min(fx0 + u64::from(img.width()));
                let ey = y1.min(fy0 + th).min(fy0 + u64::from(img.height()));
                for y in sy..ey {
                    for x in sx..ex {
                        let p = *img.get_pixel((x - fx0) as u32, (y - fy0) as u32);
                        out.put_pixel((x - x0) as u32, (y - y0) as u32, p);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A DICOM slide: its VOLUME instances, largest first.
#[derive(Debug)]
pub struct DicomSlide {
    levels: Vec<DicomLevel>,
}

impl DicomSlide {
    /// Opens the VOLUME instances `paths` (one per level, any order).
    pub fn open(paths: &[PathBuf]) -> Result<DicomSlide> {
        let mut levels = paths
            .iter()
            .map(|p| DicomLevel::open(p))
            .collect::<Result<Vec<_>>>()?;
        levels.sort_by_key(|l| std::cmp::Reverse(l.width));
        Ok(DicomSlide { levels })
    }

    /// Pixels of `level` at level coordinates (`x0`, `y0`) given in level 0, as OpenSlide does.
    pub fn read(&self, level: u32, x0: u64, y0: u64, w: u32, h: u32) -> Result<RgbImage> {
        let l = &self.levels[level as usize];
        let base = &self.levels[0];
        let ds = base.width as f64 / l.width as f64;
        l.read(
            (x0 as f64 / ds).floor() as u64,
            (y0 as f64 / ds).floor() as u64,
            w,
            h,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
    use dicom_object::FileMetaTableBuilder;

    fn put(o: &mut InMemDicomObject, tag: Tag, vr: VR, v: PrimitiveValue) {
        o.put(DataElement::new(tag, vr, v));
    }

    /// The colour of pixel (x, y) of a level `w` wide.
    fn colour(x: u64, y: u64, w: u64) -> [u8; 3] {
        [(x * 7) as u8, (y * 11) as u8, (w + x / 4) as u8]
    }

    /// A native RGB VOLUME instance of `w` x `h` in tiles of `t` px, frames in `order` of
    /// (tile column, tile row); sparse instances carry each frame's position.
    fn write_level(path: &Path, w: u64, h: u64, t: u32, sparse: Option<&[(u64, u64)]>) {
        let mut o = InMemDicomObject::new_empty();
        let ui = |v: &str| PrimitiveValue::from(v.to_string());
        put(
            &mut o,
            tags::SOP_CLASS_UID,
            VR::UI,
            ui(super::super::WSI_SOP_CLASS),
        );
        put(
            &mut o,
            tags::SOP_INSTANCE_UID,
            VR::UI,
            ui(&format!("1.2.3.{w}")),
        );
        put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, ui("1.2.3"));
        put(&mut o, tags::MODALITY, VR::CS, ui("SM"));
        put(
            &mut o,
            tags::IMAGE_TYPE,
            VR::CS,
            ui("DERIVED\\PRIMARY\\VOLUME\\NONE"),
        );
        put(&mut o, tags::ROWS, VR::US, PrimitiveValue::from(t as u16));
        put(
            &mut o,
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(t as u16),
        );
        put(
            &mut o,
            tags::TOTAL_PIXEL_MATRIX_COLUMNS,
            VR::UL,
            PrimitiveValue::from(w as u32),
        );
        put(
            &mut o,
            tags::TOTAL_PIXEL_MATRIX_ROWS,
            VR::UL,
            PrimitiveValue::from(h as u32),
        );
        put(
            &mut o,
            tags::SAMPLES_PER_PIXEL,
            VR::US,
            PrimitiveValue::from(3u16),
        );
        put(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, ui("RGB"));
        put(
            &mut o,
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0u16),
        );
        put(
            &mut o,
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(8u16),
        );
        put(
            &mut o,
            tags::BITS_STORED,
            VR::US,
            PrimitiveValue::from(8u16),
        );
        put(&mut o, tags::HIGH_BIT, VR::US, PrimitiveValue::from(7u16));
        put(
            &mut o,
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        );
        let t64 = u64::from(t);
        let full: Vec<(u64, u64)> = (0..h.div_ceil(t64))
            .flat_map(|r| (0..w.div_ceil(t64)).map(move |c| (c, r)))
            .collect();
        let order = sparse.unwrap_or(&full);
        put(
            &mut o,
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            ui(&order.len().to_string()),
        );
        let org = if sparse.is_some() {
            "TILED_SPARSE"
        } else {
            "TILED_FULL"
        };
        put(&mut o, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, ui(org));
        if sparse.is_some() {
            let items: Vec<InMemDicomObject> = order
                .iter()
                .map(|&(c, r)| {
                    let mut pos = InMemDicomObject::new_empty();
                    let col = PrimitiveValue::from((c * t64 + 1) as i32);
                    put(
                        &mut pos,
                        tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
                        VR::SL,
                        col,
                    );
                    let row = PrimitiveValue::from((r * t64 + 1) as i32);
                    put(
                        &mut pos,
                        tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
                        VR::SL,
                        row,
                    );
                    let mut g = InMemDicomObject::new_empty();
                    g.put(DataElement::new(
                        tags::PLANE_POSITION_SLIDE_SEQUENCE,
                        VR::SQ,
                        DataSetSequence::from(vec![pos]),
                    ));
                    g
                })
                .collect();
            o.put(DataElement::new(
                tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(items),
            ));
        }
        let mut pixels = Vec::new();
        for &(c, r) in order {
            for y in 0..t64 {
                for x in 0..t64 {
                    let (px, py) = (c * t64 + x, r * t64 + y);
                    // Frames overhanging the matrix carry padding the reader must not show.
                    let p = if px < w && py < h {
                        colour(px, py, w)
                    } else {
                        [1, 2, 3]
                    };
                    pixels.extend_from_slice(&p);
                }
            }
        }
        put(
            &mut o,
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(pixels.into()),
        );
        o.with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1"))
            .unwrap()
            .write_to_file(path)
            .unwrap();
    }

    fn check(slide: &DicomSlide, level: u32, x0: u64, y0: u64, w: u32, h: u32, width: u64) {
        let img = slide.read(level, x0, y0, w, h).unwrap();
        let l = &slide.levels[level as usize];
        let ds = slide.levels[0].width / l.width;
        for y in 0..h {
            for x in 0..w {
                let (lx, ly) = (x0 / ds + u64::from(x), y0 / ds + u64::from(y));
                let want = if lx < l.width && ly < l.height {
                    colour(lx, ly, width)
                } else {
                    [255, 255, 255]
                };
                assert_eq!(
                    img.get_pixel(x, y).0,
                    want,
                    "level {level} pixel ({lx}, {ly})"
                );
            }
        }
    }

    #[test]
    fn tiled_full_levels_assemble_across_frames_and_edges() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.dcm"), dir.path().join("b.dcm"));
        write_level(&a, 10, 7, 4, None);
        write_level(&b, 5, 3, 4, None);
        let slide = DicomSlide::open(&[b.clone(), a.clone()]).unwrap();
        assert_eq!(slide.levels[0].width, 10);
        check(&slide, 0, 0, 0, 10, 7, 10);
        check(&slide, 0, 3, 2, 6, 5, 10);
        check(&slide, 0, 8, 5, 6, 6, 10);
        check(&slide, 1, 2, 2, 4, 2, 5);
    }

    #[test]
    fn tiled_sparse_frames_go_where_their_positions_say() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.dcm");
        // Shuffled, and tile (1, 1) is missing: white there.
        let order = [(2, 1), (0, 0), (1, 0), (0, 1), (2, 0)];
        write_level(&a, 12, 8, 4, Some(&order));
        let slide = DicomSlide::open(&[a]).unwrap();
        let img = slide.read(0, 0, 0, 12, 8).unwrap();
        for y in 0..8u32 {
            for x in 0..12u32 {
                let missing = (4..8).contains(&x) && y >= 4;
                let want = if missing {
                    [255, 255, 255]
                } else {
                    colour(x.into(), y.into(), 12)
                };
                assert_eq!(img.get_pixel(x, y).0, want, "({x}, {y})");
            }
        }
    }
}
