"""Point-in-time correctness of training sets built from entity feature tables (MovieLens ratings)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from loopml.errors import SpecError
from loopml.features.offline import compute_feature_table, point_in_time_join
from loopml.spec.features import FeatureTable

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def events(ratings: pa.Table) -> pa.Table:
    """Ratings of 40 users, each stamped as created 1 hour after its event (normal ingestion delay)."""
    t = ratings.filter(pc.less_equal(ratings.column("user_id"), 40))
    ts = t.column("ts").cast(pa.timestamp("us"))
    created = pc.add(ts, pa.scalar(dt.timedelta(hours=1), type=pa.duration("us")))
    liked = pc.cast(pc.greater_equal(t.column("rating"), 4), pa.int64())
    return pa.table({"user_id": t.column("user_id"), "item_id": t.column("item_id"),
                     "rating": t.column("rating"), "liked": liked, "ts": ts, "created": created})


def _spec(**kw: Any) -> FeatureTable:
    return FeatureTable(
        entity=["user_id"], timestamp="ts", created_timestamp="created", source="ratings",
        aggregations=[
            {"name": "u_n", "function": "count"},
            {"name": "u_like_7d", "function": "rate", "column": "liked", "window_days": 7},
            {"name": "u_max", "function": "max", "column": "rating"},
        ],
        **kw,
    )


def _plant(events: pa.Table) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """Add future values and a late backfill to the source; add probe examples after each arrives."""
    rows = events.to_pylist()
    last = max(r["ts"] for r in rows)
    users = sorted({r["user_id"] for r in rows})
    planted, probes = [], []
    # (1) values from the future: rating 999 one month after the last real event
    for u in users[:10]:
        t = last + 30 * DAY
        planted.append({"user_id": u, "item_id": -1, "rating": 999, "liked": 1, "ts": t, "created": t})
    probes.append({"user_id": users[0], "ts": last + 31 * DAY})
    # (2) a late backfill: an old event (in the middle of the user's history) that arrives 20 days later
    backfills = {}
    for u in users[10:20]:
        mine = sorted(r["ts"] for r in rows if r["user_id"] == u)
        t0 = mine[len(mine) // 2]
        arrive = t0 + 20 * DAY
        planted.append({"user_id": u, "item_id": -2, "rating": 777, "liked": 1, "ts": t0, "created": arrive})
        backfills[u] = (t0, arrive)
        probes.append({"user_id": u, "ts": arrive + DAY})
    source = pa.concat_tables([events, pa.Table.from_pylist(planted, schema=events.schema)])
    examples = pa.concat_tables([
        events.select(["user_id", "ts"]),
        pa.Table.from_pylist(probes, schema=pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us"))])),
    ])
    return source, examples, {"last": last, "backfills": backfills, "n_probes": len(probes)}


def test_no_future_value_and_no_late_backfill_reaches_a_training_row(events: pa.Table) -> None:
    source, examples, info = _plant(events)
    spec = _spec()
    ft = compute_feature_table("user", spec, source)
    out = point_in_time_join(examples, "ts", {"user": (spec, ft)})
    assert out.num_rows == examples.num_rows
    rows = out.to_pylist()
    real, probes = rows[: events.num_rows], rows[events.num_rows:]
    # no real example sees the future 999 or a backfilled 777 before it arrived
    for r in real:
        assert r["u_max"] is None or r["u_max"] < 999, r
        if r["user_id"] in info["backfills"]:
            _t0, arrive = info["backfills"][r["user_id"]]
            if r["ts"] < arrive:
                assert r["u_max"] is None or r["u_max"] < 777, r
    # ... while examples after the planted values arrived do see them (the plants are used at all)
    assert probes[0]["u_max"] == 999
    assert all(p["u_max"] == 777 for p in probes[1:])
    # real examples do get history (ratings come in bursts, and arrive an hour late, so not all)
    assert sum(r["u_n"] is not None for r in real) > 0.3 * len(real)


def _expected(source_rows: list[dict[str, Any]], spec: FeatureTable, t: dt.datetime, user: int,
              same_time: bool) -> dict[str, Any] | None:
    """Brute force: recompute the candidate feature rows in Python and pick the latest one known at t."""
    mine = [r for r in source_rows if r["user_id"] == user]
    best = None
    for te in sorted({r["ts"] for r in mine}):
        frame_all = [r for r in mine if r["ts"] <= te]
        frame_7d = [r for r in frame_all if r["ts"] >= te - 7 * DAY]
        created = max(max(r["created"], r["ts"]) for r in frame_all)
        avail = max(te, created)
        if not (avail < t or (same_time and avail == t)):
            continue
        if best is None or te >= best[0]:
            best = (te, {"u_n": float(len(frame_all)),
                         "u_like_7d": float(np.mean([r["liked"] for r in frame_7d])),
                         "u_max": float(max(r["rating"] for r in frame_all))})
    if best is None:
        return None
    if spec.ttl_seconds is not None and (t - best[0]).total_seconds() > spec.ttl_seconds:
        return None
    return best[1]


@pytest.mark.parametrize("same_time", [True, False])
@pytest.mark.parametrize("ttl", [None, 5 * 86400.0])
def test_join_equals_brute_force(events: pa.Table, same_time: bool, ttl: float | None) -> None:
    source, examples, _ = _plant(events)
    spec = _spec(include_same_time=same_time, ttl_seconds=ttl)
    ft = compute_feature_table("user", spec, source)
    out = point_in_time_join(examples, "ts", {"user": (spec, ft)}).to_pylist()
    src = source.to_pylist()
    rng = np.random.default_rng(1)
    for i in rng.choice(len(out), size=150, replace=False).tolist():
        r = out[i]
        want = _expected(src, spec, r["ts"], r["user_id"], same_time)
        got = None if r["u_n"] is None else {k: r[k] for k in ("u_n", "u_like_7d", "u_max")}
        if want is None or got is None:
            assert want is None and got is None, (i, r, want)
        else:
            assert got == pytest.approx(want), (i, r, want)


def test_default_for_tables_built_from_the_examples_excludes_the_example_itself(events: pa.Table) -> None:
    spec = FeatureTable(entity=["user_id"], timestamp="ts",
                        aggregations=[{"name": "u_like", "function": "rate", "column": "liked"}])
    ft = compute_feature_table("user", spec, events)
    out = point_in_time_join(events, "ts", {"user": (spec, ft)})
    first = {}
    for r in sorted(out.to_pylist(), key=lambda r: r["ts"]):
        first.setdefault(r["user_id"], r)
    # a user's first rating has no history: its own label must not be in its features
    assert all(r["u_like"] is None for r in first.values())


def test_three_tables_and_clear_errors(events: pa.Table) -> None:
    user = _spec()
    item = FeatureTable(entity=["item_id"], timestamp="ts", source="ratings",
                        aggregations=[{"name": "i_mean", "function": "mean", "column": "rating"}])
    pair = FeatureTable(entity=["user_id", "item_id"], timestamp="ts", source="ratings",
                        aggregations=[{"name": "ui_n", "function": "count"}])
    tables = {n: (s, compute_feature_table(n, s, events)) for n, s in
              {"user": user, "item": item, "pair": pair}.items()}
    out = point_in_time_join(events.select(["user_id", "item_id", "ts"]), "ts", tables)
    assert out.column_names == ["user_id", "item_id", "ts", "u_n", "u_like_7d", "u_max", "i_mean", "ui_n"]
    assert out.column("ts").equals(events.column("ts"))  # order kept
    with pytest.raises(SpecError, match="item_id"):
        point_in_time_join(events.select(["user_id", "ts"]), "ts", tables)
    with pytest.raises(SpecError, match="timestamp `when`"):
        point_in_time_join(events, "when", tables)
    bad = FeatureTable(entity=["user_id"], timestamp="ts", aggregations=[{"name": "x", "function": "sum",
                                                                         "column": "nope"}])
    with pytest.raises(SpecError, match="`nope`"):
        compute_feature_table("bad", bad, events)


def test_custom_sql_table(events: pa.Table) -> None:
    spec = FeatureTable(entity=["user_id"], timestamp="ts", source="ratings", sql=(
        "SELECT user_id, ts, avg(rating) OVER (PARTITION BY user_id ORDER BY ts) AS u_avg FROM source"))
    ft = compute_feature_table("user", spec, events)
    assert {"user_id", "event_time", "created_at", "u_avg"} <= set(ft.column_names)
    out = point_in_time_join(events, "ts", {"user": (spec, ft)})
    assert out.column("u_avg").null_count < out.num_rows


def test_delay_keeps_rows_out_until_they_are_known(events: pa.Table) -> None:
    """With a 1-day delay (e.g. a label window), an example sees only rows more than a day old."""
    spec = FeatureTable(entity=["user_id"], timestamp="ts", delay_seconds=86400.0,
                        aggregations=[{"name": "u_n", "function": "count"}])
    ft = compute_feature_table("user", spec, events.drop_columns(["created"]))
    out = point_in_time_join(events, "ts", {"user": (spec, ft)}).to_pylist()
    times: dict[int, list[dt.datetime]] = {}
    for r in events.to_pylist():
        times.setdefault(r["user_id"], []).append(r["ts"])
    for r in out[::7]:
        known = sum(t + DAY < r["ts"] for t in times[r["user_id"]])
        assert (r["u_n"] or 0) == known, r


def test_table_keys_of_another_type_still_join(events: pa.Table) -> None:
    """A table computed from a source holding user_id as text joins onto integer example keys."""
    text_keys = events.set_column(0, "user_id", pc.cast(events.column("user_id"), pa.string()))
    spec = _spec()
    ft = compute_feature_table("user", spec, text_keys)
    assert ft.schema.field("user_id").type == pa.string()
    got = point_in_time_join(events, "ts", {"user": (spec, ft)})
    want = point_in_time_join(events, "ts", {"user": (spec, compute_feature_table("user", spec, events))})
    assert got.column("u_max").equals(want.column("u_max")) and got.column("u_max").null_count < got.num_rows


def test_effective_delay_defaults_to_the_label_window() -> None:
    from loopml.features.stages import effective_delay
    from loopml.spec import Spec

    spec = Spec.model_validate({
        "data": {"sources": {"imp": {"type": "parquet", "path": "i.parquet"},
                             "clk": {"type": "parquet", "path": "c.parquet"}},
                 "labels": {"type": "event_within_window", "impressions": "imp", "events": "clk",
                            "keys": ["id"], "impression_time": "ts", "event_time": "cts", "window_seconds": 600}},
    })
    ctr = FeatureTable(entity=["user_id"], timestamp="ts",
                       aggregations=[{"name": "ctr", "function": "rate", "column": "label"}])
    count = FeatureTable(entity=["user_id"], timestamp="ts", aggregations=[{"name": "n", "function": "count"}])
    assert effective_delay(spec, ctr) == 600.0  # the label is only known once its click window closed
    assert effective_delay(spec, count) == 0.0
    assert effective_delay(spec, ctr.model_copy(update={"delay_seconds": 5.0})) == 5.0


def test_the_join_passes_the_examples_through_as_they_are_in_their_order(ratings: pa.Table, tmp_path: Any) -> None:
    """DuckDB joins only keys, times and row numbers: the examples' own columns come back untouched (types too)."""
    import pyarrow.parquet as pq

    from loopml.features.offline import connect, write_point_in_time_join

    shuffled = ratings.take(pa.array(np.random.default_rng(0).permutation(ratings.num_rows)))  # not in time order
    examples = pa.table({
        "note": pa.array([f"row {i}" for i in range(shuffled.num_rows)], pa.large_string()),
        "user_id": shuffled.column("user_id"),
        "ts": shuffled.column("ts"),
        "rating": shuffled.column("rating").cast(pa.int8()),
        "item": pa.array(shuffled.column("item_id").cast(pa.string()).to_pylist()).dictionary_encode(),
    })
    spec = FeatureTable(entity=["user_id"], timestamp="ts", source="ratings",
                        aggregations=[{"name": "u_n", "function": "count"},
                                      {"name": "u_mean", "function": "mean", "column": "rating", "window_days": 30}])
    tables = {"user": (spec, compute_feature_table("user", spec, ratings))}
    whole = point_in_time_join(examples, "ts", tables)
    assert whole.schema.names == [*examples.column_names, "u_n", "u_mean"]
    assert whole.select(examples.column_names).equals(examples)  # same rows, order, values and Arrow types
    # streamed in many small batches (and with DuckDB's smallest budget) into Parquet: the same table
    path = tmp_path / "joined.parquet"
    write_point_in_time_join(path, examples, "ts", tables, con=connect(64), batch_rows=512)
    assert pq.read_table(path).equals(whole)
    # each example saw its own user's history up to its time, whatever the row order
    by_user: dict[int, list[Any]] = {}
    for r in ratings.sort_by("ts").to_pylist():
        by_user.setdefault(r["user_id"], []).append(r["ts"])
    got = whole.select(["user_id", "ts", "u_n"]).to_pylist()
    for r in got[:300]:
        assert r["u_n"] == sum(t <= r["ts"] for t in by_user[r["user_id"]])


