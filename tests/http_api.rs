//! The HTTP API against a real server (bound to 127.0.0.1:0) with NATS and Redis: ingest
//! feeds the graph, lookups match Redis and the as-of rule, every route refuses a missing or
//! wrong-scope token, bad bodies get 4xx with a clear message.

use std::time::Duration;

use serde_json::{json, Value as Json};
use sluice_tests::live::{http, make_certificate, start_serving, wait_for, with_http, Live};

const READ: &str = "reader-token-1";
const INGEST: &str = "ingest-token-2";
const OTHER_SET: &str = "other-set-token-3";
const ADMIN: &str = "admin-token-5";

/// The fraud example with an HTTP API on a free port and three tokens.
fn serving_config(live: &Live) -> std::path::PathBuf {
    let path = live.write_config();
    let set = live.set.as_str();
    with_http(
        &path,
        &[
            ("reader", READ, &["read"], &[set]),
            ("ingester", INGEST, &["ingest"], &[]),
            ("elsewhere", OTHER_SET, &["read", "ingest"], &["nope"]),
            ("admin", ADMIN, &["admin"], &[]),
        ],
    );
    // The last token names another feature set: add one so the config validates.
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let mut nope = config["feature_set"].as_array().unwrap()[0].clone();
    let nope_table = nope.as_table_mut().unwrap();
    nope_table.insert("name".into(), "nope".into());
    let source = nope_table["source"].as_table_mut().unwrap();
    source.insert("subject".into(), format!("ev.nope.{}", live.id).into());
    source.insert("stream".into(), format!("{}NOPE", live.stream).into());
    nope_table.insert(
        "targets".into(),
        toml::Value::Array(vec![toml::Value::Table(toml::from_str("kind = \"redis\"").unwrap())]),
    );
    config["feature_set"].as_array_mut().unwrap().push(nope);
    let vector: toml::Table = toml::from_str(&format!(
        "name = \"model\"\nfeatures = [\"{set}:tx_count_1h\", \"{set}:amount_usd\"]"
    ))
    .unwrap();
    config.insert("feature_vector".into(), toml::Value::Array(vec![vector.into()]));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path
}

/// Removes what a run of [`serving_config`] made: the test's own names and the second set's
/// input stream.
async fn cleanup_serving(live: &Live) {
    let _ = live
        .jetstream()
        .await
        .delete_stream(format!("{}NOPE", live.stream))
        .await;
    live.cleanup().await;
}

