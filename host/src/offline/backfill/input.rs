//! A backfill's input: the files named by `--input` (sorted by event time in bounded memory,
//! numbered by position) or the set's input stream replayed from its start, read a batch at
//! a time; and where a failed file event came from.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::letters::LetterFile;
use crate::bus::Replay;
use crate::config::{FeatureSetConfig, SourceConfig};
use crate::offline::sort::{Historical, Sorted, Sorter};
use crate::rows::{Failure, Rows, Tally};
use crate::runtime::Services;
use crate::sources::file::{format_of, FileSource};
use crate::sources::Decoder;

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

/// The input files of a backfill, by the read order of their first event: a file event's
/// dead letter names its file and line (or row).
#[derive(Default)]
pub(super) struct Files {
    /// (order of the file's first event, the file, what its numbers count).
    starts: Vec<(u64, PathBuf, &'static str)>,
}

/// Where a failed file event came from.
pub(super) struct Origin<'a> {
    pub(super) file: &'a Path,
    pub(super) unit: &'static str,
    pub(super) number: u64,
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
pub(super) fn read_files(
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
pub(super) async fn replay(set: &FeatureSetConfig, services: &Services) -> anyhow::Result<Replay> {
    let SourceConfig::Jetstream { stream, subject, .. } = &set.source else {
        anyhow::bail!(
            "--from-stream: feature set {} does not read a stream subject (a file or another set's rows); use --input",
            set.name
        );
    };
    Ok(services.bus.replay(stream, subject, 0).await?)
}

/// A backfill's events, in the order they run.
pub(super) enum Input {
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

/// A batch of a backfill's input.
pub(super) enum Batch {
    /// File events, decoded while they were sorted, with their original bytes, read order
    /// and line by sequence.
    Decoded {
        rows: Rows,
        bytes: Vec<(u64, Bytes, (u64, u64))>,
    },
    /// Stream messages (sequence, bytes), decoded by the runner.
    Messages(Vec<(u64, Bytes)>),
}

impl Batch {
    /// Whether the input has ended.
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Batch::Decoded { bytes, .. } => bytes.is_empty(),
            Batch::Messages(messages) => messages.is_empty(),
        }
    }
}

impl Input {
    /// Where a file event came from, by its read order and line.
    pub(super) fn origin(&self, (order, line): (u64, u64)) -> Option<Origin<'_>> {
        match self {
            Input::Files { files, .. } => files.origin(order, line),
            Input::Stream(_) => None,
        }
    }

    pub(super) fn total(&self) -> u64 {
        match self {
            Input::Files { total, .. } => *total,
            Input::Stream(replay) => replay.total(),
        }
    }

    /// Up to `n` events; an empty batch at the end.
    pub(super) fn next_batch(
        &mut self,
        n: usize,
        fields: &mut Vec<String>,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Batch> {
        match self {
            Input::Files { sorted, position, .. } => {
                // Every field name was seen while reading: decoding a spilled event again
                // adds none, so the batch's field list is final before it fills.
                let mut rows = Rows::new(fields.clone());
                let mut bytes = Vec::with_capacity(n);
                while bytes.len() < n {
                    let Some(item) = sorted.next(fields)? else { break };
                    *position += 1;
                    bytes.push((*position, item.bytes, (item.order, item.line)));
                    rows.push(*position, item.event);
                }
                Ok(Batch::Decoded { rows, bytes })
            }
            Input::Stream(replay) => {
                let messages = runtime.block_on(replay.next(n))?;
                Ok(Batch::Messages(messages.into_iter().map(|m| (m.seq, m.body)).collect()))
            }
        }
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
