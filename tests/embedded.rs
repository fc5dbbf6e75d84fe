//! The embedded single-process mode: the fraud example with no NATS and no Redis configured
//! runs on one redb file, events pushed over HTTP. Every kept event lands exactly once in
//! Parquet with the same aggregates as a recomputation from the raw events, across a
//! restart; lookups read the same windows; failed events are readable as dead letters with
//! their reason; and `sluice demo` runs end to end in this mode.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value as Json};
use sluice_tests::live::{
    check_windows, expected_windows, http, http_bytes, kept, parquet_rows, start_serving, transaction, wait_for,
    with_http,
};

const ADMIN: &str = "embedded-admin-token";

/// The fraud example without NATS and Redis, its data in `dir`, an HTTP API on a free port.
fn embedded_config(dir: &Path) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fraud/sluice.toml");
    let mut config: toml::Table = std::fs::read_to_string(example).unwrap().parse().unwrap();
    let host = config["host"].as_table_mut().unwrap();
    host.remove("nats");
    host.remove("redis");
    host.insert("data_dir".into(), dir.join("data").display().to_string().into());
    config["plugins"].as_table_mut().unwrap().insert(
        "currency".into(),
        sluice_tests::rust_plugin("currency").display().to_string().into(),
    );
    let set = config["feature_set"].as_array_mut().unwrap()[0].as_table_mut().unwrap();
    set["source"]
        .as_table_mut()
        .unwrap()
        .insert("max_wait_ms".into(), 5.into());
    for target in set["targets"].as_array_mut().unwrap() {
        let target = target.as_table_mut().unwrap();
        if target["kind"].as_str() == Some("parquet") {
            target.insert("root".into(), dir.join("offline").display().to_string().into());
            target.insert("roll_seconds".into(), 1.into());
        }
    }
    let path = dir.join("sluice.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    with_http(&path, &[("admin", ADMIN, &["admin"], &[])]);
    path
}

/// Pushes events over HTTP in bodies under the 64 KiB limit.
async fn ingest(address: std::net::SocketAddr, events: &[Json]) {
    for chunk in events.chunks(200) {
        let body = serde_json::to_vec(chunk).unwrap();
        let (status, answer) = http(address, "POST", "/v1/ingest/transactions", Some(ADMIN), &body).await;
        assert_eq!(status, 202, "{answer}");
    }
}