fn tx(id: u64, user: &str, usd: f64, ts: i64) -> Json {
    json!({"transaction_id": id, "user_id": user, "amount": usd, "currency": "USD", "merchant": "m1", "country": "DE", "ts": ts})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_ingest_and_access_control_over_real_http() {
    let live = Live::new("http");
    // The input stream must exist before the pipeline binds its consumer.
    live.publish(&[]).await;
    let config = serving_config(&live);
    let (address, stop, task) = start_serving(&config).await;
    let set = live.set.clone();
    let t = 1_764_000_000_000i64;

    // Ingest: an array, JSON lines and a single object; one line parses but has no entity key
    // (a dead letter).
    let array = serde_json::to_vec(&json!([tx(1, "a", 10.0, t), tx(2, "a", 20.0, t + 60_000)])).unwrap();
    let (status, body) = http(address, "POST", &format!("/v1/ingest/{set}"), Some(INGEST), &array).await;
    assert_eq!(status, 202, "{body}");
    let body: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(body["accepted"], 2);
    let lines = format!(
        "{}\n{{\"amount\": 1}}\n{}\n",
        tx(3, "b", 5.0, t),
        tx(4, "a", 30.0, t + 120_000)
    );
    let (status, body) = http(
        address,
        "POST",
        &format!("/v1/ingest/{set}"),
        Some(INGEST),
        lines.as_bytes(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(serde_json::from_str::<Json>(&body).unwrap()["accepted"], 3);
    let pretty = serde_json::to_vec_pretty(&tx(5, "c", 1.0, t)).unwrap();
    let (status, _) = http(address, "POST", &format!("/v1/ingest/{set}"), Some(INGEST), &pretty).await;
    assert_eq!(status, 202, "a pretty-printed object is one event");
    wait_for("every ingested event applied", Duration::from_secs(30), async || {
        live.applied().await == 6
    })
    .await;
    assert_eq!(live.applied().await, 6);
    let letters = live.dead_letters().await;
    assert_eq!(letters.len(), 1, "the line without a key is a dead letter");
    assert_eq!(letters[0].3, b"{\"amount\": 1}");

    // One entity, as of its latest event: the windows hold its three transactions.
    let at = t + 120_000;
    let (status, body) = http(
        address,
        "GET",
        &format!("/v1/features/{set}/a?at={at}"),
        Some(READ),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let a: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(a["found"], true);
    assert_eq!(a["event_time"], "2025-11-24T16:02:00Z");
    assert_eq!(a["features"]["amount_usd"], json!({"value": 30.0, "status": "present"}));
    assert_eq!(a["features"]["tx_count_1h"]["value"], 3);
    assert_eq!(a["features"]["amount_usd_sum_24h"]["value"], 60.0);
    // As of times before and between its events (t, t+1m, t+2m): the online store holds the
    // row of t+2m, which cannot say what was true then, so the lookup is refused, never
    // answered with a later value. After its latest event it is answered.
    for before in [t - 5_000, t + 30_000, t + 119_999] {
        let path = format!("/v1/features/{set}/a?at={before}");
        let (status, body) = http(address, "GET", &path, Some(READ), b"").await;
        assert_eq!(status, 409, "{path}: {body}");
        assert!(body.contains("training set"), "{body}");
    }
    let (status, body) = http(
        address,
        "GET",
        &format!("/v1/features/{set}/a?at={}", t + 180_000),
        Some(READ),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let later: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        later["features"]["tx_count_1h"],
        json!({"value": 3, "status": "present"})
    );
    // Batched: each (entity, set) is judged by its own row; b's only event is at t.
    let between = json!({"entities": ["a", "b"], "features": [format!("{set}:tx_count_1h")], "at": t + 30_000});
    let (status, body) = http(
        address,
        "POST",
        "/v1/features/lookup",
        Some(READ),
        between.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let between: Json = serde_json::from_str(&body).unwrap();
    let count = |r: usize| between["results"][r]["features"][format!("{set}:tx_count_1h")].clone();
    assert_eq!(
        count(0),
        json!({"value": null, "status": "unavailable_at"}),
        "{between}"
    );
    assert_eq!(count(1), json!({"value": 1, "status": "present"}), "{between}");
    assert!(
        between["unavailable_at"].as_str().unwrap().contains("training set"),
        "{between}"
    );
    // The same entity as of now (a year later): windows empty, and past the 30-day TTL.
    let (_, body) = http(address, "GET", &format!("/v1/features/{set}/a"), Some(READ), b"").await;
    let now: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(now["features"]["tx_count_1h"]["status"], "outside_max_age", "{now}");
    let (_, body) = http(address, "GET", &format!("/v1/features/{set}/nobody"), Some(READ), b"").await;
    let nobody: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (nobody["found"].clone(), nobody["features"].clone()),
        (json!(false), json!({}))
    );

    // Many entities and features in one request.
    let request = json!({
        "entities": ["a", "b", "nobody"],
        "features": [format!("{set}:tx_count_1h"), format!("{set}:amount_usd")],
        "at": "2025-11-24T16:02:00Z",
    });
    let (status, body) = http(
        address,
        "POST",
        "/v1/features/lookup",
        Some(READ),
        request.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let many: Json = serde_json::from_str(&body).unwrap();
    let results = many["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let f = |r: usize, name: &str| results[r]["features"][format!("{set}:{name}")].clone();
    assert_eq!(f(0, "tx_count_1h")["value"], 3);
    assert_eq!(f(1, "tx_count_1h")["value"], 1);
    assert_eq!(f(1, "amount_usd")["value"], 5.0);
    assert_eq!(f(2, "amount_usd")["status"], "not_found");
    // A feature vector of the config names the features instead.
    let by_vector = json!({"entities": ["a"], "vector": "model", "at": "2025-11-24T16:02:00Z"});
    let (status, body) = http(
        address,
        "POST",
        "/v1/features/lookup",
        Some(READ),
        by_vector.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let vector: Json = serde_json::from_str(&body).unwrap();
    let features = vector["results"][0]["features"].as_object().unwrap();
    assert_eq!(features.len(), 2);
    assert_eq!(features[&format!("{set}:tx_count_1h")]["value"], 3);
    let unknown = json!({"entities": ["a"], "vector": "nope"});
    let (status, body) = http(
        address,
        "POST",
        "/v1/features/lookup",
        Some(READ),
        unknown.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // The values are what Redis holds for the row.
    let hashes = live.hashes().await;
    assert_eq!(hashes["b"]["amount_usd"], "5.0");

    // Access control: every route but /healthz wants a token with the right scope.
    let routes: [(&str, String, &[u8]); 6] = [
        ("GET", format!("/v1/features/{set}/a"), b""),
        (
            "POST",
            "/v1/features/lookup".into(),
            request.to_string().leak().as_bytes(),
        ),
        ("POST", format!("/v1/ingest/{set}"), b"{}"),
        ("GET", "/metrics".into(), b""),
        ("GET", "/readyz".into(), b""),
        ("GET", format!("/v1/features/{set}/b"), b""),
    ];
    for (method, path, body) in &routes {
        let (status, text) = http(address, method, path, None, body).await;
        assert_eq!(status, 401, "{method} {path} without a token: {text}");
        assert!(text.contains("bearer token"), "{text}");
        let (status, _) = http(address, method, path, Some("not-a-token"), body).await;
        assert_eq!(status, 401, "{method} {path} with an unknown token");
        let wrong = if path.contains("ingest") { READ } else { INGEST };
        let (status, text) = http(address, method, path, Some(wrong), body).await;
        assert_eq!(status, 403, "{method} {path} with the wrong scope: {text}");
    }
    let (status, text) = http(address, "GET", &format!("/v1/features/{set}/a"), Some(OTHER_SET), b"").await;
    assert_eq!(status, 403, "a token limited to another set");
    assert!(text.contains("not allowed on feature set"), "{text}");
    assert_eq!(
        http(address, "GET", "/healthz", None, b"").await,
        (200, "ok".to_string())
    );
    let (status, text) = http(address, "GET", "/readyz", Some(READ), b"").await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = http(address, "GET", "/metrics", Some(READ), b"").await;
    assert_eq!(status, 200);
    assert!(
        text.contains(&format!("sluice_events_in_total{{set=\"{set}@v1\"}} 6")),
        "{text}"
    );
    assert!(text.contains("sluice_lookup_seconds_count"), "{text}");
    assert!(
        text.contains(&format!("sluice_consumer_pending{{set=\"{set}@v1\"}} 0")),
        "{text}"
    );
    assert!(text.contains("sluice_plugin_events_total{plugin=\"currency@"), "{text}");
    assert!(
        text.contains("sluice_plugin_batch_seconds_count{plugin=\"currency@"),
        "{text}"
    );

    // Bad requests: clear 4xx, nothing ingested.
    for (method, path, body, want, says) in [
        (
            "POST",
            "/v1/features/lookup".to_string(),
            b"{\"entities\": [".to_vec(),
            400,
            "expected {\"entities\"",
        ),
        (
            "POST",
            "/v1/features/lookup".into(),
            br#"{"entities": ["a"], "features": ["nocolon"]}"#.to_vec(),
            400,
            "expected \"set:feature\"",
        ),
        (
            "POST",
            "/v1/features/lookup".into(),
            format!(r#"{{"entities": ["a"], "features": ["{set}:tx_count_1hh", "{set}:amount_usd"]}}"#).into_bytes(),
            400,
            "has no feature \"tx_count_1hh\" (did you mean \"tx_count_1h\"?)",
        ),
        (
            "GET",
            format!("/v1/features/{set}/a?at=yesterday"),
            Vec::new(),
            400,
            "RFC 3339",
        ),
        (
            "GET",
            "/v1/features/missing/a".into(),
            Vec::new(),
            403,
            "not allowed on feature set",
        ),
        (
            "POST",
            format!("/v1/ingest/{set}"),
            b"[1, 2".to_vec(),
            400,
            "not a JSON array",
        ),
        (
            "POST",
            format!("/v1/ingest/{set}"),
            format!("{}\n{{not json\n", tx(7, "a", 1.0, t)).into_bytes(),
            400,
            "line 2 is not a JSON object",
        ),
        (
            "POST",
            format!("/v1/ingest/{set}"),
            b"[{}, 3]".to_vec(),
            400,
            "element 1 of the array is not a JSON object",
        ),
        (
            "POST",
            format!("/v1/ingest/{set}"),
            vec![b' '; 70_000],
            413,
            "larger than the limit",
        ),
    ] {
        let token = if path.contains("ingest") { INGEST } else { READ };
        let (status, text) = http(address, method, &path, Some(token), &body).await;
        assert_eq!(status, want, "{method} {path}: {text}");
        // Every error is JSON, {"error": "..."}, the body limit's 413 included.
        let error = serde_json::from_str::<Json>(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        let error = error["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{method} {path}: {text}");
    }
    assert_eq!(live.applied().await, 6, "no bad request reached the pipeline");

    // Feature sets: definitions, aggregates, counters, lag; limited tokens see their sets.
    let (status, body) = http(address, "GET", &format!("/v1/feature-sets/{set}"), Some(READ), b"").await;
    assert_eq!(status, 200, "{body}");
    let described: Json = serde_json::from_str(&body).unwrap();
    let v1 = &described["versions"][0];
    assert_eq!(v1["counters"]["events_in"], 6);
    assert_eq!(v1["counters"]["failed"], 1);
    assert_eq!(v1["lag"]["pending"], 0);
    assert_eq!(v1["serving"], true);
    assert!(v1["aggregates"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "tx_count_1h", "type": "integer"})));
    let (_, body) = http(address, "GET", "/v1/feature-sets", Some(READ), b"").await;
    let listed: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed["feature_sets"].as_array().unwrap().len(),
        1,
        "the reader sees only its set"
    );
    let (_, body) = http(address, "GET", "/v1/feature-sets", Some(ADMIN), b"").await;
    let listed: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["feature_sets"].as_array().unwrap().len(), 2);

    // The OpenAPI document lists every route, and the router answers each one.
    let (status, body) = http(address, "GET", "/openapi.json", Some(READ), b"").await;
    assert_eq!(status, 200);
    let document: Json = serde_json::from_str(&body).unwrap();
    for route in sluice::http::ROUTES {
        assert!(
            document["paths"][route.path][route.method].is_object(),
            "{} {}",
            route.method,
            route.path
        );
        let path = route
            .path
            .replace("{set}", &set)
            .replace("{entity}", "a")
            .replace("{name}", "no-such-plugin")
            .replace("{version}", "1");
        let (status, body) = http(address, &route.method.to_uppercase(), &path, Some(ADMIN), b"").await;
        assert!(
            status != 405 && !(status == 404 && body.is_empty()),
            "{} {path}: {status}",
            route.method
        );
        if route.scope.is_some() {
            let (status, _) = http(address, &route.method.to_uppercase(), &path, None, b"").await;
            assert_eq!(status, 401, "{} {path} without a token", route.method);
        }
    }

    stop.send(true).unwrap();
    task.await.unwrap();
    cleanup_serving(&live).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_deployed_over_http_while_events_flow_takes_effect_for_later_events_exactly_once() {
    use sluice_tests::live::{kept, parquet_rows, transaction};
    const DEPLOY: &str = "deployer-token-4";
    let live = Live::new("deploy");
    let config = live.write_config();
    with_http(
        &config,
        &[
            ("deployer", DEPLOY, &["deploy", "read"], &[]),
            ("reader", READ, &["read"], &[]),
        ],
    );
    let (address, stop, task) = start_serving(&config).await;
    let n = 50_000u64;
    let events: Vec<Json> = (0..n).map(transaction).collect();
    let bodies: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
    // The second half of the events is held until the deploy is done, so the deploy lands
    // mid-stream however long compiling the new component takes on this machine.
    let (deployed_tx, deployed_rx) = tokio::sync::oneshot::channel::<()>();
    let publisher = {
        let (js, subject) = (live.jetstream().await, live.subject.clone());
        tokio::spawn(async move {
            let mut deployed = Some(deployed_rx);
            for (i, chunk) in bodies.chunks(2_000).enumerate() {
                if i == 13 {
                    let _ = deployed.take().unwrap().await;
                }
                let mut acks = Vec::new();
                for b in chunk {
                    acks.push(js.publish(subject.clone(), b.clone().into()).await.unwrap());
                }
                for a in acks {
                    a.await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    wait_for("some events applied", Duration::from_secs(60), async || {
        live.applied().await >= 5_000
    })
    .await;

    // Mid-stream: the JavaScript build of the same transform replaces the Rust one.
    let js_build = std::fs::read(sluice_tests::guest_plugin("currency-js")).unwrap();
    let (status, body) = http(address, "PUT", "/v1/plugins/currency", Some(DEPLOY), &js_build).await;
    assert_eq!(status, 200, "{body}");
    let deployed: Json = serde_json::from_str(&body).unwrap();
    let (old, new) = (
        format!("currency@{}", deployed["previous"].as_str().unwrap()),
        format!("currency@{}", deployed["version"].as_str().unwrap()),
    );
    assert_ne!(old, new);
    assert_eq!(deployed["deployed_by"], "deployer");
    // The last sequence applied before the deploy answered: those events ran the old version.
    let applied_at_deploy = live.applied().await;
    deployed_tx.send(()).unwrap();

    publisher.await.unwrap();
    let expected = events.iter().filter(|e| kept(e)).count();
    live.wait_drained(n, expected, Duration::from_secs(120)).await;
    let rows = parquet_rows(&live.offline_dir());
    let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
    let want: Vec<u64> = (1..=n).filter(|s| kept(&events[*s as usize - 1])).collect();
    assert_eq!(seqs, want, "every kept event exactly once");
    let versions: Vec<&str> = rows.iter().map(|r| r.3["to_usd_version"].as_str().unwrap()).collect();
    let switch = versions
        .iter()
        .position(|v| *v == new)
        .expect("later events ran the new version");
    assert!(switch > 0, "earlier events ran the old version");
    let kept_before_deploy = (1..=applied_at_deploy)
        .filter(|s| kept(&events[*s as usize - 1]))
        .count();
    assert!(
        switch >= kept_before_deploy,
        "the {kept_before_deploy} rows applied before the deploy answered ran the old version (the new one from row {switch})"
    );
    assert!(
        versions[..switch].iter().all(|v| *v == old),
        "before the swap: the old version"
    );
    assert!(
        versions[switch..].iter().all(|v| *v == new),
        "after it: the new one, never the old again"
    );
    let usd = |r: &(u64, String, i64, std::collections::HashMap<String, Json>)| r.3["amount_usd"].as_f64().unwrap();
    let e = &events[rows[switch + 1].0 as usize - 1];
    let rate = sluice_tests::live::rate(e["currency"].as_str().unwrap()).unwrap();
    assert_eq!(
        usd(&rows[switch + 1]),
        e["amount"].as_f64().unwrap() * rate,
        "same values from the new version"
    );

    // Versions, rollback, delete refused while used, bad bodies change nothing.
    let (status, body) = http(address, "GET", "/v1/plugins/currency", Some(READ), b"").await;
    assert_eq!(status, 200);
    let listed: Json = serde_json::from_str(&body).unwrap();
    let kept_versions = listed["versions"].as_array().unwrap();
    assert_eq!(kept_versions.len(), 2);
    assert_eq!(kept_versions[1]["active"], true);
    let (status, body) = http(address, "POST", "/v1/plugins/currency/rollback", Some(DEPLOY), b"").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        format!(
            "currency@{}",
            serde_json::from_str::<Json>(&body).unwrap()["version"]
                .as_str()
                .unwrap()
        ),
        old
    );
    let (status, body) = http(address, "DELETE", "/v1/plugins/currency", Some(DEPLOY), b"").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("used by"), "{body}");
    let bad_version = std::fs::read(sluice_tests::rust_plugin("bad-version")).unwrap();
    for (bytes, want, says) in [
        (b"not wasm at all".to_vec(), 400, "component"),
        (bad_version, 400, "sluice:plugin@0.1.0"),
        (Vec::new(), 400, "empty body"),
    ] {
        let (status, body) = http(address, "PUT", "/v1/plugins/currency", Some(DEPLOY), &bytes).await;
        assert_eq!(status, want, "{body}");
        assert!(body.contains(says), "{body}");
    }
    let (status, _) = http(address, "PUT", "/v1/plugins/currency", Some(READ), &js_build).await;
    assert_eq!(status, 403, "deploying needs the deploy scope");
    let (_, body) = http(address, "GET", "/v1/plugins", Some(READ), b"").await;
    let active: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        format!("currency@{}", active["plugins"][0]["version"].as_str().unwrap()),
        old,
        "the refused deploys changed nothing"
    );
    // The command line wraps the route.
    let deploy_with = |token: &'static str| {
        let file = sluice_tests::guest_plugin("currency-js").display().to_string();
        let server = format!("http://{address}");
        tokio::task::spawn_blocking(move || {
            let cli = <sluice::cli::Cli as clap::Parser>::parse_from([
                "sluice", "plugin", "deploy", "currency", &file, "--server", &server, "--token", token,
            ]);
            sluice::cli::run(cli).unwrap()
        })
    };
    assert_eq!(deploy_with(READ).await.unwrap(), 1, "refused without the deploy scope");
    assert_eq!(deploy_with(DEPLOY).await.unwrap(), 0);
    let (_, body) = http(address, "GET", "/v1/plugins", Some(READ), b"").await;
    let active: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        format!("currency@{}", active["plugins"][0]["version"].as_str().unwrap()),
        new
    );
    stop.send(true).unwrap();
    task.await.unwrap();
    live.cleanup().await;
}

/// `sluice demo` with these extra arguments (the test build's currency plugin, no serving).
async fn demo(extra: &'static [&'static str]) -> i32 {
    let plugin = sluice_tests::rust_plugin("currency").display().to_string();
    tokio::task::spawn_blocking(move || {
        let mut args = vec!["sluice", "demo", "--no-serve", "--plugin", &plugin];
        args.extend_from_slice(extra);
        sluice::cli::run(<sluice::cli::Cli as clap::Parser>::parse_from(args)).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_streams_on_nats_and_redis_and_removes_what_it_created() {
    let code = demo(&[
        "--bind",
        "127.0.0.1:0",
        "--events",
        "2000",
        "--nats",
        sluice_tests::live::NATS,
        "--redis",
        sluice_tests::live::REDIS,
    ])
    .await;
    assert_eq!(code, 0);
    let id = std::process::id();
    let js = async_nats::jetstream::new(async_nats::connect(sluice_tests::live::NATS).await.unwrap());
    assert!(
        js.get_stream(format!("DEMO_EVENTS_{id}")).await.is_err(),
        "the demo's streams are removed"
    );
    let mut redis = redis::Client::open(sluice_tests::live::REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("demo{id}:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(keys.is_empty(), "and its Redis keys: {keys:?}");

    // An unreachable NATS: exit 1 with the reason.
    let code = demo(&["--nats", "nats://127.0.0.1:1", "--redis", sluice_tests::live::REDIS]).await;
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_applied_over_http_runs_beside_the_old_one_until_switched() {
    use sluice_tests::live::transaction;
    let live = Live::new("apply");
    let config = live.write_config();
    with_http(
        &config,
        &[("admin", ADMIN, &["admin"], &[]), ("reader", READ, &["read"], &[])],
    );
    let n = 2_000u64;
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| serde_json::to_vec(&transaction(i)).unwrap()).collect();
    live.publish(&bodies).await;
    let (address, stop, task) = start_serving(&config).await;
    wait_for("v1 applied", Duration::from_secs(60), async || {
        live.applied().await == n
    })
    .await;
    let set = live.set.clone();

    // Version 2: one more computed field, online only.
    let file: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
    let mut v2 = file["feature_set"].as_array().unwrap()[0].as_table().unwrap().clone();
    v2.insert("version".into(), 2.into());
    v2.insert(
        "targets".into(),
        toml::Value::Array(vec![toml::Value::Table(toml::from_str("kind = \"redis\"").unwrap())]),
    );
    for step in v2["steps"].as_array_mut().unwrap() {
        if step["id"].as_str() == Some("derived") {
            step["fields"]
                .as_table_mut()
                .unwrap()
                .insert("doubled".into(), "amount_usd * 2.0".into());
        }
    }
    let definition = toml::to_string(&v2).unwrap();
    let path = format!("/v1/feature-sets/{set}");
    let (status, body) = http(address, "PUT", &path, Some(READ), definition.as_bytes()).await;
    assert_eq!(status, 403, "applying needs the admin scope: {body}");
    let (status, body) = http(address, "PUT", &path, Some(ADMIN), definition.as_bytes()).await;
    assert_eq!(status, 201, "{body}");
    let applied: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (applied["version"].clone(), applied["serving"].clone()),
        (json!(2), json!(false))
    );
    let mut redis = live.redis().await;
    let v2_applied = format!("{}:{set}:v2:_applied", live.prefix);
    wait_for("v2 applied", Duration::from_secs(60), async || {
        let v: Option<u64> = redis::cmd("GET")
            .arg(&v2_applied)
            .query_async(&mut redis)
            .await
            .unwrap();
        v == Some(n)
    })
    .await;

    // Lookups read version 1 until the switch, then version 2; version 1's data is untouched.
    let lookup = async || {
        let (status, body) = http(
            address,
            "GET",
            &format!("/v1/features/{set}/u0?at=1764000030000"),
            Some(READ),
            b"",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Json>(&body).unwrap()
    };
    let before = lookup().await;
    assert_eq!(before["version"], 1);
    assert!(before["features"].get("doubled").is_none());
    let (status, body) = http(address, "POST", &format!("{path}/serve/2"), Some(ADMIN), b"").await;
    assert_eq!(status, 200, "{body}");
    let after = lookup().await;
    assert_eq!(after["version"], 2);
    let usd = after["features"]["amount_usd"]["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("{after}"));
    assert_eq!(after["features"]["doubled"]["value"].as_f64(), Some(usd * 2.0));
    assert!(
        !live.hashes().await["u0"].contains_key("doubled"),
        "version 1's hashes are untouched"
    );

    // Refusals: the same version again, an invalid definition, a version not running.
    let (status, body) = http(address, "PUT", &path, Some(ADMIN), definition.as_bytes()).await;
    assert_eq!(status, 409, "{body}");
    let broken = definition
        .replace("version = 2", "version = 3")
        .replace("amount_usd * 2.0", "amount_usd *");
    let (status, body) = http(address, "PUT", &path, Some(ADMIN), broken.as_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a valid CEL expression"), "{body}");
    // The config file's own form, a [[feature_set]] table, is read the same way (and so
    // reaches validation); two of them are refused.
    let mut file_form = toml::Table::new();
    let mut v3: toml::Table = toml::from_str(&broken).unwrap();
    file_form.insert("feature_set".into(), toml::Value::Array(vec![v3.clone().into()]));
    let (status, body) = http(
        address,
        "PUT",
        &path,
        Some(ADMIN),
        toml::to_string(&file_form).unwrap().as_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a valid CEL expression"), "{body}");
    v3.insert("version".into(), 4.into());
    file_form["feature_set"].as_array_mut().unwrap().push(v3.into());
    let (status, body) = http(
        address,
        "PUT",
        &path,
        Some(ADMIN),
        toml::to_string(&file_form).unwrap().as_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("expected one [[feature_set]], found 2"), "{body}");
    // A plugin deployed over HTTP only (not in the config's [plugins]) is usable by name in a
    // definition applied over HTTP: version 3 runs its steps on it.
    let component = std::fs::read(sluice_tests::rust_plugin("currency")).unwrap();
    let (status, body) = http(address, "PUT", "/v1/plugins/usd-http", Some(ADMIN), &component).await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let mut v3 = v2.clone();
    v3.insert("version".into(), 3.into());
    for step in v3["steps"].as_array_mut().unwrap() {
        if step["id"].as_str() == Some("to_usd") {
            step.as_table_mut().unwrap().insert("plugin".into(), "usd-http".into());
        }
    }
    let (status, body) = http(
        address,
        "PUT",
        &path,
        Some(ADMIN),
        toml::to_string(&v3).unwrap().as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let v3_applied = format!("{}:{set}:v3:_applied", live.prefix);
    wait_for(
        "v3 applied on the plugin deployed over HTTP",
        Duration::from_secs(60),
        async || {
            let v: Option<u64> = redis::cmd("GET")
                .arg(&v3_applied)
                .query_async(&mut redis)
                .await
                .unwrap();
            v == Some(n)
        },
    )
    .await;
    let (status, _) = http(address, "POST", &format!("{path}/serve/7"), Some(ADMIN), b"").await;
    assert_eq!(status, 404);
    let stored = live.dir.path().join("data/feature_sets").join(format!("{set}-v2.toml"));
    assert!(stored.exists(), "the definition is stored for the next start");
    stop.send(true).unwrap();
    task.await.unwrap();

    // A restart on the same config file: the definitions applied over HTTP run again (v3 on
    // the plugin deployed over HTTP), and lookups still read version 2, the served choice.
    let (address, stop, task) = start_serving(&config).await;
    let (status, body) = http(address, "GET", &path, Some(ADMIN), b"").await;
    assert_eq!(status, 200, "{body}");
    let described: Json = serde_json::from_str(&body).unwrap();
    let versions: Vec<(u64, bool)> = described["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["serving"].as_bool().unwrap()))
        .collect();
    assert_eq!(versions, [(1, false), (2, true), (3, false)], "{body}");
    let (status, body) = http(
        address,
        "GET",
        &format!("/v1/features/{set}/u0?at=1764000030000"),
        Some(READ),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let again: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(again["version"], 2, "{again}");
    assert_eq!(again["features"]["doubled"], after["features"]["doubled"], "{again}");
    stop.send(true).unwrap();
    task.await.unwrap();
    live.cleanup().await;
}

/// One HTTPS request (HTTP/1.1, `Connection: close`) trusting `cert`: (status, body).
async fn https(
    address: std::net::SocketAddr,
    cert: &std::path::Path,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::ServerName;
    let connector = sluice_tests::live::tls_connector(cert);
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (
        status,
        text.split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_api_speaks_https_only() {
    let live = Live::new("tls");
    let config = serving_config(&live);
    // A test CA and a certificate it signs for localhost (openssl, as on every Debian machine).
    let (ca, cert, key) = make_certificate(live.dir.path(), "a");
    let mut table: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
    let http_table = table["http"].as_table_mut().unwrap();
    http_table.insert("tls_cert".into(), cert.display().to_string().into());
    http_table.insert("tls_key".into(), key.display().to_string().into());
    std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();

    let (address, stop, task) = start_serving(&config).await;
    assert_eq!(https(address, &ca, "/healthz", None).await.0, 200);
    let (status, body) = https(address, &ca, "/readyz", Some(READ)).await;
    assert!(status == 200 || status == 503, "{status} {body}");
    assert!(body.contains("\"mode\""), "{body}");
    assert_eq!(https(address, &ca, "/metrics", None).await.0, 401, "tokens still apply");
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let (status, _) = http(address, "GET", "/healthz", None, b"").await;
    assert_eq!(status, 0, "plain HTTP is not served");
    // A client that trusts another CA is refused at the handshake.
    let (other, _, _) = make_certificate(live.dir.path(), "b");
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let refused = sluice_tests::live::tls_connector(&other)
        .connect(
            tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect_err("the handshake fails for a client that does not trust the certificate");
    assert!(
        refused.to_string().contains("invalid peer certificate"),
        "refused for its certificate (not trusted), not for another reason: {refused}"
    );

    // A certificate without its key is refused by validation, naming the missing key.
    let mut table: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
    table["http"].as_table_mut().unwrap().remove("tls_key");
    let parsed = sluice::config::parse_str(&toml::to_string(&table).unwrap(), &config).unwrap();
    let problems = sluice::config::validate(&parsed);
    assert!(problems.iter().any(|p| p.key == "http.tls_key"), "{problems:?}");
    stop.send(true).unwrap();
    task.await.unwrap();
    cleanup_serving(&live).await;
}

/// Dead letters hold raw events: the admin scope only. A training set reads every set it
/// names: starting one, polling it and downloading it need the read scope on each of them, so
/// a token limited to another set can neither start nor fetch one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_need_admin_and_training_sets_need_read_on_each_set_they_read() {
    let live = Live::new("scopes");
    let config = serving_config(&live);
    let (address, stop, task) = start_serving(&config).await;
    let set = live.set.clone();
    let letters = format!("/v1/feature-sets/{set}/dead-letters");
    assert_eq!(http(address, "GET", &letters, None, b"").await.0, 401);
    for token in [READ, INGEST, OTHER_SET] {
        let (status, body) = http(address, "GET", &letters, Some(token), b"").await;
        assert_eq!(status, 403, "{token}: {body}");
    }
    let (status, body) = http(address, "GET", &letters, Some(ADMIN), b"").await;
    assert_eq!(status, 200, "{body}");

    let request = json!({
        "entities": [{ "user_id": "u1", "t": 1_700_000_000_000i64 }],
        "features": [format!("{set}:amount_usd")],
    })
    .to_string();
    for token in [INGEST, OTHER_SET] {
        let (status, body) = http(address, "POST", "/v1/training-sets", Some(token), request.as_bytes()).await;
        assert_eq!(status, 403, "{token}: {body}");
    }
    let (status, body) = http(address, "POST", "/v1/training-sets", Some(READ), request.as_bytes()).await;
    assert_eq!(status, 202, "{body}");
    let poll = serde_json::from_str::<Json>(&body).unwrap()["poll"]
        .as_str()
        .unwrap()
        .to_string();
    let mut done = Json::Null;
    wait_for("the training-set job", Duration::from_secs(30), async || {
        let (_, body) = http(address, "GET", &poll, Some(READ), b"").await;
        done = serde_json::from_str(&body).unwrap_or_default();
        done["status"] != "running"
    })
    .await;
    assert_eq!(done["sets"], json!([set]), "{done}");
    for path in [poll.clone(), format!("{poll}/data")] {
        let (status, body) = http(address, "GET", &path, Some(OTHER_SET), b"").await;
        assert_eq!(status, 403, "{path}: {body}");
        let error = serde_json::from_str::<Json>(&body).unwrap()["error"].clone();
        assert_eq!(
            error,
            json!(format!("token \"elsewhere\" is not allowed on feature set \"{set}\"")),
            "{body}"
        );
    }
    assert_eq!(http(address, "GET", &poll, Some(ADMIN), b"").await.0, 200);
    stop.send(true).unwrap();
    task.await.unwrap();
    cleanup_serving(&live).await;
}
