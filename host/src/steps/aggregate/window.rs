//! Windows over epoch-aligned buckets of a period (Storey's model).

use crate::fault::Invalid;
use crate::invalid;

/// A window, evaluated at a time `t` (µs since the epoch) over buckets of `period` µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `length` µs, as whole buckets: `floor(t/p) − length/p + 1 … floor(t/p)`, the
    /// current bucket included. `length` is a multiple of the period.
    Sliding {
        /// Window length, µs.
        length: i64,
    },
    /// The current fixed window of `length` µs (epoch-aligned): from its start to `t`.
    Tumbling {
        /// Window length, µs.
        length: i64,
    },
    /// Every bucket up to `t`.
    SinceStart,
}

/// The bucket of a time.
pub fn bucket(t: i64, period: i64) -> i64 {
    t.div_euclid(period)
}

impl Window {
    /// The inclusive range of buckets the window covers at time `t`.
    pub fn buckets(&self, t: i64, period: i64) -> (i64, i64) {
        let current = bucket(t, period);
        match *self {
            Window::Sliding { length } => (current - length / period + 1, current),
            Window::Tumbling { length } => (t.div_euclid(length) * (length / period), current),
            Window::SinceStart => (i64::MIN, current),
        }
    }

    /// Parses `1h`, `30m`, `24h`, `7d` (sliding), `tumbling:1h`, `since_start`.
    pub fn parse(text: &str) -> Result<Window, Invalid> {
        if text == "since_start" {
            return Ok(Window::SinceStart);
        }
        let (tumbling, length) = match text.strip_prefix("tumbling:") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let us = crate::duration::parse_duration(length)?.as_micros() as i64;
        if us == 0 {
            return Err(invalid!("{text:?}: a window cannot be empty"));
        }
        Ok(if tumbling {
            Window::Tumbling { length: us }
        } else {
            Window::Sliding { length: us }
        })
    }

    /// Whether the window's length is a whole number of periods.
    pub fn fits(&self, period: i64) -> bool {
        match *self {
            Window::Sliding { length } | Window::Tumbling { length } => length % period == 0,
            Window::SinceStart => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn a_sliding_window_covers_whole_buckets_including_the_current_one() {
        // 1h window, 10 min period, at 10:05: buckets 9:10 … 10:00.
        let w = Window::Sliding { length: 60 * MIN };
        let (a, b) = w.buckets(605 * MIN, 10 * MIN);
        assert_eq!((a, b), (55, 60));
        // Exactly on a period edge, the bucket starting now is the current one.
        assert_eq!(w.buckets(600 * MIN, 10 * MIN), (55, 60));
        assert_eq!(w.buckets(600 * MIN - 1, 10 * MIN), (54, 59));
    }

    #[test]
    fn a_tumbling_window_starts_at_its_aligned_start() {
        let w = Window::Tumbling { length: 60 * MIN };
        assert_eq!(w.buckets(605 * MIN, 10 * MIN), (60, 60));
        assert_eq!(w.buckets(659 * MIN, 10 * MIN), (60, 65));
    }

    #[test]
    fn windows_parse_and_check_their_period() {
        assert_eq!(Window::parse("1h").unwrap(), Window::Sliding { length: 60 * MIN });
        assert_eq!(
            Window::parse("tumbling:1d").unwrap(),
            Window::Tumbling { length: 1440 * MIN }
        );
        assert_eq!(Window::parse("since_start").unwrap(), Window::SinceStart);
        assert!(Window::parse("0s").is_err());
        assert!(!Window::parse("25m").unwrap().fits(10 * MIN));
    }
}
