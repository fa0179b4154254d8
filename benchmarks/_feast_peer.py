"""Runs inside the Feast peer venv: point-in-time retrieval and online lookups on loopml's data.

Usage: python _feast_peer.py WORKDIR N_ONLINE [OFFLINE_STORE]   (OFFLINE_STORE: file (default) or duckdb; reads WORKDIR/{events,user,ad,advertiser}.parquet,
writes WORKDIR/feast_result.json and WORKDIR/feast_joined.parquet)
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

t_import = time.perf_counter()
from feast import Entity, FeatureStore, FeatureView, Field, FileSource  # noqa: E402
from feast.repo_config import RepoConfig  # noqa: E402
from feast.types import Float64  # noqa: E402

t_import = time.perf_counter() - t_import

TABLES = {"user": ["user_id"], "ad": ["ad_id"], "advertiser": ["advertiser_id"]}


def main() -> None:
    work = Path(sys.argv[1])
    n_online = int(sys.argv[2])
    offline = sys.argv[3] if len(sys.argv) > 3 else "file"
    repo = work / f"feast_repo_{offline}"
    repo.mkdir(exist_ok=True)
    config = RepoConfig(
        project="bench", registry=str(repo / "registry.db"), provider="local",
        offline_store={"type": offline}, online_store={"type": "sqlite", "path": str(repo / "online.db")},
        entity_key_serialization_version=3,
    )
    store = FeatureStore(config=config)
    objs, refs = [], []
    for name, keys in TABLES.items():
        path = work / f"{name}.parquet"
        feats = [c for c in pd.read_parquet(path).columns if c not in (*keys, "event_time", "created_at")]
        ent = Entity(name=name, join_keys=keys)
        src = FileSource(name=f"{name}_src", path=str(path), timestamp_field="event_time",
                         created_timestamp_column="created_at")
        fv = FeatureView(name=f"{name}_fv", entities=[ent], ttl=timedelta(days=3650),
                         schema=[Field(name=f, dtype=Float64) for f in feats], source=src, online=True)
        objs += [ent, fv]
        refs += [f"{name}_fv:{f}" for f in feats]
    store.apply(objs)
    entity_df = pd.read_parquet(work / "events.parquet")
    entity_df = entity_df.rename(columns={"ts": "event_timestamp"})
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
    t0 = time.perf_counter()
    joined = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    pit_s = time.perf_counter() - t0
    joined.to_parquet(work / f"feast_joined_{offline}.parquet")
    if n_online == 0:
        import feast

        (work / f"feast_result_{offline}.json").write_text(json.dumps(
            {"version": feast.__version__, "offline_store": offline, "pit_seconds": pit_s, "rows": len(joined),
             "import_seconds": t_import}))
        return
    # online: materialise everything, then time lookups of 2 entities (a user and an ad)
    t0 = time.perf_counter()
    store.materialize(start_date=pd.Timestamp("2000-01-01", tz="UTC").to_pydatetime(),
                      end_date=pd.Timestamp("2100-01-01", tz="UTC").to_pydatetime())
    mat_s = time.perf_counter() - t0
    users = entity_df["user_id"].unique()
    ads = entity_df["ad_id"].unique()
    rng = np.random.default_rng(0)
    online_refs = [r for r in refs if r.startswith(("user_fv:", "ad_fv:"))]
    samples = []
    for i in range(n_online + 50):
        u, a = int(rng.choice(users)), int(rng.choice(ads))
        t0 = time.perf_counter()
        store.get_online_features(features=online_refs, entity_rows=[{"user_id": u, "ad_id": a}]).to_dict()
        if i >= 50:
            samples.append(time.perf_counter() - t0)
    import feast

    out = {"version": feast.__version__, "offline_store": offline, "pit_seconds": pit_s, "rows": len(joined),
           "materialize_seconds": mat_s, "online_samples_s": samples, "import_seconds": t_import}
    (work / f"feast_result_{offline}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
