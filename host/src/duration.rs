//! A duration as the config writes it (`30d`, `12h`, `90m`, `45s` or a number of seconds):
//! parsed once, when the config is read. A bad one is kept with its error, so validation still
//! reports every problem at once, each at its key; nothing downstream parses the text again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fault::Invalid;
use crate::invalid;

/// A configured duration and how it parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDuration {
    text: String,
    parsed: Result<Duration, Invalid>,
}

impl ConfigDuration {
    /// Parses `text`.
    pub fn new(text: &str) -> ConfigDuration {
        ConfigDuration {
            text: text.to_string(),
            parsed: parse_duration(text),
        }
    }

    /// As written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The duration, or what the text should have been (validation reports it first).
    pub fn get(&self) -> Result<Duration, Invalid> {
        self.parsed.clone()
    }

    /// The duration in microseconds (0 when it did not parse: validation refused the config).
    pub fn micros(&self) -> i64 {
        self.parsed.as_ref().map_or(0, |d| d.as_micros() as i64)
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ConfigDuration::new(&String::deserialize(d)?))
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Parses `30d`, `12h`, `90m`, `45s` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, Invalid> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| invalid!("{text:?}: expected a duration like 30d, 12h, 90m or 45s"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(invalid!("{text:?}: unknown unit {unit:?}; expected s, m, h or d")),
    };
    Ok(Duration::from_secs(seconds))
}
