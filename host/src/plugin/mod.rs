//! The plugin runtime: runs user transformations as sandboxed WebAssembly components.
//!
//! - `bindings`: the one `bindgen!` of `wit/plugin.wit` and the host side of its imports.
//! - [`engine`]: the wasmtime engine, the epoch ticker and the on-disk artifact cache.
//! - [`contract`]: checks that a component targets the world and version this host runs.
//! - [`limits`]: the sandbox limits (CPU deadline, memory, batch and output sizes).
//! - [`lookup`]: the online-store lookup a plugin may import, behind a trait.
//! - `instance`: one instantiated plugin with its store.
//! - [`registry`]: plugins by name, versions by content hash, hot swap and rollback.
//! - [`handle`]: what a `wasm` step holds — the active version of a plugin with one
//!   configuration — and batch execution that isolates a failing event.

pub mod bindings;
mod call;
pub mod contract;
pub mod engine;
pub mod handle;
mod instance;
pub mod limits;
pub mod lookup;
pub mod registry;

pub use contract::{ContractInfo, CONTRACT_PACKAGE, CONTRACT_VERSION};
pub use engine::{CompiledPlugin, PluginEngine};
pub use handle::{BatchOutput, EventFailure, FailureKind, PluginHandle};
pub use limits::Limits;
pub use lookup::{AsOfRow, LookupError, MemoryLookup, NoLookup, OnlineLookup};
pub use registry::{PluginName, PluginVersion, Registry};

use std::fmt;

/// Errors of the plugin runtime (deploying, instantiating, calling).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a WebAssembly component this host can run.
    #[error("{0}")]
    NotAComponent(String),
    /// The component targets another world or another version of the contract.
    #[error("{0}")]
    Contract(String),
    /// Compilation failed.
    #[error("plugin {plugin}: compilation failed: {reason}")]
    Compile {
        /// Plugin name or file.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The plugin could not be instantiated or its `init` refused the configuration.
    #[error("plugin {plugin}: {reason}")]
    Init {
        /// `name@version`.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// No plugin of that name (or no such version) is deployed.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the registry's state (e.g. deleting a plugin in use).
    #[error("{0}")]
    Conflict(String),
    /// A plugin name that is not valid.
    #[error(
        "invalid plugin name {0:?}: expected 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit"
    )]
    InvalidName(String),
    /// Reading or writing the artifact cache failed.
    #[error("artifact cache {path}: {reason}")]
    Cache {
        /// The file or folder.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Formats a wasmtime error with its whole chain of causes on one line.
pub(crate) fn describe(error: &wasmtime::Error) -> String {
    let mut text = String::new();
    for (i, cause) in error.chain().enumerate() {
        if i > 0 {
            text.push_str(": ");
        }
        fmt::write(&mut text, format_args!("{cause}")).ok();
    }
    text
}
