//! Model preprocessing: resize, centre crop, scale to [0, 1] and normalise per channel.

use std::path::Path;

use image::imageops::FilterType;
use image::DynamicImage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Resampling filter for the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeFilter {
    Bicubic,
    Bilinear,
    Nearest,
}

impl ResizeFilter {
    fn filter(self) -> FilterType {
        match self {
            ResizeFilter::Bicubic => FilterType::CatmullRom,
            ResizeFilter::Bilinear => FilterType::Triangle,
            ResizeFilter::Nearest => FilterType::Nearest,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bicubic" => Some(ResizeFilter::Bicubic),
            "bilinear" => Some(ResizeFilter::Bilinear),
            "nearest" => Some(ResizeFilter::Nearest),
            _ => None,
        }
    }
}

/// The preprocessing of one model, recorded in every output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Resize so the shorter side has this length (keeping the aspect ratio).
    pub resize_shortest: Option<u32>,
    /// Centre crop to (height, width).
    pub crop: Option<(u32, u32)>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub filter: ResizeFilter,
}

impl Default for Preprocess {
    /// The DINOv2 evaluation transform: resize 256 (bicubic), centre crop 224, ImageNet mean/std.
    fn default() -> Self {
        Preprocess {
            resize_shortest: Some(256),
            crop: Some((224, 224)),
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            filter: ResizeFilter::Bicubic,
        }
    }
}

fn triple(v: Option<&Value>) -> Option<[f32; 3]> {
    let a = v?.as_array()?;
    if a.len() != 3 {
        return None;
    }
    Some([
        a[0].as_f64()? as f32,
        a[1].as_f64()? as f32,
        a[2].as_f64()? as f32,
    ])
}

/// A user's changes to a preprocessing, as the command line spells them (`embed --resize
/// --crop-size --mean --std --filter`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PreprocessOverrides<'a> {
    /// Shorter side in px (0: no resize).
    pub resize: Option<u32>,
    /// `N`, `HxW` or `0` (no crop).
    pub crop: Option<&'a str>,
    /// Three numbers, `0.485,0.456,0.406`.
    pub mean: Option<&'a str>,
    pub std: Option<&'a str>,
    /// bicubic, bilinear or nearest.
    pub filter: Option<&'a str>,
}

/// Three comma-separated numbers.
fn three_numbers(s: &str, what: &str) -> Result<[f32; 3], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--{what} `{s}`: expected three numbers like 0.5,0.5,0.5"))?;
    v.try_into()
        .map_err(|_| format!("--{what} `{s}`: expected three numbers"))
}

impl Preprocess {
    /// Apply a user's overrides (see [`PreprocessOverrides`]).
    pub fn override_with(&mut self, o: &PreprocessOverrides) -> Result<(), String> {
        if let Some(r) = o.resize {
            self.resize_shortest = (r > 0).then_some(r);
        }
        if let Some(c) = o.crop {
            let bad = || format!("--crop-size `{c}`: N, HxW or 0");
            let side = |v: &str| v.trim().parse::<u32>().map_err(|_| bad());
            self.crop = match c.split_once('x') {
                _ if c == "0" => None,
                Some((h, w)) => Some((side(h)?, side(w)?)),
                None => Some((side(c)?, side(c)?)),
            };
        }
        if let Some(m) = o.mean {
            self.mean = three_numbers(m, "mean")?;
        }
        if let Some(s) = o.std {
            self.std = three_numbers(s, "std")?;
        }
        if let Some(f) = o.filter {
            self.filter = ResizeFilter::parse(f)
                .ok_or_else(|| format!("--filter `{f}`: bicubic, bilinear or nearest"))?;
        }
        Ok(())
    }

