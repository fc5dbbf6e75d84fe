//! `sluice backfill`: a feature set's very graph (same plugins, same aggregation code, same
//! expressions) over historical events, into a version of its own.
//!
//! Inputs are files (JSONL, CSV, Parquet; folders and `*` patterns) or the set's own input
//! stream replayed from its start (`--from-stream`). File events run in event-time order
//! (ties: the order of the inputs); each gets the sequence of its position in that order, so
//! a re-run gives every event the same sequence. Stream events keep their stream sequence
//! and order, as the live pipeline saw them.
//!
//! Rows go to the set's Parquet target under `<root>/<set>/v<version>` (parts named by the
//! sequences they hold: a re-run after a crash skips what is committed, so it never writes a
//! row twice) and, with `--online`, to the online store under that version's keys (which
//! skips applied sequences). Events that fail go to `<root>/<set>/v<version>.dead-letters.jsonl`
//! with their reason. File events are sorted in bounded memory (`--sort-memory-mb`; past it,
//! sorted runs spill to a folder beside the output and are merged); stream events are read
//! and processed a batch at a time, as they are already in order.

mod input;
mod letters;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::progress::Progress;
use super::sort::Sorter;
use crate::config::{Config, FeatureSetConfig};
use crate::graph::Graph;
use crate::plan::{Chain, SetPlan};
use crate::plugin::{NoLookup, OnlineLookup};
use crate::rows::{MaxFailed, Tally};
use crate::runner::BatchRunner;
use crate::runtime::{deploy_plugins, Services, StoreLookup};
use crate::sources::Decoder;
use crate::targets::online::OnlineTarget;
use crate::targets::parquet::PartWriter;
use bytes::Bytes;
pub use input::expand_inputs;
use input::{read_files, replay, Batch, Files, Input};
use letters::LetterFile;

/// Options of `sluice backfill`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillOptions {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// The feature set (its highest version in the config is the definition run).
    #[arg(long)]
    pub set: String,
    /// The version the rows are written under; must not be a version the config runs live.
    #[arg(long)]
    pub version: u32,
    /// Input files, folders (every .jsonl/.json/.csv/.parquet inside) or `dir/*.jsonl` patterns.
    #[arg(long, num_args = 1.., required_unless_present = "from_stream")]
    pub input: Vec<String>,
    /// Replay the set's input stream (JetStream, or the embedded log) from its start instead.
    #[arg(long, conflicts_with = "input")]
    pub from_stream: bool,
    /// Also write the online store (under the backfill version's keys).
    #[arg(long)]
    pub online: bool,
    /// Events per batch through the graph.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Failed events accepted: a share of the events read (`5%`, `0.05`) or a count (`100`).
    /// Past it, or when every event fails, the backfill still commits what it computed and
    /// keeps the dead letters, then exits non-zero with the top reasons.
    #[arg(long, default_value_t = MaxFailed::default())]
    pub max_failed: MaxFailed,
    /// Memory for sorting file events by event time, in MiB; beyond it, sorted runs spill to
    /// `<root>/<set>/.v<version>.sort/` and are merged (each spilled event is decoded twice).
    #[arg(long, default_value_t = 1024)]
    pub sort_memory_mb: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackfillReport {
    /// Events read.
    pub events: u64,
    /// Feature rows produced (including those already committed by an earlier run).
    pub rows: u64,
    /// Events that failed (in the dead-letters file).
    pub failed: u64,
    /// Events refused as late.
    pub late: u64,
    /// Rows skipped because an earlier run committed them.
    pub skipped: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// The failures by reason.
    pub failures: Tally,
}

impl BackfillReport {
    /// Why this run must not pass for a success (every event failed, or more than
    /// `max_failed`), with the top reasons; `None` when it may.
    pub fn refusal(&self, max_failed: MaxFailed) -> Option<String> {
        self.failures.refusal(self.events, max_failed)
    }
}

