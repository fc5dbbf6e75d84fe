//! Tiles: the partial aggregates of one field, one key, one period. Derived functions (mean,
//! variance, standard deviation, distinct count, quantiles) are computed when read, from tiles
//! merged over a window, so min and max are right when a tile leaves the window and a late
//! event can land in its tile.

use crate::fault::Invalid;
use crate::invalid;
use cardinality_estimator::CardinalityEstimator;
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

use crate::event::Value;

/// The distinct-count sketch: exact up to a few hundred values, HyperLogLog (2^12 registers,
/// about 1.6% error) beyond; deterministic hashing, so a restart estimates the same.
pub type Distinct = CardinalityEstimator<[u8]>;

/// Partial aggregates of the non-null values seen in one bucket (64 bytes in memory; the
/// rarely used parts are boxed).
#[derive(Clone)]
pub struct Tile {
    /// Values counted.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Sum of squares of the deviations from the mean (Welford's M2), for a stable variance.
    pub m2: f64,
    /// Smallest value (`+∞` when none: no value, or min and max are not asked for).
    pub min: f64,
    /// Largest value (`−∞` when none).
    pub max: f64,
    /// Earliest and latest values, when asked for.
    pub ends: Option<Box<Ends>>,
    /// Distinct values, when a distinct count is asked for.
    pub distinct: Option<Box<Distinct>>,
    /// Value distribution (DDSketch, 1% relative accuracy), when quantiles are asked for.
    pub sketch: Option<Box<DDSketch>>,
}

const _: () = assert!(std::mem::size_of::<Tile>() == 64, "a tile stays one cache line");

/// The earliest and latest values of a tile: (event time, sequence, value) each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ends {
    /// Earliest (ties: lowest sequence).
    pub first: (i64, u64, f64),
    /// Latest (ties: highest sequence).
    pub last: (i64, u64, f64),
}

impl Default for Tile {
    fn default() -> Self {
        Tile {
            count: 0,
            sum: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ends: None,
            distinct: None,
            sketch: None,
        }
    }
}

impl std::fmt::Debug for Tile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = Vec::new();
        self.encode(&mut text);
        f.write_str(&String::from_utf8_lossy(&text))
    }
}

/// A function over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
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
    /// Number of distinct values (HyperLogLog).
    Distinct,
    /// A quantile in (0, 1), e.g. `p95` (DDSketch).
    Quantile(f64),
}

/// What a tile has to keep for a set of functions: only that is computed and stored, so
/// tiles stay small (Redis keeps a hash compact while its values are under 64 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Sum and more: the value must be a number.
    pub numeric: bool,
    /// The sum of squared deviations (variance, standard deviation).
    pub moments: bool,
    /// Min and max.
    pub extremes: bool,
    /// First and last.
    pub ends: bool,
    /// A distinct-count sketch.
    pub distinct: bool,
    /// A quantile sketch.
    pub quantiles: bool,
}

impl Needs {
    /// Everything.
    pub const ALL: Needs = Needs {
        numeric: true,
        moments: true,
        extremes: true,
        ends: true,
        distinct: true,
        quantiles: true,
    };
}

impl Needs {
    /// What these functions need.
    pub fn of(functions: impl IntoIterator<Item = Function>) -> Needs {
        let mut needs = Needs::default();
        for f in functions {
            needs.numeric |= !matches!(f, Function::Count | Function::Distinct);
            match f {
                Function::Distinct => needs.distinct = true,
                Function::Quantile(_) => needs.quantiles = true,
                Function::Variance | Function::Stddev => needs.moments = true,
                Function::Min | Function::Max => needs.extremes = true,
                Function::First | Function::Last => needs.ends = true,
                Function::Count | Function::Sum | Function::Mean => {}
            }
        }
        needs
    }
}

impl Function {
    /// Parses a function name as used in feature names: `count`, `sum`, `mean`, `variance`,
    /// `stddev`, `min`, `max`, `first`, `last`, `distinct`, `p1` … `p99`, `p999`.
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
            "distinct" | "distinct_count" => Function::Distinct,
            "median" => Function::Quantile(0.5),
            "p999" => Function::Quantile(0.999),
            _ => {
                let n: u8 = name.strip_prefix('p')?.parse().ok()?;
                if !(1..=99).contains(&n) {
                    return None;
                }
                Function::Quantile(n as f64 / 100.0)
            }
        })
    }

    /// Whether the function's value is an integer (count, distinct) rather than a float.
    pub fn is_integer(&self) -> bool {
        matches!(self, Function::Count | Function::Distinct)
    }
}

