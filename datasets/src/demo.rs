//! A domain's part of `dinoadapt demo` ([`crate::Domain::demo`]): its built-in samples, the
//! inputs it derives where no real file exists, its jobs (recipe scripts run as a user runs
//! them, with their variables) and the report sections that show what they made. The program
//! runs every registered domain's demo in turn, so a new domain brings its demo with it.

use std::path::{Path, PathBuf};

use crate::domain::{Domain, DomainError};
use crate::jobs::run_script;
use crate::report::{jobs_section, Report, Section};

/// Runs one job: its name, its recipe script (bash text) and the script's variables.
pub type JobRunner<'a> = dyn FnMut(&str, &str, &[(&str, String)]) -> Result<(), DomainError> + 'a;

/// What a domain's demo is given.
pub struct DemoContext<'a> {
    /// The demo's output folder: samples go to `inputs/`, recipes to `recipes/`, a domain's
    /// outputs to `<domain name>/`.
    pub out: &'a Path,
    /// A backbone an earlier domain's demo trained, for the frozen-feature jobs of later ones.
    pub backbone: Option<PathBuf>,
    pub run_job: &'a mut JobRunner<'a>,
}

impl DemoContext<'_> {
    /// `name` under the output folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    /// Writes built-in files (samples, recipes) under the output folder; returns their paths.
    pub fn write_files(&self, files: &[(&str, &[u8])]) -> Result<Vec<PathBuf>, DomainError> {
        files
            .iter()
            .map(|(name, bytes)| {
                let p = self.out.join(name);
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d).map_err(DomainError::input)?;
                }
                std::fs::write(&p, bytes)
                    .map_err(|e| DomainError::Input(format!("{}: {e}", p.display())))?;
                Ok(p)
            })
            .collect()
    }

    /// The model arguments of a frozen-feature job: the earlier demo's backbone, else a
    /// random-weight ViT-S/14.
    pub fn model_args(&self) -> String {
        match &self.backbone {
            Some(b) => format!("--model {}", b.display()),
            None => "--random-init --preset vits14".into(),
        }
    }

    /// Runs a job.
    pub fn run(
        &mut self,
        job: &str,
        script: &str,
        vars: &[(&str, String)],
    ) -> Result<(), DomainError> {
        (self.run_job)(job, script, vars)
    }
}

/// What a domain's demo made.
#[derive(Debug, Default)]
pub struct DemoOutcome {
    pub sections: Vec<Section>,
    /// A backbone later domains' demos may take (the pathology job's pre-trained teacher).
    pub backbone: Option<PathBuf>,
}

/// A path as a script variable.
pub fn var(p: &Path) -> String {
    p.display().to_string()
}

/// Runs every domain's demo in turn under `out`, each job's script with the program `exe` as
/// `DINOADAPT` (every line of a job on the terminal when `verbose`, else its steps), each
/// domain handing its backbone on to the next; the report of them all.
pub fn run_demos(
    domains: &[&dyn Domain],
    out: &Path,
    exe: &Path,
    verbose: bool,
) -> Result<Report, DomainError> {
    std::fs::create_dir_all(out).map_err(DomainError::input)?;
    let (mut records, mut sections, mut backbone) = (Vec::new(), Vec::new(), None);
    for domain in domains {
        let mut run_job = |job: &str, script: &str, vars: &[(&str, String)]| {
            let mut env = vec![("DINOADAPT", var(exe))];
            env.extend(vars.iter().cloned());
            let log = out.join(format!("logs/{job}.log"));
            let r = run_script(job, script, &env, &log, !verbose);
            records.push(r.map_err(|e| DomainError::Input(e.to_string()))?);
            Ok(())
        };
        let mut ctx = DemoContext {
            out,
            backbone: backbone.clone(),
            run_job: &mut run_job,
        };
        if let Some(outcome) = domain.demo(&mut ctx).transpose()? {
            backbone = backbone.or(outcome.backbone);
            sections.extend(outcome.sections);
        }
    }
    let total: f64 = records.iter().map(|j| j.seconds).sum();
    let mut report = Report::new("dinoadapt demo: the users' jobs at tiny scale")
        .inputs(&[out.join("inputs")])
        .fact(
            "jobs",
            format!("{} ({total:.0} s of job time)", records.len()),
        )
        .section(jobs_section(&records));
    report.sections.extend(sections);
    Ok(report)
}
