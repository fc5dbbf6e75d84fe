//! The streaming pipeline against the real NATS JetStream and Redis: every event lands
//! exactly once in Redis and Parquet, poison goes to the dead-letter subject with its reason,
//! and shutdown leaves nothing uncommitted.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value as Json;
use sluice_tests::live::{
    check_windows, expected_windows, kept, parquet_rows, rate, start, transaction, wait_for, Live,
};
use tokio::sync::watch;

/// Expected online values: per user, the kept transaction with the latest (ts, seq).
fn expected_latest(events: &[Json]) -> HashMap<String, (u64, &Json)> {
    let mut latest: HashMap<String, (u64, &Json)> = HashMap::new();
    for (i, e) in events.iter().enumerate().filter(|(_, e)| kept(e)) {
        let seq = i as u64 + 1;
        let user = e["user_id"].as_str().unwrap().to_string();
        let newer = |(s, old): &(u64, &Json)| (e["ts"].as_i64(), seq) > (old["ts"].as_i64(), *s);
        if latest.get(&user).is_none_or(newer) {
            latest.insert(user, (seq, e));
        }
    }
    latest
}

/// Checks Redis and Parquet against the events: every kept event once, the latest per user,
/// and the aggregates of every row.
async fn check_outputs(live: &Live, events: &[Json]) {
    let expected = expected_latest(events);
    let windows = expected_windows(events);
    let hashes = live.hashes().await;
    assert_eq!(
        hashes.len(),
        expected.len(),
        "one hash per user with a kept transaction"
    );
    for (user, (seq, e)) in &expected {
        let hash = &hashes[user];
        assert_eq!(hash["_seq"], seq.to_string(), "user {user}: latest row by event time");
        let usd: f64 = hash["amount_usd"].parse().unwrap();
        assert_eq!(
            usd,
            e["amount"].as_f64().unwrap() * rate(e["currency"].as_str().unwrap()).unwrap()
        );
        assert_eq!(hash["is_foreign"], (e["country"] != "US").to_string());
        assert!(
            !hash.contains_key("tx_count_1h"),
            "aggregates live in tiles, not in the row"
        );
    }
    // Online reads evaluate the windows from the tiles: at each user's latest event time they
    // count every kept event of the user inside the window (including any received after it
    // with an earlier time).
    let config = sluice::config::load(&live.dir.path().join("sluice.toml")).unwrap();
    let view = sluice::online::OnlineView::new(&live.prefix, &config.feature_sets[0]).unwrap();
    let users: Vec<&str> = expected.keys().map(String::as_str).collect();
    let store = live.store().await;
    let mut all: HashMap<&str, Vec<(i64, f64)>> = HashMap::new();
    for e in events.iter().filter(|e| kept(e)) {
        let usd = e["amount"].as_f64().unwrap() * rate(e["currency"].as_str().unwrap()).unwrap();
        all.entry(e["user_id"].as_str().unwrap())
            .or_default()
            .push((e["ts"].as_i64().unwrap() * 1000, usd));
    }
    for chunk in users.chunks(500) {
        let at = |u: &str| expected[u].1["ts"].as_i64().unwrap() * 1000;
        for (user, row) in chunk.iter().zip(view.read(&store, chunk, at(chunk[0])).await.unwrap()) {
            // Read again at this user's own latest time.
            let row = if at(user) == at(chunk[0]) {
                row.unwrap()
            } else {
                view.read(&store, &[user], at(user))
                    .await
                    .unwrap()
                    .pop()
                    .unwrap()
                    .unwrap()
            };
            let now = at(user).div_euclid(600_000_000);
            let hour = all[user]
                .iter()
                .filter(|x| (now - 5..=now).contains(&x.0.div_euclid(600_000_000)));
            assert_eq!(
                row.values["tx_count_1h"],
                sluice::event::Value::Integer(hour.count() as i64),
                "{user}"
            );
        }
    }
    let rows = parquet_rows(&live.offline_dir());
    let kept_seqs: Vec<u64> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| kept(e))
        .map(|(i, _)| i as u64 + 1)
        .collect();
    let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seqs.len(), kept_seqs.len(), "exactly one Parquet row per kept event");
    assert_eq!(seqs, kept_seqs);
    let (seq, key, ts, values) = &rows[rows.len() / 2];
    let e = &events[*seq as usize - 1];
    assert_eq!(key, e["user_id"].as_str().unwrap());
    assert_eq!(*ts, e["ts"].as_i64().unwrap() * 1000);
    assert!(values["amount_usd"].is_f64() && values["amount_cents"].is_i64() && values["is_foreign"].is_boolean());
    assert_eq!(values["transaction_id"], e["transaction_id"]);
    for (seq, _, _, values) in &rows {
        check_windows(*seq, values, &windows[seq]);
    }
}

