//! Live statistics of a feature set version: every row it writes is profiled into a tumbling
//! window of event time (`[feature_set.monitor] window`, default 1 minute), and each feature's
//! values are counted into the active reference's bins. A timer (every second) closes a
//! window once its end plus a grace (the set's allowed lateness, at least 2 s) has passed on
//! the stream's own time — the newest event time seen, capped by the host's clock — while rows
//! flow, and on the host's clock once a second passes without rows: event time makes a replay
//! or a backlog give the same windows as the stream, the clock makes a quiet stream still
//! close them, and the cap keeps a row from the future from closing windows early. A row for
//! a window already closed is counted as late and left out. A closed window gets its scores against the reference and
//! against the window before it (sudden change), a verdict per feature and, through
//! [`Judge`], a status with hysteresis. Closed windows are merged into hourly and daily
//! roll-ups (same profiles, same bins, scored the same way; their status is their verdict).
//! A restarted host resumes from the windows it stored ([`SetMonitor::resume`]).
//!
//! The active reference can be switched while rows flow ([`SetMonitor::switch`]): each window
//! is counted against the reference active when it opened and judged by it, so a window open
//! at the switch finishes against the old one and the next windows use the new one; no window
//! mixes two references' bins.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::drift::{Judge, Policy};
use super::reference::{Reference, ReferenceFeature};
use super::window::Window;
pub use super::window::{ClosedWindow, FeatureWindow, NumericSummary};
use crate::duration::ConfigDuration;
use crate::event::Value;
use crate::rows::Rows;

/// `[feature_set.monitor]`: live statistics and drift.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The reference windows are compared with (built by `sluice profile --name`); none:
    /// statistics only.
    #[serde(default)]
    pub reference: Option<String>,
    /// The window (default `1m`).
    #[serde(default = "one_minute")]
    pub window: ConfigDuration,
    /// Thresholds per metric, the minimum count and the hysteresis.
    #[serde(default)]
    pub policy: Policy,
    /// One or two fields whose values slice the rows: each of the reference's most frequent
    /// values (up to `max_segments`) is monitored on its own against its own part of the
    /// reference, the rest together as "other" (none: the whole set only).
    #[serde(default)]
    pub segments: Vec<String>,
    /// How many segment values get their own monitor (default 10).
    #[serde(default = "ten")]
    pub max_segments: usize,
}

fn ten() -> usize {
    10
}

/// The segment of rows whose values are not among a reference's segments.
pub const OTHER_SEGMENT: &str = "other";

/// A row's segment: its values of the segment fields (at `at` in its batch), joined by `,`;
/// text as it is, other values as JSON, a missing one as `null`.
pub fn segment_of(event: &crate::event::Event, at: &[Option<usize>]) -> String {
    let mut key = String::new();
    segment_into(&mut key, event, at);
    key
}

/// [`segment_of`] written into `key` (cleared first): no allocation per row once it has grown.
fn segment_into(key: &mut String, event: &crate::event::Event, at: &[Option<usize>]) {
    key.clear();
    for (i, field) in at.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        match field.and_then(|f| event.values.get(f)) {
            Some(Value::Text(s)) => key.push_str(s),
            Some(Value::Null) | None => key.push_str("null"),
            Some(other) => key.push_str(&crate::event::value_to_json(other).to_string()),
        }
    }
}

fn one_minute() -> ConfigDuration {
    ConfigDuration::new("1m")
}

/// An hour, µs.
pub const HOUR: i64 = 3_600_000_000;
/// A day, µs.
pub const DAY: i64 = 24 * HOUR;

/// How many closed windows of a width are kept, in memory and in the store's time series: a
/// day of base windows (at least 1440), 30 days of hours, a year of days.
pub fn kept(width: i64, base: i64) -> usize {
    if width == base {
        (DAY / base.max(1)).clamp(1440, 100_000) as usize
    } else if width == HOUR {
        30 * 24
    } else {
        366
    }
}

/// The open windows of a monitor with the last input sequence they hold: stored every second
/// so a restart resumes them ([`SetMonitor::checkpoint`], [`SetMonitor::resume_open`]).
#[derive(Serialize, Deserialize)]
pub struct Checkpoint<W> {
    /// Rows with an input sequence up to this are in the windows.
    pub through: u64,
    /// The newest event time in them (µs).
    #[serde(default = "no_time")]
    pub watermark: i64,
    /// (width, start, window).
    pub open: Vec<(i64, i64, W)>,
    /// The segments' own (their windows and sequences), by segment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub segments: BTreeMap<String, Checkpoint<W>>,
}

fn no_time() -> i64 {
    i64::MIN
}

impl Checkpoint<Window> {
    /// The references its open windows (and its segments') are counted against, by id.
    pub fn references(&self) -> BTreeSet<String> {
        let mut ids: BTreeSet<String> = self.open.iter().filter_map(|(_, _, w)| w.reference.clone()).collect();
        for part in self.segments.values() {
            ids.extend(part.references());
        }
        ids
    }
}

/// Closed windows of one width, oldest first.
struct Series {
    width: i64,
    open: BTreeMap<i64, Window>,
    closed: VecDeque<ClosedWindow>,
    /// The bins of the window closed last (for the sudden-change scores), and the reference
    /// they are of: a window counted against another one is not compared with them.
    previous: BTreeMap<String, Vec<u64>>,
    previous_reference: Option<String>,
}

