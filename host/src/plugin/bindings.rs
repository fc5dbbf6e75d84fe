//! The host side of the plugin contract's imports (the contract itself is [`crate::wit`]).

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::{MemoryOutputPipe, SinkOutputStream};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::limits::{Limits, MemoryCap};
use super::lookup::OnlineLookup;

pub use crate::wit::*;

use sluice::plugin::host::Level;
use sluice::plugin::types::Field;

/// Bytes of guest stderr kept per instance, to report panic messages and tracebacks.
pub(crate) const STDERR_CAPACITY: usize = 64 * 1024;

/// The data of one plugin instance's store: its WASI context (no files, network or
/// environment; clocks frozen unless granted), its limits and its host-import state.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) stderr: MemoryOutputPipe,
    lookup: Arc<dyn OnlineLookup>,
    plugin: Arc<str>,
    log_budget: u32,
    pub(crate) logs_dropped: u64,
    lookup_keys_per_call: usize,
}

impl HostState {
    pub(crate) fn new(plugin: Arc<str>, limits: &Limits, lookup: Arc<dyn OnlineLookup>) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let mut wasi = WasiCtx::builder();
        wasi.stdout(SinkOutputStream).stderr(stderr.clone());
        if !limits.grant_clock {
            wasi.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryCap::new(limits),
            stderr,
            lookup,
            plugin,
            log_budget: limits.log_lines_per_call,
            logs_dropped: 0,
            lookup_keys_per_call: limits.lookup_keys_per_call,
        }
    }

    /// Resets the per-call budgets before a call.
    pub(crate) fn begin_call(&mut self, limits: &Limits) {
        self.log_budget = limits.log_lines_per_call;
    }

    pub(crate) fn limiter(&mut self) -> &mut MemoryCap {
        &mut self.memory
    }
}

/// A clock that always reads zero: plugins get no clock unless granted, which also keeps
/// backfill and streaming runs identical.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl sluice::plugin::types::Host for HostState {}

impl sluice::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_budget == 0 {
            self.logs_dropped += 1;
            return;
        }
        self.log_budget -= 1;
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn lookup(&mut self, feature_set: String, keys: Vec<String>) -> Result<Vec<Option<Vec<Field>>>, String> {
        if keys.len() > self.lookup_keys_per_call {
            return Err(format!(
                "lookup of {} keys refused: at most {} keys per call",
                keys.len(),
                self.lookup_keys_per_call
            ));
        }
        self.lookup.lookup(&feature_set, &keys).map_err(|e| e.to_string())
    }
}

/// Builds the linker every plugin is instantiated with: the contract's `host` interface and
/// WASI preview 2 (whose context grants nothing; see [`HostState::new`]).
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    Transform::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}
