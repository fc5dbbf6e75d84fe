//! What a `wasm` step holds: a plugin bound to one configuration, always running the active
//! version, with a pool of warm instances; and batch execution that isolates a failing event.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use super::instance::{CallFailure, Instance};
use super::registry::{PluginSlot, PluginVersion};
use super::{Limits, OnlineLookup, PluginEngine, PluginError};
use crate::event::{batch_bytes, event_bytes, Batch, Event, Processed, Value};

/// Why one event failed in a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The plugin returned an error for this event.
    Rejected,
    /// The plugin trapped (panic, uncaught exception) on this event alone.
    Trap,
    /// The plugin ran past its CPU deadline on this event alone.
    Timeout,
    /// The plugin exceeded its memory cap on this event alone.
    OutOfMemory,
    /// The event, or what the plugin made of it, is larger than the limits allow.
    Oversize,
    /// The plugin broke the contract (e.g. returned the wrong number of outcomes).
    Invalid,
    /// The plugin could not be instantiated or initialised; retrying later may help.
    Unavailable,
}

/// One failed event: what happened, in words that name the plugin and version.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFailure {
    /// The kind of failure.
    pub kind: FailureKind,
    /// Human-readable reason, starting with `plugin <name>@<version>`.
    pub reason: String,
}

/// The result of one batch: exactly one outcome per input event, in input order.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// The version that processed every event of this batch.
    pub version: Arc<PluginVersion>,
    /// Field names of the output events.
    pub fields: Vec<String>,
    /// One outcome per input event: its output events, or why it failed.
    pub outcomes: Vec<Result<Vec<Event>, EventFailure>>,
}

pub(crate) struct HandleInner {
    pub(crate) config: Vec<(String, String)>,
    pub(crate) limits: Limits,
    pub(crate) lookup: Arc<dyn OnlineLookup>,
    engine: Arc<PluginEngine>,
    slot: Arc<PluginSlot>,
    idle: Mutex<Vec<Instance>>,
    /// Calls into the guest so far (a split batch is several).
    calls: std::sync::atomic::AtomicU64,
}

/// A deployed plugin bound to one configuration. Cheap to clone; safe to call from several
/// threads at once (each call takes its own instance).
#[derive(Clone)]
pub struct PluginHandle {
    inner: Arc<HandleInner>,
}

impl PluginHandle {
    pub(crate) fn new(
        engine: Arc<PluginEngine>,
        slot: Arc<PluginSlot>,
        config: Vec<(String, String)>,
        limits: Limits,
        lookup: Arc<dyn OnlineLookup>,
    ) -> Result<Self, PluginError> {
        let inner = Arc::new(HandleInner {
            config,
            limits,
            lookup,
            engine,
            slot,
            idle: Mutex::new(Vec::new()),
            calls: std::sync::atomic::AtomicU64::new(0),
        });
        let version = inner.slot.active();
        let instance = inner.instantiate(&version)?;
        inner.checkin(instance);
        inner.slot.add_user(&inner);
        Ok(PluginHandle { inner })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.inner.slot.name().as_str()
    }

    /// How many calls into the guest this handle has made: one per batch within the limits;
    /// a batch above `batch_bytes` is split in halves until each fits, a call each.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The version new batches run on.
    pub fn active_version(&self) -> Arc<PluginVersion> {
        self.inner.slot.active()
    }

    /// Processes one batch on the active version. A batch in flight during a hot swap
    /// finishes on the version it started with. Output events are built from copies of the
    /// input events' values; [`PluginHandle::process_owned`] moves them instead.
    pub fn process(&self, batch: &Batch) -> BatchOutput {
        let version = self.inner.slot.active();
        self.inner.process_on(&version, Cow::Borrowed(batch))
    }

    /// Like [`PluginHandle::process`], but moves the input values into the output events
    /// rather than copying them (what a pipeline step does).
    pub fn process_owned(&self, batch: Batch) -> BatchOutput {
        let version = self.inner.slot.active();
        self.inner.process_on(&version, Cow::Owned(batch))
    }
}

impl HandleInner {
    pub(crate) fn instantiate(&self, version: &Arc<PluginVersion>) -> Result<Instance, PluginError> {
        Instance::new(
            &self.engine,
            version,
            &self.limits,
            self.lookup.clone(),
            Some(&self.config),
        )
    }

