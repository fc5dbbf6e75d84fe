//! Event times: how a field's text or number becomes microseconds since the epoch (UTC).
//!
//! One reader for every way an event arrives (JSON, CSV cells, Parquet columns, which the file
//! source hands over as RFC 3339 text), so a time reads the same live and in a backfill. Text
//! that carries its offset is read as written whatever the declared format; naive text is in
//! the feature set's `timezone` (UTC by default); a number is read only in a declared unit —
//! `auto` never guesses whether 1764151200000 is seconds or milliseconds.

use crate::fault::Invalid;
use crate::invalid;
use jiff::civil::DateTime;
use jiff::fmt::strtime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value as Json;

/// How an event time is written (`timestamp.format`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// Text: RFC 3339, or `YYYY-MM-DD[ T]HH:MM:SS[.fraction][offset]`, or a date. Numbers are
    /// refused: their unit cannot be known.
    #[default]
    Auto,
    /// Text with an offset only (RFC 3339).
    Rfc3339,
    /// Numbers of seconds since the epoch (integers or fractions); text as for `auto`.
    EpochS,
    /// Numbers of milliseconds since the epoch; text as for `auto`.
    EpochMs,
    /// Numbers of microseconds since the epoch; text as for `auto`.
    EpochUs,
    /// Numbers of nanoseconds since the epoch; text as for `auto`.
    EpochNs,
    /// A strftime pattern such as `%d/%m/%Y %H:%M` (text with an offset is also read).
    Pattern(String),
}

impl TimeFormat {
    /// The name a user writes for it.
    pub fn name(&self) -> &str {
        match self {
            TimeFormat::Auto => "auto",
            TimeFormat::Rfc3339 => "rfc3339",
            TimeFormat::EpochS => "epoch_s",
            TimeFormat::EpochMs => "epoch_ms",
            TimeFormat::EpochUs => "epoch_us",
            TimeFormat::EpochNs => "epoch_ns",
            TimeFormat::Pattern(p) => p,
        }
    }

    /// Parses a format name or a strftime pattern (anything with a `%`).
    pub fn parse(text: &str) -> Result<TimeFormat, Invalid> {
        Ok(match text {
            "auto" => TimeFormat::Auto,
            "rfc3339" => TimeFormat::Rfc3339,
            "epoch_s" => TimeFormat::EpochS,
            "epoch_ms" => TimeFormat::EpochMs,
            "epoch_us" => TimeFormat::EpochUs,
            "epoch_ns" => TimeFormat::EpochNs,
            p if p.contains('%') => TimeFormat::Pattern(p.to_string()),
            other => {
                return Err(invalid!(
                    "{other:?}: expected auto, rfc3339, epoch_s, epoch_ms, epoch_us, epoch_ns or a strftime pattern \
                     such as \"%d/%m/%Y %H:%M\""
                ))
            }
        })
    }

