//! One instantiated plugin: its store (memory cap, deadline, stderr) and its exports.

use std::sync::Arc;

use wasmtime::component::{Func, TypedFunc};
use wasmtime::{Store, Trap};

use super::bindings::{HostState, Transform};
use super::call::{projection, with_view, BatchRef};
use super::limits::{deadline_ticks, Limits};
use super::lookup::OnlineLookup;
use super::registry::PluginVersion;
use super::{describe, engine::EPOCH_TICK, PluginEngine, PluginError};
use crate::event::{Batch, Processed};

/// Why a call did not return normally. After any of these the instance is poisoned and must
/// be dropped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallFailure {
    /// The call ran past its deadline.
    Timeout,
    /// The instance tried to grow its memory past the cap.
    OutOfMemory { requested: usize },
    /// Any other trap (a panic, an uncaught exception, `unreachable`).
    Trap { message: String },
}

pub(crate) struct Instance {
    store: Store<HostState>,
    transform: Transform,
    /// `process`, checked at instantiation to accept a borrowed batch view.
    process: Func,
    /// The fields the plugin reads (`None`: all), as it answered after `init`.
    reads: Option<Vec<String>>,
    pub(crate) version: Arc<PluginVersion>,
    /// Keeps the epoch advancing during its calls.
    ticker: Arc<super::engine::Ticker>,
}

impl Instance {
    /// Instantiates a version and, with a configuration, calls its `init`.
    pub(crate) fn new(
        engine: &PluginEngine,
        version: &Arc<PluginVersion>,
        limits: &Limits,
        lookup: Arc<dyn OnlineLookup>,
        config: Option<&[(String, String)]>,
    ) -> Result<Self, PluginError> {
        let _awake = engine.ticker().awake();
        let state = HostState::new(version.label().into(), limits, lookup);
        let mut store = Store::new(engine.engine(), state);
        store.limiter(|s| s.limiter());
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(limits.call_deadline, EPOCH_TICK));
        let init_error = |reason: String| PluginError::Init {
            plugin: version.label(),
            reason,
        };
        let transform = version
            .pre()
            .instantiate(&mut store)
            .map_err(|e| init_error(format!("instantiation failed: {}", describe(&e))))?;
        let process = *transform.sluice_plugin_transformer().func_process().func();
        process
            .typed::<(BatchRef<'static>,), (Processed,)>(&store)
            .map_err(|e| init_error(format!("`process` has an unexpected type: {}", describe(&e))))?;
        let mut instance = Instance {
            store,
            transform,
            process,
            reads: None,
            version: version.clone(),
            ticker: engine.ticker().clone(),
        };
        if let Some(config) = config {
            instance.begin_call(limits);
            let guest = instance.transform.sluice_plugin_transformer();
            match guest.call_init(&mut instance.store, config) {
                Ok(Ok(())) => {}
                Ok(Err(message)) => return Err(init_error(format!("init refused the configuration: {message}"))),
                Err(e) => {
                    let failure = instance.classify(&e);
                    return Err(init_error(format!("init failed: {}", instance.explain(&failure))));
                }
            }
        }
        let guest = instance.transform.sluice_plugin_transformer();
        instance.reads = guest.call_reads(&mut instance.store).map_err(|e| {
            let failure = instance.classify(&e);
            init_error(format!("`reads` failed: {}", instance.explain(&failure)))
        })?;
        Ok(instance)
    }

    fn begin_call(&mut self, limits: &Limits) {
        self.store.data_mut().begin_call(limits);
        self.store
            .set_epoch_deadline(deadline_ticks(limits.call_deadline, EPOCH_TICK));
    }

    /// Calls `process` on one batch within the limits, sending only the fields the plugin
    /// reads.
    pub(crate) fn process(&mut self, batch: &Batch, limits: &Limits) -> Result<Processed, CallFailure> {
        let _awake = self.ticker.awake();
        self.begin_call(limits);
        let columns = projection(batch, self.reads.as_deref());
        let store = &mut self.store;
        let func = self.process;
        let result = with_view(batch, &columns, |view| {
            // SAFETY: `func` was checked at instantiation to have exactly this signature
            // (`typed::<(BatchRef, ), (Processed, )>`); lifetimes do not change the type.
            let typed: TypedFunc<(BatchRef<'_>,), (Processed,)> = unsafe { TypedFunc::new_unchecked(func) };
            typed.call(&mut *store, (view,))
        });
        result.map(|(processed,)| processed).map_err(|e| self.classify(&e))
    }

    fn classify(&self, error: &wasmtime::Error) -> CallFailure {
        if let Some(requested) = self.store.data().memory.refused {
            return CallFailure::OutOfMemory { requested };
        }
        if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return CallFailure::Timeout;
        }
        CallFailure::Trap {
            message: describe(error),
        }
    }

    /// A one-line explanation of a failure, with the tail of the guest's stderr (where
    /// panics and tracebacks are printed).
    pub(crate) fn explain(&self, failure: &CallFailure) -> String {
        let mut text = match failure {
            CallFailure::Timeout => "timed out (CPU deadline exceeded)".to_string(),
            CallFailure::OutOfMemory { requested } => {
                format!("out of memory (tried to grow linear memory to {} MiB)", requested >> 20)
            }
            CallFailure::Trap { message } => format!("trapped: {message}"),
        };
        let stderr = self.store.data().stderr.contents();
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = stderr.trim();
        if !stderr.is_empty() {
            let tail: String = stderr
                .chars()
                .rev()
                .take(600)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            text.push_str("; stderr: ");
            text.push_str(&tail.replace('\n', " | "));
        }
        text
    }

    /// Whether the instance should be recycled rather than reused (its stderr buffer is
    /// half full, so a later panic message could be lost).
    pub(crate) fn worn(&self) -> bool {
        self.store.data().stderr.contents().len() > super::bindings::STDERR_CAPACITY / 2
    }
}
