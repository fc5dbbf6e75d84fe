"""Feast's get_historical_features on the data of `sluice-bench offline`, for the side-by-side.

Usage: python historical.py <backfilled rows folder> <entities.jsonl> <sluice training.parquet>

The backfilled feature rows (Sluice's Parquet parts) become one Parquet file, a Feast
FileSource (not timed); Feast's local provider with the file offline store then joins the
entity rows point in time (latest row with event time <= t within the TTL). Feast copies the
row's values: it does not re-evaluate windowed aggregates at t, as Sluice does, so the
comparison covers the same join with Sluice doing more work. Prints one line of JSON: the
query's wall time (the call alone), the process's peak RSS and its RSS just before the query,
and how many values of the copied feature (amount_usd) agree with Sluice's.
"""

import glob
import json
import os
import resource
import sys
import tempfile
import time
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

rows_dir, entities_path, sluice_out = sys.argv[1], sys.argv[2], sys.argv[3]
FEATURES = ["amount_usd", "tx_count_1h", "amount_usd_mean_24h", "amount_zscore_24h"]

work = tempfile.mkdtemp(prefix="feast-bench-")
parts = sorted(glob.glob(os.path.join(rows_dir, "date=*", "*.parquet")))
table = pa.concat_tables(
    [pq.read_table(p, columns=["_ts", "_seq", "user_id"] + FEATURES) for p in parts], promote_options="default"
)
table = table.rename_columns(["event_timestamp", "seq", "user_id"] + FEATURES)
source_path = os.path.join(work, "rows.parquet")
pq.write_table(table, source_path)

from feast import Entity, FeatureStore, FeatureView, Field, FileSource  # noqa: E402
from feast.repo_config import RepoConfig  # noqa: E402
from feast.types import Float64, Int64  # noqa: E402

config = RepoConfig(
    project="bench",
    registry=os.path.join(work, "registry.db"),
    provider="local",
    offline_store={"type": "file"},
    online_store={"type": "sqlite", "path": os.path.join(work, "online.db")},
    entity_key_serialization_version=3,
)
store = FeatureStore(config=config)
user = Entity(name="user", join_keys=["user_id"])
view = FeatureView(
    name="transactions",
    entities=[user],
    ttl=timedelta(days=30),
    schema=[
        Field(name="amount_usd", dtype=Float64),
        Field(name="tx_count_1h", dtype=Int64),
        Field(name="amount_usd_mean_24h", dtype=Float64),
        Field(name="amount_zscore_24h", dtype=Float64),
    ],
    source=FileSource(path=source_path, timestamp_field="event_timestamp"),
)
store.apply([user, view])

entities = pd.read_json(entities_path, lines=True)
entities["event_timestamp"] = pd.to_datetime(entities["t"], unit="ms", utc=True)
entity_df = entities[["user_id", "event_timestamp", "label"]]


def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# Memory before the query (Python, pandas, pyarrow and Feast loaded, the entity rows read):
# the peak below is the whole process's, as Sluice's is; this says how much of it the query added.
rss_before_query_mb = rss_mb()
started = time.perf_counter()
result = store.get_historical_features(
    entity_df=entity_df, features=[f"transactions:{f}" for f in FEATURES]
).to_df()
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

ours = pq.read_table(sluice_out).to_pandas()
ours["event_timestamp"] = ours["t"]
merged = result.merge(ours, on=["user_id", "event_timestamp", "label"], suffixes=("_feast", "_sluice"))
a, b = merged["amount_usd_feast"], merged["amount_usd_sluice"]
same = (a == b) | (a.isna() & b.isna())
agree = int(same.sum())
if os.environ.get("FEAST_BENCH_DIFF"):
    merged[~same][["user_id", "event_timestamp", "amount_usd_feast", "amount_usd_sluice"]].head(20).to_csv(
        os.environ["FEAST_BENCH_DIFF"]
    )
    table.to_pandas().to_parquet(os.environ["FEAST_BENCH_DIFF"] + ".rows.parquet")
print(
    json.dumps(
        {
            "feast_seconds": round(seconds, 2),
            "feast_peak_mb": round(peak_mb),
            "feast_rss_before_query_mb": round(rss_before_query_mb),
            "rows": len(result),
            "amount_usd_agree": agree,
            "compared": len(merged),
        }
    )
)
