//! Harness for tests against the real NATS and Redis: unique stream, subject and key names
//! per test (so tests run in parallel and leave nothing behind), a config written for them,
//! an event generator, and readers of what the pipeline wrote.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::{self, Context};
use serde_json::{json, Value as Json};

/// NATS URL used by the tests.
pub const NATS: &str = "nats://127.0.0.1:4222";
/// Redis URL used by the tests.
pub const REDIS: &str = "redis://127.0.0.1:6379/0";

/// One test's names and folder.
pub struct Live {
    /// Unique id (lowercase letters and digits).
    pub id: String,
    /// Temporary folder holding the config and the offline data.
    pub dir: tempfile::TempDir,
    /// Feature set name.
    pub set: String,
    /// Input stream and subject.
    pub stream: String,
    /// Input subject.
    pub subject: String,
    /// Stream target's stream.
    pub features: String,
    /// Redis key prefix.
    pub prefix: String,
    /// Redis URL the pipeline uses.
    pub redis_url: String,
    /// NATS URL the pipeline and the test use.
    pub nats_url: String,
    /// Set by [`Live::cleanup`]; otherwise dropping the `Live` (a failed assertion unwinding)
    /// removes the test's streams and keys.
    cleaned: std::sync::atomic::AtomicBool,
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.cleaned.load(Ordering::Relaxed) {
            return;
        }
        // The test's runtime may be the one unwinding: clean up from a thread of its own.
        let names = Names::of(self);
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(async {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), names.remove()).await;
                });
            }
        })
        .join();
    }
}

/// What a test created, by name: enough to remove it without the `Live`.
struct Names {
    nats_url: String,
    redis_url: String,
    streams: [String; 2],
    set: String,
    prefix: String,
}

impl Names {
    fn of(live: &Live) -> Names {
        Names {
            nats_url: live.nats_url.clone(),
            redis_url: live.redis_url.clone(),
            streams: [live.stream.clone(), live.features.clone()],
            set: live.set.clone(),
            prefix: live.prefix.clone(),
        }
    }

    /// Removes the streams, the set's dead, late, drift and capture messages, and the Redis
    /// keys.
    async fn remove(&self) {
        if let Ok(client) = async_nats::connect(&self.nats_url).await {
            let js = jetstream::new(client);
            for stream in &self.streams {
                let _ = js.delete_stream(stream).await;
            }
            for (stream, subject) in [
                ("SLUICE_DLQ", format!("sluice.dlq.{}", self.set)),
                ("SLUICE_LATE", format!("sluice.late.{}", self.set)),
                ("SLUICE_DRIFT", format!("sluice.drift.{}", self.set)),
                // Models named after the set ([`Live::model`]).
                ("SLUICE_CAPTURE", format!("sluice.capture.{}", self.set)),
                ("SLUICE_CAPTURE", format!("sluice.capture.{}-sampled", self.set)),
            ] {
                if let Ok(letters) = js.get_stream(stream).await {
                    let _ = letters.purge().filter(subject).await;
                }
            }
            // The models' production-set writers' consumers.
            if let Ok(capture) = js.get_stream("SLUICE_CAPTURE").await {
                for model in [self.set.clone(), format!("{}-sampled", self.set)] {
                    let _ = capture.delete_consumer(&format!("sluice-production-{model}")).await;
                }
            }
        }
        if let Ok(mut r) = redis::Client::open(self.redis_url.as_str()).and_then(|c| c.get_connection()) {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query(&mut r)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut r);
            }
        }
    }
}

