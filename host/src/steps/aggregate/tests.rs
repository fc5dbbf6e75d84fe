//! Golden tests: the `aggregate` step, event by event, against a straightforward
//! implementation that keeps every raw event and recomputes each window from them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::step::{HashFields, StateWrite, TileHome, TileStore};
use super::window::{bucket, Window};
use crate::event::{Event, Value};
use crate::plugin::{NoLookup, PluginEngine, Registry};
use crate::rows::{Failure, Rows};
use crate::steps::{build, BuildContext, Step, StepConfig};

const MIN: i64 = 60_000_000;
const PERIOD: i64 = 10 * MIN;
const LATENESS: i64 = 20 * MIN;

/// A Redis stand-in: hashes of fields, written by [`MemoryStore::apply`].
#[derive(Default)]
struct MemoryStore {
    hashes: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl TileStore for MemoryStore {
    fn load(&self, hashes: &[String]) -> Result<Vec<HashFields>, crate::store::StoreError> {
        let stored = self.hashes.lock().unwrap();
        Ok(hashes
            .iter()
            .map(|h| {
                stored
                    .get(h)
                    .map(|f| f.clone().into_iter().collect())
                    .unwrap_or_default()
            })
            .collect())
    }
}

impl MemoryStore {
    fn apply(&self, writes: &[StateWrite]) {
        let mut stored = self.hashes.lock().unwrap();
        for w in writes {
            let hash = stored.entry(w.hash.clone()).or_default();
            for (f, v) in &w.set {
                hash.insert(f.clone(), v.clone());
            }
            for f in &w.delete {
                hash.remove(f);
            }
        }
    }
}

const STEP: &str = r#"
id = "agg"
kind = "aggregate"
period = "10m"
max_keys = MAX_KEYS
[[aggregations]]
field = "amount"
functions = ["count", "sum", "mean", "variance", "stddev", "min", "max", "first", "last", "p50", "p90"]
windows = ["1h", "24h", "tumbling:1h", "since_start"]
[[aggregations]]
field = "merchant"
functions = ["count", "distinct"]
windows = ["1h", "since_start"]
names = { merchant_count_1h = "tx_count_1h" }
"#;

fn aggregate_step(max_keys: usize, store: Option<Arc<MemoryStore>>) -> Box<dyn Step> {
    let config: StepConfig = toml::from_str(&STEP.replace("MAX_KEYS", &max_keys.to_string())).unwrap();
    let registry = Registry::new(PluginEngine::new(None).unwrap(), 1);
    let context = BuildContext {
        registry: &registry,
        lookup: Arc::new(NoLookup),
        tiles: store.map(|s| TileHome {
            prefix: "t:set:v1".into(),
            store: s,
        }),
        lateness: Some(20 * 60 * 1_000_000),
        metrics: None,
        set: "t@v1".into(),
        shutdown: tokio::sync::watch::channel(false).1,
    };
    build(&config, &context).unwrap()
}

/// One raw event.
#[derive(Clone)]
struct Raw {
    key: String,
    time: i64,
    seq: u64,
    amount: Option<f64>,
    merchant: Option<String>,
}

/// Seeded events: mostly forward in time per key, some quiet for hours, some out of order
/// within the lateness, some beyond it, some exactly on a period edge; nulls in both fields.
fn events(n: u64, keys: u64) -> Vec<Raw> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut clocks = vec![1_764_000_000_000_000i64; keys as usize];
    (1..=n)
        .map(|seq| {
            let r = next();
            let k = (r % keys) as usize;
            let clock = &mut clocks[k];
            let time = match (r >> 8) % 25 {
                0 => {
                    *clock += 5 * 60 * MIN;
                    *clock
                }
                1 => *clock - 7 * MIN,  // late, within the lateness
                2 => *clock - 45 * MIN, // later than the lateness
                3 => {
                    *clock += PERIOD - clock.rem_euclid(PERIOD);
                    *clock
                }
                _ => {
                    *clock += ((r >> 16) % 300) as i64 * 1_000_000;
                    *clock
                }
            };
            Raw {
                key: format!("k{k}"),
                time,
                seq,
                amount: ((r >> 24) % 9 != 0).then(|| ((r >> 32) % 100_000) as f64 / 100.0 - 100.0),
                merchant: ((r >> 40) % 11 != 0).then(|| format!("m{}", (r >> 44) % 40)),
            }
        })
        .collect()
}

