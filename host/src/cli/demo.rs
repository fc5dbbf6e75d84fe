//! `sluice demo`: the fraud example end to end, in the embedded single-process mode (no NATS,
//! no Redis: the online store and event logs in one file of a temporary folder), or with
//! `--nats` and `--redis` on the real services. Generates transactions of the last hours,
//! streams them through the example's graph (currency plugin, filter, per-user windows,
//! z-score) with a progress bar, serves the HTTP API with a fresh admin token, prints a few
//! users' features and the `curl` lines to try more, then serves until Ctrl-C and removes
//! what it created.
//!
//! The demo monitors itself: its first hour of transactions runs through the same graph
//! offline (a backfill into version 2 of its own folder) and becomes the reference
//! `first-hour` of five features; the live set profiles 10-minute windows against it. In
//! the last hour the demo changes its traffic on purpose (amounts ×1.8, no more US
//! transactions, French ones instead), so `amount_usd`, `country` and `is_foreign` drift while
//! `currency` and `merchant` stay `ok`: the drift table it prints and the `drift` route say so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bus::{Bus, Publish};
use crate::config::Config;
use crate::event::Value;
use crate::pipeline::Services;

/// Options of `sluice demo`.
#[derive(Debug, clap::Args)]
pub struct DemoOptions {
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// NATS URL (with --redis: run on the real services instead of the embedded mode).
    #[arg(long, requires = "redis")]
    pub nats: Option<String>,
    /// Redis URL (with --nats).
    #[arg(long, requires = "nats")]
    pub redis: Option<String>,
    /// Transactions to generate (over the last three hours).
    #[arg(long, default_value_t = 20000)]
    pub events: u64,
    /// The currency plugin (default: plugins/target/wasm32-wasip2/release/currency.wasm).
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    /// Exit once the lookups are printed instead of serving until Ctrl-C.
    #[arg(long)]
    pub no_serve: bool,
}

const EXAMPLE: &str = include_str!("../../../examples/fraud/sluice.toml");

/// The reference the demo builds from its first hour, and the features it holds.
const REFERENCE: &str = "first-hour";
const MONITORED: [&str; 5] = ["amount_usd", "country", "is_foreign", "currency", "merchant"];

/// A seeded transaction at time `ts` (ms): 200 users, a few of them busy, amounts skewed,
/// now and then a spike (what the z-score is for). `drifted`: the last hour's traffic, with
/// larger amounts and French transactions where there were American ones.
fn transaction(i: u64, ts: i64, drifted: bool) -> serde_json::Value {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29;
    let user = (h % 200) * (h % 200) / 200;
    let currency = ["USD", "EUR", "GBP", "CHF"][(h % 4) as usize];
    let base = 20.0 + (h % 80) as f64;
    let amount = if i.is_multiple_of(97) { base * 25.0 } else { base };
    let amount = if drifted { amount * 1.8 } else { amount };
    let first = if drifted { "FR" } else { "US" };
    let country = [first, "DE", "GB", "CH"][(h % 4) as usize];
    serde_json::json!({
        "transaction_id": i, "user_id": format!("u{user}"), "amount": amount, "currency": currency,
        "merchant": format!("m{}", h % 30), "country": country, "ts": ts,
    })
}

/// The currency plugin: given, or found built, or built now from `plugins/` (a fresh clone
/// needs only the `wasm32-wasip2` target).
fn find_plugin(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(path.exists(), "--plugin {}: no such file", path.display());
        return Ok(path);
    }
    let roots = [
        PathBuf::from("plugins"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins"),
    ];
    let built = |root: &Path| root.join("target/wasm32-wasip2/release/currency.wasm");
    if let Some(path) = roots.iter().map(|r| built(r)).find(|p| p.exists()) {
        return Ok(path);
    }
    let hint = "build it with `rustup target add wasm32-wasip2 && cd plugins && cargo build --release --target \
                wasm32-wasip2 -p currency` (or pass --plugin <currency.wasm>)";
    let Some(root) = roots.iter().find(|r| r.join("Cargo.toml").exists()) else {
        anyhow::bail!("the demo needs the currency plugin: {hint}");
    };
    eprintln!("Building the currency plugin (once): cargo build --release --target wasm32-wasip2 -p currency");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2", "-p", "currency"])
        .current_dir(root)
        .env_remove("CARGO_TARGET_DIR")
        .status();
    match status {
        Ok(status) if status.success() && built(root).exists() => Ok(built(root)),
        Ok(_) | Err(_) => anyhow::bail!("the currency plugin did not build: {hint}"),
    }
}

