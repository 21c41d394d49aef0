//! `dinoadapt export --model PATH --to native|huggingface --out DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use dinoadapt_core::checkpoint::export::{save_huggingface, save_native};

use crate::model_args::ModelArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// dinoadapt native: model.safetensors (canonical keys, architecture in metadata) + config.json.
    Native,
    /// Hugging Face transformers layout: model.safetensors + config.json (Dinov2Model /
    /// Dinov2WithRegistersModel).
    Huggingface,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, value_enum)]
    pub to: ExportFormat,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let ck = args.model.load()?;
    std::fs::create_dir_all(&args.out)?;
    match args.to {
        ExportFormat::Native => {
            let provenance = [
                ("source", ck.path.display().to_string()),
                ("source_sha256", ck.sha256.clone()),
                ("source_layout", ck.layout.short().to_string()),
            ];
            save_native(&ck.state, &ck.config, &args.out, &provenance)?;
        }
        ExportFormat::Huggingface => {
            for w in save_huggingface(&ck.state, &ck.config, &args.out)? {
                eprintln!("warning: {w}");
            }
        }
    }
    eprintln!("wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
