//! The offline writer: reads the stream target with its own durable consumer and commits
//! Parquet part files, `<root>/<set>/v<version>/date=YYYY-MM-DD/part-<first>-<last>.parquet`
//! (written to a temporary name, fsynced, renamed, folder fsynced) before acknowledging.
//!
//! Exactly once: a part's range `[first, last]` claims every row of its date with a sequence in
//! that range (the writer has read the stream through `last` when it commits). At start the
//! writer loads the ranges of the files on disk and skips rows they claim, so neither a
//! redelivery nor a replay beyond JetStream's duplicate window writes a row twice.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use time::OffsetDateTime;

use super::TargetError;
use crate::event::json_text;
use crate::event::Value;
use crate::fault::FileError;
use crate::rows::Rows;

/// Rows waiting to be committed, over the union of their fields.
#[derive(Default)]
pub struct Pending {
    fields: Vec<String>,
    rows: Vec<(u64, String, i64, Vec<Value>)>,
}

impl Pending {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// A row's value of a field; null for a field that appeared after the row was added.
    fn value(&self, row: usize, field: usize) -> &Value {
        self.rows[row].3.get(field).unwrap_or(&Value::Null)
    }

    fn add(&mut self, rows: Rows, committed: &Committed) -> usize {
        let map: Vec<usize> = rows
            .batch
            .fields
            .iter()
            .map(|f| {
                self.fields.iter().position(|g| g == f).unwrap_or_else(|| {
                    self.fields.push(f.clone());
                    self.fields.len() - 1
                })
            })
            .collect();
        let mut skipped = 0;
        for (event, seq) in rows.batch.events.into_iter().zip(rows.seqs) {
            if committed.contains(&date_of(event.time), seq) || self.rows.last().is_some_and(|r| r.0 >= seq) {
                skipped += 1;
                continue;
            }
            let mut values = vec![Value::Null; self.fields.len()];
            for (value, &to) in event.values.into_iter().zip(&map) {
                values[to] = value;
            }
            self.rows.push((seq, event.key, event.time, values));
        }
        skipped
    }
}

/// The part files already on disk: per date, the sequence ranges they claim.
#[derive(Debug, Default)]
pub struct Committed {
    ranges: HashMap<String, Vec<(u64, u64)>>,
}

impl Committed {
    /// Reads the ranges from the file names under a feature set version's folder.
    pub fn load(dir: &Path) -> Result<Self, TargetError> {
        let mut committed = Committed::default();
        let Ok(dates) = fs::read_dir(dir) else {
            return Ok(committed);
        };
        for date in dates.flatten() {
            let name = date.file_name().to_string_lossy().into_owned();
            let Some(day) = name.strip_prefix("date=") else {
                continue;
            };
            for part in fs::read_dir(date.path())
                .map_err(|e| file_error(&date.path(), e))?
                .flatten()
            {
                if let Some(range) = parse_part(&part.file_name().to_string_lossy()) {
                    committed.ranges.entry(day.to_string()).or_default().push(range);
                }
            }
        }
        Ok(committed)
    }

    /// Whether a row of this date and sequence is already in a part file.
    pub fn contains(&self, date: &str, seq: u64) -> bool {
        self.ranges
            .get(date)
            .is_some_and(|r| r.iter().any(|(a, b)| (*a..=*b).contains(&seq)))
    }

    /// The highest sequence committed.
    pub fn last(&self) -> u64 {
        self.ranges.values().flatten().map(|r| r.1).max().unwrap_or(0)
    }
}