/// Waits until the set's consumer has taken everything pushed.
async fn drained(address: std::net::SocketAddr) {
    wait_for("the embedded log drained", Duration::from_secs(60), async || {
        let (_, body) = http(address, "GET", "/v1/feature-sets/transactions", Some(ADMIN), b"").await;
        let described: Json = serde_json::from_str(&body).unwrap_or_default();
        described["versions"][0]["lag"]["pending"] == json!(0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fraud_example_runs_in_one_process_on_one_file_exactly_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded_config(dir.path());
    let events: Vec<Json> = (0..4000).map(transaction).collect();

    let (address, stop, task) = start_serving(&config).await;
    wait_for("the pipelines ready", Duration::from_secs(30), async || {
        http(address, "GET", "/readyz", Some(ADMIN), b"").await.0 == 200
    })
    .await;
    let (status, body) = http(address, "GET", "/readyz", Some(ADMIN), b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"mode\":\"embedded\""), "{body}");
    ingest(address, &events[..2500]).await;
    drained(address).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    // A restart resumes after what was applied: nothing lost, nothing twice.
    let (address, stop, task) = start_serving(&config).await;
    ingest(address, &events[2500..]).await;
    drained(address).await;

    // Lookups evaluate the windows as of the time asked: at the last event of a user, the
    // same count as that event's own row.
    let windows = expected_windows(&events);
    let (last, event) = events.iter().enumerate().rev().find(|(_, e)| kept(e)).unwrap();
    let user = event["user_id"].as_str().unwrap();
    let at = event["ts"].as_i64().unwrap();
    let (status, body) = http(
        address,
        "GET",
        &format!("/v1/features/transactions/{user}?at={at}"),
        Some(ADMIN),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let found: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        found["features"]["tx_count_1h"]["value"],
        json!(windows[&(last as u64 + 1)].count_1h),
        "{body}"
    );
    // A millisecond before that event the embedded store, like Redis, holds a later row: the
    // lookup is refused, single and batched, never answered with the later value.
    let (status, body) = http(
        address,
        "GET",
        &format!("/v1/features/transactions/{user}?at={}", at - 1),
        Some(ADMIN),
        b"",
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let batched = json!({"entities": [user], "features": ["transactions:tx_count_1h"], "at": at - 1});
    let (status, body) = http(
        address,
        "POST",
        "/v1/features/lookup",
        Some(ADMIN),
        batched.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let batched: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        batched["results"][0]["features"]["transactions:tx_count_1h"],
        json!({"value": null, "status": "unavailable_at"}),
        "{body}"
    );

    // Failed events are kept with their reason, readable over HTTP, page by page.
    let poison: Vec<u64> = (0..events.len() as u64).filter(|i| i % 97 == 13).collect();
    let (status, body) = http(
        address,
        "GET",
        "/v1/feature-sets/transactions/dead-letters?limit=5",
        Some(ADMIN),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: Json = serde_json::from_str(&body).unwrap();
    let letters = page["messages"].as_array().unwrap();
    assert_eq!(letters.len(), 5, "{body}");
    assert_eq!(letters[0]["input_seq"], json!(poison[0] + 1), "{body}");
    assert!(letters[0]["reason"].as_str().unwrap().contains("XYZ"), "{body}");
    let original: Json = serde_json::from_str(letters[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(original, events[poison[0] as usize]);
    let after = page["next_after"].as_u64().unwrap();
    let (_, body) = http(
        address,
        "GET",
        &format!("/v1/feature-sets/transactions/dead-letters?after={after}&limit=1000"),
        Some(ADMIN),
        b"",
    )
    .await;
    let rest: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(5 + rest["messages"].as_array().unwrap().len(), poison.len(), "{body}");
    // Events the filter dropped (no amount) are counted per step, since this process started.
    let dropped = (2500..events.len() as u64)
        .filter(|i| i % 50 == 7 && i % 97 != 13)
        .count();
    let (_, body) = http(address, "GET", "/v1/feature-sets/transactions", Some(ADMIN), b"").await;
    let described: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        described["versions"][0]["counters"]["filtered"],
        json!({"with_amount": dropped}),
        "{body}"
    );
    let (_, text) = http(address, "GET", "/metrics", Some(ADMIN), b"").await;
    assert!(
        text.contains(&format!(
            "sluice_events_filtered_total{{set=\"transactions@v1\",step=\"with_amount\"}} {dropped}"
        )),
        "{text}"
    );
    let (status, body) = http(
        address,
        "GET",
        "/v1/feature-sets/transactions/dead-letters?kind=nope",
        Some(ADMIN),
        b"",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("expected"), "{body}");

    // The Parquet writer reads the feature rows from their log and commits a part a second.
    let offline = dir.path().join("offline").join("transactions").join("v1");
    let kept_count = events.iter().filter(|e| kept(e)).count();
    wait_for("every row in Parquet", Duration::from_secs(60), async || {
        parquet_rows(&offline).len() >= kept_count
    })
    .await;

    // A training set as an HTTP job: started, polled, downloaded.
    let entity_rows: Vec<Json> = events
        .iter()
        .filter(|e| kept(e))
        .take(50)
        .map(|e| json!({ "user_id": e["user_id"], "t": e["ts"].as_i64().unwrap() + 1 }))
        .collect();
    let request =
        json!({ "entities": entity_rows, "features": ["transactions:amount_usd", "transactions:tx_count_1h"] });
    let (status, body) = http(
        address,
        "POST",
        "/v1/training-sets",
        Some(ADMIN),
        request.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let job: Json = serde_json::from_str(&body).unwrap();
    let poll = job["poll"].as_str().unwrap().to_string();
    let mut done = Json::Null;
    wait_for("the training-set job", Duration::from_secs(30), async || {
        let (_, body) = http(address, "GET", &poll, Some(ADMIN), b"").await;
        done = serde_json::from_str(&body).unwrap_or_default();
        done["status"] != "running"
    })
    .await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["rows"], 50, "{done}");
    let (status, parquet) = http_bytes(address, "GET", done["download"].as_str().unwrap(), Some(ADMIN), b"").await;
    assert_eq!(status, 200);
    assert!(parquet.starts_with(b"PAR1"), "a Parquet file");
    // Its values follow the point-in-time rule: the latest kept event of the user at or
    // before t (ties: the later one), and the 1h count evaluated at t, as online.
    let training = sluice_tests::live::first_batch(bytes::Bytes::from(parquet));
    assert_eq!(training.num_rows(), 50);
    let column = |name: &str| {
        training
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .clone()
    };
    let users = column("user_id");
    let users = users.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
    let usd = column("amount_usd");
    let usd = usd.as_any().downcast_ref::<arrow_array::Float64Array>().unwrap();
    let counts = column("tx_count_1h");
    let counts = counts.as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
    for (i, row) in entity_rows.iter().enumerate() {
        let (user, t) = (row["user_id"].as_str().unwrap(), row["t"].as_i64().unwrap());
        assert_eq!(users.value(i), user, "the entity rows' order is kept");
        let theirs: Vec<&Json> = events
            .iter()
            .filter(|e| kept(e) && e["user_id"] == user && e["ts"].as_i64().unwrap() <= t)
            .collect();
        let latest = theirs.iter().max_by_key(|e| e["ts"].as_i64().unwrap()).unwrap();
        let want = latest["amount"].as_f64().unwrap()
            * sluice_tests::live::rate(latest["currency"].as_str().unwrap()).unwrap();
        assert_eq!(usd.value(i), want, "row {i}: amount_usd of {user} at {t}");
        let tile = |ms: i64| (ms * 1000).div_euclid(600_000_000);
        let in_hour = theirs
            .iter()
            .filter(|e| (tile(t) - 5..=tile(t)).contains(&tile(e["ts"].as_i64().unwrap())))
            .count();
        assert_eq!(counts.value(i), in_hour as i64, "row {i}: tx_count_1h of {user} at {t}");
    }
    let (status, body) = http(
        address,
        "POST",
        "/v1/training-sets",
        Some(ADMIN),
        br#"{"entities": [], "features": ["transactions:amount_usd"]}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(address, "GET", "/v1/training-sets/0123456789abcdef", Some(ADMIN), b"").await;
    assert_eq!(status, 404, "{body}");

    stop.send(true).unwrap();
    task.await.unwrap();
    let rows = parquet_rows(&offline);
    let seqs: HashSet<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seqs.len(), rows.len(), "no row twice");
    let expected: HashSet<u64> = (0..events.len())
        .filter(|&i| kept(&events[i]))
        .map(|i| i as u64 + 1)
        .collect();
    assert_eq!(seqs, expected, "every kept event once");
    for (seq, _, _, values) in &rows {
        check_windows(*seq, values, &windows[seq]);
    }

    // The input log replayed from its start by a backfill, into version 2 (Parquet and the
    // online store): the live rows again, in the live order, bit for bit.
    let options = sluice::offline::backfill::BackfillOptions {
        config: config.clone(),
        set: "transactions".into(),
        version: 2,
        input: Vec::new(),
        from_stream: true,
        online: true,
        batch: 500,
        sort_memory_mb: 1024,
        max_failed: Default::default(),
        quiet: true,
    };
    let report = tokio::task::spawn_blocking(move || sluice::offline::backfill::run(&options).unwrap())
        .await
        .unwrap();
    assert_eq!(report.events, events.len() as u64, "{report:?}");
    let replayed = parquet_rows(&dir.path().join("offline").join("transactions").join("v2"));
    assert_eq!(replayed, rows, "a backfill from the stream gives the live rows");

    // The online store's applied sequence covers every event, in both versions.
    let store = sluice::store::embedded::Embedded::open(&dir.path().join("data").join("sluice.redb")).unwrap();
    use sluice::store::OnlineStore;
    for version in [1, 2] {
        assert_eq!(
            store
                .counter(&format!("sluice:transactions:v{version}:_applied"))
                .await
                .unwrap(),
            events.len() as u64
        );
    }
}

#[test]
fn sluice_demo_runs_without_nats_or_redis() {
    use clap::Parser;
    #[derive(Parser)]
    struct Demo {
        #[command(flatten)]
        options: sluice::cli::demo::DemoOptions,
    }
    let plugin = sluice_tests::rust_plugin("currency");
    let demo = Demo::parse_from([
        "demo",
        "--bind",
        "127.0.0.1:0",
        "--no-serve",
        "--plugin",
        plugin.to_str().unwrap(),
    ]);
    assert!(demo.options.nats.is_none() && demo.options.redis.is_none());
    // The demo monitors itself against its first hour: what it changed in the last hour
    // drifts, what it left alone does not.
    let (code, statuses) = sluice::cli::demo::run_and_report(demo.options).unwrap();
    assert_eq!(code, 0);
    let status = |f: &str| statuses.get(f).map(|s| s.name()).unwrap_or("missing");
    for drifted in ["amount_usd", "country", "is_foreign"] {
        assert_eq!(status(drifted), "drift", "{drifted}: {statuses:?}");
    }
    for steady in ["currency", "merchant"] {
        assert_eq!(status(steady), "ok", "{steady}: {statuses:?}");
    }
}

/// Two sets in the embedded mode: `orders` joins `users` (its tier) by the order's user.
fn join_config(dir: &Path) -> PathBuf {
    let set = |name: &str, entity: &str, fields: &str, steps: &str| {
        format!(
            r#"
[[feature_set]]
name = "{name}"
version = 1
entity = "{entity}"
timestamp = {{ field = "ts", format = "epoch_ms" }}
fields = [{fields}]

[feature_set.source]
kind = "jetstream"
stream = "{name}"
subject = "in.{name}"
max_wait_ms = 5
{steps}
[[feature_set.targets]]
kind = "redis"

[[feature_set.targets]]
kind = "stream"
stream = "{name}_rows"
subject = "rows.{name}"

[[feature_set.targets]]
kind = "parquet"
root = "{root}"
roll_seconds = 1
"#,
            root = dir.join("offline").display()
        )
    };
    let text = format!(
        "[host]\ndata_dir = \"{}\"\n{}{}",
        dir.join("data").display(),
        set("users", "user", "\"user\", \"tier\", \"ts\"", ""),
        set(
            "orders",
            "order",
            "\"order\", \"user\", \"amount\", \"ts\"",
            "\n[[feature_set.steps]]\nid = \"profile\"\nkind = \"join\"\nset = \"users\"\nkey = \"user\"\nfeatures = [\"tier\"]\n"
        )
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    with_http(&path, &[("admin", ADMIN, &["admin"], &[])]);
    path
}

async fn push(address: std::net::SocketAddr, set: &str, events: &[Json]) {
    let body = serde_json::to_vec(events).unwrap();
    let (status, answer) = http(address, "POST", &format!("/v1/ingest/{set}"), Some(ADMIN), &body).await;
    assert_eq!(status, 202, "{answer}");
    wait_for("the set drained", Duration::from_secs(30), async || {
        let (_, body) = http(address, "GET", &format!("/v1/feature-sets/{set}"), Some(ADMIN), b"").await;
        let described: Json = serde_json::from_str(&body).unwrap_or_default();
        described["versions"][0]["lag"]["pending"] == json!(0)
    })
    .await;
}

/// The tier each order got, by order id, from a Parquet folder.
fn tiers(dir: &Path) -> std::collections::BTreeMap<String, Json> {
    parquet_rows(dir)
        .into_iter()
        .map(|(_, key, _, values)| (key, values["tier"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_adds_the_other_sets_features_as_of_each_event_live_and_in_a_backfill() {
    let dir = tempfile::tempdir().unwrap();
    let config = join_config(dir.path());
    let (address, stop, task) = start_serving(&config).await;
    wait_for("the pipelines ready", Duration::from_secs(30), async || {
        http(address, "GET", "/readyz", Some(ADMIN), b"").await.0 == 200
    })
    .await;
    let user = |user: &str, tier: &str, ts: i64| json!({ "user": user, "tier": tier, "ts": ts });
    let order = |id: &str, user: &str, ts: i64| json!({ "order": id, "user": user, "amount": 10.0, "ts": ts });
    // In time order: users, then orders after them, then a user's new tier, then orders.
    push(
        address,
        "users",
        &[user("u1", "gold", 1000), user("u2", "silver", 1000)],
    )
    .await;
    let first = [
        order("o1", "u1", 2000),
        order("o2", "u2", 2000),
        order("o3", "u3", 2000),
    ];
    push(address, "orders", &first).await;
    push(address, "users", &[user("u1", "platinum", 5000)]).await;
    // o5 is late: its time (3000) is before u1's current row (5000).
    let second = [order("o4", "u1", 6000), order("o5", "u1", 3000)];
    push(address, "orders", &second).await;
    let (_, body) = http(address, "GET", "/v1/features/orders/o4", Some(ADMIN), b"").await;
    assert!(body.contains("\"tier\":{\"value\":\"platinum\""), "{body}");
    stop.send(true).unwrap();
    task.await.unwrap();

    let live = tiers(&dir.path().join("offline/orders/v1"));
    let expected = |late: Json| {
        [
            ("o1", json!("gold")),
            ("o2", json!("silver")),
            ("o3", Json::Null),
            ("o4", json!("platinum")),
            ("o5", late),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<std::collections::BTreeMap<_, _>>()
    };
    // Live, the late order gets null: the online row is newer than it, never a future value.
    assert_eq!(live, expected(Json::Null));

    // A backfill of the same orders joins the users' offline rows as of each order's time:
    // the same rows, and the late order gets the tier it had at its time.
    let input = dir.path().join("orders.jsonl");
    let text: String = first.iter().chain(&second).map(|e| format!("{e}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let options = sluice::offline::backfill::BackfillOptions {
        config: config.clone(),
        set: "orders".into(),
        version: 2,
        input: vec![input.display().to_string()],
        from_stream: false,
        online: false,
        batch: 1000,
        sort_memory_mb: 1024,
        max_failed: Default::default(),
        quiet: true,
    };
    tokio::task::spawn_blocking(move || sluice::offline::backfill::run(&options).unwrap())
        .await
        .unwrap();
    assert_eq!(tiers(&dir.path().join("offline/orders/v2")), expected(json!("gold")));
}

/// Not a test on its own: the child process the embedded kill test starts and kills
/// (`SLUICE_CHILD_CONFIG` names its config). It runs `sluice run` as the binary does.
#[test]
#[ignore]
fn embedded_child() {
    sluice_tests::live::run_child_from_env();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_sigkill_mid_batch_and_restarted_the_embedded_mode_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded_config(dir.path());
    // A fixed port for every restart of the child.
    let port = sluice_tests::live::restart_port();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))).unwrap();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let spawn = || sluice_tests::live::spawn_child("embedded_child", &config);
    let ready = async || {
        wait_for(
            "the child serving",
            Duration::from_secs(30),
            async || match tokio::net::TcpStream::connect(address).await {
                Ok(_) => http(address, "GET", "/readyz", Some(ADMIN), b"").await.0 == 200,
                Err(_) => false,
            },
        )
        .await;
    };
    let events: Vec<Json> = (0..12_000).map(transaction).collect();
    // Five rounds: push 2,000 events (each body acknowledged, so stored), then SIGKILL the
    // host at a varying point while it processes them.
    let mut killed_mid_stream = 0;
    for (round, chunk) in events.chunks(2_000).take(5).enumerate() {
        let mut child = spawn();
        ready().await;
        ingest(address, chunk).await;
        tokio::time::sleep(Duration::from_millis(5 + 17 * round as u64)).await;
        let (_, body) = http(address, "GET", "/v1/feature-sets/transactions", Some(ADMIN), b"").await;
        let described: Json = serde_json::from_str(&body).unwrap_or_default();
        if described["versions"][0]["lag"]["pending"].as_u64().unwrap_or(0) > 0 {
            killed_mid_stream += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    eprintln!("kills with events pending: {killed_mid_stream} of 5");
    assert!(
        killed_mid_stream > 0,
        "at least one kill lands while events are pending"
    );
    // The last round runs until every row is in Parquet.
    let mut child = spawn();
    ready().await;
    ingest(address, &events[10_000..]).await;
    drained(address).await;
    let offline = dir.path().join("offline").join("transactions").join("v1");
    let kept_count = events.iter().filter(|e| kept(e)).count();
    wait_for("every row in Parquet", Duration::from_secs(60), async || {
        parquet_rows(&offline).len() >= kept_count
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    let rows = parquet_rows(&offline);
    let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
    let expected: Vec<u64> = (0..events.len())
        .filter(|&i| kept(&events[i]))
        .map(|i| i as u64 + 1)
        .collect();
    assert_eq!(seqs, expected, "every kept event exactly once");
    let windows = expected_windows(&events);
    for (seq, _, _, values) in &rows {
        check_windows(*seq, values, &windows[seq]);
    }
    let store = sluice::store::embedded::Embedded::open(&dir.path().join("data").join("sluice.redb")).unwrap();
    use sluice::store::OnlineStore;
    assert_eq!(
        store.counter("sluice:transactions:v1:_applied").await.unwrap(),
        events.len() as u64
    );
    // Every failed event is a dead letter exactly once: a batch redelivered after a kill
    // publishes its failures again, and the log's duplicate window drops them.
    let letters = store.fetch("sluice.dlq.transactions", 0, 100_000).unwrap();
    let mut failed: Vec<u64> = letters
        .iter()
        .map(|m| {
            let seq = m.headers.iter().find(|(name, _)| name == "Sluice-Seq").unwrap();
            seq.1.parse().unwrap()
        })
        .collect();
    failed.sort();
    let poison: Vec<u64> = (0..events.len() as u64)
        .filter(|i| i % 97 == 13)
        .map(|i| i + 1)
        .collect();
    assert_eq!(failed, poison, "every failed event once in the dead letters");
}