impl Series {
    fn new(width: i64) -> Series {
        Series {
            width,
            open: BTreeMap::new(),
            closed: VecDeque::new(),
            previous: BTreeMap::new(),
            previous_reference: None,
        }
    }

    /// The bins a window counted against `reference` is compared with (none when the last
    /// window was counted against another reference).
    fn previous_for(&self, reference: &Option<String>) -> Option<&BTreeMap<String, Vec<u64>>> {
        (self.previous_reference == *reference).then_some(&self.previous)
    }

    fn keep(&mut self, window: ClosedWindow, base: i64) {
        self.closed.push_back(window);
        if self.closed.len() > kept(self.width, base) {
            self.closed.pop_front();
        }
    }
}

/// A reference with its id ([`Reference::id`]).
type Held = (String, Arc<Reference>);

/// The reference `id` names among the active one and those still held.
fn find<'a>(active: &'a Option<Held>, retired: &'a [Held], id: Option<&str>) -> Option<&'a Reference> {
    let id = id?;
    active.iter().chain(retired).find(|(i, _)| i == id).map(|(_, r)| &**r)
}

/// The live statistics of one feature set version.
pub struct SetMonitor {
    grace: i64,
    /// The reference windows opened from now on are counted against.
    reference: Option<Held>,
    /// Earlier references that open windows are still counted against (after a switch).
    retired: Vec<Held>,
    /// A segment the active reference no longer has: it gets no new rows, and goes once its
    /// open windows have closed.
    retired_segment: bool,
    policy: Policy,
    /// Fields that are not features (the entity's, the event time).
    skip: Vec<String>,
    /// The base windows, then the hourly and daily roll-ups (those wider than the base).
    series: Vec<Series>,
    /// Every base window that starts before this is closed.
    closed_before: i64,
    judges: BTreeMap<String, Judge>,
    /// Windows starting before this (µs, host clock) were open when the host last stopped.
    resumed_at: Option<i64>,
    /// The highest input sequence profiled; rows up to it are in the windows (after a
    /// restart, rows at or below it are already counted and are skipped).
    through: u64,
    /// Whether rows came since the last checkpoint.
    dirty: bool,
    /// The highest event time profiled (µs): the watermark windows close on.
    watermark: i64,
    /// Whether rows came since the last [`SetMonitor::close_due`].
    active: bool,
    /// Rows that came for a window already closed (since this monitor was built).
    pub late: u64,
    /// Rows profiled into an open window (since this monitor was built; rows a checkpoint
    /// already held are not counted again).
    pub profiled: u64,
    /// The segment this monitor watches (`None`: the whole set version).
    segment: Option<String>,
    /// The fields that slice rows into segments (positions looked up per batch), and a
    /// monitor per segment.
    segments: Option<(Vec<String>, BTreeMap<String, SetMonitor>)>,
}

impl SetMonitor {
    /// Windows of `window` µs (closed `grace` µs after their end), compared with `reference`;
    /// the `skip` fields are not profiled.
    pub fn new(window: i64, grace: i64, reference: Option<Reference>, policy: Policy, skip: Vec<String>) -> SetMonitor {
        let window = window.max(1);
        let mut series = vec![Series::new(window)];
        series.extend([HOUR, DAY].into_iter().filter(|w| *w > window).map(Series::new));
        SetMonitor {
            grace: grace.max(2_000_000),
            reference: reference.map(|r| (r.id(), Arc::new(r))),
            retired: Vec::new(),
            retired_segment: false,
            policy,
            skip,
            series,
            closed_before: i64::MIN,
            judges: BTreeMap::new(),
            resumed_at: None,
            through: 0,
            dirty: false,
            watermark: i64::MIN,
            // Not idle before a first second has passed without rows: a restart's backlog
            // must not find its windows closed on the clock before its first batch.
            active: true,
            late: 0,
            profiled: 0,
            segment: None,
            segments: None,
        }
    }

    /// Monitors each segment of the reference (values of `fields`) on its own too, against
    /// its own part of the reference, with the same window, grace, policy and skipped fields.
    /// Rows whose segment the reference does not have go to its "other" segment (if it has
    /// one; otherwise they count for the whole only).
    pub fn with_segments(mut self, fields: Vec<String>) -> SetMonitor {
        let Some((id, reference)) = &self.reference else {
            return self;
        };
        let mut monitors = BTreeMap::new();
        for (value, part) in &reference.segments {
            monitors.insert(
                value.clone(),
                self.child(value, Some((id.clone(), Arc::new(part.clone())))),
            );
        }
        if !monitors.is_empty() {
            self.segments = Some((fields, monitors));
        }
        self
    }

    /// A monitor for segment `value`, counting against `reference` (its part of the whole's).
    fn child(&self, value: &str, reference: Option<Held>) -> SetMonitor {
        let mut child = SetMonitor::new(self.window(), self.grace, None, self.policy.clone(), self.skip.clone());
        child.reference = reference;
        child.segment = Some(value.to_string());
        child
    }

