//! A model server's loop in the embedded mode: lookups with `"capture"` are recorded as
//! served (the answer as sent, with the set versions), predictions and labels are checked
//! against the model's declared fields and stored once per request id, and everything reads
//! back in order from the model's capture records; sampling keeps exactly the request ids its
//! hash picks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value as Json};
use sluice_tests::live::{http, start_serving, wait_for, with_http, Live};

const ADMIN: &str = "capture-admin-token";
const READER: &str = "capture-read-token";
const SERVER: &str = "capture-model-server-token";

/// The names a run uses: its set and its two models.
struct Names {
    set: String,
    fraud: String,
    sampled: String,
}

/// The config: embedded in `dir`, or on NATS and Redis with `live`'s names.
fn config(dir: &std::path::Path, live: Option<&Live>) -> (std::path::PathBuf, Names) {
    let path = dir.join("sluice.toml");
    let (host, stream, subject, names) = match live {
        None => (
            String::new(),
            "SCORES".to_string(),
            "scores.events".to_string(),
            Names {
                set: "scores".into(),
                fraud: "fraud".into(),
                sampled: "sampled".into(),
            },
        ),
        // The models are named after the set, so the test's cleanup purges their records.
        Some(live) => (
            format!(
                "nats = \"{}\"\nredis = \"{}\"\nredis_prefix = \"{}\"\n",
                live.nats_url, live.redis_url, live.prefix
            ),
            live.stream.clone(),
            live.subject.clone(),
            Names {
                set: live.set.clone(),
                fraud: live.set.clone(),
                sampled: format!("{}-sampled", live.set),
            },
        ),
    };
    let text = format!(
        r#"[host]
{host}data_dir = "{data}"

[[feature_set]]
name = "{set}"
entity = "user"
timestamp = {{ field = "ts", format = "epoch_ms" }}
source = {{ kind = "jetstream", stream = "{stream}", subject = "{subject}", max_wait_ms = 5{create} }}
targets = [{{ kind = "redis" }}, {rows}{{ kind = "parquet", root = "{offline}", roll_seconds = 1 }}]

[[feature_vector]]
name = "scoring"
features = ["{set}:amount", "{set}:country"]

[[model]]
name = "{fraud}"
vector = "scoring"
predictions = {{ score = "float", decision = "string" }}
labels = {{ is_fraud = "bool" }}

[[model]]
name = "{sampled}"
features = ["{set}:amount"]
predictions = {{ score = "float" }}
capture_one_in = 10
"#,
        data = dir.join("data").display(),
        offline = dir.join("offline").display(),
        // On NATS, the rows' stream is the test's (removed by its cleanup).
        rows = match live {
            Some(live) => format!(
                "{{ kind = \"stream\", stream = \"{}\", subject = \"ft.{}\", create = true }}, ",
                live.features, live.set
            ),
            None => String::new(),
        },
        create = if live.is_some() { ", create = true" } else { "" },
        set = names.set,
        fraud = names.fraud,
        sampled = names.sampled,
    );
    std::fs::write(&path, text).unwrap();
    with_http(
        &path,
        &[
            ("admin", ADMIN, &["admin"], &[]),
            ("reader", READER, &["read"], &[]),
            ("server", SERVER, &["read", "capture"], &[]),
        ],
    );
    (path, names)
}

