//! The aggregation step alone: events/s on one core and memory per key, for 10k and 1M keys,
//! 6 functions × 2 windows (count, sum, mean, stddev, min, max over 1h and 24h, 10-minute
//! period); and with memory bounded below the key count (least recently used keys evicted and
//! reloaded from a store, here in process, so the number is the step's own CPU cost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sluice::config::StepConfig;
use sluice::event::{Event, Value};
use sluice::plugin::{NoLookup, PluginEngine, Registry};
use sluice::rows::Rows;
use sluice::steps::aggregate::{HashFields, StateWrite, TileHome, TileStore};
use sluice::steps::{build, BuildContext, Step};

/// Options of `sluice-bench aggregate`.
#[derive(clap::Args)]
pub struct Options {
    /// Events per run.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Only the runs with this many keys.
    #[arg(long)]
    keys: Option<u64>,
}

#[derive(Default)]
struct MemoryStore {
    hashes: Mutex<HashMap<String, HashFields>>,
}

impl TileStore for MemoryStore {
    fn load(&self, hashes: &[String]) -> Result<Vec<HashFields>, sluice::store::StoreError> {
        let stored = self.hashes.lock().unwrap();
        Ok(hashes
            .iter()
            .map(|h| stored.get(h).cloned().unwrap_or_default())
            .collect())
    }
}

impl MemoryStore {
    fn apply(&self, writes: Vec<StateWrite>) {
        let mut stored = self.hashes.lock().unwrap();
        for w in writes {
            let hash = stored.entry(w.hash).or_default();
            hash.retain(|(f, _)| !w.delete.contains(f) && !w.set.iter().any(|(s, _)| s == f));
            hash.extend(w.set);
        }
    }
}

fn step(max_keys: usize, store: Option<Arc<MemoryStore>>, sketches: bool) -> Box<dyn Step> {
    let mut toml = format!(
        r#"
id = "agg"
kind = "aggregate"
period = "10m"
max_keys = {max_keys}
[[aggregations]]
field = "amount"
functions = ["count", "sum", "mean", "stddev", "min", "max"]
windows = ["1h", "24h"]
"#
    );
    if sketches {
        toml = toml.replace(r#""max"]"#, r#""max", "distinct", "p95"]"#);
    }
    let config: StepConfig = toml::from_str(&toml).unwrap();
    let registry = Registry::new(PluginEngine::new(None).unwrap(), 1);
    let context = BuildContext {
        registry: &registry,
        lookup: Arc::new(NoLookup),
        tiles: store.map(|s| TileHome {
            prefix: "bench:agg:v1".into(),
            store: s as Arc<dyn TileStore>,
        }),
        lateness: Some(5 * 60 * 1_000_000),
        metrics: None,
        set: "bench@v1".into(),
        shutdown: tokio::sync::watch::channel(false).1,
    };
    build(&config, &context).unwrap()
}

/// Batch `b` of seeded events over `keys` keys, spread over two days of event time so tiles
/// roll out of the 1h and 24h windows.
fn batch_at(b: usize, options: &Options, keys: u64) -> Rows {
    let span_us = 48 * 3_600_000_000i64;
    let step_us = span_us / options.events as i64;
    let first = (b * options.batch) as u64;
    let last = (first + options.batch as u64).min(options.events);
    let mut rows = Rows::new(vec!["amount".into()]);
    for i in first..last {
        let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let key = (h >> 20) % keys;
        let amount = if i % 50 == 7 {
            Value::Null
        } else {
            Value::Float(((h >> 8) % 100_000) as f64 / 100.0)
        };
        rows.push(
            i + 1,
            Event {
                key: format!("u{key}"),
                time: 1_764_000_000_000_000 + i as i64 * step_us,
                values: vec![amount],
            },
        );
    }
    rows
}

fn batch_count(options: &Options) -> usize {
    (options.events as usize).div_ceil(options.batch)
}

struct Outcome {
    events_per_s: f64,
    ns_per_event: f64,
    bytes_per_key: Option<f64>,
    keys_in_memory: usize,
}

fn measure(options: &Options, keys: u64, max_keys: usize, store: Option<Arc<MemoryStore>>, sketches: bool) -> Outcome {
    // Time: the input is built first, so only the step is timed.
    let input: Vec<Rows> = (0..batch_count(options)).map(|b| batch_at(b, options, keys)).collect();
    let mut step = step(max_keys, store.clone(), sketches);
    let mut failures = Vec::new();
    let mut pending = Vec::new();
    let mut out_events = 0usize;
    let started = Instant::now();
    for rows in input {
        let out = step.apply(rows, &mut failures).expect("no store to halt on");
        out_events += out.len();
        if let Some(store) = &store {
            // Written one batch late, as the pipeline's overlapping Redis write does.
            store.apply(std::mem::take(&mut pending));
            step.take_writes(&mut pending);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(failures.is_empty(), "no event fails: {:?}", failures.first());
    drop(step);
    // Memory: a second run, counting heap bytes; the input is made batch by batch and freed,
    // so what stays counted is the step's state (keys, tiles, running values, the key map).
    let bytes_per_key = store.is_none().then(|| {
        let before = crate::counted_bytes(true);
        let mut step = self::step(max_keys, None, sketches);
        for b in 0..batch_count(options) {
            step.apply(batch_at(b, options, keys), &mut failures)
                .expect("no store to halt on");
        }
        let grown = crate::counted_bytes(false).saturating_sub(before);
        drop(step);
        grown as f64 / keys as f64
    });
    Outcome {
        events_per_s: out_events as f64 / elapsed,
        ns_per_event: elapsed * 1e9 / options.events as f64,
        bytes_per_key,
        keys_in_memory: (keys as usize).min(max_keys),
    }
}

/// Runs the benchmark and prints a table.
pub fn run(options: Options) -> anyhow::Result<()> {
    println!(
        "aggregate step, {} events, batch {}, 6 functions x 2 windows (1h, 24h; 10m period), one thread",
        options.events, options.batch
    );
    println!(
        "{:<34} {:>12} {:>10} {:>14} {:>10}",
        "keys", "events/s", "ns/event", "bytes/key", "in memory"
    );
    let runs: [(&str, u64, usize, bool, bool); 4] = [
        ("10k keys", 10_000, 10_000_000, false, false),
        ("1M keys", 1_000_000, 10_000_000, false, false),
        ("1M keys, max_keys 100k (evicting)", 1_000_000, 100_000, true, false),
        ("10k keys, + distinct and p95 x 2", 10_000, 10_000_000, false, true),
    ];
    for (label, keys, max_keys, bounded, sketches) in runs {
        if options.keys.is_some_and(|k| k != keys) {
            continue;
        }
        let store = bounded.then(|| Arc::new(MemoryStore::default()));
        let o = measure(&options, keys, max_keys, store, sketches);
        println!(
            "{:<34} {:>12.0} {:>10.0} {:>14} {:>10}",
            label,
            o.events_per_s,
            o.ns_per_event,
            o.bytes_per_key.map_or("-".to_string(), |b| format!("{b:.0}")),
            o.keys_in_memory
        );
    }
    Ok(())
}
