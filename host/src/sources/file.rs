//! The file source: JSON lines, CSV or Parquet, read once in batches. Each event becomes the
//! JSON object the decoder takes (so a file event is validated and dead-lettered exactly like
//! a JetStream one); its line (JSONL, CSV) or row (Parquet) number, from 1, is its sequence.
//!
//! Parquet columns are read by their logical type, a record batch at a time (memory is one
//! batch, not the file): integers, floats, decimals (as numbers), booleans, text (plain,
//! large, view or dictionary-encoded), timestamps of every unit and dates (as RFC 3339 text
//! in UTC; a time without a zone in its type is a wall-clock time in the feature set's zone),
//! lists (as arrays) and structs (as objects), nulls in any of them. The event-time column of a
//! set that declares an epoch unit is given in that unit (as its JSON events carry it), so a
//! Parquet file and its JSON-lines twin give the same rows. A column of another type is
//! refused when the file is opened, naming the column and its type.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use bytes::Bytes;
use jiff::tz::TimeZone;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::arrow_json::{key_of, readable, write_cell, write_epoch, write_json};
use crate::config::FileFormat;
use crate::event_time::TimeReader;
use crate::fault::FileError;

/// The format a file's extension implies.
pub fn format_of(path: &Path) -> Option<FileFormat> {
    FileFormat::of(path)
}

/// Reads a file's events in batches of (line or row number, JSON bytes).
pub struct FileSource {
    path: PathBuf,
    reader: Reader,
    batch: usize,
    zone: TimeZone,
    /// The event-time column and the nanoseconds of its declared epoch unit.
    epoch: Option<(usize, i64)>,
    /// Where a CSV or Parquet row is written before it is copied out at its exact size (an
    /// event held for sorting costs its length, not a guessed capacity).
    buffer: Vec<u8>,
}

enum Reader {
    Jsonl {
        lines: BufReader<File>,
        /// Lines read so far.
        line: u64,
    },
    Csv {
        records: csv::StringRecordsIntoIter<File>,
        /// `"name":` of each column, escaped once.
        keys: Vec<Vec<u8>>,
        columns: Vec<String>,
    },
    Parquet(ParquetRows),
}