impl Live {
    /// Fresh names for a test tagged `tag`.
    pub fn new(tag: &str) -> Live {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let id = format!(
            "{tag}{}x{}x{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Live {
            set: format!("s{id}"),
            stream: format!("EV{}", id.to_uppercase()),
            subject: format!("ev.{id}"),
            features: format!("FT{}", id.to_uppercase()),
            prefix: format!("test{id}"),
            redis_url: REDIS.to_string(),
            nats_url: NATS.to_string(),
            dir: tempfile::tempdir().unwrap(),
            id,
            cleaned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The fraud example's config (`examples/fraud/sluice.toml`) pointed at this test's
    /// services, names and folder, with a 1 s Parquet roll; returns its path.
    pub fn write_config(&self) -> PathBuf {
        self.write_config_with(1)
    }

    /// Like [`Live::write_config`], with the Parquet roll period in seconds.
    pub fn write_config_with(&self, roll_seconds: u64) -> PathBuf {
        self.write_fraud_config(|set| {
            set.insert("max_event_bytes".into(), 65536.into());
            let source = set["source"].as_table_mut().unwrap();
            source.insert("batch".into(), 500.into());
            for target in set["targets"].as_array_mut().unwrap() {
                let target = target.as_table_mut().unwrap();
                if target["kind"].as_str() == Some("parquet") {
                    target.insert("roll_seconds".into(), (roll_seconds as i64).into());
                }
            }
        })
    }

    /// The fraud example's config with this test's names, changed further by `tweak` (which
    /// gets the feature set's table); written into the test folder.
    pub fn write_fraud_config(&self, tweak: impl FnOnce(&mut toml::Table)) -> PathBuf {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fraud/sluice.toml");
        let mut config: toml::Table = std::fs::read_to_string(&example).unwrap().parse().unwrap();
        let host = config["host"].as_table_mut().unwrap();
        host.insert("nats".into(), self.nats_url.as_str().into());
        host.insert("redis".into(), self.redis_url.as_str().into());
        host.insert("redis_prefix".into(), self.prefix.as_str().into());
        let plugin = crate::rust_plugin("currency");
        config["plugins"]
            .as_table_mut()
            .unwrap()
            .insert("currency".into(), plugin.display().to_string().into());
        let set = config["feature_set"].as_array_mut().unwrap()[0].as_table_mut().unwrap();
        set.insert("name".into(), self.set.as_str().into());
        let source = set["source"].as_table_mut().unwrap();
        source.insert("stream".into(), self.stream.as_str().into());
        source.insert("subject".into(), self.subject.as_str().into());
        for target in set["targets"].as_array_mut().unwrap() {
            let target = target.as_table_mut().unwrap();
            match target["kind"].as_str() {
                Some("stream") => {
                    target.insert("stream".into(), self.features.as_str().into());
                    target.insert("subject".into(), format!("ft.{}", self.id).into());
                }
                Some("parquet") => {
                    target.insert("root".into(), "offline".into());
                }
                _ => {}
            }
        }
        tweak(set);
        let path = self.dir.path().join("sluice.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        path
    }

    /// Waits until the pipeline has applied input sequence `last` and Parquet holds `rows`
    /// rows (the test's assertions then report what is missing, if anything).
    pub async fn wait_drained(&self, last: u64, rows: usize, timeout: std::time::Duration) {
        wait_for("every event applied", timeout, async || self.applied().await == last).await;
        wait_for("every row in Parquet", std::time::Duration::from_secs(60), async || {
            parquet_rows(&self.offline_dir()).len() >= rows
        })
        .await;
    }

    /// Where the offline writer puts this set's parts.
    pub fn offline_dir(&self) -> PathBuf {
        self.dir.path().join("offline").join(&self.set).join("v1")
    }

    /// JetStream.
    pub async fn jetstream(&self) -> Context {
        jetstream::new(
            async_nats::connect(&self.nats_url)
                .await
                .expect("NATS must run on 127.0.0.1:4222"),
        )
    }

    /// Publishes raw events on the input subject (creating the stream) and waits for acks.
    pub async fn publish(&self, events: &[Vec<u8>]) {
        let js = self.jetstream().await;
        let config = jetstream::stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.subject.clone()],
            ..Default::default()
        };
        js.get_or_create_stream(config).await.unwrap();
        for chunk in events.chunks(1000) {
            let mut acks = Vec::new();
            for event in chunk {
                acks.push(js.publish(self.subject.clone(), event.clone().into()).await.unwrap());
            }
            for ack in acks {
                ack.await.unwrap();
            }
        }
    }

    /// Publishes JSON events (see [`Live::publish`]).
    pub async fn publish_json(&self, events: &[Json]) {
        let bodies: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
        self.publish(&bodies).await
    }

    /// The Redis online store the pipeline writes.
    pub async fn store(&self) -> sluice::store::redis::RedisStore {
        sluice::store::redis::RedisStore::connect(&self.redis_url)
            .await
            .unwrap()
    }

    /// A plain Redis connection. Its replies may take up to 10 s (the client's default is
    /// 500 ms, which a busy 2-core machine running several tests exceeds now and then).
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let patient =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(std::time::Duration::from_secs(10)));
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection_with_config(&patient)
            .await
            .unwrap()
    }

    /// The applied sequence the pipeline recorded (0 if none).
    pub async fn applied(&self) -> u64 {
        let mut r = self.redis().await;
        let v: Option<u64> = redis::cmd("GET")
            .arg(format!("{}:{}:v1:_applied", self.prefix, self.set))
            .query_async(&mut r)
            .await
            .unwrap();
        v.unwrap_or(0)
    }

    /// Every entity hash of the set: entity → field → JSON text.
    pub async fn hashes(&self) -> HashMap<String, HashMap<String, String>> {
        let mut r = self.redis().await;
        let pattern = format!("{}:{}:v1:{{*", self.prefix, self.set);
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut r).await.unwrap();
        let mut out = HashMap::new();
        for key in keys {
            let hash: HashMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(&mut r).await.unwrap();
            let entity = key.rsplit_once('{').unwrap().1.trim_end_matches('}').to_string();
            out.insert(entity, hash);
        }
        out
    }

    /// (pending, unacknowledged) messages of a durable consumer on a stream.
    pub async fn consumer_backlog(&self, stream: &str, durable: &str) -> (u64, usize) {
        let js = self.jetstream().await;
        let stream = js.get_stream(stream).await.unwrap();
        let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(durable).await.unwrap();
        let info = consumer.info().await.unwrap();
        (info.num_pending, info.num_ack_pending)
    }

    /// Removes this test's streams, Redis keys and dead letters (a `Live` dropped without
    /// this call, as when a test fails, does it on drop).
    pub async fn cleanup(&self) {
        Names::of(self).remove().await;
        self.cleaned.store(true, Ordering::Relaxed);
    }

    /// Dead letters of the set: (reason, step, sequence, body).
    pub async fn dead_letters(&self) -> Vec<(String, String, u64, Vec<u8>)> {
        self.letters("SLUICE_DLQ", "dlq").await
    }

    /// Events of the set refused as late: (reason, step, sequence, body).
    pub async fn late_events(&self) -> Vec<(String, String, u64, Vec<u8>)> {
        self.letters("SLUICE_LATE", "late").await
    }

    async fn letters(&self, stream: &str, kind: &str) -> Vec<(String, String, u64, Vec<u8>)> {
        let messages = self.messages(stream, &format!("sluice.{kind}.{}", self.set)).await;
        messages
            .into_iter()
            .map(|(h, body)| {
                let get = |k: &str| h.get(k).map(|v| v.to_string()).unwrap_or_default();
                (
                    get("Sluice-Reason"),
                    get("Sluice-Step"),
                    get("Sluice-Seq").parse().unwrap_or(0),
                    body,
                )
            })
            .collect()
    }

    /// The set's drift-status events on `sluice.drift.<set>` (stream SLUICE_DRIFT), oldest first.
    pub async fn drift_events(&self) -> Vec<Json> {
        let messages = self
            .messages("SLUICE_DRIFT", &format!("sluice.drift.{}", self.set))
            .await;
        messages
            .into_iter()
            .map(|(_, body)| serde_json::from_slice(&body).unwrap())
            .collect()
    }

    /// Every message of a stream on a subject: (headers, body).
    async fn messages(&self, stream: &str, subject: &str) -> Vec<(async_nats::HeaderMap, Vec<u8>)> {
        let js = self.jetstream().await;
        let Ok(stream) = js.get_stream(stream).await else {
            return Vec::new();
        };
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject: subject.to_string(),
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        use futures::StreamExt;
        loop {
            let before = out.len();
            let mut batch = consumer.fetch().max_messages(5_000).messages().await.unwrap();
            while let Some(Ok(m)) = batch.next().await {
                out.push((m.headers.clone().unwrap_or_default(), m.payload.to_vec()));
            }
            if out.len() == before {
                break;
            }
        }
        out
    }
}

