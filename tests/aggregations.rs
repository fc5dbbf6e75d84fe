//! Windowed aggregations against the real NATS and Redis: online reads evaluate the windows as
//! of the read time from the tiles in Redis; events within the allowed lateness count, later
//! ones go to the late subject and a counter.

use std::time::Duration;

use serde_json::json;
use sluice::event::Value;
use sluice::online::OnlineView;
use sluice_tests::live::{start, wait_for, Live};

const MIN_MS: i64 = 60_000;
const HOUR_US: i64 = 3_600_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_reads_evaluate_windows_as_of_the_read_time_and_late_events_are_set_aside() {
    let live = Live::new("asof");
    // The fraud example, plus the number of distinct merchants per user over 24h.
    let config_path = live.write_fraud_config(|set| {
        let steps = set["steps"].as_array_mut().unwrap();
        let aggregate = steps
            .iter_mut()
            .find(|s| s["kind"].as_str() == Some("aggregate"))
            .unwrap();
        let distinct: toml::Table = toml::from_str(
            r#"
            field = "merchant"
            functions = ["distinct"]
            windows = ["24h"]
        "#,
        )
        .unwrap();
        aggregate["aggregations"].as_array_mut().unwrap().push(distinct.into());
    });
    // A 10-minute period and a 10-minute lateness (the fraud example's).
    let t = 1_764_000_000_000i64; // ms
    let tx = |id: u64, user: &str, usd: f64, ts: i64, merchant: &str| {
        serde_json::to_vec(&json!({
            "transaction_id": id, "user_id": user, "amount": usd, "currency": "USD",
            "merchant": merchant, "country": "US", "ts": ts,
        }))
        .unwrap()
    };
    let late = tx(5, "a", 1000.0, t + 2 * MIN_MS - 20 * MIN_MS, "m9");
    let events = vec![
        tx(1, "a", 10.0, t, "m1"),
        tx(2, "a", 20.0, t + MIN_MS, "m2"),
        tx(3, "a", 30.0, t + 2 * MIN_MS, "m1"),
        // 5 minutes behind "a"'s latest: within the lateness, it counts.
        tx(4, "a", 40.0, t + 2 * MIN_MS - 5 * MIN_MS, "m3"),
        // 20 minutes behind: later than the lateness.
        late.clone(),
        tx(6, "b", 5.0, t, "m1"),
    ];
    live.publish(&events).await;
    let (stop, task) = start(&live, &config_path);
    wait_for("every event applied", Duration::from_secs(60), async || {
        live.applied().await == events.len() as u64
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();

    let config = sluice::config::load(&config_path).unwrap();
    let view = OnlineView::new(&live.prefix, &config.feature_sets[0]).unwrap();
    let mut redis = live.redis().await;
    let store = live.store().await;
    let last = (t + 2 * MIN_MS) * 1000; // "a"'s latest event, µs
    let read = async |at: i64| {
        let rows = view.read(&store, &["a", "b", "nobody"], at).await.unwrap();
        assert!(rows[2].is_none(), "an entity never seen has no row");
        let a = rows[0].clone().expect("a has a row");
        assert_eq!(a.time, last, "the row written last is a's latest event");
        a.values
    };

    let now = read(last).await;
    assert_eq!(
        now["tx_count_1h"],
        Value::Integer(4),
        "the late-but-allowed event counts"
    );
    assert_eq!(now["amount_usd_count_24h"], Value::Integer(4));
    assert_eq!(
        now["amount_usd_sum_24h"],
        Value::Float(100.0),
        "the late event (1000) does not"
    );
    assert_eq!(now["amount_usd_max_1h"], Value::Float(40.0));
    assert_eq!(now["merchant_distinct_24h"], Value::Integer(3));

    let two_hours = read(last + 2 * HOUR_US).await;
    assert_eq!(two_hours["tx_count_1h"], Value::Integer(0), "the 1h window is empty");
    assert_eq!(two_hours["amount_usd_sum_1h"], Value::Null);
    assert_eq!(
        two_hours["amount_usd_count_24h"],
        Value::Integer(4),
        "the 24h window is intact"
    );
    assert_eq!(two_hours["amount_usd_sum_24h"], Value::Float(100.0));
    assert_eq!(two_hours["amount_usd_mean_24h"], Value::Float(25.0));

    let next_day = read(last + 25 * HOUR_US).await;
    for (name, want) in [
        ("tx_count_1h", Value::Integer(0)),
        ("amount_usd_count_24h", Value::Integer(0)),
        ("amount_usd_sum_24h", Value::Null),
        ("amount_usd_stddev_24h", Value::Null),
        ("amount_usd_max_24h", Value::Null),
        ("merchant_distinct_24h", Value::Integer(0)),
    ] {
        assert_eq!(next_day[name], want, "{name} a day later");
    }
    // Values that describe the event itself keep the value written with it.
    assert_eq!(next_day["amount_usd"], Value::Float(30.0));

    let letters = live.late_events().await;
    assert_eq!(letters.len(), 1, "one late event, on sluice.late.<set>");
    let (reason, step, seq, body) = &letters[0];
    assert_eq!((step.as_str(), *seq), ("per_user", 5));
    assert!(reason.starts_with("late: event time 20"), "{reason}");
    assert!(
        reason.contains("Z is ") && reason.ends_with(" s"),
        "times as RFC 3339, spans in seconds: {reason}"
    );
    assert_eq!(body, &late, "the original bytes");
    assert!(
        live.dead_letters().await.is_empty(),
        "a late event is not a dead letter"
    );
    let counted: Option<u64> = redis::cmd("GET")
        .arg(format!("{}:{}:v1:_late", live.prefix, live.set))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(counted, Some(1), "the late counter");
    live.cleanup().await;
}