struct ParquetRows {
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    /// Next row of `batch`.
    row: usize,
    /// Rows given so far.
    rows: u64,
    keys: Vec<Vec<u8>>,
    schema: std::sync::Arc<Schema>,
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> FileError {
    FileError::unreadable(path, e)
}

impl FileSource {
    /// Opens a file; a Parquet column of a type Sluice cannot read is refused here, by name.
    pub fn open(path: &Path, format: Option<FileFormat>, batch: usize) -> Result<Self, FileError> {
        let format = format.or_else(|| format_of(path)).ok_or_else(|| {
            file_error(
                path,
                "unknown format: expected .jsonl, .json, .ndjson, .csv or .parquet",
            )
        })?;
        let file = File::open(path).map_err(|e| file_error(path, e))?;
        let reader = match format {
            FileFormat::Jsonl => Reader::Jsonl {
                lines: BufReader::with_capacity(256 * 1024, file),
                line: 0,
            },
            FileFormat::Csv => {
                let mut reader = csv::Reader::from_reader(file);
                let columns: Vec<String> = reader
                    .headers()
                    .map_err(|e| file_error(path, e))?
                    .iter()
                    .map(str::to_string)
                    .collect();
                Reader::Csv {
                    records: reader.into_records(),
                    keys: columns.iter().map(|c| key_of(c)).collect(),
                    columns,
                }
            }
            FileFormat::Parquet => {
                let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| file_error(path, e))?;
                let schema = builder.schema().clone();
                let refused: Vec<String> = schema
                    .fields()
                    .iter()
                    .filter(|f| !readable(f.data_type()))
                    .map(|f| format!("column \"{}\" has type {}", f.name(), f.data_type()))
                    .collect();
                if !refused.is_empty() {
                    return Err(file_error(
                        path,
                        format!(
                            "{}, which Sluice cannot read (it reads booleans, integers, floats, decimals, text, \
                             timestamps, dates, and lists or structs of those): cast or drop the column",
                            refused.join("; ")
                        ),
                    ));
                }
                let reader = builder
                    .with_batch_size(batch.clamp(1, 8192))
                    .build()
                    .map_err(|e| file_error(path, e))?;
                Reader::Parquet(ParquetRows {
                    reader,
                    batch: None,
                    row: 0,
                    rows: 0,
                    keys: schema.fields().iter().map(|f| key_of(f.name())).collect(),
                    schema,
                })
            }
        };
        Ok(FileSource {
            path: path.to_path_buf(),
            reader,
            batch: batch.max(1),
            zone: TimeZone::UTC,
            epoch: None,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Reads typed times as the feature set does: timestamps without a zone (and dates) are
    /// wall-clock times in its zone, and its event-time `field`, when it declares an epoch
    /// unit, is given as a number of that unit.
    pub fn reading_times(mut self, reader: &TimeReader, field: &str) -> Self {
        self.zone = reader.zone().clone();
        if let (Reader::Parquet(rows), Some(unit)) = (&self.reader, reader.format().unit_nanos()) {
            self.epoch = rows.schema.index_of(field).ok().map(|at| (at, unit as i64));
        }
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What a sequence counts: `line` (JSONL, CSV) or `row` (Parquet).
    pub fn unit(&self) -> &'static str {
        match self.reader {
            Reader::Parquet(_) => "row",
            _ => "line",
        }
    }

    /// Checks that a CSV header or Parquet schema has these columns (JSON lines are checked
    /// event by event); the error lists the columns the file has.
    pub fn require(&self, fields: &[&str]) -> Result<(), FileError> {
        let columns: Vec<&str> = match &self.reader {
            Reader::Jsonl { .. } => return Ok(()),
            Reader::Csv { columns, .. } => columns.iter().map(String::as_str).collect(),
            Reader::Parquet(p) => p.schema.fields().iter().map(|f| f.name().as_str()).collect(),
        };
        let missing: Vec<&str> = fields.iter().copied().filter(|f| !columns.contains(f)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(file_error(
            &self.path,
            format!(
                "no column {} (the feature set's entity and event time fields); the file has: {}",
                missing
                    .iter()
                    .map(|m| format!("\"{m}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                columns.join(", ")
            ),
        ))
    }

    /// The next batch; empty at the end of the file.
    pub fn next_batch(&mut self) -> Result<Vec<(u64, Bytes)>, FileError> {
        let mut batch = Vec::with_capacity(self.batch);
        let path = &self.path;
        let out = &mut self.buffer;
        match &mut self.reader {
            Reader::Jsonl { lines, line } => {
                while batch.len() < self.batch {
                    out.clear();
                    if lines.read_until(b'\n', out).map_err(|e| file_error(path, e))? == 0 {
                        break;
                    }
                    *line += 1;
                    let text = out.trim_ascii();
                    if !text.is_empty() {
                        batch.push((*line, Bytes::copy_from_slice(text)));
                    }
                }
            }
            Reader::Csv { records, keys, .. } => {
                for record in records.by_ref() {
                    let record = record.map_err(|e| file_error(path, e))?;
                    let line = record.position().map_or(0, |p| p.line());
                    out.clear();
                    out.push(b'{');
                    for (i, (key, cell)) in keys.iter().zip(record.iter()).enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(key);
                        csv_value(out, cell);
                    }
                    out.push(b'}');
                    batch.push((line, Bytes::copy_from_slice(out)));
                    if batch.len() == self.batch {
                        break;
                    }
                }
            }
            Reader::Parquet(rows) => {
                while batch.len() < self.batch && rows.ready(path)? {
                    let Some(record) = &rows.batch else { break };
                    out.clear();
                    out.push(b'{');
                    for (i, (key, column)) in rows.keys.iter().zip(record.columns()).enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(key);
                        match self.epoch {
                            Some((at, unit)) if at == i => {
                                write_epoch(out, column.as_ref(), rows.row, unit, &self.zone)
                            }
                            _ => write_cell(out, column.as_ref(), rows.row, &self.zone),
                        }
                    }
                    out.push(b'}');
                    rows.row += 1;
                    rows.rows += 1;
                    batch.push((rows.rows, Bytes::copy_from_slice(out)));
                }
            }
        }
        Ok(batch)
    }
}

impl ParquetRows {
    /// Whether `batch` holds a next row (the next record batch is read when the last one is
    /// used up); false at the end of the file.
    fn ready(&mut self, path: &Path) -> Result<bool, FileError> {
        loop {
            if self.batch.as_ref().is_some_and(|b| self.row < b.num_rows()) {
                return Ok(true);
            }
            match self.reader.next() {
                None => return Ok(false),
                Some(batch) => {
                    self.batch = Some(batch.map_err(|e| file_error(path, e))?);
                    self.row = 0;
                }
            }
        }
    }
}

/// A CSV cell as JSON: empty is null; integers, floats and true/false are recognised; else
/// text.
fn csv_value(out: &mut Vec<u8>, cell: &str) {
    if cell.is_empty() {
        out.extend_from_slice(b"null");
    } else if let Ok(i) = cell.parse::<i64>() {
        write_json(out, &i);
    } else if let Some(f) = cell.parse::<f64>().ok().filter(|f| f.is_finite()) {
        write_json(out, &f);
    } else if cell == "true" || cell == "false" {
        out.extend_from_slice(cell.as_bytes());
    } else {
        write_json(out, cell);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringDictionaryBuilder};
    use arrow_array::types::Int32Type;
    use arrow_array::{
        ArrayRef, BinaryArray, Date32Array, Decimal128Array, Int64Array, TimestampMillisecondArray,
        TimestampNanosecondArray, TimestampSecondArray,
    };

    use super::*;
    use crate::event_time::TimeFormat;

    #[test]
    fn csv_cells_get_their_types_and_lines_their_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.csv");
        std::fs::write(&path, "user_id,amount,ok,note\nu1,2.5,true,\nu2,3,false,hi\n").unwrap();
        let mut source = FileSource::open(&path, None, 10).unwrap();
        let batch = source.next_batch().unwrap();
        assert_eq!(batch[0].0, 2);
        assert_eq!(
            &batch[0].1[..],
            br#"{"user_id":"u1","amount":2.5,"ok":true,"note":null}"#
        );
        assert_eq!(
            &batch[1].1[..],
            br#"{"user_id":"u2","amount":3,"ok":false,"note":"hi"}"#
        );
        assert!(source.next_batch().unwrap().is_empty());
        assert!(source
            .require(&["user_id", "ts"])
            .unwrap_err()
            .to_string()
            .contains("no column \"ts\""));
    }

    fn write(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    fn rows(path: &Path, reader: TimeReader) -> Vec<serde_json::Value> {
        let mut source = FileSource::open(path, None, 2).unwrap().reading_times(&reader, "ms");
        let mut all = Vec::new();
        loop {
            let batch = source.next_batch().unwrap();
            if batch.is_empty() {
                return all;
            }
            for (i, (seq, bytes)) in batch.into_iter().enumerate() {
                assert_eq!(seq as usize, all.len() + 1, "row {i}");
                all.push(serde_json::from_slice(&bytes).unwrap());
            }
        }
    }

    #[test]
    fn parquet_columns_are_read_by_their_logical_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut tags = StringDictionaryBuilder::<Int32Type>::new();
        tags.append_value("a");
        tags.append_null();
        tags.append_value("a");
        let mut lists = ListBuilder::new(arrow_array::builder::Float64Builder::new());
        lists.append_value([Some(1.0), Some(2.5)]);
        lists.append_null();
        lists.append_value([]);
        write(
            &path,
            vec![
                (
                    "s",
                    Arc::new(TimestampSecondArray::from(vec![Some(1_704_067_200), None, Some(0)])) as ArrayRef,
                ),
                (
                    "ms",
                    Arc::new(TimestampMillisecondArray::from(vec![1_704_067_200_123, 0, -1]).with_timezone("+02:00")),
                ),
                (
                    "ns",
                    Arc::new(
                        TimestampNanosecondArray::from(vec![1_704_067_200_000_000_001, 0, 0]).with_timezone("UTC"),
                    ),
                ),
                ("d", Arc::new(Date32Array::from(vec![19_723, 0, -1]))),
                (
                    "price",
                    Arc::new(
                        Decimal128Array::from(vec![Some(12_345), Some(-5), None])
                            .with_precision_and_scale(10, 2)
                            .unwrap(),
                    ),
                ),
                ("tag", Arc::new(tags.finish())),
                ("v", Arc::new(lists.finish())),
                ("n", Arc::new(Int64Array::from(vec![Some(1), None, Some(-3)]))),
            ],
        );
        let got = rows(&path, TimeReader::utc(TimeFormat::Auto));
        assert_eq!(
            got[0],
            serde_json::json!({"s": "2024-01-01T00:00:00Z", "ms": "2024-01-01T00:00:00.123Z",
                "ns": "2024-01-01T00:00:00.000000001Z", "d": "2024-01-01T00:00:00Z", "price": 123.45,
                "tag": "a", "v": [1.0, 2.5], "n": 1})
        );
        assert_eq!(
            got[1],
            serde_json::json!({"s": null, "ms": "1970-01-01T00:00:00Z", "ns": "1970-01-01T00:00:00Z",
                "d": "1970-01-01T00:00:00Z", "price": -0.05, "tag": null, "v": null, "n": null})
        );
        assert_eq!(got[2]["ms"], "1969-12-31T23:59:59.999Z");
        assert_eq!(got[2]["d"], "1969-12-31T00:00:00Z");
        assert_eq!(got[2]["v"], serde_json::json!([]));
        // Zone-less times (and dates) are wall-clock times in the set's zone; zoned ones are not.
        let paris = rows(&path, TimeReader::new(TimeFormat::Auto, Some("Europe/Paris")).unwrap());
        assert_eq!(paris[0]["s"], "2023-12-31T23:00:00Z");
        assert_eq!(paris[0]["d"], "2023-12-31T23:00:00Z");
        assert_eq!(paris[0]["ms"], got[0]["ms"]);
        // The event-time column of a set with an epoch unit comes in that unit.
        let epoch = rows(&path, TimeReader::utc(TimeFormat::EpochMs));
        assert_eq!(epoch[0]["ms"], 1_704_067_200_123i64);
        assert_eq!(epoch[2]["ms"], -1);
        assert_eq!(epoch[0]["s"], got[0]["s"]);
    }

    #[test]
    fn a_column_of_an_unreadable_type_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.parquet");
        write(
            &path,
            vec![
                ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
                ("raw", Arc::new(BinaryArray::from(vec![&b"x"[..]]))),
            ],
        );
        let error = FileSource::open(&path, None, 10).err().unwrap().to_string();
        assert!(error.contains("column \"raw\" has type Binary"), "{error}");
    }
}
