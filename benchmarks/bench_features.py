"""Features benchmark: compiled single-row transform, online lookups, point-in-time joins; Feast side by side.

Run: ``.venv/bin/python -m benchmarks features`` (``--quick`` for a small smoke run, ``--keep`` to keep
the generated data in the temporary folder).

- Single-row transform of 40 mixed features (13 numeric, 26 categorical, 1 cross) fitted on the real
  Criteo sample; loopml ``transform_row`` vs scikit-learn ``ColumnTransformer`` on a one-row DataFrame
  (its own venv). Target: p99 <= 50 us.
- Online lookup of 2 entities (a user and an ad) from the SQLite online store; Feast's
  ``get_online_features`` (SQLite online store, own venv) on the same materialised values.
  Target: p99 <= 0.5 ms.
- Point-in-time join of 1M events against 3 entity feature tables (user, ad, advertiser) computed
  with window SQL; Feast's ``get_historical_features`` (file offline store) on the same Parquet
  files. Target: <= 10 s. The joined values of both are compared row by row.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._common import HERE, datasets_dir, machine, peer_env, stats_ms, write_results

FEAST = ["feast[duckdb]==0.67.0"]
FEAST_MEMORY_BYTES = 8 << 30
FEAST_RUNS = (("file", 2_000), ("file", 5_000), ("duckdb", 5_000), ("duckdb", 20_000), ("duckdb", 100_000))
SKLEARN = ["scikit-learn==1.9.1", "pandas==2.3.3", "pyarrow"]


# -- data --------------------------------------------------------------------------------------
def criteo() -> pa.Table:
    """The 1,000-row Criteo sample (13 numeric, 26 categorical, many missing)."""
    cols = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    path = datasets_dir() / "criteo_sample" / "criteo_train_head1000.txt"
    data: dict[str, list[Any]] = {c: [] for c in cols}
    for line in path.read_text().splitlines():
        parts = line.split("\t") + [""] * 40
        for c, v in zip(cols, parts):
            data[c].append(None if v == "" else (float(v) if c.startswith("I") else int(v) if c == "label" else v))
    return pa.table({c: pa.array(v, type=pa.float64() if c.startswith("I") else
                                 pa.int64() if c == "label" else pa.string()) for c, v in data.items()})


def forty_features() -> list[dict[str, Any]]:
    num = [
        {"column": "I1", "transforms": [{"type": "impute", "strategy": "mean", "add_indicator": True},
                                         {"type": "scale"}]},
        {"column": "I2", "transforms": [{"type": "clip"}, {"type": "scale", "method": "minmax"}]},
        {"column": "I3", "transforms": [{"type": "log"}, {"type": "impute"}]},
        {"column": "I4", "transforms": [{"type": "discretize", "n_bins": 8}]},
        {"column": "I5", "transforms": [{"type": "log"}, {"type": "scale", "method": "robust"}]},
        {"column": "I6", "transforms": [{"type": "discretize", "edges": [0, 1, 5, 20, 100]}]},
        {"column": "I7", "transforms": [{"type": "impute", "strategy": "most_frequent"}, {"type": "log"},
                                         {"type": "clip"}]},
        {"column": "I8", "transforms": [{"type": "impute", "strategy": "constant", "fill_value": -1}]},
    ] + [{"column": f"I{i}", "transforms": [{"type": "impute"}, {"type": "scale"}]} for i in range(9, 14)]
    enc = (["ordinal"] * 6 + ["onehot"] * 4 + ["hash"] * 6 + ["target_encode"] * 4 + ["embedding_ids"] * 4)
    cat: list[dict[str, Any]] = []
    for i, e in enumerate(enc, start=1):
        t: dict[str, Any] = {"type": e}
        if e == "onehot":
            t["max_categories"] = 8
        cat.append({"column": f"C{i}", "kind": "categorical", "transforms": [t]})
    cat.append({"column": "C25", "kind": "categorical",
                "transforms": [{"type": "impute", "strategy": "most_frequent"}, {"type": "ordinal"}]})
    cat.append({"column": "C26", "kind": "categorical", "transforms": [{"type": "cross", "with_columns": ["C1"]}]})
    cat.append({"column": "C3", "kind": "categorical", "name": "C3_x_C4",
                "transforms": [{"type": "cross", "with_columns": ["C4"], "n_buckets": 4096}]})
    return num + cat


def events(n: int, seed: int = 0) -> pa.Table:
    """n ad impressions over 30 days: Zipf-distributed users and ads, position-dependent clicks."""
    rng = np.random.default_rng(seed)
    users = (rng.zipf(1.3, n) - 1) % 200_000
    ads = (rng.zipf(1.2, n) - 1) % 30_000
    start = np.datetime64("2026-10-01T00:00:00", "us")
    secs = np.sort(rng.integers(0, 30 * 86400, n))
    ts = start + secs.astype("timedelta64[s]")
    position = rng.integers(1, 4, n)
    label = (rng.random(n) < 0.3 / position).astype(np.int64)
    late = rng.random(n) < 0.01  # 1% of rows land in the lake 1 hour to 3 days after their event
    created = ts + np.where(late, rng.integers(3600, 3 * 86400, n), 0).astype("timedelta64[s]")
    return pa.table({"user_id": users.astype(np.int64), "ad_id": ads.astype(np.int64),
                     "advertiser_id": (ads % 3_000).astype(np.int64), "position": position.astype(np.int64),
                     "ts": pa.array(ts, type=pa.timestamp("us")), "label": label,
                     "created": pa.array(created, type=pa.timestamp("us"))})


def table_specs(late: bool = False) -> dict[str, Any]:
    """The 3 tables; with ``late``, rows become known at their ``created`` time (1% arrive late)."""
    from loopml.spec.features import FeatureTable

    specs = {
        "user": FeatureTable(entity=["user_id"], timestamp="ts", source="events", include_same_time=True,
                             aggregations=[{"name": "user_ctr_7d", "function": "rate", "column": "label",
                                            "window_days": 7},
                                           {"name": "user_n_7d", "function": "count", "window_days": 7}]),
        "ad": FeatureTable(entity=["ad_id"], timestamp="ts", source="events", include_same_time=True,
                           aggregations=[{"name": "ad_ctr_7d", "function": "rate", "column": "label",
                                          "window_days": 7},
                                         {"name": "ad_n", "function": "count"}]),
        "advertiser": FeatureTable(entity=["advertiser_id"], timestamp="ts", source="events", include_same_time=True,
                                   aggregations=[{"name": "adv_ctr_30d", "function": "rate", "column": "label",
                                                  "window_days": 30}]),
    }
    if late:
        specs = {k: v.model_copy(update={"created_timestamp": "created"}) for k, v in specs.items()}
    return specs


# -- loopml ------------------------------------------------------------------------------------
def bench_row(n_calls: int) -> dict[str, Any]:
    from loopml.features import FeaturePipeline
    from loopml.spec.features import Feature

    t = criteo()
    feats = [Feature.model_validate(f) for f in forty_features()]
    p = FeaturePipeline(feats).fit(t.slice(0, 800), t.column("label").to_numpy()[:800])
    rows = t.slice(800).to_pylist()
    X = p.transform_batch(t.slice(800))
    assert all(np.array_equal(p.transform_row(r), X[i], equal_nan=True) for i, r in enumerate(rows))
    for r in rows:  # warm-up
        p.transform_row(r)
    samples = []
    gc.collect()
    gc.freeze()  # what a serving process does after loading its model: long-lived objects leave the GC's scans
    tr, clock = p.transform_row, time.perf_counter
    for i in range(n_calls):
        r = rows[i % len(rows)]
        t0 = clock()
        tr(r)
        samples.append(clock() - t0)
    gc.unfreeze()
    return {"features": len(feats), "output_columns": len(p.feature_names), **stats_ms(samples),
            "p99_ms_median_of_rounds": _round_p99(samples)}


def _round_p99(samples: list[float], rounds: int = 5) -> float:
    """Median over ``rounds`` consecutive chunks of each chunk's p99 (less sensitive to one noisy burst)."""
    chunks = np.array_split(np.asarray(samples), rounds)
    return float(np.median([np.percentile(c, 99) for c in chunks]) * 1000.0)


