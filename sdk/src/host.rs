//! What the host offers a plugin: logging and batched online lookups.

use crate::bindings::sluice::plugin::host as wit;
use crate::{Error, Value};

/// Severity of a [`log`] line.
pub use wit::Level;

/// Writes a line to the host's log, tagged with this plugin's name and version.
pub fn log(level: Level, message: &str) {
    wit::log(level, message);
}

/// The online features of one entity: name and value pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Features(pub Vec<(String, Value)>);

impl Features {
    /// The value of a feature, if present and not null.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Value::Null))
    }
}

/// Reads the online features of several entities of `feature_set` in one call: one entry per
/// key, in order, `None` for an entity with no features.
pub fn lookup(feature_set: &str, keys: &[String]) -> Result<Vec<Option<Features>>, Error> {
    let found = wit::lookup(feature_set, keys).map_err(Error)?;
    Ok(found
        .into_iter()
        .map(|f| f.map(|fields| Features(fields.into_iter().map(|f| (f.name, f.value)).collect())))
        .collect())
}
