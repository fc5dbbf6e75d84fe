//! Online lookup latency over HTTP: the fraud example serving 10k users, single-entity
//! `GET /v1/features/{set}/{entity}` and 100-entity `POST /v1/features/lookup`, at 1, 8 and 64
//! concurrent clients (keep-alive connections), against Redis's own floor for the same
//! command (`redis-benchmark ... HGETALL`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice_tests::live::{start_serving, with_http, Live};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TOKEN: &str = "bench-read-token";

/// Options of `sluice-bench lookup`.
#[derive(clap::Args)]
pub struct Options {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Events published first (users come from the pipeline benchmark's generator).
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Serve from the embedded mode (one redb file, events pushed over HTTP) instead of
    /// NATS and Redis.
    #[arg(long)]
    embedded: bool,
    /// Serve HTTPS (a test CA and certificate made with openssl; clients use TLS 1.3).
    #[arg(long)]
    tls: bool,
    /// Measure capture instead: one-entity lookups of a model's features without and with
    /// `"capture"` (every request recorded), alternating, three pairs at 8 clients.
    #[arg(long)]
    capture: bool,
}

/// The TLS client when the benchmark serves HTTPS.
static TLS: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();

/// A client connection's byte stream: TCP, or TLS over TCP.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A keep-alive HTTP/1.1 connection.
struct Connection {
    stream: BufReader<Box<dyn Io>>,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    async fn open(address: SocketAddr) -> Connection {
        let tcp = TcpStream::connect(address).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream: Box<dyn Io> = match TLS.get() {
            Some(tls) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
                Box::new(tls.connect(name, tcp).await.unwrap())
            }
            None => Box::new(tcp),
        };
        Connection {
            stream: BufReader::new(stream),
            line: String::new(),
            body: Vec::new(),
        }
    }

    /// Sends a request, reads the response; returns its status.
    async fn request(&mut self, request: &[u8]) -> u16 {
        self.stream.get_mut().write_all(request).await.unwrap();
        self.line.clear();
        self.stream.read_line(&mut self.line).await.unwrap();
        let status = self.line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            self.line.clear();
            self.stream.read_line(&mut self.line).await.unwrap();
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await.unwrap();
        status
    }
}

struct Latencies {
    requests_per_s: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
}

impl Latencies {
    /// `requests/s | p50 | p90 | p99` as table cells.
    fn cells(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{:.0} | {:.3} ms | {:.3} ms | {:.3} ms",
            self.requests_per_s,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99)
        )
    }
}

/// `clients` connections sending requests back to back for `seconds`.
async fn load(address: SocketAddr, clients: usize, seconds: u64, make: fn(u64) -> Vec<u8>) -> Latencies {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(address).await;
            let mut took = Vec::new();
            let mut i = c as u64 * 7919;
            while Instant::now() < deadline {
                let request = make(i);
                let started = Instant::now();
                let status = connection.request(&request).await;
                took.push(started.elapsed());
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&connection.body));
                i += 1;
            }
            took
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    Latencies {
        requests_per_s: all.len() as f64 / seconds as f64,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
    }
}

static SET: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Users with the pipeline generator's skew: small ids are the busy ones.
fn user(i: u64) -> u64 {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
    (h % 10_000) * (h % 10_000) / 10_000
}

fn single(i: u64) -> Vec<u8> {
    let set = SET.get().unwrap();
    format!(
        "GET /v1/features/{set}/u{}?at=1764000100000 HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        user(i)
    )
    .into_bytes()
}

