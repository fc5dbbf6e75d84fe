//! Events as a plugin sees them: typed access by field name over positional values.

use std::cell::RefCell;

use crate::bindings::sluice::plugin::types as wit;
use crate::{Error, Plugin};

/// A typed field value, as defined by the WIT contract.
pub use wit::Value;

/// The field names of a batch, shared by its events; fields set by the plugin are appended.
pub(crate) struct Schema {
    names: RefCell<Vec<String>>,
    /// Whether any event of the batch set the field at this position.
    written: RefCell<Vec<bool>>,
}

impl Schema {
    fn position(&self, name: &str) -> Option<usize> {
        self.names.borrow().iter().position(|n| n == name)
    }

    /// The position of a field being written, adding it if new and marking it written.
    fn position_written(&self, name: &str) -> usize {
        let i = self.position(name).unwrap_or_else(|| {
            let mut names = self.names.borrow_mut();
            names.push(name.to_string());
            names.len() - 1
        });
        let mut written = self.written.borrow_mut();
        if written.len() <= i {
            written.resize(i + 1, false);
        }
        written[i] = true;
        i
    }
}

/// One event of the batch being processed: its key, event time and named, typed fields.
#[derive(Clone)]
pub struct Event<'b> {
    key: String,
    time: i64,
    values: Vec<Value>,
    schema: &'b Schema,
}

/// Where [`Plugin::process`] puts its output events.
pub struct Emit<'b> {
    events: Vec<wit::Event>,
    schema: &'b Schema,
}

impl<'b> Emit<'b> {
    /// Emits an event (the input event, changed or not, or a new one).
    pub fn emit(&mut self, event: Event<'_>) {
        self.events.push(wit::Event {
            key: event.key,
            time: event.time,
            values: event.values,
        });
    }

    /// A new event with no fields set, to fill and [`emit`](Emit::emit) (flat-map). Like every
    /// output event it inherits the input event's fields it does not set.
    pub fn new_event(&self, key: impl Into<String>, time_us: i64) -> Event<'b> {
        Event {
            key: key.into(),
            time: time_us,
            values: Vec::new(),
            schema: self.schema,
        }
    }
}

fn type_error(field: &str, expected: &str) -> Error {
    Error(format!("field \"{field}\" must be {expected}"))
}

impl<'b> Event<'b> {
    /// The entity key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Replaces the entity key.
    pub fn set_key(&mut self, key: impl Into<String>) {
        self.key = key.into();
    }

    /// Event time in microseconds since the Unix epoch.
    pub fn time(&self) -> i64 {
        self.time
    }

    /// Replaces the event time (microseconds since the Unix epoch).
    pub fn set_time(&mut self, time_us: i64) {
        self.time = time_us;
    }

    /// The value of a field; `None` when the field is absent or null.
    pub fn get(&self, field: &str) -> Option<&Value> {
        let value = self.values.get(self.schema.position(field)?)?;
        (!matches!(value, Value::Null)).then_some(value)
    }

    /// A numeric field as `f64` (integers are converted); an error if it is not a number.
    pub fn f64(&self, field: &str) -> Result<Option<f64>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Float(v)) => Ok(Some(*v)),
            Some(Value::Integer(v)) => Ok(Some(*v as f64)),
            Some(_) => Err(type_error(field, "a number")),
        }
    }

    /// An integer field; an error if it is not an integer.
    pub fn i64(&self, field: &str) -> Result<Option<i64>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Integer(v)) => Ok(Some(*v)),
            Some(_) => Err(type_error(field, "an integer")),
        }
    }

    /// A text field; an error if it is not text.
    pub fn str(&self, field: &str) -> Result<Option<&str>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Text(v)) => Ok(Some(v)),
            Some(_) => Err(type_error(field, "text")),
        }
    }

    /// A boolean field; an error if it is not a boolean.
    pub fn bool(&self, field: &str) -> Result<Option<bool>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Boolean(v)) => Ok(Some(*v)),
            Some(_) => Err(type_error(field, "a boolean")),
        }
    }

    /// Sets a field, adding it to the output schema if it is new.
    pub fn set(&mut self, field: &str, value: impl Into<Value>) {
        let i = self.schema.position_written(field);
        if self.values.len() <= i {
            self.values.resize(i + 1, Value::Null);
        }
        self.values[i] = value.into();
    }

    /// Sets a field to null (it is then null in the output).
    pub fn clear(&mut self, field: &str) {
        self.set(field, Value::Null);
    }

    /// Every non-null field of the event, with its name.
    pub fn fields(&self) -> Vec<(String, &Value)> {
        let names = self.schema.names.borrow();
        names
            .iter()
            .zip(&self.values)
            .filter(|(_, v)| !matches!(v, Value::Null))
            .map(|(n, v)| (n.clone(), v))
            .collect()
    }
}

macro_rules! value_from {
    ($($t:ty => $case:ident $(as $cast:ty)?),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value { Value::$case(v $(as $cast)?) }
        }
    )*};
}

value_from!(bool => Boolean, i64 => Integer, i32 => Integer as i64, f64 => Float,
    f32 => Float as f64, String => Text, Vec<f64> => Floats, Vec<u8> => Bytes);

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// Runs a plugin over one batch: one outcome per input event, in order. Output events carry
/// only the written fields.
pub(crate) fn run_batch<P: Plugin>(plugin: &mut P, batch: wit::Batch) -> wit::Processed {
    let schema = Schema {
        names: RefCell::new(batch.fields),
        written: RefCell::new(Vec::new()),
    };
    let events: Vec<Event<'_>> = batch
        .events
        .into_iter()
        .map(|e| Event {
            key: e.key,
            time: e.time,
            values: e.values,
            schema: &schema,
        })
        .collect();
    let mut outcomes: Vec<Result<Vec<wit::Event>, String>> = Vec::with_capacity(events.len());
    if let Err(e) = plugin.prepare(&events) {
        outcomes.extend(events.iter().map(|_| Err(e.0.clone())));
    } else {
        for event in events {
            let mut out = Emit {
                events: Vec::with_capacity(1),
                schema: &schema,
            };
            outcomes.push(plugin.process(event, &mut out).map(|()| out.events).map_err(|e| e.0));
        }
    }
    let names = schema.names.into_inner();
    let written = schema.written.into_inner();
    let keep: Vec<usize> = (0..names.len())
        .filter(|&i| written.get(i).copied().unwrap_or(false))
        .collect();
    if keep.len() != names.len() {
        // Compact each event's values in place to the written fields (no new allocation).
        for event in outcomes.iter_mut().flatten().flatten() {
            let values = &mut event.values;
            for (to, &from) in keep.iter().enumerate() {
                let value = values.get_mut(from).map_or(Value::Null, take_value);
                if to < values.len() {
                    values[to] = value;
                } else {
                    values.push(value);
                }
            }
            values.truncate(keep.len());
        }
    }
    let fields = keep.iter().map(|&i| names[i].clone()).collect();
    wit::Processed { fields, outcomes }
}

fn take_value(value: &mut Value) -> Value {
    std::mem::replace(value, Value::Null)
}
