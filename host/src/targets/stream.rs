//! The stream target: feature rows published to a JetStream subject, many rows per message
//! (one publish per batch, not per row), each message id derived from its input sequence
//! range so a replay within JetStream's duplicate window is dropped; every row carries its
//! input sequence so readers skip rows they already have beyond that window.

use serde::{Deserialize, Serialize};

use super::TargetError;
use crate::bus::{Bus, Publish};
use crate::event::{event_bytes, into_value, Event, JsonValues};
use crate::rows::Rows;

/// Largest message body; bigger batches are split.
const MAX_MESSAGE: usize = 512 * 1024;

/// One message of the stream target.
#[derive(Debug, Serialize, Deserialize)]
pub struct RowBatch {
    /// Feature set.
    pub set: String,
    /// Its version.
    pub version: u32,
    /// Field names of every row's `values`.
    pub fields: Vec<String>,
    /// The rows.
    pub rows: Vec<Row>,
}

/// One feature row.
#[derive(Debug, Serialize, Deserialize)]
pub struct Row {
    /// Input stream sequence.
    pub seq: u64,
    /// Entity key.
    pub key: String,
    /// Event time, µs since the epoch.
    pub ts: i64,
    /// Values, by position in `fields`.
    pub values: Vec<serde_json::Value>,
}

impl RowBatch {
    /// The rows as events of a batch, with their sequences.
    pub fn into_rows(self) -> Rows {
        let mut rows = Rows::new(self.fields);
        for row in self.rows {
            let values = row.values.into_iter().map(into_value).collect();
            rows.push(
                row.seq,
                Event {
                    key: row.key,
                    time: row.ts,
                    values,
                },
            );
        }
        rows
    }
}

/// Publishes a feature set's rows.
#[derive(Clone)]
pub struct StreamTarget {
    bus: Bus,
    subject: String,
    set: String,
    version: u32,
}

impl StreamTarget {
    /// A target publishing on `subject`.
    pub fn new(bus: Bus, subject: &str, set: &str, version: u32) -> Self {
        StreamTarget {
            bus,
            subject: subject.to_string(),
            set: set.to_string(),
            version,
        }
    }

    /// Publishes the rows (split into messages of at most 512 KiB) and waits for the acks.
    /// Rows are serialized straight from the batch, once.
    pub async fn publish(&self, rows: &Rows) -> Result<(), TargetError> {
        let mut messages = Vec::new();
        for range in chunks(rows) {
            let (first, last) = (rows.seqs[range.start], rows.seqs[range.end - 1]);
            let message = RowBatchOut {
                set: &self.set,
                version: self.version,
                fields: &rows.batch.fields,
                rows: range.map(|i| RowOut { rows, i }).collect(),
            };
            let body = serde_json::to_vec(&message).map_err(|e| TargetError::Encode(format!("feature rows: {e}")))?;
            messages.push(Publish {
                subject: self.subject.clone(),
                headers: vec![("Nats-Msg-Id", format!("{}:v{}:{first}-{last}", self.set, self.version))],
                body: body.into(),
            });
        }
        self.bus.publish(messages).await?;
        Ok(())
    }
}

/// Splits a batch into ranges of rows that fit a message: at most 512 KiB (estimated from
/// the events' in-memory size) and 2^16 rows (a chained feature set numbers them in 16 bits).
fn chunks(rows: &Rows) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, event) in rows.batch.events.iter().enumerate() {
        let row_size = event_bytes(event);
        if i > start && (size + row_size > MAX_MESSAGE || i - start == u16::MAX as usize) {
            ranges.push(start..i);
            (start, size) = (i, 0);
        }
        size += row_size;
    }
    if start < rows.len() {
        ranges.push(start..rows.len());
    }
    ranges
}

/// A message of rows as written: the same shape as [`RowBatch`], borrowed from the batch.
#[derive(Serialize)]
struct RowBatchOut<'a> {
    set: &'a str,
    version: u32,
    fields: &'a [String],
    rows: Vec<RowOut<'a>>,
}

/// Row `i` of a batch, serialized as a [`Row`].
struct RowOut<'a> {
    rows: &'a Rows,
    i: usize,
}

impl Serialize for RowOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let event = &self.rows.batch.events[self.i];
        let mut row = s.serialize_struct("Row", 4)?;
        row.serialize_field("seq", &self.rows.seqs[self.i])?;
        row.serialize_field("key", &event.key)?;
        row.serialize_field("ts", &event.time)?;
        row.serialize_field("values", &JsonValues(&event.values))?;
        row.end()
    }
}
