//! Capture of what a model was served, what it predicted and the labels that came later
//! (`[[model]]`): each is a JSON record on `sluice.capture.<model>` (stream `SLUICE_CAPTURE`,
//! or the embedded log), with a `Nats-Msg-Id` of its kind, model and request id, so a retried
//! post or a lookup captured twice is stored once within the duplicate window.
//!
//! A lookup's record is queued off the request path ([`Recorder`]): a bounded queue drained in
//! batches of up to 1,000, each model's records of a batch published as one message of JSON
//! lines (header `Sluice-Records`), so a lookup pays for one copy of its answer and a queue
//! push, and the bus one message per batch rather than per lookup (a message per lookup
//! halved the lookups' rate on 2 cores). When the queue is full or the bus refuses a batch
//! after retries, the records are dropped and counted (`sluice_capture_lost_total{model}`);
//! the lookup still answers. A lookup retried with the same request id is recorded twice
//! (its records say so by their id). Predictions and labels are published one message each
//! with its `Nats-Msg-Id` before their route answers: a 202 means stored, once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::bus::{Bus, Publish};
use crate::event::{Event, Value};
use crate::metrics::Metrics;
use crate::rows::Rows;

/// The stream the capture records are kept on.
pub const CAPTURE_STREAM: &str = "SLUICE_CAPTURE";

/// The subjects of [`CAPTURE_STREAM`].
pub const CAPTURE_SUBJECTS: &str = "sluice.capture.>";

/// How many records wait for the bus at most; more are dropped and counted.
const QUEUE: usize = 20_000;

/// How long a batch waits for more records once its first has come.
const LINGER: Duration = Duration::from_millis(20);

/// Most records taken from the queue at a time.
const BATCH: usize = 1_000;

/// A message of records is closed once it holds this many bytes (NATS refuses messages over
/// its max payload, 1 MiB by default; one record larger than that is published alone and,
/// refused, counted lost).
const MESSAGE_BYTES: usize = 256 << 10;

/// The subject of a model's records.
pub fn subject(model: &str) -> String {
    format!("sluice.capture.{model}")
}

/// The `Nats-Msg-Id` of a record: its kind, model and request id.
pub fn message_id(kind: &str, model: &str, request_id: &str) -> String {
    format!("{kind}:{model}:{request_id}")
}

/// Whether the request `request_id` is captured at one in `n`: FNV-1a (64-bit) of its bytes,
/// modulo `n`, is 0. The same id gets the same answer on every host, so a model server can
/// tell which of its requests were kept.
pub fn sampled(request_id: &str, n: u64) -> bool {
    if n <= 1 {
        return true;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in request_id.bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % n == 0
}

/// A new request id: 16 hex digits random per process, then 16 of a counter.
pub fn new_request_id() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = SEED.get_or_init(|| {
        use std::io::Read;
        let mut random = [0u8; 8];
        match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random)) {
            Ok(()) => u64::from_le_bytes(random),
            Err(_) => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
                now ^ (std::process::id() as u64).rotate_left(32)
            }
        }
    });
    format!("{seed:016x}{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A record waiting for the bus, with its model.
struct Queued {
    model: Arc<str>,
    record: Vec<u8>,
}

/// The header giving how many records (JSON lines) a message holds.
pub const RECORDS_HEADER: &str = "Sluice-Records";

/// Queues lookup records and publishes them in batches from a task of its own.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// A recorder publishing on `bus` (the task ends once every clone is dropped and the
    /// queue is drained).
    pub fn start(bus: Bus, metrics: Arc<Metrics>) -> Recorder {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(drain(bus, receiver, metrics.clone()));
        Recorder { queue, metrics }
    }

    /// Queues a record of `model` (one JSON object, no newline); `false` (and counted as
    /// lost) when the queue is full.
    pub fn record(&self, model: &Arc<str>, record: Vec<u8>) -> bool {
        let queued = Queued {
            model: model.clone(),
            record,
        };
        match self.queue.try_send(queued) {
            Ok(()) => true,
            Err(_) => {
                self.metrics.capture_lost(model).inc();
                false
            }
        }
    }
}

