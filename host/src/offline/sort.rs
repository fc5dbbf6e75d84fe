//! Event-time order for a backfill's file inputs, in bounded memory: an external merge sort.
//!
//! Events are kept decoded while they fit in the memory budget; a backfill that fits sorts
//! in memory and decodes each event once. Past the budget, the events held are sorted by
//! (event time, input order) and spilled to a run file as their original bytes (a 28-byte
//! header each), and the runs are merged at the end, decoding each event a second time as it
//! leaves the merge. Memory is then the budget while reading, and one read buffer per run
//! while merging.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::event::{Event, Value};
use crate::sources::Decoder;

/// One historical event: its sort key, its line (or row) in its file, its decoded form, its
/// original bytes.
pub(crate) struct Historical {
    pub(crate) time: i64,
    pub(crate) order: u64,
    pub(crate) line: u64,
    pub(crate) event: Event,
    pub(crate) bytes: Bytes,
}

/// What an event held in memory costs, roughly: its bytes, its decoded values and their text.
fn footprint(item: &Historical) -> usize {
    let values: usize = item
        .event
        .values
        .iter()
        .map(|v| match v {
            Value::Text(s) | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Floats(f) => f.len() * 8,
            _ => 0,
        })
        .sum();
    std::mem::size_of::<Historical>()
        + item.bytes.len()
        + item.event.key.len()
        + item.event.values.capacity() * std::mem::size_of::<Value>()
        + values
}

const READ_BUFFER: usize = 256 * 1024;

/// Collects events, then gives them back in (time, order) order.
pub(crate) struct Sorter {
    budget: usize,
    used: usize,
    held: Vec<Historical>,
    /// Where runs are spilled (created on the first spill, removed when the sorter is dropped).
    dir: PathBuf,
    runs: Vec<PathBuf>,
    spilled: u64,
}

impl Sorter {
    /// A sorter holding up to `budget` bytes of events, spilling into `dir` beyond that.
    pub(crate) fn new(budget: usize, dir: PathBuf) -> Sorter {
        Sorter {
            budget: budget.max(1),
            used: 0,
            held: Vec::new(),
            dir,
            runs: Vec::new(),
            spilled: 0,
        }
    }