fn parse_part(name: &str) -> Option<(u64, u64)> {
    let range = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The UTC date of a time (µs), `YYYY-MM-DD`.
pub fn date_of(ts_us: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_us) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> TargetError {
    TargetError::File(FileError::unwritable(path, e))
}

/// Writes the part files of one feature set version.
pub struct PartWriter {
    dir: PathBuf,
    committed: Committed,
    pending: Pending,
    started: Option<Instant>,
    /// Column types known from the config (aggregates), used when a part's values do not
    /// tell (all null) or would narrow them (only integers in a float column).
    types: HashMap<String, DataType>,
}

impl PartWriter {
    /// A writer under `<root>/<set>/v<version>`, resuming from the files there.
    pub fn open(root: &Path, set: &str, version: u32) -> Result<Self, TargetError> {
        let dir = root.join(set).join(format!("v{version}"));
        fs::create_dir_all(&dir).map_err(|e| file_error(&dir, e))?;
        let committed = Committed::load(&dir)?;
        Ok(PartWriter {
            dir,
            committed,
            pending: Pending::default(),
            started: None,
            types: HashMap::new(),
        })
    }

    /// Declares the types of some columns.
    pub fn with_types(mut self, types: HashMap<String, DataType>) -> Self {
        self.types = types;
        self
    }

    /// The folder of this feature set version.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The highest committed input sequence.
    pub fn last_committed(&self) -> u64 {
        self.committed.last()
    }

    /// Adds rows (those already committed are skipped); returns how many were skipped.
    pub fn add(&mut self, rows: Rows) -> usize {
        if self.pending.is_empty() {
            self.started = Some(Instant::now());
        }
        self.pending.add(rows, &self.committed)
    }

    /// Rows waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether the pending rows should be committed now.
    pub fn due(&self, roll_rows: usize, roll: Duration) -> bool {
        !self.pending.is_empty()
            && (self.pending.len() >= roll_rows || self.started.is_some_and(|s| s.elapsed() >= roll))
    }

    /// Writes the pending rows as one part file per date; returns the files written. On an
    /// error the rows stay pending (a retry rewrites the same files, same names, same rows).
    pub fn commit(&mut self) -> Result<Vec<PathBuf>, TargetError> {
        let pending = &self.pending;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let first = pending.rows.first().map_or(0, |r| r.0);
        let last = pending.rows.last().map_or(0, |r| r.0);
        let mut by_date: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, row) in pending.rows.iter().enumerate() {
            by_date.entry(date_of(row.2)).or_default().push(i);
        }
        let mut written = Vec::new();
        for (date, rows) in &by_date {
            let folder = self.dir.join(format!("date={date}"));
            fs::create_dir_all(&folder).map_err(|e| file_error(&folder, e))?;
            let path = folder.join(format!("part-{first:020}-{last:020}.parquet"));
            write_part(&path, pending, rows, &self.types)?;
            written.push((date.clone(), path));
        }
        self.pending = Pending::default();
        let mut files = Vec::new();
        for (date, path) in written {
            self.committed.ranges.entry(date).or_default().push((first, last));
            files.push(path);
        }
        Ok(files)
    }
}

/// Writes one part file.
fn write_part(
    path: &Path,
    pending: &Pending,
    rows: &[usize],
    types: &HashMap<String, DataType>,
) -> Result<(), TargetError> {
    let batch =
        record_batch(pending, rows, types).map_err(|e| TargetError::Encode(format!("{}: {e}", path.display())))?;
    write_file(path, &batch)
}

/// Writes one Parquet file: temporary name, fsync, rename, fsync of the folder (created when
/// missing). Written again, the file is replaced whole.
pub fn write_file(path: &Path, batch: &RecordBatch) -> Result<(), TargetError> {
    if let Some(folder) = path.parent() {
        fs::create_dir_all(folder).map_err(|e| file_error(folder, e))?;
    }
    let tmp = path.with_extension("parquet.tmp");
    let file = fs::File::create(&tmp).map_err(|e| file_error(&tmp, e))?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| file_error(&tmp, e))?;
    writer.write(batch).map_err(|e| file_error(&tmp, e))?;
    let file = writer.into_inner().map_err(|e| file_error(&tmp, e))?;
    file.sync_all().map_err(|e| file_error(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| file_error(path, e))?;
    if let Some(folder) = path.parent() {
        fs::File::open(folder)
            .and_then(|f| f.sync_all())
            .map_err(|e| file_error(folder, e))?;
    }
    Ok(())
}

fn column_type(pending: &Pending, rows: &[usize], field: usize) -> DataType {
    value_type(rows.iter().map(|&r| pending.value(r, field)))
}

fn column(pending: &Pending, rows: &[usize], field: usize, kind: &DataType) -> ArrayRef {
    value_column(rows.iter().map(|&r| pending.value(r, field)), kind)
}

/// The column type of some values: one kind (integers and floats make floats; a list of
/// floats, an embedding, makes `list<double>`), or text holding JSON when kinds are mixed or
/// all values are null. Every Parquet file Sluice writes (feature rows, training sets) types
/// its columns by this rule.
pub fn value_type<'a>(values: impl Iterator<Item = &'a Value>) -> DataType {
    let mut kind: Option<DataType> = None;
    for value in values {
        let this = match value {
            Value::Null => continue,
            Value::Boolean(_) => DataType::Boolean,
            Value::Integer(_) => DataType::Int64,
            Value::Float(_) => DataType::Float64,
            Value::Text(_) | Value::Json(_) => DataType::Utf8,
            Value::Bytes(_) => DataType::Binary,
            Value::Floats(_) => DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
        };
        kind = Some(match (kind, this) {
            (None, t) => t,
            (Some(a), b) if a == b => a,
            (Some(DataType::Int64), DataType::Float64) | (Some(DataType::Float64), DataType::Int64) => {
                DataType::Float64
            }
            _ => return DataType::Utf8,
        });
    }
    kind.unwrap_or(DataType::Utf8)
}

