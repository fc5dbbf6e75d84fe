//! The state of one key: its tiles per field, the highest input sequence applied to them and
//! its latest event time; what changed since the last write; how it is stored in a Redis hash.
//!
//! Hash fields (beside the row's own fields): `~<step>:<field>:<bucket>` one tile,
//! `~<step>:<field>:base` everything that left every window (kept only for `since_start`),
//! `~<step>:_at` the highest input sequence applied and the latest event time. All are absolute values: writing them again changes nothing.

use crate::fault::Invalid;
use crate::invalid;
use super::spec::AggregateSpec;
use super::tile::Tile;
use super::window::{bucket, Window};
use crate::event::Value;

/// The tiles of one field of one key, sorted by bucket.
///
/// A window is merged from its tiles in bucket order, with runs of [`BLOCK`] buckets aligned
/// on the epoch taken as one pre-merged block: a 24h window of 10-minute tiles costs about 25
/// merges instead of 144. Which blocks and tiles a window uses depends only on its range, so
/// the result is a function of the tiles alone: a restart, an online read and a backfill give
/// the same bits as the running pipeline.
#[derive(Debug, Clone, Default)]
pub struct FieldTiles {
    /// Buckets with a tile, ascending (apart from the tiles: searched on every event, so kept
    /// dense).
    pub buckets: Vec<i64>,
    /// `tiles[i]` is the tile of `buckets[i]`.
    pub tiles: Vec<Tile>,
    /// The merge of every tile that left the retained range (since-start windows only).
    pub base: Tile,
    /// Merged blocks (not stored: rebuilt from the tiles): (block index, merge of its tiles).
    blocks: Vec<(i64, Tile)>,
    /// Running values (not stored): (window, bucket `b`, the window's merge before `b`), so
    /// further events in the same bucket merge one tile, not the whole window.
    cache: Vec<(usize, i64, Tile)>,
}

/// Buckets per merged block.
pub const BLOCK: i64 = 8;

/// Windows with fewer tiles before the current bucket than this keep no running value (it
/// would cost more memory than it saves work).
const CACHE_FROM_TILES: usize = 4;

impl FieldTiles {
    /// The tiles of buckets `from ..= to`.
    pub fn range(&self, from: i64, to: i64) -> &[Tile] {
        let a = self.buckets.partition_point(|b| *b < from);
        let b = self.buckets.partition_point(|b| *b <= to);
        &self.tiles[a..b.max(a)]
    }

    /// The tile of a bucket.
    pub fn get(&self, bucket: i64) -> Option<&Tile> {
        // Most lookups are for the newest bucket.
        if self.buckets.last() == Some(&bucket) {
            return self.tiles.last();
        }
        self.buckets.binary_search(&bucket).ok().map(|i| &self.tiles[i])
    }

    /// Merges buckets `from ..= to` into `into`: whole aligned blocks as blocks, the rest
    /// tile by tile, in bucket order.
    fn merge_range(&mut self, into: &mut Tile, from: i64, to: i64) {
        let Some(&first) = self.buckets.first() else {
            return;
        };
        let mut b = from.max(first);
        while b <= to {
            let block = b.div_euclid(BLOCK);
            let end = block * BLOCK + BLOCK - 1;
            if b == block * BLOCK && end <= to {
                let n = self.range(b, end).len();
                if n >= 2 {
                    let at = match self.blocks.binary_search_by_key(&block, |(k, _)| *k) {
                        Ok(at) => at,
                        Err(at) => {
                            let mut merged = Tile::default();
                            for tile in self.range(b, end) {
                                merged.merge(tile);
                            }
                            self.blocks.insert(at, (block, merged));
                            at
                        }
                    };
                    into.merge(&self.blocks[at].1);
                } else if n == 1 {
                    into.merge(&self.range(b, end)[0]);
                }
                b = end + 1;
            } else {
                let stop = end.min(to);
                for tile in self.range(b, stop) {
                    into.merge(tile);
                }
                b = stop + 1;
            }
        }
    }

