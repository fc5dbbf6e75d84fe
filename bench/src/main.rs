//! Sluice benchmarks. `cargo run --release -p sluice-bench -- plugins` measures the plugin
//! runtime: per-event cost of the currency transform natively and as Rust, Python and
//! JavaScript plugins at several batch sizes, instantiation time, compile vs cached load.

mod pipeline;
mod plugins;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice-bench", about = "Sluice benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Plugin runtime: per-event cost, instantiation, compile vs cached load.
    Plugins(plugins::Options),
    /// Streaming pipeline: events/s against a bare consumer, and freshness.
    Pipeline(pipeline::Options),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Plugins(options) => plugins::run(options),
        Command::Pipeline(options) => pipeline::run(options),
    }
}