/// A deterministic synthetic transaction: skewed users, some null amounts, a few unknown
/// currencies, event times with small out-of-order jitter.
pub fn transaction(i: u64) -> Json {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
    let user = (h % 1000) * (h % 1000) / 1000; // skewed towards small ids
    let currencies = ["USD", "EUR", "GBP", "JPY", "CHF"];
    let currency = if i % 97 == 13 {
        "XYZ"
    } else {
        currencies[(h % 5) as usize]
    };
    let amount = if i % 50 == 7 {
        Json::Null
    } else {
        json!(((h % 100_000) as f64) / 100.0 + 0.01)
    };
    let ts = 1_764_000_000_000i64 + i as i64 * 10 - ((h % 5) as i64) * 3;
    let country = ["US", "DE", "GB", "JP", "CH"][(h % 5) as usize];
    json!({
        "transaction_id": i,
        "user_id": format!("u{user}"),
        "amount": amount,
        "currency": currency,
        "merchant": format!("m{}", h % 50),
        "country": country,
        "ts": ts,
    })
}

/// The USD rate of a currency in the fraud example's config; `None`: unknown (dead letter).
pub fn rate(currency: &str) -> Option<f64> {
    match currency {
        "USD" => Some(1.0),
        "EUR" => Some(1.08),
        "GBP" => Some(1.27),
        "JPY" => Some(0.0067),
        "CHF" => Some(1.13),
        _ => None,
    }
}