fn rows_of(events: &[Raw]) -> Rows {
    let mut rows = Rows::new(vec!["amount".into(), "merchant".into()]);
    for e in events {
        rows.push(
            e.seq,
            Event {
                key: e.key.clone(),
                time: e.time,
                values: vec![
                    e.amount.map_or(Value::Null, Value::Float),
                    e.merchant.clone().map_or(Value::Null, Value::Text),
                ],
            },
        );
    }
    rows
}

/// The straightforward model: accepted raw events per key.
#[derive(Default)]
struct Naive {
    accepted: HashMap<String, Vec<Raw>>,
    watermark: HashMap<String, i64>,
}

impl Naive {
    /// Adds an event; `false` if it is late.
    fn add(&mut self, e: &Raw) -> bool {
        let wm = self.watermark.entry(e.key.clone()).or_insert(i64::MIN);
        if *wm != i64::MIN && e.time < *wm - LATENESS {
            return false;
        }
        *wm = (*wm).max(e.time);
        self.accepted.entry(e.key.clone()).or_default().push(e.clone());
        true
    }

    /// Expected features of key at t, by name.
    fn features(&self, key: &str, t: i64) -> Vec<(String, Option<f64>)> {
        let events = &self.accepted[key];
        let mut out = Vec::new();
        for (wname, window) in [
            ("1h", Window::Sliding { length: 60 * MIN }),
            ("24h", Window::Sliding { length: 1440 * MIN }),
            ("tumbling_1h", Window::Tumbling { length: 60 * MIN }),
            ("since_start", Window::SinceStart),
        ] {
            let (a, b) = window.buckets(t, PERIOD);
            let inside: Vec<&Raw> = events
                .iter()
                .filter(|e| (a..=b).contains(&bucket(e.time, PERIOD)))
                .collect();
            let mut amounts: Vec<(i64, u64, f64)> = inside
                .iter()
                .filter_map(|e| e.amount.map(|v| (e.time, e.seq, v)))
                .collect();
            let n = amounts.len() as f64;
            let sum: f64 = amounts.iter().map(|a| a.2).sum();
            let mean = sum / n;
            let var = amounts.iter().map(|a| (a.2 - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let empty = amounts.is_empty();
            let some = |v: f64| (!empty).then_some(v);
            let first = amounts.iter().min_by_key(|a| (a.0, a.1)).map(|a| a.2);
            let last = amounts.iter().max_by_key(|a| (a.0, a.1)).map(|a| a.2);
            let min = amounts.iter().map(|a| a.2).reduce(f64::min);
            let max = amounts.iter().map(|a| a.2).reduce(f64::max);
            amounts.sort_by(|x, y| x.2.total_cmp(&y.2));
            let quantile = |q: f64| (!empty).then(|| amounts[(q * (n - 1.0)) as usize].2);
            for (f, v) in [
                ("count", Some(n)),
                ("sum", some(sum)),
                ("mean", some(mean)),
                ("variance", (n > 1.0).then_some(var)),
                ("stddev", (n > 1.0).then_some(var.sqrt())),
                ("min", min),
                ("max", max),
                ("first", first),
                ("last", last),
                ("p50", quantile(0.5)),
                ("p90", quantile(0.9)),
            ] {
                out.push((format!("amount_{f}_{wname}"), v));
            }
            if wname == "1h" || wname == "since_start" {
                let merchants: Vec<&String> = inside.iter().filter_map(|e| e.merchant.as_ref()).collect();
                let distinct = merchants.iter().collect::<std::collections::HashSet<_>>().len();
                let count_name = if wname == "1h" {
                    "tx_count_1h".to_string()
                } else {
                    format!("merchant_count_{wname}")
                };
                out.push((count_name, Some(merchants.len() as f64)));
                out.push((format!("merchant_distinct_{wname}"), Some(distinct as f64)));
            }
        }
        out
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Null => None,
        other => panic!("unexpected {other:?}"),
    }
}

fn agrees(name: &str, got: Option<f64>, want: Option<f64>) -> bool {
    match (got, want) {
        (Some(g), Some(w)) if name.contains("_p50_") || name.contains("_p90_") => {
            // DDSketch: 1% relative accuracy.
            (g - w).abs() <= 0.0101 * w.abs() + 1e-9
        }
        (Some(g), Some(w)) => (g - w).abs() <= 1e-9 * g.abs().max(w.abs()).max(1.0),
        (g, w) => g == w,
    }
}

/// Runs events through a step in batches; the store (if any) receives each batch's writes one
/// batch late, as the pipeline's overlapping Redis write does. Returns outputs and failures.
fn run(step: &mut dyn Step, store: Option<&MemoryStore>, events: &[Raw], batch: usize) -> (Rows, Vec<Failure>) {
    let mut out = Rows::new(Vec::new());
    let mut failures = Vec::new();
    let mut pending: Vec<StateWrite> = Vec::new();
    for chunk in events.chunks(batch) {
        let rows = step.apply(rows_of(chunk), &mut failures).unwrap();
        if out.batch.fields.is_empty() {
            out.batch.fields = rows.batch.fields.clone();
        }
        assert_eq!(out.batch.fields, rows.batch.fields);
        out.batch.events.extend(rows.batch.events);
        out.seqs.extend(rows.seqs);
        if let Some(store) = store {
            store.apply(&pending);
        }
        pending.clear();
        step.take_writes(&mut pending);
    }
    if let Some(store) = store {
        store.apply(&pending);
    }
    (out, failures)
}

fn check_against_naive(events: &[Raw], out: &Rows, failures: &[Failure]) {
    let mut naive = Naive::default();
    let by_seq: HashMap<u64, usize> = out.seqs.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let late: Vec<u64> = failures.iter().filter(|f| f.late).map(|f| f.seq).collect();
    assert!(
        failures.iter().all(|f| f.late),
        "{:?}",
        failures.iter().find(|f| !f.late)
    );
    let (mut checked, mut refused) = (0, 0);
    for e in events {
        if !naive.add(e) {
            assert!(late.contains(&e.seq), "event {} is late and must be refused", e.seq);
            assert!(!by_seq.contains_key(&e.seq));
            refused += 1;
            continue;
        }
        let row = &out.batch.events[by_seq[&e.seq]];
        for (name, want) in naive.features(&e.key, e.time) {
            let at = out
                .batch
                .fields
                .iter()
                .position(|f| *f == name)
                .unwrap_or_else(|| panic!("no {name}"));
            let got = number(&row.values[at]);
            assert!(
                agrees(&name, got, want),
                "event {} key {} at {}: {name} = {got:?}, expected {want:?}",
                e.seq,
                e.key,
                e.time
            );
        }
        checked += 1;
    }
    assert_eq!(late.len(), refused);
    assert!(
        refused > 50 && checked > 3000,
        "the data covers late events: {refused} late, {checked} checked"
    );
}

#[test]
fn every_row_carries_what_a_recomputation_from_raw_events_gives() {
    let events = events(4_000, 12);
    let mut step = aggregate_step(100_000, None);
    let (out, failures) = run(step.as_mut(), None, &events, 64);
    check_against_naive(&events, &out, &failures);
}

#[test]
fn evicted_keys_reload_their_tiles_and_give_the_same_rows() {
    let events = events(4_000, 12);
    let store = Arc::new(MemoryStore::default());
    // Two keys in memory for twelve: most events reload their key from the store.
    let mut step = aggregate_step(2, Some(store.clone()));
    let (out, failures) = run(step.as_mut(), Some(&store), &events, 16);
    check_against_naive(&events, &out, &failures);
}

#[test]
fn a_restart_from_the_store_gives_identical_aggregates() {
    let events = events(3_000, 8);
    let mut whole = aggregate_step(100_000, None);
    let (expected, _) = run(whole.as_mut(), None, &events, 50);

    let store = Arc::new(MemoryStore::default());
    let mut before = aggregate_step(100_000, Some(store.clone()));
    let (first, _) = run(before.as_mut(), Some(&store), &events[..1_500], 50);
    drop(before);
    // The restarted step sees the last batch again (redelivered: it was written, not acked).
    let mut after = aggregate_step(100_000, Some(store.clone()));
    let (second, _) = run(after.as_mut(), Some(&store), &events[1_450..], 50);
    let fields = &expected.batch.fields;
    assert_eq!(&first.batch.fields, fields);
    assert_eq!(&second.batch.fields, fields);
    let got: HashMap<u64, &Event> = first
        .seqs
        .iter()
        .zip(&first.batch.events)
        .chain(
            second
                .seqs
                .iter()
                .zip(&second.batch.events)
                .filter(|(s, _)| **s > 1_500),
        )
        .map(|(s, e)| (*s, e))
        .collect();
    assert_eq!(got.len(), expected.len());
    for (seq, event) in expected.seqs.iter().zip(&expected.batch.events) {
        assert_eq!(got[seq].values, event.values, "event {seq}");
    }
}

#[test]
fn tiles_round_trip_through_their_stored_form_and_sketches_still_merge() {
    use super::tile::{Needs, Tile};
    let needs = Needs::ALL;
    let mut tile = Tile::default();
    for i in 0..300 {
        tile.add_value(&Value::Float(i as f64 * 0.37 - 20.0), i, i as u64, needs)
            .unwrap();
    }
    let mut bytes = Vec::new();
    tile.encode(&mut bytes);
    let mut back = Tile::decode(&bytes).unwrap();
    let mut again = Vec::new();
    back.encode(&mut again);
    let first_line = |b: &[u8]| String::from_utf8_lossy(b).lines().next().unwrap().to_string();
    assert_eq!(first_line(&bytes), first_line(&again));
    use super::tile::Function;
    for f in [
        Function::Count,
        Function::Sum,
        Function::Variance,
        Function::Min,
        Function::Last,
        Function::Distinct,
        Function::Quantile(0.5),
        Function::Quantile(0.99),
    ] {
        assert_eq!(back.evaluate(f), tile.evaluate(f), "{f:?}");
    }
    back.merge(&tile);
    let mut fresh = Tile::default();
    fresh.add_value(&Value::Float(1.0), 0, 0, needs).unwrap();
    fresh.merge(&back);
    assert_eq!(fresh.count, 601);
    assert!(Tile::decode(b"1 2 x").unwrap_err().0.contains("not a tile"));
}

#[test]
fn a_value_that_is_not_a_number_fails_only_its_event() {
    let mut step = aggregate_step(10, None);
    let mut rows = rows_of(&events(3, 1));
    rows.batch.events[1].values[0] = Value::Text("12.5".into());
    let mut failures = Vec::new();
    let out = step.apply(rows, &mut failures).unwrap();
    assert_eq!(out.seqs, [1, 3]);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].reason, "field \"amount\": expected a number, got text");
    assert!(!failures[0].late);
}