    fn checkout(&self, version: &Arc<PluginVersion>) -> Result<Instance, PluginError> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            // Keep warm instances of the version asked for and of the active one only.
            let active = self.slot.active();
            idle.retain(|i| Arc::ptr_eq(&i.version, version) || Arc::ptr_eq(&i.version, &active));
            let at = idle.iter().rposition(|i| Arc::ptr_eq(&i.version, version));
            at.map(|i| idle.swap_remove(i))
        };
        match reused {
            Some(instance) => Ok(instance),
            None => self.instantiate(version),
        }
    }

    fn checkin(&self, instance: Instance) {
        if instance.worn() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Instances of versions that are no longer active are dropped, not pooled.
        if Arc::ptr_eq(&instance.version, &self.slot.active()) {
            idle.push(instance);
        }
    }

    fn process_on(&self, version: &Arc<PluginVersion>, batch: Cow<'_, Batch>) -> BatchOutput {
        let fail = |kind, reason: String| EventFailure {
            kind,
            reason: format!("plugin {}: {reason}", version.label()),
        };
        let n = batch.events.len();
        if n == 0 {
            return BatchOutput {
                version: version.clone(),
                fields: batch.fields.clone(),
                outcomes: Vec::new(),
            };
        }
        if batch_bytes(&batch) > self.limits.batch_bytes {
            if n == 1 {
                let size = event_bytes(&batch.events[0]);
                let reason = format!(
                    "event of {size} bytes is larger than the batch limit of {} bytes",
                    self.limits.batch_bytes
                );
                return single_failure(version, &batch, fail(FailureKind::Oversize, reason));
            }
            return self.split(version, batch.into_owned());
        }
        let mut instance = match self.checkout(version) {
            Ok(instance) => instance,
            Err(e) => {
                let failure = EventFailure {
                    kind: FailureKind::Unavailable,
                    reason: e.to_string(),
                };
                return BatchOutput {
                    version: version.clone(),
                    fields: batch.fields.clone(),
                    outcomes: vec![Err(failure); n],
                };
            }
        };
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match instance.process(&batch, &self.limits) {
            Ok(processed) => {
                self.checkin(instance);
                match self.accept(&batch, &processed) {
                    Ok(()) => compose(version, batch, processed),
                    Err(_) if n > 1 => self.one_by_one(version, batch.into_owned()),
                    Err((kind, reason)) => single_failure(version, &batch, fail(kind, reason)),
                }
            }
            Err(_) if n > 1 => self.one_by_one(version, batch.into_owned()),
            Err(failure) => {
                let kind = match failure {
                    CallFailure::Timeout => FailureKind::Timeout,
                    CallFailure::OutOfMemory { .. } => FailureKind::OutOfMemory,
                    CallFailure::Trap { .. } => FailureKind::Trap,
                };
                single_failure(version, &batch, fail(kind, instance.explain(&failure)))
            }
        }
    }

    /// Checks a plugin's answer: one outcome per event, sizes within the limits.
    fn accept(&self, batch: &Batch, processed: &Processed) -> Result<(), (FailureKind, String)> {
        if processed.outcomes.len() != batch.events.len() {
            return Err((
                FailureKind::Invalid,
                format!(
                    "returned {} outcomes for {} events (the contract requires one per event)",
                    processed.outcomes.len(),
                    batch.events.len()
                ),
            ));
        }
        let mut bytes = 0;
        for events in processed.outcomes.iter().flatten() {
            if events.len() > self.limits.outputs_per_event {
                let reason = format!(
                    "emitted {} events for one input, above the limit of {}",
                    events.len(),
                    self.limits.outputs_per_event
                );
                return Err((FailureKind::Oversize, reason));
            }
            bytes += events.iter().map(event_bytes).sum::<usize>();
        }
        if bytes > self.limits.output_bytes {
            return Err((
                FailureKind::Oversize,
                format!(
                    "output of {bytes} bytes is above the limit of {} bytes",
                    self.limits.output_bytes
                ),
            ));
        }
        Ok(())
    }

    fn split(&self, version: &Arc<PluginVersion>, mut batch: Batch) -> BatchOutput {
        let second = batch.events.split_off(batch.events.len() / 2);
        let second = Batch {
            fields: batch.fields.clone(),
            events: second,
        };
        let parts = vec![
            self.process_on(version, Cow::Owned(batch)),
            self.process_on(version, Cow::Owned(second)),
        ];
        merge(version, parts)
    }

    /// Retries each event of a failed batch on its own, so only the culprit fails.
    fn one_by_one(&self, version: &Arc<PluginVersion>, batch: Batch) -> BatchOutput {
        let fields = batch.fields;
        let parts = batch
            .events
            .into_iter()
            .map(|event| {
                self.process_on(
                    version,
                    Cow::Owned(Batch {
                        fields: fields.clone(),
                        events: vec![event],
                    }),
                )
            })
            .collect();
        merge(version, parts)
    }
}

