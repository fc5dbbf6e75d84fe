//! One logic for training and serving: a backfill runs the live graph over history and gives
//! the live pipeline's Parquet rows bit for bit; training sets follow the point-in-time rule
//! (checked on hand-made cases); the skew check finds online and offline in agreement.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::{Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use serde_json::{json, Value as Json};
use sluice::offline::backfill::{self, BackfillOptions};
use sluice::offline::parity::{self, ParityOptions};
use sluice::offline::training::{self, TrainingOptions};
use sluice_tests::live::{kept, pandas_python, parquet_rows, start, transaction, Live};

fn backfill_options(config: &Path, set: &str, version: u32, input: Vec<String>) -> BackfillOptions {
    BackfillOptions {
        config: config.to_path_buf(),
        set: set.to_string(),
        version,
        input,
        from_stream: false,
        online: false,
        batch: 1000,
        sort_memory_mb: 1024,
        max_failed: Default::default(),
        quiet: true,
    }
}

fn write_jsonl(path: &Path, events: &[Json]) {
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_gives_the_live_pipelines_rows_bit_for_bit_and_parity_holds() {
    let live = Live::new("parity");
    let config = live.write_config();
    // 100k in-order events of the last ~20 minutes (windows at "now" are not empty).
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let n = 100_000u64;
    let events: Vec<Json> = (0..n)
        .map(|i| {
            let mut e = transaction(i);
            e["ts"] = json!(now_ms - 1_200_000 + i as i64 * 10);
            e
        })
        .collect();
    let (stop, task) = start(&live, &config);
    live.publish_json(&events).await;
    let expected = events.iter().filter(|e| kept(e)).count();
    live.wait_drained(n, expected, Duration::from_secs(180)).await;

    // The skew check, while the online store holds the live values.
    let report = tokio::task::spawn_blocking({
        let config = config.clone();
        let set = live.set.clone();
        move || {
            parity::run(&ParityOptions {
                config,
                set: Some(set),
                model: None,
                version: None,
                sample: 500,
            })
            .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(report.entities >= 100, "{report:?}");
    assert!(report.values > 2_000, "{report:?}");
    assert!(report.agrees(), "{report:?}");
    stop.send(true).unwrap();
    task.await.unwrap();

    // The same events from a file, into a version of their own.
    let input = live.dir.path().join("history.jsonl");
    write_jsonl(&input, &events);
    let options = backfill_options(&config, &live.set, 2, vec![input.display().to_string()]);
    let report = tokio::task::spawn_blocking(move || backfill::run(&options).unwrap())
        .await
        .unwrap();
    assert_eq!(report.rows, expected as u64, "{report:?}");
    assert_eq!(report.events, n);
    let live_rows = parquet_rows(&live.offline_dir());
    let backfilled = parquet_rows(&live.dir.path().join("offline").join(&live.set).join("v2"));
    assert_eq!(live_rows.len(), expected);
    assert_eq!(backfilled.len(), live_rows.len());
    for (a, b) in live_rows.iter().zip(&backfilled) {
        assert_eq!(a, b, "row {} differs", a.0);
    }
    // Failed events are kept with their reason.
    let letters = std::fs::read_to_string(
        live.dir
            .path()
            .join("offline")
            .join(&live.set)
            .join("v2.dead-letters.jsonl"),
    )
    .unwrap();
    let poison = events.iter().filter(|e| e["currency"] == "XYZ").count();
    assert_eq!(letters.lines().count(), poison);
    assert!(letters.lines().next().unwrap().contains("XYZ"));

    // The same events shuffled over three files and sorted in 1 MiB of memory (dozens of
    // runs spilled to disk, then merged): the same rows again, and no run file left behind.
    let mut shuffled: Vec<(u64, &Json)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| ((i as u64 * 7919) % n, e))
        .collect();
    shuffled.sort_by_key(|(k, _)| *k);
    let mut inputs = Vec::new();
    for (part, chunk) in shuffled.chunks(shuffled.len() / 3 + 1).enumerate() {
        let path = live.dir.path().join(format!("shuffled-{part}.jsonl"));
        write_jsonl(&path, &chunk.iter().map(|(_, e)| (*e).clone()).collect::<Vec<_>>());
        inputs.push(path.display().to_string());
    }
    // A line that is not an event, among them: a dead letter of its own.
    let mut first = std::fs::read_to_string(&inputs[0]).unwrap();
    first.push_str("{not json\n");
    std::fs::write(&inputs[0], first).unwrap();
    let mut options = backfill_options(&config, &live.set, 3, inputs);
    options.sort_memory_mb = 1;
    let report = tokio::task::spawn_blocking(move || backfill::run(&options).unwrap())
        .await
        .unwrap();
    assert_eq!(report.rows, expected as u64, "{report:?}");
    assert_eq!(report.events, n + 1, "{report:?}");
    let set_dir = live.dir.path().join("offline").join(&live.set);
    let letters = std::fs::read_to_string(set_dir.join("v3.dead-letters.jsonl")).unwrap();
    assert_eq!(letters.lines().count(), poison + 1);
    let decode: Vec<&str> = letters.lines().filter(|l| l.contains(r#""step":"decode""#)).collect();
    assert_eq!(decode.len(), 1, "{letters}");
    assert!(
        decode[0].contains("shuffled-0.jsonl") && decode[0].contains("{not json"),
        "{}",
        decode[0]
    );
    assert_eq!(
        parquet_rows(&set_dir.join("v3")),
        live_rows,
        "sorted through spilled runs"
    );
    assert!(!set_dir.join(".v3.sort").exists(), "spilled runs removed");

    // Replayed from the JetStream stream (an ordered consumer, batches pushed by the server):
    // the same rows, with the stream's sequences.
    let mut options = backfill_options(&config, &live.set, 4, Vec::new());
    options.from_stream = true;
    let report = tokio::task::spawn_blocking(move || backfill::run(&options).unwrap())
        .await
        .unwrap();
    assert_eq!((report.events, report.rows), (n, expected as u64), "{report:?}");
    assert_eq!(parquet_rows(&set_dir.join("v4")), live_rows, "replayed from JetStream");

    // Dead letters read back from JetStream, in pages, as the HTTP route reads them.
    let bus = sluice::bus::Bus::Nats(live.jetstream().await);
    let subject = format!("sluice.dlq.{}", live.set);
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |m: &sluice::store::embedded::LogMessage| m.seq);
        let page = bus.read("SLUICE_DLQ", &subject, after, 400).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 400);
        all.extend(page);
    }
    assert_eq!(all.len(), poison);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(poison > 15, "{poison}");
    let page = bus.read("SLUICE_DLQ", &subject, all[9].seq, 5).await.unwrap();
    let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, all[10..15].iter().map(|m| m.seq).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&page[0].body).contains("XYZ"));
    assert!(
        page[0]
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("Sluice-Reason") && !v.is_empty()),
        "{:?}",
        page[0].headers
    );
    let after_last = bus.read("SLUICE_DLQ", &subject, all[poison - 1].seq, 10).await.unwrap();
    assert!(after_last.is_empty());

    // A version the config runs live is refused.
    let clash = backfill_options(&config, &live.set, 1, vec![input.display().to_string()]);
    let error = backfill::run(&clash).unwrap_err().to_string();
    assert!(error.contains("runs") && error.contains("live"), "{error}");
    live.cleanup().await;
}

