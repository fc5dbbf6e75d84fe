//! The pipeline benchmark: JetStream → currency plugin (Rust) → filter → map → Redis +
//! stream targets, against a bare `async-nats` consumer draining the same stream; and
//! publish-to-readable-in-Redis freshness at a fixed publish rate.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use futures::StreamExt;
use serde_json::json;
use sluice_tests::live::Live;
use tokio::sync::watch;

const NATS: &str = sluice_tests::live::NATS;
const REDIS: &str = sluice_tests::live::REDIS;

/// Options of `sluice-bench pipeline`.
#[derive(clap::Args)]
pub struct Options {
    /// Events for the throughput run.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Publish rate of the freshness run (events/s).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of the freshness run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Longest wait for a batch to fill, in milliseconds.
    #[arg(long, default_value_t = 1)]
    max_wait_ms: u64,
    /// Without the example's `aggregate` step (and the z-score computed from it).
    #[arg(long)]
    no_aggregate: bool,
    /// With live monitoring (`[feature_set.monitor]`, 1-minute windows, no reference): every
    /// row profiled.
    #[arg(long)]
    monitor: bool,
}

/// A seeded synthetic transaction: skewed users, some nulls, small out-of-order jitter.
pub(crate) fn transaction(i: u64, user: Option<String>) -> Vec<u8> {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
    let u = (h % 10_000) * (h % 10_000) / 10_000;
    let amount = if i % 50 == 7 {
        serde_json::Value::Null
    } else {
        json!(((h % 100_000) as f64) / 100.0 + 0.01)
    };
    let ts = 1_764_000_000_000i64 + i as i64 - ((h % 5) as i64) * 3;
    let currency = ["USD", "EUR", "GBP", "JPY", "CHF"][(h % 5) as usize];
    let country = ["US", "DE", "GB", "JP", "CH"][(h % 5) as usize];
    serde_json::to_vec(&json!({
        "transaction_id": i,
        "user_id": user.unwrap_or_else(|| format!("u{u}")),
        "amount": amount,
        "currency": currency,
        "merchant": format!("m{}", h % 500),
        "country": country,
        "ts": ts,
    }))
    .unwrap()
}

/// This run's names (streams, subjects, key prefix) and its config: the fraud example's, as
/// the tests use it, with the source batch and wait of the options and without Parquet.
pub(crate) fn bench_config(live: &Live, options: &Options) -> PathBuf {
    let (batch, max_wait) = (options.batch as i64, options.max_wait_ms as i64);
    let (no_aggregate, monitor) = (options.no_aggregate, options.monitor);
    live.write_fraud_config(|set| {
        if monitor {
            let table: toml::Table = toml::from_str("window = \"1m\"").unwrap();
            set.insert("monitor".into(), table.into());
        }
        if no_aggregate {
            let steps = set["steps"].as_array_mut().unwrap();
            steps.retain(|s| s["kind"].as_str() != Some("aggregate"));
            for step in steps {
                if let Some(fields) = step.get_mut("fields").and_then(|f| f.as_table_mut()) {
                    fields.remove("amount_zscore_24h");
                }
            }
        }
        let source = set["source"].as_table_mut().unwrap();
        source.insert("batch".into(), batch.into());
        source.insert("max_wait_ms".into(), max_wait.into());
        source.insert("max_ack_pending".into(), 50_000.into());
        set["targets"]
            .as_array_mut()
            .unwrap()
            .retain(|t| t["kind"].as_str() != Some("parquet"));
    })
}

async fn redis_connection() -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(REDIS)?.get_multiplexed_async_connection().await
}

pub(crate) async fn applied(prefix: &str, set: &str) -> u64 {
    let mut r = redis_connection().await.unwrap();
    let v: Option<u64> = redis::cmd("GET")
        .arg(format!("{prefix}:{set}:v1:_applied"))
        .query_async(&mut r)
        .await
        .unwrap();
    v.unwrap_or(0)
}

