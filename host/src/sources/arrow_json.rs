//! Arrow cells written as JSON, by their logical type: what the file source hands the decoder
//! for a Parquet row (see [`super::file`] for the mapping).

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::Array;
use arrow_schema::{DataType, TimeUnit};
use jiff::tz::TimeZone;

use crate::event_time::typed_instant;

/// `"name":`, escaped.
pub(crate) fn key_of(name: &str) -> Vec<u8> {
    let mut key = serde_json::to_vec(name).unwrap_or_default();
    key.push(b':');
    key
}

pub(crate) fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a Vec cannot fail; a non-finite float is written as null.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Whether the file source reads a column of this type.
pub(crate) fn readable(data_type: &DataType) -> bool {
    use DataType::*;
    match data_type {
        Null | Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16 | Float32
        | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) | Utf8 | LargeUtf8 | Utf8View
        | Timestamp(..) | Date32 | Date64 => true,
        List(item) | LargeList(item) | FixedSizeList(item, _) => readable(item.data_type()),
        Struct(fields) => fields.iter().all(|f| readable(f.data_type())),
        Dictionary(key, value) => key.is_dictionary_key_type() && readable(value),
        _ => false,
    }
}

fn unit_nanos(unit: &TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// Writes one cell of an Arrow column (of a [`readable`] type) as JSON.
pub(crate) fn write_cell(out: &mut Vec<u8>, column: &dyn Array, r: usize, zone: &TimeZone) {
    if column.is_null(r) {
        out.extend_from_slice(b"null");
        return;
    }
    macro_rules! number {
        ($t:ty) => {
            write_json(out, &column.as_primitive::<$t>().value(r))
        };
    }
    macro_rules! decimal {
        ($t:ty, $p:expr, $s:expr) => {{
            // The decimal's own digits are a JSON number: read as the nearest float (or an
            // integer at scale 0), as pandas' float() of the Decimal gives.
            let text = <$t>::format_decimal(column.as_primitive::<$t>().value(r), *$p, *$s);
            out.extend_from_slice(text.as_bytes());
        }};
    }
    match column.data_type() {
        DataType::Null => out.extend_from_slice(b"null"),
        DataType::Boolean => write_json(out, &column.as_boolean().value(r)),
        DataType::Int8 => number!(Int8Type),
        DataType::Int16 => number!(Int16Type),
        DataType::Int32 => number!(Int32Type),
        DataType::Int64 => number!(Int64Type),
        DataType::UInt8 => number!(UInt8Type),
        DataType::UInt16 => number!(UInt16Type),
        DataType::UInt32 => number!(UInt32Type),
        DataType::UInt64 => number!(UInt64Type),
        DataType::Float16 => write_json(out, &column.as_primitive::<Float16Type>().value(r).to_f64()),
        DataType::Float32 => write_json(out, &(column.as_primitive::<Float32Type>().value(r) as f64)),
        DataType::Float64 => number!(Float64Type),
        DataType::Decimal32(p, s) => decimal!(Decimal32Type, p, s),
        DataType::Decimal64(p, s) => decimal!(Decimal64Type, p, s),
        DataType::Decimal128(p, s) => decimal!(Decimal128Type, p, s),
        DataType::Decimal256(p, s) => decimal!(Decimal256Type, p, s),
        DataType::Utf8 => write_json(out, column.as_string::<i32>().value(r)),
        DataType::LargeUtf8 => write_json(out, column.as_string::<i64>().value(r)),
        DataType::Utf8View => write_json(out, column.as_string_view().value(r)),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            if let Some((value, nanos, naive)) = typed_time(column, r) {
                write_time(out, value, nanos, naive, zone)
            }
        }
        DataType::List(_) => write_items(out, column.as_list::<i32>().value(r).as_ref(), zone),
        DataType::LargeList(_) => write_items(out, column.as_list::<i64>().value(r).as_ref(), zone),
        DataType::FixedSizeList(..) => write_items(out, column.as_fixed_size_list().value(r).as_ref(), zone),
        DataType::Struct(fields) => write_struct(out, column, fields, r, zone),
        DataType::Dictionary(key, _) => write_dictionary(out, column, key, r, zone),
        // `readable` refused every other type when the file was opened.
        _ => out.extend_from_slice(b"null"),
    }
}

/// One cell of a Parquet or Arrow column as an event value: the one reader of Sluice's own
/// Parquet (training sets, backfill joins, the skew check, references). Numbers, text,
/// booleans and µs timestamps (epoch µs) directly; binary as bytes; a list of numbers (an
/// embedding) as floats; any other [`readable`] type as its JSON ([`write_cell`], UTC).
pub fn cell_value(column: &dyn Array, r: usize) -> crate::event::Value {
    use crate::event::Value;
    if column.is_null(r) {
        return Value::Null;
    }
    match column.data_type() {
        DataType::Boolean => Value::Boolean(column.as_boolean().value(r)),
        DataType::Int32 => Value::Integer(column.as_primitive::<Int32Type>().value(r) as i64),
        DataType::Int64 => Value::Integer(column.as_primitive::<Int64Type>().value(r)),
        DataType::Float32 => Value::Float(column.as_primitive::<Float32Type>().value(r) as f64),
        DataType::Float64 => Value::Float(column.as_primitive::<Float64Type>().value(r)),
        DataType::Utf8 => Value::Text(column.as_string::<i32>().value(r).to_string()),
        DataType::LargeUtf8 => Value::Text(column.as_string::<i64>().value(r).to_string()),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Value::Integer(column.as_primitive::<TimestampMicrosecondType>().value(r))
        }
        DataType::Binary => Value::Bytes(column.as_binary::<i32>().value(r).to_vec()),
        DataType::LargeBinary => Value::Bytes(column.as_binary::<i64>().value(r).to_vec()),
        DataType::List(_) => floats(column.as_list::<i32>().value(r).as_ref()).unwrap_or_else(|| json_value(column, r)),
        DataType::LargeList(_) => {
            floats(column.as_list::<i64>().value(r).as_ref()).unwrap_or_else(|| json_value(column, r))
        }
        DataType::FixedSizeList(..) => {
            floats(column.as_fixed_size_list().value(r).as_ref()).unwrap_or_else(|| json_value(column, r))
        }
        _ => json_value(column, r),
    }
}

