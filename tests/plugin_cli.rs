//! `sluice plugin check` and `sluice plugin run`, as a plugin author uses them.

use sluice::cli::plugin::{check, run, RunOptions};
use sluice_tests::*;

fn options(config: &[&str]) -> RunOptions {
    RunOptions {
        config: config.iter().map(|s| s.to_string()).collect(),
        key: "user_id".into(),
        time: "ts".into(),
        batch: 2,
        meta: true,
        grant_clock: false,
    }
}

#[test]
fn run_reads_jsonl_and_writes_output_events_in_order_with_errors_apart() {
    let input = concat!(
        r#"{"user_id":"u1","amount":10,"currency":"EUR","ts":"2026-11-26T10:00:00Z"}"#,
        "\n",
        r#"{"user_id":"u2","amount":5.5,"currency":"XYZ","ts":1764151200000}"#,
        "\n",
        "\n",
        r#"{"user_id":"u3","amount":null,"currency":"USD","ts":1764151200000}"#,
        "\n",
        r#"{"user_id":"u4","amount":2,"currency":"USD","ts":1764151200000}"#,
        "\n",
    );
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let rates = format!("rates={RATES}");
    let code = run(
        &rust_plugin("currency"),
        Some(cache_dir()),
        options(&[&rates]),
        input.as_bytes(),
        &mut out,
        &mut errors,
    )
    .unwrap();
    assert_eq!(code, 1, "one event failed");
    assert_eq!(
        String::from_utf8(errors).unwrap(),
        "line 2: unknown currency \"XYZ\"\n",
        "the failed line, by its number, with the plugin's reason"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["amount_usd"], serde_json::json!(10.0 * 1.08));
    assert_eq!(lines[0]["_key"], "u1");
    assert_eq!(lines[0]["_time"], "2026-11-26T10:00:00Z");
    assert_eq!(lines[1]["user_id"], "u3");
    assert!(lines[1]["amount_usd"].is_null());
    assert_eq!(lines[2]["amount_usd"], serde_json::json!(2.0));
    let keys: Vec<_> = lines[0].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        ["user_id", "amount", "currency", "ts", "amount_usd", "_key", "_time"],
        "input order kept"
    );
}

#[test]
fn run_reports_a_bad_config_and_bad_lines_clearly() {
    let err = run(
        &rust_plugin("currency"),
        Some(cache_dir()),
        options(&["rates"]),
        &b""[..],
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("expected KEY=VALUE"), "{err}");
    let err = run(
        &rust_plugin("currency"),
        Some(cache_dir()),
        options(&[]),
        &b""[..],
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("config key \"rates\" is required"),
        "{err:#}"
    );
    let rates = format!("rates={RATES}");
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let code = run(
        &rust_plugin("currency"),
        Some(cache_dir()),
        options(&[&rates]),
        &b"[1]\nnot json\n"[..],
        &mut out,
        &mut errors,
    )
    .unwrap();
    assert_eq!(code, 1);
    assert!(out.is_empty());
    let errors = String::from_utf8(errors).unwrap();
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 2, "{errors}");
    assert_eq!(lines[0], "line 1: expected a JSON object, found an array", "{errors}");
    assert!(lines[1].starts_with("line 2: invalid JSON: "), "{errors}");
}

#[test]
fn check_accepts_a_plugin_and_refuses_another_world() {
    assert_eq!(check(&rust_plugin("currency"), Some(cache_dir())).unwrap(), 0);
    assert_eq!(check(&rust_plugin("bad-version"), Some(cache_dir())).unwrap(), 1);
}
