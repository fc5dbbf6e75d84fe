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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_schema::DataType;
use bytes::Bytes;

use super::progress::Progress;
use super::sort::{Historical, Sorted, Sorter};
use crate::bus::Replay;
use crate::config::{Config, FeatureSetConfig, SourceConfig, TargetConfig};
use crate::graph::Graph;
use crate::plugin::{NoLookup, OnlineLookup};
use crate::rows::{Failure, MaxFailed, Rows, Tally};
use crate::runtime::{deploy_plugins, Services, StoreLookup, StoreTiles};
use crate::sources::file::{format_of, FileSource};
use crate::sources::Decoder;
use crate::steps::aggregate::TileHome;
use crate::targets::online::OnlineTarget;
use crate::targets::parquet::PartWriter;

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

/// The files named by `--input` entries, in order: a folder gives its known-format files
/// sorted by name; `*` in the file name matches any characters.
pub fn expand_inputs(inputs: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let path = PathBuf::from(input);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.contains('*') {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut matched: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| anyhow::anyhow!("--input {input}: {}: {e}", dir.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| wildcard(name, n))
                })
                .collect();
            matched.sort();
            anyhow::ensure!(!matched.is_empty(), "--input {input}: no file matches");
            files.extend(matched);
        } else if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| anyhow::anyhow!("--input {input}: {e}"))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && format_of(p).is_some())
                .collect();
            inside.sort();
            anyhow::ensure!(
                !inside.is_empty(),
                "--input {input}: no .jsonl, .json, .csv or .parquet file in the folder"
            );
            files.extend(inside);
        } else {
            anyhow::ensure!(path.is_file(), "--input {input}: no such file");
            anyhow::ensure!(
                format_of(&path).is_some(),
                "--input {input}: unknown format: expected .jsonl, .json, .csv or .parquet"
            );
            files.push(path);
        }
    }
    Ok(files)
}

