//! `join`: adds features of another feature set to each event, by key, **as of the event's
//! time** — the latest row of that set with event time `<=` the event's, within its TTL, its
//! windowed aggregates evaluated at the event's time. Live, the rows come from the online
//! store, which holds each entity's latest row: when that row is newer than the event (the
//! event is late relative to the joined set), the features are null rather than a value
//! from the future. In a backfill they come from the joined set's offline rows, where the
//! row as of the event's time is found. On in-order data both give the same rows.
//!
//! An event without a key gets nulls (a left join). The online store is read once per batch
//! for all keys; while it is unreachable the read is retried, as aggregation state loads are.

use std::sync::Arc;

use super::{BuildContext, Halt, Resolve, Step, StepError, StepSpec};
use crate::event::Value;
use crate::fault::retry_blocking;
use crate::plugin::OnlineLookup;
use crate::rows::{Failure, Rows};

/// `kind = "join"`: another feature set's features by key, as of each event's time.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinConfig {
    /// The other feature set (its highest version).
    pub set: String,
    /// The field holding the other set's entity key (default: this event's entity key).
    #[serde(default)]
    pub key: Option<String>,
    /// Its features to add (added under their own names).
    pub features: Vec<String>,
}

impl StepSpec for JoinConfig {
    fn resolve(&self, step: &mut Resolve) {
        let other = &self.set;
        match step.around.set(other) {
            None => step.report("set", format!("no feature set \"{other}\" in the config to join")),
            Some(_) if *other == step.set.name => step.report("set", "a feature set cannot join itself".into()),
            Some(joined) if !joined.online => step.report(
                "set",
                format!(
                    "feature set \"{other}\" has no online target (`kind = \"redis\"`): a join reads it live \
                         from the online store"
                ),
            ),
            Some(_) => {}
        }
        if self.features.is_empty() {
            step.report("features", "expected at least one feature to add".into());
        }
        if let Some(k) = &self.key {
            step.need(k, "key");
        }
        for feature in &self.features {
            step.add(feature);
        }
    }

    fn build(&self, id: String, context: &BuildContext) -> Result<Box<dyn Step>, StepError> {
        let lookup = context.lookup.clone();
        Ok(Box::new(Join {
            id,
            set: self.set.clone(),
            key_field: self.key.clone(),
            features: self.features.clone(),
            lookup,
            shutdown: context.shutdown.clone(),
        }))
    }
}

pub(crate) struct Join {
    id: String,
    set: String,
    key_field: Option<String>,
    features: Vec<String>,
    lookup: Arc<dyn OnlineLookup>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Step for Join {
    fn apply(&mut self, mut rows: Rows, _failures: &mut Vec<Failure>) -> Result<Rows, Halt> {
        if rows.is_empty() {
            return Ok(rows);
        }
        let key_at = self
            .key_field
            .as_ref()
            .map(|name| rows.batch.fields.iter().position(|f| f == name));
        // Keys borrowed from the events (only an integer key field is formatted).
        let keys: Vec<Option<std::borrow::Cow<'_, str>>> = (0..rows.len())
            .map(|i| match key_at {
                None => Some(rows.batch.events[i].key.as_str().into()),
                Some(None) => None,
                Some(Some(at)) => match rows.value(i, at) {
                    Value::Text(s) if !s.is_empty() => Some(s.as_str().into()),
                    Value::Integer(n) => Some(n.to_string().into()),
                    _ => None,
                },
            })
            .collect();
        let asked: Vec<usize> = (0..rows.len()).filter(|&i| keys[i].is_some()).collect();
        let wanted: Vec<&str> = asked.iter().filter_map(|&i| keys[i].as_deref()).collect();
        let times: Vec<i64> = asked.iter().map(|&i| rows.batch.events[i].time).collect();
        let what = format!("step \"{}\": join with {}", self.id, self.set);
        let found = retry_blocking(&what, &self.shutdown, || self.lookup.as_of(&self.set, &wanted, &times))
            .map_err(|gave_up| Halt::gave_up(&self.id, gave_up))?;
        let targets: Vec<usize> = self.features.iter().map(|name| rows.field_position(name)).collect();
        let width = rows.batch.fields.len();
        for event in &mut rows.batch.events {
            if event.values.len() < width {
                event.values.resize(width, Value::Null);
            }
            for &t in &targets {
                event.values[t] = Value::Null;
            }
        }
        for (&i, row) in asked.iter().zip(found) {
            let Some(mut row) = row else { continue };
            let values = &mut rows.batch.events[i].values;
            // The row is this event's own: its values move in, none is copied.
            for (name, &t) in self.features.iter().zip(&targets) {
                if let Some(value) = row.swap_remove(name.as_str()) {
                    values[t] = value;
                }
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Field};
    use crate::plugin::{AsOfRow, LookupError};

    /// A lookup that always fails in the given way.
    struct Failing(bool);

    impl OnlineLookup for Failing {
        fn lookup(&self, _: &str, _: &[String]) -> Result<Vec<Option<Vec<Field>>>, LookupError> {
            unreachable!("a join reads as of a time")
        }

        fn as_of(&self, _: &str, _: &[&str], _: &[i64]) -> Result<Vec<Option<AsOfRow>>, LookupError> {
            Err(match self.0 {
                true => LookupError::Unavailable("store down".into()),
                false => LookupError::Refused("join: unknown feature set \"users\"".into()),
            })
        }
    }

    fn join(transient: bool, shutdown: tokio::sync::watch::Receiver<bool>) -> Join {
        Join {
            id: "j".into(),
            set: "users".into(),
            key_field: None,
            features: vec!["tier".into()],
            lookup: Arc::new(Failing(transient)),
            shutdown,
        }
    }

    fn rows() -> Rows {
        let mut rows = Rows::new(vec!["user".into()]);
        rows.push(
            1,
            Event {
                key: "u1".into(),
                time: 0,
                values: vec![Value::Text("u1".into())],
            },
        );
        rows
    }

    #[test]
    fn a_refused_lookup_halts_the_batch_instead_of_failing_its_events() {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let mut failures = Vec::new();
        let halt = join(false, rx).apply(rows(), &mut failures).unwrap_err();
        assert!(matches!(halt, Halt::Failed { .. }), "{halt:?}");
        assert!(halt.to_string().contains("unknown feature set"), "{halt}");
        assert!(failures.is_empty(), "no event is dead-lettered for the store's fault");
    }

    #[test]
    fn shutdown_ends_the_wait_for_an_unavailable_store() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tx.send(true).unwrap();
        let mut failures = Vec::new();
        let halt = join(true, rx).apply(rows(), &mut failures).unwrap_err();
        assert!(matches!(halt, Halt::Shutdown(_)), "{halt:?}");
        assert!(failures.is_empty());
    }
}
