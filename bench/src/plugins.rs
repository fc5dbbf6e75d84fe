//! The plugin benchmark: the currency transform natively in Rust (the same logic over the
//! host's own batch, producing the same owned output) against the Rust, Python and JavaScript
//! plugins, called through the runtime exactly as a `wasm` step calls them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::event::{Batch, Event, Value};
use sluice::plugin::{Limits, NoLookup, PluginEngine, Registry};

const RATES: &str = r#"{"USD":1.0,"EUR":1.08,"GBP":1.27,"JPY":0.0067,"CHF":1.13}"#;
const CURRENCIES: [&str; 5] = ["USD", "EUR", "GBP", "JPY", "CHF"];

/// Options of `sluice-bench plugins`.
#[derive(clap::Args)]
pub struct Options {
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,1024")]
    batches: Vec<usize>,
    /// Minimum measuring time per cell, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    millis: u64,
    /// Skip the Python and JavaScript plugins.
    #[arg(long)]
    rust_only: bool,
    /// Skip the native baseline (e.g. to profile the plugin path alone).
    #[arg(long)]
    skip_native: bool,
}

/// A seeded batch of transactions: 7 fields, like the fraud example's events.
fn transactions(n: usize, seed: u64) -> Batch {
    let fields = [
        "transaction_id",
        "user_id",
        "amount",
        "currency",
        "merchant",
        "country",
        "ts",
    ];
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let events = (0..n)
        .map(|i| {
            let r = next();
            let ts = 1_764_000_000_000 + i as i64;
            Event {
                key: format!("user-{}", r % 10_000),
                time: ts * 1000,
                values: vec![
                    Value::Integer(i as i64),
                    Value::Text(format!("user-{}", r % 10_000)),
                    Value::Float((r % 100_000) as f64 / 100.0),
                    Value::Text(CURRENCIES[(r % 5) as usize].to_string()),
                    Value::Text(format!("merchant-{}", r % 500)),
                    Value::Text(["US", "DE", "GB", "JP", "CH"][(r % 5) as usize].to_string()),
                    Value::Integer(ts),
                ],
            }
        })
        .collect();
    Batch {
        fields: fields.map(String::from).to_vec(),
        events,
    }
}

/// The currency transform compiled natively: the plugin's logic over the host's batch,
/// producing owned output events as the plugin path does.
fn native_currency(rates: &HashMap<String, f64>, batch: &Batch) -> (Vec<String>, Vec<Result<Vec<Event>, String>>) {
    let amount = batch.fields.iter().position(|f| f == "amount");
    let currency = batch.fields.iter().position(|f| f == "currency");
    let mut fields = batch.fields.clone();
    let out = fields.iter().position(|f| f == "amount_usd").unwrap_or_else(|| {
        fields.push("amount_usd".into());
        fields.len() - 1
    });
    let outcomes = batch
        .events
        .iter()
        .map(|event| {
            let code = match currency.and_then(|i| event.values.get(i)) {
                Some(Value::Text(c)) => c,
                None | Some(Value::Null) => return Err("missing field \"currency\"".to_string()),
                Some(_) => return Err("field \"currency\" must be text".to_string()),
            };
            let rate = *rates
                .get(code.as_str())
                .ok_or_else(|| format!("unknown currency \"{code}\""))?;
            let usd = match amount.and_then(|i| event.values.get(i)) {
                Some(Value::Float(a)) => Value::Float(a * rate),
                Some(Value::Integer(a)) => Value::Float(*a as f64 * rate),
                None | Some(Value::Null) => Value::Null,
                Some(_) => return Err("field \"amount\" must be a number".to_string()),
            };
            let mut values = event.values.clone();
            values.resize(out.max(values.len()), Value::Null);
            if out < values.len() {
                values[out] = usd
            } else {
                values.push(usd)
            }
            Ok(vec![Event {
                key: event.key.clone(),
                time: event.time,
                values,
            }])
        })
        .collect();
    (fields, outcomes)
}

/// Calls `f` on `batch` until `millis` have passed; returns nanoseconds per event.
fn per_event(batch_size: usize, millis: u64, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let budget = Duration::from_millis(millis);
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < budget {
        f();
        calls += 1;
    }
    started.elapsed().as_nanos() as f64 / (calls as f64 * batch_size as f64)
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.0} µs", ns / 1000.0)
    } else if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Runs the plugin benchmark and prints markdown tables.