/// Whether `name` matches `pattern`, where `*` stands for any characters.
fn wildcard(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
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
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let services = if options.online || options.from_stream {
        Some(runtime.block_on(Services::connect(&config))?)
    } else {
        None
    };
    let root = parquet_root(&config, &set)?;
    let decoder = Decoder::new(&set).map_err(anyhow::Error::msg)?;
    let mut failures = Tally::default();
    let mut letters = LetterFile::new(
        root.join(&set.name)
            .join(format!("v{}.dead-letters.jsonl", set.version)),
    );
    // File events: sorted by event time in bounded memory, then numbered by position.
    // Stream events: replayed a batch at a time, keeping their sequences.
    let mut fields = Vec::new();
    let mut input = match &services {
        Some(services) if options.from_stream => Input::Stream(runtime.block_on(replay(&set, services))?),
        _ => {
            let spill = root.join(&set.name).join(format!(".v{}.sort", set.version));
            let _ = std::fs::remove_dir_all(&spill); // left by a run that crashed
            let mut files = Files::default();
            let sorter = read_files(
                &expand_inputs(&options.input)?,
                &decoder,
                &mut fields,
                (&mut letters, &mut failures, &mut files),
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
            Input::Files {
                sorted: Box::new(sorter.finish(&decoder)?),
                total,
                position: 0,
                files,
            }
        }
    };
    let decode_failures = letters.count;
    let total = input.total() + decode_failures;

    let registry = match &services {
        Some(services) => services.registry.clone(),
        None => deploy_plugins(&config)?,
    };
    let (lookup, tiles, mut online): (Arc<dyn OnlineLookup>, _, _) = match (&services, options.online) {
        (Some(services), true) => {
            let target = OnlineTarget::new(
                services.store.clone(),
                &config.host.redis_prefix,
                &set.name,
                set.version,
                ttl_ms(&set)?,
            )
            .without(
                crate::online::OnlineView::new(&config.host.redis_prefix, &set)
                    .map_err(anyhow::Error::msg)?
                    .left_out(&set),
            );
            (
                Arc::new(StoreLookup::new(&config, services.store.clone())?),
                Some(TileHome {
                    prefix: crate::keys::set_prefix(&config.host.redis_prefix, &set.name, set.version),
                    store: Arc::new(StoreTiles(services.store.clone())),
                }),
                Some(target),
            )
        }
        _ => (Arc::new(NoLookup), None, None),
    };
    // Joins read the joined sets' offline rows as of each event's time.
    let lookup: Arc<dyn OnlineLookup> = if set
        .steps
        .iter()
        .any(|s| matches!(s.kind, crate::config::StepKind::Join(_)))
    {
        let live = options.online.then_some(lookup);
        Arc::new(crate::offline::history::HistoryLookup::new(&config, &set, live)?)
    } else {
        lookup
    };
    // A backfill runs to its end: nothing asks a step to stop waiting for the store.
    let mut graph = Graph::build(
        &set,
        &registry,
        lookup,
        tiles,
        None,
        tokio::sync::watch::channel(false).1,
    )?;
    let roll_rows = set
        .targets
        .iter()
        .find_map(|t| match t {
            TargetConfig::Parquet { roll_rows, .. } => Some(*roll_rows),
            _ => None,
        })
        .unwrap_or(usize::MAX);
    let types = set
        .aggregate_types()
        .into_iter()
        .map(|(name, integer)| (name, if integer { DataType::Int64 } else { DataType::Float64 }))
        .collect();
    let mut writer = PartWriter::open(&root, &set.name, set.version)?.with_types(types);
    // What failed so far failed to decode; the graph's failures are counted per batch.
    let mut report = BackfillReport {
        events: total,
        ..Default::default()
    };
    let mut progress = Progress::new(total, options.quiet);
    let mut done = decode_failures;
    let batch = options.batch.max(1);
    loop {
        let (rows, bytes, undecodable) = input.next_batch(batch, &decoder, &mut fields, &runtime)?;
        if bytes.is_empty() && undecodable.is_empty() {
            break;
        }
        done += undecodable.len() as u64;
        for (failure, body) in &undecodable {
            failures.add(failure);
            letters.write(failure, body, None)?;
        }
        let Some(&(last_seq, _, _)) = bytes.last() else {
            progress.show(done);
            continue;
        };
        let mut failed = Vec::new();
        let rows = graph.run(rows, &mut failed)?;
        let state = graph.take_writes();
        let late = failed.iter().filter(|f| f.late).count() as u64;
        report.late += late;
        for failure in &failed {
            failures.add(failure);
            let (body, origin) = match bytes.binary_search_by_key(&failure.seq, |b| b.0) {
                Ok(at) => (&bytes[at].1[..], input.origin(bytes[at].2)),
                Err(_) => (&b""[..], None),
            };
            letters.write(failure, body, origin)?;
        }
        report.rows += rows.len() as u64;
        if let Some(target) = &mut online {
            let write = target.batch(&rows, last_seq, state, late);
            runtime
                .block_on(target.apply(&write))
                .map_err(|e| anyhow::anyhow!("online store: {e}"))?;
        }
        report.skipped += writer.add(rows) as u64;
        if writer.pending() >= roll_rows {
            writer.commit()?;
        }
        done += bytes.len() as u64;
        progress.show(done);
    }
    writer.commit()?;
    progress.finish(done);
    letters.finish()?;
    report.failed = failures.total;
    report.failures = failures;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn ttl_ms(set: &FeatureSetConfig) -> anyhow::Result<u64> {
    Ok(set
        .ttl_micros()
        .map_err(anyhow::Error::msg)?
        .map_or(0, |us| us as u64 / 1000))
}

/// The folder of the set's Parquet target.
fn parquet_root(config: &Config, set: &FeatureSetConfig) -> anyhow::Result<PathBuf> {
    set.targets
        .iter()
        .find_map(|t| match t {
            TargetConfig::Parquet { root, .. } => Some(config.resolve(root)),
            _ => None,
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "feature set {}: a backfill writes its parquet target, and it has none",
                set.name
            )
        })
}

/// The input files of a backfill, by the read order of their first event: a file event's
/// dead letter names its file and line (or row).
#[derive(Default)]
struct Files {
    /// (order of the file's first event, the file, what its numbers count).
    starts: Vec<(u64, PathBuf, &'static str)>,
}

/// Where a failed file event came from.
struct Origin<'a> {
    file: &'a Path,
    unit: &'static str,
    number: u64,
}

impl Files {
    fn origin(&self, order: u64, number: u64) -> Option<Origin<'_>> {
        let at = self
            .starts
            .partition_point(|(first, _, _)| *first <= order)
            .checked_sub(1)?;
        let (_, file, unit) = &self.starts[at];
        Some(Origin { file, unit, number })
    }
}

/// Reads and decodes every event of the files into the sorter; undecodable ones become
/// failures (with their read order as sequence, and their file and line).
fn read_files(
    files: &[PathBuf],
    decoder: &Decoder,
    fields: &mut Vec<String>,
    (letters, failures, origins): (&mut LetterFile, &mut Tally, &mut Files),
    mut sorter: Sorter,
    quiet: bool,
) -> anyhow::Result<Sorter> {
    let mut order = 0u64;
    let required = decoder.required_fields();
    for file in files {
        if !quiet {
            eprintln!("  reading {}", file.display());
        }
        let mut source =
            FileSource::open(file, None, 10_000)?.reading_times(decoder.time_reader(), decoder.time_field());
        source.require(&required)?;
        origins.starts.push((order + 1, file.clone(), source.unit()));
        loop {
            let batch = source.next_batch()?;
            if batch.is_empty() {
                break;
            }
            for (line, bytes) in batch {
                order += 1;
                match decoder.decode(&bytes, fields) {
                    Ok(event) => sorter.push(Historical {
                        time: event.time,
                        order,
                        line,
                        event,
                        bytes,
                    })?,
                    Err(reason) => {
                        let failure = Failure::new(order, "decode", reason);
                        failures.add(&failure);
                        letters.write(&failure, &bytes, origins.origin(order, line))?;
                    }
                }
            }
        }
    }
    Ok(sorter)
}