/// Whether the fraud pipeline keeps a transaction (known currency, a positive amount).
pub fn kept(t: &Json) -> bool {
    rate(t["currency"].as_str().unwrap_or("")).is_some() && t["amount"].as_f64().is_some_and(|a| a > 0.0)
}

/// Reads every Parquet part of a folder: rows as (seq, key, ts, column → JSON value).
pub fn parquet_rows(dir: &Path) -> Vec<(u64, String, i64, HashMap<String, Json>)> {
    use arrow_array::{
        Array, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray, UInt64Array,
    };
    let mut rows = Vec::new();
    let Ok(dates) = std::fs::read_dir(dir) else { return rows };
    for date in dates.flatten() {
        for part in std::fs::read_dir(date.path()).unwrap().flatten() {
            let path = part.path();
            if path.extension().is_none_or(|e| e != "parquet") {
                continue;
            }
            let file = std::fs::File::open(&path).unwrap();
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let schema = batch.schema();
                let seq = batch.column(0).as_any().downcast_ref::<UInt64Array>().unwrap();
                let key = batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                let ts = batch
                    .column(2)
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .unwrap();
                for r in 0..batch.num_rows() {
                    let mut values = HashMap::new();
                    for (c, field) in schema.fields().iter().enumerate().skip(3) {
                        let col = batch.column(c);
                        let v = if col.is_null(r) {
                            Json::Null
                        } else if let Some(a) = col.as_any().downcast_ref::<Float64Array>() {
                            json!(a.value(r))
                        } else if let Some(a) = col.as_any().downcast_ref::<Int64Array>() {
                            json!(a.value(r))
                        } else if let Some(a) = col.as_any().downcast_ref::<BooleanArray>() {
                            json!(a.value(r))
                        } else if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
                            json!(a.value(r))
                        } else if let Some(a) = col.as_any().downcast_ref::<arrow_array::ListArray>() {
                            let items = a.value(r);
                            let items = items.as_any().downcast_ref::<Float64Array>().unwrap();
                            json!(items.iter().collect::<Vec<_>>())
                        } else {
                            json!(format!("{:?}", col.data_type()))
                        };
                        values.insert(field.name().clone(), v);
                    }
                    rows.push((seq.value(r), key.value(r).to_string(), ts.value(r), values));
                }
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    rows
}

/// The Python with pandas, pyarrow, duckdb and scipy that `plugins/toolchains.sh` installs.
pub fn pandas_python() -> PathBuf {
    let toolchains = std::env::var_os("SLUICE_TOOLCHAINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/sluice/toolchains")
        });
    let python = toolchains.join("pandas/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash plugins/toolchains.sh` (it installs pandas, pyarrow, duckdb and scipy)",
        python.display()
    );
    python
}

