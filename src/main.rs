//! `dinoadapt`: adapt DINOv2 vision foundation models to medical and satellite imagery.
//!
//! A thin program: it parses the command line, picks the device and wires the library crates
//! together. Each subcommand lives in `commands/`.

mod batch_args;
mod commands;
mod device;
mod domains;
mod model_args;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dinoadapt",
    version,
    about,
    long_about = None,
    after_help = "Parity against reference fixtures and the benchmarks are in the developer tools: \
                  `cargo run --release -p dinoadapt-devtools -- --help` (dinoadapt-dev)."
)]
struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The three users' jobs end to end at tiny scale on built-in samples, with report.html.
    Demo(commands::demo::DemoArgs),
    /// Images (or a preprocessed pixel tensor) -> backbone features in safetensors + a Parquet
    /// manifest.
    Embed(Box<commands::embed::EmbedArgs>),
    /// Describe a checkpoint: format, layout, architecture, parameter count, interpolation.
    Inspect(commands::inspect::InspectArgs),
    /// Check the machine before a long batch (libraries, devices, disk, model): what to fix.
    Doctor(commands::doctor::DoctorArgs),
    /// Write a checkpoint as dinoadapt native safetensors or in the Hugging Face layout.
    Export(commands::export::ExportArgs),
    /// DINOv2 pre-training from a TOML recipe: fresh, or continued from a checkpoint; resumable.
    Pretrain(commands::pretrain::PretrainArgs),
    /// Curation: near-duplicate removal, decontamination, retrieval against seeds or
    /// hierarchical k-means sampling, over embeddings -> a Parquet manifest recipes accept.
    Curate(Box<commands::curate::CurateArgs>),
    /// Satellite rasters through GDAL: chips, chip embeddings, stitched georeferenced predictions.
    #[command(subcommand)]
    Satellite(commands::satellite::SatelliteCommand),
    /// Radiology volumes (DICOM series, NIfTI): conversion, model-input slices, slice and
    /// volume features, label maps back on the source grid.
    #[command(subcommand)]
    Radiology(commands::radiology::RadiologyCommand),
    /// Whole-slide images: tissue masks, tiles at a target mpp, slide feature bags, in
    /// resumable, shardable batches.
    #[command(subcommand)]
    Pathology(commands::pathology::PathologyCommand),
    /// Heads on frozen features: classification probes (kNN, linear sweep, few-shot) and their
    /// metrics.
    #[command(subcommand)]
    Heads(commands::heads::HeadsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    dinoadapt_datasets::report::mark_start();
    let result = match cli.command {
        Command::Demo(a) => commands::demo::run(a),
        Command::Embed(a) => commands::embed::run(*a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Doctor(a) => commands::doctor::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Pretrain(a) => commands::pretrain::run_command(a),
        Command::Curate(a) => commands::curate::run(*a),
        Command::Satellite(c) => commands::satellite::run(c),
        Command::Radiology(c) => commands::radiology::run(c),
        Command::Pathology(c) => commands::pathology::run(c),
        Command::Heads(c) => commands::heads::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", dinoadapt_core::error_chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