/// The names a demo run gives what it creates on the services (removed at its end).
struct Names {
    id: u32,
    stream: String,
    subject: String,
    features_stream: String,
    /// The demo's model: `fraud`, or on NATS a name of this run's (its capture records are
    /// removed at the end).
    model: String,
}

/// The example's config for this run: its own stream, subject, key prefix and folders, the
/// plugin found, the API on `--bind` with an admin token.
fn demo_config(
    options: &DemoOptions,
    plugin: &Path,
    dir: &Path,
    names: &Names,
    token: &str,
) -> anyhow::Result<toml::Table> {
    let id = names.id;
    let mut config: toml::Table = EXAMPLE.parse()?;
    let host = config["host"].as_table_mut().expect("the example has [host]");
    host.insert("nats".into(), options.nats.clone().unwrap_or_default().into());
    host.insert("redis".into(), options.redis.clone().unwrap_or_default().into());
    host.insert("redis_prefix".into(), format!("demo{id}").into());
    host.insert("data_dir".into(), dir.join("data").display().to_string().into());
    config["plugins"]
        .as_table_mut()
        .expect("the example has [plugins]")
        .insert(
            "currency".into(),
            std::fs::canonicalize(plugin)?.display().to_string().into(),
        );
    let set = config["feature_set"].as_array_mut().expect("one feature set")[0]
        .as_table_mut()
        .expect("a table");
    let source = set["source"].as_table_mut().expect("a source");
    source.insert("stream".into(), names.stream.clone().into());
    source.insert("subject".into(), names.subject.clone().into());
    source.insert("max_wait_ms".into(), 5.into());
    for target in set["targets"].as_array_mut().expect("targets") {
        let target = target.as_table_mut().expect("a table");
        match target["kind"].as_str() {
            Some("stream") => {
                target.insert("stream".into(), names.features_stream.clone().into());
                target.insert("subject".into(), format!("demo.{id}.features").into());
            }
            Some("parquet") => {
                target.insert("root".into(), dir.join("offline").display().to_string().into());
            }
            _ => {}
        }
    }
    // Monitoring: 10-minute windows against the first hour (built before the set starts).
    let per_window = options.events / 18;
    let monitor: toml::Table = toml::from_str(&format!(
        "reference = \"{REFERENCE}\"\nwindow = \"10m\"\npolicy = {{ min_count = {} }}\n",
        (per_window / 2).clamp(50, 500)
    ))?;
    set.insert("monitor".into(), monitor.into());
    let extra: toml::Table = toml::from_str(&format!(
        "[http]\nbind = {:?}\n[[token]]\nname = \"demo\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n",
        options.bind,
        crate::http::auth::hash_token(token)
    ))?;
    config.extend(extra);
    // The model the demo plays: served four features, scored, labelled later.
    let model: toml::Table = toml::from_str(&format!(
        "[[model]]\nname = \"{}\"\nfeatures = [{}]\npredictions = {{ score = \"float\", decision = \"string\" }}\nlabels = {{ is_fraud = \"bool\" }}\n",
        names.model,
        MODEL_FEATURES.iter().map(|f| format!("\"transactions:{f}\"")).collect::<Vec<_>>().join(", ")
    ))?;
    config.extend(model);
    Ok(config)
}

