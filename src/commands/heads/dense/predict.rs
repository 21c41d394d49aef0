//! Backbone + dense head over one input of the head's domain, written by the domain in its own
//! format (`heads predict --task segment|canopy`, `satellite predict --head DIR`).

use burn::tensor::backend::Backend;
use dinoadapt_datasets::{DensePredictOptions, Domain};
use serde_json::Value;

use super::folder::{predictor, HeadFolder};
use super::targets::given;
use crate::device::{on_device, BackendJob};
use crate::model_args::ModelArgs;
use crate::progress::Bar;
use dinoadapt_core::backend::DeviceSpec;

/// The model side of a prediction run.
pub struct Backbone<'a> {
    /// The backbone flags (default: the head's recorded model).
    pub model: &'a ModelArgs,
    pub device: DeviceSpec,
    pub tf32: bool,
    /// Hide the progress bar.
    pub quiet: bool,
}

struct DensePredictJob<'a> {
    head: &'a HeadFolder,
    domain: &'static dyn Domain,
    options: &'a DensePredictOptions<'a>,
    backbone: &'a Backbone<'a>,
}

impl BackendJob for DensePredictJob<'_> {
    type Output = Value;

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Value> {
        let b = self.backbone;
        let mut model = predictor::<B>(self.head, b.model, b.device, b.tf32, device)?;
        let mut bar = Bar::new("predict", b.quiet);
        given(
            self.domain
                .dense_predict(self.options, &mut model, &mut bar),
            self.domain,
            "dense-head prediction",
        )
    }
}

/// `head` (of `domain`) over `options.input`: the domain's summary of what it wrote.
pub fn run(
    head: &HeadFolder,
    domain: &'static dyn Domain,
    options: &DensePredictOptions,
    backbone: &Backbone,
) -> anyhow::Result<Value> {
    on_device(
        backbone.device,
        DensePredictJob {
            head,
            domain,
            options,
            backbone,
        },
    )
}
