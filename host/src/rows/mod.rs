//! The rows a batch carries through the steps, and the events that fail on the way: the
//! vocabulary every layer shares (steps, targets, the batch runner, backfill).
//!
//! Rows carry the stream sequence of the input event they came from, so every output row,
//! dead letter and online write can be traced to (and de-duplicated by) its input.

mod tally;

pub use tally::{MaxFailed, Tally};

use crate::event::{Batch, Event, Value};

/// A batch flowing through the steps: events with the input sequence of each.
#[derive(Debug, Clone)]
pub struct Rows {
    /// Field names and events.
    pub batch: Batch,
    /// `seqs[i]` is the input stream sequence of `batch.events[i]`.
    pub seqs: Vec<u64>,
}

impl Default for Rows {
    fn default() -> Self {
        Rows::new(Vec::new())
    }
}

impl Rows {
    /// An empty batch with these fields.
    pub fn new(fields: Vec<String>) -> Self {
        Rows {
            batch: Batch {
                fields,
                events: Vec::new(),
            },
            seqs: Vec::new(),
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.batch.events.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.batch.events.is_empty()
    }

    /// Appends an event.
    pub fn push(&mut self, seq: u64, event: Event) {
        self.seqs.push(seq);
        self.batch.events.push(event);
    }

    /// The position of a field, appending it (and a null to every event) if new.
    pub fn field_position(&mut self, name: &str) -> usize {
        if let Some(i) = self.batch.fields.iter().position(|f| f == name) {
            return i;
        }
        self.batch.fields.push(name.to_string());
        self.batch.fields.len() - 1
    }

    /// The rows whose `failed` entry is `None`; the others become failures of `step` with
    /// that reason (what a step that fails single events does at the end of a batch).
    pub fn without_failed(self, failed: Vec<Option<String>>, step: &str, failures: &mut Vec<Failure>) -> Rows {
        if failed.iter().all(Option::is_none) {
            return self;
        }
        let mut out = Rows::new(self.batch.fields);
        for ((event, seq), failure) in self.batch.events.into_iter().zip(self.seqs).zip(failed) {
            match failure {
                None => out.push(seq, event),
                Some(reason) => failures.push(Failure::new(seq, step, reason)),
            }
        }
        out
    }

    /// The value of a field of event `i` (null when absent).
    pub fn value(&self, i: usize, field: usize) -> &Value {
        self.batch.events[i].values.get(field).unwrap_or(&Value::Null)
    }
}

/// An event that failed in a step: it goes to the dead-letter subject with this reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Input stream sequence of the event.
    pub seq: u64,
    /// The step (or `decode` for input that never became an event).
    pub step: String,
    /// Why.
    pub reason: String,
    /// Whether the event was refused as late (it goes to `sluice.late.<set>`, not to the
    /// dead-letter subject).
    pub late: bool,
}

impl Failure {
    /// An event that failed in `step`.
    pub fn new(seq: u64, step: &str, reason: impl Into<String>) -> Failure {
        Failure {
            seq,
            step: step.to_string(),
            reason: reason.into(),
            late: false,
        }
    }

    /// An event refused as later than the allowed lateness.
    pub fn late(seq: u64, step: &str, reason: String) -> Failure {
        Failure {
            late: true,
            ..Failure::new(seq, step, reason)
        }
    }
}