    /// Makes `reference` the active one: windows opened from now on are counted against it
    /// and judged by it, the windows open now finish against the one they opened with. A
    /// segmented monitor (`segments`: the set's segment fields, empty when it has none) takes
    /// the new reference's segments: those it shares get their new part, new ones start, and
    /// the rows of a segment it no longer has go to "other" (that segment's monitor goes once
    /// its open windows, roll-ups included, have closed). Statuses carry on with their
    /// hysteresis.
    pub fn switch(&mut self, reference: Reference, segments: &[String]) {
        let id = reference.id();
        if !segments.is_empty() {
            let mut monitors = self.segments.take().map(|(_, monitors)| monitors).unwrap_or_default();
            for (value, child) in &mut monitors {
                match reference.segments.get(value) {
                    Some(part) => child.use_reference((id.clone(), Arc::new(part.clone()))),
                    None => child.retire(),
                }
            }
            for (value, part) in &reference.segments {
                if !monitors.contains_key(value) {
                    let child = self.child(value, Some((id.clone(), Arc::new(part.clone()))));
                    monitors.insert(value.clone(), child);
                }
            }
            self.segments = Some((segments.to_vec(), monitors));
        }
        self.use_reference((id, Arc::new(reference)));
    }

    fn use_reference(&mut self, reference: Held) {
        self.retired_segment = false;
        if let Some(old) = self.reference.replace(reference) {
            self.retired.push(old);
        }
        self.prune();
    }

    fn retire(&mut self) {
        self.retired.extend(self.reference.take());
        self.retired_segment = true;
        self.prune();
    }

    /// Lets go of the references no open window is counted against.
    fn prune(&mut self) {
        let held: BTreeSet<&str> = self
            .series
            .iter()
            .flat_map(|s| s.open.values())
            .filter_map(|w| w.reference.as_deref())
            .collect();
        let active = self.reference.as_ref().map(|(id, _)| id.as_str());
        self.retired
            .retain(|(id, _)| held.contains(id.as_str()) && Some(id.as_str()) != active);
    }

    /// The earlier references that open windows are still counted against, by id.
    pub fn held_references(&self) -> impl Iterator<Item = &str> {
        self.retired.iter().map(|(id, _)| id.as_str())
    }

    /// Holds an earlier reference that windows of a checkpoint are counted against (before
    /// [`SetMonitor::resume_open`]), with each segment's part; a segment only it has is
    /// monitored until its windows close.
    pub fn hold(&mut self, reference: Reference) {
        let id = reference.id();
        if let Some((fields, mut monitors)) = self.segments.take() {
            for (value, part) in &reference.segments {
                let child = monitors.entry(value.clone()).or_insert_with(|| {
                    let mut child = self.child(value, None);
                    child.retired_segment = true;
                    child
                });
                child.retired.push((id.clone(), Arc::new(part.clone())));
            }
            self.segments = Some((fields, monitors));
        }
        self.retired.push((id, Arc::new(reference)));
    }

    /// The segments' monitors, by segment (none without segments).
    pub fn segments(&self) -> impl Iterator<Item = (&String, &SetMonitor)> {
        self.segments.iter().flat_map(|(_, monitors)| monitors.iter())
    }

    /// The segment this monitor watches (`None`: the whole set version).
    pub fn segment(&self) -> Option<&str> {
        self.segment.as_deref()
    }

    /// The base window's width, µs.
    pub fn window(&self) -> i64 {
        self.series[0].width
    }

    /// The widths kept: the base window's, then the roll-ups'.
    pub fn widths(&self) -> Vec<i64> {
        self.series.iter().map(|s| s.width).collect()
    }

    /// The closed windows of a width, oldest first (`None`: not a width kept).
    pub fn closed(&self, width: i64) -> Option<&VecDeque<ClosedWindow>> {
        self.series.iter().find(|s| s.width == width).map(|s| &s.closed)
    }

    /// The active reference, if any.
    pub fn reference(&self) -> Option<&Reference> {
        self.reference.as_ref().map(|(_, r)| &**r)
    }

    /// Each feature's status, with the scores of the last window that had a verdict.
    pub fn statuses(&self) -> &BTreeMap<String, Judge> {
        &self.judges
    }

    /// Resumes from the windows a previous run stored (any width, any order) at host time
    /// `now`: they are kept again, base windows that start before the last one stored ends
    /// count as late, the statuses and their hysteresis continue, and the windows open now
    /// are marked partial when they close.
    pub fn resume(&mut self, mut stored: Vec<ClosedWindow>, now: i64) {
        if let Some((_, monitors)) = &mut self.segments {
            let mut of: BTreeMap<String, Vec<ClosedWindow>> = BTreeMap::new();
            for window in stored.extract_if(.., |w| w.segment.is_some()) {
                of.entry(window.segment.clone().unwrap_or_default())
                    .or_default()
                    .push(window);
            }
            for (segment, windows) in of {
                if let Some(child) = monitors.get_mut(&segment) {
                    child.resume(windows, now);
                }
            }
        }
        let own = self.segment.clone();
        stored.retain(|w| w.segment == own);
        if stored.is_empty() {
            return;
        }
        stored.sort_by_key(|w| (w.width(), w.start));
        let base = self.window();
        for window in stored {
            let Some(series) = self.series.iter_mut().find(|s| s.width == window.width()) else {
                continue;
            };
            if series.closed.back().is_some_and(|last| last.start >= window.start) {
                continue;
            }
            series.previous = bins_of(&window);
            // A window stored before windows named their reference was counted against the
            // one active now.
            series.previous_reference = window
                .reference
                .clone()
                .or_else(|| self.reference.as_ref().map(|(id, _)| id.clone()));
            if series.width == base {
                self.closed_before = self.closed_before.max(window.end);
                for (name, feature) in &window.features {
                    self.judges
                        .insert(name.clone(), Judge::resume(feature.status, feature.pending));
                }
            }
            series.keep(window, base);
        }
        self.resumed_at = Some(now);
    }

