//! `cast`: converts fields to `int`, `float`, `bool`, `string` or `timestamp` (microseconds
//! since the epoch, UTC, read by the same reader as event times: `format` and `timezone` as in
//! `timestamp`). A null stays null; a value that cannot convert makes its event a dead letter
//! that names the field, the value and what was expected.

use crate::fault::Invalid;
use indexmap::IndexMap;
use serde::Deserialize;

use super::{BuildContext, Halt, Resolve, Step, StepError, StepSpec};
use crate::event::{json_text, Value};
use crate::event_time::{TimeFormat, TimeReader};
use crate::rows::{Failure, Rows};

/// `kind = "cast"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CastConfig {
    /// Field → the type to convert it to.
    pub fields: IndexMap<String, CastType>,
    /// How `timestamp` casts read text and numbers (as `timestamp.format`; default `auto`).
    #[serde(default)]
    pub format: TimeFormat,
    /// The zone of naive times for `timestamp` casts (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
}

/// What a field is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CastType {
    /// A 64-bit integer (text of digits, whole floats, booleans as 1/0).
    Int,
    /// A float (text of a number, integers, booleans as 1/0).
    Float,
    /// A boolean (`true`/`false`, `1`/`0`, `yes`/`no` in any case, integers 0 and 1).
    Bool,
    /// Text (numbers and booleans written out, JSON as its text).
    String,
    /// Microseconds since the epoch (UTC).
    Timestamp,
}

impl CastType {
    /// The name a user writes.
    fn name(self) -> &'static str {
        match self {
            CastType::Int => "int",
            CastType::Float => "float",
            CastType::Bool => "bool",
            CastType::String => "string",
            CastType::Timestamp => "timestamp",
        }
    }
}

impl StepSpec for CastConfig {
    fn resolve(&self, step: &mut Resolve) {
        if self.fields.is_empty() {
            step.report(
                "fields",
                "expected at least one field = \"int|float|bool|string|timestamp\"".into(),
            );
        }
        for field in self.fields.keys() {
            step.need(field, &format!("fields.{field}"));
        }
        if let Err(e) = TimeReader::new(self.format.clone(), self.timezone.as_deref()) {
            step.report(e.key(), e.to_string());
        }
    }

    fn build(&self, id: String, _: &BuildContext) -> Result<Box<dyn Step>, StepError> {
        let time = TimeReader::new(self.format.clone(), self.timezone.as_deref()).map_err(|e| StepError::Invalid {
            step: id.clone(),
            message: e.to_string(),
        })?;
        Ok(Box::new(Cast {
            id,
            fields: self.fields.iter().map(|(f, t)| (f.clone(), *t)).collect(),
            time,
        }))
    }
}

struct Cast {
    id: String,
    fields: Vec<(String, CastType)>,
    time: TimeReader,
}

impl Step for Cast {
    fn apply(&mut self, mut rows: Rows, failures: &mut Vec<Failure>) -> Result<Rows, Halt> {
        let positions: Vec<(usize, CastType, &str)> = self
            .fields
            .iter()
            .filter_map(|(f, t)| Some((rows.batch.fields.iter().position(|n| n == f)?, *t, f.as_str())))
            .collect();
        let mut failed = vec![None; rows.len()];
        for (event, slot) in rows.batch.events.iter_mut().zip(&mut failed) {
            for &(at, to, name) in &positions {
                let Some(value) = event.values.get_mut(at) else {
                    continue;
                };
                if let Err(expected) = cast(value, to, &self.time) {
                    let found = json_text(value);
                    *slot = Some(format!(
                        "field \"{name}\": cannot cast {found} to {}: expected {expected}",
                        to.name()
                    ));
                    break;
                }
            }
        }
        Ok(rows.without_failed(failed, &self.id, failures))
    }
}

/// Converts the value in place (null stays null); `Err` says what was expected.
fn cast(value: &mut Value, to: CastType, time: &TimeReader) -> Result<(), Invalid> {
    if let (CastType::String, Value::Json(text)) = (to, &mut *value) {
        let text = std::mem::take(text);
        *value = Value::Text(text);
        return Ok(());
    }
    if let Some(converted) = converted(value, to, time)? {
        *value = converted;
    }
    Ok(())
}