    /// Nanoseconds per unit of an epoch format.
    pub fn unit_nanos(&self) -> Option<i128> {
        match self {
            TimeFormat::EpochS => Some(1_000_000_000),
            TimeFormat::EpochMs => Some(1_000_000),
            TimeFormat::EpochUs => Some(1_000),
            TimeFormat::EpochNs => Some(1),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for TimeFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        TimeFormat::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a value is not a time: what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found {found}")]
pub struct TimeError {
    /// What the format reads.
    pub expected: String,
    /// The value, as written.
    pub found: String,
}

/// A `format` or `timezone` that cannot be used; [`TimeConfigError::key`] names which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeConfigError {
    /// The time zone is unknown.
    #[error("{0}")]
    Timezone(String),
    /// The pattern cannot be read.
    #[error("{0}")]
    Format(String),
}

impl TimeConfigError {
    /// The config key at fault: `timezone` or `format`.
    pub fn key(&self) -> &'static str {
        match self {
            TimeConfigError::Timezone(_) => "timezone",
            TimeConfigError::Format(_) => "format",
        }
    }
}

/// Reads event times of one format in one time zone.
#[derive(Debug, Clone)]
pub struct TimeReader {
    format: TimeFormat,
    zone: TimeZone,
}

const TEXT: &str = "RFC 3339 (2026-11-26T10:00:00Z) or YYYY-MM-DD HH:MM:SS[.fraction][+HH:MM] text";

impl TimeReader {
    /// A reader; `timezone` (an IANA name such as `Europe/Paris`, or `UTC`) is where naive
    /// times are.
    pub fn new(format: TimeFormat, timezone: Option<&str>) -> Result<TimeReader, TimeConfigError> {
        let zone = match timezone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|e| {
                TimeConfigError::Timezone(format!(
                    "{name:?}: {e}; expected an IANA time zone such as \"UTC\" or \"Europe/Paris\""
                ))
            })?,
        };
        if let TimeFormat::Pattern(pattern) = &format {
            check_pattern(pattern).map_err(|e| TimeConfigError::Format(e.into()))?;
        }
        Ok(TimeReader { format, zone })
    }

    /// A reader of `format` with naive times in UTC.
    pub fn utc(format: TimeFormat) -> TimeReader {
        TimeReader {
            format,
            zone: TimeZone::UTC,
        }
    }

    /// The zone naive times are in.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The format it reads.
    pub fn format(&self) -> &TimeFormat {
        &self.format
    }

    /// Microseconds since the epoch of a JSON value; `None` when it is null.
    pub fn read(&self, json: &Json) -> Result<Option<i64>, TimeError> {
        match json {
            Json::Null => Ok(None),
            Json::String(text) => self.read_text(text).map(Some),
            Json::Number(n) => self.read_number(n, || n.to_string()).map(Some),
            other => Err(self.error(match other {
                Json::Bool(b) => b.to_string(),
                Json::Array(_) => "an array".into(),
                _ => "an object".into(),
            })),
        }
    }

    /// Microseconds since the epoch of a text.
    pub fn read_text(&self, text: &str) -> Result<i64, TimeError> {
        let text = text.trim();
        let parsed = match &self.format {
            TimeFormat::Pattern(pattern) => strtime::parse(pattern, text)
                .ok()
                .and_then(|b| match b.offset() {
                    Some(_) => b.to_timestamp().ok(),
                    None => b.to_datetime().ok().and_then(|dt| self.zone.to_timestamp(dt).ok()),
                })
                .or_else(|| text.parse::<Timestamp>().ok()),
            TimeFormat::Rfc3339 => text.parse::<Timestamp>().ok(),
            epoch => {
                // Naive text is in the zone; digits are a number in the declared unit.
                let naive = || {
                    text.parse::<DateTime>()
                        .ok()
                        .and_then(|dt| self.zone.to_timestamp(dt).ok())
                };
                match text.parse::<Timestamp>().ok().or_else(naive) {
                    Some(t) => Some(t),
                    None if epoch.unit_nanos().is_some() => {
                        if let Ok(number) = text.parse::<serde_json::Number>() {
                            return self.read_number(&number, || format!("{text:?}"));
                        }
                        None
                    }
                    None => None,
                }
            }
        };
        parsed.map(micros).ok_or_else(|| self.error(format!("{text:?}")))
    }

    fn read_number(&self, n: &serde_json::Number, found: impl Fn() -> String) -> Result<i64, TimeError> {
        let Some(unit) = self.format.unit_nanos() else {
            let expected = match self.format {
                TimeFormat::Auto => format!(
                    "{TEXT}; a number's unit cannot be known: declare timestamp.format = \"epoch_s\", \"epoch_ms\", \
                     \"epoch_us\" or \"epoch_ns\""
                ),
                _ => self.expected(),
            };
            return Err(TimeError {
                expected,
                found: format!("the number {}", found()),
            });
        };
        let nanos = match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Some(i as i128 * unit),
            (None, Some(f)) if f.is_finite() => Some((f * unit as f64).round() as i128),
            _ => None,
        };
        nanos
            .and_then(|ns| Timestamp::from_nanosecond(ns).ok())
            .map(micros)
            .ok_or_else(|| TimeError {
                expected: format!("{} within years -9999 to 9999", self.expected()),
                found: format!("the number {}", found()),
            })
    }

    /// What this reader accepts, for messages.
    pub fn expected(&self) -> String {
        match &self.format {
            TimeFormat::Auto => TEXT.to_string(),
            TimeFormat::Rfc3339 => "RFC 3339 text with an offset (e.g. 2026-11-26T10:00:00Z)".to_string(),
            TimeFormat::Pattern(p) => format!("a time like the pattern {p:?} (or RFC 3339 text)"),
            epoch => format!(
                "a number of {} since the epoch, or {TEXT}",
                match epoch {
                    TimeFormat::EpochS => "seconds",
                    TimeFormat::EpochMs => "milliseconds",
                    TimeFormat::EpochUs => "microseconds",
                    _ => "nanoseconds",
                }
            ),
        }
    }

    fn error(&self, found: String) -> TimeError {
        TimeError {
            expected: self.expected(),
            found,
        }
    }
}