def test_duckdb_works_within_its_budget_and_spills_to_a_folder_removed_at_close() -> None:
    import os
    import tempfile

    from loopml.features.offline import DUCKDB_MEMORY_MB, connect

    default = connect()
    limit = default.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert limit.endswith("MiB") and float(limit.split()[0]) <= DUCKDB_MEMORY_MB  # not 80% of the machine
    default.close()
    con = connect(64)
    folder = con.sql("SELECT current_setting('temp_directory')").fetchall()[0][0]
    assert os.path.dirname(folder) == tempfile.gettempdir() and "loopml-duckdb-" in folder
    # a sort of ~100 MB of text cannot be held in 64 MB: it spills and completes
    con.execute("SET enable_progress_bar = false")
    n = con.sql("SELECT count(DISTINCT s) FROM (SELECT md5(i::VARCHAR) AS s FROM range(1500000) t(i) ORDER BY s)")
    assert n.fetchall()[0][0] == 1_500_000
    assert os.path.isdir(folder)
    con.close()
    assert not os.path.exists(folder)


def test_duckdb_runs_one_thread_per_gigabyte_of_its_budget() -> None:
    """Threads sharing too little working memory thrash on large entity partitions (see ``connect``)."""
    import os

    from loopml.features.offline import MB_PER_THREAD, connect

    cores = os.cpu_count() or 1
    for memory_mb, want in ((64, 1), (MB_PER_THREAD, 1), (4 * MB_PER_THREAD, min(cores, 4)), (10**6, cores)):
        con = connect(memory_mb)
        try:
            assert con.sql("SELECT current_setting('threads')").fetchall()[0][0] == want, memory_mb
        finally:
            con.close()