/// The value converted (`None`: already of that type, or null); `Err` says what was expected.
fn converted(value: &Value, to: CastType, time: &TimeReader) -> Result<Option<Value>, Invalid> {
    Ok(Some(match (to, value) {
        (_, Value::Null)
        | (CastType::Int, Value::Integer(_))
        | (CastType::Float, Value::Float(_))
        | (CastType::Bool, Value::Boolean(_))
        | (CastType::String, Value::Text(_)) => return Ok(None),
        (CastType::Int, Value::Float(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => Value::Integer(*f as i64),
        (CastType::Int, Value::Boolean(b)) => Value::Integer(*b as i64),
        (CastType::Int, Value::Text(t)) => match t.trim().parse::<i64>() {
            Ok(i) => Value::Integer(i),
            Err(_) => match t.trim().parse::<f64>() {
                Ok(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Value::Integer(f as i64),
                _ => return Err("a whole number".into()),
            },
        },
        (CastType::Int, _) => return Err("a whole number".into()),
        (CastType::Float, Value::Integer(i)) => Value::Float(*i as f64),
        (CastType::Float, Value::Boolean(b)) => Value::Float(*b as u8 as f64),
        (CastType::Float, Value::Text(t)) => match t.trim().parse::<f64>() {
            Ok(f) => Value::Float(f),
            Err(_) => return Err("a number".into()),
        },
        (CastType::Float, _) => return Err("a number".into()),
        (CastType::Bool, Value::Integer(0)) => Value::Boolean(false),
        (CastType::Bool, Value::Integer(1)) => Value::Boolean(true),
        (CastType::Bool, Value::Text(t)) => {
            let t = t.trim();
            let is = |words: [&str; 3]| words.iter().any(|w| t.eq_ignore_ascii_case(w));
            match (is(["true", "1", "yes"]), is(["false", "0", "no"])) {
                (true, _) => Value::Boolean(true),
                (_, true) => Value::Boolean(false),
                _ => return Err("true/false, 1/0 or yes/no".into()),
            }
        }
        (CastType::Bool, _) => return Err("true/false, 1/0 or yes/no".into()),
        (CastType::String, other) => Value::Text(json_text(other)),
        (CastType::Timestamp, Value::Text(t)) => Value::Integer(time.read_text(t).map_err(|e| e.expected)?),
        (CastType::Timestamp, Value::Integer(i)) => Value::Integer(
            time.read(&serde_json::Value::from(*i))
                .map_err(|e| e.expected)?
                .unwrap_or_default(),
        ),
        (CastType::Timestamp, Value::Float(f)) => Value::Integer(
            time.read(&serde_json::Value::from(*f))
                .map_err(|e| e.expected)?
                .unwrap_or_default(),
        ),
        (CastType::Timestamp, _) => return Err(Invalid(time.expected())),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn apply(config: &str, values: Vec<Vec<Value>>) -> (Rows, Vec<Failure>) {
        let config: CastConfig = toml::from_str(config).unwrap();
        let time = TimeReader::new(config.format.clone(), config.timezone.as_deref()).unwrap();
        let mut step = Cast {
            id: "c".into(),
            fields: config.fields.iter().map(|(f, t)| (f.clone(), *t)).collect(),
            time,
        };
        let mut rows = Rows::new(vec!["a".into(), "b".into()]);
        for (i, values) in values.into_iter().enumerate() {
            rows.push(
                i as u64 + 1,
                Event {
                    key: "k".into(),
                    time: 0,
                    values,
                },
            );
        }
        let mut failures = Vec::new();
        (step.apply(rows, &mut failures).unwrap(), failures)
    }

    #[test]
    fn fields_convert_and_a_value_that_cannot_is_a_dead_letter_with_its_reason() {
        let text = |s: &str| Value::Text(s.into());
        let (rows, failures) = apply(
            "fields = { a = \"int\", b = \"float\" }",
            vec![
                vec![text(" 42 "), text("2.5")],
                vec![Value::Float(7.0), Value::Integer(3)],
                vec![text("4.5"), Value::Null],
                vec![Value::Boolean(true), Value::Boolean(false)],
            ],
        );
        assert_eq!(rows.seqs, [1, 2, 4]);
        assert_eq!(rows.batch.events[0].values, [Value::Integer(42), Value::Float(2.5)]);
        assert_eq!(rows.batch.events[1].values, [Value::Integer(7), Value::Float(3.0)]);
        assert_eq!(rows.batch.events[2].values, [Value::Integer(1), Value::Float(0.0)]);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].seq, 3);
        assert_eq!(
            failures[0].reason,
            "field \"a\": cannot cast \"4.5\" to int: expected a whole number"
        );

        let (rows, failures) = apply(
            "fields = { a = \"bool\", b = \"string\" }",
            vec![
                vec![text("Yes"), Value::Float(1.5)],
                vec![Value::Integer(0), Value::Boolean(true)],
                vec![text("maybe"), Value::Null],
            ],
        );
        assert_eq!(rows.batch.events[0].values, [Value::Boolean(true), text("1.5")]);
        assert_eq!(rows.batch.events[1].values, [Value::Boolean(false), text("true")]);
        assert!(
            failures[0].reason.contains("to bool: expected true/false"),
            "{}",
            failures[0].reason
        );
    }

    #[test]
    fn timestamps_are_read_by_the_event_time_reader() {
        let text = |s: &str| Value::Text(s.into());
        let (rows, failures) = apply(
            "fields = { a = \"timestamp\" }\nformat = \"%d/%m/%Y %H:%M\"\ntimezone = \"Europe/Paris\"",
            vec![
                vec![text("01/01/2024 01:00"), Value::Null],
                vec![text("2024-01-01T00:00:00Z"), Value::Null],
                vec![text("soon"), Value::Null],
            ],
        );
        assert_eq!(rows.batch.events[0].values[0], Value::Integer(1_704_067_200_000_000));
        assert_eq!(rows.batch.events[1].values[0], Value::Integer(1_704_067_200_000_000));
        assert!(
            failures[0].reason.contains("\"%d/%m/%Y %H:%M\""),
            "{}",
            failures[0].reason
        );
        let (rows, failures) = apply(
            "fields = { a = \"timestamp\" }\nformat = \"epoch_s\"",
            vec![vec![Value::Integer(1_704_067_200), Value::Null]],
        );
        assert!(failures.is_empty());
        assert_eq!(rows.batch.events[0].values[0], Value::Integer(1_704_067_200_000_000));
        let (_, failures) = apply(
            "fields = { a = \"timestamp\" }",
            vec![vec![Value::Integer(1_704_067_200), Value::Null]],
        );
        assert!(failures[0].reason.contains("cannot be known"), "{}", failures[0].reason);
    }
}
