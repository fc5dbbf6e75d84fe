//! Sluice: a real-time feature store built as a WebAssembly transformation host.
//!
//! Modules, one concept each, from the bottom layer up: a module imports only from its own
//! layer or those below it, without cycles (`tests/layers.rs` holds the same list and fails
//! when an import breaks it).
//!
//! Domain:
//! - [`wit`]: the plugin contract's generated types and world.
//! - [`event`]: the typed event model shared by the host and plugins (values, events, batches)
//!   and its JSON form.
//! - [`event_time`]: event times from text, numbers in a declared unit, strftime patterns and
//!   time zones — one reader for JSON, CSV and Parquet alike.
//! - [`duration`]: durations as the config writes them (`30d`, `12h`, `90m`, `45s`).
//! - [`rows`]: the rows a batch carries (each with its input sequence), failures, and their
//!   tally by reason with the `--max-failed` rule.
//! - [`keys`]: the online key layout (set prefix, entity hash, counters).
//! - [`fault`]: errors that say whether a retry can help, and the one shutdown-aware retry
//!   policy.
//! - [`metrics`]: counters, gauges and histograms in a `prometheus-client` registry.
//!
//! Services:
//! - [`store`]: the online store trait and its two implementations, Redis and the embedded
//!   redb file (which also holds the embedded mode's event logs).
//! - [`bus`]: the message bus, NATS JetStream or the embedded logs, with durable
//!   subscriptions.
//!
//! Plugins and steps:
//! - [`plugin`]: the plugin runtime — the wasmtime engine with its artifact cache, sandbox
//!   limits, the registry of versioned plugins with hot swap and rollback, and batch execution
//!   that isolates a failing event.
//! - [`steps`]: the built-in steps, one file per kind (`filter`, `map`, `wasm`, `select`,
//!   `drop`, `rename`, `impute`, `join`, `aggregate`, `cast`), each owning its config, resolution
//!   and builder, registered in one list (`step_kinds!`).
//! - [`monitor`]: feature monitoring — mergeable profiles, references with fixed bins, drift
//!   scores (PSI, Jensen-Shannon, Hellinger, TVD, KS, chi-square) and verdicts with hysteresis.
//!
//! Config:
//! - [`config`]: the config file (host, plugins, feature sets): parse, then validate with
//!   every problem reported at once.
//!
//! Reads, writes and on-disk state:
//! - [`online`]: online reads, windowed aggregates evaluated as of the read time.
//! - [`sources`]: decoding raw events; the file source.
//! - [`targets`]: online (the store's rows), stream (feature rows), Parquet (offline), dead
//!   letters.
//! - [`catalog`]: the on-disk state that outlives a process (plugin versions deployed over
//!   HTTP, restored at start; definitions applied over HTTP and the version served; training
//!   jobs) and the atomic write every stored file goes through.
//! - [`capture`]: what a model was served, predicted and labelled, as records on the bus
//!   (lookups queued off the request path and published in batches).
//!
//! Plan and runtime:
//! - [`graph`]: a feature set's steps, built, run per batch.
//! - [`plan`]: a feature set compiled once (keys, TTL, online layout, Parquet schema, stream
//!   target) and [`plan::Chain`], the steps with their failure accounting.
//! - [`runner`]: the one batch runner of live runs and backfill — decode, the chain, failed
//!   and late events, the counts; the two differ only in their source and how they commit.
//! - [`runtime`]: what a host's feature sets share — bus, online store, plugins, metrics, online
//!   reads — and how it is connected.
//!
//! Batch jobs:
//! - [`offline`]: backfill, point-in-time reads of the offline rows, training sets, and the
//!   online/offline skew check.
//!
//! HTTP:
//! - [`http`]: the HTTP API (lookups, ingest, plugins, feature sets, training jobs, health,
//!   metrics, OpenAPI) with bearer-token scopes; it is handed the services it uses.
//!
//! The composition root and the command line:
//! - [`pipeline`]: `sluice run` — connects the services, serves the HTTP API, runs one loop per
//!   feature set and one offline writer per Parquet target, with the delivery protocol
//!   (durable before ack; redelivery absorbed).
//! - [`cli`]: the `sluice` command line (the binary only parses arguments and calls it).
#![deny(missing_docs)]

pub mod bus;
pub mod capture;
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
pub mod monitor;
pub mod offline;
pub mod online;
pub mod pipeline;
pub mod plan;
pub mod plugin;
pub mod rows;
pub mod runner;
pub mod runtime;
pub mod sources;
pub mod steps;
pub mod store;
pub mod targets;
pub mod wit;