/// Polls `check` every 100 ms until it holds or `timeout` passes (then the test's own
/// assertions report what is missing).
pub async fn wait_for(what: &str, timeout: std::time::Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = std::time::Instant::now();
    while !check().await {
        if started.elapsed() > timeout {
            eprintln!("timed out waiting for {what}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Runs `sluice run` on a config in this process; send `true` to stop it.
pub fn start(live: &Live, config: &std::path::Path) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let config = sluice::config::load(config).unwrap_or_else(|e| panic!("{e}"));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let set = live.set.clone();
    let task = tokio::spawn(async move {
        sluice::pipeline::run(config, shutdown)
            .await
            .unwrap_or_else(|e| panic!("{set}: {e}"));
    });
    (stop, task)
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
pub async fn http(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let (status, body) = http_bytes(address, method, path, token, body).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Like [`http`], the body as bytes (a Parquet download).
pub async fn http_bytes(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let end = response.windows(4).position(|w| w == b"\r\n\r\n");
    let head = String::from_utf8_lossy(&response[..end.unwrap_or(response.len())]).to_string();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = end.map_or(Vec::new(), |at| response[at + 4..].to_vec());
    (status, body)
}

/// Runs `sluice run` in this process and returns the HTTP API's address (the config's
/// `[http] bind` should use port 0).
pub async fn start_serving(
    config: &Path,
) -> (
    std::net::SocketAddr,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let config = sluice::config::load(config).unwrap_or_else(|e| panic!("{e}"));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (bound, address) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        sluice::pipeline::run_with(config, shutdown, Some(bound))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
    (address.await.expect("the HTTP API binds"), stop, task)
}

/// Adds an HTTP API on a free port (`127.0.0.1:0`, 64 KiB bodies) and tokens to a config
/// file: (name, token, scopes, sets).
pub fn with_http(path: &Path, tokens: &[(&str, &str, &[&str], &[&str])]) {
    let mut config: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let http: toml::Table = toml::from_str("bind = \"127.0.0.1:0\"\nmax_body_bytes = 65536").unwrap();
    config.insert("http".into(), http.into());
    let list = |items: &[&str]| toml::Value::Array(items.iter().map(|s| toml::Value::from(*s)).collect());
    let tokens: Vec<toml::Value> = tokens
        .iter()
        .map(|(name, token, scopes, sets)| {
            let mut t = toml::Table::new();
            t.insert("name".into(), (*name).into());
            t.insert("sha256".into(), sluice::http::auth::hash_token(token).into());
            t.insert("scopes".into(), list(scopes));
            t.insert("sets".into(), list(sets));
            t.into()
        })
        .collect();
    config.insert("token".into(), toml::Value::Array(tokens));
    std::fs::write(path, toml::to_string(&config).unwrap()).unwrap();
}

/// The fraud example's per-user aggregates of one kept event, recomputed from the raw events.
pub struct Windows {
    /// `tx_count_1h`.
    pub count_1h: i64,
    /// `amount_usd_sum_24h`.
    pub sum_24h: f64,
    /// `amount_usd_max_24h`.
    pub max_24h: f64,
    /// `amount_zscore_24h`.
    pub zscore_24h: Option<f64>,
}

/// Expected aggregates per input sequence: every kept event of the user received so far
/// (in stream order) whose 10-minute bucket is inside the window at the event's time.
pub fn expected_windows(events: &[Json]) -> HashMap<u64, Windows> {
    const PERIOD: i64 = 600_000_000;
    let mut seen: HashMap<&str, Vec<(i64, f64, &str)>> = HashMap::new();
    let mut out = HashMap::new();
    for (i, e) in events.iter().enumerate().filter(|(_, e)| kept(e)) {
        let ts = e["ts"].as_i64().unwrap() * 1000;
        let usd = e["amount"].as_f64().unwrap() * rate(e["currency"].as_str().unwrap()).unwrap();
        let list = seen.entry(e["user_id"].as_str().unwrap()).or_default();
        list.push((ts, usd, e["merchant"].as_str().unwrap()));
        let now = ts.div_euclid(PERIOD);
        let inside = |buckets: i64| {
            list.iter()
                .filter(move |x| (now - buckets + 1..=now).contains(&x.0.div_euclid(PERIOD)))
        };
        let day: Vec<f64> = inside(144).map(|x| x.1).collect();
        let n = day.len() as f64;
        let mean = day.iter().sum::<f64>() / n;
        let sd = (day.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        out.insert(
            i as u64 + 1,
            Windows {
                count_1h: inside(6).count() as i64,
                sum_24h: day.iter().sum(),
                max_24h: day.iter().copied().fold(f64::MIN, f64::max),
                zscore_24h: (n > 1.0 && sd > 0.0).then(|| (usd - mean) / sd),
            },
        );
    }
    out
}

/// Equal within relative 1e-9.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Checks every Parquet row's aggregates (and each user's online row) against a
/// recomputation from the raw events.
pub fn check_windows(seq: u64, values: &HashMap<String, Json>, want: &Windows) {
    assert_eq!(
        values["tx_count_1h"].as_i64(),
        Some(want.count_1h),
        "event {seq}: tx_count_1h"
    );
    let sum = values["amount_usd_sum_24h"].as_f64().unwrap();
    assert!(close(sum, want.sum_24h), "event {seq}: sum {sum} vs {}", want.sum_24h);
    assert_eq!(
        values["amount_usd_max_24h"].as_f64(),
        Some(want.max_24h),
        "event {seq}: max"
    );
    let z = values["amount_zscore_24h"].as_f64();
    match (z, want.zscore_24h) {
        (Some(z), Some(w)) => assert!((z - w).abs() <= 1e-6 * w.abs().max(1.0), "event {seq}: z {z} vs {w}"),
        (z, w) => assert_eq!(z, w, "event {seq}: z-score"),
    }
}

/// A new test CA, and a certificate for localhost it signs, in `dir` with `tag` in their
/// names: (CA certificate, certificate, private key).
pub fn make_certificate(
    dir: &std::path::Path,
    tag: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let path = |name: &str| dir.join(format!("{tag}-{name}"));
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let (ca, ca_key, csr, ext) = (
        format!("{tag}-ca.pem"),
        format!("{tag}-ca.key"),
        format!("{tag}.csr"),
        format!("{tag}.ext"),
    );
    let (cert, key) = (format!("{tag}-cert.pem"), format!("{tag}-key.pem"));
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=Sluice test CA",
                "-keyout",
                &ca_key,
                "-out",
                &ca,
            ][..],
            &ec,
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-subj", "/CN=localhost", "-keyout", &key, "-out", &csr][..],
            &ec,
        ]
        .concat(),
    );
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

/// A TLS client trusting the CA certificate(s) in `ca` (PEM).
pub fn tls_connector(ca: &Path) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    use tokio_rustls::rustls::{crypto::ring::default_provider, ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(std::sync::Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// The body of a child process a kill test starts and kills: `sluice run` on the config
/// named by `SLUICE_CHILD_CONFIG`, as the binary runs it (nothing without the variable).
pub fn run_child_from_env() {
    let Ok(config) = std::env::var("SLUICE_CHILD_CONFIG") else {
        return;
    };
    let cli = <sluice::cli::Cli as clap::Parser>::parse_from(["sluice", "run", "--config", &config]);
    std::process::exit(sluice::cli::run(cli).unwrap());
}

/// A child process started by [`spawn_child`]: killed (SIGKILL) and reaped when dropped, so
/// a test that fails leaves no host running behind it (holding its port and the output pipe).
pub struct Child(pub std::process::Child);

impl std::ops::Deref for Child {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Child {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this test binary's ignored test `body` (one calling [`run_child_from_env`]) as a
/// child process running `sluice run --config config`.
pub fn spawn_child(body: &str, config: &Path) -> Child {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", body, "--ignored", "--nocapture", "--test-threads=1"])
        .env("SLUICE_CHILD_CONFIG", config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Child(child)
}

/// Gives a config's HTTP API (`127.0.0.1:0`, as [`with_http`] writes it) a fixed port of
/// [`restart_port`], for a host the test kills and starts again; returns its address.
pub fn fixed_address(config: &Path) -> std::net::SocketAddr {
    let port = restart_port();
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains("127.0.0.1:0"), "{text}");
    std::fs::write(config, text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))).unwrap();
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Waits (a minute at most) until a host serves at `address` and says it is ready.
pub async fn wait_ready(address: std::net::SocketAddr, token: &str) {
    wait_for(
        "the host serving and ready",
        std::time::Duration::from_secs(60),
        async || {
            tokio::net::TcpStream::connect(address).await.is_ok()
                && http(address, "GET", "/readyz", Some(token), b"").await.0 == 200
        },
    )
    .await;
}

/// A port for a server a test stops and starts again on the same address. It is below the
/// kernel's ephemeral range (`ip_local_port_range`), so no `bind(0)` and no outgoing
/// connection of a parallel test can take it between a stop and a restart; each process and
/// call gets its own, checked free when handed out.
pub fn restart_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, span) = (10_000u16, ephemeral.saturating_sub(10_000).max(1000));
    // Each test process starts at its own offset (binaries run one after another, but a
    // developer may run two at once).
    let offset = (std::process::id() % 97) as u16 * (span / 97);
    for _ in 0..span {
        let port = low + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {low} and {}", low + span);
}

/// Milliseconds since the epoch, on the host's clock.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Sleeps until `at` (ms since the epoch); returns at once when it is past.
pub async fn sleep_until_ms(at: i64) {
    let wait = at - now_ms();
    if wait > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
    }
}

/// A monitored set's closed windows from `GET /v1/feature-sets/{set}/statistics` (its first
/// version), once there are at least `n` (waiting up to a minute for them).
pub async fn closed_windows(address: std::net::SocketAddr, set: &str, token: &str, n: usize) -> Vec<Json> {
    let path = format!("/v1/feature-sets/{set}/statistics");
    let statistics = async || {
        let (status, body) = http(address, "GET", &path, Some(token), b"").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Json>(&body).unwrap()["versions"][0]["windows"]
            .as_array()
            .unwrap()
            .clone()
    };
    wait_for(
        &format!("{n} windows closed"),
        std::time::Duration::from_secs(60),
        async || statistics().await.len() >= n,
    )
    .await;
    statistics().await
}

/// The first record batch of a Parquet file (a file or its bytes).
pub fn first_batch<R: parquet::file::reader::ChunkReader + 'static>(file: R) -> arrow_array::RecordBatch {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .next()
        .expect("a record batch")
        .unwrap()
}

/// A monitored set's window files under `folder` (`…/_monitor/<set>/v<n>/window=<w>`, any
/// depth), each as (window start in ms, rows from its footer), by start.
pub fn monitor_files(folder: &Path) -> Vec<(i64, i64)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(monitor_files(&path));
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        let start: i64 = name.trim_end_matches(".parquet").parse().expect("named by start");
        let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let rows = parquet::file::reader::FileReader::metadata(&reader)
            .file_metadata()
            .num_rows();
        files.push((start / 1000, rows));
    }
    files.sort();
    files
}