/// Microseconds of a timestamp, rounded down (so 1 ns before the epoch is -1 µs).
/// µs since the epoch as RFC 3339 text (UTC); the number itself when out of range.
pub fn rfc3339(us: i64) -> String {
    Timestamp::from_microsecond(us).map_or_else(|_| us.to_string(), |t| t.to_string())
}

fn micros(t: Timestamp) -> i64 {
    t.as_nanosecond().div_euclid(1000) as i64
}

/// A pattern must name a whole date and time: it formats a known time and reads it back.
fn check_pattern(pattern: &str) -> Result<(), Invalid> {
    let sample = Timestamp::from_second(1_764_151_234)
        .map_err(|e| Invalid(e.to_string()))?
        .to_zoned_datetime(TimeZone::UTC);
    let text = strtime::format(pattern, &sample)
        .map_err(|e| invalid!("{pattern:?}: not a strftime pattern Sluice can read: {e}"))?;
    let back = strtime::parse(pattern, &text).map_err(|e| invalid!("{pattern:?}: {e}"))?;
    let whole = match back.offset() {
        Some(_) => back.to_timestamp().ok(),
        None => back
            .to_datetime()
            .ok()
            .and_then(|dt| TimeZone::UTC.to_timestamp(dt).ok()),
    };
    match whole {
        Some(t) if t.as_second() / 60 == sample.timestamp().as_second() / 60 => Ok(()),
        _ => Err(invalid!(
            "{pattern:?}: a pattern must give a whole date and time (at least %Y, %m, %d, %H and %M), e.g. \
             \"%d/%m/%Y %H:%M\""
        )),
    }
}

