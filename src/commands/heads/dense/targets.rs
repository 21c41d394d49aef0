//! Per-pixel targets of a feature file, read by the domain that made it (its `domain`
//! metadata, looked up among the registered domains) from the domain's own label format.

use anyhow::{anyhow, bail};
use dinoadapt_datasets::{
    DenseLabels, DenseTargetOptions, DenseValues, Domain, DomainError, FeatureFile,
};
use dinoadapt_heads::dense::layer_tokens::Features;

use crate::commands::heads::Task;
use crate::domains;

/// The registered domain `name` (`what` names the file that records it).
pub fn registered(name: &str, what: &str) -> anyhow::Result<&'static dyn Domain> {
    let all = domains::all();
    all.iter()
        .copied()
        .find(|d| d.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|d| d.name()).collect();
            anyhow!(
                "{what}: of domain `{name}`; dense heads work on `<domain> embed --layers ...` \
             features of the domains {}",
                names.join(", ")
            )
        })
}

/// What `task` predicts per pixel.
pub fn values(task: Task) -> DenseValues {
    match task {
        Task::Canopy => DenseValues::Heights,
        _ => DenseValues::Classes,
    }
}

/// A domain's answer, or what the domain does not give.
pub fn given<T>(
    answer: Option<Result<T, DomainError>>,
    domain: &dyn Domain,
    what: &str,
) -> anyhow::Result<T> {
    Ok(answer.ok_or_else(|| anyhow!("the {} domain has no {what}", domain.name()))??)
}

/// The feature file `f` as its domain sees it.
pub fn feature_file(f: &Features) -> FeatureFile<'_> {
    FeatureFile {
        path: &f.path,
        meta: &f.meta,
        rows: f.n,
    }
}

/// The targets of `f` (`options.targets`), read by the domain that made it.
pub fn labelled(
    f: &Features,
    domain: &dyn Domain,
    options: &DenseTargetOptions,
) -> anyhow::Result<DenseLabels> {
    let l = given(
        domain.dense_targets(&feature_file(f), options),
        domain,
        "dense-head targets",
    )?;
    let size = l.input_size;
    if l.values.len() != f.n * size * size {
        bail!(
            "{}: {} target values for {} inputs of {size}x{size} px",
            f.path.display(),
            l.values.len(),
            f.n
        );
    }
    Ok(l)
}

/// The domain of the feature file `f`.
pub fn domain_of(f: &Features) -> anyhow::Result<&'static dyn Domain> {
    registered(f.domain(), &f.path.display().to_string())
}

/// The input size of a head's preprocessing, as its domain reads it.
pub fn input_size(domain: &dyn Domain, preprocessing: &serde_json::Value) -> anyhow::Result<usize> {
    given(
        domain.dense_input_size(preprocessing),
        domain,
        "dense-head input size",
    )
}