    /// Marks input sequences up to `seq` as seen: a batch's events that left no row (filtered,
    /// failed) are part of what a checkpoint covers, so the batch can be acknowledged once
    /// one is stored.
    pub fn passed(&mut self, seq: u64) {
        if seq > self.through {
            self.through = seq;
            self.dirty = true;
        }
    }

    /// Makes the next [`SetMonitor::checkpoint`] return the windows (the last one could not
    /// be stored).
    pub fn unsaved(&mut self) {
        self.dirty = true;
    }

    /// The highest input sequence the windows account for.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// The open windows, for a checkpoint, when rows came since the last one (`None`
    /// otherwise); serialised under the caller's lock.
    pub fn checkpoint(&mut self) -> Option<Checkpoint<&Window>> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        Some(self.snapshot())
    }

    fn snapshot(&self) -> Checkpoint<&Window> {
        let open = self
            .series
            .iter()
            .flat_map(|s| s.open.iter().map(|(start, w)| (s.width, *start, w)))
            .collect();
        Checkpoint {
            through: self.through,
            watermark: self.watermark,
            open,
            segments: self
                .segments()
                .map(|(segment, child)| (segment.clone(), child.snapshot()))
                .collect(),
        }
    }

    /// Resumes the open windows of a checkpoint (after [`SetMonitor::resume`]): those not
    /// closed since are open again, and rows up to its sequence are not counted twice.
    pub fn resume_open(&mut self, mut checkpoint: Checkpoint<Window>) {
        if let Some((_, monitors)) = &mut self.segments {
            for (segment, part) in std::mem::take(&mut checkpoint.segments) {
                if let Some(child) = monitors.get_mut(&segment) {
                    child.resume_open(part);
                }
            }
        }
        self.through = self.through.max(checkpoint.through);
        self.watermark = self.watermark.max(checkpoint.watermark);
        let active = self.reference.as_ref().map(|(id, _)| id.clone());
        for (width, start, mut window) in checkpoint.open {
            if window.reference.is_none() && !window.bins.is_empty() {
                // Stored before windows named their reference: the one active now.
                window.reference = active.clone();
            }
            if window.reference.is_some() && find(&self.reference, &self.retired, window.reference.as_deref()).is_none()
            {
                tracing::warn!(
                    reference = window.reference.as_deref().unwrap_or_default(),
                    "a resumed monitoring window was counted against a reference no longer stored: it keeps its \
                     statistics, without drift scores"
                );
                window.bins.clear();
                window.reference = None;
            }
            let Some(series) = self.series.iter_mut().find(|s| s.width == width) else {
                continue;
            };
            let closed = series.closed.back().is_some_and(|last| last.start >= start);
            if !closed {
                series.open.insert(start, window);
            }
        }
    }

    /// Profiles rows into their windows (rows a checkpoint already holds are skipped), and
    /// each row into its segment's.
    pub fn add(&mut self, rows: &Rows) {
        self.add_all(rows);
        let Some((fields, monitors)) = &mut self.segments else {
            return;
        };
        let at: Vec<Option<usize>> = fields
            .iter()
            .map(|f| rows.batch.fields.iter().position(|name| name == f))
            .collect();
        // The active reference's segments in key order (as the map holds them); a row's is
        // found by binary search.
        let mut live: Vec<(&String, &mut SetMonitor)> = monitors
            .iter_mut()
            .filter(|(_, child)| !child.retired_segment)
            .collect();
        let other = live.binary_search_by(|(k, _)| k.as_str().cmp(OTHER_SEGMENT)).ok();
        let mut of: Vec<Vec<usize>> = vec![Vec::new(); live.len()];
        let mut key = String::new();
        for (i, event) in rows.batch.events.iter().enumerate() {
            segment_into(&mut key, event, &at);
            let found = live.binary_search_by(|(k, _)| k.as_str().cmp(key.as_str())).ok();
            if let Some(at) = found.or(other) {
                of[at].push(i);
            }
        }
        for ((_, child), only) in live.iter_mut().zip(of) {
            if !only.is_empty() {
                child.add_only(rows, &only);
            }
        }
    }

    /// Profiles the rows `only` (indices into `rows`) into their windows.
    fn add_only(&mut self, rows: &Rows, only: &[usize]) {
        let Some(last) = only.iter().map(|&i| rows.seqs[i]).max() else {
            return;
        };
        let through = self.through;
        self.through = self.through.max(last);
        self.dirty = true;
        self.active = true;
        let newest = only
            .iter()
            .map(|&i| rows.batch.events[i].time)
            .max()
            .unwrap_or(i64::MIN);
        self.watermark = self.watermark.max(newest);
        let width = self.window();
        let mut by_window: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for &i in only.iter().filter(|&&i| rows.seqs[i] > through) {
            let start = rows.batch.events[i].time.div_euclid(width) * width;
            by_window.entry(start).or_default().push(i);
        }
        for (start, rows_of) in by_window {
            self.add_to(start, rows, Some(&rows_of));
        }
    }

    fn add_all(&mut self, rows: &Rows) {
        let Some(&last) = rows.seqs.iter().max() else { return };
        let width = self.window();
        let start_of = |t: i64| t.div_euclid(width) * width;
        let through = self.through;
        let fresh: Option<Vec<usize>> = rows
            .seqs
            .iter()
            .any(|s| *s <= through)
            .then(|| (0..rows.len()).filter(|&i| rows.seqs[i] > through).collect());
        self.through = self.through.max(last);
        self.dirty = true;
        self.active = true;
        let newest = rows.batch.events.iter().map(|e| e.time).max().unwrap_or(i64::MIN);
        self.watermark = self.watermark.max(newest);
        let first = start_of(rows.batch.events[0].time);
        if fresh.is_none() && rows.batch.events.iter().all(|e| start_of(e.time) == first) {
            self.add_to(first, rows, None);
            return;
        }
        let mut by_window: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        let taken: Box<dyn Iterator<Item = usize>> = match &fresh {
            Some(fresh) => Box::new(fresh.iter().copied()),
            None => Box::new(0..rows.len()),
        };
        for i in taken {
            by_window
                .entry(start_of(rows.batch.events[i].time))
                .or_default()
                .push(i);
        }
        for (start, rows_of) in by_window {
            self.add_to(start, rows, Some(&rows_of));
        }
    }

    fn add_to(&mut self, start: i64, rows: &Rows, only: Option<&[usize]>) {
        if start < self.closed_before {
            self.late += only.map_or(rows.len(), <[usize]>::len) as u64;
            return;
        }
        self.profiled += only.map_or(rows.len(), <[usize]>::len) as u64;
        let skip = &self.skip;
        let active = &self.reference;
        let window = self.series[0]
            .open
            .entry(start)
            .or_insert_with(|| Window::counted_against(active.as_ref().map(|(id, _)| id.clone())));
        window.profile.add_rows_of(rows, only, |name| {
            skip.iter().any(|s| s == name) || name.starts_with('_')
        });
        let Some(reference) = find(&self.reference, &self.retired, window.reference.as_deref()) else {
            return;
        };
        for (at, name) in rows.batch.fields.iter().enumerate() {
            let Some(feature) = reference.features.get(name) else {
                continue;
            };
            if !window.bins.contains_key(name) {
                window.bins.insert(name.clone(), feature.binned());
            }
            let bins = window.bins.get_mut(name).expect("inserted above");
            let mut count = |value: &Value| match (feature, value) {
                (ReferenceFeature::Numeric { edges, .. }, Value::Integer(i)) => bins.add_number(edges, *i as f64),
                (ReferenceFeature::Numeric { edges, .. }, Value::Float(x)) => bins.add_number(edges, *x),
                (ReferenceFeature::Categorical { values, .. }, Value::Text(s)) => bins.add_value(values, s, 1),
                (ReferenceFeature::Categorical { values, .. }, Value::Boolean(b)) => {
                    bins.add_value(values, if *b { "true" } else { "false" }, 1)
                }
                _ => {}
            };
            match only {
                None => rows
                    .batch
                    .events
                    .iter()
                    .for_each(|e| count(e.values.get(at).unwrap_or(&Value::Null))),
                Some(only) => only
                    .iter()
                    .for_each(|&i| count(rows.batch.events[i].values.get(at).unwrap_or(&Value::Null))),
            }
        }
    }

    /// Closes the windows that are due at host time `now` (µs): the base ones oldest first,
    /// each merged into its roll-ups, then the roll-ups that are due.
    ///
    /// A window is due when its end plus the grace has passed on the host's clock *and* in
    /// the data: the newest event time profiled (the watermark) is past it too, or no row came
    /// since the previous call (the stream is idle; the pipeline calls every second). So a
    /// replay or a consumer catching up on a backlog closes each window once the stream's own
    /// time has moved past it (the same windows as live, no row counted late for arriving
    /// fast), and a quiet stream's windows still close on the clock. An event time from the
    /// future never closes a window early: the clock must agree.
    pub fn close_due(&mut self, now: i64) -> Vec<ClosedWindow> {
        let idle = !std::mem::take(&mut self.active);
        let until = if idle { now } else { now.min(self.watermark) };
        let mut closed = self.close_until(until);
        // A segment closes on the whole stream's time: one that got no row in the last second
        // is not idle while others flow (a backlog's rare segment would find its windows
        // closed before its rows came).
        if let Some((_, monitors)) = &mut self.segments {
            for child in monitors.values_mut() {
                child.active = false;
                closed.extend(child.close_until(until));
            }
            // A segment the active reference no longer has goes once its windows have closed.
            monitors.retain(|_, child| !child.retired_segment || child.series.iter().any(|s| !s.open.is_empty()));
        }
        closed
    }

    fn close_until(&mut self, until: i64) -> Vec<ClosedWindow> {
        let mut closed = Vec::new();
        let base = self.window();
        while let Some((&start, _)) = self.series[0].open.first_key_value() {
            if start.saturating_add(base).saturating_add(self.grace) > until {
                break;
            }
            let window = self.series[0].open.remove(&start).expect("the first key is there");
            self.closed_before = self.closed_before.max(start + base);
            for rollup in &mut self.series[1..] {
                let at = start.div_euclid(rollup.width) * rollup.width;
                rollup.open.entry(at).or_default().merge(&window);
            }
            let done = self.judge(start, window);
            self.series[0].keep(done.clone(), base);
            closed.push(done);
        }
        for at in 1..self.series.len() {
            while let Some(done) = self.close_rollup(at, until) {
                self.series[at].keep(done.clone(), base);
                closed.push(done);
            }
        }
        if !closed.is_empty() && !self.retired.is_empty() {
            self.prune();
        }
        closed
    }

    /// Closes roll-up `at`'s oldest window if its end plus the grace has passed.
    fn close_rollup(&mut self, at: usize, now: i64) -> Option<ClosedWindow> {
        let series = &mut self.series[at];
        let (&start, _) = series.open.first_key_value()?;
        if start.saturating_add(series.width).saturating_add(self.grace) > now {
            return None;
        }
        let window = series.open.remove(&start).expect("the first key is there");
        let reference = find(&self.reference, &self.retired, window.reference.as_deref());
        let none = BTreeMap::new();
        let previous = series.previous_for(&window.reference).unwrap_or(&none);
        let features = window.summarize(reference, previous, &self.policy);
        let rows = window.profile.rows;
        series.previous_reference = window.reference.clone();
        let counted_against = window.reference.clone();
        series.previous = window.into_bins();
        Some(ClosedWindow {
            start,
            end: start + series.width,
            rows,
            partial: self.resumed_at.is_some_and(|r| start < r),
            segment: self.segment.clone(),
            reference: counted_against,
            features,
        })
    }

    /// A base window's summary, each feature judged with hysteresis.
    fn judge(&mut self, start: i64, window: Window) -> ClosedWindow {
        let reference = find(&self.reference, &self.retired, window.reference.as_deref());
        let none = BTreeMap::new();
        let previous = self.series[0].previous_for(&window.reference).unwrap_or(&none);
        let mut features = window.summarize(reference, previous, &self.policy);
        for (name, feature) in &mut features {
            let judge = self.judges.entry(name.clone()).or_default();
            feature.changed = judge.window(feature.verdict, &self.policy).is_some();
            feature.status = judge.status;
            feature.pending = judge.pending();
        }
        let rows = window.profile.rows;
        let counted_against = window.reference.clone();
        self.series[0].previous_reference = window.reference.clone();
        self.series[0].previous = window.into_bins();
        ClosedWindow {
            start,
            end: start + self.window(),
            rows,
            partial: self.resumed_at.is_some_and(|r| start < r),
            segment: self.segment.clone(),
            reference: counted_against,
            features,
        }
    }
}