SKLEARN_PEER = r'''
import json, sys, time, gc
import numpy as np, pandas as pd, pyarrow.parquet as pq
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler, OrdinalEncoder, OneHotEncoder, TargetEncoder, FunctionTransformer
df = pq.read_table(sys.argv[1]).to_pandas()
n_calls = int(sys.argv[2])
train, test = df.iloc[:800], df.iloc[800:]
num = [f"I{i}" for i in range(1, 14)]
ordc = [f"C{i}" for i in (1,2,3,4,5,6,11,12,13,14,15,16,21,22,23,24,25,26)]
ohc = [f"C{i}" for i in (7,8,9,10)]
tec = [f"C{i}" for i in (17,18,19,20)]
ct = ColumnTransformer([
    ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
    ("ord", make_pipeline(SimpleImputer(strategy="constant", fill_value="<missing>"),
                          OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)), ordc),
    ("oh", make_pipeline(SimpleImputer(strategy="constant", fill_value="<missing>"),
                         OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=8)), ohc),
    ("te", make_pipeline(SimpleImputer(strategy="constant", fill_value="<missing>"), TargetEncoder()), tec),
    ("cross", FunctionTransformer(lambda d: (d.iloc[:, 0].astype(str) + "|" + d.iloc[:, 1].astype(str))
                                  .map(hash).to_numpy().reshape(-1, 1) % 4096), ["C3", "C4"]),
])
ct.fit(train, train["label"])
rows = test.to_dict("records")
for r in rows:
    ct.transform(pd.DataFrame([r]))
gc.collect()
gc.freeze()
s = []
for i in range(n_calls):
    r = rows[i % len(rows)]
    t0 = time.perf_counter()
    ct.transform(pd.DataFrame([r]))
    s.append(time.perf_counter() - t0)
import sklearn
print(json.dumps({"samples": s, "version": sklearn.__version__}))
'''