    /// Adds an event.
    pub(crate) fn push(&mut self, item: Historical) -> anyhow::Result<()> {
        self.used += footprint(&item);
        self.held.push(item);
        if self.used >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Events added so far.
    pub(crate) fn len(&self) -> u64 {
        self.spilled + self.held.len() as u64
    }

    /// Run files written so far.
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    fn spill(&mut self) -> anyhow::Result<()> {
        if self.runs.is_empty() {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| anyhow::anyhow!("sort spill folder {}: {e}", self.dir.display()))?;
        }
        self.held.sort_unstable_by_key(|e| (e.time, e.order));
        let path = self.dir.join(format!("run-{:05}", self.runs.len()));
        let mut out = BufWriter::with_capacity(
            READ_BUFFER,
            File::create(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        );
        for item in self.held.drain(..) {
            out.write_all(&item.time.to_le_bytes())?;
            out.write_all(&item.order.to_le_bytes())?;
            out.write_all(&item.line.to_le_bytes())?;
            out.write_all(&(item.bytes.len() as u32).to_le_bytes())?;
            out.write_all(&item.bytes)?;
            self.spilled += 1;
        }
        out.flush().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        self.runs.push(path);
        self.used = 0;
        Ok(())
    }

    /// The events in (time, order) order. Spilled events are decoded again, with `decoder`,
    /// as they leave the merge.
    pub(crate) fn finish(mut self, decoder: &Decoder) -> anyhow::Result<Sorted> {
        if self.runs.is_empty() {
            let mut held = std::mem::take(&mut self.held);
            held.sort_unstable_by_key(|e| (e.time, e.order));
            return Ok(Sorted::Memory(held.into_iter()));
        }
        if !self.held.is_empty() {
            self.spill()?;
        }
        let mut readers = Vec::with_capacity(self.runs.len());
        let mut heap = BinaryHeap::with_capacity(self.runs.len());
        for (i, path) in self.runs.iter().enumerate() {
            let mut reader = BufReader::with_capacity(
                READ_BUFFER,
                File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            );
            if let Some(head) = read_record(&mut reader, path)? {
                heap.push(Reverse(Head(head.0, head.1, i, head.2, head.3)));
            }
            readers.push(reader);
        }
        Ok(Sorted::Merge(Merge {
            readers,
            heap,
            decoder: decoder.clone(),
            sorter: self,
        }))
    }
}

impl Drop for Sorter {
    fn drop(&mut self) {
        if !self.runs.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A run's next record: time, order, run index, line, bytes (compared by time, then order).
struct Head(i64, u64, usize, u64, Bytes);

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

fn read_record(reader: &mut BufReader<File>, path: &Path) -> anyhow::Result<Option<(i64, u64, u64, Bytes)>> {
    let mut header = [0u8; 28];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    }
    let time = i64::from_le_bytes(header[0..8].try_into().unwrap());
    let order = u64::from_le_bytes(header[8..16].try_into().unwrap());
    let line = u64::from_le_bytes(header[16..24].try_into().unwrap());
    let len = u32::from_le_bytes(header[24..28].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    reader
        .read_exact(&mut body)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some((time, order, line, Bytes::from(body))))
}

/// Sorted events: from memory, or merged from spilled runs.
pub(crate) enum Sorted {
    Memory(std::vec::IntoIter<Historical>),
    Merge(Merge),
}

/// The k-way merge of the spilled runs.
pub(crate) struct Merge {
    readers: Vec<BufReader<File>>,
    heap: BinaryHeap<Reverse<Head>>,
    decoder: Decoder,
    /// Owns the run files (removed when the merge is dropped).
    sorter: Sorter,
}

impl Sorted {
    /// The next event, decoding spilled ones into `fields`.
    pub(crate) fn next(&mut self, fields: &mut Vec<String>) -> anyhow::Result<Option<Historical>> {
        match self {
            Sorted::Memory(items) => Ok(items.next()),
            Sorted::Merge(merge) => {
                let Some(Reverse(Head(time, order, run, line, bytes))) = merge.heap.pop() else {
                    return Ok(None);
                };
                let path = &merge.sorter.runs[run];
                if let Some(next) = read_record(&mut merge.readers[run], path)? {
                    merge.heap.push(Reverse(Head(next.0, next.1, run, next.2, next.3)));
                }
                let event = merge
                    .decoder
                    .decode(&bytes, fields)
                    .map_err(|e| anyhow::anyhow!("an event spilled while sorting no longer decodes: {e}"))?;
                Ok(Some(Historical {
                    time,
                    order,
                    line,
                    event,
                    bytes,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        let toml = r#"
            name = "s"
            version = 1
            entity = "k"
            timestamp = { field = "t", format = "epoch_us" }
            [source]
            kind = "jetstream"
            stream = "S"
            subject = "s"
        "#;
        Decoder::new(&toml::from_str(toml).unwrap()).unwrap()
    }

    fn collect(sorted: &mut Sorted, fields: &mut Vec<String>) -> Vec<(i64, u64, String)> {
        let mut out = Vec::new();
        while let Some(item) = sorted.next(fields).unwrap() {
            out.push((item.time, item.order, item.event.key.clone()));
        }
        out
    }

    /// The same order (time, then input order) from memory and from many spilled runs, and
    /// the run files are gone afterwards.
    #[test]
    fn spilled_runs_merge_into_the_in_memory_order() {
        let decoder = decoder();
        let events: Vec<Bytes> = (0..5000u64)
            .map(|i| {
                // Times repeat (ties resolve by input order) and arrive out of order.
                let t = ((i * 7919) % 1000) as i64 * 1_000_000;
                Bytes::from(format!(r#"{{"k":"u{i}","t":{t},"v":{i}}}"#))
            })
            .collect();
        let sort = |budget: usize, dir: PathBuf| {
            let mut fields = Vec::new();
            let mut sorter = Sorter::new(budget, dir);
            for (i, bytes) in events.iter().enumerate() {
                let event = decoder.decode(bytes, &mut fields).unwrap();
                sorter
                    .push(Historical {
                        time: event.time,
                        order: i as u64 + 1,
                        line: i as u64 + 1,
                        event,
                        bytes: bytes.clone(),
                    })
                    .unwrap();
            }
            let runs = sorter.runs();
            let mut sorted = sorter.finish(&decoder).unwrap();
            (runs, collect(&mut sorted, &mut fields))
        };
        let tmp = tempfile::tempdir().unwrap();
        let (runs, in_memory) = sort(usize::MAX, tmp.path().join("a"));
        assert_eq!(runs, 0);
        let (runs, merged) = sort(16 * 1024, tmp.path().join("b"));
        assert!(runs > 10, "{runs} runs");
        assert_eq!(in_memory.len(), 5000);
        assert_eq!(merged, in_memory);
        assert!(in_memory.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        assert!(!tmp.path().join("b").exists(), "run files removed");
    }
}