    /// The merge of a window's tiles at time `t`: base (since-start), then the window's
    /// tiles in bucket order (see the type's notes).
    pub fn window(&mut self, index: usize, window: Window, t: i64, period: i64) -> Tile {
        let (from, now) = window.buckets(t, period);
        let cached = self.cache.iter().position(|c| c.0 == index && c.1 == now);
        let mut merged = match cached {
            Some(i) => self.cache[i].2.clone(),
            None => {
                let mut before = if window == Window::SinceStart {
                    self.base.clone()
                } else {
                    Tile::default()
                };
                let keep = self.range(from, now - 1).len() >= CACHE_FROM_TILES;
                self.merge_range(&mut before, from, now - 1);
                self.cache.retain(|c| c.0 != index);
                if keep {
                    self.cache.push((index, now, before.clone()));
                }
                before
            }
        };
        if let Some(tile) = self.get(now) {
            merged.merge(tile);
        }
        merged
    }

    fn tile_mut(&mut self, at: i64) -> &mut Tile {
        // Running values and the block that cover this bucket are stale from now on.
        self.cache.retain(|c| c.1 <= at);
        if let Ok(i) = self.blocks.binary_search_by_key(&at.div_euclid(BLOCK), |(k, _)| *k) {
            self.blocks.remove(i);
        }
        let i = match self.buckets.last() {
            Some(&last) if last < at => self.buckets.len(),
            _ => self.buckets.partition_point(|b| *b < at),
        };
        if self.buckets.get(i) != Some(&at) {
            self.buckets.insert(i, at);
            self.tiles.insert(i, Tile::default());
        }
        &mut self.tiles[i]
    }

    /// Drops blocks and running values that cover buckets before `keep_from`.
    fn forget_before(&mut self, keep_from: i64) {
        self.cache.clear();
        self.blocks.retain(|(k, _)| k * BLOCK >= keep_from);
    }
}

/// Marks a bucket of a field whose tile changed; `BASE` is the since-start base.
pub const BASE: i64 = i64::MIN;

/// One key's aggregation state.
#[derive(Debug, Clone)]
pub struct KeyState {
    /// Highest input sequence applied (replays at or below it are not added again).
    pub seq: u64,
    /// Latest event time applied, µs (`i64::MIN` before any).
    pub watermark: i64,
    /// Tiles per aggregated field, in the spec's order.
    pub fields: Vec<FieldTiles>,
    /// The batch that last used it (for least-recently-used eviction).
    pub last_used: u64,
    /// (field, bucket) written since the last write-out.
    pub changed: Vec<(u16, i64)>,
    /// (field, bucket) removed since the last write-out.
    pub removed: Vec<(u16, i64)>,
}

/// Why an event was not added.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// Older than the key's latest event time by more than the allowed lateness.
    Late(String),
    /// A value that cannot be aggregated.
    Invalid(String),
}

