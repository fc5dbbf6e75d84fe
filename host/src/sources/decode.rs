//! Raw input (one JSON object per message or line) → an event with its entity key and event
//! time. Input that cannot become an event gets a reason for the dead-letter subject.

use serde_json::{Map, Value as Json};

use crate::config::{FeatureSetConfig, TimeFormat};
use crate::event::{into_value, values_from_json, Event, Value};
use crate::event_time::TimeReader;
use crate::fault::Invalid;
use crate::invalid;

/// Decodes raw events of one feature set.
#[derive(Debug, Clone)]
pub struct Decoder {
    entity: Vec<String>,
    time_field: String,
    time: TimeReader,
    max_bytes: usize,
}

impl Decoder {
    /// The decoder of a feature set; an error names a bad `timestamp.timezone` or pattern
    /// (validation reports them first).
    pub fn new(set: &FeatureSetConfig) -> Result<Self, Invalid> {
        Ok(Decoder {
            entity: set.entity.clone(),
            time_field: set.timestamp.field.clone(),
            time: TimeReader::new(set.timestamp.format.clone(), set.timestamp.timezone.as_deref())
                .map_err(|e| Invalid(e.to_string()))?,
            max_bytes: set.max_event_bytes,
        })
    }

    /// The fields every event needs: the entity key's and the event time's.
    pub fn required_fields(&self) -> Vec<&str> {
        let mut fields: Vec<&str> = self.entity.iter().map(String::as_str).collect();
        fields.push(&self.time_field);
        fields
    }

    /// The event-time field.
    pub fn time_field(&self) -> &str {
        &self.time_field
    }

    /// How this set's event times are read.
    pub fn time_reader(&self) -> &TimeReader {
        &self.time
    }

    /// Decodes one event, extending `fields` with names not seen yet in this batch.
    pub fn decode(&self, bytes: &[u8], fields: &mut Vec<String>) -> Result<Event, Invalid> {
        if bytes.len() > self.max_bytes {
            return Err(invalid!(
                "event of {} bytes is larger than max_event_bytes ({})",
                bytes.len(),
                self.max_bytes
            ));
        }
        let object: Map<String, Json> = match serde_json::from_slice(bytes) {
            Ok(Json::Object(object)) => object,
            Ok(other) => return Err(invalid!("expected a JSON object, found {}", json_kind(&other))),
            Err(e) => return Err(invalid!("invalid JSON: {e}")),
        };
        let key = self.key(|name| object.get(name))?;
        let time = read_time(&self.time, object.get(&self.time_field), &self.time_field)?
            .ok_or_else(|| invalid!("missing event time field \"{}\"", self.time_field))?;
        let mut values = values_from_json(object, fields);
        self.keys_as_text(fields, &mut values);
        Ok(Event { key, time, values })
    }

    /// Entity key fields hold their key's text in every row: `{"user_id": 42}` is the entity
    /// "42" online, offline, in lookups and in training sets, and its `user_id` feature is the
    /// text "42" in each of them (one type per column, whatever the producer sent).
    fn keys_as_text(&self, fields: &[String], values: &mut [Value]) {
        for field in &self.entity {
            let at = fields.iter().position(|f| f == field);
            if let Some(value) = at.and_then(|at| values.get_mut(at)) {
                if let Value::Integer(n) = value {
                    *value = Value::Text(n.to_string());
                }
            }
        }
    }

    /// Builds an event from a feature row of another set (its field names, its values, its
    /// event time): only the entity key is taken from the values, which move into the event.
    pub fn decode_row(
        &self,
        names: &[String],
        values: Vec<Json>,
        time: i64,
        fields: &mut Vec<String>,
    ) -> Result<Event, Invalid> {
        let key = self.key(|name| names.iter().position(|n| n == name).and_then(|i| values.get(i)))?;
        let mut out = vec![Value::Null; fields.len()];
        for (name, json) in names.iter().zip(values) {
            let i = fields.iter().position(|f| f == name).unwrap_or_else(|| {
                fields.push(name.clone());
                out.push(Value::Null);
                fields.len() - 1
            });
            out[i] = into_value(json);
        }
        self.keys_as_text(fields, &mut out);
        Ok(Event { key, time, values: out })
    }