/// The items of a list cell of numbers as floats (a null item is NaN); `None` for other items.
fn floats(items: &dyn Array) -> Option<crate::event::Value> {
    fn all<T: arrow_array::ArrowPrimitiveType>(items: &dyn Array, f: impl Fn(T::Native) -> f64) -> Vec<f64> {
        items
            .as_primitive::<T>()
            .iter()
            .map(|x| x.map_or(f64::NAN, &f))
            .collect()
    }
    let values = match items.data_type() {
        DataType::Float64 => all::<Float64Type>(items, |x| x),
        DataType::Float32 => all::<Float32Type>(items, |x| x as f64),
        DataType::Int64 => all::<Int64Type>(items, |x| x as f64),
        DataType::Int32 => all::<Int32Type>(items, |x| x as f64),
        _ => return None,
    };
    Some(crate::event::Value::Floats(values))
}

/// A cell through its JSON text (UTC): the types Sluice does not write itself.
fn json_value(column: &dyn Array, r: usize) -> crate::event::Value {
    let mut out = Vec::new();
    write_cell(&mut out, column, r, &TimeZone::UTC);
    serde_json::from_slice(&out).map_or(crate::event::Value::Null, crate::event::into_value)
}

/// A time cell as RFC 3339 text in `zone` (a naive one read in it).
fn write_time(out: &mut Vec<u8>, value: i64, nanos: i64, naive: bool, zone: &TimeZone) {
    match typed_instant(value, nanos, naive, zone) {
        // RFC 3339 needs no escaping: written straight into the row, no String per cell.
        Some(t) => {
            use std::io::Write;
            let _ = write!(out, "\"{t}\"");
        }
        None => write_json(out, &format!("{value} (out of the range of times)")),
    }
}

/// A struct cell as a JSON object of its fields.
fn write_struct(out: &mut Vec<u8>, column: &dyn Array, fields: &arrow_schema::Fields, r: usize, zone: &TimeZone) {
    let record = column.as_struct();
    out.push(b'{');
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&key_of(field.name()));
        write_cell(out, record.column(i).as_ref(), r, zone);
    }
    out.push(b'}');
}

/// A dictionary cell: the value its key points at.
fn write_dictionary(out: &mut Vec<u8>, column: &dyn Array, key: &DataType, r: usize, zone: &TimeZone) {
    macro_rules! dictionary {
        ($k:ty) => {{
            let dictionary = column.as_dictionary::<$k>();
            let index = dictionary.keys().value(r) as usize;
            write_cell(out, dictionary.values().as_ref(), index, zone)
        }};
    }
    match key {
        DataType::Int8 => dictionary!(Int8Type),
        DataType::Int16 => dictionary!(Int16Type),
        DataType::Int32 => dictionary!(Int32Type),
        DataType::Int64 => dictionary!(Int64Type),
        DataType::UInt8 => dictionary!(UInt8Type),
        DataType::UInt16 => dictionary!(UInt16Type),
        DataType::UInt32 => dictionary!(UInt32Type),
        _ => dictionary!(UInt64Type),
    }
}

/// A time cell: its value, the nanoseconds of its unit, and whether it is naive (no zone in its
/// type; dates are naive); `None` for a column of another type.
fn typed_time(column: &dyn Array, r: usize) -> Option<(i64, i64, bool)> {
    Some(match column.data_type() {
        DataType::Timestamp(unit, tz) => {
            let value = match unit {
                TimeUnit::Second => column.as_primitive::<TimestampSecondType>().value(r),
                TimeUnit::Millisecond => column.as_primitive::<TimestampMillisecondType>().value(r),
                TimeUnit::Microsecond => column.as_primitive::<TimestampMicrosecondType>().value(r),
                TimeUnit::Nanosecond => column.as_primitive::<TimestampNanosecondType>().value(r),
            };
            (value, unit_nanos(unit), tz.is_none())
        }
        DataType::Date32 => (
            column.as_primitive::<Date32Type>().value(r) as i64,
            86_400_000_000_000,
            true,
        ),
        DataType::Date64 => (column.as_primitive::<Date64Type>().value(r), 1_000_000, true),
        _ => return None,
    })
}

/// Writes the event-time cell as a number of `unit` nanoseconds (rounded down) when it is a
/// typed time; other types are written as they are.
pub(crate) fn write_epoch(out: &mut Vec<u8>, column: &dyn Array, r: usize, unit: i64, zone: &TimeZone) {
    let typed = (!column.is_null(r)).then(|| typed_time(column, r)).flatten();
    let Some((value, nanos, naive)) = typed else {
        return write_cell(out, column, r, zone);
    };
    match typed_instant(value, nanos, naive, zone) {
        Some(t) => write_json(out, &(t.as_nanosecond().div_euclid(unit as i128) as i64)),
        None => write_json(out, &format!("{value} (out of the range of times)")),
    }
}

/// The items of a list cell as a JSON array.
fn write_items(out: &mut Vec<u8>, items: &dyn Array, zone: &TimeZone) {
    out.push(b'[');
    for i in 0..items.len() {
        if i > 0 {
            out.push(b',');
        }
        write_cell(out, items, i, zone);
    }
    out.push(b']');
}
