//! The batch runner, one for live runs (`sluice run`) and backfill: a batch of input messages
//! (or events decoded already) → decoded events → the steps → the rows, the aggregation state
//! they changed, the failed and late events, and the counts every run keeps. Live runs and
//! backfill differ only in where a batch comes from and in how its result is committed
//! (dead letters to the bus or to a file; rows to the stream target or straight to Parquet;
//! the online write; the acknowledgement).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::monitor::live::SetMonitor;
use crate::plan::{Chain, Computed};
use crate::rows::{Failure, Rows};
use crate::sources::Decoder;
use crate::steps::aggregate::StateWrite;
use crate::steps::Halt;
use crate::targets::stream::RowBatch;

/// Bits of a chained row's sequence that number the rows of one message.
const ROW_BITS: u32 = 16;

/// Decodes and runs one feature set version's batches.
pub struct BatchRunner {
    decoder: Decoder,
    /// Whether the input is another feature set's rows (many per message).
    chained: bool,
    chain: Chain,
    /// The live statistics the rows are profiled into.
    monitor: Option<Arc<Mutex<SetMonitor>>>,
}

/// What one batch gave, to be committed.
#[derive(Debug, Default)]
pub struct Ran {
    /// The feature rows.
    pub rows: Rows,
    /// Aggregation state the batch changed.
    pub state: Vec<StateWrite>,
    /// Events that failed (decode first, then the steps') and those refused as late
    /// (`late`): the batch's dead letters.
    pub failures: Vec<Failure>,
    /// The highest input sequence of the batch: the applied sequence once it is committed.
    pub last_seq: u64,
    /// What the batch counts for.
    pub counts: Counts,
    /// Time spent decoding.
    pub decode: Duration,
}

/// The counts of a batch: the same for the live metrics and a backfill's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Input events (messages) taken.
    pub events: u64,
    /// Feature rows produced.
    pub rows: u64,
    /// Events that failed (dead letters).
    pub failed: u64,
    /// Events refused as late.
    pub late: u64,
}

impl BatchRunner {
    /// Runs events of `decoder`'s feature set through `chain`.
    pub fn new(decoder: Decoder, chain: Chain) -> BatchRunner {
        BatchRunner {
            decoder,
            chained: false,
            chain,
            monitor: None,
        }
    }

    /// Profiles every batch's rows into `monitor`'s windows.
    pub fn monitored(mut self, monitor: Option<Arc<Mutex<SetMonitor>>>) -> BatchRunner {
        self.monitor = monitor;
        self
    }

    /// Reads messages of another feature set's rows instead of events.
    pub fn chained(mut self, chained: bool) -> BatchRunner {
        self.chained = chained;
        self
    }

    /// The steps with their failure tally.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Replaces the chain (to count failures by reason in a run judged at its end).
    pub fn map_chain(mut self, f: impl FnOnce(Chain) -> Chain) -> BatchRunner {
        self.chain = f(self.chain);
        self
    }

    /// Decodes `messages` (stream sequence, bytes) and runs them. A step that halts ends the
    /// batch: nothing of it may be committed.
    pub fn run_messages(&mut self, messages: &[(u64, Bytes)]) -> Result<Ran, Halt> {
        let started = Instant::now();
        let mut rows = Rows::default();
        let mut failures = Vec::new();
        let mut last_seq = 0;
        for (seq, payload) in messages {
            let seq = *seq;
            if self.chained {
                last_seq = last_seq.max(self.decode_rows(seq, payload, &mut rows, &mut failures));
                continue;
            }
            last_seq = last_seq.max(seq);
            match self.decoder.decode(payload, &mut rows.batch.fields) {
                Ok(event) => rows.push(seq, event),
                Err(reason) => failures.push(Failure::new(seq, "decode", reason)),
            }
        }
        let decode = started.elapsed();
        let mut ran = self.run(rows, failures, messages.len() as u64, last_seq)?;
        ran.decode = decode;
        Ok(ran)
    }

    /// Runs events decoded already (`failures`: those of the batch that did not decode), of
    /// `events` input events up to sequence `last_seq`.
    pub fn run(&mut self, rows: Rows, failures: Vec<Failure>, events: u64, last_seq: u64) -> Result<Ran, Halt> {
        let Computed {
            rows,
            failures,
            state,
            late,
        } = self.chain.run(rows, failures)?;
        if let Some(monitor) = &self.monitor {
            let mut monitor = monitor.lock().unwrap_or_else(|e| e.into_inner());
            monitor.add(&rows);
            monitor.passed(last_seq);
        }
        let counts = Counts {
            events,
            rows: rows.len() as u64,
            failed: failures.len() as u64 - late,
            late,
        };
        Ok(Ran {
            rows,
            state,
            failures,
            last_seq,
            counts,
            decode: Duration::ZERO,
        })
    }

    /// Decodes a message of another feature set's rows. Row `i` of the message at stream
    /// sequence `s` gets the sequence `s * 2^16 + i`: unique, increasing, and stable across
    /// redeliveries, as the delivery protocol needs. Returns the highest sequence.
    fn decode_rows(&self, seq: u64, payload: &[u8], rows: &mut Rows, failures: &mut Vec<Failure>) -> u64 {
        let first = seq << ROW_BITS;
        let batch: RowBatch = match serde_json::from_slice(payload) {
            Ok(batch) => batch,
            Err(e) => {
                let reason = format!("not a feature-row message: {e}");
                failures.push(Failure::new(first, "decode", reason));
                return first;
            }
        };
        let mut last = first;
        for (i, row) in batch.rows.into_iter().enumerate() {
            let row_seq = first + i as u64;
            last = row_seq;
            match self
                .decoder
                .decode_row(&batch.fields, row.values, row.ts, &mut rows.batch.fields)
            {
                Ok(event) => rows.push(row_seq, event),
                Err(reason) => failures.push(Failure::new(row_seq, "decode", reason)),
            }
        }
        last
    }

    /// The original bytes of a failed event of `messages` (sorted by sequence), found again
    /// only when something failed: the message itself, or for a chained row, that row as a
    /// JSON object.
    pub fn body(&self, messages: &[(u64, Bytes)], seq: u64) -> Bytes {
        let message_seq = if self.chained { seq >> ROW_BITS } else { seq };
        let Ok(at) = messages.binary_search_by_key(&message_seq, |(s, _)| *s) else {
            return Bytes::new();
        };
        let payload = &messages[at].1;
        if !self.chained {
            return payload.clone();
        }
        let Ok(batch) = serde_json::from_slice::<RowBatch>(payload) else {
            return payload.clone();
        };
        let index = (seq & ((1 << ROW_BITS) - 1)) as usize;
        let Some(row) = batch.rows.into_iter().nth(index) else {
            return payload.clone();
        };
        let object: serde_json::Map<String, serde_json::Value> = batch.fields.into_iter().zip(row.values).collect();
        serde_json::to_vec(&object).unwrap_or_default().into()
    }
}
