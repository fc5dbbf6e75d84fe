//! The stream target: feature rows published to a JetStream subject, many rows per message
//! (one publish per batch, not per row), each message id derived from its input sequence
//! range so a replay within JetStream's duplicate window is dropped; every row carries its
//! input sequence so readers skip rows they already have beyond that window.

use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};

use super::TargetError;
use crate::event::{value_from_json, value_to_json, Batch, Event};
use crate::graph::Rows;

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
            let values = row.values.iter().map(value_from_json).collect();
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
    js: Context,
    subject: String,
    set: String,
    version: u32,
}

impl StreamTarget {
    /// A target publishing on `subject`.
    pub fn new(js: Context, subject: &str, set: &str, version: u32) -> Self {
        StreamTarget {
            js,
            subject: subject.to_string(),
            set: set.to_string(),
            version,
        }
    }

    /// Publishes the rows (split into messages of at most 512 KiB) and waits for the acks.
    pub async fn publish(&self, rows: &Rows) -> Result<(), TargetError> {
        let mut acks = Vec::new();
        for chunk in self.chunks(rows) {
            let (first, last) = (chunk.rows[0].seq, chunk.rows[chunk.rows.len() - 1].seq);
            let body = serde_json::to_vec(&chunk).map_err(|e| TargetError::Nats(e.to_string()))?;
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{}:v{}:{first}-{last}", self.set, self.version).as_str(),
            );
            let ack = self
                .js
                .publish_with_headers(self.subject.clone(), headers, body.into())
                .await
                .map_err(|e| TargetError::Nats(format!("publishing feature rows on {}: {e}", self.subject)))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await
                .map_err(|e| TargetError::Nats(format!("feature rows on {} not stored: {e}", self.subject)))?;
        }
        Ok(())
    }

    fn chunks(&self, rows: &Rows) -> Vec<RowBatch> {
        let mut chunks = Vec::new();
        let mut current = self.empty(&rows.batch);
        let mut size = 0;
        for (event, seq) in rows.batch.events.iter().zip(&rows.seqs) {
            let values: Vec<_> = event.values.iter().map(value_to_json).collect();
            let row_size = 64 + event.key.len() + values.iter().map(|v| v.to_string().len() + 1).sum::<usize>();
            // At most 2^16 rows per message: a chained feature set numbers them in 16 bits.
            if (size + row_size > MAX_MESSAGE || current.rows.len() == u16::MAX as usize) && !current.rows.is_empty() {
                chunks.push(std::mem::replace(&mut current, self.empty(&rows.batch)));
                size = 0;
            }
            size += row_size;
            current.rows.push(Row {
                seq: *seq,
                key: event.key.clone(),
                ts: event.time,
                values,
            });
        }
        if !current.rows.is_empty() {
            chunks.push(current);
        }
        chunks
    }

    fn empty(&self, batch: &Batch) -> RowBatch {
        RowBatch {
            set: self.set.clone(),
            version: self.version,
            fields: batch.fields.clone(),
            rows: Vec::new(),
        }
    }
}