/// Waits until the pipeline has applied input sequence `last` and Parquet holds `rows` rows,
/// then stops it gracefully.
async fn drain_and_stop(
    live: &Live,
    last: u64,
    rows: usize,
    timeout: Duration,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
) {
    live.wait_drained(last, rows, timeout).await;
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_events_land_once_in_redis_and_parquet() {
    let live = Live::new("flow");
    let config = live.write_config();
    let n = 100_000u64;
    let events: Vec<Json> = (0..n).map(transaction).collect();
    live.publish_json(&events).await;
    let (stop, task) = start(&live, &config);
    let expected_rows = events.iter().filter(|e| kept(e)).count();
    drain_and_stop(&live, n, expected_rows, Duration::from_secs(240), stop, task).await;
    check_outputs(&live, &events).await;
    // The config's `ttl` (30d) is each entity hash's expiry, set when it was written.
    let mut redis = live.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{}:v1:{{*", live.prefix, live.set))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let thirty_days: i64 = 30 * 24 * 3_600_000;
    for key in keys.iter().take(50) {
        let pttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut redis).await.unwrap();
        assert!(
            thirty_days - 600_000 < pttl && pttl <= thirty_days,
            "{key}: PTTL {pttl} ms, expected the config's ttl of 30d"
        );
    }
    let letters = live.dead_letters().await;
    let unknown: HashSet<u64> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| rate(e["currency"].as_str().unwrap()).is_none())
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert_eq!(
        letters.len(),
        unknown.len(),
        "every unknown currency, and nothing else, is a dead letter"
    );
    for (reason, step, seq, body) in &letters {
        assert!(unknown.contains(seq));
        assert_eq!(step, "to_usd");
        assert!(reason.starts_with("unknown currency"), "{reason}");
        assert_eq!(
            serde_json::from_slice::<Json>(body).unwrap(),
            events[*seq as usize - 1],
            "original bytes kept"
        );
    }
    live.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_poison_goes_to_the_dead_letter_subject_and_the_rest_flows() {
    let live = Live::new("poison");
    let config = live.write_config();
    let good = |i: u64| {
        let event = serde_json::json!({"transaction_id": i, "user_id": format!("u{i}"), "amount": 10.0, "currency": "EUR", "merchant": "m", "country": "US", "ts": 1_764_000_000_000i64 + i as i64});
        serde_json::to_vec(&event).unwrap()
    };
    let poison: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"{not json".to_vec(), "decode", "invalid JSON"),
        (
            br#"{"amount": 1, "currency": "EUR", "ts": 1}"#.to_vec(),
            "decode",
            "missing entity key field \"user_id\"",
        ),
        (
            br#"{"user_id": "x", "amount": 1, "currency": "EUR"}"#.to_vec(),
            "decode",
            "missing event time field \"ts\"",
        ),
        (
            br#"{"user_id": "x", "amount": 1, "currency": 5, "ts": 1}"#.to_vec(),
            "to_usd",
            "field \"currency\" must be text",
        ),
        (
            br#"{"user_id": "x", "amount": "ten", "currency": "EUR", "ts": 1}"#.to_vec(),
            "to_usd",
            "field \"amount\" must be a number",
        ),
        (
            format!(r#"{{"user_id": "x", "ts": 1, "pad": "{}"}}"#, "p".repeat(100_000)).into_bytes(),
            "decode",
            "larger than max_event_bytes",
        ),
        (
            br#"{"user_id": "x", "amount": 1e300, "currency": "USD", "country": "US", "ts": 1}"#.to_vec(),
            "derived",
            "amount_cents",
        ),
    ];
    let mut events = Vec::new();
    for (i, (bad, _, _)) in poison.iter().enumerate() {
        events.push(good(i as u64 * 2));
        events.push(bad.clone());
    }
    events.push(good(1000));
    live.publish(&events).await;
    let (stop, task) = start(&live, &config);
    let n = events.len() as u64;
    wait_for("every event applied", Duration::from_secs(60), async || {
        live.applied().await == n
    })
    .await;
    wait_for("every dead letter", Duration::from_secs(10), async || {
        live.dead_letters().await.len() >= poison.len()
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let letters = live.dead_letters().await;
    assert_eq!(letters.len(), poison.len());
    for (k, (bad, step, reason)) in poison.iter().enumerate() {
        let seq = (k as u64) * 2 + 2;
        let letter = letters
            .iter()
            .find(|l| l.2 == seq)
            .unwrap_or_else(|| panic!("no dead letter for seq {seq}"));
        assert_eq!(letter.1, *step, "seq {seq}");
        assert!(letter.0.contains(reason), "seq {seq}: {}", letter.0);
        assert_eq!(&letter.3, bad, "the original bytes");
    }
    // An event counts in the aggregates once it has passed the aggregate step: the one that
    // fails in `derived` after it leaves tiles, but no row.
    let rows = live
        .hashes()
        .await
        .into_values()
        .filter(|h| h.contains_key("_ts"))
        .count();
    assert_eq!(rows, poison.len() + 1, "every good event around the poison is online");
    // Plugins' `lookup` reads the same online values.
    use sluice::plugin::OnlineLookup;
    let store = std::sync::Arc::new(live.store().await);
    let lookup = sluice::pipeline::StoreLookup::new(&sluice::config::load(&config).unwrap(), store).unwrap();
    let found = tokio::task::spawn_blocking({
        let set = live.set.clone();
        move || lookup.lookup(&set, &["u0".to_string(), "nobody".to_string()]).unwrap()
    })
    .await
    .unwrap();
    let u0 = found[0].as_ref().expect("u0 is online");
    let usd = u0.iter().find(|f| f.name == "amount_usd").unwrap();
    assert_eq!(usd.value, sluice::event::Value::Float(10.0 * 1.08));
    assert!(found[1].is_none());
    live.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_commits_everything_it_has_taken() {
    let live = Live::new("stop");
    // A long roll period: only the shutdown can commit the Parquet rows in time.
    let config = live.write_config_with(3600);
    let events: Vec<Json> = (0..5_000).map(transaction).collect();
    live.publish_json(&events).await;
    let (stop, task) = start(&live, &config);
    wait_for("every event applied", Duration::from_secs(60), async || {
        live.applied().await == 5_000
    })
    .await;
    assert!(
        parquet_rows(&live.offline_dir()).is_empty(),
        "nothing committed before the roll period"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
    check_outputs(&live, &events).await;
    let offline = format!("sluice-offline-{}-v1", live.set);
    assert_eq!(
        live.consumer_backlog(&live.features, &offline).await,
        (0, 0),
        "offline writer acknowledged all"
    );
    let online = format!("sluice-{}-v1", live.set);
    assert_eq!(
        live.consumer_backlog(&live.stream, &online).await,
        (0, 0),
        "pipeline acknowledged all"
    );
    live.cleanup().await;
}

/// Not a test on its own: the body of the child process that the kill test starts and kills
/// (`SLUICE_CHILD_CONFIG` names its config). It runs `sluice run` as the binary does.
#[test]
#[ignore]
fn child_pipeline() {
    sluice_tests::live::run_child_from_env();
}

fn spawn_child(config: &std::path::Path) -> sluice_tests::live::Child {
    sluice_tests::live::spawn_child("child_pipeline", config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_sigkill_at_random_points_and_restarted_nothing_is_lost_or_doubled() {
    let live = Live::new("kill");
    let config = live.write_config();
    let n = 100_000u64;
    let events: Vec<Json> = (0..n).map(transaction).collect();
    let bodies: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
    let publisher = {
        let live_subject = (live.stream.clone(), live.subject.clone());
        let bodies = bodies.clone();
        tokio::spawn(async move {
            let js = async_nats::jetstream::new(async_nats::connect(sluice_tests::live::NATS).await.unwrap());
            let config = async_nats::jetstream::stream::Config {
                name: live_subject.0,
                subjects: vec![live_subject.1.clone()],
                ..Default::default()
            };
            js.get_or_create_stream(config).await.unwrap();
            for chunk in bodies.chunks(2_000) {
                let mut acks = Vec::new();
                for b in chunk {
                    acks.push(js.publish(live_subject.1.clone(), b.clone().into()).await.unwrap());
                }
                for a in acks {
                    a.await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let js = live.jetstream().await;
    let durable = format!("sluice-{}-v1", live.set);
    let mut killed_holding_a_batch = 0;
    for round in 0..5 {
        let mut child = spawn_child(&config);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = Duration::from_millis(300 + seed % 1200);
        tokio::time::sleep(after).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Messages delivered to the dead process and not acknowledged: it died with a batch in
        // hand (taken, maybe written, not committed), the case a restart must not double.
        let in_hand = match js.get_stream(&live.stream).await {
            Ok(stream) => stream.consumer_info(&durable).await.map_or(0, |i| i.num_ack_pending),
            Err(_) => 0,
        };
        if in_hand > 0 {
            killed_holding_a_batch += 1;
        }
        eprintln!(
            "round {round}: killed after {after:?}, applied {}, {in_hand} messages in hand",
            live.applied().await
        );
    }
    assert!(
        killed_holding_a_batch > 0,
        "at least one SIGKILL lands while the pipeline holds an unacknowledged batch"
    );
    publisher.await.unwrap();
    let mut child = spawn_child(&config);
    let expected_rows = events.iter().filter(|e| kept(e)).count();
    live.wait_drained(n, expected_rows, Duration::from_secs(240)).await;
    // SIGTERM: graceful stop.
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "a graceful stop exits 0");
    check_outputs(&live, &events).await;
    live.cleanup().await;
}

/// Which server a test owns.
#[derive(Clone, Copy)]
enum Server {
    /// redis-server, keeping its data in the folder across a stop (saved on shutdown).
    Redis,
    /// nats-server with JetStream file storage in the folder.
    Nats,
}

/// A server owned by one test, on its own port, with its data in a folder, so it can be
/// stopped and started again without losing its data.
struct OwnServer {
    kind: Server,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnServer {
    fn start(kind: Server) -> OwnServer {
        let port = sluice_tests::live::restart_port();
        let mut server = OwnServer {
            kind,
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        server
    }

    fn restart(&mut self) {
        let (port, dir) = (self.port.to_string(), self.dir.path().display().to_string());
        let (program, args) = match self.kind {
            Server::Redis => (
                "redis-server",
                vec![
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &dir,
                ],
            ),
            Server::Nats => ("nats-server", vec!["-a", "127.0.0.1", "-p", &port, "-js", "-sd", &dir]),
        };
        let child = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{program} on port {} did not start", self.port);
    }

    /// Stops the server as an operator would (Redis saves its data first).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        match self.kind {
            Server::Redis => {
                let _ = std::process::Command::new("redis-cli")
                    .args(["-p", &self.port.to_string(), "shutdown", "save"])
                    .output();
            }
            Server::Nats => {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
            }
        }
        child.wait().unwrap();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stops a service for 3 s while the pipeline is busy (Redis: events keep arriving on NATS;
/// NATS: stopped while the pipeline works through a backlog, batches in hand), then checks
/// that nothing was lost.
async fn outage_mid_stream(kind: Server) {
    let mut server = OwnServer::start(kind);
    let mut live = Live::new("outage");
    match kind {
        Server::Redis => live.redis_url = format!("redis://127.0.0.1:{}/0", server.port),
        Server::Nats => live.nats_url = format!("nats://127.0.0.1:{}", server.port),
    }
    let config = live.write_config();
    let n = match kind {
        Server::Redis => 30_000u64,
        // A backlog the pipeline needs seconds for on this machine (30k–50k events/s).
        Server::Nats => 100_000u64,
    };
    let events: Vec<Json> = (0..n).map(transaction).collect();
    let bodies: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
    match kind {
        Server::Redis => live.publish(&bodies[..10_000]).await,
        Server::Nats => live.publish(&bodies).await,
    }
    let (stop, task) = start(&live, &config);
    let first = match kind {
        Server::Redis => 10_000,
        Server::Nats => 5_000,
    };
    wait_for("the first events applied", Duration::from_secs(60), async || {
        live.applied().await >= first
    })
    .await;
    server.stop();
    if let Server::Nats = kind {
        let applied = live.applied().await;
        assert!(
            applied < n,
            "NATS stopped while the pipeline was busy (applied {applied} of {n})"
        );
    }
    if let Server::Redis = kind {
        live.publish(&bodies[10_000..]).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    let expected_rows = events.iter().filter(|e| kept(e)).count();
    drain_and_stop(&live, n, expected_rows, Duration::from_secs(120), stop, task).await;
    check_outputs(&live, &events).await;
    live.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_seconds_mid_stream_pauses_the_pipeline_and_nothing_is_lost() {
    outage_mid_stream(Server::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_for_seconds_mid_stream_pauses_the_pipeline_and_nothing_is_lost() {
    outage_mid_stream(Server::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_set_reads_another_sets_rows_through_jetstream() {
    let live = Live::new("chain");
    let config = live.write_config();
    let chained = format!("{}m", live.set);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        r#"
[[feature_set]]
name = "{chained}"
entity = "merchant"
timestamp = {{ field = "ts" }}
source = {{ kind = "feature_set", name = "{set}" }}

[[feature_set.steps]]
id = "big"
kind = "map"
fields = {{ big = "amount_usd > 100.0" }}

[[feature_set.targets]]
kind = "redis"
"#,
        set = live.set
    ));
    std::fs::write(&config, text).unwrap();
    let events: Vec<Json> = (0..20_000).map(transaction).collect();
    live.publish_json(&events).await;
    // Expected: per merchant, its kept transaction with the latest (ts, seq).
    let mut expected: HashMap<String, (i64, usize)> = HashMap::new();
    for (i, e) in events.iter().enumerate().filter(|(_, e)| kept(e)) {
        let m = e["merchant"].as_str().unwrap().to_string();
        let at = (e["ts"].as_i64().unwrap(), i);
        if expected.get(&m).is_none_or(|old| at > *old) {
            expected.insert(m, at);
        }
    }
    let (stop, task) = start(&live, &config);
    let merchants = |live: &Live| {
        let mut other = Live::new("view");
        other.set = chained.clone();
        other.prefix = live.prefix.clone();
        other
    };
    let view = merchants(&live);
    wait_for("every merchant online", Duration::from_secs(60), async || {
        let hashes = view.hashes().await;
        hashes.len() == expected.len()
            && expected
                .iter()
                .all(|(m, (_, i))| hashes.get(m).is_some_and(|h| h["transaction_id"] == i.to_string()))
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let hashes = view.hashes().await;
    assert_eq!(hashes.len(), expected.len(), "one hash per merchant");
    for (m, (_, i)) in &expected {
        let e = &events[*i];
        assert_eq!(
            hashes[m]["transaction_id"],
            e["transaction_id"].to_string(),
            "merchant {m}: its latest transaction"
        );
        let usd = e["amount"].as_f64().unwrap() * rate(e["currency"].as_str().unwrap()).unwrap();
        assert_eq!(hashes[m]["big"], (usd > 100.0).to_string());
    }
    live.cleanup().await; // both sets' keys share the test's prefix
}

/// The fraud config with a file source instead of JetStream.
fn file_config(live: &Live, file: &std::path::Path) -> std::path::PathBuf {
    let file = file.display().to_string();
    live.write_fraud_config(move |set| {
        let mut source = toml::Table::new();
        source.insert("kind".into(), "file".into());
        source.insert("path".into(), file.into());
        set.insert("source".into(), source.into());
        for target in set["targets"].as_array_mut().unwrap() {
            let target = target.as_table_mut().unwrap();
            if target["kind"].as_str() == Some("parquet") {
                target.insert("roll_seconds".into(), 1.into());
            }
        }
    })
}

async fn run_until_applied(live: &Live, config: &std::path::Path, last: u64, rows: usize) {
    let (stop, task) = start(live, config);
    drain_and_stop(live, last, rows, Duration::from_secs(60), stop, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_file_runs_through_the_same_graph_and_a_second_run_writes_nothing_twice() {
    let live = Live::new("jsonl");
    let events: Vec<Json> = (0..5_000).map(transaction).collect();
    let path = live.dir.path().join("events.jsonl");
    std::fs::write(&path, events.iter().map(|e| e.to_string() + "\n").collect::<String>()).unwrap();
    let config = file_config(&live, &path);
    let rows = events.iter().filter(|e| kept(e)).count();
    run_until_applied(&live, &config, 5_000, rows).await;
    check_outputs(&live, &events).await;
    // The file grows by 1,000 lines; the second run reads it from the start, so it can only
    // reach the new lines through the 5,000 it has already written: each row still once.
    let events: Vec<Json> = (0..6_000).map(transaction).collect();
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    use std::io::Write;
    for e in &events[5_000..] {
        writeln!(file, "{e}").unwrap();
    }
    drop(file);
    let rows = events.iter().filter(|e| kept(e)).count();
    run_until_applied(&live, &config, 6_000, rows).await;
    check_outputs(&live, &events).await;
    live.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_parquet_files_are_read_with_their_types() {
    use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
    let events: Vec<Json> = (0..2_000).map(transaction).filter(|e| !e["amount"].is_null()).collect();
    let expected = expected_latest(&events);
    let columns = [
        "transaction_id",
        "user_id",
        "amount",
        "currency",
        "merchant",
        "country",
        "ts",
    ];
    // CSV, with a header line.
    let live = Live::new("csv");
    let path = live.dir.path().join("events.csv");
    let mut text = columns.join(",") + "\n";
    for e in &events {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match &e[*c] {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        text += &(cells.join(",") + "\n");
    }
    std::fs::write(&path, text).unwrap();
    let config = file_config(&live, &path);
    let rows = events.iter().filter(|e| kept(e)).count();
    run_until_applied(&live, &config, events.len() as u64 + 1, rows).await;
    // Values, not only hashes: CSV cells are text, read as the declared types (the amount a
    // number the plugin converts, the id an integer); line 1 is the header, so event i is
    // line i + 2.
    let hashes = live.hashes().await;
    assert_eq!(hashes.len(), expected.len());
    for (user, (seq, e)) in &expected {
        let hash = &hashes[user];
        assert_eq!(
            hash["_seq"],
            (seq + 1).to_string(),
            "user {user}: latest row by event time"
        );
        let usd: f64 = hash["amount_usd"].parse().unwrap();
        let want = e["amount"].as_f64().unwrap() * rate(e["currency"].as_str().unwrap()).unwrap();
        assert_eq!(usd, want, "user {user}");
        assert_eq!(hash["is_foreign"], (e["country"] != "US").to_string());
    }
    let parquet = parquet_rows(&live.offline_dir());
    assert_eq!(parquet.len(), rows, "one Parquet row per kept event");
    for (seq, key, ts, values) in &parquet {
        let e = &events[*seq as usize - 2];
        assert_eq!(key, e["user_id"].as_str().unwrap());
        assert_eq!(*ts, e["ts"].as_i64().unwrap() * 1000);
        assert_eq!(
            values["transaction_id"], e["transaction_id"],
            "an integer, as in the events"
        );
    }
    live.cleanup().await;
    // Parquet.
    let live = Live::new("pq");
    let path = live.dir.path().join("events.parquet");
    let ints = |c: &str| {
        std::sync::Arc::new(Int64Array::from_iter_values(
            events.iter().map(|e| e[c].as_i64().unwrap()),
        )) as _
    };
    let texts = |c: &str| {
        std::sync::Arc::new(StringArray::from_iter_values(
            events.iter().map(|e| e[c].as_str().unwrap().to_string()),
        )) as _
    };
    let amounts = std::sync::Arc::new(Float64Array::from_iter_values(
        events.iter().map(|e| e["amount"].as_f64().unwrap()),
    )) as _;
    let batch = RecordBatch::try_from_iter(vec![
        ("transaction_id", ints("transaction_id")),
        ("user_id", texts("user_id")),
        ("amount", amounts),
        ("currency", texts("currency")),
        ("merchant", texts("merchant")),
        ("country", texts("country")),
        ("ts", ints("ts")),
    ])
    .unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let config = file_config(&live, &path);
    run_until_applied(&live, &config, events.len() as u64, rows).await;
    check_outputs(&live, &events).await;
    live.cleanup().await;
}