/// A small feature set read from files, with a 2h TTL and 1h windows over 10-minute buckets.
const PIT: &str = r#"
[host]
data_dir = "data"

[[feature_set]]
name = "pit"
version = 1
entity = "user"
timestamp = { field = "ts", format = "rfc3339" }
ttl = "2h"
fields = ["user", "amount", "emb", "ts"]

[feature_set.source]
kind = "file"
path = "events.jsonl"

[[feature_set.steps]]
id = "w"
kind = "aggregate"
period = "10m"

[[feature_set.steps.aggregations]]
field = "amount"
functions = ["count", "sum"]
windows = ["1h"]

[[feature_set.steps]]
id = "big"
kind = "map"
fields = { big = "amount > 3.0" }

[[feature_set.targets]]
kind = "stream"
stream = "UNUSED"
subject = "unused"

[[feature_set.targets]]
kind = "parquet"
root = "offline"
"#;

fn at(hh_mm: &str) -> String {
    format!("2026-01-05T{hh_mm}:00Z")
}

fn pit_setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, PIT).unwrap();
    let events = [
        ("u1", 1.0, "10:00"),
        ("u1", 2.0, "10:30"),
        ("u1", 4.0, "11:05"),
        ("u2", 10.0, "10:00"),
        // Equal event times: the later input wins.
        ("u4", 5.0, "10:00"),
        ("u4", 6.0, "10:00"),
    ];
    let events: Vec<Json> = events
        .iter()
        .map(|(user, amount, time)| json!({ "user": user, "amount": amount, "emb": [amount, amount * 2.0], "ts": at(time) }))
        .collect();
    // Two files, out of time order: the backfill sorts by event time.
    write_jsonl(&dir.path().join("b.jsonl"), &events[2..]);
    write_jsonl(&dir.path().join("a.jsonl"), &events[..2]);
    (dir, config)
}

