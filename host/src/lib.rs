//! Sluice: a real-time feature store built as a WebAssembly transformation host.
//!
//! Modules, one concept each:
//!
//! - [`wit`]: the plugin contract's generated types and world (the crate's bottom layer).
//! - [`duration`]: durations as the config writes them (`30d`, `12h`, `90m`, `45s`), parsed once.
//! - [`event`]: the typed event model shared by the host and plugins (values, events, batches)
//!   and its JSON form.
//! - [`event_time`]: event times from text, numbers in a declared unit, strftime patterns and
//!   time zones — one reader for JSON, CSV and Parquet alike.
//! - [`fault`]: errors that say whether a retry can help, and the one shutdown-aware retry
//!   policy.
//! - [`plugin`]: the plugin runtime — the one `bindgen!` of the WIT contract, the wasmtime
//!   engine with its artifact cache, sandbox limits, the registry of versioned plugins with
//!   hot swap and rollback, and batch execution that isolates a failing event.
//! - [`config`]: the config file (host, plugins, feature sets): parse, then validate with
//!   every problem reported at once.
//! - [`rows`]: the rows a batch carries (each with its input sequence), failures, and their
//!   tally by reason with the `--max-failed` rule.
//! - [`graph`]: the step graph of a feature set, run per batch.
//! - [`steps`]: the built-in steps, one file per kind (`filter`, `map`, `wasm`, `select`,
//!   `drop`, `rename`, `impute`, `join`, `aggregate`, `cast`), each owning its config, resolution
//!   and builder, registered in one list (`step_kinds!`).
//! - [`sources`]: decoding raw events; the JetStream, embedded-log and file sources.
//! - [`targets`]: online (the store's rows), stream (feature rows), Parquet (offline), dead
//!   letters.
//! - [`store`]: the online store trait and its two implementations, Redis and the embedded
//!   redb file (which also holds the embedded mode's event logs).
//! - [`bus`]: the message bus, NATS JetStream or the embedded logs.
//! - [`keys`]: the online key layout (set prefix, entity hash, counters).
//! - [`online`]: online reads, windowed aggregates evaluated as of the read time.
//! - [`http`]: the HTTP API (lookups, ingest, plugins, feature sets, health, metrics, OpenAPI)
//!   with bearer-token scopes.
//! - [`offline`]: backfill, point-in-time reads of the offline rows, training sets, and the
//!   online/offline skew check.
//! - [`metrics`]: counters and histograms, rendered for Prometheus.
//! - [`catalog`]: the on-disk state that outlives a process (plugin versions deployed over
//!   HTTP, restored at start) and the atomic write every stored file goes through.
//! - [`runtime`]: what a host's feature sets share — bus, online store, plugins, metrics, online
//!   reads — and how it is connected; below `pipeline`, backfill and the HTTP API.
//! - [`pipeline`]: `sluice run` — one loop per feature set and one offline writer per Parquet
//!   target, with the delivery protocol (durable before ack; redelivery absorbed).
//! - [`cli`]: the `sluice` command line (the binary only parses arguments and calls it).
#![deny(missing_docs)]

pub mod bus;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod duration;
pub mod event;
pub mod event_time;
pub mod fault;
pub mod graph;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod offline;
pub mod online;
pub mod pipeline;
pub mod plugin;
pub mod rows;
pub mod runtime;
pub mod sources;
pub mod steps;
pub mod store;
pub mod targets;
pub mod wit;