#[test]
fn a_step_keyed_by_another_field_keeps_its_tiles_in_hashes_of_its_own() {
    let config: StepConfig = toml::from_str(
        r#"
id = "per_merchant"
kind = "aggregate"
key = "merchant"
period = "1h"
aggregations = [{ field = "amount", functions = ["count", "sum"], windows = ["1h"] }]
"#,
    )
    .unwrap();
    let registry = Registry::new(PluginEngine::new(None).unwrap(), 1);
    let store = Arc::new(MemoryStore::default());
    let context = BuildContext {
        registry: &registry,
        lookup: Arc::new(NoLookup),
        tiles: Some(TileHome {
            prefix: "t:set:v1".into(),
            store: store.clone(),
        }),
        lateness: None,
        metrics: None,
        set: "t@v1".into(),
        shutdown: tokio::sync::watch::channel(false).1,
    };
    let mut step = build(&config, &context).unwrap();
    let mut rows = rows_of(&events(6, 3));
    let merchants = ["m1", "m2", "m1", "m1", "m2", "m3"];
    for (event, m) in rows.batch.events.iter_mut().zip(merchants) {
        event.values[0] = Value::Float(10.0);
        event.values[1] = Value::Text(m.into());
        event.time = 1_764_000_000_000_000;
    }
    rows.batch.events[5].values[1] = Value::Null;
    let mut failures = Vec::new();
    let out = step.apply(rows, &mut failures).unwrap();
    assert_eq!(failures.len(), 1, "no key: the event fails");
    assert_eq!(failures[0].reason, "the key field is null");
    let count = out.batch.fields.iter().position(|f| f == "amount_count_1h").unwrap();
    let counts: Vec<&Value> = out.batch.events.iter().map(|e| &e.values[count]).collect();
    let one = Value::Integer(1);
    let (two, three) = (Value::Integer(2), Value::Integer(3));
    assert_eq!(
        counts,
        [&one, &one, &two, &three, &two],
        "per merchant, whatever the entity"
    );
    let mut writes = Vec::new();
    step.take_writes(&mut writes);
    let mut hashes: Vec<&str> = writes.iter().map(|w| w.hash.as_str()).collect();
    hashes.sort();
    assert_eq!(hashes, ["t:set:v1:per_merchant:{m1}", "t:set:v1:per_merchant:{m2}"]);
}