/// Removes what the demo created on NATS and Redis, whatever happened.
async fn clean_up(services: &Services, config: &Config, names: &Names) -> anyhow::Result<()> {
    let Bus::Nats(js) = &services.bus else {
        return Ok(());
    };
    let _ = js.delete_stream(&names.stream).await;
    let _ = js.delete_stream(&names.features_stream).await;
    if let Ok(capture) = js.get_stream(crate::capture::CAPTURE_STREAM).await {
        let _ = capture.purge().filter(crate::capture::subject(&names.model)).await;
        let _ = capture
            .delete_consumer(&format!("sluice-production-{}", names.model))
            .await;
    }
    if let Ok(mut redis) = redis::Client::open(config.host.redis.as_str())?
        .get_multiplexed_async_connection()
        .await
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("demo{}:*", names.id))
            .query_async(&mut redis)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut redis).await;
        }
    }
    Ok(())
}

/// Runs the demo; returns the exit code.
pub fn run(options: DemoOptions) -> anyhow::Result<i32> {
    Ok(run_and_report(options)?.0)
}

/// The demo's span of event time: the last three hours (ms).
const SPAN: i64 = 3 * 3_600_000;
const HOUR_MS: i64 = 3_600_000;

/// Transaction `i` of `events` spread over the three hours before `now` (ms): its time, and
/// whether it is in the last hour (the drifted traffic).
fn at(i: u64, events: u64, now: i64) -> (i64, bool) {
    let ts = now - SPAN + (i as i64 * SPAN) / events as i64;
    (ts, ts >= now - HOUR_MS)
}

