//! The typed event model: what flows between steps and what plugins see.
//!
//! The types are the ones of the WIT contract (`wit/plugin.wit`), so handing a batch to a
//! plugin copies it into the guest without any conversion. Field values are positional:
//! a batch carries its field names once.

use serde_json::{Map, Number, Value as Json};

pub use crate::wit::sluice::plugin::types::{Batch, Event, Field, Processed, Value};

/// Converts one JSON object into event values, in the order of `fields` (appending names of
/// fields not yet known). Arrays of numbers (and empty arrays) become `floats`; other arrays and objects `json`.
/// The object is consumed: its names and strings move into the result, nothing is copied.
pub fn values_from_json(object: Map<String, Json>, fields: &mut Vec<String>) -> Vec<Value> {
    let mut values = vec![Value::Null; fields.len()];
    for (name, json) in object {
        let i = match fields.iter().position(|f| *f == name) {
            Some(i) => i,
            None => {
                fields.push(name);
                values.push(Value::Null);
                fields.len() - 1
            }
        };
        values[i] = into_value(json);
    }
    values
}

/// Converts one JSON value into an event value, moving its strings.
pub fn into_value(json: Json) -> Value {
    match json {
        Json::String(s) => Value::Text(s),
        other => value_from_json(&other),
    }
}

/// Converts one JSON value into an event value.
pub fn value_from_json(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s.clone()),
        // An empty array is an empty list of floats, as a list column's empty cell is.
        Json::Array(items) if items.iter().all(Json::is_number) => {
            Value::Floats(items.iter().filter_map(Json::as_f64).collect())
        }
        other => Value::Json(other.to_string()),
    }
}

/// A value serialized as JSON directly, without building a JSON tree first: what Redis
/// stores and what feature-row messages carry. Same mapping as [`value_to_json`].
pub struct JsonValue<'a>(pub &'a Value);

impl serde::Serialize for JsonValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let finite = |f: f64| f.is_finite().then_some(f);
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Float(f) => finite(*f).serialize(s),
            Value::Text(t) => s.serialize_str(t),
            Value::Bytes(b) => b.serialize(s),
            Value::Floats(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for f in v {
                    seq.serialize_element(&finite(*f))?;
                }
                seq.end()
            }
            Value::Json(text) => match serde_json::from_str::<Json>(text) {
                Ok(json) => json.serialize(s),
                Err(_) => s.serialize_str(text),
            },
        }
    }
}

/// Several values serialized as a JSON array.
pub struct JsonValues<'a>(pub &'a [Value]);

impl serde::Serialize for JsonValues<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(JsonValue))
    }
}

/// The JSON text of a value.
pub fn json_text(value: &Value) -> String {
    serde_json::to_string(&JsonValue(value)).unwrap_or_else(|_| "null".into())
}

/// Converts an event value into JSON: bytes become an array of numbers, `json` values are
/// embedded as parsed JSON, and non-finite floats become null (JSON has no NaN).
pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => Json::from(*i),
        Value::Float(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Text(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
        Value::Floats(v) => Json::Array(
            v.iter()
                .map(|f| Number::from_f64(*f).map_or(Json::Null, Json::Number))
                .collect(),
        ),
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| Json::String(s.clone())),
    }
}

/// Converts an event's values into a JSON object, naming them after `fields`; null values
/// are written as null, values past the end of `fields` are ignored.
pub fn event_to_json(fields: &[String], event: &Event) -> Map<String, Json> {
    fields
        .iter()
        .zip(&event.values)
        .map(|(f, v)| (f.clone(), value_to_json(v)))
        .collect()
}

/// Approximate in-memory size of a batch in bytes, used to enforce batch size limits.
pub fn batch_bytes(batch: &Batch) -> usize {
    let names: usize = batch.fields.iter().map(|f| f.len() + 8).sum();
    names + batch.events.iter().map(event_bytes).sum::<usize>()
}

/// Approximate in-memory size of an event in bytes.
pub fn event_bytes(event: &Event) -> usize {
    24 + event.key.len() + event.values.iter().map(value_bytes).sum::<usize>()
}

fn value_bytes(value: &Value) -> usize {
    16 + match value {
        Value::Text(s) | Value::Json(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::Floats(v) => v.len() * 8,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_every_kind_of_value() {
        let line = r#"{"a":null,"b":true,"c":-3,"d":1.5,"e":"x","f":[1.0,2.5],"g":{"k":[1,"z"]}}"#;
        let object: Map<String, Json> = serde_json::from_str(line).unwrap();
        let mut fields = Vec::new();
        let values = values_from_json(object, &mut fields);
        assert_eq!(values[2], Value::Integer(-3));
        assert_eq!(values[5], Value::Floats(vec![1.0, 2.5]));
        assert!(matches!(&values[6], Value::Json(s) if s == r#"{"k":[1,"z"]}"#));
        let event = Event {
            key: String::new(),
            time: 0,
            values,
        };
        assert_eq!(
            Json::Object(event_to_json(&fields, &event)),
            serde_json::from_str::<Json>(line).unwrap()
        );
    }

    #[test]
    fn new_fields_extend_the_schema_and_known_fields_keep_their_position() {
        let mut fields = vec!["b".to_string()];
        let object = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let values = values_from_json(object, &mut fields);
        assert_eq!(fields, ["b", "a"]);
        assert_eq!(values, [Value::Integer(2), Value::Integer(1)]);
    }
}
