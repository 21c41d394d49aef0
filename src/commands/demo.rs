//! `dinoadapt demo`: the users' jobs end to end at tiny scale on the CPU. Every registered
//! domain runs its demo (`Domain::demo`: its built-in samples, the inputs it derives where no
//! real file exists, its recipe scripts from `recipes/` run as a user runs them); the pathology
//! demo's pre-trained teacher is the frozen backbone of the later ones. Ends with report.html.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dinoadapt_datasets::demo::run_demos;
use dinoadapt_datasets::report::elapsed_seconds;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output folder (inputs, each job's outputs and logs, report.html).
    #[arg(long, short, default_value = "demo-out")]
    pub out: PathBuf,
    /// Show every line the jobs print, not only their steps.
    #[arg(long)]
    pub verbose_jobs: bool,
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let out = std::path::absolute(&a.out)?;
    let exe = std::env::current_exe()?;
    let report = run_demos(&crate::domains::all(), &out, &exe, a.verbose_jobs)?;
    let page = report.write(&out.join("report.html"))?;
    let secs = elapsed_seconds();
    eprintln!("demo done in {secs:.0} s; the report: {}", page.display());
    Ok(ExitCode::SUCCESS)
}