/// The feature set a backfill runs: the config's highest version of `name`, renumbered.
pub fn backfill_set(config: &Config, name: &str, version: u32) -> anyhow::Result<FeatureSetConfig> {
    let defined: Vec<&FeatureSetConfig> = config.feature_sets.iter().filter(|s| s.name == name).collect();
    let Some(set) = defined.iter().max_by_key(|s| s.version) else {
        let names: Vec<&str> = config.feature_sets.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!("no feature set \"{name}\" in the config (it has: {})", names.join(", "));
    };
    anyhow::ensure!(
        !defined.iter().any(|s| s.version == version),
        "--version {version}: the config runs {name} v{version} live; a backfill writes a version of its own so \
         its rows never mix with live ones (e.g. --version {})",
        defined.iter().map(|s| s.version).max().unwrap_or(0) + 1000
    );
    let mut set = (*set).clone();
    set.version = version;
    Ok(set)
}

/// Runs a backfill.
pub fn run(options: &BackfillOptions) -> anyhow::Result<BackfillReport> {
    let config = crate::config::load(&options.config)?;
    let set = backfill_set(&config, &options.set, options.version)?;
    let plan = SetPlan::compile(&config, &set)?;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let services = if options.online || options.from_stream {
        Some(runtime.block_on(Services::connect(&config))?)
    } else {
        None
    };
    let Some(writer) = plan.part_writer()? else {
        anyhow::bail!(
            "feature set {}: a backfill writes its parquet target, and it has none",
            set.name
        );
    };
    let root = plan.parquet.as_ref().map(|p| p.root.clone()).unwrap_or_default();
    let decoder = Decoder::new(&set).map_err(anyhow::Error::msg)?;
    let mut letters = LetterFile::new(
        root.join(&set.name)
            .join(format!("v{}.dead-letters.jsonl", set.version)),
    );
    let mut decode_failures = Tally::default();
    let mut fields = Vec::new();
    let input = open_input(
        options,
        &set,
        services.as_ref(),
        &root,
        &runtime,
        (&decoder, &mut fields),
        (&mut letters, &mut decode_failures),
    )?;
    let (chain, online) = chain(&config, &set, &plan, options, services.as_ref())?;
    let total = input.total() + letters.count;
    let mut run = Run {
        done: letters.count,
        input,
        fields,
        runner: BatchRunner::new(decoder, chain.counting_in(Arc::new(Mutex::new(decode_failures)))),
        online,
        writer,
        roll_rows: plan.parquet.as_ref().map_or(usize::MAX, |p| p.roll_rows),
        letters,
        report: BackfillReport {
            events: total,
            ..Default::default()
        },
        progress: Progress::new(total, options.quiet),
        runtime: &runtime,
    };
    while run.batch(options.batch.max(1))? {}
    let mut report = run.finish()?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// File events, sorted by event time in bounded memory and numbered by position; or stream
/// events, replayed a batch at a time with their sequences.
fn open_input(
    options: &BackfillOptions,
    set: &FeatureSetConfig,
    services: Option<&Services>,
    root: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
    (decoder, fields): (&Decoder, &mut Vec<String>),
    (letters, failures): (&mut LetterFile, &mut Tally),
) -> anyhow::Result<Input> {
    if let (Some(services), true) = (services, options.from_stream) {
        return Ok(Input::Stream(runtime.block_on(replay(set, services))?));
    }
    let spill = root.join(&set.name).join(format!(".v{}.sort", set.version));
    let _ = std::fs::remove_dir_all(&spill); // left by a run that crashed
    let mut files = Files::default();
    let sorter = read_files(
        &expand_inputs(&options.input)?,
        decoder,
        fields,
        (letters, failures, &mut files),
        Sorter::new(options.sort_memory_mb.saturating_mul(1 << 20), spill),
        options.quiet,
    )?;
    if sorter.runs() > 0 && !options.quiet {
        eprintln!(
            "  the events exceed --sort-memory-mb {}: sorted runs spilled to disk, now merged",
            options.sort_memory_mb
        );
    }
    let total = sorter.len();
    Ok(Input::Files {
        sorted: Box::new(sorter.finish(decoder)?),
        total,
        position: 0,
        files,
    })
}

/// The set's steps as the live pipeline builds them; with `--online`, its aggregation state
/// and rows in the online store under the backfill version's keys. Joins read the joined
/// sets' offline rows as of each event's time.
fn chain(
    config: &Config,
    set: &FeatureSetConfig,
    plan: &SetPlan,
    options: &BackfillOptions,
    services: Option<&Services>,
) -> anyhow::Result<(Chain, Option<OnlineTarget>)> {
    let registry = match services {
        Some(services) => services.registry.clone(),
        None => deploy_plugins(config)?,
    };
    let (lookup, tiles, online): (Arc<dyn OnlineLookup>, _, _) = match (services, options.online) {
        (Some(services), true) => (
            Arc::new(StoreLookup::new(config, services.store.clone())?),
            plan.tiles(&services.store),
            plan.online_target(&services.store),
        ),
        _ => (Arc::new(NoLookup), None, None),
    };
    let joins = set
        .steps
        .iter()
        .any(|s| matches!(s.kind, crate::steps::StepKind::Join(_)));
    let lookup: Arc<dyn OnlineLookup> = match joins {
        true => Arc::new(crate::offline::history::HistoryLookup::new(
            config,
            set,
            options.online.then_some(lookup),
        )?),
        false => lookup,
    };
    // A backfill runs to its end: nothing asks a step to stop waiting for the store.
    let never = tokio::sync::watch::channel(false).1;
    let graph = Graph::build(set, &registry, lookup, tiles, None, never)?;
    Ok((Chain::new(graph), online))
}

/// A backfill under way.
struct Run<'a> {
    input: Input,
    fields: Vec<String>,
    runner: BatchRunner,
    online: Option<OnlineTarget>,
    writer: PartWriter,
    roll_rows: usize,
    letters: LetterFile,
    report: BackfillReport,
    progress: Progress,
    /// Events processed (or failed) so far.
    done: u64,
    runtime: &'a tokio::runtime::Runtime,
}