impl KeyState {
    /// An empty state.
    pub fn new(spec: &AggregateSpec) -> KeyState {
        KeyState {
            seq: 0,
            watermark: i64::MIN,
            fields: vec![FieldTiles::default(); spec.fields.len()],
            last_used: 0,
            changed: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// Whether anything changed since the last write-out.
    pub fn is_dirty(&self) -> bool {
        !self.changed.is_empty() || !self.removed.is_empty()
    }

    /// Adds an event: `positions[f]` is where the spec's field `f` is in `values`. Replays
    /// (sequence already applied) are ignored; late events and invalid values are refused,
    /// adding nothing.
    pub fn add(
        &mut self,
        spec: &AggregateSpec,
        values: &[Value],
        positions: &[Option<usize>],
        time: i64,
        seq: u64,
    ) -> Result<(), Refused> {
        let value = |f: usize| positions[f].and_then(|at| values.get(at)).unwrap_or(&Value::Null);
        if seq <= self.seq {
            return Ok(());
        }
        if self.watermark != i64::MIN && time < self.watermark.saturating_sub(spec.lateness) {
            let seconds = |us: i64| format!("{} s", us as f64 / 1e6);
            return Err(Refused::Late(format!(
                "late: event time {} is {} behind the key's latest event ({}), more than the allowed \
                 lateness of {}",
                crate::event_time::rfc3339(time),
                seconds(self.watermark - time),
                crate::event_time::rfc3339(self.watermark),
                seconds(spec.lateness)
            )));
        }
        for (f, field) in spec.fields.iter().enumerate() {
            let value = value(f);
            let numeric = matches!(value, Value::Null | Value::Integer(_) | Value::Float(_));
            if field.needs.numeric && !numeric {
                return Err(Refused::Invalid(format!(
                    "field \"{}\": {}",
                    field.field,
                    super::tile::not_a_number(value)
                )));
            }
        }
        let at = bucket(time, spec.period);
        for (f, field) in spec.fields.iter().enumerate() {
            if matches!(value(f), Value::Null) {
                continue;
            }
            let tile = self.fields[f].tile_mut(at);
            tile.add_value(value(f), time, seq, field.needs).expect("checked above");
            if !self.changed.contains(&(f as u16, at)) {
                self.changed.push((f as u16, at));
            }
        }
        self.seq = seq;
        if time > self.watermark {
            self.watermark = time;
            self.expire(spec);
        }
        Ok(())
    }

    /// Drops the tiles no window can reach any more (merging them into the base when a
    /// since-start window needs them).
    fn expire(&mut self, spec: &AggregateSpec) {
        let now = bucket(self.watermark, spec.period);
        for (f, (field, tiles)) in spec.fields.iter().zip(&mut self.fields).enumerate() {
            let keep_from = now - field.retain + 1;
            let n = tiles.buckets.partition_point(|b| *b < keep_from);
            if n == 0 {
                continue;
            }
            tiles.forget_before(keep_from);
            for (b, tile) in tiles.buckets.drain(..n).zip(tiles.tiles.drain(..n)) {
                if field.since_start {
                    tiles.base.merge(&tile);
                }
                self.changed.retain(|c| *c != (f as u16, b));
                self.removed.push((f as u16, b));
            }
            if field.since_start && !self.changed.contains(&(f as u16, BASE)) {
                self.changed.push((f as u16, BASE));
            }
        }
    }

    /// Hash field name of a tile.
    pub fn field_name(spec: &AggregateSpec, f: u16, b: i64) -> String {
        let field = &spec.fields[f as usize].field;
        if b == BASE {
            format!("~{}:{field}:base", spec.step)
        } else {
            format!("~{}:{field}:{b}", spec.step)
        }
    }

    /// What changed since the last write-out, as hash fields to set and to delete; clears it.
    pub fn take_changes(&mut self, spec: &AggregateSpec) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
        let mut set = Vec::with_capacity(self.changed.len() + 2);
        for &(f, b) in &self.changed {
            let tiles = &self.fields[f as usize];
            let tile = if b == BASE {
                &tiles.base
            } else {
                match tiles.buckets.binary_search(&b) {
                    Ok(i) => &tiles.tiles[i],
                    Err(_) => continue,
                }
            };
            let mut bytes = Vec::with_capacity(64);
            tile.encode(&mut bytes);
            set.push((Self::field_name(spec, f, b), bytes));
        }
        let at = format!("{} {}", self.seq, self.watermark);
        set.push((format!("~{}:_at", spec.step), at.into_bytes()));
        let removed = self
            .removed
            .iter()
            .map(|&(f, b)| Self::field_name(spec, f, b))
            .collect();
        self.changed.clear();
        self.removed.clear();
        (set, removed)
    }

    /// Rebuilds a state from a hash's fields (those of other steps, and the row's own, are
    /// ignored; so are fields of aggregations no longer configured).
    pub fn decode<'a>(
        spec: &AggregateSpec,
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<KeyState, Invalid> {
        let mut state = KeyState::new(spec);
        let mut loaded: Vec<Vec<(i64, Tile)>> = vec![Vec::new(); spec.fields.len()];
        let prefix = format!("~{}:", spec.step);
        let position = |bytes: &[u8]| -> Option<(u64, i64)> {
            let text = std::str::from_utf8(bytes).ok()?;
            let (seq, wm) = text.split_once(' ')?;
            Some((seq.parse().ok()?, wm.parse().ok()?))
        };
        for (name, bytes) in entries {
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            match rest {
                "_at" => {
                    (state.seq, state.watermark) = position(bytes)
                        .ok_or_else(|| invalid!("hash field {name}: expected \"<sequence> <event time>\""))?;
                }
                _ => {
                    let Some((field, b)) = rest.rsplit_once(':') else {
                        continue;
                    };
                    let Some(f) = spec.fields.iter().position(|x| x.field == field) else {
                        continue;
                    };
                    let tile = Tile::decode(bytes).map_err(|e| invalid!("hash field {name}: {e}"))?;
                    if b == "base" {
                        state.fields[f].base = tile;
                    } else {
                        let b: i64 = b.parse().map_err(|_| invalid!("hash field {name}: not a bucket"))?;
                        loaded[f].push((b, tile));
                    }
                }
            }
        }
        for (tiles, mut these) in state.fields.iter_mut().zip(loaded) {
            these.sort_by_key(|(b, _)| *b);
            (tiles.buckets, tiles.tiles) = these.into_iter().unzip();
        }
        Ok(state)
    }
}