pub fn run(options: Options) -> anyhow::Result<()> {
    let mut plugins = vec![("Rust plugin", sluice_tests::rust_plugin("currency"))];
    if !options.rust_only {
        plugins.push(("Python plugin", sluice_tests::guest_plugin("currency-py")));
        plugins.push(("JavaScript plugin", sluice_tests::guest_plugin("currency-js")));
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cores} cores; load average before: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );

    // Compile (fresh cache) vs cached load, and instantiation.
    let cache = tempfile::tempdir()?;
    let mut load_rows = Vec::new();
    let registry = Registry::new(PluginEngine::new(Some(cache.path().to_path_buf()))?, 4);
    for (label, path) in &plugins {
        let bytes =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e} (build the plugins first)", path.display()))?;
        let compiled = PluginEngine::new(Some(cache.path().to_path_buf()))?.compile(&bytes)?;
        let cached = PluginEngine::new(Some(cache.path().to_path_buf()))?.compile(&bytes)?;
        assert!(!compiled.cached && cached.cached);
        let name = label.split(' ').next().unwrap_or("p").to_lowercase();
        let version = registry.deploy(&name, &bytes, None)?.version;
        let mut times: Vec<Duration> = (0..50)
            .map(|_| version.time_instantiation(registry.engine()))
            .collect::<Result<_, _>>()?;
        times.sort();
        load_rows.push(format!(
            "| {label} | {:.0} KB | {:.2} s | {:.2} ms | {:.0} µs |",
            bytes.len() as f64 / 1024.0,
            compiled.load_time.as_secs_f64(),
            cached.load_time.as_secs_f64() * 1e3,
            times[times.len() / 2].as_secs_f64() * 1e6
        ));
    }
    println!("\n| plugin | size | compile | load cached | instantiate (median of 50) |\n|---|---|---|---|---|");
    for row in &load_rows {
        println!("{row}");
    }

    // Per-event cost.
    let rates: HashMap<String, f64> = serde_json::from_str(RATES)?;
    let config = vec![("rates".to_string(), RATES.to_string())];
    let handles: Vec<_> = plugins
        .iter()
        .map(|(label, _)| {
            let name = label.split(' ').next().unwrap_or("p").to_lowercase();
            registry
                .handle(&name, config.clone(), Limits::default(), Arc::new(NoLookup))
                .map(|h| (*label, h))
        })
        .collect::<Result<_, _>>()?;
    let header: String = options.batches.iter().map(|b| format!(" batch {b} |")).collect();
    println!("\nper event (currency transform, 7-field events):\n\n| implementation |{header} vs native at 256 |");
    println!("|---|{}---|", "---|".repeat(options.batches.len()));
    let mut native_256 = None;
    let mut row = String::from("| native Rust |");
    for &b in options.batches.iter().filter(|_| !options.skip_native) {
        let batch = transactions(b, 42);
        let ns = per_event(b, options.millis, || {
            std::hint::black_box(native_currency(&rates, &batch));
        });
        if b == 256 {
            native_256 = Some(ns);
        }
        row.push_str(&format!(" {} |", fmt_ns(ns)));
    }
    println!("{row} 1× |");
    for (label, handle) in &handles {
        let mut row = format!("| {label} |");
        let mut at_256 = None;
        for &b in &options.batches {
            let batch = transactions(b, 42);
            let check = handle.process(&batch);
            let (_, expected) = native_currency(&rates, &batch);
            assert_eq!(check.outcomes.len(), expected.len());
            for (got, want) in check.outcomes.iter().zip(&expected) {
                let want = want.as_ref().unwrap();
                assert_eq!(
                    got.as_ref().unwrap()[0].values,
                    want[0].values,
                    "{label} disagrees with native"
                );
            }
            let ns = per_event(b, options.millis, || {
                std::hint::black_box(handle.process(&batch));
            });
            if b == 256 {
                at_256 = Some(ns);
            }
            row.push_str(&format!(" {} |", fmt_ns(ns)));
        }
        let ratio = match (at_256, native_256) {
            (Some(p), Some(n)) => format!("{:.1}×", p / n),
            _ => "–".into(),
        };
        println!("{row} {ratio} |");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nload average after: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}
