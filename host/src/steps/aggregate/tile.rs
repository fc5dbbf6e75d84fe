//! Tiles: the partial aggregates of one field, one key, one period. Derived functions (mean,
//! variance, standard deviation) are computed when read, from tiles merged over a window, so
//! min and max are right when a tile leaves the window and a late event can land in its tile.

/// Partial aggregates of the non-null values seen in one bucket.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tile {
    /// Values counted.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Sum of squares of the deviations from the mean (Welford's M2), for a stable variance.
    pub m2: f64,
    /// Smallest value.
    pub min: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
    /// Earliest value: (event time, sequence, value).
    pub first: Option<(i64, u64, f64)>,
    /// Latest value: (event time, sequence, value).
    pub last: Option<(i64, u64, f64)>,
}

/// A function over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Number of non-null values.
    Count,
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Sample variance (n − 1).
    Variance,
    /// Sample standard deviation.
    Stddev,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Value with the earliest event time (ties: lowest sequence).
    First,
    /// Value with the latest event time (ties: highest sequence).
    Last,
}

impl Function {
    /// Parses a function name as used in feature names.
    pub fn parse(name: &str) -> Option<Function> {
        Some(match name {
            "count" => Function::Count,
            "sum" => Function::Sum,
            "mean" | "avg" => Function::Mean,
            "variance" | "var" => Function::Variance,
            "stddev" | "std" => Function::Stddev,
            "min" => Function::Min,
            "max" => Function::Max,
            "first" => Function::First,
            "last" => Function::Last,
            _ => return None,
        })
    }
}

impl Tile {
    /// Adds a value seen at `time` with input sequence `seq`.
    pub fn add(&mut self, value: f64, time: i64, seq: u64) {
        self.merge(&Tile {
            count: 1,
            sum: value,
            m2: 0.0,
            min: Some(value),
            max: Some(value),
            first: Some((time, seq, value)),
            last: Some((time, seq, value)),
        });
    }

    /// Merges another tile into this one (Chan et al.'s parallel variance).
    pub fn merge(&mut self, other: &Tile) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let (n1, n2) = (self.count as f64, other.count as f64);
        let delta = other.sum / n2 - self.sum / n1;
        self.m2 += other.m2 + delta * delta * n1 * n2 / (n1 + n2);
        self.count += other.count;
        self.sum += other.sum;
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let earlier = |a: (i64, u64, f64), b: (i64, u64, f64)| if (b.0, b.1) < (a.0, a.1) { b } else { a };
        let later = |a: (i64, u64, f64), b: (i64, u64, f64)| if (b.0, b.1) > (a.0, a.1) { b } else { a };
        self.first = match (self.first, other.first) {
            (Some(a), Some(b)) => Some(earlier(a, b)),
            (a, b) => a.or(b),
        };
        self.last = match (self.last, other.last) {
            (Some(a), Some(b)) => Some(later(a, b)),
            (a, b) => a.or(b),
        };
    }

    /// A function's value over this (merged) tile; `None` is null (count is never null).
    pub fn evaluate(&self, function: Function) -> Option<f64> {
        if self.count == 0 {
            return (function == Function::Count).then_some(0.0);
        }
        let n = self.count as f64;
        match function {
            Function::Count => Some(n),
            Function::Sum => Some(self.sum),
            Function::Mean => Some(self.sum / n),
            Function::Variance => (self.count > 1).then(|| self.m2 / (n - 1.0)),
            Function::Stddev => (self.count > 1).then(|| (self.m2 / (n - 1.0)).sqrt()),
            Function::Min => self.min,
            Function::Max => self.max,
            Function::First => self.first.map(|f| f.2),
            Function::Last => self.last.map(|l| l.2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::window::{bucket, Window};
    use super::*;
    use std::collections::BTreeMap;

    /// A straightforward implementation: keep every raw event, recompute the window.
    fn naive(
        events: &[(i64, u64, Option<f64>)],
        t: i64,
        window: Window,
        period: i64,
        function: Function,
    ) -> Option<f64> {
        let (a, b) = window.buckets(t, period);
        let inside: Vec<(i64, u64, f64)> = events
            .iter()
            .filter(|(ts, _, _)| (a..=b).contains(&bucket(*ts, period)))
            .filter_map(|(ts, s, v)| v.map(|v| (*ts, *s, v)))
            .collect();
        let n = inside.len() as f64;
        if inside.is_empty() {
            return (function == Function::Count).then_some(0.0);
        }
        let sum: f64 = inside.iter().map(|e| e.2).sum();
        let mean = sum / n;
        let var = inside.iter().map(|e| (e.2 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        match function {
            Function::Count => Some(n),
            Function::Sum => Some(sum),
            Function::Mean => Some(mean),
            Function::Variance => (inside.len() > 1).then_some(var),
            Function::Stddev => (inside.len() > 1).then_some(var.sqrt()),
            Function::Min => inside.iter().map(|e| e.2).reduce(f64::min),
            Function::Max => inside.iter().map(|e| e.2).reduce(f64::max),
            Function::First => inside.iter().min_by_key(|e| (e.0, e.1)).map(|e| e.2),
            Function::Last => inside.iter().max_by_key(|e| (e.0, e.1)).map(|e| e.2),
        }
    }

    fn close(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
            (a, b) => a == b,
        }
    }

    #[test]
    fn tiles_give_what_a_recomputation_from_raw_events_gives() {
        const MIN: i64 = 60_000_000;
        let period = 10 * MIN;
        let windows = [
            Window::Sliding { length: 60 * MIN },
            Window::Sliding { length: 1440 * MIN },
            Window::Tumbling { length: 60 * MIN },
            Window::SinceStart,
        ];
        let functions = [
            Function::Count,
            Function::Sum,
            Function::Mean,
            Function::Variance,
            Function::Stddev,
            Function::Min,
            Function::Max,
            Function::First,
            Function::Last,
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut events = Vec::new();
        let mut tiles: BTreeMap<i64, Tile> = BTreeMap::new();
        let mut time = 0i64;
        for seq in 1..=3_000u64 {
            let r = next();
            // Mostly forward, sometimes quiet for hours, sometimes late (out of order), and
            // sometimes exactly on a period edge.
            time += match r % 20 {
                0 => 5 * 60 * MIN,
                1 => -(7 * MIN),
                2 => period - time.rem_euclid(period),
                _ => (r % 90) as i64 * 1_000_000,
            };
            let value = (r % 7 != 0).then(|| ((r >> 8) % 10_000) as f64 / 100.0 - 20.0);
            events.push((time, seq, value));
            if let Some(v) = value {
                tiles.entry(bucket(time, period)).or_default().add(v, time, seq);
            }
            if seq % 10 == 0 {
                let at = time + (r % 3) as i64 * 40 * MIN;
                for window in windows {
                    let (a, b) = window.buckets(at, period);
                    let mut merged = Tile::default();
                    for (_, tile) in tiles.range(a..=b) {
                        merged.merge(tile);
                    }
                    for f in functions {
                        let want = naive(&events, at, window, period, f);
                        assert!(
                            close(merged.evaluate(f), want),
                            "{f:?} {window:?} at {at}: {:?} vs {want:?}",
                            merged.evaluate(f)
                        );
                    }
                }
            }
        }
    }
}
