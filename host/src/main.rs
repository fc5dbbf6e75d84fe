//! The `sluice` binary: parses the command line and hands over to `sluice::cli`.

use clap::Parser;

/// mimalloc: the pipeline allocates and frees many small values per batch (decoded events,
/// plugin outputs, row encodings), where it is faster than glibc's malloc (README, benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = sluice::cli::Cli::parse();
    // Plugin commands are tools for authors: only warnings unless RUST_LOG says otherwise.
    let default = match cli.command {
        sluice::cli::Command::Plugin(_)
        | sluice::cli::Command::Validate { .. }
        | sluice::cli::Command::Demo(_)
        | sluice::cli::Command::Token { .. } => "warn",
        _ => "warn,sluice=info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into()))
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match sluice::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