/// Builds the output events: each inherits its input event's fields and carries the
/// plugin's values over them. The output fields are the input fields followed by new ones.
fn compose(version: &Arc<PluginVersion>, batch: Cow<'_, Batch>, processed: Processed) -> BatchOutput {
    let mut fields = batch.fields.clone();
    let targets: Vec<usize> = processed
        .fields
        .iter()
        .map(|f| {
            fields.iter().position(|g| g == f).unwrap_or_else(|| {
                fields.push(f.clone());
                fields.len() - 1
            })
        })
        .collect();
    let width = fields.len();
    let (mut owned, borrowed) = match batch {
        Cow::Owned(batch) => (Some(batch.events), None),
        Cow::Borrowed(batch) => (None, Some(&batch.events)),
    };
    let outcomes = processed
        .outcomes
        .into_iter()
        .enumerate()
        .map(|(i, outcome)| {
            let outputs = outcome.map_err(|message| EventFailure {
                kind: FailureKind::Rejected,
                reason: message,
            })?;
            let count = outputs.len();
            let mut base = match (&mut owned, borrowed) {
                (Some(events), _) => Some(std::mem::take(&mut events[i].values)),
                (None, Some(events)) if count > 0 => Some(events[i].values.clone()),
                _ => None,
            };
            Ok(outputs
                .into_iter()
                .enumerate()
                .map(|(k, out)| {
                    let mut values = if k + 1 == count { base.take() } else { base.clone() }.unwrap_or_default();
                    values.resize(width, Value::Null);
                    for (value, &to) in out.values.into_iter().zip(&targets) {
                        values[to] = value;
                    }
                    Event {
                        key: out.key,
                        time: out.time,
                        values,
                    }
                })
                .collect())
        })
        .collect();
    BatchOutput {
        version: version.clone(),
        fields,
        outcomes,
    }
}

fn single_failure(version: &Arc<PluginVersion>, batch: &Batch, failure: EventFailure) -> BatchOutput {
    BatchOutput {
        version: version.clone(),
        fields: batch.fields.clone(),
        outcomes: vec![Err(failure)],
    }
}

/// Joins the outputs of several calls into one, over the union of their output fields.
fn merge(version: &Arc<PluginVersion>, parts: Vec<BatchOutput>) -> BatchOutput {
    let mut fields: Vec<String> = Vec::new();
    for part in &parts {
        for f in &part.fields {
            if !fields.contains(f) {
                fields.push(f.clone());
            }
        }
    }
    let outcomes = parts
        .into_iter()
        .flat_map(|part| {
            let map: Vec<usize> = part
                .fields
                .iter()
                .map(|f| fields.iter().position(|g| g == f).unwrap_or(0))
                .collect();
            let width = fields.len();
            part.outcomes
                .into_iter()
                .map(move |outcome| outcome.map(|events| events.into_iter().map(|e| remap(e, &map, width)).collect()))
        })
        .collect();
    BatchOutput {
        version: version.clone(),
        fields,
        outcomes,
    }
}

fn remap(event: Event, map: &[usize], width: usize) -> Event {
    let mut values = vec![Value::Null; width];
    for (i, value) in event.values.into_iter().enumerate() {
        if let Some(&to) = map.get(i) {
            values[to] = value;
        }
    }
    Event {
        key: event.key,
        time: event.time,
        values,
    }
}
