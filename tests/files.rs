//! Input fidelity: the files data scientists have — written by pandas, pyarrow and DuckDB, and
//! CSV in every supported time layout — backfill with the event times and values pandas reads
//! from them; the benchmark workload's Parquet gives the rows of its JSON-lines twin; a run in
//! which every event fails ends non-zero with its reasons; an offline-only set runs as a batch
//! that ends by itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use clap::Parser;
use serde_json::{json, Value as Json};
use sluice_tests::live::{pandas_python, parquet_rows, transaction, Live};

/// Runs `sluice <args>` in this process; returns its exit code.
fn sluice(args: &[&str]) -> i32 {
    let cli = sluice::cli::Cli::parse_from(std::iter::once("sluice").chain(args.iter().copied()));
    sluice::cli::run(cli).unwrap()
}

/// `sluice backfill` of the set `f` of `config` from `input` into version `version`, quiet.
fn backfill(config: &Path, input: &Path, version: &str, extra: &[&str]) -> i32 {
    let (config, input) = (config.to_str().unwrap(), input.to_str().unwrap());
    let mut args = vec![
        "backfill",
        "--config",
        config,
        "--set",
        "f",
        "--version",
        version,
        "--input",
        input,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    sluice(&args)
}

/// An embedded-mode config of one feature set `f` reading `file`, with a parquet target only.
fn offline_only(dir: &Path, file: &Path, timestamp: &str, steps: &str) -> PathBuf {
    let path = dir.join("sluice.toml");
    let text = format!(
        r#"[host]
data_dir = "data"

[[feature_set]]
name = "f"
entity = "user"
timestamp = {timestamp}
source = {{ kind = "file", path = "{file}", batch = 4 }}
{steps}
[[feature_set.targets]]
kind = "parquet"
root = "offline"
roll_seconds = 1
"#,
        file = file.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Two JSON values equal as pandas would have them (numbers compared as floats).
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        _ => a == b,
    }
}

#[test]
fn files_from_pandas_pyarrow_duckdb_and_csv_backfill_with_the_times_and_values_pandas_reads() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("files/inputs.py");
    let out = std::process::Command::new(pandas_python())
        .arg(&script)
        .arg(&inputs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cases: Vec<Json> = serde_json::from_slice(&std::fs::read(inputs.join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 27, "{} cases", cases.len());
    for (n, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let file = PathBuf::from(case["file"].as_str().unwrap());
        let at = dir.path().join(format!("case{n}"));
        std::fs::create_dir(&at).unwrap();
        let zone = case["timezone"]
            .as_str()
            .map(|z| format!(", timezone = \"{z}\""))
            .unwrap_or_default();
        let timestamp = format!("{{ field = {}, format = {}{zone} }}", case["field"], case["format"]);
        let config = offline_only(&at, &file, &timestamp, "");
        let code = backfill(&config, &file, "2", &["--max-failed", "0"]);
        assert_eq!(code, 0, "{name}: backfill failed");
        let rows = parquet_rows(&at.join("offline/f/v2"));
        let expected = case["rows"].as_array().unwrap();
        assert_eq!(rows.len(), expected.len(), "{name}");
        let by_user: HashMap<&str, _> = rows.iter().map(|r| (r.1.as_str(), r)).collect();
        for want in expected {
            let user = want["user"].as_str().unwrap();
            let (_, _, ts, values) = by_user[user];
            assert_eq!(*ts, want["ts_us"].as_i64().unwrap(), "{name}: {user}'s event time");
            for (column, value) in want.as_object().unwrap() {
                if column == "user" || column == "ts_us" {
                    continue;
                }
                let got = values.get(column).unwrap_or(&Json::Null);
                assert!(
                    same(got, value),
                    "{name}: {user}.{column}: {got} where pandas reads {value}"
                );
            }
        }
    }
}

/// The pipeline benchmark's workload, as columns (its event time a `timestamp[ms]`).
fn workload(n: u64) -> (RecordBatch, Vec<Json>) {
    let events: Vec<Json> = (0..n).map(transaction).collect();
    let text = |k: &str| -> ArrayRef {
        Arc::new(StringArray::from(
            events
                .iter()
                .map(|e| e[k].as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
        ))
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "transaction_id",
            Arc::new(Int64Array::from(
                events.iter().map(|e| e["transaction_id"].as_i64()).collect::<Vec<_>>(),
            )),
        ),
        ("user_id", text("user_id")),
        (
            "amount",
            Arc::new(Float64Array::from(
                events.iter().map(|e| e["amount"].as_f64()).collect::<Vec<_>>(),
            )),
        ),
        ("currency", text("currency")),
        ("merchant", text("merchant")),
        ("country", text("country")),
        (
            "ts",
            Arc::new(TimestampMillisecondArray::from(
                events.iter().map(|e| e["ts"].as_i64().unwrap()).collect::<Vec<_>>(),
            )),
        ),
    ];
    (RecordBatch::try_from_iter(columns).unwrap(), events)
}

#[test]
fn the_benchmark_workloads_parquet_backfills_like_its_json_lines_twin_bit_for_bit() {
    let live = Live::new("twin");
    let config = live.write_config();
    let (batch, events) = workload(20_000);
    let parquet = live.dir.path().join("history.parquet");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&parquet).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let jsonl = live.dir.path().join("history.jsonl");
    std::fs::write(&jsonl, events.iter().map(|e| format!("{e}\n")).collect::<String>()).unwrap();
    let backfill = |version: &str, input: &Path| {
        let code = sluice(&[
            "backfill",
            "--config",
            config.to_str().unwrap(),
            "--set",
            &live.set,
            "--version",
            version,
            "--input",
            input.to_str().unwrap(),
            "--quiet",
        ]);
        assert_eq!(code, 0, "backfill v{version} from {}", input.display());
    };
    backfill("2", &parquet);
    backfill("3", &jsonl);
    let set_dir = live.dir.path().join("offline").join(&live.set);
    let from_parquet = parquet_rows(&set_dir.join("v2"));
    assert!(from_parquet.len() > 19_000, "{} rows", from_parquet.len());
    assert_eq!(from_parquet, parquet_rows(&set_dir.join("v3")));
    // The only failures are the unknown currencies (a plugin's dead letters), in both.
    let letters = |v: &str| std::fs::read_to_string(set_dir.join(format!("v{v}.dead-letters.jsonl"))).unwrap();
    let unknown = events.iter().filter(|e| e["currency"] == "XYZ").count();
    assert_eq!(letters("2").lines().count(), unknown);
    assert!(letters("2")
        .lines()
        .all(|l| l.contains("XYZ") && !l.contains(r#""step":"decode""#)));
    // A file event's dead letter names its file and row, with its position as sequence.
    let first: Json = serde_json::from_str(letters("2").lines().next().unwrap()).unwrap();
    assert_eq!(first["file"], parquet.display().to_string());
    assert_eq!(first["row"], 14, "{first}"); // transaction 13 is the first XYZ
    assert_ne!(first["seq"], 0);
    let first: Json = serde_json::from_str(letters("3").lines().next().unwrap()).unwrap();
    assert_eq!(first["line"], 14, "{first}");
}

#[test]
fn a_backfill_in_which_every_event_fails_exits_non_zero_and_names_the_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let lines: String = (0..50)
        .map(|i| {
            format!(
                "{}\n",
                json!({"user": format!("u{i}"), "ts": 1_704_067_200_000i64 + i, "x": i})
            )
        })
        .collect();
    std::fs::write(&input, format!("{lines}{{not json\n")).unwrap();
    // `auto` reads text only: epoch numbers have no unit it could know.
    let config = offline_only(dir.path(), &input, r#"{ field = "ts" }"#, "");
    let options = sluice::offline::backfill::BackfillOptions {
        config: config.clone(),
        set: "f".into(),
        version: 2,
        input: vec![input.display().to_string()],
        from_stream: false,
        online: false,
        batch: 10,
        sort_memory_mb: 1,
        max_failed: Default::default(),
        quiet: true,
    };
    let report = sluice::offline::backfill::run(&options).unwrap();
    assert_eq!((report.events, report.failed, report.rows), (51, 51, 0));
    let refusal = report.refusal(options.max_failed).unwrap();
    assert!(refusal.starts_with("every event failed (51 of 51)"), "{refusal}");
    assert!(refusal.contains("50  decode: event time field \"ts\""), "{refusal}");
    assert!(refusal.contains("cannot be known"), "{refusal}");
    assert!(refusal.contains("1  decode: invalid JSON"), "{refusal}");
    let run = |max: &str| backfill(&config, &input, "2", &["--max-failed", max]);
    assert_eq!(run("5%"), 1);
    assert_eq!(run("100%"), 1, "every event failing is never a success");
    // Every failure is kept, with its file, line and position.
    let letters = std::fs::read_to_string(dir.path().join("offline/f/v2.dead-letters.jsonl")).unwrap();
    let letters: Vec<Json> = letters.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 51);
    for (i, letter) in letters.iter().enumerate() {
        assert_eq!(letter["seq"], i as u64 + 1);
        assert_eq!(letter["line"], i as u64 + 1);
        assert_eq!(letter["file"], input.display().to_string());
    }

    // With the unit declared, the same events pass; one bad line of 51 is within 5% but not 0.
    offline_only(dir.path(), &input, r#"{ field = "ts", format = "epoch_ms" }"#, "");
    assert_eq!(run("5%"), 0);
    assert_eq!(run("0"), 1);
    assert_eq!(parquet_rows(&dir.path().join("offline/f/v2")).len(), 50);
}

#[test]
fn an_offline_only_feature_set_validates_and_a_batch_run_ends_when_its_parquet_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.csv");
    let mut csv = String::from("user,ts,amount\n");
    for i in 0..1000 {
        csv.push_str(&format!(
            "u{},2024-01-01 00:{:02}:{:02}.5,{}\n",
            i % 37,
            (i / 60) % 60,
            i % 60,
            i
        ));
    }
    std::fs::write(&input, &csv).unwrap();
    let steps = "[[feature_set.steps]]\nid = \"big\"\nkind = \"map\"\nfields = { big = \"amount > 500\" }\n";
    let config = offline_only(dir.path(), &input, r#"{ field = "ts" }"#, steps);
    assert_eq!(sluice(&["validate", config.to_str().unwrap()]), 0);
    // `--config FILE`, as every other command takes it, works too.
    assert_eq!(sluice(&["validate", "--config", config.to_str().unwrap()]), 0);
    assert_eq!(
        sluice(&["run", "--config", config.to_str().unwrap(), "--until-done"]),
        0
    );
    let rows = parquet_rows(&dir.path().join("offline/f/v1"));
    assert_eq!(rows.len(), 1000, "every row committed when the run ends");
    let row = rows.iter().find(|r| r.0 == 502).unwrap(); // line 502: event 500
    assert_eq!(row.1, format!("u{}", 500 % 37));
    assert_eq!(row.2, 1_704_067_200_000_000 + (8 * 60 + 20) * 1_000_000 + 500_000);
    assert_eq!(row.3["big"], json!(false));
    // Again: nothing is written twice (line numbers are the sequences), and it ends again.
    assert_eq!(
        sluice(&["run", "--config", config.to_str().unwrap(), "--until-done"]),
        0
    );
    assert_eq!(parquet_rows(&dir.path().join("offline/f/v1")).len(), 1000);

    // Every event failing: the batch run says so and exits non-zero.
    let config = offline_only(dir.path(), &input, r#"{ field = "ts", format = "rfc3339" }"#, "");
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    assert_eq!(
        sluice(&["run", "--config", config.to_str().unwrap(), "--until-done"]),
        1
    );
    // Each dead letter names its file and line.
    let store =
        sluice::store::embedded::Embedded::open(&dir.path().join("data").join(sluice::config::EMBEDDED_FILE)).unwrap();
    let bus = sluice::bus::Bus::Embedded(store);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let letters = runtime
        .block_on(bus.read("SLUICE_DLQ", "sluice.dlq.f", 0, 1000))
        .unwrap();
    assert_eq!(letters.len(), 1000);
    let reason = |i: usize| {
        letters[i]
            .headers
            .iter()
            .find(|(k, _)| k == "Sluice-Reason")
            .unwrap()
            .1
            .clone()
    };
    assert!(
        reason(0).starts_with(&format!("{}, line 2: event time field \"ts\"", input.display())),
        "{}",
        reason(0)
    );
    assert_eq!(letters[999].seq, 1000);
    // A stream never ends: --until-done refuses it.
    let live = Live::new("until");
    let fraud = live.write_config();
    let cli = sluice::cli::Cli::parse_from(["sluice", "run", "--config", fraud.to_str().unwrap(), "--until-done"]);
    let error = sluice::cli::run(cli).unwrap_err().to_string();
    assert!(
        error.contains("--until-done runs feature sets that read a file"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_an_offline_only_sets_rows_reach_parquet_through_a_stream_of_its_own() {
    let live = Live::new("offonly");
    let input = live.dir.path().join("events.jsonl");
    let lines: String = (0..500)
        .map(|i| format!("{}\n", json!({"user": format!("u{}", i % 7), "ts": 1_704_067_200 + i})))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let config = live.dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nnats = \"{}\"\nredis = \"{}\"\nredis_prefix = \"{}\"\ndata_dir = \"data\"\n\n[[feature_set]]\n\
             name = \"{}\"\nentity = \"user\"\ntimestamp = {{ field = \"ts\", format = \"epoch_s\" }}\n\
             source = {{ kind = \"file\", path = \"events.jsonl\", batch = 64 }}\n\n[[feature_set.targets]]\n\
             kind = \"parquet\"\nroot = \"offline\"\nroll_seconds = 1\n",
            live.nats_url, live.redis_url, live.prefix, live.set
        ),
    )
    .unwrap();
    let args = ["run", "--config", config.to_str().unwrap(), "--until-done"].map(str::to_string);
    let code = tokio::task::spawn_blocking(move || sluice(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap();
    let js = live.jetstream().await;
    let stream = format!("SLUICE_ROWS_{}_v1", live.set);
    let info = js.get_stream(&stream).await.map(|s| s.cached_info().state.messages);
    let _ = js.delete_stream(&stream).await;
    live.cleanup().await;
    assert_eq!(code, 0);
    assert!(info.unwrap() > 0, "the rows went through {stream}");
    let rows = parquet_rows(&live.offline_dir());
    assert_eq!(rows.len(), 500);
    assert_eq!(rows[0].2, 1_704_067_200_000_000);
}

#[test]
fn a_cast_step_converts_fields_and_sends_what_cannot_convert_to_the_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.csv");
    std::fs::write(
        &input,
        "user,ts,opened,vip,score\nu1,2024-01-01 00:00:00,25/12/2024 10:30,yes,7\nu2,2024-01-01 00:00:01,01/01/2024 00:00,No,8\nu3,2024-01-01 00:00:02,soon,yes,9\n",
    )
    .unwrap();
    let steps = "[[feature_set.steps]]\nid = \"types\"\nkind = \"cast\"\n\
                 fields = { opened = \"timestamp\", vip = \"bool\", score = \"float\" }\nformat = \"%d/%m/%Y %H:%M\"\n";
    let config = offline_only(dir.path(), &input, r#"{ field = "ts" }"#, steps);
    assert_eq!(sluice(&["validate", config.to_str().unwrap()]), 0);
    assert_eq!(backfill(&config, &input, "2", &["--max-failed", "1"]), 0);
    let rows = parquet_rows(&dir.path().join("offline/f/v2"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].3["opened"], json!(1_735_122_600_000_000i64));
    assert_eq!(rows[0].3["vip"], json!(true));
    assert_eq!(rows[0].3["score"], json!(7.0));
    assert_eq!(rows[1].3["vip"], json!(false));
    let letters = std::fs::read_to_string(dir.path().join("offline/f/v2.dead-letters.jsonl")).unwrap();
    let letter: Json = serde_json::from_str(letters.trim()).unwrap();
    assert_eq!(letter["step"], "types");
    assert_eq!(letter["line"], 4);
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .starts_with("field \"opened\": cannot cast \"soon\" to timestamp: expected a time like the pattern"),
        "{letter}"
    );
}

/// Entity keys are text everywhere: `{"user": 42}` and `{"user": "42"}` are the entity "42",
/// whose `user` feature is the text "42" online (the embedded store), in Parquet and in the
/// skew check, which then agrees (it reported `Integer(42)` against `"42"` before).
#[test]
fn a_numeric_entity_id_is_its_text_key_online_offline_and_in_the_skew_check() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let mut lines = String::new();
    for i in 0..40i64 {
        let user = if i % 4 == 0 {
            json!(format!("{}", 40 + i % 3))
        } else {
            json!(40 + i % 3)
        };
        lines.push_str(&format!(
            "{}\n",
            json!({"user": user, "amount": i, "ts": now_ms - 60_000 + i})
        ));
    }
    std::fs::write(&input, lines).unwrap();
    let config = offline_only(dir.path(), &input, r#"{ field = "ts", format = "epoch_ms" }"#, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[[feature_set.targets]]\nkind = \"redis\"\n");
    std::fs::write(&config, text).unwrap();
    assert_eq!(
        sluice(&["run", "--config", config.to_str().unwrap(), "--until-done"]),
        0
    );
    let rows = parquet_rows(&dir.path().join("offline/f/v1"));
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|r| r.3["user"] == json!(r.1)), "{:?}", &rows[..2]);
    assert_eq!(rows.iter().filter(|r| r.1 == "41").count(), 13);
    let report = sluice::offline::parity::run(&sluice::offline::parity::ParityOptions {
        config: config.clone(),
        set: Some("f".into()),
        model: None,
        version: None,
        sample: 100,
    })
    .unwrap();
    assert_eq!(report.entities, 3, "{report:?}");
    assert!(report.agrees(), "{report:?}");
    assert_eq!(
        sluice(&["verify-parity", "--config", config.to_str().unwrap(), "--set", "f"]),
        0
    );

    // The offline rows changed behind the online store's back (every amount + 1000): the skew
    // check finds the mismatch and exits 1.
    let mut parts = Vec::new();
    for entry in walk(&dir.path().join("offline/f/v1")) {
        if entry.extension().is_some_and(|e| e == "parquet") {
            parts.push(entry);
        }
    }
    assert!(!parts.is_empty());
    for part in parts {
        let batches: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&part).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let schema = batches[0].schema();
        let at = schema.index_of("amount").unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&part).unwrap(), schema.clone(), None).unwrap();
        for batch in batches {
            let amounts = batch.column(at).as_any().downcast_ref::<Int64Array>().unwrap();
            let mut columns = batch.columns().to_vec();
            columns[at] = Arc::new(amounts.iter().map(|a| a.map(|a| a + 1000)).collect::<Int64Array>()) as ArrayRef;
            writer
                .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
                .unwrap();
        }
        writer.close().unwrap();
    }
    let report = sluice::offline::parity::run(&sluice::offline::parity::ParityOptions {
        config: config.clone(),
        set: Some("f".into()),
        model: None,
        version: None,
        sample: 100,
    })
    .unwrap();
    assert!(!report.agrees(), "{report:?}");
    assert_eq!(
        sluice(&["verify-parity", "--config", config.to_str().unwrap(), "--set", "f"]),
        1,
        "a mismatch exits 1"
    );
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