/// A stored window's bins per feature.
fn bins_of(window: &ClosedWindow) -> BTreeMap<String, Vec<u64>> {
    window
        .features
        .iter()
        .filter_map(|(name, f)| Some((name.clone(), f.bins.clone()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::monitor::drift::{Metric, Status};
    use crate::monitor::profile::Profile;

    const MIN: i64 = 60_000_000;

    /// Rows with times from `start` and fresh input sequences.
    fn rows(start: i64, xs: &[f64], country: &str) -> Rows {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut rows = Rows::new(vec!["user".into(), "amount".into(), "country".into()]);
        for (i, x) in xs.iter().enumerate() {
            let values = vec![Value::Text("u".into()), Value::Float(*x), Value::Text(country.into())];
            rows.push(
                SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                Event {
                    key: "u".into(),
                    time: start + i as i64,
                    values,
                },
            );
        }
        rows
    }

    /// Closes what is due at `now` once the stream is idle: a call with rows since the last
    /// one closes on the watermark, the next on the clock.
    fn drain(monitor: &mut SetMonitor, now: i64) -> Vec<ClosedWindow> {
        let mut closed = monitor.close_due(now);
        closed.extend(monitor.close_due(now));
        closed
    }

    fn reference() -> Reference {
        let xs: Vec<f64> = (0..1000).map(|i| (i % 100) as f64).collect();
        reference_of(&xs, "r")
    }

    /// A reference of `xs` (in DE) named `name`.
    fn reference_of(xs: &[f64], name: &str) -> Reference {
        let mut profile = Profile::default();
        profile.add_rows(&rows(0, xs, "DE"), |n| n == "user");
        let mut reference = Reference::from_profile(&profile, name, "tx", 1, "test".into());
        let ReferenceFeature::Numeric { edges, .. } = reference.features["amount"].clone() else {
            panic!()
        };
        let mut bins = reference.features["amount"].binned();
        xs.iter().for_each(|&x| bins.add_number(&edges, x));
        reference.count_numbers(&BTreeMap::from([("amount".to_string(), bins)]));
        reference
    }

    #[test]
    fn windows_close_on_the_clock_and_drift_is_raised_after_two_windows() {
        let policy = Policy {
            min_count: 100,
            ..Policy::default()
        };
        let mut monitor = SetMonitor::new(MIN, 0, Some(reference()), policy, vec!["user".into()]);
        let same: Vec<f64> = (0..1000).map(|i| (i % 100) as f64).collect();
        let shifted: Vec<f64> = same.iter().map(|x| x + 40.0).collect();
        for (w, xs) in [&same, &same, &shifted, &shifted, &shifted].iter().enumerate() {
            monitor.add(&rows(w as i64 * MIN, xs, "DE"));
        }
        assert!(monitor.close_due(MIN).is_empty(), "the grace has not passed");
        let closed = monitor.close_due(10 * MIN);
        assert_eq!(closed.len(), 5);
        let status: Vec<Status> = closed.iter().map(|w| w.features["amount"].status).collect();
        assert_eq!(
            status,
            vec![Status::Ok, Status::Ok, Status::Ok, Status::Drift, Status::Drift]
        );
        assert!(closed[3].features["amount"].changed);
        assert_eq!(closed[2].features["amount"].verdict, Some(Status::Drift));
        assert!(
            closed[2].features["amount"].sudden[&Metric::Psi] > 0.25,
            "a sudden change"
        );
        assert!(!closed[0].features.contains_key("user"), "the entity is not a feature");
        assert_eq!(closed[0].features["country"].verdict, Some(Status::Ok));
        // A row for a closed window is late and left out.
        monitor.add(&rows(0, &[1.0], "DE"));
        assert_eq!(monitor.late, 1);
        assert!(monitor.close_due(20 * MIN).is_empty());
    }

    #[test]
    fn a_replay_closes_windows_on_its_own_time_and_an_idle_stream_on_the_clock() {
        let mut monitor = SetMonitor::new(MIN, 0, None, Policy::default(), Vec::new());
        let now = 1000 * MIN; // history, replayed long after it happened
        monitor.add(&rows(0, &[1.0, 2.0], "DE"));
        monitor.add(&rows(MIN, &[3.0], "DE"));
        assert!(
            monitor.close_due(now).is_empty(),
            "the data's time is not past the first window's end plus the grace"
        );
        monitor.add(&rows(2 * MIN + 5_000_000, &[4.0], "DE"));
        let closed = monitor.close_due(now);
        assert_eq!(
            closed.iter().map(|w| (w.start, w.rows)).collect::<Vec<_>>(),
            vec![(0, 2), (MIN, 1)],
            "closed once the replay's time passed them, none while rows came for them"
        );
        assert_eq!(monitor.late, 0);
        // The replay ends: the next call sees no rows and closes the rest on the clock.
        let rest = monitor.close_due(now);
        let widths: Vec<(i64, i64)> = rest.iter().map(|w| (w.start, w.width())).collect();
        assert_eq!(widths, vec![(2 * MIN, MIN), (0, HOUR)], "and the hour with it");
        // An event time from the future does not close a window the clock has not passed.
        let mut live = SetMonitor::new(MIN, 0, None, Policy::default(), Vec::new());
        live.add(&rows(0, &[1.0], "DE"));
        live.add(&rows(50 * MIN, &[1.0], "DE"));
        assert!(live.close_due(MIN).is_empty());
        assert_eq!(live.close_due(2 * MIN).len(), 1, "the first window, on the clock");
    }

    #[test]
    fn rows_of_a_batch_go_to_their_own_windows() {
        let mut monitor = SetMonitor::new(MIN, 0, None, Policy::default(), Vec::new());
        let mut batch = rows(0, &[1.0, 2.0], "DE");
        batch.batch.events[1].time = MIN + 5;
        monitor.add(&batch);
        let closed = drain(&mut monitor, 5 * MIN);
        assert_eq!(
            closed.iter().map(|w| (w.start, w.rows)).collect::<Vec<_>>(),
            vec![(0, 1), (MIN, 1)]
        );
        assert!(
            closed[0].features["amount"].scores.is_empty(),
            "no reference, no scores"
        );
    }

    #[test]
    fn base_windows_roll_up_into_hours_and_a_restart_resumes_them() {
        let policy = Policy {
            min_count: 100,
            ..Policy::default()
        };
        let new = || SetMonitor::new(MIN, 0, Some(reference()), policy.clone(), vec!["user".into()]);
        let same: Vec<f64> = (0..1000).map(|i| (i % 100) as f64).collect();
        let shifted: Vec<f64> = same.iter().map(|x| x + 40.0).collect();
        let mut monitor = new();
        for w in 0..3 {
            monitor.add(&rows(w * MIN, if w == 0 { &same } else { &shifted }, "DE"));
        }
        let first = drain(&mut monitor, 5 * MIN);
        assert_eq!(first.len(), 3, "no hour has ended yet");
        assert_eq!(first[2].features["amount"].status, Status::Drift);
        // A restart: a new monitor resumes from what was stored.
        let mut resumed = new();
        resumed.resume(first.clone(), 3 * MIN + 1);
        assert_eq!(resumed.statuses()["amount"].status, Status::Drift);
        resumed.add(&rows(0, &same, "DE"));
        assert_eq!(resumed.late, 1000, "a stored window is not opened again");
        resumed.add(&rows(3 * MIN, &same, "DE"));
        resumed.add(&rows(60 * MIN, &same, "DE"));
        let closed = drain(&mut resumed, HOUR + 10 * MIN);
        let widths: Vec<(i64, i64, bool)> = closed.iter().map(|w| (w.start, w.width(), w.partial)).collect();
        assert_eq!(
            widths,
            vec![(3 * MIN, MIN, true), (60 * MIN, MIN, false), (0, HOUR, true)],
            "the hour closes after its last minute, and was open at the restart"
        );
        let hour = &closed[2];
        assert_eq!(hour.rows, 1000, "the hour holds what this run saw");
        assert_eq!(resumed.closed(MIN).unwrap().len(), 5);
        assert_eq!(resumed.closed(HOUR).unwrap().len(), 1);
        assert!(resumed.closed(DAY).unwrap().is_empty());
        // Stored and read back, a window is the same.
        let text = serde_json::to_string(&closed[0]).unwrap();
        let back: ClosedWindow = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }

    #[test]
    fn a_checkpoint_resumes_open_windows_without_counting_a_row_twice() {
        let stored = reference();
        let mut monitor = SetMonitor::new(MIN, 0, Some(stored.clone()), Policy::default(), vec!["user".into()]);
        let batch = rows(0, &[1.0, 2.0, 3.0], "DE");
        monitor.add(&batch);
        let text = serde_json::to_vec(&monitor.checkpoint().expect("rows came")).unwrap();
        assert!(monitor.checkpoint().is_none(), "nothing new since");
        let mut resumed = SetMonitor::new(MIN, 0, Some(stored), Policy::default(), vec!["user".into()]);
        resumed.resume_open(serde_json::from_slice(&text).unwrap());
        resumed.add(&batch); // redelivered after the restart
        resumed.add(&rows(10, &[4.0], "FR"));
        let closed = drain(&mut resumed, 5 * MIN);
        assert_eq!(closed[0].rows, 4, "three from the checkpoint, one new, none twice");
        assert_eq!(
            closed[0].features["amount"].bins.as_ref().unwrap().iter().sum::<u64>(),
            4
        );
        assert_eq!(closed[0].features["country"].count, 4);
    }

    #[test]
    fn a_switched_reference_judges_the_windows_opened_after_it_and_a_checkpoint_keeps_both() {
        let policy = Policy {
            min_count: 100,
            ..Policy::default()
        };
        let same: Vec<f64> = (0..1000).map(|i| (i % 100) as f64).collect();
        let shifted: Vec<f64> = same.iter().map(|x| x + 40.0).collect();
        let (first, later) = (reference(), reference_of(&shifted, "later"));
        let skip = vec!["user".to_string()];
        let mut monitor = SetMonitor::new(MIN, 0, Some(first.clone()), policy.clone(), skip.clone());
        monitor.add(&rows(0, &shifted, "DE"));
        monitor.switch(later.clone(), &[]);
        assert_eq!(monitor.reference().unwrap().name, "later");
        // Window 0 opened before the switch: its rows still count against the first one.
        monitor.add(&rows(1000, &shifted[..10], "DE"));
        monitor.add(&rows(MIN, &shifted, "DE"));
        assert_eq!(monitor.held_references().collect::<Vec<_>>(), vec![first.id().as_str()]);
        // A checkpoint taken now resumes with both references.
        let text = serde_json::to_vec(&monitor.checkpoint().unwrap()).unwrap();
        let checkpoint: Checkpoint<Window> = serde_json::from_slice(&text).unwrap();
        assert_eq!(checkpoint.references(), BTreeSet::from([first.id(), later.id()]));
        let mut resumed = SetMonitor::new(MIN, 0, Some(later.clone()), policy, skip);
        resumed.hold(first.clone());
        resumed.resume_open(checkpoint);
        for mut m in [monitor, resumed] {
            let closed = drain(&mut m, 5 * MIN);
            let base: Vec<&ClosedWindow> = closed.iter().filter(|w| w.width() == MIN).collect();
            assert_eq!(base.len(), 2);
            assert_eq!(base[0].reference.as_deref(), Some(first.id().as_str()));
            assert_eq!(base[0].rows, 1010);
            assert_eq!(
                base[0].features["amount"].verdict,
                Some(Status::Drift),
                "judged by the first"
            );
            assert_eq!(base[1].reference.as_deref(), Some(later.id().as_str()));
            assert_eq!(
                base[1].features["amount"].verdict,
                Some(Status::Ok),
                "judged by the later one"
            );
            assert!(
                base[1].features["amount"].sudden.is_empty(),
                "not compared with bins of another reference"
            );
            assert_eq!(m.held_references().count(), 0, "let go once its windows closed");
            // The next window is compared with the one before again.
            m.add(&rows(2 * MIN, &shifted, "DE"));
            let next = drain(&mut m, 6 * MIN);
            assert!(next[0].features["amount"].sudden[&Metric::Psi] < 0.01);
        }
    }

    #[test]
    fn a_switch_moves_the_segments_to_those_of_the_new_reference() {
        let xs: Vec<f64> = (0..1000).map(|i| (i % 100) as f64).collect();
        let segmented = |name: &str, values: &[&str]| {
            let mut whole = reference_of(&xs, name);
            whole.segment_fields = vec!["country".into()];
            for value in values {
                whole.segments.insert(value.to_string(), reference_of(&xs, name));
            }
            whole
        };
        let (first, later) = (
            segmented("first", &["DE", "other"]),
            segmented("later", &["FR", "other"]),
        );
        let fields = vec!["country".to_string()];
        let mut monitor =
            SetMonitor::new(MIN, 0, Some(first), Policy::default(), vec!["user".into()]).with_segments(fields.clone());
        monitor.add(&rows(0, &xs[..10], "DE"));
        monitor.switch(later, &fields);
        let names = |m: &SetMonitor| m.segments().map(|(s, _)| s.clone()).collect::<Vec<_>>();
        assert_eq!(names(&monitor), vec!["DE", "FR", "other"], "DE until its window closes");
        monitor.add(&rows(MIN, &xs[..20], "DE"));
        monitor.add(&rows(MIN, &xs[..30], "FR"));
        let closed = drain(&mut monitor, 5 * MIN);
        let rows_of = |segment: &str, start: i64| {
            closed
                .iter()
                .find(|w| w.segment.as_deref() == Some(segment) && w.start == start && w.width() == MIN)
                .map(|w| w.rows)
        };
        assert_eq!(rows_of("DE", 0), Some(10));
        assert_eq!(
            rows_of("DE", MIN),
            None,
            "DE's rows after the switch are the new reference's other"
        );
        assert_eq!(rows_of("other", MIN), Some(20));
        assert_eq!(rows_of("FR", MIN), Some(30));
        assert_eq!(
            names(&monitor),
            vec!["DE", "FR", "other"],
            "until DE's roll-ups close too"
        );
        drain(&mut monitor, 2 * DAY);
        assert_eq!(names(&monitor), vec!["FR", "other"]);
    }
}
