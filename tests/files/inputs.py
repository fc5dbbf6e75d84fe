"""Writes the files a data scientist has (pandas, pyarrow, DuckDB, CSV layouts) into a folder,
and what pandas reads from each: the cases of tests/files.rs.

Usage: python inputs.py <folder>; prints nothing, writes <folder>/cases.json:
[{"name", "file", "field", "format", "timezone", "rows": [{"user", "ts_us", <column>: value}]}]
where ts_us is the event time pandas reads, in microseconds since the epoch (UTC), and the
values are what pandas reads, as JSON (decimals as floats, lists as lists, NaN/NA as null).
"""

import datetime as dt
import decimal
import json
import math
import os
import sys

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

out = sys.argv[1]
cases = []

BASE = 1_704_067_200  # 2024-01-01T00:00:00Z
N = 6


def plain(value):
    """A value pandas read, as JSON."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def micros(series, zone=None):
    """Event times as pandas reads them, in µs since the epoch (naive ones in `zone`)."""
    if series.dt.tz is None:
        series = series.dt.tz_localize(zone or "UTC")
    ns = series.dt.tz_convert("UTC").dt.as_unit("ns").astype("int64")
    return [int(v) // 1000 for v in ns]


def case(name, path, field="ts", fmt="auto", zone=None, times=None, values=()):
    """Records what pandas reads from `path` (Parquet) or the given event times (CSV)."""
    if path.endswith(".parquet"):
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, keep_default_na=True)
    ts = times if times is not None else micros(frame[field], zone)
    rows = []
    for i in range(len(frame)):
        row = {"user": str(frame["user"].iloc[i]), "ts_us": ts[i]}
        for column in values:
            v = frame[column].iloc[i]
            row[column] = None if (not isinstance(v, (list, np.ndarray)) and pd.isna(v)) else plain(v)
        rows.append(row)
    cases.append(
        {"name": name, "file": path, "field": field, "format": fmt, "timezone": zone, "rows": rows}
    )


# pyarrow: every timestamp unit, with and without a zone, and the other column kinds.
scale = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
for unit in ["s", "ms", "us", "ns"]:
    for zone in [None, "UTC", "America/New_York"]:
        times = [(BASE + i * 3_600) * scale[unit] + (789 if unit == "ns" and i == 1 else 0) for i in range(N)]
        table = pa.table(
            {
                "user": pa.array([f"u{i}" for i in range(N)]).dictionary_encode(),
                "ts": pa.array(times, pa.timestamp(unit, tz=zone)),
                "tag": pa.array(["a", None, "b", "a", "b", "a"]).dictionary_encode(),
                "price": pa.array(
                    [decimal.Decimal("12.34"), None, decimal.Decimal("-0.05"), decimal.Decimal("1e3"),
                     decimal.Decimal("0.10"), decimal.Decimal("99999999.99")],
                    pa.decimal128(10, 2),
                ),
                "v": pa.array([[1.0, 2.5], None, [], [0.1], [-1.0, 3.0], [2.0]], pa.list_(pa.float64())),
                "n": pa.array([1, None, -3, 4, None, 2**40], pa.int64()),
                "flag": pa.array([True, None, False, True, False, True]),
                "name": pa.array(["x", "y", None, "z", "é", "w"], pa.large_string()),
            }
        )
        path = os.path.join(out, f"pyarrow-{unit}-{zone or 'naive'}.parquet".replace("/", "_"))
        pq.write_table(table, path)
        case(f"pyarrow {unit} {zone or 'naive'}", path, values=["tag", "price", "v", "n", "flag", "name"])

# A zone-less pyarrow time read in the feature set's zone.
path = os.path.join(out, "pyarrow-us-naive-paris.parquet")
pq.write_table(
    pa.table({"user": [f"u{i}" for i in range(N)], "ts": pa.array([(BASE + i * 86_400 * 40) * 10**6 for i in range(N)], pa.timestamp("us"))}),
    path,
)
case("pyarrow us naive in Europe/Paris", path, zone="Europe/Paris")

# pandas, as data scientists write it.
frame = pd.DataFrame(
    {
        "user": [f"u{i}" for i in range(N)],
        "ts": pd.to_datetime([BASE + i * 7_200 for i in range(N)], unit="s", utc=True),
        "amount": [1.5, None, 3.25, 4.0, 5.5, 6.0],
        "country": pd.Categorical(["US", "DE", "US", None, "GB", "DE"]),
    }
)
frame.to_parquet(os.path.join(out, "pandas-default.parquet"))
case("pandas default", os.path.join(out, "pandas-default.parquet"), values=["amount", "country"])
frame.assign(ts=frame["ts"].astype("datetime64[ns, UTC]") + pd.Timedelta(nanoseconds=1_500)).to_parquet(
    os.path.join(out, "pandas-ns.parquet"), coerce_timestamps=None
)
case("pandas ns", os.path.join(out, "pandas-ns.parquet"), values=["amount", "country"])
frame.assign(ts=frame["ts"].dt.tz_localize(None).astype("datetime64[us]")).to_parquet(
    os.path.join(out, "pandas-naive-us.parquet")
)
case("pandas naive us", os.path.join(out, "pandas-naive-us.parquet"), values=["amount"])

# DuckDB's COPY ... TO: TIMESTAMP (naive), TIMESTAMPTZ, DECIMAL, lists.
path = os.path.join(out, "duckdb.parquet")
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(
    f"""COPY (SELECT 'u' || i AS user,
                     TIMESTAMP '2024-01-01 00:00:00' + to_hours(i::BIGINT) AS ts,
                     TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_minutes(i::BIGINT) AS tsz,
                     CAST(i * 1.25 AS DECIMAL(10, 2)) AS price,
                     [i::DOUBLE, 2.0::DOUBLE] AS v,
                     CASE WHEN i % 2 = 0 THEN NULL ELSE i END AS n
              FROM range({N}) t(i)) TO '{path}' (FORMAT PARQUET)"""
)
case("duckdb timestamp", path, values=["price", "v", "n"])
case("duckdb timestamptz", path, field="tsz", values=["price", "v", "n"])

# CSV, one file per time layout.
layouts = [
    ("csv rfc3339", "auto", None, lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
    ("csv naive", "auto", None, lambda t: t.strftime("%Y-%m-%d %H:%M:%S")),
    ("csv naive fraction", "auto", None, lambda t: t.strftime("%Y-%m-%d %H:%M:%S.123456")),
    ("csv offset", "auto", None, lambda t: (t + dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S+02:00")),
    ("csv date", "auto", None, lambda t: t.strftime("%Y-%m-%d")),
    ("csv epoch_s", "epoch_s", None, lambda t: str(int(t.timestamp()))),
    ("csv epoch_ms", "epoch_ms", None, lambda t: str(int(t.timestamp()) * 1000 + 7)),
    ("csv pattern", "%d/%m/%Y %H:%M", None, lambda t: t.strftime("%d/%m/%Y %H:%M")),
    ("csv naive in Europe/Paris", "auto", "Europe/Paris", lambda t: t.strftime("%Y-%m-%d %H:%M:%S")),
]
for name, fmt, zone, write in layouts:
    path = os.path.join(out, name.replace(" ", "-").replace("/", "_") + ".csv")
    instants = [dt.datetime.fromtimestamp(BASE + i * 86_400 * 33 + i * 61, dt.timezone.utc) for i in range(N)]
    pd.DataFrame({"user": [f"u{i}" for i in range(N)], "ts": [write(t) for t in instants], "amount": [i * 0.5 for i in range(N)]}).to_csv(path, index=False)
    read = pd.read_csv(path, dtype={"ts": str})["ts"]
    if fmt.startswith("epoch_"):
        parsed = pd.to_datetime(read.astype("int64"), unit=fmt[len("epoch_"):], utc=True)
    elif "%" in fmt:
        parsed = pd.to_datetime(read, format=fmt).dt.tz_localize(zone or "UTC")
    else:
        parsed = pd.to_datetime(read, format="ISO8601")
    case(name, path, fmt=fmt, zone=zone, times=micros(parsed, zone), values=["amount"])

with open(os.path.join(out, "cases.json"), "w") as f:
    json.dump(cases, f)
sys.stdout.flush()
# pyarrow can abort at interpreter teardown (apache/arrow#34314): the files are written.
os._exit(0)