/// Why a value cannot be aggregated.
pub fn not_a_number(value: &Value) -> String {
    let kind = match value {
        Value::Boolean(_) => "a boolean",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytes",
        Value::Floats(_) => "a list of floats",
        Value::Json(_) => "JSON",
        _ => "a non-number",
    };
    format!("expected a number, got {kind}")
}

fn sketch_config() -> SketchConfig {
    SketchConfig::defaults()
}

impl Tile {
    /// Adds a value seen at `time` with input sequence `seq`. Null is skipped; a value that is
    /// not a number fails when `needs.numeric` (nothing is added then).
    pub fn add_value(&mut self, value: &Value, time: i64, seq: u64, needs: Needs) -> Result<(), Invalid> {
        let number = match value {
            Value::Null => return Ok(()),
            Value::Integer(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        };
        if needs.numeric && number.is_none() {
            return Err(Invalid(not_a_number(value)));
        }
        if needs.distinct {
            let distinct = self.distinct.get_or_insert_with(Default::default);
            match value {
                Value::Text(s) => distinct.insert(s.as_bytes()),
                Value::Integer(i) => distinct.insert(&i.to_le_bytes()),
                Value::Float(f) => distinct.insert(&f.to_bits().to_be_bytes()),
                Value::Boolean(b) => distinct.insert(&[*b as u8, 0xB0]),
                Value::Bytes(b) => distinct.insert(b),
                Value::Json(j) => distinct.insert(j.as_bytes()),
                Value::Floats(f) => distinct.insert(&f.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()),
                Value::Null => {}
            }
        }
        match number {
            Some(v) if needs.numeric => {
                if needs.quantiles {
                    self.sketch
                        .get_or_insert_with(|| Box::new(DDSketch::new(sketch_config())))
                        .add(v);
                }
                self.add(v, time, seq, needs)
            }
            _ => self.count += 1,
        }
        Ok(())
    }

    /// Adds a number seen at `time` with input sequence `seq` (what `needs` asks of sum,
    /// moments, min, max, first, last).
    pub fn add(&mut self, value: f64, time: i64, seq: u64, needs: Needs) {
        if needs.moments && self.count > 0 {
            // Welford's update: the same arithmetic as merging a one-value tile.
            let n1 = self.count as f64;
            let delta = value - self.sum / n1;
            self.m2 += delta * delta * n1 / (n1 + 1.0);
        }
        self.count += 1;
        self.sum += value;
        if needs.extremes {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        if needs.ends {
            let point = (time, seq, value);
            match &mut self.ends {
                None => {
                    self.ends = Some(Box::new(Ends {
                        first: point,
                        last: point,
                    }))
                }
                Some(ends) => {
                    if (time, seq) < (ends.first.0, ends.first.1) {
                        ends.first = point;
                    }
                    if (time, seq) > (ends.last.0, ends.last.1) {
                        ends.last = point;
                    }
                }
            }
        }
    }

    /// Merges another tile into this one (Chan et al.'s parallel variance).
    pub fn merge(&mut self, other: &Tile) {
        if let Some(d) = &other.distinct {
            match &mut self.distinct {
                Some(mine) => mine.merge(d),
                None => self.distinct = Some(d.clone()),
            }
        }
        if let Some(s) = &other.sketch {
            match &mut self.sketch {
                // Every sketch is built with the same configuration, so merging cannot fail.
                Some(mine) => mine.merge(s).expect("sketches share one configuration"),
                None => self.sketch = Some(s.clone()),
            }
        }
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            self.count = other.count;
            self.sum = other.sum;
            self.m2 = other.m2;
            self.min = other.min;
            self.max = other.max;
            self.ends.clone_from(&other.ends);
            return;
        }
        let (n1, n2) = (self.count as f64, other.count as f64);
        let delta = other.sum / n2 - self.sum / n1;
        self.m2 += other.m2 + delta * delta * n1 * n2 / (n1 + n2);
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        match (&mut self.ends, &other.ends) {
            (Some(mine), Some(theirs)) => {
                if (theirs.first.0, theirs.first.1) < (mine.first.0, mine.first.1) {
                    mine.first = theirs.first;
                }
                if (theirs.last.0, theirs.last.1) > (mine.last.0, mine.last.1) {
                    mine.last = theirs.last;
                }
            }
            (None, Some(theirs)) => self.ends = Some(theirs.clone()),
            _ => {}
        }
    }

    /// A function's value over this (merged) tile; `None` is null (counts are never null).
    pub fn evaluate(&self, function: Function) -> Option<f64> {
        if function == Function::Distinct {
            return Some(self.distinct.as_ref().map_or(0, |d| d.estimate()) as f64);
        }
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
            Function::Min => (self.min <= self.max).then_some(self.min),
            Function::Max => (self.min <= self.max).then_some(self.max),
            Function::First => self.ends.as_ref().map(|e| e.first.2),
            Function::Last => self.ends.as_ref().map(|e| e.last.2),
            Function::Quantile(q) => self.sketch.as_ref().and_then(|s| s.quantile(q).ok().flatten()),
            Function::Distinct => unreachable!("handled above"),
        }
    }