/// Replays the set's input subject from its start up to its end when the backfill starts.
async fn replay(set: &FeatureSetConfig, services: &Services) -> anyhow::Result<Replay> {
    let SourceConfig::Jetstream { stream, subject, .. } = &set.source else {
        anyhow::bail!(
            "--from-stream: feature set {} does not read a stream subject (a file or another set's rows); use --input",
            set.name
        );
    };
    Ok(services.bus.replay(stream, subject, 0).await?)
}

/// A backfill's events, in the order they run.
enum Input {
    /// File events, sorted; numbered by their position.
    Files {
        sorted: Box<Sorted>,
        total: u64,
        position: u64,
        files: Files,
    },
    /// The input stream, with its sequences.
    Stream(Replay),
}

/// A batch of rows for the graph, the original bytes by sequence (with the read order and
/// line of a file event), and events that did not decode (with their bytes).
type Batch = (Rows, Vec<(u64, Bytes, Option<(u64, u64)>)>, Vec<(Failure, Bytes)>);

impl Input {
    /// Where a file event came from, by its read order and line.
    fn origin(&self, at: Option<(u64, u64)>) -> Option<Origin<'_>> {
        match (self, at) {
            (Input::Files { files, .. }, Some((order, line))) => files.origin(order, line),
            _ => None,
        }
    }

    fn total(&self) -> u64 {
        match self {
            Input::Files { total, .. } => *total,
            Input::Stream(replay) => replay.total(),
        }
    }

    /// Up to `n` events; an empty batch at the end.
    fn next_batch(
        &mut self,
        n: usize,
        decoder: &Decoder,
        fields: &mut Vec<String>,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Batch> {
        let mut bytes = Vec::with_capacity(n);
        let mut undecodable = Vec::new();
        let rows = match self {
            Input::Files { sorted, position, .. } => {
                // Every field name was seen while reading: decoding a spilled event again
                // adds none, so the batch's field list is final before it fills.
                let mut rows = Rows::new(fields.clone());
                while bytes.len() < n {
                    let Some(item) = sorted.next(fields)? else { break };
                    *position += 1;
                    bytes.push((*position, item.bytes, Some((item.order, item.line))));
                    rows.push(*position, item.event);
                }
                rows
            }
            Input::Stream(replay) => {
                let messages = runtime.block_on(replay.next(n))?;
                let mut rows = Rows::new(Vec::new());
                for message in messages {
                    match decoder.decode(&message.body, &mut rows.batch.fields) {
                        Ok(event) => {
                            rows.push(message.seq, event);
                            bytes.push((message.seq, message.body, None));
                        }
                        Err(reason) => undecodable.push((Failure::new(message.seq, "decode", reason), message.body)),
                    }
                }
                rows
            }
        };
        Ok((rows, bytes, undecodable))
    }
}

/// The dead-letters file, written as failures come (a backfill where every event fails holds
/// none of them in memory). An earlier run's file is replaced (a re-run fails the same events
/// again); none is left when nothing failed.
struct LetterFile {
    path: PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
    /// Failures written.
    count: u64,
}

impl LetterFile {
    fn new(path: PathBuf) -> LetterFile {
        let _ = std::fs::remove_file(&path);
        LetterFile {
            path,
            out: None,
            count: 0,
        }
    }

    fn write(&mut self, failure: &Failure, body: &[u8], origin: Option<Origin<'_>>) -> anyhow::Result<()> {
        let out = match &mut self.out {
            Some(out) => out,
            None => {
                if let Some(parent) = self.path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let file =
                    std::fs::File::create(&self.path).map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))?;
                self.out.insert(std::io::BufWriter::new(file))
            }
        };
        let mut line = serde_json::json!({
            "seq": failure.seq,
            "step": failure.step,
            "reason": failure.reason,
            "late": failure.late,
            "body": String::from_utf8_lossy(body),
        });
        if let Some(origin) = origin {
            line["file"] = origin.file.display().to_string().into();
            line[origin.unit] = origin.number.into();
        }
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        self.count += 1;
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        if let Some(mut out) = self.out {
            out.flush()
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn patterns_match_file_names() {
        assert!(wildcard("*.jsonl", "a.jsonl"));
        assert!(wildcard("day-*.csv", "day-01.csv"));
        assert!(wildcard("a*b*c", "aXXbYYc"));
        assert!(!wildcard("*.jsonl", "a.csv"));
        assert!(!wildcard("a*b*c", "aXXcYYb"));
        assert!(!wildcard("ab*ba", "aba"));
    }
}
