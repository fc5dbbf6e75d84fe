//! Live monitoring in the embedded mode: a set with `[feature_set.monitor]` profiles the rows
//! it writes in 2-second windows of event time and judges them against a stored reference.
//! Windows from the reference's distribution stay `ok`; a numeric feature shifted by one
//! standard deviation and a categorical one whose mix changed reach `drift` after the
//! hysteresis (two windows), an unchanged feature stays `ok`, and both return to `ok` when
//! the shift ends. The drift route, the statistics route and the gauges show it.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value as Json};
use sluice_tests::live::{http, start_serving, wait_for, with_http};
use sluice_tests::samples::{reference, shifted, shifted_reference, window_events};

const ADMIN: &str = "monitoring-admin-token";
const WINDOW_MS: i64 = 2000;
const PER_WINDOW: usize = 1000;

/// The reference, as `sluice profile` stores it.
fn store_reference(data_dir: &Path) {
    sluice::catalog::references::References::new(data_dir)
        .save(&reference("scores", "base"))
        .unwrap();
}

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("sluice.toml");
    let text = format!(
        r#"[host]
data_dir = "{data}"

[[feature_set]]
name = "scores"
entity = "user"
timestamp = {{ field = "ts", format = "epoch_ms" }}
source = {{ kind = "jetstream", stream = "SCORES", subject = "scores.events", max_wait_ms = 5 }}
targets = [{{ kind = "redis" }}]

[feature_set.monitor]
reference = "base"
window = "2s"
policy = {{ min_count = 200 }}
"#,
        data = dir.join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    with_http(&path, &[("admin", ADMIN, &["admin"], &[])]);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shift_and_a_new_mix_reach_drift_after_two_windows_and_clear_after_two() {
    let dir = tempfile::tempdir().unwrap();
    store_reference(&dir.path().join("data"));
    let (address, stop, task) = start_serving(&config(dir.path())).await;
    wait_for("the pipelines ready", Duration::from_secs(30), async || {
        http(address, "GET", "/readyz", Some(ADMIN), b"").await.0 == 200
    })
    .await;

    // 12 windows, sent as each one starts: 4 usual, 4 shifted (amount + 1σ, a new country
    // mix), 4 usual again. Each window's events carry times inside it.
    let first = (sluice_tests::live::now_ms() / WINDOW_MS + 1) * WINDOW_MS;
    for w in 0..12i64 {
        let start = first + w * WINDOW_MS;
        sluice_tests::live::sleep_until_ms(start + 50).await;
        let mut events = window_events(w, start, PER_WINDOW);
        for event in &mut events {
            event["clicked"] = json!(if shifted(w) { 1 } else { 0 });
        }
        for chunk in events.chunks(200) {
            let body = serde_json::to_vec(chunk).unwrap();
            let (status, answer) = http(address, "POST", "/v1/ingest/scores", Some(ADMIN), &body).await;
            assert_eq!(status, 202, "{answer}");
        }
    }
    let drift = async || {
        let (status, body) = http(address, "GET", "/v1/feature-sets/scores/drift", Some(ADMIN), b"").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Json>(&body).unwrap()
    };
    wait_for("12 windows closed", Duration::from_secs(30), async || {
        drift().await["versions"][0]["windows_closed"].as_u64() >= Some(12)
    })
    .await;
    let now = drift().await;
    let version = &now["versions"][0];
    assert_eq!(version["reference"]["name"], "base", "{now}");
    assert_eq!(version["late_rows"], 0, "{now}");
    // A feature the reference does not have is profiled but never judged, and says so.
    assert_eq!(version["features"]["clicked"]["status"], "no_reference", "{now}");
    assert_eq!(version["no_reference"], json!(["clicked"]), "{now}");

    let (status, body) = http(address, "GET", "/v1/feature-sets/scores/statistics", Some(ADMIN), b"").await;
    assert_eq!(status, 200, "{body}");
    let statistics: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(statistics["versions"][0]["window_seconds"], 2, "{statistics}");
    let windows = statistics["versions"][0]["windows"].as_array().unwrap().clone();
    assert_eq!(windows.len(), 12, "{statistics}");
    assert!(windows.iter().all(|w| w["partial"] == false), "{statistics}");
    // The hourly roll-up is asked by its width; a width not kept is refused with the list.
    let (status, body) = http(
        address,
        "GET",
        "/v1/feature-sets/scores/statistics?window=1h",
        Some(ADMIN),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let hourly: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(hourly["versions"][0]["window_seconds"], 3600, "{hourly}");
    let (status, body) = http(
        address,
        "GET",
        "/v1/feature-sets/scores/statistics?window=5m",
        Some(ADMIN),
        b"",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("2s, 3600s, 86400s"), "{body}");
    let statuses = |feature: &str| -> Vec<String> {
        windows
            .iter()
            .map(|w| w["features"][feature]["status"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    let expected: Vec<&str> = ["ok"; 5].into_iter().chain(["drift"; 4]).chain(["ok"; 3]).collect();
    assert_eq!(
        statuses("amount"),
        expected,
        "amount: raised after two shifted windows, cleared after two usual ones"
    );
    assert_eq!(statuses("country"), expected, "country: the same for the new mix");
    assert_eq!(statuses("steady"), vec!["ok"; 12], "an unchanged feature stays ok");
    assert!(
        windows.iter().all(|w| w["rows"] == PER_WINDOW),
        "every row in its window"
    );
    assert!(windows[0]["features"]["user"].is_null() && windows[0]["features"]["ts"].is_null());
    let shifted = &windows[5]["features"]["amount"];
    assert!(shifted["scores"]["psi"].as_f64().unwrap() > 0.25, "{shifted}");
    assert!(windows[4]["features"]["amount"]["sudden"]["psi"].as_f64().unwrap() > 0.25);
    assert_eq!(version["features"]["amount"]["status"], "ok");
    assert_eq!(version["drifting"], json!([]));

    let (_, metrics) = http(address, "GET", "/metrics", Some(ADMIN), b"").await;
    assert!(
        metrics.contains(r#"sluice_feature_drift_status{set="scores",version="1",feature="amount"} 0"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sluice_feature_drift{set="scores",version="1",feature="amount",metric="psi"}"#));

    // An unmonitored or unknown set says so.
    let (status, body) = http(address, "GET", "/v1/feature-sets/nope/drift", Some(ADMIN), b"").await;
    assert_eq!(status, 404, "{body}");
    stop.send(true).unwrap();
    task.await.unwrap();

    // The closed windows are kept by the embedded store and in Parquet under the data folder:
    // a restart serves the same twelve, once each.
    let parquet = dir.path().join("data/_monitor/scores/v1/window=2s");
    let files: Vec<_> = walk(&parquet);
    assert_eq!(files.len(), 12, "{files:?}");
    let (address, stop, task) = start_serving(&config(dir.path())).await;
    wait_for("the pipelines ready again", Duration::from_secs(30), async || {
        http(address, "GET", "/readyz", Some(ADMIN), b"").await.0 == 200
    })
    .await;
    let (status, body) = http(address, "GET", "/v1/feature-sets/scores/statistics", Some(ADMIN), b"").await;
    assert_eq!(status, 200, "{body}");
    let again: Json = serde_json::from_str(&body).unwrap();
    let starts = |windows: &[Json]| -> Vec<String> { windows.iter().map(|w| w["start"].to_string()).collect() };
    let after = again["versions"][0]["windows"].as_array().unwrap();
    assert_eq!(starts(after), starts(&windows), "{again}");
    assert_eq!(after[6]["features"]["amount"]["status"], "drift");
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// A model retrained on the shifted data: its reference, activated over HTTP while rows flow,
/// judges the windows opened after the switch (the window open at the switch finishes against
/// the first one), the drift clears after the hysteresis, and a restart keeps the choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_activated_over_http_judges_the_next_windows_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    store_reference(&data);
    let references = sluice::catalog::references::References::new(&data);
    references.save(&shifted_reference("scores", "retrained")).unwrap();
    let base_id = references.load("scores", "base").unwrap().id();
    let retrained_id = references.load("scores", "retrained").unwrap().id();
    let config = config(dir.path());
    let (address, stop, task) = start_serving(&config).await;
    let ready = async || {
        wait_for("the pipelines ready", Duration::from_secs(30), async || {
            http(address, "GET", "/readyz", Some(ADMIN), b"").await.0 == 200
        })
        .await;
    };
    ready().await;
    let activate = async |query: &str| {
        let path = format!("/v1/feature-sets/scores/references/{query}");
        let (status, body) = http(address, "POST", &path, Some(ADMIN), b"").await;
        (
            status,
            serde_json::from_str::<Json>(&body).unwrap_or(Json::String(body)),
        )
    };
    let (status, body) = activate("nope/activate").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.to_string().contains("PUT /v1/feature-sets/scores/references/nope"),
        "{body}"
    );
    let (status, body) = activate("retrained/activate?version=7").await;
    assert_eq!(status, 404, "{body}");

    // Every window is drawn from the shifted distribution: drift against "base" until the
    // switch at the start of window 4, ok against "retrained" after it.
    let send = async |w: i64, start: i64| {
        let events = window_events(4 + w % 4, start, PER_WINDOW);
        for chunk in events.chunks(200) {
            let body = serde_json::to_vec(chunk).unwrap();
            let (status, answer) = http(address, "POST", "/v1/ingest/scores", Some(ADMIN), &body).await;
            assert_eq!(status, 202, "{answer}");
        }
    };
    let first = (sluice_tests::live::now_ms() / WINDOW_MS + 1) * WINDOW_MS;
    for w in 0..8i64 {
        let start = first + w * WINDOW_MS;
        sluice_tests::live::sleep_until_ms(start + 50).await;
        if w == 4 {
            let (status, body) = activate("retrained/activate").await;
            assert_eq!(status, 200, "{body}");
            let version = &body["versions"][0];
            assert_eq!(version["previous"], "base", "{body}");
            assert_eq!(version["reference"], "retrained", "{body}");
            assert_eq!(
                version["held_references"],
                json!([base_id]),
                "window 3 is still open: {body}"
            );
        }
        send(w, start).await;
    }
    let windows = sluice_tests::live::closed_windows(address, "scores", ADMIN, 8).await;
    let of = |key: &str| -> Vec<String> {
        windows
            .iter()
            .map(|w| w.pointer(key).and_then(Json::as_str).unwrap_or("-").to_string())
            .collect()
    };
    let judged_by: Vec<&str> = [base_id.as_str(); 4]
        .into_iter()
        .chain([retrained_id.as_str(); 4])
        .collect();
    assert_eq!(
        of("/reference"),
        judged_by,
        "each window by the reference active when it opened"
    );
    assert_eq!(
        of("/features/amount/verdict"),
        ["drift"; 4].into_iter().chain(["ok"; 4]).collect::<Vec<_>>()
    );
    let statuses: Vec<&str> = ["ok"].into_iter().chain(["drift"; 4]).chain(["ok"; 3]).collect();
    assert_eq!(
        of("/features/amount/status"),
        statuses,
        "cleared after two windows, as the policy says"
    );
    assert_eq!(of("/features/country/status"), statuses);
    assert_eq!(of("/features/steady/status"), vec!["ok"; 8]);
    assert_eq!(
        windows[4]["features"]["amount"]["sudden"],
        json!({}),
        "the first window of a new reference is not compared with bins of the old one"
    );
    let drift = async || {
        let (status, body) = http(address, "GET", "/v1/feature-sets/scores/drift", Some(ADMIN), b"").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Json>(&body).unwrap()
    };
    let now = drift().await;
    assert_eq!(now["versions"][0]["reference"]["name"], "retrained", "{now}");
    assert!(now["versions"][0]["held_references"].is_null(), "let go: {now}");
    stop.send(true).unwrap();
    task.await.unwrap();

    // The definition still names "base"; the switch stands across the restart.
    let (address, stop, task) = start_serving(&config).await;
    wait_for("the pipelines ready again", Duration::from_secs(30), async || {
        http(address, "GET", "/readyz", Some(ADMIN), b"").await.0 == 200
    })
    .await;
    let (status, body) = http(address, "GET", "/v1/feature-sets/scores/drift", Some(ADMIN), b"").await;
    assert_eq!(status, 200, "{body}");
    let again: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(again["versions"][0]["reference"]["name"], "retrained", "{again}");
    assert_eq!(again["versions"][0]["features"]["amount"]["status"], "ok", "{again}");
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// The files under a folder, recursively.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Not a test on its own: the child process the embedded kill test starts and kills
/// (`SLUICE_CHILD_CONFIG` names its config). It runs `sluice run` as the binary does.
#[test]
#[ignore]
fn monitoring_child() {
    sluice_tests::live::run_child_from_env();
}

/// The embedded mode killed with SIGKILL in the middle of a monitored run (a window open,
/// the shifted windows' hysteresis under way) and started again: every window is in the
/// statistics route and in Parquet once, with every row counted once, and the verdicts are
/// those of a run without a kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_window_the_embedded_monitor_counts_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    store_reference(&dir.path().join("data"));
    let config = config(dir.path());
    let address = sluice_tests::live::fixed_address(&config);
    let spawn = || sluice_tests::live::spawn_child("monitoring_child", &config);
    let ready = async || sluice_tests::live::wait_ready(address, ADMIN).await;
    let mut child = spawn();
    ready().await;

    let first = (sluice_tests::live::now_ms() / WINDOW_MS + 1) * WINDOW_MS;
    for w in 0..12i64 {
        let start = first + w * WINDOW_MS;
        sluice_tests::live::sleep_until_ms(start + 50).await;
        let events = window_events(w, start, PER_WINDOW);
        for chunk in events.chunks(200) {
            let body = serde_json::to_vec(chunk).unwrap();
            let (status, answer) = http(address, "POST", "/v1/ingest/scores", Some(ADMIN), &body).await;
            assert_eq!(status, 202, "{answer}");
        }
        if w == 6 {
            // The window's rows stored in the log, those of the last bodies still being
            // profiled (a checkpoint is stored every 250 ms); window 5 still open.
            tokio::time::sleep(Duration::from_millis(20)).await;
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            child = spawn();
            ready().await;
        }
    }
    let windows = sluice_tests::live::closed_windows(address, "scores", ADMIN, 12).await;
    let starts: Vec<i64> = windows
        .iter()
        .map(|w| sluice::sources::decode::parse_time_text(w["start"].as_str().unwrap(), "start").unwrap() / 1000)
        .collect();
    let expected: Vec<i64> = (0..12).map(|w| first + w * WINDOW_MS).collect();
    assert_eq!(starts, expected, "one window per 2 s, none lost or doubled");
    let rows: Vec<u64> = windows.iter().map(|w| w["rows"].as_u64().unwrap()).collect();
    assert_eq!(rows, vec![PER_WINDOW as u64; 12], "every row once, across the kill");
    let statuses = |feature: &str| -> Vec<String> {
        windows
            .iter()
            .map(|w| w["features"][feature]["status"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    let verdicts: Vec<&str> = ["ok"; 5].into_iter().chain(["drift"; 4]).chain(["ok"; 3]).collect();
    assert_eq!(statuses("amount"), verdicts, "the hysteresis survives the kill");
    assert_eq!(statuses("country"), verdicts);
    assert_eq!(statuses("steady"), vec!["ok"; 12]);
    child.kill().unwrap();
    child.wait().unwrap();

    // Parquet: one file per window, one row per feature.
    let parquet = dir.path().join("data/_monitor/scores/v1/window=2s");
    let files = sluice_tests::live::monitor_files(&parquet);
    let want: Vec<(i64, i64)> = expected.iter().map(|s| (*s, 3)).collect();
    assert_eq!(files, want, "one Parquet file per window");
}
