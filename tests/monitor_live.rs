//! Live monitoring on real NATS JetStream and Redis, the pipeline in a child process that is
//! killed with SIGKILL mid-stream twice and started again. Twelve 2-second windows of events (four
//! from the reference's distribution, four with `amount` shifted by one standard deviation
//! and a new `country` mix, four usual again): both changed features reach `drift` and
//! return to `ok`, `steady` stays `ok`, each status change is one event on
//! `sluice.drift.<set>`, the gauge shows it; and every window is in the store's time series
//! and in Parquet exactly once, none lost, none counted twice, across the kills.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_tests::live::{http, wait_for, with_http, Live};
use sluice_tests::samples::{reference, window_events};

const ADMIN: &str = "monitor-live-admin-token";
const WINDOW_MS: i64 = 2000;
const PER_WINDOW: usize = 1000;
const WINDOWS: i64 = 12;

fn config(live: &Live, port: u16) -> PathBuf {
    let data = live.dir.path().join("data");
    sluice::catalog::references::References::new(&data)
        .save(&reference(&live.set, "base"))
        .unwrap();
    let text = format!(
        r#"[host]
nats = "{nats}"
redis = "{redis}"
redis_prefix = "{prefix}"
data_dir = "{data}"

[[feature_set]]
name = "{set}"
entity = "user"
timestamp = {{ field = "ts", format = "epoch_ms" }}
source = {{ kind = "jetstream", stream = "{stream}", subject = "{subject}", max_wait_ms = 5 }}
targets = [{{ kind = "redis" }}]

[feature_set.monitor]
reference = "base"
window = "2s"
policy = {{ min_count = 200 }}
"#,
        nats = live.nats_url,
        redis = live.redis_url,
        prefix = live.prefix,
        data = data.display(),
        set = live.set,
        stream = live.stream,
        subject = live.subject,
    );
    let path = live.dir.path().join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    with_http(&path, &[("admin", ADMIN, &["admin"], &[])]);
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    config["http"]
        .as_table_mut()
        .unwrap()
        .insert("bind".into(), format!("127.0.0.1:{port}").into());
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path
}

/// Not a test on its own: the body of the child process the test starts and kills.
#[test]
#[ignore]
fn child_pipeline() {
    sluice_tests::live::run_child_from_env();
}

fn spawn_child(config: &Path) -> sluice_tests::live::Child {
    sluice_tests::live::spawn_child("child_pipeline", config)
}

async fn wait_ready(address: SocketAddr) {
    wait_for("the child serving and ready", Duration::from_secs(60), async || {
        tokio::net::TcpStream::connect(address).await.is_ok()
            && http(address, "GET", "/readyz", Some(ADMIN), b"").await.0 == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_on_nats_and_redis_survives_two_kills_and_reaches_the_subject() {
    let live = Live::new("monlive");
    let port = sluice_tests::live::restart_port();
    let config = config(&live, port);
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let js = live.jetstream().await;
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: live.stream.clone(),
        subjects: vec![live.subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut child = spawn_child(&config);
    wait_ready(address).await;

    let first = (sluice_tests::live::now_ms() / WINDOW_MS + 1) * WINDOW_MS;
    for w in 0..WINDOWS {
        let start = first + w * WINDOW_MS;
        sluice_tests::live::sleep_until_ms(start + 50).await;
        let mut acks = Vec::new();
        for event in window_events(w, start, PER_WINDOW) {
            let body = serde_json::to_vec(&event).unwrap();
            acks.push(js.publish(live.subject.clone(), body.into()).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
        if w == 6 || w == 9 {
            // Mid-window: at 6 with the shifted windows 4 and 5 closing or just closed (the
            // statuses' hysteresis must survive), at 9 while they clear.
            tokio::time::sleep(Duration::from_millis(900)).await;
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            child = spawn_child(&config);
        }
    }
    wait_ready(address).await;

    let windows = sluice_tests::live::closed_windows(address, &live.set, ADMIN, WINDOWS as usize).await;

    // Every window once, in order: none lost, none doubled across the kill.
    let starts: Vec<i64> = windows
        .iter()
        .map(|w| sluice::sources::decode::parse_time_text(w["start"].as_str().unwrap(), "start").unwrap() / 1000)
        .collect();
    let expected: Vec<i64> = (0..WINDOWS).map(|w| first + w * WINDOW_MS).collect();
    assert_eq!(starts, expected, "one window per 2 s, none lost or doubled");
    let rows: Vec<(u64, bool)> = windows
        .iter()
        .map(|w| (w["rows"].as_u64().unwrap(), w["partial"].as_bool().unwrap_or(false)))
        .collect();
    eprintln!("rows per window (rows, partial): {rows:?}");
    // The same counts as a run without kills: the input is acknowledged only up to what a
    // stored checkpoint holds, so the windows open at a kill lose no row and count none twice.
    for (w, (count, _)) in rows.iter().enumerate() {
        assert_eq!(*count, PER_WINDOW as u64, "window {w}: every row once");
    }
    // `partial` marks a window that started before a restart (resumed from a checkpoint):
    // those around the kills (the open ones, and the next when the restart took longer than
    // its start), never the first four nor the last.
    assert!(
        rows.iter().enumerate().all(|(w, r)| !r.1 || (4..=10).contains(&w)),
        "only windows around the kills are marked as resumed"
    );
    assert!(rows[5].1 || rows[6].1, "a window open at the first kill is marked");

    let statuses = |feature: &str| -> Vec<String> {
        windows
            .iter()
            .map(|w| w["features"][feature]["status"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    for feature in ["amount", "country"] {
        let s = statuses(feature);
        assert_eq!(s[3], "ok", "{feature}: {s:?}");
        assert_eq!(s[7], "drift", "{feature}: drift within the shifted windows: {s:?}");
        assert_eq!(s[11], "ok", "{feature}: cleared after the shift: {s:?}");
    }
    assert!(statuses("steady").iter().all(|s| s == "ok"), "{:?}", statuses("steady"));

    // The store's time series and the Parquet files hold each window once.
    let series = format!("{}:{}:v1:_windows:2", live.prefix, live.set);
    let mut redis = live.redis().await;
    let scores: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
        .arg(&series)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut redis)
        .await
        .unwrap();
    let stored: Vec<i64> = scores.iter().map(|(_, s)| (*s as i64) / 1000).collect();
    assert_eq!(stored, expected, "the store's series");
    let folder = live
        .dir
        .path()
        .join("data/_monitor")
        .join(&live.set)
        .join("v1/window=2s");
    let files = sluice_tests::live::monitor_files(&folder);
    let want: Vec<(i64, i64)> = expected.iter().map(|s| (*s, 3)).collect();
    assert_eq!(files, want, "one Parquet file per window, one row per feature");

    // Each status change is one event on the subject.
    let events = live.drift_events().await;
    let changes: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["feature"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for feature in ["amount", "country"] {
        let of: Vec<&str> = changes
            .iter()
            .filter(|(f, _)| f == feature)
            .map(|(_, s)| s.as_str())
            .collect();
        assert_eq!(of, vec!["drift", "ok"], "{feature}: {events:?}");
    }
    assert!(!changes.iter().any(|(f, _)| f == "steady"), "{events:?}");

    let (_, metrics) = http(address, "GET", "/metrics", Some(ADMIN), b"").await;
    let gauge = format!(
        r#"sluice_feature_drift_status{{set="{}",version="1",feature="amount"}} 0"#,
        live.set
    );
    assert!(metrics.contains(&gauge), "{metrics}");

    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "a graceful stop exits 0");
    live.cleanup().await;
}
