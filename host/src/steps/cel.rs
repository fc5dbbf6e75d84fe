//! CEL expressions over event fields (the `filter` and `map` steps).

use crate::fault::Invalid;
use crate::invalid;
use std::sync::Arc;

use cel::{Context, Program, Value as Cel};

use super::StepError;
use crate::event::Value;
use crate::rows::Rows;

/// A compiled expression and the fields it reads.
pub(crate) struct Expression {
    program: Program,
    variables: Vec<String>,
    root: Context<'static, 'static>,
}

impl Expression {
    pub(crate) fn compile(step: &str, text: &str) -> Result<Self, StepError> {
        let program = Program::compile(text).map_err(|e| StepError::Expression {
            step: step.to_string(),
            message: format!(
                "not a valid CEL expression {text:?}: {}",
                e.to_string().replace('\n', " ")
            ),
        })?;
        let variables = program
            .references()
            .variables()
            .into_iter()
            .map(str::to_string)
            .collect();
        Ok(Expression {
            program,
            variables,
            root: Context::default(),
        })
    }

    /// Positions of the expression's variables in the batch (None: not a field).
    pub(crate) fn positions(&self, rows: &Rows) -> Vec<Option<usize>> {
        self.variables
            .iter()
            .map(|v| rows.batch.fields.iter().position(|f| f == v))
            .collect()
    }

    /// Evaluates the expression for event `i`. A field that is absent or null is `null`.
    pub(crate) fn evaluate(&self, rows: &Rows, i: usize, positions: &[Option<usize>]) -> Result<Cel, Invalid> {
        let mut scope = self.root.new_inner_scope();
        for (name, at) in self.variables.iter().zip(positions) {
            let value = at.map_or(Cel::Null, |p| to_cel(rows.value(i, p)));
            scope.add_variable_from_value(name.as_str(), value);
        }
        self.program.execute(&scope).map_err(|e| {
            // Name the fields and what they held: "no matching overload for '_>=_' applied
            // to '(string, double)'" alone does not say which field was text.
            let held: Vec<String> = self
                .variables
                .iter()
                .zip(positions)
                .map(|(name, at)| {
                    let value = at.map_or(&Value::Null, |p| rows.value(i, p));
                    format!("{name} = {} ({})", crate::event::json_text(value), kind_of(value))
                })
                .collect();
            Invalid(format!("{e}; the event has {}", held.join(", ")))
        })
    }
}

/// A value's kind, as a message names it.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Boolean(_) => "bool",
        Value::Integer(_) => "int",
        Value::Float(_) => "double",
        Value::Text(_) => "string",
        Value::Json(_) => "JSON text",
        Value::Bytes(_) => "bytes",
        Value::Floats(_) => "list of doubles",
    }
}

/// An event value as a CEL value (`json` fields are text).
pub(crate) fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Boolean(b) => Cel::Bool(*b),
        Value::Integer(i) => Cel::Int(*i),
        Value::Float(f) => Cel::Float(*f),
        Value::Text(s) | Value::Json(s) => Cel::String(Arc::new(s.clone())),
        Value::Bytes(b) => Cel::Bytes(Arc::new(b.clone())),
        Value::Floats(v) => Cel::List(Arc::new(v.iter().map(|f| Cel::Float(*f)).collect())),
    }
}

/// A CEL result as an event value; maps, functions and mixed lists are refused.
pub(crate) fn from_cel(value: Cel) -> Result<Value, Invalid> {
    Ok(match value {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Boolean(b),
        Cel::Int(i) => Value::Integer(i),
        Cel::UInt(u) => Value::Integer(i64::try_from(u).map_err(|_| invalid!("{u} does not fit a 64-bit integer"))?),
        Cel::Float(f) => Value::Float(f),
        Cel::String(s) => Value::Text(s.to_string()),
        Cel::Bytes(b) => Value::Bytes(b.to_vec()),
        Cel::List(items) => Value::Floats(
            items
                .iter()
                .map(|v| match v {
                    Cel::Float(f) => Ok(*f),
                    Cel::Int(i) => Ok(*i as f64),
                    _ => Err("a list result must hold only numbers".to_string()),
                })
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(invalid!(
                "the expression gave {other:?}; expected a scalar or a list of numbers"
            ))
        }
    })
}