/// Publishes queued records in batches (one message of JSON lines per model), retrying a
/// refused batch (4 tries over ~1.5 s) before counting it lost.
async fn drain(bus: Bus, mut receiver: mpsc::Receiver<Queued>, metrics: Arc<Metrics>) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        // Waits a little for more: woken per record, the task would publish a message per
        // handful of records.
        if batch.len() < BATCH {
            tokio::time::sleep(LINGER).await;
            while batch.len() < BATCH {
                match receiver.try_recv() {
                    Ok(queued) => batch.push(queued),
                    Err(_) => break,
                }
            }
        }
        // (model, lines, records): a model's message is closed when full and another begun.
        let mut by_model: Vec<(Arc<str>, Vec<u8>, u64)> = Vec::new();
        for queued in batch.drain(..) {
            let open = by_model
                .iter()
                .rposition(|(m, lines, _)| *m == queued.model && lines.len() + queued.record.len() < MESSAGE_BYTES);
            let at = match open {
                Some(at) => at,
                None => {
                    by_model.push((
                        queued.model.clone(),
                        Vec::with_capacity(MESSAGE_BYTES.min(queued.record.len() * 64)),
                        0,
                    ));
                    by_model.len() - 1
                }
            };
            let (_, lines, n) = &mut by_model[at];
            if *n > 0 {
                lines.push(b'\n');
            }
            lines.extend_from_slice(&queued.record);
            *n += 1;
        }
        let counts: Vec<(Arc<str>, u64)> = by_model.iter().map(|(model, _, n)| (model.clone(), *n)).collect();
        // Compressed off the runtime's threads (a message of 256 KiB takes ~0.5 ms).
        let messages = tokio::task::spawn_blocking(move || {
            by_model
                .into_iter()
                .map(|(model, lines, n)| Publish {
                    subject: subject(&model),
                    headers: vec![(RECORDS_HEADER, n.to_string()), ("Content-Encoding", "snappy".into())],
                    body: compress(&lines).into(),
                })
                .collect::<Vec<Publish>>()
        })
        .await
        .unwrap_or_default();
        let mut stored = false;
        for attempt in 0..4u32 {
            match bus.publish(messages.clone()).await {
                Ok(_) => {
                    stored = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(
                        messages = messages.len(),
                        attempt,
                        "capture records not stored (retried): {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        for (model, n) in &counts {
            if stored {
                metrics.captured(model).inc_by(*n);
            } else {
                metrics.capture_lost(model).inc_by(*n);
            }
        }
    }
}

/// The first bytes of a Snappy-framed stream (its stream identifier chunk).
const SNAPPY_FRAMED: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// A message of lookup records as published: Snappy-framed JSON lines. Lookup records repeat
/// their feature names, statuses and times; compressed, the bus stores about a fifth of
/// the bytes, which is what a captured lookup costs the host (measured: recording without
/// publishing costs a lookup ~4% at p99, publishing uncompressed several times that).
fn compress(lines: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = snap::write::FrameEncoder::new(Vec::with_capacity(lines.len() / 4 + 64));
    match encoder.write_all(lines).map(|()| encoder.into_inner()) {
        Ok(Ok(body)) => body,
        _ => lines.to_vec(),
    }
}

/// The JSON lines of a capture message: decompressed when it is Snappy-framed (lookup
/// records), as it is otherwise (a prediction or a label). A body that does not decompress
/// is returned as it is (its lines are then reported as not records).
pub fn records_body(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !body.starts_with(SNAPPY_FRAMED) {
        return std::borrow::Cow::Borrowed(body);
    }
    use std::io::Read;
    let mut lines = Vec::with_capacity(body.len() * 5);
    match snap::read::FrameDecoder::new(body).read_to_end(&mut lines) {
        Ok(_) => std::borrow::Cow::Owned(lines),
        Err(_) => std::borrow::Cow::Borrowed(body),
    }
}

/// A production set row's sequence: its message's sequence times this, plus its place among
/// the message's rows, so each row has a sequence of its own and the Parquet writer's
/// exactly-once rule (by sequence) holds per row. A message is at most NATS's 1 MiB and a row
/// takes more than a byte of it.
pub const ROWS_PER_MESSAGE: u64 = 1 << 20;

/// Where the models' production sets are written: `<data_dir>/production/<model>/v1/date=…/`.
pub fn production_root(config: &crate::config::Config) -> std::path::PathBuf {
    config.resolve(&config.host.data_dir).join("production")
}

/// The columns of a production set's rows besides the served features (`set:feature`), the
/// predictions (`prediction.<field>`) and the labels (`label.<field>`); the row's key is its
/// request id and its time when it was captured (a lookup), predicted or labelled.
pub mod columns {
    /// `served`, `prediction` or `label`.
    pub const KIND: &str = "kind";
    /// The entity a served row is of (or a prediction or label names).
    pub const ENTITY: &str = "entity";
    /// A label given by entity: the time (epoch ms) of the lookup it labels.
    pub const AT: &str = "at";
    /// The feature vector a lookup asked for.
    pub const VECTOR: &str = "vector";
    /// The feature set versions a lookup read, as JSON (`{"set": version}`).
    pub const VERSIONS: &str = "versions";
    /// The entity's part of the answer exactly as served, JSON: found, event times, each
    /// feature's value and status.
    pub const SERVED: &str = "served";
    /// The prefix of prediction columns.
    pub const PREDICTION: &str = "prediction.";
    /// The prefix of label columns.
    pub const LABEL: &str = "label.";
}

/// The online "sets" of a model's production set: `served` holds each entity's last captured
/// lookup (`request_id`, and `answer`: the entity's part of the answer as served, whole, so a
/// lookup of fewer features leaves none of an earlier one's behind), `predicted` each entity's
/// last prediction posted with its entity (`request_id`, its fields). Under
/// `<prefix>:<model>.<part>:v1`.
pub const ONLINE_PARTS: [&str; 2] = ["served", "predicted"];

/// The online rows of `part` ([`ONLINE_PARTS`]) among production rows: keyed by entity, at
/// the row's time, with `request_id` first, then `answer` (`served`) or the prediction fields
/// by their declared names (`predicted`).
pub fn online_rows(rows: &Rows, part: &str) -> Rows {
    let position = |name: &str| rows.batch.fields.iter().position(|f| f == name);
    let (Some(kind_at), Some(entity_at)) = (position(columns::KIND), position(columns::ENTITY)) else {
        return Rows::default();
    };
    let (kind, keep): (&str, Box<dyn Fn(&str) -> Option<String>>) = match part {
        "served" => (
            "served",
            Box::new(|f: &str| (f == columns::SERVED).then(|| "answer".to_string())),
        ),
        _ => (
            "prediction",
            Box::new(|f: &str| f.strip_prefix(columns::PREDICTION).map(str::to_string)),
        ),
    };
    let kept: Vec<(usize, String)> = rows
        .batch
        .fields
        .iter()
        .enumerate()
        .filter_map(|(i, f)| keep(f).map(|name| (i, name)))
        .collect();
    let mut names = vec!["request_id".to_string()];
    names.extend(kept.iter().map(|(_, name)| name.clone()));
    let mut out = Rows::new(names);
    for (i, event) in rows.batch.events.iter().enumerate() {
        let (Value::Text(this), Value::Text(entity)) = (rows.value(i, kind_at), rows.value(i, entity_at)) else {
            continue;
        };
        if this != kind {
            continue;
        }
        let mut values = Vec::with_capacity(kept.len() + 1);
        values.push(Value::Text(event.key.clone()));
        values.extend(kept.iter().map(|(at, _)| rows.value(i, *at).clone()));
        out.push(
            rows.seqs[i],
            Event {
                key: entity.clone(),
                time: event.time,
                values,
            },
        );
    }
    out
}

/// Appends the rows of one capture message (sequence `seq`, one JSON record per line) to
/// `rows`: a served record gives one row per entity of its answer, a prediction or a label one
/// row. Returns the lines that are not capture records (each with why), which are skipped.
pub fn production_rows(seq: u64, body: &[u8], rows: &mut Rows) -> Vec<String> {
    use serde_json::Value as Json;
    let mut skipped = Vec::new();
    let mut next = seq * ROWS_PER_MESSAGE;
    let body = records_body(body);
    for (line, text) in body.split(|b| *b == b'\n').enumerate() {
        let mut record: serde_json::Map<String, Json> = match serde_json::from_slice(text) {
            Ok(record) => record,
            Err(e) => {
                skipped.push(format!("message {seq} line {line}: not a JSON object: {e}"));
                continue;
            }
        };
        let text_of = |key: &str| record.get(key).and_then(Json::as_str);
        // A label given by entity and time is keyed as its message id is: `entity@at`.
        let by_entity = match (text_of("entity"), record.get("at").and_then(Json::as_i64)) {
            (Some(entity), Some(at)) if text_of("kind") == Some("label") => Some(format!("{entity}@{at}")),
            _ => None,
        };
        let (Some(kind), Some(request_id)) = (text_of("kind"), text_of("request_id").or(by_entity.as_deref())) else {
            skipped.push(format!(
                "message {seq} line {line}: no kind, or neither request_id nor entity and at"
            ));
            continue;
        };
        let (kind, request_id) = (kind.to_string(), request_id.to_string());
        let ms = |record: &serde_json::Map<String, Json>, key: &str| record.get(key).and_then(Json::as_i64);
        let row = |time_ms: i64, values: Vec<(usize, Value)>, rows: &mut Rows, next: &mut u64| {
            let mut event = Event {
                key: request_id.to_string(),
                time: time_ms * 1000,
                values: Vec::new(),
            };
            for (at, value) in values {
                if event.values.len() <= at {
                    event.values.resize(at + 1, Value::Null);
                }
                event.values[at] = value;
            }
            rows.push(*next, event);
            *next += 1;
        };
        let kind_at = rows.field_position(columns::KIND);
        let entity_at = rows.field_position(columns::ENTITY);
        match kind.as_str() {
            "served" => {
                let time = ms(&record, "captured_at").unwrap_or(0);
                let versions = record.get("versions").map(|v| Value::Json(v.to_string()));
                let vector = record
                    .get("vector")
                    .and_then(Json::as_str)
                    .map(|v| Value::Text(v.to_string()));
                // Taken out of the record, not copied.
                let Some(Json::Array(results)) = record
                    .remove("served")
                    .and_then(|mut served| served.get_mut("results").map(Json::take))
                else {
                    skipped.push(format!("message {seq} line {line}: a served record without results"));
                    continue;
                };
                for served in results {
                    let mut values = vec![(kind_at, Value::Text("served".into()))];
                    if let Some(entity) = served.get("entity").and_then(Json::as_str) {
                        values.push((entity_at, Value::Text(entity.to_string())));
                    }
                    if let Some(versions) = &versions {
                        values.push((rows.field_position(columns::VERSIONS), versions.clone()));
                    }
                    if let Some(vector) = &vector {
                        values.push((rows.field_position(columns::VECTOR), vector.clone()));
                    }
                    if let Some(Json::Object(features)) = served.get("features") {
                        for (name, feature) in features {
                            let value = feature.get("value").map_or(Value::Null, crate::event::value_from_json);
                            values.push((rows.field_position(name), value));
                        }
                    }
                    values.push((rows.field_position(columns::SERVED), Value::Json(served.to_string())));
                    row(time, values, rows, &mut next);
                }
            }
            "prediction" | "label" => {
                let (prefix, time) = if kind == "prediction" {
                    (columns::PREDICTION, ms(&record, "at").unwrap_or(0))
                } else {
                    (columns::LABEL, ms(&record, "labelled_at").unwrap_or(0))
                };
                let mut values = vec![(kind_at, Value::Text(kind.to_string()))];
                for (key, value) in &record {
                    match key.as_str() {
                        "kind" | "model" | "request_id" | "labelled_at" => {}
                        "at" if kind == "prediction" => {}
                        "entity" => values.push((entity_at, crate::event::value_from_json(value))),
                        "at" => values.push((rows.field_position(columns::AT), crate::event::value_from_json(value))),
                        field => values.push((
                            rows.field_position(&format!("{prefix}{field}")),
                            crate::event::value_from_json(value),
                        )),
                    }
                }
                row(time, values, rows, &mut next);
            }
            other => skipped.push(format!("message {seq} line {line}: unknown kind {other:?}")),
        }
    }
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_fixed_by_the_request_id_and_near_its_rate() {
        assert!(sampled("anything", 1));
        let kept = (0..100_000).filter(|i| sampled(&format!("req-{i}"), 10)).count();
        assert!((9_000..11_000).contains(&kept), "{kept}");
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        assert_eq!(sampled("a", 0xaf63dc4c8601ec8c), true);
        assert_eq!(sampled("a", 0xaf63dc4c8601ec8d), false);
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn a_message_of_records_gives_a_row_per_served_entity_prediction_and_label_each_with_its_own_sequence() {
        let body = concat!(
            r#"{"kind":"served","model":"m","request_id":"r1","captured_at":1000,"vector":null,"versions":{"s":2},"served":{"at":"x","results":["#,
            r#"{"entity":"a","found":{"s":true},"features":{"s:x":{"value":1.5,"status":"current"},"s:e":{"value":[0.25,0.5],"status":"current"}}},"#,
            r#"{"entity":"b","found":{"s":false},"features":{"s:x":{"value":null,"status":"missing"}}}]}}"#,
            "\n",
            r#"{"kind":"prediction","model":"m","request_id":"r1","entity":"b","at":2000,"score":0.75}"#,
            "\n",
            r#"{"kind":"label","model":"m","request_id":"r1","labelled_at":3000,"ok":true}"#,
            "\n",
            r#"not json"#,
        );
        let mut rows = Rows::default();
        let skipped = production_rows(7, body.as_bytes(), &mut rows);
        // Published Snappy-framed, read the same.
        let packed = compress(body.as_bytes());
        assert!(packed.starts_with(SNAPPY_FRAMED) && packed.len() < body.len());
        assert_eq!(&*records_body(&packed), body.as_bytes());
        let mut again = Rows::default();
        assert_eq!(production_rows(7, &packed, &mut again), skipped);
        assert_eq!(format!("{again:?}"), format!("{rows:?}"));
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        let base = 7 * ROWS_PER_MESSAGE;
        assert_eq!(rows.seqs, vec![base, base + 1, base + 2, base + 3]);
        let field = |name: &str| rows.batch.fields.iter().position(|f| f == name).unwrap();
        let events = &rows.batch.events;
        assert!(events.iter().all(|e| e.key == "r1"));
        assert_eq!(
            events.iter().map(|e| e.time).collect::<Vec<_>>(),
            vec![1_000_000, 1_000_000, 2_000_000, 3_000_000]
        );
        assert_eq!(rows.value(0, field("entity")), &Value::Text("a".into()));
        assert_eq!(rows.value(0, field("s:x")), &Value::Float(1.5));
        assert_eq!(rows.value(0, field("s:e")), &Value::Floats(vec![0.25, 0.5]));
        assert_eq!(rows.value(1, field("s:x")), &Value::Null);
        assert_eq!(rows.value(2, field("entity")), &Value::Text("b".into()));
        assert_eq!(rows.value(2, field("prediction.score")), &Value::Float(0.75));
        assert_eq!(rows.value(3, field("label.ok")), &Value::Boolean(true));
        assert_eq!(rows.value(3, field("kind")), &Value::Text("label".into()));
        // Online: the served rows by entity (request id first, then the features), the
        // prediction posted with its entity.
        let served = online_rows(&rows, "served");
        assert_eq!(served.batch.fields, ["request_id", "answer"]);
        let keys: Vec<&str> = served.batch.events.iter().map(|e| e.key.as_str()).collect();
        assert_eq!((keys, served.seqs.clone()), (vec!["a", "b"], vec![base, base + 1]));
        assert_eq!(served.value(0, 0), &Value::Text("r1".into()));
        let predicted = online_rows(&rows, "predicted");
        assert_eq!(predicted.batch.fields, ["request_id", "score"]);
        assert_eq!(predicted.batch.events[0].key, "b");
        assert_eq!(predicted.value(0, 1), &Value::Float(0.75));
        let Value::Json(served) = rows.value(1, field("served")) else {
            panic!("served as JSON")
        };
        let served: serde_json::Value = serde_json::from_str(served).unwrap();
        assert_eq!(
            served["features"]["s:x"],
            serde_json::json!({ "value": null, "status": "missing" })
        );
        assert_eq!(served["entity"], "b");
    }
}
