//! `dinoadapt doctor`: the machine checked before a long batch (`dinoadapt_datasets::doctor`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dinoadapt_core::error_chain;
use dinoadapt_datasets::doctor;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The coming run's output folder: created when missing, written to, its free space read.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    #[command(flatten)]
    pub model: crate::model_args::ModelArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let given = args.model.model.is_some() || args.model.random_init;
    let model = given.then(|| args.model.load().map_err(|e| error_chain(e.as_ref())));
    let checks = doctor::run_checks(&args.out, model, &crate::domains::all());
    print!("{}", doctor::render(&checks, args.json));
    Ok(ExitCode::from(u8::from(doctor::failed(&checks))))
}
