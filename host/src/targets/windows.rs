//! Where closed monitoring windows go: a time series per (set version, width) in the online
//! store (`<prefix>:<set>:v<version>:_windows:<seconds>`, one entry per window start, trimmed
//! to [`kept`] windows), and one Parquet file per window under the offline root,
//! `<root>/_monitor/<set>/v<version>/window=<seconds>s/date=YYYY-MM-DD/<start>.parquet`, one
//! row per feature. Both are keyed by the window's start, so a window written twice (a retry,
//! a restart) replaces itself: never two rows for one window.
//!
//! A window is written to the store first and to Parquet second; at start,
//! [`WindowSink::restore`] reads the stored windows back and writes any Parquet file a kill
//! left unwritten. The windows still open are checkpointed every second
//! (`<prefix>:<set>:v<version>:_windows:open`) with the last input sequence they hold.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use super::parquet::{date_of, write_file};
use super::TargetError;
use crate::monitor::drift::Metric;
use crate::monitor::live::{kept, ClosedWindow};
use crate::store::OnlineStore;

/// The metrics with a column each, in column order.
const METRICS: [Metric; 6] = [
    Metric::Psi,
    Metric::JensenShannon,
    Metric::Hellinger,
    Metric::Tvd,
    Metric::Ks,
    Metric::ChiSquareP,
];

/// The closed windows of one set version: its store series and Parquet folder.
pub struct WindowSink {
    store: Arc<dyn OnlineStore>,
    set: String,
    version: u32,
    /// `<prefix>:<set>:v<version>`.
    set_prefix: String,
    /// `<root>/_monitor/<set>/v<version>`.
    folder: PathBuf,
    base: i64,
}

impl WindowSink {
    /// The sink of a set version whose base window is `base` µs; `root`: the offline root.
    pub fn new(
        store: Arc<dyn OnlineStore>,
        set_prefix: String,
        set: &str,
        version: u32,
        root: &Path,
        base: i64,
    ) -> WindowSink {
        WindowSink {
            store,
            set: set.to_string(),
            version,
            folder: root.join("_monitor").join(set).join(format!("v{version}")),
            set_prefix,
            base,
        }
    }

    /// The store's series of a width (of a segment: `…:_windows:<seconds>:segment=<value>`).
    pub fn series(&self, width: i64, segment: Option<&str>) -> String {
        match segment {
            None => format!("{}:_windows:{}", self.set_prefix, width / 1_000_000),
            Some(value) => format!("{}:_windows:{}:segment={value}", self.set_prefix, width / 1_000_000),
        }
    }

    /// The Parquet file of a window (a segment's under `segment=<value>/`).
    pub fn file(&self, window: &ClosedWindow) -> PathBuf {
        let folder = match &window.segment {
            None => self.folder.clone(),
            Some(value) => self.folder.join(format!("segment={}", path_safe(value))),
        };
        folder
            .join(format!("window={}s", window.width() / 1_000_000))
            .join(format!("date={}", date_of(window.start)))
            .join(format!("{:020}.parquet", window.start))
    }

    /// Writes closed windows: to the store's series, then to Parquet.
    pub async fn write(&self, windows: &[ClosedWindow]) -> Result<(), TargetError> {
        // Owned keys: a borrowed one held across the awaits below makes the future not
        // `Send` for every lifetime (rustc's higher-ranked check on spawned futures).
        let mut series: Vec<(Option<String>, i64)> = windows.iter().map(|w| (w.segment.clone(), w.width())).collect();
        series.sort();
        series.dedup();
        for (segment, width) in series {
            let segment = segment.as_deref();
            let entries: Vec<(i64, Vec<u8>)> = windows
                .iter()
                .filter(|w| w.width() == width && w.segment.as_deref() == segment)
                .map(|w| serde_json::to_vec(w).map(|bytes| (w.start, bytes)))
                .collect::<Result<_, _>>()
                .map_err(|e| TargetError::Encode(format!("a closed window: {e}")))?;
            let newest = entries.iter().map(|(start, _)| *start).max().unwrap_or(0);
            let keep_from = newest.saturating_sub(width.saturating_mul(kept(width, self.base) as i64 - 1));
            let name = self.series(width, segment);
            self.store.put_series(&name, &entries, keep_from).await?;
        }
        for window in windows {
            self.write_parquet(window)?;
        }
        Ok(())
    }

    /// Every stored window of these widths (oldest first per width); a window whose Parquet
    /// file is missing (the host stopped between the two writes) gets it now.
    pub async fn restore(&self, widths: &[i64], segments: &[String]) -> Result<Vec<ClosedWindow>, TargetError> {
        let mut windows = Vec::new();
        let all: Vec<(Option<String>, i64)> = std::iter::once(None)
            .chain(segments.iter().cloned().map(Some))
            .flat_map(|s| widths.iter().map(move |w| (s.clone(), *w)))
            .collect();
        for (segment, width) in all {
            let series = self.series(width, segment.as_deref());
            for (start, bytes) in self.store.read_series(&series, i64::MIN, i64::MAX).await? {
                let window: ClosedWindow = serde_json::from_slice(&bytes).map_err(|e| {
                    TargetError::Encode(format!(
                        "{series} holds a window at {start} that does not read back: {e}"
                    ))
                })?;
                if !self.file(&window).exists() {
                    self.write_parquet(&window)?;
                }
                windows.push(window);
            }
        }
        Ok(windows)
    }

    /// Stores the checkpoint of the open windows (one entry, replaced each time).
    pub async fn save_open(&self, checkpoint: &[u8]) -> Result<(), TargetError> {
        let entry = [(0, checkpoint.to_vec())];
        Ok(self.store.put_series(&self.open_series(), &entry, 0).await?)
    }