#[test]
fn training_sets_follow_the_point_in_time_rule() {
    let (dir, config) = pit_setup();
    let pattern = dir.path().join("*.jsonl").display().to_string();
    let options = backfill_options(&config, "pit", 1000, vec![pattern.clone()]);
    let first = backfill::run(&options).unwrap();
    assert_eq!((first.events, first.rows, first.failed), (6, 6, 0), "{first:?}");
    // A re-run writes nothing twice.
    let again = backfill::run(&options).unwrap();
    assert_eq!(again.skipped, 6, "{again:?}");
    assert_eq!(parquet_rows(&dir.path().join("offline/pit/v1000")).len(), 6);

    let entities = [
        ("u1", "10:20"), // before the 10:30 event: it is never used
        ("u1", "10:30"), // exactly at an event's time: it counts
        ("u1", "11:35"), // 10:00 and 10:30 have left the 1h window (10:40 to 11:40)
        ("u2", "12:30"), // the last row is 2.5h old: past the 2h TTL, nulls
        ("u2", "09:00"), // before any event: nulls
        ("u3", "10:00"), // unknown entity: nulls
        ("u4", "10:00"), // two events at 10:00: the later input's row, both counted
    ];
    let lines: Vec<Json> = entities
        .iter()
        .map(|(user, time)| json!({ "user": user, "t": at(time), "label": 1 }))
        .collect();
    write_jsonl(&dir.path().join("entities.jsonl"), &lines);
    let out = dir.path().join("train.parquet");
    // The four features of the cases, from the backfilled version, into `out`.
    let options = |out: &Path, partitions: Option<u64>| TrainingOptions {
        config: config.clone(),
        entities: Some(dir.path().join("entities.jsonl")),
        features: ["amount", "amount_count_1h", "amount_sum_1h", "big", "emb"]
            .iter()
            .map(|f| format!("pit:{f}"))
            .collect(),
        out: out.to_path_buf(),
        time_field: "t".into(),
        version: Some(1000),
        partitions,
        quiet: true,
        ..Default::default()
    };
    let report = training::run(&options(&out, None)).unwrap();
    assert_eq!(report.rows, 7);

    let file = std::fs::File::open(&out).unwrap();
    let batch = sluice_tests::live::first_batch(file);
    let schema = batch.schema();
    let types: HashMap<&str, String> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), format!("{:?}", f.data_type())))
        .collect();
    assert_eq!(types["user"], "Utf8");
    assert_eq!(types["label"], "Int64");
    assert_eq!(types["t"], "Timestamp(Microsecond, Some(\"UTC\"))");
    assert_eq!(types["amount"], "Float64");
    assert_eq!(types["amount_count_1h"], "Int64");
    assert_eq!(types["amount_sum_1h"], "Float64");
    assert_eq!(types["big"], "Boolean");
    // An embedding (a list of floats) stays one: list<double>, its values those of the row.
    assert!(
        types["emb"].starts_with("List(") && types["emb"].contains("Float64"),
        "{}",
        types["emb"]
    );
    let emb = batch.column(schema.index_of("emb").unwrap()).as_list::<i32>().clone();
    let vector = |r: usize| {
        emb.is_valid(r).then(|| {
            emb.value(r)
                .as_primitive::<arrow_array::types::Float64Type>()
                .values()
                .to_vec()
        })
    };
    assert_eq!(vector(0), Some(vec![1.0, 2.0]));
    assert_eq!(vector(6), Some(vec![6.0, 12.0]));
    assert_eq!(vector(3), None);
    let column = |name: &str| batch.column(schema.index_of(name).unwrap()).clone();
    let users = column("user");
    let users = users.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(users.value(0), "u1", "rows keep the entity file's order");
    let amount = column("amount");
    let amount = amount.as_any().downcast_ref::<Float64Array>().unwrap();
    let count = column("amount_count_1h");
    let count = count.as_any().downcast_ref::<Int64Array>().unwrap();
    let sum = column("amount_sum_1h");
    let sum = sum.as_any().downcast_ref::<Float64Array>().unwrap();
    let got: Vec<(Option<f64>, Option<i64>, Option<f64>)> = (0..7)
        .map(|r| {
            (
                amount.is_valid(r).then(|| amount.value(r)),
                count.is_valid(r).then(|| count.value(r)),
                sum.is_valid(r).then(|| sum.value(r)),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some(1.0), Some(1), Some(1.0)),
            (Some(2.0), Some(2), Some(3.0)),
            (Some(4.0), Some(1), Some(4.0)),
            (None, None, None),
            (None, None, None),
            (None, None, None),
            (Some(6.0), Some(2), Some(11.0)),
        ]
    );
    let t = column("t");
    let t = t.as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
    assert_eq!(t.value(0), 1_767_608_400_000_000, "2026-01-05T10:20:00Z");

    // Three passes over the offline rows (bounded memory) give the same training set.
    let split = dir.path().join("train3.parquet");
    training::run(&options(&split, Some(3))).unwrap();
    let read = |path: &Path| {
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
    };
    assert_eq!(read(&split), batch);

    // Bad input gets a clear error.
    std::fs::write(dir.path().join("bad.jsonl"), "{\"user\": \"u1\"}\n").unwrap();
    let error = training::run(&TrainingOptions {
        entities: Some(dir.path().join("bad.jsonl")),
        features: vec!["pit:amount".into()],
        ..options(&dir.path().join("bad.parquet"), None)
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("no time field \"t\""), "{error}");
    // A feature the set does not have is refused with the nearest name, not read as nulls.
    let error = training::run(&TrainingOptions {
        features: vec!["pit:amount".into(), "pit:amuont".into()],
        ..options(&dir.path().join("typo.parquet"), None)
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("no feature \"amuont\" (did you mean \"amount\"?)"),
        "{error}"
    );
    assert!(!dir.path().join("typo.parquet").exists());
    // Without --version, the version lookups serve (the catalog's choice) is read, not the
    // config file's: here the backfilled v1000, whose rows give the same training set.
    let served = dir.path().join("data/feature_sets");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::write(served.join("pit.serving"), "1000").unwrap();
    let following = dir.path().join("served.parquet");
    training::run(&TrainingOptions {
        version: None,
        ..options(&following, None)
    })
    .unwrap();
    assert_eq!(read(&following), batch, "the served version's rows");
}

/// The fraud example backfilled into v7 from 3000 transactions, and a training set of `rows`
/// entity rows (just after kept transactions) for `features` of it: the Live (its folder),
/// the config, the training set's path and the backfill's report.
fn fraud_training_set(
    name: &str,
    rows: usize,
    features: &[&str],
) -> (Live, PathBuf, PathBuf, backfill::BackfillReport) {
    let live = Live::new(name);
    let config = live.write_config();
    let events: Vec<Json> = (0..3000).map(transaction).collect();
    let input = live.dir.path().join("history.jsonl");
    write_jsonl(&input, &events);
    let report = backfill::run(&backfill_options(
        &config,
        &live.set,
        7,
        vec![input.display().to_string()],
    ))
    .unwrap();
    assert!(report.rows > 2500, "{report:?}");
    // An entity row just after each kept transaction: every feature has a row.
    let lines: Vec<Json> = events
        .iter()
        .filter(|e| kept(e))
        .take(rows)
        .map(|e| json!({ "user_id": e["user_id"], "t": e["ts"].as_i64().unwrap() + 1, "label": 1 }))
        .collect();
    let entities = live.dir.path().join("entities.jsonl");
    write_jsonl(&entities, &lines);
    let out = live.dir.path().join("train.parquet");
    let set = &live.set;
    training::run(&TrainingOptions {
        config: config.clone(),
        entities: Some(entities),
        features: features.iter().map(|f| format!("{set}:{f}")).collect(),
        out: out.clone(),
        time_field: "t".into(),
        version: Some(7),
        partitions: None,
        quiet: true,
        ..Default::default()
    })
    .unwrap();
    (live, config, out, report)
}

#[test]
fn a_training_set_from_the_fraud_example_reads_in_pandas_with_the_right_types() {
    let features = [
        "amount_usd",
        "tx_count_1h",
        "amount_usd_mean_24h",
        "amount_zscore_24h",
        "is_foreign",
    ];
    let (_live, _config, out, _) = fraud_training_set("pandas", 500, &features);
    // pyarrow can abort or hang while the interpreter tears down its thread pools, after the
    // work is done (apache/arrow#34314, #50482; CI saw "terminate called without an active
    // exception" once). The script flushes its answer and leaves with os._exit, skipping that
    // teardown, so the test judges the file and not pyarrow's shutdown.
    let script = "import json, os, sys, pandas as pd\n\
                  df = pd.read_parquet(sys.argv[1])\n\
                  print(json.dumps({'rows': len(df), 'dtypes': {c: str(t) for c, t in df.dtypes.items()}, \
                  'nulls': int(df['amount_usd'].isna().sum())}), flush=True)\n\
                  os._exit(0)";
    let output = std::process::Command::new(pandas_python())
        .args(["-c", script])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Json = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(read["rows"], 500);
    assert_eq!(read["nulls"], 0, "every entity row has a feature row at or before t");
    let dtypes = &read["dtypes"];
    assert_eq!(dtypes["user_id"], "object");
    assert_eq!(dtypes["label"], "int64");
    assert!(
        dtypes["t"].as_str().unwrap().starts_with("datetime64[") && dtypes["t"].as_str().unwrap().ends_with(", UTC]"),
        "{dtypes}"
    );
    assert_eq!(dtypes["amount_usd"], "float64");
    assert_eq!(dtypes["tx_count_1h"], "int64");
    assert_eq!(dtypes["amount_usd_mean_24h"], "float64");
    assert_eq!(dtypes["amount_zscore_24h"], "float64");
    assert_eq!(dtypes["is_foreign"], "bool");
}

#[test]
fn a_reference_profile_comes_from_a_training_sets_features_or_an_offline_range() {
    use sluice::monitor::reference::ReferenceFeature;
    use sluice::offline::reference::{self, ProfileOptions};
    let (live, config, out, report) = fraud_training_set("profile", 800, &["amount_usd", "tx_count_1h", "is_foreign"]);
    let set = &live.set;
    let events: Vec<Json> = (0..3000).map(transaction).collect();
    let options = ProfileOptions {
        config: config.clone(),
        set: set.clone(),
        training_set: Some(out),
        time_field: "t".into(),
        version: None,
        from: None,
        to: None,
        name: "trained-2026-12".into(),
        features: Vec::new(),
    };
    let (trained, path) = reference::build(&options).unwrap();
    // Exactly the three features: not the entity row's user_id, t or label.
    let names: Vec<&str> = trained.features.keys().map(String::as_str).collect();
    assert_eq!(names, vec!["amount_usd", "is_foreign", "tx_count_1h"]);
    assert_eq!(trained.rows, 800);
    let ReferenceFeature::Numeric {
        count, shares, edges, ..
    } = &trained.features["amount_usd"]
    else {
        panic!("amount_usd is numeric: {:?}", trained.features["amount_usd"]);
    };
    assert_eq!(*count, 800);
    assert_eq!(shares.len(), edges.len() + 1);
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    // Equal-frequency bins: no closed bin holds much more than its tenth.
    assert!(shares.iter().all(|s| *s < 0.2), "{shares:?}");
    let ReferenceFeature::Categorical { values, .. } = &trained.features["is_foreign"] else {
        panic!("is_foreign is categorical");
    };
    assert!(values.contains(&"true".to_string()) || values.contains(&"false".to_string()));
    // Stored where the catalog finds it again.
    let data_dir = sluice::config::load(&config).unwrap();
    let stored = sluice::catalog::references::References::new(&data_dir.resolve(&data_dir.host.data_dir));
    assert_eq!(stored.load(set, "trained-2026-12").unwrap().rows, 800);
    assert!(path.exists());
    let summary = reference::summary(&trained, &path);
    assert!(summary.contains("amount_usd") && summary.contains("p50"), "{summary}");

    // The offline rows of v7, all of them, then the first half of their time range only.
    let offline = |from: Option<String>, to: Option<String>| ProfileOptions {
        training_set: None,
        version: Some(7),
        from,
        to,
        name: "offline".into(),
        ..options.clone()
    };
    let (all, _) = reference::build(&offline(None, None)).unwrap();
    assert_eq!(all.rows, report.rows);
    assert!(!all.features.contains_key("user_id"), "the entity is not a feature");
    let middle = events[1500]["ts"].as_i64().unwrap().to_string();
    let (half, _) = reference::build(&offline(None, Some(middle))).unwrap();
    assert!(half.rows > 0 && half.rows < all.rows, "{} of {}", half.rows, all.rows);
    // Only the features asked for; one the rows lack is named with those they have.
    let (two, _) = reference::build(&ProfileOptions {
        features: vec!["amount_usd".into(), "is_foreign".into()],
        ..offline(None, None)
    })
    .unwrap();
    assert_eq!(
        two.features.keys().collect::<Vec<_>>(),
        vec!["amount_usd", "is_foreign"]
    );
    let absent = reference::build(&ProfileOptions {
        features: vec!["amount_usd".into(), "amount_eur".into()],
        ..offline(None, None)
    })
    .unwrap_err();
    assert!(
        absent.to_string().contains("\"amount_eur\" not among") && absent.to_string().contains("tx_count_1h"),
        "{absent}"
    );
    // Bad names and empty ranges are refused with what was expected.
    let bad = reference::build(&ProfileOptions {
        name: "../x".into(),
        ..options.clone()
    })
    .unwrap_err();
    assert!(bad.to_string().contains("expected 1 to 64 letters"), "{bad}");
    let empty = reference::build(&offline(
        Some("2000-01-01T00:00:00Z".into()),
        Some("2000-01-02T00:00:00Z".into()),
    ))
    .unwrap_err();
    assert!(empty.to_string().contains("no rows to profile"), "{empty}");
    assert!(
        empty
            .to_string()
            .contains("(from 2000-01-01T00:00:00Z to 2000-01-02T00:00:00Z)"),
        "{empty}"
    );
    assert!(!empty.to_string().contains(".parquet"), "no list of files: {empty}");

    // With `[feature_set.monitor] segments`, each of the most frequent countries gets its
    // own part of the reference, the rest "other"; the segment field slices the rows even
    // when only other features are profiled.
    let mut table: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
    let monitor: toml::Table =
        toml::from_str("reference = \"offline\"\nsegments = [\"country\"]\nmax_segments = 2").unwrap();
    table["feature_set"].as_array_mut().unwrap()[0]
        .as_table_mut()
        .unwrap()
        .insert("monitor".into(), monitor.into());
    std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
    let (segmented, path) = reference::build(&ProfileOptions {
        features: vec!["amount_usd".into()],
        ..offline(None, None)
    })
    .unwrap();
    assert_eq!(segmented.segment_fields, vec!["country".to_string()]);
    assert_eq!(segmented.features.keys().collect::<Vec<_>>(), vec!["amount_usd"]);
    let mut countries: HashMap<String, u64> = HashMap::new();
    for e in events.iter().filter(|e| kept(e)) {
        *countries.entry(e["country"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let mut by_rows: Vec<(u64, String)> = countries.iter().map(|(c, n)| (*n, c.clone())).collect();
    by_rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut want: Vec<String> = by_rows.iter().take(2).map(|(_, c)| c.clone()).collect();
    if by_rows.len() > 2 {
        want.push("other".into());
    }
    want.sort();
    assert_eq!(segmented.segments.keys().cloned().collect::<Vec<_>>(), want);
    assert_eq!(
        segmented.segments.values().map(|p| p.rows).sum::<u64>(),
        segmented.rows,
        "every row in one segment"
    );
    for (value, part) in &segmented.segments {
        if value != "other" {
            assert_eq!(part.rows, countries[value], "{value}");
        }
        let ReferenceFeature::Numeric { shares, .. } = &part.features["amount_usd"] else {
            panic!("{value}: amount_usd is numeric")
        };
        assert!(
            (shares.iter().sum::<f64>() - 1.0).abs() < 1e-9,
            "{value}: its own bins counted"
        );
    }
    let summary = reference::summary(&segmented, &path);
    assert!(summary.contains("segments by country: "), "{summary}");
}

#[test]
fn references_are_built_and_read_over_http_with_the_admin_scope() {
    use sluice_tests::live::{http, start_serving, with_http};
    let (live, config, _out, report) = fraud_training_set("httpref", 100, &["amount_usd"]);
    with_http(
        &config,
        &[
            ("admin", "ref-admin-token", &["admin"], &[]),
            ("reader", "ref-read-token", &["read"], &[]),
        ],
    );
    let set = live.set.clone();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (address, stop, task) = start_serving(&config).await;
        let path = format!("/v1/feature-sets/{set}/references/november");
        let put = |token: &'static str, body: Json| {
            let path = path.clone();
            async move { http(address, "PUT", &path, Some(token), body.to_string().as_bytes()).await }
        };

        // Read scope cannot build one; a body with neither source nor both is refused.
        let (status, body) = put("ref-read-token", json!({ "version": 7 })).await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = put("ref-admin-token", json!({})).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("exactly one of"), "{body}");
        let (status, body) = put("ref-admin-token", json!({ "version": 7, "rows": 3 })).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("unknown field `rows`"), "{body}");
        let (status, body) = put("ref-admin-token", json!({ "training_set": "nope" })).await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = http(
            address,
            "PUT",
            "/v1/feature-sets/nope/references/x",
            Some("ref-admin-token"),
            br#"{"version": 7}"#,
        )
        .await;
        assert_eq!(status, 404, "{body}");
        let (status, _) = http(address, "GET", &path, Some("ref-read-token"), b"").await;
        assert_eq!(status, 404, "not built yet");

        // Built from v7's offline rows: 201 with a summary per feature, then readable.
        let (status, body) = put("ref-admin-token", json!({ "version": 7 })).await;
        assert_eq!(status, 201, "{body}");
        let built: Json = serde_json::from_str(&body).unwrap();
        assert_eq!(built["rows"], report.rows);
        assert_eq!(built["features"]["amount_usd"]["kind"], "numeric", "{built}");
        assert!(built["features"]["user_id"].is_null(), "the entity is not a feature");
        let (status, body) = http(address, "GET", &path, Some("ref-read-token"), b"").await;
        assert_eq!(status, 200, "{body}");
        let read: Json = serde_json::from_str(&body).unwrap();
        assert_eq!(read["rows"], report.rows);
        assert!(read["features"]["amount_usd"].is_object(), "{read}");
        // Stored where `sluice profile` puts it and a set's monitor looks.
        let loaded = sluice::config::load(&config).unwrap();
        let stored = sluice::catalog::references::References::new(&loaded.resolve(&loaded.host.data_dir));
        assert_eq!(stored.load(&set, "november").unwrap().rows as u64, report.rows as u64);

        stop.send(true).unwrap();
        task.await.unwrap();
        live.cleanup().await;
    });
}
