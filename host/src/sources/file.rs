//! The file source: JSON lines, CSV or Parquet, read once in batches. Each event becomes the
//! JSON object the decoder takes (so a file event is validated and dead-lettered exactly like
//! a JetStream one); its line (JSONL, CSV) or row (Parquet) number, from 1, is its sequence.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use serde_json::{Map, Value as Json};

use crate::config::FileFormat;
use crate::targets::TargetError;

/// The format a file's extension implies.
pub fn format_of(path: &Path) -> Option<FileFormat> {
    match path.extension()?.to_str()? {
        "jsonl" | "json" | "ndjson" => Some(FileFormat::Jsonl),
        "csv" => Some(FileFormat::Csv),
        "parquet" => Some(FileFormat::Parquet),
        _ => None,
    }
}

/// Reads a file's events in batches of (sequence, JSON bytes).
pub struct FileSource {
    rows: Box<dyn Iterator<Item = Result<(u64, Bytes), TargetError>> + Send>,
    batch: usize,
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> TargetError {
    TargetError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl FileSource {
    /// Opens a file.
    pub fn open(path: &Path, format: Option<FileFormat>, batch: usize) -> Result<Self, TargetError> {
        let format = format
            .or_else(|| format_of(path))
            .ok_or_else(|| file_error(path, "unknown format"))?;
        let file = File::open(path).map_err(|e| file_error(path, e))?;
        let at = path.to_path_buf();
        let rows: Box<dyn Iterator<Item = _> + Send> = match format {
            FileFormat::Jsonl => {
                Box::new(
                    BufReader::new(file)
                        .lines()
                        .enumerate()
                        .filter_map(move |(i, line)| match line {
                            Ok(line) if line.trim().is_empty() => None,
                            Ok(line) => Some(Ok((i as u64 + 1, Bytes::from(line)))),
                            Err(e) => Some(Err(file_error(&at, e))),
                        }),
                )
            }
            FileFormat::Csv => {
                let mut reader = csv::Reader::from_reader(file);
                let header: Vec<String> = reader
                    .headers()
                    .map_err(|e| file_error(path, e))?
                    .iter()
                    .map(str::to_string)
                    .collect();
                Box::new(reader.into_records().enumerate().map(move |(i, record)| {
                    let record = record.map_err(|e| file_error(&at, e))?;
                    let object: Map<String, Json> = header.iter().cloned().zip(record.iter().map(csv_value)).collect();
                    Ok((
                        i as u64 + 2,
                        Bytes::from(serde_json::to_vec(&object).unwrap_or_default()),
                    ))
                }))
            }
            FileFormat::Parquet => {
                let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .and_then(|b| b.build())
                    .map_err(|e| file_error(path, e))?;
                let mut next = 0u64;
                Box::new(reader.flat_map(move |batch| {
                    let rows: Vec<Result<(u64, Bytes), TargetError>> = match batch {
                        Ok(batch) => parquet_rows(&batch)
                            .into_iter()
                            .map(|object| {
                                next += 1;
                                Ok((next, Bytes::from(serde_json::to_vec(&object).unwrap_or_default())))
                            })
                            .collect(),
                        Err(e) => vec![Err(file_error(&at, e))],
                    };
                    rows
                }))
            }
        };
        Ok(FileSource {
            rows,
            batch: batch.max(1),
        })
    }

    /// The next batch; empty at the end of the file.
    pub fn next_batch(&mut self) -> Result<Vec<(u64, Bytes)>, TargetError> {
        let mut batch = Vec::with_capacity(self.batch);
        for row in self.rows.by_ref() {
            batch.push(row?);
            if batch.len() == self.batch {
                break;
            }
        }
        Ok(batch)
    }
}

/// A CSV cell: empty is null; integers, floats and true/false are recognised; else text.
fn csv_value(cell: &str) -> Json {
    if cell.is_empty() {
        Json::Null
    } else if let Ok(i) = cell.parse::<i64>() {
        Json::from(i)
    } else if let Some(f) = cell.parse::<f64>().ok().filter(|f| f.is_finite()) {
        Json::from(f)
    } else if cell == "true" || cell == "false" {
        Json::Bool(cell == "true")
    } else {
        Json::String(cell.to_string())
    }
}

/// The rows of a record batch as JSON objects (timestamps as epoch microseconds).
fn parquet_rows(batch: &RecordBatch) -> Vec<Map<String, Json>> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|r| {
            schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(field, column)| (field.name().clone(), cell(column.as_ref(), r)))
                .collect()
        })
        .collect()
}

/// One cell of an Arrow column as JSON (timestamps as epoch microseconds).
pub(crate) fn cell(column: &dyn Array, r: usize) -> Json {
    if column.is_null(r) {
        return Json::Null;
    }
    match column.data_type() {
        DataType::Boolean => Json::Bool(column.as_boolean().value(r)),
        DataType::Int32 => Json::from(column.as_primitive::<Int32Type>().value(r)),
        DataType::Int64 => Json::from(column.as_primitive::<Int64Type>().value(r)),
        DataType::UInt64 => Json::from(column.as_primitive::<UInt64Type>().value(r)),
        DataType::Float32 => Json::from(column.as_primitive::<Float32Type>().value(r) as f64),
        DataType::Float64 => Json::from(column.as_primitive::<Float64Type>().value(r)),
        DataType::Utf8 => Json::String(column.as_string::<i32>().value(r).to_string()),
        DataType::LargeUtf8 => Json::String(column.as_string::<i64>().value(r).to_string()),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Json::from(column.as_primitive::<TimestampMicrosecondType>().value(r))
        }
        other => Json::String(format!("unsupported Parquet type {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