def bench_row_sklearn(work: Path, n_calls: int) -> dict[str, Any]:
    py = peer_env("sklearn-features", SKLEARN)
    path = work / "criteo.parquet"
    pq.write_table(criteo(), path)
    script = work / "sk_peer.py"
    script.write_text(SKLEARN_PEER)
    out = subprocess.run([str(py), str(script), str(path), str(n_calls)], capture_output=True, text=True,
                         timeout=900)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {"version": res["version"], **stats_ms(res["samples"]), "p99_ms_median_of_rounds": _round_p99(res["samples"])}


def bench_pit(n: int, work: Path, reps: int, late: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    from loopml.features.offline import compute_feature_table, connect, point_in_time_join

    ev = events(n)
    specs = table_specs(late)
    con = connect()
    t0 = time.perf_counter()
    tables = {name: (s, compute_feature_table(name, s, ev, con=con)) for name, s in specs.items()}
    compute_s = time.perf_counter() - t0
    examples = ev.select(["user_id", "ad_id", "advertiser_id", "ts"])
    times = []
    joined = None
    for _ in range(reps):
        t0 = time.perf_counter()
        joined = point_in_time_join(examples, "ts", tables, con=connect())
        times.append(time.perf_counter() - t0)
    work.mkdir(parents=True, exist_ok=True)
    pq.write_table(examples, work / "events.parquet")
    for name, (_, ft) in tables.items():
        pq.write_table(ft, work / f"{name}.parquet")
    assert joined is not None
    pq.write_table(joined, work / "loopml_joined.parquet")
    return ({"events": n, "feature_table_rows": {k: v[1].num_rows for k, v in tables.items()},
             "compute_tables_s": compute_s, "join_s_median": float(np.median(times)), "join_s_all": times},
            {k: v for k, v in tables.items()})


def bench_online(tables: dict[str, Any], work: Path, n_calls: int) -> dict[str, Any]:
    from loopml.features.materialize import materialize
    from loopml.features.stores.sqlite_store import SqliteStore

    store = SqliteStore(work / "online.sqlite")
    t0 = time.perf_counter()
    written = materialize(store, tables)
    mat_s = time.perf_counter() - t0
    users = tables["user"][1].column("user_id").unique().to_numpy()
    ads = tables["ad"][1].column("ad_id").unique().to_numpy()
    rng = np.random.default_rng(0)
    pairs = [(int(rng.choice(users)), int(rng.choice(ads))) for _ in range(n_calls + 200)]
    read, clock = store.read, time.perf_counter
    two_tables, one_call = [], []
    for i, (u, a) in enumerate(pairs):
        t0 = clock()
        read("user", [u])
        read("ad", [a])
        dt_ = clock() - t0
        if i >= 200:
            two_tables.append(dt_)
    for i, (u, a) in enumerate(pairs):
        t0 = clock()
        read("user", [u, a])
        dt_ = clock() - t0
        if i >= 200:
            one_call.append(dt_)
    store.close()
    return {"materialize_s": mat_s, "entities": written,
            "user_plus_ad": stats_ms(two_tables), "two_keys_one_table": stats_ms(one_call)}


def compare_joins(work: Path, offline: str) -> dict[str, Any]:
    """Row-by-row agreement of loopml's and Feast's point-in-time joined values."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    feats = ["user_ctr_7d", "user_n_7d", "ad_ctr_7d", "ad_n", "adv_ctr_30d"]
    cond = " AND ".join(f"((l.{f} IS NULL AND f.{f} IS NULL) OR abs(l.{f} - f.{f}) <= 1e-9)" for f in feats)
    sql = f"""
        WITH l AS (SELECT row_number() OVER () AS r, * FROM read_parquet('{work}/loopml_joined.parquet')),
             f AS (SELECT * FROM read_parquet('{work}/feast_joined_{offline}.parquet'))
        SELECT count(*) AS n, count(*) FILTER (WHERE {cond}) AS same
        FROM l JOIN (SELECT user_id, ad_id, advertiser_id, CAST(event_timestamp AS TIMESTAMP) AS ts,
                            {', '.join(feats)}, row_number() OVER (PARTITION BY user_id, ad_id, advertiser_id,
                            event_timestamp ORDER BY 1) AS k FROM f) f
          ON l.user_id = f.user_id AND l.ad_id = f.ad_id AND l.advertiser_id = f.advertiser_id AND l.ts = f.ts
    """
    n, same = con.execute(sql).fetchall()[0]
    return {"joined_rows": int(n), "identical_rows": int(same)}


def run_feast(work: Path, n_online: int, timeout: float, offline: str) -> dict[str, Any]:
    try:
        py = peer_env("feast", FEAST)
    except subprocess.CalledProcessError as exc:
        return {"error": f"pip install {FEAST} failed: {exc}"}
    import resource

    def limit() -> None:  # Feast's file store can eat the shared machine's memory: cap it
        resource.setrlimit(resource.RLIMIT_AS, (FEAST_MEMORY_BYTES, FEAST_MEMORY_BYTES))

    t0 = time.perf_counter()
    try:
        out = subprocess.run([str(py), str(HERE / "_feast_peer.py"), str(work), str(n_online), offline],
                             capture_output=True, text=True, timeout=timeout, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    if out.returncode != 0:
        if "Out of Memory" in out.stderr or "MemoryError" in out.stderr:
            return {"error": f"out of memory under the {FEAST_MEMORY_BYTES >> 30} GB cap "
                             f"(after {time.perf_counter() - t0:.0f} s)"}
        err = [ln for ln in out.stderr.splitlines() if "Warning" not in ln and "warn(" not in ln
               and "ent = Entity" not in ln]
        return {"error": f"exit {out.returncode}: " + "\n".join(err)[-1500:]}
    res = json.loads((work / f"feast_result_{offline}.json").read_text())
    res["wall_s"] = time.perf_counter() - t0
    if "online_samples_s" in res:
        res["online"] = stats_ms(res.pop("online_samples_s"))
    return res


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    n_big = 50_000 if quick else 1_000_000
    calls = 2_000 if quick else 20_000
    base = Path(tempfile.mkdtemp(prefix="loopml-bench-features-"))
    results: dict[str, Any] = {"quick": quick}
    print("row transform (loopml)…", flush=True)
    results["load_average_before"] = os.getloadavg()
    results["row_loopml"] = bench_row(calls)
    print("row transform (scikit-learn peer)…", flush=True)
    results["row_sklearn"] = bench_row_sklearn(base, min(calls, 2_000))  # ~40 ms a call
    print(f"point-in-time join, {n_big:,} events…", flush=True)
    results["pit_loopml_big"], big_tables = bench_pit(n_big, base / "big", reps=3)
    print(f"point-in-time join, {n_big:,} events, 1% arriving late…", flush=True)
    results["pit_loopml_big_late"], _ = bench_pit(n_big, base / "big_late", reps=3, late=True)
    print("online lookups (loopml sqlite)…", flush=True)
    results["online_loopml"] = bench_online(big_tables, base / "big", calls)
    del big_tables
    runs = (("file", 2_000), ("duckdb", 2_000)) if quick else FEAST_RUNS
    last_file = max(n for o, n in runs if o == "file")
    results["feast_runs"] = []
    failed: set[str] = set()
    for offline, n in runs:
        if offline in failed:
            continue
        work = base / f"feast_{n}"
        if f"pit_loopml_{n}" not in results:
            print(f"point-in-time join, {n:,} events (loopml)…", flush=True)
            results[f"pit_loopml_{n}"], _ = bench_pit(n, work, reps=3)
        print(f"  Feast, {offline} offline store, {n:,} events…", flush=True)
        online = 2_000 if (offline == "file" and n == last_file) else 0
        res = run_feast(work, online, 1200, offline)
        res.update({"offline_store": offline, "events": n})
        if "error" not in res:
            res["agreement"] = compare_joins(work, offline)
        else:
            failed.add(offline)
        results["feast_runs"].append(res)
        print(f"    {res.get('pit_seconds', res.get('error', ''))}", flush=True)
    results["load_average_after"] = os.getloadavg()
    results["machine"] = machine()
    md = render(results)
    path = write_results("features", results, md)
    print(md)
    print(f"wrote {path}")
    if "--keep" not in argv:  # ~200 MB of Parquet and SQLite per run
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0


def _fmt(x: float) -> str:
    return f"{x:,.3f}" if x < 10 else f"{x:,.1f}"


def render(r: dict[str, Any]) -> str:
    row, sk = r["row_loopml"], r["row_sklearn"]
    on = r["online_loopml"]
    big = r["pit_loopml_big"]
    runs = r.get("feast_runs", [])
    fs = next((x for x in runs if "online" in x), {})
    us = 1e3
    lines = [
        "# Features benchmark",
        "",
        f"Command: `.venv/bin/python -m benchmarks features{' --quick' if r['quick'] else ''}` "
        f"({r.get('machine', {}).get('when', '')}). Both systems run in the same run on the same data; peers "
        "in their own venvs under `benchmarks/envs/`. The machine (2 cores) is shared with other engineers' "
        "jobs and noisy: read the ratios, not the absolute numbers. Timings per call with "
        "`time.perf_counter`, in process, after warm-up and `gc.freeze()` (both systems). Load average "
        f"(1 min) at the start {r.get('load_average_before', [float('nan')])[0]:.1f}, at the end "
        f"{r.get('load_average_after', [float('nan')])[0]:.1f}: single-call tails (p99) are mostly other "
        "processes preempting this one, so the median over 5 consecutive rounds of each round's p99 is shown "
        "beside the overall p99.",
        "",
        "## Single-row transform, 40 mixed features (Criteo sample: 13 numeric + 26 categorical + 1 cross)",
        "",
        "| system | p50 µs | p90 µs | p99 µs | p99 µs, median of 5 rounds | target p99 | p50 ratio (peer / loopml) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| loopml `transform_row` → {row['output_columns']} float32 columns | {row['median_ms'] * us:.1f} | "
        f"{row['p90_ms'] * us:.1f} | {row['p99_ms'] * us:.1f} | {row['p99_ms_median_of_rounds'] * us:.1f} | ≤ 50 "
        f"{'✅' if row['p99_ms'] * us <= 50 else '❌'} | 1 |",
    ]
    if "error" in sk:
        lines.append(f"| scikit-learn ColumnTransformer | failed: {sk['error'][:200]} | | | | | |")
    else:
        lines.append(f"| scikit-learn {sk['version']} `ColumnTransformer.transform` on a 1-row DataFrame | "
                     f"{sk['median_ms'] * us:,.0f} | {sk['p90_ms'] * us:,.0f} | {sk['p99_ms'] * us:,.0f} | "
                     f"{sk['p99_ms_median_of_rounds'] * us:,.0f} | | {sk['median_ms'] / row['median_ms']:,.0f}× |")
    lines += [
        "",
        f"{row['n']:,} calls over the 200 held-out rows; every row's vector was first checked equal to the batch path.",
        "",
        "## Online lookup of 2 entities (a user and an ad), SQLite online store",
        "",
        "| system | p50 ms | p90 ms | p99 ms | target p99 | p50 ratio (peer / loopml) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| loopml `read('user', [u]) + read('ad', [a])`, {big['events']:,}-event store | "
        f"{on['user_plus_ad']['median_ms']:.4f} | {on['user_plus_ad']['p90_ms']:.4f} | "
        f"{on['user_plus_ad']['p99_ms']:.4f} | ≤ 0.5 {'✅' if on['user_plus_ad']['p99_ms'] <= 0.5 else '❌'} | 1 |",
        f"| loopml `read('user', [u1, u2])` (one call) | {on['two_keys_one_table']['median_ms']:.4f} | "
        f"{on['two_keys_one_table']['p90_ms']:.4f} | {on['two_keys_one_table']['p99_ms']:.4f} | | |",
    ]
    if "online" in fs:
        o = fs["online"]
        lines.append(f"| Feast {fs['version']} `get_online_features` (user + ad in one call), SQLite online store, "
                     f"{fs['events']:,}-event store | {o['median_ms']:.3f} | {o['p90_ms']:.3f} | {o['p99_ms']:.3f} | | "
                     f"{o['median_ms'] / on['user_plus_ad']['median_ms']:,.0f}× |")
    lines += [
        "",
        f"loopml materialised {sum(on['entities'].values()):,} entities ({on['entities']}) in "
        f"{on['materialize_s']:.2f} s.",
        "",
        "## Point-in-time join against 3 entity feature tables (user, ad, advertiser)",
        "",
        "Synthetic ad impressions over 30 days (Zipf-distributed users and ads, seed 0); feature tables (7-day "
        "and 30-day click rates and counts) computed once by loopml with window SQL and handed to both systems "
        "as the same Parquet files. Join time excludes computing the tables.",
        "",
        "| events | system | join seconds (median of 3 for loopml) | computing the 3 tables (s) | ratio (peer / loopml) | rows identical to loopml |",
        "|---:|---|---:|---:|---:|---|",
        f"| {big['events']:,} | loopml (DuckDB window SQL + ASOF joins) | {_fmt(big['join_s_median'])} "
        f"{'✅' if big['join_s_median'] <= 10 else '❌'} (target ≤ 10) | {_fmt(big['compute_tables_s'])} | 1 | |",
    ]
    bl = r.get("pit_loopml_big_late")
    if bl:
        lines.append(f"| {bl['events']:,} | loopml, 1% of rows arriving 1 h–3 days late (creation-time pruning) | "
                     f"{_fmt(bl['join_s_median'])} {'✅' if bl['join_s_median'] <= 10 else '❌'} | "
                     f"{_fmt(bl['compute_tables_s'])} | | |")
    shown: set[int] = set()
    for fr in runs:
        n = fr["events"]
        lp = r.get(f"pit_loopml_{n}")
        if lp is None:
            continue
        if n not in shown:
            shown.add(n)
            lines.append(f"| {n:,} | loopml | {_fmt(lp['join_s_median'])} | {_fmt(lp['compute_tables_s'])} | 1 | |")
        name = f"Feast {fr.get('version') or FEAST[0].split('==')[1]} `get_historical_features`, {fr['offline_store']} offline store"
        if "error" in fr:
            lines.append(f"| {n:,} | {name} | failed: {fr['error'][:300]} | | | |")
        else:
            ag = fr.get("agreement", {})
            lines.append(f"| {n:,} | {name} | {_fmt(fr['pit_seconds'])} | (same tables) | "
                         f"{fr['pit_seconds'] / lp['join_s_median']:,.0f}× | "
                         f"{ag.get('identical_rows', 0):,} of {ag.get('joined_rows', 0):,} |")
    file_runs = [x for x in runs if x["offline_store"] == "file" and "pit_seconds" in x]
    growth = ""
    if len(file_runs) >= 2:
        a_, b_ = file_runs[0], file_runs[-1]
        growth = (f" Measured here: {a_['events']:,} → {b_['events']:,} events ({b_['events'] / a_['events']:.1f}× the "
                  f"data) took {b_['pit_seconds'] / a_['pit_seconds']:.1f}× the time.")
    lines += [
        "",
        "**Why Feast does not run at 1M events here.** Both of Feast's local offline stores join every entity row "
        "with every feature row of the same entity key and only then filter by timestamp: the file store "
        "(`feast/infra/offline_stores/dask.py`, `_merge` = a pandas/dask left merge on the join keys, then "
        "`_filter_ttl`), and the DuckDB store (`feast/infra/offline_stores/ibis.py`, `point_in_time_join` = an "
        "inner join on keys with `timestamp <= event_timestamp`, then a dedup by row). Time and memory grow "
        "with the square of the events per entity, which explodes with realistic Zipf-skewed users and ads."
        + growth + " While developing this benchmark, a 20,000-event run of the file store was stopped after "
        "12 minutes at 11 GB resident memory (the machine has 23 GB shared by seven engineers); every Feast run "
        f"is capped at {FEAST_MEMORY_BYTES >> 30} GB of address space, and the rows marked failed above hit that "
        "cap. At 1M events either store would need far more memory than this machine has, so the side-by-side "
        "ratios are reported at the sizes Feast completes, and loopml's 1M-event time stands against the target.",
        "",
        "Semantics: loopml excludes values *created* after the example time; Feast uses the creation time only "
        "to break ties. Here creation equals event time and both include values stamped at the example time, "
        "so the two must return identical values, which the last column checks row by row. Feast's time "
        f"excludes its import ({fs.get('import_seconds', float('nan')):.1f} s) and registry setup.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