/// The reference `first-hour`: the first hour's transactions through the set's graph offline
/// (a backfill into version 2, under the demo's folder), profiled for the monitored features.
fn build_reference(config_path: &Path, dir: &Path, events: u64, now: i64) -> anyhow::Result<u64> {
    use std::io::Write;
    let input = dir.join("first-hour.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input)?);
    let mut written = 0;
    for i in 0..events {
        let (ts, drifted) = at(i, events, now);
        if ts >= now - SPAN + HOUR_MS {
            break;
        }
        serde_json::to_writer(&mut file, &transaction(i, ts, drifted))?;
        file.write_all(b"\n")?;
        written += 1;
    }
    file.flush()?;
    drop(file);
    crate::offline::backfill::run(&crate::offline::backfill::BackfillOptions {
        config: config_path.to_path_buf(),
        set: "transactions".into(),
        version: 2,
        input: vec![input.display().to_string()],
        from_stream: false,
        online: false,
        batch: 1000,
        max_failed: Default::default(),
        sort_memory_mb: 64,
        quiet: true,
    })?;
    crate::offline::reference::build(&crate::offline::reference::ProfileOptions {
        config: config_path.to_path_buf(),
        set: "transactions".into(),
        training_set: None,
        time_field: "t".into(),
        version: Some(2),
        from: None,
        to: None,
        name: REFERENCE.into(),
        features: MONITORED.iter().map(|f| f.to_string()).collect(),
    })?;
    Ok(written)
}

/// Runs the demo; returns the exit code and the monitored features' drift statuses at its end.
pub fn run_and_report(
    options: DemoOptions,
) -> anyhow::Result<(i32, std::collections::BTreeMap<String, crate::monitor::drift::Status>)> {
    let plugin = find_plugin(options.plugin.clone())?;
    let id = std::process::id();
    let names = Names {
        id,
        stream: format!("DEMO_EVENTS_{id}"),
        subject: format!("demo.{id}.transactions"),
        features_stream: format!("DEMO_FEATURES_{id}"),
        model: if options.nats.is_some() {
            format!("fraud-demo{id}")
        } else {
            "fraud".into()
        },
    };
    let dir = std::env::temp_dir().join(format!("sluice-demo-{id}"));
    std::fs::create_dir_all(&dir)?;
    let token = crate::http::auth::new_token("demo")?;
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        toml::to_string(&demo_config(&options, &plugin, &dir, &names, &token)?)?,
    )?;
    let config = crate::config::load(&path)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let started = Instant::now();
    let first_hour = build_reference(&path, &dir, options.events, now)?;
    println!(
        "Monitoring: the first hour ({first_hour} transactions) through the same graph offline is the reference \
         \"{REFERENCE}\" of {} ({:.1} s); the last hour's traffic drifts on purpose",
        MONITORED.join(", "),
        started.elapsed().as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(async {
        let services = match Services::connect(&config).await {
            Ok(services) => services,
            Err(e) => {
                eprintln!(
                    "{e}\nWith --nats and --redis the demo runs on those services: start them, or leave both options \
                     out for the embedded mode."
                );
                return Ok((1, Default::default()));
            }
        };
        if config.host.embedded() {
            println!(
                "Embedded mode: no NATS, no Redis; the online store and event logs are in {}",
                dir.display()
            );
        } else {
            println!("On NATS at {} and Redis at {}", config.host.nats, config.host.redis);
        }
        let outcome = demo(&config, &options, services.clone(), &names, &token, &path, now).await;
        clean_up(&services, &config, &names).await?;
        outcome
    });
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn demo(
    config: &Config,
    options: &DemoOptions,
    services: Services,
    names: &Names,
    token: &str,
    config_path: &Path,
    now: i64,
) -> anyhow::Result<(i32, std::collections::BTreeMap<String, crate::monitor::drift::Status>)> {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (bound, address) = tokio::sync::oneshot::channel();
    let store = services.store.clone();
    let bus = services.bus.clone();
    let monitors = services.monitors.clone();
    let pipeline = tokio::spawn(crate::pipeline::run_on(config.clone(), services, shutdown, Some(bound)));
    let address = match address.await {
        Ok(address) => address,
        Err(_) => {
            pipeline.await??;
            anyhow::bail!("the pipeline stopped before serving");
        }
    };
    publish(&bus, names, options.events, now).await?;
    let set = &config.feature_sets[0];
    let plan = crate::plan::SetPlan::compile(config, set)?;
    wait_applied(&*store, &crate::keys::applied_counter(&plan.keys), options.events).await?;
    print_users(&plan, &*store, now * 1000).await?;
    let statuses = print_drift(
        &monitors,
        &format!("{}@v{}", set.name, set.version),
        options.events,
        now,
    )
    .await;
    play_model(address, token, &names.model, &set.name, config_path).await?;
    // With --no-serve the API stops with the demo: no address or curl line to try.
    if !options.no_serve {
        print_try(&set.name, &names.model, address, token);
    }
    println!("\n(config: {})", config_path.display());
    if !options.no_serve {
        println!("Serving until Ctrl-C.");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(true);
    pipeline.await??;
    Ok((0, statuses))
}

/// Waits (10 s at most) for the windows the stream's own time has closed, prints the
/// monitored features' statuses with their last scores, and returns the statuses.
async fn print_drift(
    monitors: &crate::runtime::Monitors,
    label: &str,
    events: u64,
    now: i64,
) -> std::collections::BTreeMap<String, crate::monitor::drift::Status> {
    let Some(monitor) = monitors.get(label) else {
        return Default::default();
    };
    // 10-minute windows close once the stream's time is 10 minutes (the lateness) past them.
    let window = 600_000i64;
    let (first, _) = at(0, events, now);
    let (last, _) = at(events - 1, events, now);
    let due = ((last - window) / window - first / window).max(0) as usize;
    let started = Instant::now();
    loop {
        let closed = {
            let monitor = monitor.lock().unwrap_or_else(|e| e.into_inner());
            monitor.closed(monitor.window()).map_or(0, |c| c.len())
        };
        if closed >= due || started.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let monitor = monitor.lock().unwrap_or_else(|e| e.into_inner());
    let closed = monitor.closed(monitor.window()).cloned().unwrap_or_default();
    println!(
        "\nDrift against \"{REFERENCE}\" ({} closed 10-minute windows; a status rises after 2 windows past a threshold):\n",
        closed.len()
    );
    println!("{:<12} {:>8} {:>10} {:>10}   since", "feature", "status", "PSI", "TVD");
    let mut statuses = std::collections::BTreeMap::new();
    for feature in MONITORED {
        let status = monitor
            .statuses()
            .get(feature)
            .map_or(crate::monitor::drift::Status::Ok, |j| j.status);
        let last = closed
            .iter()
            .rev()
            .find_map(|w| w.features.get(feature).filter(|f| f.verdict.is_some()));
        let score = |m: crate::monitor::drift::Metric| {
            last.and_then(|f| f.scores.get(&m))
                .map_or("-".into(), |v| format!("{v:.3}"))
        };
        let since = closed
            .iter()
            .rev()
            .find(|w| w.features.get(feature).is_some_and(|f| f.changed))
            .map_or("-".into(), |w| crate::event_time::rfc3339(w.end));
        println!(
            "{:<12} {:>8} {:>10} {:>10}   {since}",
            feature,
            status.name(),
            score(crate::monitor::drift::Metric::Psi),
            score(crate::monitor::drift::Metric::Tvd)
        );
        statuses.insert(feature.to_string(), status);
    }
    statuses
}

/// Publishes `events` transactions of the three hours before `now` (ms), in time order, in
/// batches.
async fn publish(bus: &Bus, names: &Names, events: u64, now: i64) -> anyhow::Result<()> {
    bus.ensure_stream(&names.stream, &names.subject, true).await?;
    let mut batch = Vec::new();
    for i in 0..events {
        let (ts, drifted) = at(i, events, now);
        batch.push(Publish {
            subject: names.subject.clone(),
            headers: Vec::new(),
            body: serde_json::to_vec(&transaction(i, ts, drifted))?.into(),
        });
        if batch.len() == 1000 || i + 1 == events {
            bus.publish(std::mem::take(&mut batch)).await?;
        }
    }
    Ok(())
}

/// Waits (with a progress bar) until the set has applied `events` events; two minutes at most.
async fn wait_applied(store: &dyn crate::store::OnlineStore, applied_key: &str, events: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    eprintln!("  streaming {events} events through the fraud feature set");
    let mut progress = crate::offline::Progress::new(events, false);
    loop {
        let applied = store.counter(applied_key).await.map_err(anyhow::Error::msg)?;
        progress.show(applied);
        if applied >= events {
            progress.finish(applied);
            eprintln!("  done in {:.1} s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(120) {
            eprintln!();
            anyhow::bail!("the pipeline did not take every event within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A few users' features as of `at` (µs), windows evaluated at that time.
async fn print_users(
    plan: &crate::plan::SetPlan,
    store: &dyn crate::store::OnlineStore,
    at: i64,
) -> anyhow::Result<()> {
    let users = ["u0", "u1", "u4", "u9"];
    let rows = plan.view.read(store, &users, at).await?;
    println!("\nA few users as of now (windows evaluated at the request time):\n");
    println!(
        "{:<6} {:>12} {:>12} {:>14} {:>16} {:>12}",
        "user", "last amount", "tx_count_1h", "mean_24h (USD)", "z-score of last", "count_24h"
    );
    let show = |v: Option<&Value>| match v {
        Some(Value::Float(f)) => format!("{f:.2}"),
        Some(Value::Integer(i)) => i.to_string(),
        _ => "-".into(),
    };
    for (user, row) in users.iter().zip(rows) {
        let Some(row) = row else { continue };
        let get = |name: &str| row.values.get(name);
        println!(
            "{:<6} {:>12} {:>12} {:>14} {:>16} {:>12}",
            user,
            show(get("amount_usd")),
            show(get("tx_count_1h")),
            show(get("amount_usd_mean_24h")),
            show(get("amount_zscore_24h")),
            show(get("amount_usd_count_24h")),
        );
    }
    Ok(())
}

/// The features the demo's model is served.
const MODEL_FEATURES: [&str; 4] = ["amount_usd", "tx_count_1h", "amount_zscore_24h", "is_foreign"];

/// A POST to the demo's own API (HTTP/1.1, one connection per call): the JSON answer, or an
/// error with the status and body.
async fn post(
    address: std::net::SocketAddr,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("POST {path}: not an HTTP answer"))?;
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if !(200..300).contains(&status) {
        anyhow::bail!("POST {path}: {status} {payload}");
    }
    Ok(serde_json::from_str(payload)?)
}

/// Plays a model server on the demo's API: looks up 100 users' features with capture, scores
/// each with a tiny function of the z-score, posts the predictions, then labels for two in
/// three; prints what was stored and how to get the retraining data.
async fn play_model(
    address: std::net::SocketAddr,
    token: &str,
    model: &str,
    set: &str,
    config_path: &Path,
) -> anyhow::Result<()> {
    let features: Vec<String> = MODEL_FEATURES.iter().map(|f| format!("{set}:{f}")).collect();
    let (mut predictions, mut labels) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let request_id = format!("demo-{i}");
        let answer = post(
            address,
            "/v1/features/lookup",
            token,
            &serde_json::json!({ "entities": [format!("u{i}")], "features": features,
                                 "capture": { "model": model, "request_id": request_id } }),
        )
        .await?;
        let value = |f: &str| answer["results"][0]["features"][format!("{set}:{f}")]["value"].as_f64();
        let z = value("amount_zscore_24h").unwrap_or(0.0);
        let score = 1.0 / (1.0 + (-(z - 2.0)).exp());
        predictions.push(serde_json::json!({ "request_id": request_id, "score": score,
                                             "decision": if score > 0.5 { "review" } else { "allow" } }));
        if i % 3 != 0 {
            labels.push(serde_json::json!({ "request_id": request_id, "is_fraud": z > 3.0 }));
        }
    }
    post(
        address,
        &format!("/v1/models/{model}/predictions"),
        token,
        &serde_json::json!(predictions),
    )
    .await?;
    post(
        address,
        &format!("/v1/models/{model}/labels"),
        token,
        &serde_json::json!(labels),
    )
    .await?;
    println!(
        "\nModel \"{model}\": 100 lookups captured as served, {} predictions and {} labels stored; `sluice run` \
         writes them to the model's production set (every 10 s), and the retraining data is one command:\n",
        predictions.len(),
        labels.len()
    );
    println!(
        "  sluice training-set --config {} --model {model} --out retrain.parquet",
        config_path.display()
    );
    Ok(())
}

/// The `curl` lines to try the API.
fn print_try(set_name: &str, model: &str, address: std::net::SocketAddr, token: &str) {
    println!("\nThe API is at http://{address} (token printed below; it lives as long as the demo):\n");
    println!("  T={token}");
    println!("  curl -H \"Authorization: Bearer $T\" http://{address}/v1/features/{set_name}/u0");
    println!(
        "  curl -H \"Authorization: Bearer $T\" http://{address}/v1/features/lookup -d '{{\"entities\": [\"u0\", \"u1\"], \"features\": [\"{set_name}:tx_count_1h\", \"{set_name}:amount_zscore_24h\"]}}'"
    );
    println!(
        "  curl -H \"Authorization: Bearer $T\" http://{address}/v1/ingest/{set_name} -d '{{\"transaction_id\": 1, \"user_id\": \"u0\", \"amount\": 5000, \"currency\": \"USD\", \"merchant\": \"m1\", \"country\": \"US\", \"ts\": \"{}\"}}'",
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    println!("  curl -H \"Authorization: Bearer $T\" http://{address}/v1/feature-sets/{set_name}/drift");
    println!("  curl -H \"Authorization: Bearer $T\" http://{address}/metrics | grep sluice_feature_drift_status");
    println!(
        "  curl -H \"Authorization: Bearer $T\" http://{address}/v1/features/lookup -d '{{\"entities\": [\"u7\"], \"features\": [\"{set_name}:amount_zscore_24h\"], \"capture\": {{\"model\": \"{model}\"}}}}'"
    );
    println!(
        "  curl -H \"Authorization: Bearer $T\" http://{address}/v1/models/{model}/predictions -d '{{\"request_id\": \"<from the lookup>\", \"score\": 0.2, \"decision\": \"allow\"}}'"
    );
    println!(
        "  curl -H \"Authorization: Bearer $T\" http://{address}/v1/models/{model}/labels -d '{{\"request_id\": \"<from the lookup>\", \"is_fraud\": false}}'"
    );
    println!("  curl -H \"Authorization: Bearer $T\" \"http://{address}/v1/models/{model}/captures?limit=3\"");
}
