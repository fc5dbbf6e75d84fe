//! One behavioural suite for both online stores: Redis (the real server) and the embedded
//! redb file. Each case runs against both and asserts what the pipeline and the online reads
//! rely on: rows newer by (time, sequence) replace older ones, a replayed batch changes
//! nothing, state is written only by a fresh batch, counters move once, TTL expiry removes a
//! hash with its tiles, the blocking read agrees with the async one, and a time series keeps
//! one entry per start.

use std::sync::Arc;
use std::time::Duration;

use sluice::store::embedded::Embedded;
use sluice::store::redis::RedisStore;
use sluice::store::{BatchWrite, HashFields, HashWrite, OnlineStore, RowWrite};

/// A store under test and its key prefix.
struct Subject {
    store: Arc<dyn OnlineStore>,
    prefix: String,
    _dir: Option<tempfile::TempDir>,
}

impl Subject {
    async fn redis(tag: &str) -> Subject {
        let store = RedisStore::connect(sluice_tests::live::REDIS).await.unwrap();
        Subject {
            store: Arc::new(store),
            prefix: format!("teststore{tag}{}", std::process::id()),
            _dir: None,
        }
    }

    fn embedded(tag: &str) -> Subject {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(&dir.path().join("store.redb")).unwrap();
        Subject {
            store,
            prefix: format!("teststore{tag}"),
            _dir: Some(dir),
        }
    }

    fn hash(&self, entity: &str) -> String {
        format!("{}:{{{entity}}}", self.prefix)
    }

    fn batch(&self, last_seq: u64, ttl_ms: u64, hashes: Vec<HashWrite>, late: u64) -> BatchWrite {
        BatchWrite {
            applied_key: format!("{}:_applied", self.prefix),
            last_seq,
            ttl_ms,
            fields: vec!["amount".into(), "country".into()],
            hashes,
            late,
            late_key: format!("{}:_late", self.prefix),
        }
    }

    async fn read(&self, entity: &str) -> Vec<(String, String)> {
        let hashes = [self.hash(entity)];
        let found = self.store.read(&hashes).await.unwrap();
        let blocking = {
            let store = self.store.clone();
            let hashes = hashes.to_vec();
            tokio::task::spawn_blocking(move || store.read_blocking(&hashes).unwrap())
                .await
                .unwrap()
        };
        assert_eq!(sorted(&found[0]), sorted(&blocking[0]), "the blocking read agrees");
        sorted(&found[0])
    }

    async fn counter(&self, name: &str) -> u64 {
        self.store.counter(&format!("{}:{name}", self.prefix)).await.unwrap()
    }

    /// Removes the test's keys (also done on drop, so a failing case leaves nothing behind).
    async fn cleanup(&self) {
        self.remove_keys();
    }

    fn remove_keys(&self) {
        if self.store.kind() != "redis" {
            return;
        }
        let Ok(mut redis) = redis::Client::open(sluice_tests::live::REDIS).and_then(|c| c.get_connection()) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut redis)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut redis);
        }
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        self.remove_keys();
    }
}

fn sorted(fields: &HashFields) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    out.sort();
    out
}

