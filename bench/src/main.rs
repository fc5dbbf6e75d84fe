//! Sluice benchmarks. `cargo run --release -p sluice-bench -- plugins` measures the plugin
//! runtime: per-event cost of the currency transform natively and as Rust, Python and
//! JavaScript plugins at several batch sizes, instantiation time, compile vs cached load.
//! `-- pipeline` measures the streaming pipeline; `-- aggregate` the aggregation step alone;
//! `-- lookup` online lookups over HTTP; `-- offline` backfill and training sets.

mod aggregate;
mod lookup;
mod monitor;
mod offline;
mod pipeline;
mod plugins;

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use clap::{Parser, Subcommand};

/// mimalloc (as in the `sluice` binary), counting live heap bytes while [`COUNTING`] is on (only the
/// aggregation benchmark turns it on, to measure memory per key).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            LIVE_BYTES.fetch_add(layout.size(), Relaxed);
        }
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
        }
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            LIVE_BYTES.fetch_add(new_size, Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
        }
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes allocated (and not freed) while counting was on.
pub fn counted_bytes(on: bool) -> usize {
    COUNTING.store(on, Relaxed);
    LIVE_BYTES.load(Relaxed)
}

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
    /// The aggregation step alone: events/s per core and memory per key.
    Aggregate(aggregate::Options),
    /// Online lookups over HTTP: latency and requests/s at 1, 8 and 64 clients.
    Lookup(lookup::Options),
    /// Live monitoring alone: profiling ns/event, time to close a window of 100 features,
    /// memory per feature.
    Monitor(monitor::Options),
    /// Backfill events/s from Parquet, and a training set against its rows: time, peak memory.
    Offline(offline::Options),
    /// (internal) runs a `sluice` command and prints its peak memory.
    #[command(hide = true)]
    Child {
        /// The command's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Plugins(options) => plugins::run(options),
        Command::Pipeline(options) => pipeline::run(options),
        Command::Aggregate(options) => aggregate::run(options),
        Command::Lookup(options) => lookup::run(options),
        Command::Offline(options) => offline::run(options),
        Command::Monitor(options) => monitor::run(options),
        Command::Child { args } => offline::run_child(args),
    }
}