/// Ingests one event for each of 50 users, `u<i>` at `now - 1000 + i` ms with amount 10.5 × i
/// and country DE (even) or FR (odd).
async fn ingest_users(address: std::net::SocketAddr, set: &str, now: i64) {
    let events: Vec<Json> = (0..50)
        .map(|i| json!({ "user": format!("u{i}"), "ts": now - 1000 + i, "amount": 10.5 * i as f64, "country": if i % 2 == 0 { "DE" } else { "FR" } }))
        .collect();
    let (status, body) = http(
        address,
        "POST",
        &format!("/v1/ingest/{set}"),
        Some(ADMIN),
        &serde_json::to_vec(&events).unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

/// Every capture record of a model, paging through the route.
async fn records(address: std::net::SocketAddr, model: &str) -> Vec<Json> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/v1/models/{model}/captures?after={after}&limit=1000");
        let (status, body) = http(address, "GET", &path, Some(ADMIN), b"").await;
        assert_eq!(status, 200, "{body}");
        let page: Json = serde_json::from_str(&body).unwrap();
        let items = page["records"].as_array().unwrap();
        if items.is_empty() {
            return all;
        }
        after = page["next_after"].as_u64().unwrap();
        all.extend(items.iter().map(|r| r["record"].clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_lookups_predictions_and_labels_are_stored_once_each_as_served() {
    let dir = tempfile::tempdir().unwrap();
    model_server_loop(config(dir.path(), None)).await;
}

/// The same on NATS JetStream (stream `SLUICE_CAPTURE`, de-duplicated by `Nats-Msg-Id`) and
/// Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_and_redis_captured_records_are_stored_once_each_as_served() {
    let live = Live::new("capture");
    model_server_loop(config(live.dir.path(), Some(&live))).await;
    live.cleanup().await;
}

async fn model_server_loop((config, names): (std::path::PathBuf, Names)) {
    let Names { set, fraud, sampled } = &names;
    let (address, stop, task) = start_serving(&config).await;
    wait_for("the pipelines ready", Duration::from_secs(30), async || {
        http(address, "GET", "/readyz", Some(ADMIN), b"").await.0 == 200
    })
    .await;
    let now = sluice_tests::live::now_ms();
    ingest_users(address, set, now).await;
    let lookup = async |body: Json, token: &str| {
        let (status, answer) = http(
            address,
            "POST",
            "/v1/features/lookup",
            Some(token),
            body.to_string().as_bytes(),
        )
        .await;
        (
            status,
            serde_json::from_str::<Json>(&answer).unwrap_or(Json::String(answer)),
        )
    };
    wait_for("the last user's features online", Duration::from_secs(30), async || {
        let (_, answer) = lookup(json!({ "entities": ["u49"], "vector": "scoring" }), READER).await;
        answer["results"][0]["features"][format!("{set}:amount")]["value"].as_f64() == Some(514.5)
    })
    .await;

    // Refusals: an unknown model, a bad request id.
    let (status, answer) = lookup(
        json!({ "entities": ["u1"], "vector": "scoring", "capture": { "model": "nope" } }),
        READER,
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer.to_string().contains(&format!("declared: {fraud}, {sampled}")),
        "{answer}"
    );
    let (status, answer) = lookup(
        json!({ "entities": ["u1"], "vector": "scoring", "capture": { "model": fraud, "request_id": "" } }),
        READER,
    )
    .await;
    assert_eq!(status, 400, "{answer}");

    // 200 captured lookups, each answer kept as the model server saw it.
    let mut answers = BTreeMap::new();
    for i in 0..200 {
        let request_id = format!("req-{i}");
        let (status, mut answer) = lookup(
            json!({ "entities": [format!("u{}", i % 50)], "vector": "scoring",
                    "capture": { "model": fraud, "request_id": request_id } }),
            READER,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["capture"],
            json!({ "model": fraud, "request_id": request_id, "sampled": true, "recorded": true })
        );
        answer.as_object_mut().unwrap().remove("capture");
        answers.insert(request_id, answer);
    }
    // Without a request id, the server makes one and returns it.
    let (status, answer) = lookup(
        json!({ "entities": ["u3"], "vector": "scoring", "capture": { "model": fraud } }),
        READER,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let made = answer["capture"]["request_id"].as_str().unwrap().to_string();
    assert_eq!(made.len(), 32, "{answer}");

    // Predictions for all 200, then a retry of the first 50: stored once each.
    let predictions: Vec<Json> = (0..200)
        .map(|i| json!({ "request_id": format!("req-{i}"), "score": i as f64 / 200.0, "decision": if i % 3 == 0 { "block" } else { "allow" } }))
        .collect();
    let post = async |path: &str, body: &Json, token: &str| {
        let (status, answer) = http(address, "POST", path, Some(token), body.to_string().as_bytes()).await;
        (status, answer)
    };
    let (status, answer) = post(&format!("/v1/models/{fraud}/predictions"), &json!(predictions), SERVER).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = post(
        &format!("/v1/models/{fraud}/predictions"),
        &json!(predictions[..50]),
        SERVER,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    // Labels for 150 of them by request id, one by entity and time; a retry of ten.
    // The label by entity and time goes to u3's last lookup before it (the one without a
    // request id of its own).
    let label_at = sluice_tests::live::now_ms();
    let labels: Vec<Json> = (0..150)
        .map(|i| json!({ "request_id": format!("req-{i}"), "is_fraud": i % 7 == 0 }))
        .chain([json!({ "entity": "u3", "at": label_at, "is_fraud": true })])
        .collect();
    let (status, answer) = post(&format!("/v1/models/{fraud}/labels"), &json!(labels), SERVER).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = post(&format!("/v1/models/{fraud}/labels"), &json!(labels[..10]), SERVER).await;
    assert_eq!(status, 202, "{answer}");

    // Bad posts are refused whole, saying what was expected; a read token may not post.
    for (body, needle) in [
        (
            json!([{ "request_id": "x", "score": 0.5, "decision": "allow" }, { "request_id": "y", "score": "high", "decision": "allow" }]),
            "expected float",
        ),
        (json!({ "request_id": "x", "score": 0.5 }), "missing \\\"decision\\\""),
        (
            json!({ "request_id": "x", "score": 0.5, "decision": "allow", "extra": 1 }),
            "unknown field \\\"extra\\\"",
        ),
        (
            json!({ "score": 0.5, "decision": "allow" }),
            "missing \\\"request_id\\\"",
        ),
    ] {
        let (status, answer) = post(&format!("/v1/models/{fraud}/predictions"), &body, SERVER).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains(needle), "{needle} in {answer}");
    }
    let (status, answer) = post(
        &format!("/v1/models/{fraud}/predictions"),
        &json!(predictions[..1]),
        READER,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = post("/v1/models/nope/labels", &json!(labels[..1]), SERVER).await;
    assert_eq!(status, 404, "{answer}");

    // Every record once, in the model's capture records.
    let mut all = Vec::new();
    wait_for("the captured lookups stored", Duration::from_secs(30), async || {
        all = records(address, fraud).await;
        all.iter().filter(|r| r["kind"] == "served").count() >= 201
    })
    .await;
    let count = |kind: &str| all.iter().filter(|r| r["kind"] == kind).count();
    assert_eq!((count("served"), count("prediction"), count("label")), (201, 200, 151));
    for record in all.iter().filter(|r| r["kind"] == "served") {
        let id = record["request_id"].as_str().unwrap();
        assert_eq!(record["model"], json!(fraud));
        assert_eq!(record["versions"], json!({ set: 1 }), "{record}");
        assert_eq!(record["vector"], "scoring");
        if id != made {
            assert_eq!(record["served"], answers[id], "the answer as served, for {id}");
        }
    }
    let prediction = all
        .iter()
        .find(|r| r["kind"] == "prediction" && r["request_id"] == "req-3")
        .unwrap();
    assert_eq!(
        (prediction["score"].as_f64(), prediction["decision"].as_str()),
        (Some(0.015), Some("block"))
    );
    let by_entity = all
        .iter()
        .find(|r| r["kind"] == "label" && r["entity"] == "u3")
        .unwrap();
    assert_eq!(by_entity["at"], json!(label_at), "{by_entity}");

    // One in ten, chosen by the request id's hash.
    for i in 0..200 {
        let request_id = format!("s-{i}");
        let (status, answer) = lookup(
            json!({ "entities": ["u1"], "features": [format!("{set}:amount")], "capture": { "model": sampled, "request_id": request_id } }),
            READER,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["capture"]["sampled"], sluice::capture::sampled(&request_id, 10));
    }
    let want: Vec<String> = (0..200)
        .map(|i| format!("s-{i}"))
        .filter(|id| sluice::capture::sampled(id, 10))
        .collect();
    assert!((5..40).contains(&want.len()), "{want:?}");
    let mut kept = Vec::new();
    wait_for("the sampled lookups stored", Duration::from_secs(30), async || {
        kept = records(address, sampled).await;
        kept.len() >= want.len()
    })
    .await;
    let got: Vec<String> = kept
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want, "exactly the sampled ids, in order");

    let (status, body) = http(address, "GET", "/v1/models", Some(READER), b"").await;
    assert_eq!(status, 200, "{body}");
    let models: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(models["models"][0]["name"], json!(fraud));
    assert_eq!(
        models["models"][0]["predictions"],
        json!({ "decision": "string", "score": "float" })
    );
    assert_eq!(models["models"][0]["capture_lost"], 0);
    let (_, metrics) = http(address, "GET", "/metrics", Some(ADMIN), b"").await;
    assert!(
        metrics.contains(&format!("sluice_capture_lost_total{{model=\"{fraud}\"}} 0")),
        "{metrics}"
    );
    // 201 lookups, 250 predictions and 161 labels accepted (retries included).
    assert!(
        metrics.contains(&format!("sluice_captured_total{{model=\"{fraud}\"}} 612")),
        "{metrics}"
    );
    for line in [
        format!("sluice_model_lookup_seconds_count{{model=\"{fraud}\"}} 201"),
        format!("sluice_model_records_total{{model=\"{fraud}\",kind=\"prediction\"}} 250"),
        format!("sluice_model_records_total{{model=\"{fraud}\",kind=\"label\"}} 161"),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert_eq!(
        models["models"][0]["accepted"],
        json!({ "predictions": 250, "labels": 161 })
    );

    // A lookup retried with its request id is recorded twice; its training row comes once,
    // from the first.
    let (status, answer) = lookup(
        json!({ "entities": ["u0"], "vector": "scoring", "capture": { "model": fraud, "request_id": "req-0" } }),
        READER,
    )
    .await;
    assert_eq!(
        (status, answer["capture"]["recorded"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );

    // The production set, written by `sluice run` from the capture records (committed every
    // ten seconds), gives the retraining data: a row per captured lookup, the features as
    // served, bit for bit, with its prediction and its label.
    let loaded = sluice::config::load(&config).unwrap();
    let model = loaded.models.iter().find(|m| &m.name == fraud).unwrap();
    let out = config.parent().unwrap().join("retrain.parquet");
    let job = every_lookup(model);
    let report = production_set(&loaded, &job, &out, 202 + 200 + 151).await;
    assert_eq!(
        (report.rows, report.predicted, report.labelled, report.repeats),
        (201, 200, 151, 1),
        "{report:?}"
    );
    let rows = read_parquet(&out);
    assert_eq!(rows.len(), 201);
    let features = [format!("{set}:amount"), format!("{set}:country")];
    for row in &rows {
        let id = row["request_id"].as_str().unwrap();
        if id == made {
            assert_eq!(
                (row["entity"].as_str(), row["is_fraud"].as_bool()),
                (Some("u3"), Some(true)),
                "{row}"
            );
            assert!(row["score"].is_null(), "{row}");
            continue;
        }
        let i: usize = id.strip_prefix("req-").unwrap().parse().unwrap();
        let served = &answers[id]["results"][0];
        assert_eq!(row["entity"], served["entity"], "{row}");
        for feature in &features {
            assert_eq!(
                row[feature.as_str()],
                served["features"][feature.as_str()]["value"],
                "{feature} of {id}"
            );
        }
        assert_eq!(row["score"].as_f64(), Some(i as f64 / 200.0), "{row}");
        assert_eq!(
            row["decision"].as_str(),
            Some(if i % 3 == 0 { "block" } else { "allow" }),
            "{row}"
        );
        let label = (i < 150).then_some(i % 7 == 0);
        assert_eq!(row["is_fraud"].as_bool(), label, "{row}");
    }
    // Only the labelled ones, and a time range.
    let labelled = sluice::offline::production::build(
        &loaded,
        &sluice::offline::production::ModelTraining {
            labelled_only: true,
            ..job.clone()
        },
        &out,
    )
    .unwrap();
    assert_eq!(labelled.rows, 151, "{labelled:?}");
    let none = sluice::offline::production::build(
        &loaded,
        &sluice::offline::production::ModelTraining {
            to: Some(now * 1000),
            ..job.clone()
        },
        &out,
    )
    .unwrap();
    assert_eq!(none.rows, 0, "{none:?}");

    // The served values are what the offline rows give at each capture time...
    let (parity, skipped) = sluice::offline::production::parity(&loaded, model).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(parity.agrees(), "{parity:?}");
    assert_eq!((parity.entities, parity.values), (50, 402), "{parity:?}");
    // ... until an event of u5 that no lookup saw arrives late, dated before them: its four
    // lookups are listed as served one amount while the offline rows now give another.
    let late = json!([{ "user": "u5", "ts": now - 500, "amount": 999.0, "country": "FR" }]);
    let (status, body) = http(
        address,
        "POST",
        &format!("/v1/ingest/{set}"),
        Some(ADMIN),
        late.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let mut parity = Default::default();
    wait_for(
        "the late event in the offline rows",
        Duration::from_secs(30),
        async || {
            parity = sluice::offline::production::parity(&loaded, model).unwrap().0;
            !parity.agrees()
        },
    )
    .await;
    let amount = format!("{set}:amount");
    assert_eq!(
        parity.mismatches.keys().collect::<Vec<_>>(),
        vec![&amount],
        "{parity:?}"
    );
    assert_eq!(parity.mismatches[&amount].0, 4, "{parity:?}");
    assert!(
        parity.mismatches[&amount].1.contains("served 52.5 vs offline 999"),
        "{parity:?}"
    );

    // The same retraining data as a job over HTTP; a model with entity rows is refused.
    let (status, body) = http(
        address,
        "POST",
        "/v1/training-sets",
        Some(READER),
        json!({ "model": fraud, "labelled_only": true }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let poll = serde_json::from_str::<Json>(&body).unwrap()["poll"]
        .as_str()
        .unwrap()
        .to_string();
    let mut job = Json::Null;
    wait_for("the job done", Duration::from_secs(30), async || {
        job = serde_json::from_str(&http(address, "GET", &poll, Some(READER), b"").await.1).unwrap();
        job["status"] != "running"
    })
    .await;
    assert_eq!(
        (job["status"].as_str(), job["rows"].as_u64()),
        (Some("done"), Some(151)),
        "{job}"
    );
    let (status, body) = http(
        address,
        "POST",
        "/v1/training-sets",
        Some(READER),
        json!({ "model": fraud, "entities": [{ "user": "u1", "t": now }] })
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("takes the place of"), "{body}");

    // Online: each entity's last captured lookup, and its last prediction posted with its
    // entity.
    let (status, answer) = post(
        &format!("/v1/models/{fraud}/predictions"),
        &json!({ "request_id": made, "entity": "u3", "score": 0.9, "decision": "block" }),
        SERVER,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let online = async |entity: &str| {
        let (status, body) = http(
            address,
            "GET",
            &format!("/v1/models/{fraud}/online/{entity}"),
            Some(READER),
            b"",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Json>(&body).unwrap()
    };
    let mut u3 = Json::Null;
    wait_for("u3's last prediction online", Duration::from_secs(30), async || {
        u3 = online("u3").await;
        u3["predicted"]["request_id"] == json!(made)
    })
    .await;
    assert_eq!(u3["served"]["request_id"], json!(made), "{u3}");
    assert_eq!(u3["served"]["features"][format!("{set}:amount")], json!(31.5), "{u3}");
    assert_eq!(u3["served"]["features"][format!("{set}:country")], json!("FR"), "{u3}");
    assert_eq!(u3["served"]["answer"]["entity"], json!("u3"), "{u3}");
    assert_eq!(
        u3["predicted"]["prediction"],
        json!({ "score": 0.9, "decision": "block" }),
        "{u3}"
    );
    // A later lookup of fewer features leaves none of the earlier one's behind.
    let answer = lookup(
        json!({ "entities": ["u3"], "features": [format!("{set}:amount")], "capture": { "model": fraud, "request_id": "last-u3" } }),
        READER,
    )
    .await
    .1;
    assert_eq!(answer["capture"]["recorded"], json!(true), "{answer}");
    wait_for("u3's last lookup online", Duration::from_secs(30), async || {
        u3 = online("u3").await;
        u3["served"]["request_id"] == json!("last-u3")
    })
    .await;
    assert_eq!(
        u3["served"]["features"],
        json!({ format!("{set}:amount"): 31.5 }),
        "{u3}"
    );
    let u0 = online("u0").await;
    assert_eq!(
        (u0["served"]["request_id"].as_str(), &u0["predicted"]),
        (Some("req-0"), &Json::Null),
        "{u0}"
    );
    assert_eq!(online("nobody").await["served"], Json::Null);
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// A model's retraining data over every captured lookup, labelled or not.
fn every_lookup(model: &sluice::config::ModelConfig) -> sluice::offline::production::ModelTraining<'_> {
    sluice::offline::production::ModelTraining {
        model,
        from: None,
        to: None,
        labelled_only: false,
    }
}

/// Builds `job` into `out` once the production set holds at least `records` records (the
/// writer commits every ten seconds; a minute at most), and returns its report.
async fn production_set(
    config: &sluice::config::Config,
    job: &sluice::offline::production::ModelTraining<'_>,
    out: &std::path::Path,
    records: u64,
) -> sluice::offline::production::ModelTrainingReport {
    let mut report = Default::default();
    wait_for("the production set written", Duration::from_secs(60), async || {
        report = sluice::offline::production::build(config, job, out).unwrap_or_default();
        report.records >= records
    })
    .await;
    report
}

/// The rows of a Parquet file as JSON objects.
fn read_parquet(path: &std::path::Path) -> Vec<Json> {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        for r in 0..batch.num_rows() {
            let mut row = serde_json::Map::new();
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                let value = sluice::sources::arrow_json::cell_value(column.as_ref(), r);
                row.insert(field.name().clone(), sluice::event::value_to_json(&value));
            }
            rows.push(Json::Object(row));
        }
    }
    rows
}

/// A model's mistakes are refused before anything starts, each with its key.
#[test]
fn a_model_s_mistakes_are_reported_with_their_keys() {
    let text = r#"
        [[feature_set]]
        name = "scores"
        entity = "user"
        timestamp = { field = "ts", format = "epoch_ms" }
        fields = ["user", "ts", "amount"]
        source = { kind = "jetstream", stream = "SCORES", subject = "scores.events" }
        targets = [{ kind = "redis" }]

        [[model]]
        name = "a"
        vector = "missing"
        predictions = { score = "float" }

        [[model]]
        name = "a"
        features = ["scores:nope"]
        predictions = { request_id = "string" }
        capture_one_in = 0

        [[model]]
        name = "B"
        predictions = {}
    "#;
    let config = sluice::config::parse_str(text, std::path::Path::new("bad.toml")).unwrap();
    let problems = sluice::config::validate(&config);
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "model[0].vector",
            "model[1].name",
            "model[1].features",
            "model[1].predictions.request_id",
            "model[1].capture_one_in",
            "model[2].name",
            "model[2].vector",
            "model[2].predictions",
        ],
        "{problems:?}"
    );
    assert!(
        problems[0].message.contains("no feature vector \"missing\""),
        "{problems:?}"
    );
    let bad_type = sluice::config::parse_str(
        "[[model]]\nname = \"m\"\nfeatures = [\"s:x\"]\npredictions = { score = \"double\" }\n",
        std::path::Path::new("t.toml"),
    )
    .unwrap_err();
    assert!(bad_type.to_string().contains("float"), "{bad_type}");
}

/// Not a test on its own: the child process the capture kill test starts and kills
/// (`SLUICE_CHILD_CONFIG` names its config). It runs `sluice run` as the binary does.
#[test]
#[ignore]
fn capture_child() {
    sluice_tests::live::run_child_from_env();
}

/// `sluice run` on NATS and Redis killed with SIGKILL while a model server captures lookups,
/// posts predictions and labels, its production set uncommitted, then started again: every
/// stored record is in the production set exactly once, and the retraining data has each
/// lookup with its prediction and label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_capturing_the_production_set_holds_every_record_once() {
    let live = Live::new("capturekill");
    let (config, names) = config(live.dir.path(), Some(&live));
    let address = sluice_tests::live::fixed_address(&config);
    let spawn = || sluice_tests::live::spawn_child("capture_child", &config);
    let ready = async || sluice_tests::live::wait_ready(address, ADMIN).await;
    let mut child = spawn();
    ready().await;
    let set = &names.set;
    let fraud = &names.fraud;
    ingest_users(address, set, sluice_tests::live::now_ms()).await;
    let lookup = async |body: Json| {
        let (status, answer) = http(
            address,
            "POST",
            "/v1/features/lookup",
            Some(READER),
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        serde_json::from_str::<Json>(&answer).unwrap()
    };
    wait_for("the last user's features online", Duration::from_secs(30), async || {
        let answer = lookup(json!({ "entities": ["u49"], "vector": "scoring" })).await;
        answer["results"][0]["features"][format!("{set}:amount")]["value"].as_f64() == Some(514.5)
    })
    .await;
    let stored = async || {
        let path = format!("/v1/models/{fraud}/captures?after=0&limit=1000");
        let (status, body) = http(address, "GET", &path, Some(ADMIN), b"").await;
        assert_eq!(status, 200, "{body}");
        let page: Json = serde_json::from_str(&body).unwrap();
        page["records"].as_array().unwrap().len()
    };
    // Three rounds of 100 lookups, their predictions and labels; the host is killed right
    // after the second round's records are stored (its production set not yet committed:
    // parts roll every 10 s) and started again.
    let mut total = 0;
    for round in 0..3 {
        for i in 0..100 {
            let id = format!("r{round}-{i}");
            let answer = lookup(json!({ "entities": [format!("u{}", i % 50)], "vector": "scoring",
                                        "capture": { "model": fraud, "request_id": id } }))
            .await;
            assert_eq!(answer["capture"]["recorded"], true, "{answer}");
        }
        total += 100;
        wait_for("the round's lookups stored", Duration::from_secs(30), async || {
            stored().await >= total
        })
        .await;
        let predictions: Vec<Json> = (0..100)
            .map(|i| json!({ "request_id": format!("r{round}-{i}"), "score": i as f64, "decision": "allow" }))
            .collect();
        let labels: Vec<Json> = (0..100)
            .map(|i| json!({ "request_id": format!("r{round}-{i}"), "is_fraud": i % 2 == 0 }))
            .collect();
        for (path, body) in [("predictions", &predictions), ("labels", &labels)] {
            let (status, answer) = http(
                address,
                "POST",
                &format!("/v1/models/{fraud}/{path}"),
                Some(SERVER),
                json!(body).to_string().as_bytes(),
            )
            .await;
            assert_eq!(status, 202, "{answer}");
        }
        total += 200;
        if round == 1 {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            child = spawn();
            ready().await;
        }
    }
    let loaded = sluice::config::load(&config).unwrap();
    let model = loaded.models.iter().find(|m| &m.name == fraud).unwrap();
    let out = live.dir.path().join("retrain.parquet");
    let job = every_lookup(model);
    production_set(&loaded, &job, &out, 900).await;
    // Give a doubled commit time to show itself, then count again.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let report = sluice::offline::production::build(&loaded, &job, &out).unwrap();
    assert_eq!(
        (
            report.records,
            report.repeats,
            report.rows,
            report.predicted,
            report.labelled
        ),
        (900, 0, 300, 300, 300),
        "every record once: {report:?}"
    );
    let rows = read_parquet(&out);
    for row in &rows {
        let id = row["request_id"].as_str().unwrap();
        let i: usize = id.split('-').nth(1).unwrap().parse().unwrap();
        assert_eq!(row["score"].as_f64(), Some(i as f64), "{row}");
        assert_eq!(row["is_fraud"].as_bool(), Some(i % 2 == 0), "{row}");
        assert_eq!(
            row[format!("{set}:amount").as_str()].as_f64(),
            Some(10.5 * (i % 50) as f64),
            "{row}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    live.cleanup().await;
}