/// The column of `kind` ([`value_type`]) holding some values; a value of another kind is null.
pub fn value_column<'a>(values: impl Iterator<Item = &'a Value>, kind: &DataType) -> ArrayRef {
    match kind {
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            values.for_each(|v| b.append_option(if let Value::Boolean(x) = v { Some(*x) } else { None }));
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            values.for_each(|v| b.append_option(if let Value::Integer(x) = v { Some(*x) } else { None }));
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::new();
            values.for_each(|v| {
                b.append_option(match v {
                    Value::Float(x) => Some(*x),
                    Value::Integer(x) => Some(*x as f64),
                    _ => None,
                })
            });
            Arc::new(b.finish())
        }
        DataType::Binary => {
            let mut b = BinaryBuilder::new();
            values.for_each(|v| b.append_option(if let Value::Bytes(x) = v { Some(x) } else { None }));
            Arc::new(b.finish())
        }
        DataType::List(_) => {
            let mut b = ListBuilder::new(Float64Builder::new());
            values.for_each(|v| match v {
                Value::Floats(x) => {
                    b.values().append_slice(x);
                    b.append(true);
                }
                _ => b.append(false),
            });
            Arc::new(b.finish())
        }
        _ => {
            let mut b = StringBuilder::new();
            values.for_each(|v| match v {
                Value::Null => b.append_null(),
                Value::Text(s) | Value::Json(s) => b.append_value(s),
                other => b.append_value(json_text(other)),
            });
            Arc::new(b.finish())
        }
    }
}

fn record_batch(
    pending: &Pending,
    rows: &[usize],
    types: &HashMap<String, DataType>,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut fields = vec![
        Field::new("_seq", DataType::UInt64, false),
        Field::new("_key", DataType::Utf8, false),
        Field::new(
            "_ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|&r| pending.rows[r].0))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|&r| pending.rows[r].1.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|&r| pending.rows[r].2)).with_timezone("UTC"),
        ),
    ];
    for (i, name) in pending.fields.iter().enumerate() {
        let seen = column_type(pending, rows, i);
        let kind = match (types.get(name), &seen) {
            // All null (text by default), or integers in a float column: the declared type.
            (Some(declared @ (DataType::Float64 | DataType::Int64)), DataType::Utf8)
                if rows.iter().all(|&r| matches!(pending.value(r, i), Value::Null)) =>
            {
                declared.clone()
            }
            (Some(DataType::Float64), DataType::Int64) => DataType::Float64,
            _ => seen,
        };
        columns.push(column(pending, rows, i, &kind));
        fields.push(Field::new(name, kind, true));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn rows(seqs: &[u64], day: i64) -> Rows {
        let mut rows = Rows::new(vec!["amount".into(), "country".into()]);
        for &s in seqs {
            rows.push(
                s,
                Event {
                    key: format!("u{s}"),
                    time: day * 86_400_000_000 + s as i64,
                    values: vec![Value::Float(s as f64), Value::Text("US".into())],
                },
            );
        }
        rows
    }

    #[test]
    fn a_field_that_appears_later_is_null_in_earlier_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = PartWriter::open(dir.path(), "tx", 1).unwrap();
        writer.add(rows(&[1], 20000));
        let mut later = Rows::new(vec!["amount".into(), "country".into(), "extra".into()]);
        later.push(
            2,
            Event {
                key: "u2".into(),
                time: 20000 * 86_400_000_000,
                values: vec![Value::Float(2.0), Value::Null, Value::Integer(7)],
            },
        );
        writer.add(later);
        let files = writer.commit().unwrap();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn declared_types_hold_when_a_part_has_only_nulls_or_only_integers() {
        let dir = tempfile::tempdir().unwrap();
        let types = HashMap::from([
            ("sd".to_string(), DataType::Float64),
            ("mean".to_string(), DataType::Float64),
            ("n".to_string(), DataType::Int64),
        ]);
        let mut writer = PartWriter::open(dir.path(), "tx", 1).unwrap().with_types(types);
        let mut rows = Rows::new(vec!["sd".into(), "mean".into(), "n".into(), "other".into()]);
        rows.push(
            1,
            Event {
                key: "u".into(),
                time: 0,
                values: vec![Value::Null, Value::Integer(3), Value::Null, Value::Null],
            },
        );
        writer.add(rows);
        let files = writer.commit().unwrap();
        let file = fs::File::open(&files[0]).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let schema = reader.schema();
        let kind = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
        assert_eq!(kind("sd"), DataType::Float64, "all null: the declared type");
        assert_eq!(kind("mean"), DataType::Float64, "integers in a float column");
        assert_eq!(kind("n"), DataType::Int64);
        assert_eq!(kind("other"), DataType::Utf8, "undeclared and all null: text");
    }

    #[test]
    fn parts_are_named_by_range_per_date_and_a_reopened_writer_skips_committed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = PartWriter::open(dir.path(), "tx", 1).unwrap();
        writer.add(rows(&[1, 2], 20000));
        writer.add(rows(&[3], 20001));
        let files = writer.commit().unwrap();
        assert_eq!(files.len(), 2);
        assert!(
            files[0].ends_with("date=2024-10-04/part-00000000000000000001-00000000000000000003.parquet"),
            "{files:?}"
        );
        let mut reopened = PartWriter::open(dir.path(), "tx", 1).unwrap();
        assert_eq!(reopened.last_committed(), 3);
        assert_eq!(
            reopened.add(rows(&[2, 3, 4], 20000)),
            2,
            "rows 2 and 3 already committed"
        );
        assert_eq!(reopened.pending(), 1);
    }
}