/// The instant of a typed time (the file source writes it as RFC 3339 text in UTC): `value` `unit_nanos`-nanosecond units since the epoch;
/// `naive` times (no zone in their type, dates) are wall-clock times in `zone`. `None` out of
/// the range of times.
pub fn typed_instant(value: i64, unit_nanos: i64, naive: bool, zone: &TimeZone) -> Option<Timestamp> {
    let t = Timestamp::from_nanosecond(value as i128 * unit_nanos as i128).ok()?;
    match naive && *zone != TimeZone::UTC {
        true => zone.to_timestamp(TimeZone::UTC.to_datetime(t)).ok(),
        false => Some(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(format: TimeFormat, zone: Option<&str>, json: Json) -> Result<Option<i64>, TimeError> {
        TimeReader::new(format, zone).unwrap().read(&json)
    }

    const T: i64 = 1_704_067_200_000_000; // 2024-01-01T00:00:00Z

    #[test]
    fn every_text_layout_reads_the_same_instant() {
        for text in [
            "2024-01-01T00:00:00Z",
            "2024-01-01 00:00:00",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00+00:00",
            "2024-01-01T02:00:00+02:00",
            "2024-01-01",
            "2024-01-01 00:00:00.000000",
        ] {
            assert_eq!(read(TimeFormat::Auto, None, Json::from(text)), Ok(Some(T)), "{text}");
        }
        assert_eq!(
            read(TimeFormat::Auto, None, Json::from("2024-01-01 00:00:00.123456")),
            Ok(Some(T + 123_456))
        );
    }

    #[test]
    fn naive_text_is_in_the_named_zone_and_offsets_win() {
        let paris = |text: &str| read(TimeFormat::Auto, Some("Europe/Paris"), Json::from(text));
        assert_eq!(paris("2024-01-01 01:00:00"), Ok(Some(T)));
        assert_eq!(paris("2024-07-01 02:00:00"), Ok(Some(T + 182 * 86_400_000_000)));
        assert_eq!(paris("2024-01-01T00:00:00Z"), Ok(Some(T)));
        assert!(TimeReader::new(TimeFormat::Auto, Some("Mars/Base")).is_err());
    }

    #[test]
    fn numbers_are_read_only_in_a_declared_unit() {
        let err = read(TimeFormat::Auto, None, Json::from(1_704_067_200_000i64)).unwrap_err();
        assert!(err.to_string().contains("cannot be known"), "{err}");
        assert!(err.to_string().contains("epoch_ms"), "{err}");
        assert_eq!(read(TimeFormat::EpochS, None, Json::from(1_704_067_200)), Ok(Some(T)));
        assert_eq!(
            read(TimeFormat::EpochS, None, Json::from(1_704_067_200.5)),
            Ok(Some(T + 500_000))
        );
        assert_eq!(
            read(TimeFormat::EpochMs, None, Json::from(1_704_067_200_000i64)),
            Ok(Some(T))
        );
        assert_eq!(read(TimeFormat::EpochUs, None, Json::from(T)), Ok(Some(T)));
        assert_eq!(read(TimeFormat::EpochNs, None, Json::from(T * 1000 + 999)), Ok(Some(T)));
        assert_eq!(
            read(TimeFormat::EpochMs, None, Json::from("1704067200000")),
            Ok(Some(T))
        );
        assert_eq!(
            read(TimeFormat::EpochMs, None, Json::from("2024-01-01 00:00:00")),
            Ok(Some(T))
        );
        assert!(read(TimeFormat::EpochS, None, Json::from(i64::MAX)).is_err());
        assert!(read(TimeFormat::Rfc3339, None, Json::from(1)).is_err());
        assert!(read(TimeFormat::Rfc3339, None, Json::from("2024-01-01 00:00:00")).is_err());
        assert_eq!(read(TimeFormat::Auto, None, Json::Null), Ok(None));
    }

    #[test]
    fn a_pattern_reads_its_layout_and_offset_text() {
        let pattern = TimeFormat::parse("%d/%m/%Y %H:%M").unwrap();
        assert_eq!(read(pattern.clone(), None, Json::from("01/01/2024 00:00")), Ok(Some(T)));
        assert_eq!(
            read(pattern.clone(), Some("Europe/Paris"), Json::from("01/01/2024 01:00")),
            Ok(Some(T))
        );
        assert_eq!(
            read(pattern.clone(), None, Json::from("2024-01-01T00:00:00Z")),
            Ok(Some(T))
        );
        let err = read(pattern, None, Json::from("2024-01-01 00:00")).unwrap_err();
        assert!(err.to_string().contains("%d/%m/%Y %H:%M"), "{err}");
        assert!(TimeReader::new(TimeFormat::parse("%H:%M").unwrap(), None).is_err());
        assert!(TimeReader::new(TimeFormat::parse("%Y %Q").unwrap(), None).is_err());
        assert!(TimeFormat::parse("epoch_minutes").is_err());
    }

    #[test]
    fn typed_times_become_offset_text() {
        let utc = TimeZone::UTC;
        assert_eq!(
            typed_instant(1_704_067_200_123, 1_000_000, false, &utc)
                .unwrap()
                .to_string(),
            "2024-01-01T00:00:00.123Z"
        );
        let paris = TimeZone::get("Europe/Paris").unwrap();
        assert_eq!(
            typed_instant(1_704_070_800, 1_000_000_000, true, &paris)
                .unwrap()
                .to_string(),
            "2024-01-01T00:00:00Z"
        );
        let text = typed_instant(-1, 1, false, &utc).unwrap().to_string();
        assert_eq!(TimeReader::utc(TimeFormat::Auto).read_text(&text), Ok(-1));
    }
}
