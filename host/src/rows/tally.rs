//! Failures counted by reason, and the share of failures a batch run accepts: a run whose
//! events all fail, or more than `--max-failed` of them, ends in an error that names the top
//! reasons — never a quiet exit 0 with every event in a dead-letters file.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::Failure;

/// How many failed events a batch run accepts: a share of the events read (`5%`, `0.05`) or
/// a count (`100`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxFailed {
    /// A fraction of the events read, 0 to 1.
    Share(f64),
    /// A number of events.
    Count(u64),
}

impl Default for MaxFailed {
    fn default() -> Self {
        MaxFailed::Share(0.05)
    }
}

impl FromStr for MaxFailed {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || format!("{text:?}: expected a share (5%, 0.05) or a count of events (100)");
        if let Some(percent) = text.strip_suffix('%') {
            let p: f64 = percent.trim().parse().map_err(|_| bad())?;
            return (0.0..=100.0)
                .contains(&p)
                .then_some(MaxFailed::Share(p / 100.0))
                .ok_or_else(bad);
        }
        if let Ok(n) = text.parse::<u64>() {
            return Ok(MaxFailed::Count(n));
        }
        let share: f64 = text.parse().map_err(|_| bad())?;
        (0.0..=1.0)
            .contains(&share)
            .then_some(MaxFailed::Share(share))
            .ok_or_else(bad)
    }
}

impl fmt::Display for MaxFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxFailed::Share(s) => write!(f, "{}%", (s * 10_000.0).round() / 100.0),
            MaxFailed::Count(n) => write!(f, "{n}"),
        }
    }
}

impl MaxFailed {
    /// Whether `failed` of `events` is more than accepted.
    pub fn exceeded(&self, failed: u64, events: u64) -> bool {
        match self {
            MaxFailed::Share(s) => failed as f64 > s * events as f64,
            MaxFailed::Count(n) => failed > *n,
        }
    }
}

/// Failed events counted by step and reason (the reason without the value it found, so one
/// kind of failure is one line however many values it saw).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// "step: reason" → (count, what the first one found).
    counts: HashMap<String, (u64, String)>,
    /// Failures counted.
    pub total: u64,
}

impl Tally {
    /// Counts a failure (late events are not failures and are not counted).
    pub fn add(&mut self, failure: &Failure) {
        if failure.late {
            return;
        }
        self.total += 1;
        let (kind, found) = split_reason(&failure.reason);
        let kind = format!("{}: {kind}", failure.step);
        let entry = self.counts.entry(kind).or_insert_with(|| (0, found.to_string()));
        entry.0 += 1;
    }

    /// The most frequent reasons, most frequent first: (reason, count, what one of them found).
    pub fn top(&self, n: usize) -> Vec<(&str, u64, &str)> {
        let mut all: Vec<(&str, u64, &str)> = self
            .counts
            .iter()
            .map(|(kind, (count, example))| (kind.as_str(), *count, example.as_str()))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        all.truncate(n);
        all
    }

    /// Why a run of `events` with these failures must not pass for a success, if it must not:
    /// the verdict and the top reasons, one per line.
    pub fn refusal(&self, events: u64, max: MaxFailed) -> Option<String> {
        let verdict = if events > 0 && self.total == events {
            format!("every event failed ({events} of {events})")
        } else if max.exceeded(self.total, events) {
            format!(
                "{} of {events} events failed ({:.1}%), more than --max-failed {max}",
                self.total,
                100.0 * self.total as f64 / events.max(1) as f64
            )
        } else {
            return None;
        };
        Some(format!("{verdict}; the most frequent reasons:\n{}", self.summary(5)))
    }

    /// The top reasons, one indented line each: count, reason, an example.
    pub fn summary(&self, n: usize) -> String {
        self.top(n)
            .iter()
            .map(|(kind, count, example)| {
                if example.is_empty() {
                    format!("  {count:>9}  {kind}")
                } else {
                    format!("  {count:>9}  {kind}; e.g. {example}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A reason split into its kind (up to `, found`, or its first 160 characters) and the rest
/// (what it found, as an example).
fn split_reason(reason: &str) -> (&str, &str) {
    let mut end = reason
        .find(", found ")
        .or_else(|| reason.find(": found "))
        .unwrap_or(reason.len().min(160))
        .min(400);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let (kind, rest) = reason.split_at(end);
    (kind, rest.trim_start_matches([',', ':', ' ']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_failed_takes_shares_and_counts() {
        assert_eq!("5%".parse::<MaxFailed>(), Ok(MaxFailed::Share(0.05)));
        assert_eq!("0.5".parse::<MaxFailed>(), Ok(MaxFailed::Share(0.5)));
        assert_eq!("100".parse::<MaxFailed>(), Ok(MaxFailed::Count(100)));
        assert!("150%".parse::<MaxFailed>().is_err());
        assert!("lots".parse::<MaxFailed>().unwrap_err().contains("expected a share"));
        assert!(MaxFailed::Share(0.05).exceeded(6, 100));
        assert!(!MaxFailed::Share(0.05).exceeded(5, 100));
        assert!(MaxFailed::Count(0).exceeded(1, 1000));
    }

    #[test]
    fn failures_group_by_reason_without_their_values() {
        let mut tally = Tally::default();
        for i in 0..3 {
            tally.add(&Failure::new(
                i,
                "decode",
                format!("event time field \"ts\": expected text, found {i}"),
            ));
        }
        tally.add(&Failure::new(9, "to_usd", "unknown currency"));
        tally.add(&Failure::late(10, "per_user", "late".into()));
        assert_eq!(tally.total, 4);
        let top = tally.top(5);
        assert_eq!(top[0].0, "decode: event time field \"ts\": expected text");
        assert_eq!(top[0].1, 3);
        assert_eq!(top[1], ("to_usd: unknown currency", 1, ""));
        let refusal = tally.refusal(4, MaxFailed::default()).unwrap();
        assert!(refusal.starts_with("every event failed (4 of 4)"), "{refusal}");
        assert!(refusal.contains("3  decode: event time field"), "{refusal}");
        assert!(refusal.contains("expected text; e.g. found 0\n"), "{refusal}");
        assert!(refusal.ends_with("1  to_usd: unknown currency"), "{refusal}");
        assert!(tally.refusal(100, MaxFailed::default()).is_none());
        assert!(tally
            .refusal(50, MaxFailed::default())
            .unwrap()
            .contains("more than --max-failed 5%"));
    }
}