/// A one-entity lookup of every feature, `capture`d for the model or not.
fn one_entity(i: u64, capture: bool) -> Vec<u8> {
    let set = SET.get().unwrap();
    let capture = if capture {
        format!(", \"capture\": {{\"model\": \"{set}\", \"request_id\": \"r{i}\"}}")
    } else {
        String::new()
    };
    let body = format!(
        "{{\"entities\": [\"u{}\"], \"features\": [\"{set}:*\"], \"at\": 1764000100000{capture}}}",
        user(i)
    );
    format!(
        "POST /v1/features/lookup HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn plain(i: u64) -> Vec<u8> {
    one_entity(i, false)
}

/// Request ids differ between rounds, so no capture is a duplicate.
static ROUND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn captured(i: u64) -> Vec<u8> {
    one_entity(
        ROUND.load(std::sync::atomic::Ordering::Relaxed) * 1_000_000_000 + i,
        true,
    )
}

fn batch(i: u64) -> Vec<u8> {
    let set = SET.get().unwrap();
    let entities: Vec<String> = (0..100).map(|k| format!("\"u{}\"", user(i * 100 + k))).collect();
    let body = format!(
        "{{\"entities\": [{}], \"features\": [\"{set}:*\"], \"at\": 1764000100000}}",
        entities.join(",")
    );
    format!(
        "POST /v1/features/lookup HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// redis-benchmark's p50 / p99 (ms) and requests/s for one `HGETALL` at `clients`.
fn redis_floor(key: &str, clients: usize) -> Option<(f64, f64, f64)> {
    let out = std::process::Command::new("redis-benchmark")
        .args(["-n", "100000", "-c", &clients.to_string(), "--csv", "HGETALL", key])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().last()?;
    let cells: Vec<f64> = row
        .split(',')
        .skip(1)
        .filter_map(|c| c.trim_matches('"').parse().ok())
        .collect();
    // rps, avg, min, p50, p95, p99, max
    Some((cells.first().copied()?, cells.get(3).copied()?, cells.get(5).copied()?))
}

/// Runs the benchmark and prints a table.
pub fn run(options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let live = Live::new("benchlookup");
        let _ = SET.set(live.set.clone());
        let config = live.write_config();
        if options.embedded {
            embedded_config(&config);
        }
        if options.capture {
            // A model named after the set (the cleanup purges its records).
            let mut table: toml::Table = std::fs::read_to_string(&config)?.parse()?;
            let model: toml::Table = toml::from_str(&format!(
                "name = \"{set}\"\nfeatures = [\"{set}:*\"]\npredictions = {{ score = \"float\" }}\n",
                set = live.set
            ))?;
            table.insert("model".into(), toml::Value::Array(vec![model.into()]));
            std::fs::write(&config, toml::to_string(&table)?)?;
        }
        with_http(&config, &[("bench", TOKEN, &["read", "ingest", "admin"], &[])]);
        if options.tls {
            let (ca, cert, key) = sluice_tests::live::make_certificate(live.dir.path(), "bench");
            let mut table: toml::Table = std::fs::read_to_string(&config)?.parse()?;
            let http = table["http"].as_table_mut().expect("[http]");
            http.insert("tls_cert".into(), cert.display().to_string().into());
            http.insert("tls_key".into(), key.display().to_string().into());
            std::fs::write(&config, toml::to_string(&table)?)?;
            let _ = TLS.set(sluice_tests::live::tls_connector(&ca));
        }
        let (address, stop, task) = start_serving(&config).await;
        let started = Instant::now();
        if options.embedded {
            ingest_all(address, &live, options.events).await;
            eprintln!(
                "ingested {} events over HTTP in {:.2} s",
                options.events,
                started.elapsed().as_secs_f64()
            );
        } else {
            let js = live.jetstream().await;
            crate::pipeline::publish_all(&js, &live, options.events).await;
        }
        while !loaded(address, &live, &options).await {
            if started.elapsed() > Duration::from_secs(300) {
                anyhow::bail!("the pipeline did not apply the events in time");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed().as_secs_f64();
        let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "lookups over HTTP ({}), {} events of 10k users loaded in {took:.1} s ({:.0} events/s end to end), {}s per row; load average before: {}",
            match (options.embedded, options.tls) {
                (true, false) => "embedded mode: one redb file, events ingested over HTTP in 200-event bodies",
                (true, true) => "HTTPS, TLS 1.3; embedded mode: one redb file, events ingested in 200-event bodies",
                (false, false) => "NATS JetStream and Redis",
                (false, true) => "HTTPS, TLS 1.3; NATS JetStream and Redis",
            },
            options.events,
            options.events as f64 / took,
            options.seconds,
            load_average.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
        if options.capture {
            println!("| request (8 clients) | requests/s | p50 | p90 | p99 |");
            println!("|---|---|---|---|---|");
            for round in 0..3 {
                ROUND.store(round, std::sync::atomic::Ordering::Relaxed);
                for (label, make) in [
                    ("1 entity, capture off", plain as fn(u64) -> Vec<u8>),
                    ("1 entity, capture on", captured),
                ] {
                    let l = load(address, 8, options.seconds, make).await;
                    println!("| {label} | {} |", l.cells());
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let request = format!("GET /v1/models HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
            let mut connection = Connection::open(address).await;
            connection.request(request.as_bytes()).await;
            let models: serde_json::Value = serde_json::from_slice(&connection.body).unwrap_or_default();
            println!(
                "captured records stored: {}, lost: {}",
                models["models"][0]["captured"], models["models"][0]["capture_lost"]
            );
            stop.send(true).unwrap();
            task.await?;
            if !options.embedded {
                live.cleanup().await;
            }
            return Ok(());
        }
        println!("| request | clients | requests/s | p50 | p90 | p99 | Redis HGETALL floor: p50 / p99, requests/s |");
        println!("|---|---|---|---|---|---|---|");
        let key = format!("{}:{}:v1:{{u0}}", live.prefix, live.set);
        for (label, make) in [
            ("single entity (GET)", single as fn(u64) -> Vec<u8>),
            ("100 entities (POST)", batch),
        ] {
            for clients in [1, 8, 64] {
                let l = load(address, clients, options.seconds, make).await;
                let floor = if label.starts_with("single") && !options.embedded {
                    redis_floor(&key, clients).map_or("-".to_string(), |(rps, p50, p99)| {
                        format!("{:.3} / {:.3} ms, {rps:.0}/s", p50, p99)
                    })
                } else {
                    "-".to_string()
                };
                println!("| {label} | {clients} | {} | {floor} |", l.cells());
            }
        }
        stop.send(true).unwrap();
        task.await?;
        if !options.embedded {
            live.cleanup().await;
        }
        Ok(())
    })
}

/// The config without NATS and Redis: the embedded mode, its file in the test folder.
fn embedded_config(path: &std::path::Path) {
    let mut config: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let host = config["host"].as_table_mut().unwrap();
    host.remove("nats");
    host.remove("redis");
    host.insert(
        "data_dir".into(),
        path.parent().unwrap().join("data").display().to_string().into(),
    );
    std::fs::write(path, toml::to_string(&config).unwrap()).unwrap();
}

/// Pushes the pipeline benchmark's events over HTTP, 200 per body (under the 64 KiB limit),
/// from 4 connections.
async fn ingest_all(address: SocketAddr, live: &Live, events: u64) {
    let set = live.set.clone();
    let mut tasks = Vec::new();
    for lane in 0..4u64 {
        let set = set.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(address).await;
            let mut first = lane * 200;
            while first < events {
                let last = (first + 200).min(events);
                let body: Vec<u8> = (first..last)
                    .flat_map(|i| {
                        let mut line: Vec<u8> = crate::pipeline::transaction(i, None);
                        line.push(b'\n');
                        line
                    })
                    .collect();
                let mut request = format!(
                    "POST /v1/ingest/{set} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                request.extend_from_slice(&body);
                assert_eq!(connection.request(&request).await, 202, "ingest");
                first += 800;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Whether every event is applied: Redis's applied sequence, or (embedded) the set's
/// consumer has nothing pending.
async fn loaded(address: SocketAddr, live: &Live, options: &Options) -> bool {
    if !options.embedded {
        return crate::pipeline::applied(&live.prefix, &live.set).await >= options.events;
    }
    let request = format!(
        "GET /v1/feature-sets/{} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        live.set
    );
    let mut connection = Connection::open(address).await;
    connection.request(request.as_bytes()).await;
    let described: serde_json::Value = serde_json::from_slice(&connection.body).unwrap_or_default();
    described["versions"][0]["lag"]["pending"] == serde_json::json!(0)
}