    /// The tile as Redis stores it: `count sum m2 min max first last` as text (floats in their
    /// shortest round-trip form, `-` for none, first/last as `time/seq/value`), then the
    /// sketches on their own lines (`H` + JSON, `D` + hex of DDSketch's standard encoding).
    pub fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(out, "{} {} {}", self.count, self.sum, self.m2);
        let _ = match self.min <= self.max {
            true => write!(out, " {} {}", self.min, self.max),
            false => write!(out, " - -"),
        };
        let _ = match &self.ends {
            Some(e) => write!(
                out,
                " {}/{}/{} {}/{}/{}",
                e.first.0, e.first.1, e.first.2, e.last.0, e.last.1, e.last.2
            ),
            None => write!(out, " - -"),
        };
        if let Some(d) = &self.distinct {
            out.extend_from_slice(b"\nH");
            let _ = serde_json::to_writer(&mut *out, d.as_ref());
        }
        if let Some(s) = &self.sketch {
            out.extend_from_slice(b"\nD");
            out.extend_from_slice(hex::encode(s.to_java_bytes()).as_bytes());
        }
    }

    /// Reads what [`Tile::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Tile, Invalid> {
        let text = std::str::from_utf8(bytes).map_err(|_| "a tile is not UTF-8".to_string())?;
        let bad = || invalid!("not a tile: {text:?}");
        let mut lines = text.split('\n');
        let mut parts = lines.next().unwrap_or("").split(' ');
        let mut next = || parts.next().ok_or_else(bad);
        let float = |s: &str| s.parse::<f64>().map_err(|_| bad());
        let opt = |s: &str| if s == "-" { Ok(None) } else { float(s).map(Some) };
        let point = |s: &str| -> Result<Option<(i64, u64, f64)>, Invalid> {
            if s == "-" {
                return Ok(None);
            }
            let mut p = s.split('/');
            let (t, q, v) = (p.next(), p.next(), p.next());
            match (t.and_then(|t| t.parse().ok()), q.and_then(|q| q.parse().ok()), v) {
                (Some(t), Some(q), Some(v)) => Ok(Some((t, q, float(v)?))),
                _ => Err(bad()),
            }
        };
        let mut tile = Tile {
            count: next()?.parse().map_err(|_| bad())?,
            sum: float(next()?)?,
            m2: float(next()?)?,
            min: opt(next()?)?.unwrap_or(f64::INFINITY),
            max: opt(next()?)?.unwrap_or(f64::NEG_INFINITY),
            ends: match (point(next()?)?, point(next()?)?) {
                (Some(first), Some(last)) => Some(Box::new(Ends { first, last })),
                _ => None,
            },
            distinct: None,
            sketch: None,
        };
        for line in lines {
            if let Some(json) = line.strip_prefix('H') {
                let d: Distinct = serde_json::from_str(json).map_err(|e| invalid!("a distinct-count sketch: {e}"))?;
                tile.distinct = Some(Box::new(d));
            } else if let Some(hexed) = line.strip_prefix('D') {
                let raw = hex::decode(hexed).map_err(|e| invalid!("a quantile sketch: {e}"))?;
                // The encoding carries the mapping exactly, so the decoded sketch has the
                // default configuration again and merges with fresh ones (tested below).
                let sketch = DDSketch::from_java_bytes(&raw).map_err(|e| invalid!("a quantile sketch: {e:?}"))?;
                tile.sketch = Some(Box::new(sketch));
            }
        }
        Ok(tile)
    }
}