pub(crate) async fn publish_all(js: &jetstream::Context, names: &Live, n: u64) -> f64 {
    let config = jetstream::stream::Config {
        name: names.stream.clone(),
        subjects: vec![names.subject.clone()],
        ..Default::default()
    };
    js.get_or_create_stream(config).await.unwrap();
    let started = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for i in 0..n {
        acks.push_back(
            js.publish(names.subject.clone(), transaction(i, None).into())
                .await
                .unwrap(),
        );
        if acks.len() >= 1024 {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn bare_drain(js: &jetstream::Context, names: &Live, n: u64, batch: usize) -> f64 {
    let stream = js.get_stream(&names.stream).await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bare".into()),
            ack_policy: AckPolicy::All,
            max_ack_pending: 50_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    let mut seen = 0;
    while seen < n {
        let mut messages = consumer
            .batch()
            .max_messages(batch)
            .expires(Duration::from_millis(100))
            .messages()
            .await
            .unwrap();
        let mut last = None;
        while let Some(m) = messages.next().await {
            let m = m.unwrap();
            std::hint::black_box(&m.payload);
            seen += 1;
            last = Some(m);
        }
        if let Some(m) = last {
            m.ack().await.unwrap();
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    stream.delete_consumer("bare").await.unwrap();
    rate
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the pipeline benchmark and prints a table.
pub fn run(options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let js = jetstream::new(async_nats::connect(NATS).await?);
        println!(
            "machine: {} cores; load average before: {}",
            std::thread::available_parallelism()?.get(),
            load()
        );

        // Throughput: publish, drain bare, then the pipeline over the same stream.
        let names = Live::new("benchtp");
        let published = publish_all(&js, &names, options.events).await;
        let bare = bare_drain(&js, &names, options.events, options.batch).await;
        let config = sluice::config::load(&bench_config(&names, &options))?;
        let set = names.set.clone();
        let (stop, shutdown) = watch::channel(false);
        // Like the bare drain's, the pipeline's timer leaves start-up out: it runs from the
        // first batch committed to Redis to the last, over the events after that first batch;
        // start-up (connecting, compiling plugins, the consumer, the first batch) is its own row.
        let started = Instant::now();
        let services = sluice::runtime::Services::connect(&config).await?;
        let monitors = services.monitors.clone();
        let task = tokio::spawn(sluice::pipeline::run_on(config, services, shutdown, None));
        let (first_at, first) = loop {
            let done = applied(&names.prefix, &set).await;
            if done > 0 {
                break (Instant::now(), done);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let startup = first_at - started;
        while applied(&names.prefix, &set).await < options.events {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let pipeline = (options.events - first) as f64 / first_at.elapsed().as_secs_f64();
        // Rows the monitor profiled and counted late: every applied row should be profiled.
        let monitored = monitors.get(&format!("{set}@v1")).map(|m| {
            let m = m.lock().unwrap_or_else(|e| e.into_inner());
            (m.profiled, m.late)
        });
        stop.send(true)?;
        task.await??;
        names.cleanup().await;

        // Freshness: a fixed publish rate; probes with their own entity, polled in Redis.
        let names = Live::new("benchfr");
        let stream_config = jetstream::stream::Config {
            name: names.stream.clone(),
            subjects: vec![names.subject.clone()],
            ..Default::default()
        };
        js.get_or_create_stream(stream_config).await?;
        let config = sluice::config::load(&bench_config(&names, &options))?;
        let set = names.set.clone();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(sluice::pipeline::run(config, shutdown));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut latencies = measure_freshness(&js, &names, &set, options.rate, options.seconds).await;
        stop.send(true)?;
        task.await??;
        names.cleanup().await;
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3;

        println!("\n| measure | value |\n|---|---|");
        println!("| publish with acks (1024 in flight) | {published:.0} events/s |");
        println!(
            "| bare async-nats consumer drain (batch {}, ack all) | {bare:.0} events/s |",
            options.batch
        );
        let graph = match (options.no_aggregate, options.monitor) {
            (true, false) => "plugin + filter + map",
            (true, true) => "plugin + filter + map, monitored",
            (false, false) => "plugin + filter + aggregate + map",
            (false, true) => "plugin + filter + aggregate + map, monitored",
        };
        println!(
            "| pipeline: {graph} → Redis + stream | {pipeline:.0} events/s ({:.0}% of bare) |",
            pipeline / bare * 100.0
        );
        println!(
            "| pipeline start-up to its first committed batch ({first} events) | {:.0} ms |",
            startup.as_secs_f64() * 1e3
        );
        if let Some((profiled, late)) = monitored {
            println!("| monitoring: rows profiled / counted late | {profiled} / {late} |");
        }
        println!(
            "| freshness at {} events/s, p50 / p99 / max ({} probes) | {:.1} / {:.1} / {:.1} ms |",
            options.rate,
            latencies.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
        println!("\nload average after: {}", load());
        Ok(())
    })
}

/// Publishes at `rate` for `seconds`; every 100th event is a probe whose entity is polled in
/// Redis until readable. Returns publish-to-readable latencies.
async fn measure_freshness(js: &jetstream::Context, names: &Live, set: &str, rate: u64, seconds: u64) -> Vec<Duration> {
    let (probe_tx, mut probe_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let prefix = names.prefix.clone();
    let set = set.to_string();
    let poller = tokio::spawn(async move {
        let mut r = redis_connection().await.unwrap();
        let mut latencies = Vec::new();
        let mut waiting: Vec<(String, Instant)> = Vec::new();
        loop {
            while let Ok(p) = probe_rx.try_recv() {
                waiting.push(p);
            }
            if waiting.is_empty() {
                match probe_rx.recv().await {
                    Some(p) => waiting.push(p),
                    None => break,
                }
            }
            let mut pipe = redis::pipe();
            for (user, _) in &waiting {
                pipe.cmd("EXISTS").arg(format!("{prefix}:{set}:v1:{{{user}}}"));
            }
            let found: Vec<bool> = pipe.query_async(&mut r).await.unwrap();
            let now = Instant::now();
            let mut still = Vec::new();
            for ((user, at), ok) in waiting.drain(..).zip(found) {
                if ok {
                    latencies.push(now - at)
                } else {
                    still.push((user, at))
                }
            }
            waiting = still;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies
    });
    let total = rate * seconds;
    let started = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let probe = (i % 100 == 0).then(|| format!("probe{i}"));
        let body = transaction(i * 5, probe.clone()); // i*5: USD, a non-null amount
        acks.push_back(js.publish(names.subject.clone(), body.into()).await.unwrap());
        if let Some(user) = probe {
            probe_tx.send((user, Instant::now())).unwrap();
        }
        while acks.len() > 1024 {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    drop(probe_tx);
    tokio::time::timeout(Duration::from_secs(30), poller)
        .await
        .expect("probes readable")
        .unwrap()
}
