//! Input channels other than RGB: grayscale CT/MR (1), RGB + near-infrared (4), multispectral
//! (up to 13 bands), fluorescence. The patch embedding of an RGB checkpoint is *grown* to C
//! channels, and the channels' names and normalisation are recorded in the model's config
//! ([`InputChannels`]) so that every program that feeds the model feeds the same channels.
//!
//! Two ways to grow (the patch embedding is a linear map over (channel, row, col) pixels):
//! - [`ChannelInit::MeanRepeat`]: every new channel gets the mean of the three RGB kernels
//!   scaled by 3/C, so that an image whose C channels all hold the same gray values gives the
//!   RGB model's output on that gray image (Σ_c 3/C · mean = Σ_rgb).
//! - [`ChannelInit::Map`]: new channel c copies RGB kernel `map[c]` (e.g. the R, G, B bands of
//!   a multispectral raster), a channel without one starts at zero: on the mapped bands the
//!   grown model reproduces the RGB model exactly, and the other bands learn from there.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::VisionTransformer;

/// The input channels a model was trained on: their names and the mean and standard deviation
/// each channel is normalised with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputChannels {
    pub names: Vec<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl InputChannels {
    /// Why the record cannot describe `in_chans` channels, if it cannot.
    pub fn validate(&self, in_chans: usize) -> Result<(), String> {
        let (n, m, s) = (self.names.len(), self.mean.len(), self.std.len());
        if n != in_chans || m != in_chans || s != in_chans {
            return Err(format!(
                "the channel record has {n} names, {m} means and {s} stds for a model of \
                 {in_chans} input channels"
            ));
        }
        if let Some(bad) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("channel std {bad} is not a positive number"));
        }
        if let Some(bad) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("channel mean {bad} is not a number"));
        }
        Ok(())
    }
}

/// How the new channels' kernels are made from the RGB ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelInit {
    /// The RGB mean, scaled by 3 / C.
    MeanRepeat,
    /// For each new channel, the RGB channel (0, 1, 2) whose kernel it copies, or none (zero).
    Map(Vec<Option<usize>>),
}

/// The patch-embedding weight of an RGB model, `weight` [3 p², D] row-major with rows in
/// (channel, row, col) order, grown to `channels` input channels: [C p², D].
pub fn grow_patch_embedding(
    weight: &[f32],
    patch: usize,
    dim: usize,
    channels: usize,
    init: &ChannelInit,
) -> Result<Vec<f32>, String> {
    let block = patch * patch * dim;
    if weight.len() != 3 * block {
        return Err(format!(
            "the patch embedding has {} values, not 3 channels x {patch}² x {dim}",
            weight.len()
        ));
    }
    if channels == 0 {
        return Err("a model needs at least one input channel".into());
    }
    let rgb: Vec<&[f32]> = weight.chunks(block).collect();
    let mut out = Vec::with_capacity(channels * block);
    match init {
        ChannelInit::MeanRepeat => {
            let scale = 3.0 / channels as f32;
            let mean: Vec<f32> = (0..block)
                .map(|i| (rgb[0][i] + rgb[1][i] + rgb[2][i]) / 3.0 * scale)
                .collect();
            for _ in 0..channels {
                out.extend_from_slice(&mean);
            }
        }
        ChannelInit::Map(map) => {
            if map.len() != channels {
                return Err(format!(
                    "the channel map has {} entries for {channels} channels",
                    map.len()
                ));
            }
            for m in map {
                match m {
                    Some(k) if *k < 3 => out.extend_from_slice(rgb[*k]),
                    Some(k) => {
                        return Err(format!("channel map entry {k}: an RGB kernel is 0, 1 or 2"))
                    }
                    None => out.extend(std::iter::repeat_n(0.0, block)),
                }
            }
        }
    }
    Ok(out)
}