fn row(hash: String, seq: u64, time: i64, amount: &str) -> HashWrite {
    HashWrite {
        hash,
        row: Some(RowWrite {
            seq,
            time,
            values: vec![amount.into(), "\"US\"".into()],
        }),
        ..Default::default()
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    out.sort();
    out
}

/// Runs a case against both stores.
async fn both<F, Fut>(tag: &str, case: F)
where
    F: Fn(Subject) -> Fut,
    Fut: std::future::Future<Output = Subject>,
{
    let redis = case(Subject::redis(tag).await).await;
    redis.cleanup().await;
    case(Subject::embedded(tag)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_newer_by_time_then_sequence_replace_older_ones() {
    both("rows", |s| async move {
        let batch = s.batch(
            3,
            0,
            vec![row(s.hash("a"), 3, 100, "1.5"), row(s.hash("b"), 2, 50, "2")],
            0,
        );
        s.store.apply(&batch).await.unwrap();
        let a = pairs(&[("_ts", "100"), ("_seq", "3"), ("amount", "1.5"), ("country", "\"US\"")]);
        assert_eq!(s.read("a").await, a, "{}", s.store.kind());
        // An older event (by time) of a later batch does not replace the row.
        let older = s.batch(4, 0, vec![row(s.hash("a"), 4, 99, "9")], 0);
        s.store.apply(&older).await.unwrap();
        assert_eq!(s.read("a").await, a, "{}: an older row is skipped", s.store.kind());
        // Same time, higher sequence: replaces.
        let tie = s.batch(5, 0, vec![row(s.hash("a"), 5, 100, "7")], 0);
        s.store.apply(&tie).await.unwrap();
        let tied = pairs(&[("_ts", "100"), ("_seq", "5"), ("amount", "7"), ("country", "\"US\"")]);
        assert_eq!(
            s.read("a").await,
            tied,
            "{}: equal time, higher sequence wins",
            s.store.kind()
        );
        assert_eq!(s.counter("_applied").await, 5);
        assert!(s.read("nobody").await.is_empty(), "a missing hash reads empty");
        assert_eq!(s.counter("_nothing").await, 0, "a missing counter reads 0");
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_changes_nothing() {
    both("replay", |s| async move {
        let mut first = row(s.hash("a"), 10, 100, "1");
        first.set = vec![("~agg:0".into(), b"tile-1".to_vec())];
        s.store.apply(&s.batch(10, 0, vec![first], 2)).await.unwrap();
        let before = s.read("a").await;
        // The same batch again (a redelivery), even with other values and state, and a late
        // count: nothing moves.
        let mut replay = row(s.hash("a"), 10, 100, "999");
        replay.set = vec![
            ("~agg:0".into(), b"tile-other".to_vec()),
            ("~agg:1".into(), b"x".to_vec()),
        ];
        replay.delete = vec!["~agg:0".into()];
        s.store.apply(&s.batch(10, 0, vec![replay], 5)).await.unwrap();
        assert_eq!(s.read("a").await, before, "{}", s.store.kind());
        assert_eq!(s.counter("_late").await, 2, "{}: late counted once", s.store.kind());
        assert_eq!(s.counter("_applied").await, 10);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_batch_sets_and_deletes_state_even_without_a_row() {
    both("state", |s| async move {
        let mut first = row(s.hash("a"), 1, 100, "1");
        first.set = vec![("~agg:0".into(), b"t0".to_vec()), ("~agg:1".into(), b"t1".to_vec())];
        s.store.apply(&s.batch(1, 0, vec![first], 0)).await.unwrap();
        // A state-only write (a key aggregated by another field has no row of its own).
        let state = HashWrite {
            hash: s.hash("a"),
            row: None,
            set: vec![("~agg:2".into(), b"t2".to_vec())],
            delete: vec!["~agg:0".into()],
        };
        s.store.apply(&s.batch(2, 0, vec![state], 1)).await.unwrap();
        let expected = pairs(&[
            ("_ts", "100"),
            ("_seq", "1"),
            ("amount", "1"),
            ("country", "\"US\""),
            ("~agg:1", "t1"),
            ("~agg:2", "t2"),
        ]);
        assert_eq!(s.read("a").await, expected, "{}", s.store.kind());
        assert_eq!(s.counter("_late").await, 1);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_expires_with_its_tiles_after_its_ttl() {
    both("ttl", |s| async move {
        let mut first = row(s.hash("a"), 1, 100, "1");
        first.set = vec![("~agg:0".into(), b"t0".to_vec())];
        s.store.apply(&s.batch(1, 400, vec![first], 0)).await.unwrap();
        assert_eq!(s.read("a").await.len(), 5, "{}", s.store.kind());
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(s.read("a").await.is_empty(), "{}: expired", s.store.kind());
        // A new row after expiry starts from nothing: no old tile comes back.
        s.store
            .apply(&s.batch(2, 400, vec![row(s.hash("a"), 2, 50, "3")], 0))
            .await
            .unwrap();
        let fresh = pairs(&[("_ts", "50"), ("_seq", "2"), ("amount", "3"), ("country", "\"US\"")]);
        assert_eq!(s.read("a").await, fresh, "{}", s.store.kind());
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_series_keeps_one_entry_per_start_and_trims_by_age() {
    both("series", |s| async move {
        let series = format!("{}:_windows:60", s.prefix);
        let entry = |start: i64, text: &str| (start, text.as_bytes().to_vec());
        let first = [entry(60, "a:1"), entry(120, "b"), entry(-60, "before the epoch")];
        s.store.put_series(&series, &first, i64::MIN).await.unwrap();
        // Written again (a retry, a restart), a start holds its new entry only.
        s.store
            .put_series(&series, &[entry(120, "b2")], i64::MIN)
            .await
            .unwrap();
        let all = s.store.read_series(&series, i64::MIN, i64::MAX).await.unwrap();
        let kind = s.store.kind();
        assert_eq!(
            all,
            vec![entry(-60, "before the epoch"), entry(60, "a:1"), entry(120, "b2")],
            "{kind}"
        );
        let some = s.store.read_series(&series, 60, 120).await.unwrap();
        assert_eq!(some, vec![entry(60, "a:1")], "{kind}: from is inclusive, to exclusive");
        s.store.put_series(&series, &[entry(180, "c")], 120).await.unwrap();
        let kept = s.store.read_series(&series, i64::MIN, i64::MAX).await.unwrap();
        assert_eq!(
            kept,
            vec![entry(120, "b2"), entry(180, "c")],
            "{kind}: older entries trimmed"
        );
        let none = s.store.read_series("nothing-here", i64::MIN, i64::MAX).await.unwrap();
        assert!(none.is_empty(), "{kind}");
        s
    })
    .await;
}

#[test]
fn the_embedded_logs_keep_messages_and_cursors_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = Embedded::open(&path).unwrap();
        let headers = [("Sluice-Reason", "why".to_string())];
        let out = |subject: &'static str, body: &'static [u8]| sluice::store::embedded::Outgoing {
            subject,
            headers: &headers,
            body,
        };
        let seqs = store
            .append(&[out("a", b"1"), out("b", b"x"), out("a", b"2"), out("a", b"3")])
            .unwrap();
        assert_eq!(seqs, [1, 1, 2, 3], "sequences count per subject");
        let read = store.fetch("a", 0, 2).unwrap();
        assert_eq!(read.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(&read[1].body[..], b"2");
        assert_eq!(read[0].headers, [("Sluice-Reason".to_string(), "why".to_string())]);
        store.ack("reader", 2).unwrap();
        store.ack("reader", 1).unwrap();
        assert_eq!(store.cursor("reader").unwrap(), 2, "a cursor never moves back");
        // A later durable commit makes the cursor durable.
        store.append(&[out("c", b"z")]).unwrap();
    }
    let store = Embedded::open(&path).unwrap();
    assert_eq!(store.cursor("reader").unwrap(), 2);
    assert_eq!(store.head("a").unwrap(), 3);
    let rest = store.fetch("a", store.cursor("reader").unwrap(), 10).unwrap();
    assert_eq!(rest.iter().map(|m| &m.body[..]).collect::<Vec<_>>(), [b"3"]);
}

/// Appends from many threads at once share commits (group commit) and still get every
/// message its own sequence, each append's messages consecutive, every body where its
/// sequence says.
#[test]
fn concurrent_appends_keep_every_message_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(&dir.path().join("store.redb")).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for a in 0..40 {
                    let bodies: Vec<String> = (0..10).map(|m| format!("{t}/{a}/{m}")).collect();
                    let out: Vec<_> = bodies
                        .iter()
                        .map(|b| sluice::store::embedded::Outgoing {
                            subject: if t % 2 == 0 { "even" } else { "odd" },
                            headers: &[],
                            body: b.as_bytes(),
                        })
                        .collect();
                    let seqs = store.append(&out).unwrap();
                    assert!(
                        seqs.windows(2).all(|w| w[1] == w[0] + 1),
                        "one append stays together: {seqs:?}"
                    );
                    got.extend(seqs.into_iter().zip(bodies));
                }
                (t, got)
            })
        })
        .collect();
    let mut by_subject: std::collections::HashMap<&str, Vec<(u64, String)>> = Default::default();
    for thread in threads {
        let (t, got) = thread.join().unwrap();
        by_subject
            .entry(if t % 2 == 0 { "even" } else { "odd" })
            .or_default()
            .extend(got);
    }
    for (subject, mut got) in by_subject {
        got.sort();
        assert_eq!(got.len(), 4 * 40 * 10);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            (1..=1600).collect::<Vec<u64>>(),
            "{subject}: every sequence once"
        );
        assert_eq!(store.head(subject).unwrap(), 1600);
        let stored = store.fetch(subject, 0, 2000).unwrap();
        for (message, (seq, body)) in stored.iter().zip(&got) {
            assert_eq!((message.seq, &message.body[..]), (*seq, body.as_bytes()));
        }
    }
}

/// Within the duplicate window, a message repeating a `Nats-Msg-Id` on its subject is dropped
/// and answered with the first one's sequence (as JetStream does), so a batch redelivered
/// after a crash does not repeat its dead letters; the same id on another subject is new.
#[test]
fn a_repeated_message_id_is_appended_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let with_id = |id: &str| [("Nats-Msg-Id", id.to_string()), ("Sluice-Reason", "why".to_string())];
    let (a, b) = (with_id("dlq:s:v1:7:w"), with_id("dlq:s:v1:9:w"));
    fn out<'a>(
        subject: &'a str,
        headers: &'a [(&'static str, String)],
        body: &'a [u8],
    ) -> sluice::store::embedded::Outgoing<'a> {
        sluice::store::embedded::Outgoing { subject, headers, body }
    }
    {
        let store = Embedded::open(&path).unwrap();
        assert_eq!(
            store.append(&[out("dlq", &a, b"1"), out("dlq", &b, b"2")]).unwrap(),
            [1, 2]
        );
        // Redelivered: the same ids again, one of them twice in one append, plus a new message.
        assert_eq!(
            store
                .append(&[out("dlq", &b, b"2"), out("dlq", &[], b"3"), out("dlq", &b, b"2")])
                .unwrap(),
            [2, 3, 2]
        );
        assert_eq!(
            store.append(&[out("other", &a, b"1")]).unwrap(),
            [1],
            "ids are per subject"
        );
    }
    // Across a reopen (a crash and restart) the ids are still remembered.
    let store = Embedded::open(&path).unwrap();
    assert_eq!(store.append(&[out("dlq", &a, b"1")]).unwrap(), [1]);
    assert_eq!(store.head("dlq").unwrap(), 3);
    let bodies: Vec<_> = store.fetch("dlq", 0, 10).unwrap().into_iter().map(|m| m.body).collect();
    assert_eq!(bodies, [&b"1"[..], b"2", b"3"]);
}

/// With a log retention, messages older than it leave the file as later appends come; newer
/// ones, and other subjects' recent messages, stay; sequences go on from the head.
#[test]
fn log_retention_removes_old_messages_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(&dir.path().join("store.redb")).unwrap();
    store.set_log_retention(Some(std::time::Duration::from_secs(2)));
    let out = |subject: &'static str, body: &'static [u8]| sluice::store::embedded::Outgoing {
        subject,
        headers: &[],
        body,
    };
    assert_eq!(
        store.append(&[out("a", b"1"), out("a", b"2"), out("a", b"3")]).unwrap(),
        [1, 2, 3]
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(store.append(&[out("b", b"x")]).unwrap(), [1]);
    assert_eq!(store.fetch("a", 0, 10).unwrap().len(), 3, "not yet past the retention");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(store.append(&[out("a", b"4")]).unwrap(), [4]);
    let left: Vec<u64> = store.fetch("a", 0, 10).unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(left, [4], "messages older than 2 s removed");
    assert_eq!(store.first_after("a", 0).unwrap(), Some(4));
    assert_eq!(store.head("a").unwrap(), 4);
    assert_eq!(store.fetch("b", 0, 10).unwrap().len(), 1, "b's message is 1 s old");
}

/// Whether a retry can help is part of each error: the pipeline retries an outage and stops
/// on a refusal instead of looping on it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_say_whether_a_retry_can_help() {
    use sluice::fault::Transient;
    use sluice::store::StoreError;
    // Nothing listens on port 1: the store is unavailable, which may pass.
    match RedisStore::connect("redis://127.0.0.1:1/").await {
        Err(e @ StoreError::Unavailable(_)) => assert!(e.transient(), "{e}"),
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected to port 1"),
    }
    // A key of another type: Redis refuses the read, and asking again cannot help.
    let subject = Subject::redis("wrongtype").await;
    let key = subject.hash("e1");
    let client = redis::Client::open(sluice_tests::live::REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("text")
        .query_async(&mut conn)
        .await
        .unwrap();
    let refused = subject.store.read(std::slice::from_ref(&key)).await.unwrap_err();
    let blocking = subject.store.read_blocking(std::slice::from_ref(&key)).unwrap_err();
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(matches!(refused, StoreError::Failed(_)), "{refused:?}");
    assert!(!refused.transient() && !blocking.transient(), "{refused} / {blocking}");
    assert!(refused.to_string().contains("WRONGTYPE"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_that_may_not_be_created_is_a_refusal() {
    use sluice::bus::{Bus, BusError};
    use sluice::fault::Transient;
    let client = async_nats::connect(sluice_tests::live::NATS).await.unwrap();
    let bus = Bus::Nats(async_nats::jetstream::new(client));
    let name = format!("SLUICE_TEST_MISSING_{}", std::process::id());
    let e = bus
        .ensure_stream(&name, &format!("test.missing.{}", std::process::id()), false)
        .await
        .unwrap_err();
    assert!(matches!(e, BusError::Refused(_)), "{e:?}");
    assert!(!e.transient());
    assert!(e.to_string().contains("set `create = true` to create it"), "{e}");
}
