//! How a batch crosses into a plugin: borrowed views of the host's batch, lowered straight
//! into guest memory (no per-event allocation on the host), restricted to the fields the
//! plugin reads.

use wasmtime::component::{ComponentType, Lower};

use crate::event::{Batch, Value};

/// A borrowed `value` (same shape as the WIT variant).
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(variant)]
pub(crate) enum ValueRef<'a> {
    #[component(name = "null")]
    Null,
    #[component(name = "boolean")]
    Boolean(bool),
    #[component(name = "integer")]
    Integer(i64),
    #[component(name = "float")]
    Float(f64),
    #[component(name = "text")]
    Text(&'a str),
    #[component(name = "bytes")]
    Bytes(&'a [u8]),
    #[component(name = "floats")]
    Floats(&'a [f64]),
    #[component(name = "json")]
    Json(&'a str),
}

/// A borrowed `event`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct EventRef<'a> {
    key: &'a str,
    time: i64,
    values: &'a [ValueRef<'a>],
}

/// A borrowed `batch`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct BatchRef<'a> {
    fields: &'a [&'a str],
    events: &'a [EventRef<'a>],
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => ValueRef::Null,
            Value::Boolean(b) => ValueRef::Boolean(*b),
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Text(s) => ValueRef::Text(s),
            Value::Bytes(b) => ValueRef::Bytes(b),
            Value::Floats(v) => ValueRef::Floats(v),
            Value::Json(s) => ValueRef::Json(s),
        }
    }
}

/// The positions, in a batch, of the fields a plugin reads (all fields when it reads all).
pub(crate) fn projection(batch: &Batch, reads: Option<&[String]>) -> Vec<usize> {
    match reads {
        None => (0..batch.fields.len()).collect(),
        Some(reads) => reads
            .iter()
            .filter_map(|r| batch.fields.iter().position(|f| f == r))
            .collect(),
    }
}

/// Builds the borrowed view of a batch restricted to `columns` and hands it to `call`: two
/// allocations per batch, none per event.
pub(crate) fn with_view<R>(batch: &Batch, columns: &[usize], call: impl FnOnce(BatchRef<'_>) -> R) -> R {
    let fields: Vec<&str> = columns.iter().map(|&i| batch.fields[i].as_str()).collect();
    let width = columns.len();
    let mut values: Vec<ValueRef<'_>> = Vec::with_capacity(width * batch.events.len());
    for event in &batch.events {
        values.extend(
            columns
                .iter()
                .map(|&i| event.values.get(i).map_or(ValueRef::Null, ValueRef::from)),
        );
    }
    let events: Vec<EventRef<'_>> = batch
        .events
        .iter()
        .enumerate()
        .map(|(n, e)| EventRef {
            key: &e.key,
            time: e.time,
            values: &values[n * width..(n + 1) * width],
        })
        .collect();
    call(BatchRef {
        fields: &fields,
        events: &events,
    })
}