impl<B: Backend> VisionTransformer<B> {
    /// The model with its RGB patch embedding grown to `channels` input channels (see the
    /// module documentation); `record` names them and gives their normalisation. A model that
    /// already has `channels` channels only takes the record.
    pub fn with_input_channels(
        mut self,
        channels: usize,
        init: &ChannelInit,
        record: Option<InputChannels>,
    ) -> Result<Self, String> {
        if let Some(r) = &record {
            r.validate(channels)?;
        }
        if self.config.in_chans != channels {
            if self.config.in_chans != 3 {
                return Err(format!(
                    "only an RGB patch embedding can be grown (this one has {} channels)",
                    self.config.in_chans
                ));
            }
            let p = self.config.patch_size;
            let d = self.config.embed_dim;
            let weight = self.patch_embed.weight.val();
            let device = weight.device();
            let host: Vec<f32> = weight
                .into_data()
                .convert::<f32>()
                .into_vec()
                .map_err(|e| format!("patch embedding: {e:?}"))?;
            let grown = grow_patch_embedding(&host, p, d, channels, init)?;
            self.patch_embed.weight = Param::from_tensor(Tensor::from_data(
                TensorData::new(grown, [channels * p * p, d]),
                &device,
            ));
            self.config.in_chans = channels;
        }
        self.config.channels = record;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb_weight(p: usize, d: usize) -> Vec<f32> {
        (0..3 * p * p * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect()
    }

    /// x · W for one patch: x [in], W [in, D] row-major.
    fn apply(x: &[f32], w: &[f32], d: usize) -> Vec<f32> {
        let mut out = vec![0f32; d];
        for (i, xi) in x.iter().enumerate() {
            for j in 0..d {
                out[j] += xi * w[i * d + j];
            }
        }
        out
    }

    #[test]
    fn mean_repeat_reproduces_rgb_on_a_gray_image_at_any_channel_count() {
        let (p, d) = (2, 5);
        let w = rgb_weight(p, d);
        let gray: Vec<f32> = (0..p * p).map(|i| i as f32 * 0.3 - 0.4).collect();
        let rgb_out = apply(&gray.repeat(3), &w, d);
        for c in [1, 2, 4, 13] {
            let grown = grow_patch_embedding(&w, p, d, c, &ChannelInit::MeanRepeat).unwrap();
            let out = apply(&gray.repeat(c), &grown, d);
            for (a, b) in out.iter().zip(&rgb_out) {
                assert!((a - b).abs() < 1e-5, "{c} channels: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_map_copies_kernels_and_zeroes_the_new_bands() {
        let (p, d) = (2, 3);
        let w = rgb_weight(p, d);
        let map = ChannelInit::Map(vec![Some(2), Some(1), Some(0), None]);
        let grown = grow_patch_embedding(&w, p, d, 4, &map).unwrap();
        let block = p * p * d;
        assert_eq!(&grown[..block], &w[2 * block..]);
        assert_eq!(&grown[2 * block..3 * block], &w[..block]);
        assert!(grown[3 * block..].iter().all(|v| *v == 0.0));
        // BGR + NIR input gives the RGB model's output on the RGB image, whatever the NIR band.
        let r: Vec<f32> = (0..p * p).map(|i| i as f32).collect();
        let g: Vec<f32> = (0..p * p).map(|i| 1.0 - i as f32).collect();
        let b: Vec<f32> = (0..p * p).map(|i| 0.5 * i as f32).collect();
        let nir = vec![7.0; p * p];
        let rgb_out = apply(&[r.clone(), g.clone(), b.clone()].concat(), &w, d);
        let out = apply(&[b, g, r, nir].concat(), &grown, d);
        for (a, b) in out.iter().zip(&rgb_out) {
            assert!((a - b).abs() < 1e-5, "{out:?} vs {rgb_out:?}");
        }
    }

    /// The model-level definition: a grown model on a gray image replicated to its channels
    /// gives the RGB model's features on the gray image replicated to R, G and B.
    #[test]
    fn a_grown_model_reproduces_the_rgb_model_on_a_gray_image() {
        use crate::vit::VitConfig;
        use burn::backend::Flex;
        use burn::tensor::Distribution;
        let device = Default::default();
        let cfg = VitConfig::tiny("vits14_reg", 16, 2, 2);
        let model = VisionTransformer::<Flex>::init(&cfg, &device);
        let p = cfg.patch_size;
        let gray = Tensor::<Flex, 4>::random([2, 1, 2 * p, 2 * p], Distribution::Default, &device);
        let rgb = model
            .forward_features(gray.clone().repeat_dim(1, 3), None, &[])
            .tokens;
        for c in [1, 4] {
            let record = InputChannels {
                names: (0..c).map(|i| format!("band{i}")).collect(),
                mean: vec![0.5; c],
                std: vec![0.25; c],
            };
            let grown = model
                .clone()
                .with_input_channels(c, &ChannelInit::MeanRepeat, Some(record.clone()))
                .unwrap();
            assert_eq!(grown.config.in_chans, c);
            assert_eq!(grown.config.channels.as_ref(), Some(&record));
            let out = grown
                .forward_features(gray.clone().repeat_dim(1, c), None, &[])
                .tokens;
            let diff = (out - rgb.clone()).abs().max().into_scalar();
            assert!(diff < 1e-4, "{c} channels: {diff}");
        }
    }

    #[test]
    fn bad_maps_and_records_are_refused() {
        let w = rgb_weight(2, 2);
        assert!(grow_patch_embedding(&w, 2, 2, 2, &ChannelInit::Map(vec![Some(0)])).is_err());
        assert!(grow_patch_embedding(&w, 2, 2, 1, &ChannelInit::Map(vec![Some(3)])).is_err());
        assert!(grow_patch_embedding(&w[1..], 2, 2, 1, &ChannelInit::MeanRepeat).is_err());
        let rec = InputChannels {
            names: vec!["ct".into()],
            mean: vec![0.0],
            std: vec![0.0],
        };
        assert!(rec.validate(1).is_err());
        assert!(rec.validate(2).is_err());
    }
}