    /// The entity key from the entity fields, as `get` finds them.
    /// The entity key of a JSON object (its entity fields, joined with ':').
    pub fn key_of(&self, object: &Map<String, Json>) -> Result<String, Invalid> {
        self.key(|name| object.get(name))
    }

    fn key<'a>(&self, get: impl Fn(&str) -> Option<&'a Json>) -> Result<String, Invalid> {
        let mut key = String::new();
        for (i, field) in self.entity.iter().enumerate() {
            if i > 0 {
                key.push(':');
            }
            match get(field) {
                Some(Json::String(s)) if !s.is_empty() => key.push_str(s),
                Some(Json::Number(n)) if n.is_i64() || n.is_u64() => key.push_str(&n.to_string()),
                None | Some(Json::Null) => return Err(invalid!("missing entity key field \"{field}\"")),
                Some(Json::String(_)) => return Err(invalid!("entity key field \"{field}\" is empty")),
                Some(other) => {
                    return Err(invalid!(
                        "entity key field \"{field}\" must be text or an integer, found {}",
                        json_kind(other)
                    ))
                }
            }
        }
        Ok(key)
    }
}

/// Event time in microseconds from a JSON value; `None` when absent or null. The reason
/// names the field.
pub fn read_time(reader: &TimeReader, json: Option<&Json>, field: &str) -> Result<Option<i64>, Invalid> {
    match json {
        None => Ok(None),
        Some(json) => reader
            .read(json)
            .map_err(|e| invalid!("event time field \"{field}\": {e}")),
    }
}

/// Event time in microseconds from a JSON value in `format`, naive times in UTC; `None` when
/// absent or null.
pub fn parse_time(json: Option<&Json>, field: &str, format: TimeFormat) -> Result<Option<i64>, Invalid> {
    read_time(&TimeReader::utc(format), json, field)
}

/// A time given as text by a person (a command's option, a query parameter): RFC 3339, or a
/// number of milliseconds since the epoch; µs since the epoch. `what` names it in the error.
pub fn parse_time_text(text: &str, what: &str) -> Result<i64, Invalid> {
    let json = match text.parse::<i64>() {
        Ok(ms) => Json::from(ms),
        Err(_) => Json::from(text),
    };
    parse_time(Some(&json), what, TimeFormat::EpochMs)?.ok_or_else(|| invalid!("{what}: expected a time"))
}

/// How a JSON value is named in messages ("an array", "text", …).
pub fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "text",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder {
            entity: vec!["user_id".into()],
            time_field: "ts".into(),
            time: TimeReader::utc(TimeFormat::EpochMs),
            max_bytes: 200,
        }
    }

    #[test]
    fn a_good_event_gets_its_key_and_time() {
        let mut fields = Vec::new();
        let e = decoder()
            .decode(
                br#"{"user_id":"u1","ts":"2026-11-26T10:00:00Z","amount":2}"#,
                &mut fields,
            )
            .unwrap();
        assert_eq!(e.key, "u1");
        assert_eq!(e.time, 1_795_687_200_000_000);
        let e = decoder()
            .decode(br#"{"user_id":7,"ts":1764151200000}"#, &mut fields)
            .unwrap();
        assert_eq!((e.key.as_str(), e.time), ("7", 1_764_151_200_000_000));
    }

    #[test]
    fn poison_gets_a_reason_that_says_what_was_expected() {
        let cases: [(&[u8], &str); 6] = [
            (b"{not json", "invalid JSON"),
            (b"[1,2]", "expected a JSON object, found an array"),
            (br#"{"ts":1}"#, "missing entity key field \"user_id\""),
            (
                br#"{"user_id":1.5,"ts":1}"#,
                "must be text or an integer, found a number",
            ),
            (br#"{"user_id":"u"}"#, "missing event time field \"ts\""),
            (
                br#"{"user_id":"u","ts":"yesterday"}"#,
                "expected a number of milliseconds since the epoch, or RFC 3339",
            ),
        ];
        for (input, expected) in cases {
            let err = decoder().decode(input, &mut Vec::new()).unwrap_err();
            assert!(err.0.contains(expected), "{err}");
        }
        let big = format!(r#"{{"user_id":"u","ts":1,"x":"{}"}}"#, "a".repeat(300));
        assert!(decoder()
            .decode(big.as_bytes(), &mut Vec::new())
            .unwrap_err()
            .0
            .contains("larger than max_event_bytes"));
    }
}
