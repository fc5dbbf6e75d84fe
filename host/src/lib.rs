//! Sluice: a real-time feature store built as a WebAssembly transformation host.
//!
//! Modules, one concept each:
//!
//! - [`event`]: the typed event model shared by the host and plugins (values, events, batches)
//!   and its JSON form.
//! - [`plugin`]: the plugin runtime — the one `bindgen!` of the WIT contract, the wasmtime
//!   engine with its artifact cache, sandbox limits, the registry of versioned plugins with
//!   hot swap and rollback, and batch execution that isolates a failing event.
//! - [`cli`]: the `sluice` command line (the binary only parses arguments and calls it).
#![deny(missing_docs)]

pub mod cli;
pub mod event;
pub mod plugin;
