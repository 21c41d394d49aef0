//! `dinoadapt-dev`: the developer tools of dinoadapt, beside the `dinoadapt` program: backbone
//! parity against reference fixtures, and benchmarks (inference, training, curation, satellite
//! stitching, slide tiling) to compare with the reference implementations in `bench/`.
//!
//! `cargo run --release -p dinoadapt-devtools -- bench embed ...` (`--features cuda` for
//! `--device cuda:N`).

mod bench;
mod model_args;
mod parity;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dinoadapt-dev",
    version,
    about,
    long_about = None,
    after_help = "Run from the workspace: `cargo run --release -p dinoadapt-devtools -- <COMMAND>`; \
                  add `--features cuda` for --device cuda:N."
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
    /// Compare the backbone against reference fixtures (../shared/fixtures layout).
    Parity(parity::ParityArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
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
    let result = match cli.command {
        Command::Parity(a) => parity::run(a),
        Command::Bench(c) => bench::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
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