    /// The checkpoint of the open windows, if one was stored.
    pub async fn load_open(&self) -> Result<Option<Vec<u8>>, TargetError> {
        let found = self.store.read_series(&self.open_series(), 0, 1).await?;
        Ok(found.into_iter().next().map(|(_, bytes)| bytes))
    }

    fn open_series(&self) -> String {
        format!("{}:_windows:open", self.set_prefix)
    }

    /// The stored windows of a width that start in `[from, to)`.
    pub async fn read(
        &self,
        width: i64,
        segment: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<ClosedWindow>, TargetError> {
        let series = self.series(width, segment);
        self.store
            .read_series(&series, from, to)
            .await?
            .into_iter()
            .map(|(start, bytes)| {
                serde_json::from_slice(&bytes).map_err(|e| TargetError::Encode(format!("{series} at {start}: {e}")))
            })
            .collect()
    }

    fn write_parquet(&self, window: &ClosedWindow) -> Result<(), TargetError> {
        let path = self.file(window);
        let batch = record_batch(&self.set, self.version, window)
            .map_err(|e| TargetError::Encode(format!("{}: {e}", path.display())))?;
        write_file(&path, &batch)
    }
}

/// A segment value as a folder name: letters, digits, `-`, `_`, `.`, `,`, `=` kept, the rest
/// `_`.
fn path_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.,=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One row per feature of a window (a segment's window has a `segment` column after
/// `version`; the whole set's files keep their columns); the last column names the reference
/// the window was judged by (`name@created`, null without one).
fn record_batch(set: &str, version: u32, window: &ClosedWindow) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = window.features.len();
    let time = |us: i64| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(vec![us; n]).with_timezone("UTC")) };
    let mut numbers: Vec<(String, Float64Builder)> = ["mean", "std", "p5", "p50", "p95"]
        .iter()
        .map(|c| (c.to_string(), Float64Builder::new()))
        .collect();
    numbers.extend(METRICS.iter().map(|m| (m.name().to_string(), Float64Builder::new())));
    numbers.extend(
        ["sudden_psi", "sudden_tvd"]
            .iter()
            .map(|c| (c.to_string(), Float64Builder::new())),
    );
    let (mut count, mut nulls) = (UInt64Builder::new(), UInt64Builder::new());
    let (mut top, mut verdict, mut status) = (StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
    let mut changed = BooleanBuilder::new();
    for f in window.features.values() {
        count.append_value(f.count);
        nulls.append_value(f.nulls);
        let summary = f.numeric.as_ref();
        let values = [
            summary.map(|s| s.mean),
            summary.map(|s| s.std),
            summary.and_then(|s| s.p5),
            summary.and_then(|s| s.p50),
            summary.and_then(|s| s.p95),
        ]
        .into_iter()
        .chain(METRICS.iter().map(|m| f.scores.get(m).copied()))
        .chain([f.sudden.get(&Metric::Psi).copied(), f.sudden.get(&Metric::Tvd).copied()]);
        for ((_, builder), value) in numbers.iter_mut().zip(values) {
            builder.append_option(value);
        }
        let top_json = (!f.top.is_empty()).then(|| serde_json::to_string(&f.top).unwrap_or_default());
        top.append_option(top_json);
        verdict.append_option(f.verdict.map(|v| v.name()));
        status.append_value(f.status.name());
        changed.append_value(f.changed);
    }
    let utc = Some("UTC".into());
    let mut fields = vec![
        Field::new("set", DataType::Utf8, false),
        Field::new("version", DataType::UInt32, false),
    ];
    fields.extend(
        window
            .segment
            .as_ref()
            .map(|_| Field::new("segment", DataType::Utf8, false)),
    );
    fields.extend([
        Field::new(
            "window_start",
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            false,
        ),
        Field::new("window_end", DataType::Timestamp(TimeUnit::Microsecond, utc), false),
        Field::new("window_seconds", DataType::Int64, false),
        Field::new("partial", DataType::Boolean, false),
        Field::new("feature", DataType::Utf8, false),
        Field::new("count", DataType::UInt64, false),
        Field::new("nulls", DataType::UInt64, false),
    ]);
    fields.extend(
        numbers
            .iter()
            .map(|(name, _)| Field::new(name, DataType::Float64, true)),
    );
    fields.extend([
        Field::new("top", DataType::Utf8, true),
        Field::new("verdict", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("changed", DataType::Boolean, false),
        Field::new("reference", DataType::Utf8, true),
    ]);
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![set; n])),
        Arc::new(UInt32Array::from(vec![version; n])),
    ];
    if let Some(segment) = &window.segment {
        columns.push(Arc::new(StringArray::from(vec![segment.as_str(); n])));
    }
    columns.extend([
        time(window.start),
        time(window.end),
        Arc::new(Int64Array::from(vec![window.width() / 1_000_000; n])),
        Arc::new(arrow_array::BooleanArray::from(vec![window.partial; n])),
        Arc::new(StringArray::from(
            window.features.keys().map(String::as_str).collect::<Vec<_>>(),
        )),
        Arc::new(count.finish()),
        Arc::new(nulls.finish()),
    ]);
    columns.extend(numbers.into_iter().map(|(_, mut b)| Arc::new(b.finish()) as ArrayRef));
    columns.extend([
        Arc::new(top.finish()) as ArrayRef,
        Arc::new(verdict.finish()),
        Arc::new(status.finish()),
        Arc::new(changed.finish()),
        Arc::new(StringArray::from(vec![window.reference.as_deref(); n])),
    ]);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