impl Run<'_> {
    /// Runs and commits the next batch of up to `n` events; `false` at the end.
    fn batch(&mut self, n: usize) -> anyhow::Result<bool> {
        let mut batch = self.input.next_batch(n, &mut self.fields, self.runtime)?;
        if batch.is_empty() {
            return Ok(false);
        }
        let ran = match &mut batch {
            Batch::Messages(messages) => self.runner.run_messages(messages)?,
            Batch::Decoded { rows, bytes } => {
                let last_seq = bytes.last().map_or(0, |b| b.0);
                let rows = std::mem::take(rows);
                self.runner.run(rows, Vec::new(), bytes.len() as u64, last_seq)?
            }
        };
        self.done += ran.counts.events;
        self.report.late += ran.counts.late;
        self.report.rows += ran.counts.rows;
        for failure in &ran.failures {
            let (body, origin) = match &batch {
                Batch::Messages(messages) => (self.runner.body(messages, failure.seq), None),
                Batch::Decoded { bytes, .. } => match bytes.binary_search_by_key(&failure.seq, |b| b.0) {
                    Ok(at) => (bytes[at].1.clone(), self.input.origin(bytes[at].2)),
                    Err(_) => (Bytes::new(), None),
                },
            };
            self.letters.write(failure, &body, origin)?;
        }
        if let Some(target) = &self.online {
            let write = target.batch(&ran.rows, ran.last_seq, ran.state, ran.counts.late);
            self.runtime
                .block_on(target.apply(&write))
                .map_err(|e| anyhow::anyhow!("online store: {e}"))?;
        }
        self.report.skipped += self.writer.add(ran.rows) as u64;
        if self.writer.pending() >= self.roll_rows {
            self.writer.commit()?;
        }
        self.progress.show(self.done);
        Ok(true)
    }

    /// Commits what is pending and closes the dead letters.
    fn finish(mut self) -> anyhow::Result<BackfillReport> {
        self.writer.commit()?;
        self.progress.finish(self.done);
        self.letters.finish()?;
        let failures = self.runner.chain().take_tally();
        self.report.failed = failures.total;
        self.report.failures = failures;
        Ok(self.report)
    }
}