    /// The preprocessing a checkpoint's own library applies: Hugging Face's
    /// `preprocessor_config.json` beside the weights `weights`, else `pretrained_cfg` in a timm
    /// `config.json` (`config`), else the DINOv2 evaluation transform ([`Preprocess::default`]).
    pub fn of_checkpoint(weights: &Path, config: Option<&Path>) -> Result<Preprocess, String> {
        let dir = weights.parent().unwrap_or(Path::new("."));
        let hf = dir.join("preprocessor_config.json");
        if hf.is_file() {
            let text =
                std::fs::read_to_string(&hf).map_err(|e| format!("{}: {e}", hf.display()))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not valid JSON ({e})", hf.display()))?;
            return Ok(Preprocess::from_huggingface(&v));
        }
        let timm = config
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("pretrained_cfg").map(Preprocess::from_timm));
        Ok(timm.unwrap_or_default())
    }

    /// From a Hugging Face `preprocessor_config.json` (BitImageProcessor as DINOv2 ships).
    pub fn from_huggingface(v: &Value) -> Self {
        let mut p = Preprocess::default();
        if v.get("do_resize").and_then(Value::as_bool) == Some(false) {
            p.resize_shortest = None;
        } else if let Some(s) = v.pointer("/size/shortest_edge").and_then(Value::as_u64) {
            p.resize_shortest = Some(s as u32);
        }
        if v.get("do_center_crop").and_then(Value::as_bool) == Some(false) {
            p.crop = None;
        } else if let (Some(h), Some(w)) = (
            v.pointer("/crop_size/height").and_then(Value::as_u64),
            v.pointer("/crop_size/width").and_then(Value::as_u64),
        ) {
            p.crop = Some((h as u32, w as u32));
        }
        p.mean = triple(v.get("image_mean")).unwrap_or(p.mean);
        p.std = triple(v.get("image_std")).unwrap_or(p.std);
        p.filter = match v.get("resample").and_then(Value::as_u64) {
            Some(2) => ResizeFilter::Bilinear,
            Some(0) => ResizeFilter::Nearest,
            _ => ResizeFilter::Bicubic,
        };
        p
    }

    /// From a timm `pretrained_cfg` (input_size, crop_pct, interpolation, mean, std).
    pub fn from_timm(cfg: &Value) -> Self {
        let mut p = Preprocess::default();
        if let Some(sz) = cfg.get("input_size").and_then(Value::as_array) {
            if let (Some(h), Some(w)) = (
                sz.get(1).and_then(Value::as_u64),
                sz.get(2).and_then(Value::as_u64),
            ) {
                p.crop = Some((h as u32, w as u32));
                let crop_pct = cfg.get("crop_pct").and_then(Value::as_f64).unwrap_or(0.875);
                p.resize_shortest = Some((h.min(w) as f64 / crop_pct).floor() as u32);
            }
        }
        p.mean = triple(cfg.get("mean")).unwrap_or(p.mean);
        p.std = triple(cfg.get("std")).unwrap_or(p.std);
        if let Some(f) = cfg
            .get("interpolation")
            .and_then(Value::as_str)
            .and_then(ResizeFilter::parse)
        {
            p.filter = f;
        }
        p
    }

    /// Output (height, width) for an input of (height, width), if fixed by the crop.
    pub fn output_size(&self, height: u32, width: u32) -> (u32, u32) {
        if let Some(c) = self.crop {
            return c;
        }
        match self.resize_shortest {
            Some(s) => resized(height, width, s),
            None => (height, width),
        }
    }

    /// Apply to one image: CHW f32, normalised.
    pub fn apply(&self, img: &DynamicImage) -> (Vec<f32>, (u32, u32)) {
        let mut rgb = img.to_rgb32f();
        if let Some(s) = self.resize_shortest {
            let (h, w) = resized(rgb.height(), rgb.width(), s);
            if (h, w) != (rgb.height(), rgb.width()) {
                rgb = image::imageops::resize(&rgb, w, h, self.filter.filter());
            }
        }
        if let Some((ch, cw)) = self.crop {
            let (h, w) = (rgb.height(), rgb.width());
            if h < ch || w < cw {
                // Pad by resizing up so the crop fits (as torchvision's CenterCrop pads).
                let s = (ch as f64 / h as f64).max(cw as f64 / w as f64);
                let nh = ((h as f64 * s).ceil() as u32).max(ch);
                let nw = ((w as f64 * s).ceil() as u32).max(cw);
                rgb = image::imageops::resize(&rgb, nw, nh, self.filter.filter());
            }
            let (h, w) = (rgb.height(), rgb.width());
            let top = ((h - ch) as f64 / 2.0).round() as u32;
            let left = ((w - cw) as f64 / 2.0).round() as u32;
            rgb = image::imageops::crop_imm(&rgb, left, top, cw, ch).to_image();
        }
        let (h, w) = (rgb.height() as usize, rgb.width() as usize);
        let mut out = vec![0f32; 3 * h * w];
        for (i, px) in rgb.pixels().enumerate() {
            for c in 0..3 {
                out[c * h * w + i] = (px.0[c].clamp(0.0, 1.0) - self.mean[c]) / self.std[c];
            }
        }
        (out, (h as u32, w as u32))
    }
}

/// torchvision `Resize(int)`: the shorter side becomes `s`, the longer scales with it.
fn resized(h: u32, w: u32, s: u32) -> (u32, u32) {
    if h <= w {
        (s, ((w as u64 * s as u64) / h as u64) as u32)
    } else {
        (((h as u64 * s as u64) / w as u64) as u32, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizes_crops_and_normalises() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            300,
            200,
            image::Rgb([255, 0, 128]),
        ));
        let p = Preprocess::default();
        let (x, (h, w)) = p.apply(&img);
        assert_eq!((h, w), (224, 224));
        assert_eq!(x.len(), 3 * 224 * 224);
        let r = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        let g = (0.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1];
        assert!((x[0] - r).abs() < 1e-4);
        assert!((x[224 * 224 + 500] - g).abs() < 1e-4);
        assert_eq!(resized(200, 300, 256), (256, 384));
    }

    #[test]
    fn reads_huggingface_and_timm_configs() {
        let hf: Value = serde_json::json!({"do_resize": true, "size": {"shortest_edge": 256},
            "do_center_crop": true, "crop_size": {"height": 224, "width": 224}, "resample": 3,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]});
        let p = Preprocess::from_huggingface(&hf);
        assert_eq!(p.crop, Some((224, 224)));
        assert_eq!(p.mean, [0.5; 3]);
        let timm: Value = serde_json::json!({"input_size": [3, 224, 224], "crop_pct": 1.0,
            "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]});
        let t = Preprocess::from_timm(&timm);
        assert_eq!(t.resize_shortest, Some(224));
        assert_eq!(t.filter, ResizeFilter::Bilinear);
    }
}
