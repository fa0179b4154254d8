"""One test matrix over every online store backend (SQLite file; Redis server started by the test)."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from loopml.features.materialize import materialize
from loopml.features.offline import compute_feature_table, latest_values
from loopml.features.parity import check_parity
from loopml.features.store import ONLINE_STORES, OnlineRecord, OnlineStore, open_online_store
from loopml.spec.features import FeatureTable, RedisOnlineStore, SqliteOnlineStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port, stopped after the module."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _config(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    if kind == "sqlite":
        return SqliteOnlineStore(type="sqlite", path=str(tmp_path / "online.sqlite"))
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        db = len(request.node.name) % 15 + 1  # a fresh db per test keeps tests apart
        import redis

        redis.Redis.from_url(url, db=db).flushdb()
        return RedisOnlineStore(type="redis", url=f"{url[:-2]}/{db}")
    raise AssertionError(f"online store backend `{kind}` has no test configuration: add one here")


@pytest.fixture(params=sorted(ONLINE_STORES) or ["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    s = open_online_store(_config(request.param, tmp_path, request), tmp_path)
    yield s
    s.close()


def test_registry_holds_both_backends() -> None:
    from loopml.features import stores  # noqa: F401

    assert {"sqlite", "redis"} <= set(ONLINE_STORES)


def test_write_read_round_trip_and_protocol(store: Any) -> None:
    assert isinstance(store, OnlineStore)
    now = time.time()
    recs = [OnlineRecord((7,), {"ctr": 0.125, "n": 3.0, "name": "x"}, now - 10, now - 5),
            OnlineRecord(("a", 2), {"ctr": None, "n": 1.0, "name": None}, now - 20, now - 20)]
    assert store.write("t", recs) == 2
    got = store.read("t", [7, ("a", 2), 8, "7", 7.0])
    assert got[0] == {"ctr": 0.125, "n": 3.0, "name": "x", "_event_time": now - 10, "_created_at": now - 5}
    assert got[1]["ctr"] is None and got[1]["n"] == 1.0
    assert got[2] is None
    assert got[3] == got[0] and got[4] == got[0]  # 7, "7" and 7.0 are one entity
    assert store.read("other", [7]) == [None]
    assert store.read("t", []) == []


def test_older_event_never_overwrites_newer(store: Any) -> None:
    now = time.time()
    store.write("t", [OnlineRecord((1,), {"v": 2.0}, now - 10, now - 10)])
    store.write("t", [OnlineRecord((1,), {"v": 1.0}, now - 100, now)])  # a late, older value
    assert store.read("t", [1])[0]["v"] == 2.0
    store.write("t", [OnlineRecord((1,), {"v": 3.0}, now - 1, now)])
    assert store.read("t", [1])[0]["v"] == 3.0


def test_ttl_per_table(store: Any) -> None:
    now = time.time()
    store.write("fresh", [OnlineRecord((1,), {"v": 1.0}, now - 100, now - 100)], ttl_seconds=1000)
    store.write("stale", [OnlineRecord((1,), {"v": 1.0}, now - 100, now - 100),
                          OnlineRecord((2,), {"v": 2.0}, now - 1, now - 1)], ttl_seconds=50)
    assert store.read("fresh", [1])[0]["v"] == 1.0
    assert store.read("stale", [1, 2]) == [None, pytest.approx({"v": 2.0, "_event_time": now - 1,
                                                                 "_created_at": now - 1})]


@pytest.fixture(scope="module")
def user_table(ratings: pa.Table) -> tuple[FeatureTable, pa.Table, pa.Table]:
    spec = FeatureTable(entity=["user_id"], timestamp="ts", aggregations=[
        {"name": "u_n", "function": "count"},
        {"name": "u_mean_30d", "function": "mean", "column": "rating", "window_days": 30}])
    return spec, ratings, compute_feature_table("user", spec, ratings)


def test_materialize_then_parity_is_clean_and_skew_is_reported(store: Any, user_table: Any) -> None:
    spec, source, ft = user_table
    written = materialize(store, {"user": (spec, ft)})
    latest = latest_values("user", spec, ft)
    assert written == {"user": latest.num_rows}
    row = latest.to_pylist()[0]
    got = store.read("user", [row["user_id"]])[0]
    assert got["u_n"] == row["u_n"] and got["u_mean_30d"] == row["u_mean_30d"]
    report = check_parity(store, {"user": (spec, source)}, sample=50)
    assert report.ok and report.checked["user"] >= 50
    # plant skew: a newer online value that the offline data does not support
    victim = store.sample_keys("user", 1)[0]
    store.write("user", [OnlineRecord((victim,), {"u_n": -1.0, "u_mean_30d": 2.5}, got["_event_time"] + 1e9,
                                      time.time())])
    bad = check_parity(store, {"user": (spec, source)}, sample=1000)
    assert not bad.ok
    assert {(m.entity, m.feature) for m in bad.mismatches} >= {(victim, "u_n"), (victim, "_event_time")}


def test_materialize_as_of_sees_only_available_values(store: Any, user_table: Any) -> None:
    spec, _, ft = user_table
    cut = dt.datetime(1997, 12, 1)
    materialize(store, {"user": (spec, ft)}, as_of=cut)
    sample = store.sample_keys("user", 20)
    for rec in store.read("user", sample):
        assert rec is not None and rec["_event_time"] <= cut.replace(tzinfo=dt.UTC).timestamp()
    before = ft.filter(pc.less_equal(ft.column("event_time"), pa.scalar(cut, pa.timestamp("us"))))
    assert store.count("user") == len(set(before.column("user_id").to_pylist()))


def test_online_features_enrich_request_rows_like_the_offline_join(store: Any, user_table: Any) -> None:
    """Serving: the online values for a request equal the offline point-in-time values at 'now'."""
    from loopml.errors import DataError
    from loopml.features.offline import point_in_time_join
    from loopml.features.online import OnlineFeatures

    spec, _, ft = user_table
    materialize(store, {"user": (spec, ft)})
    online = OnlineFeatures({"user": spec}, store)
    assert online.feature_names == ["u_n", "u_mean_30d"]
    users = sorted(set(ft.column("user_id").to_pylist()))[:20]
    rows = online.enrich_many([{"user_id": u, "item_id": 1} for u in users] + [{"user_id": -5, "item_id": 1}])
    later = pa.table({"user_id": users, "ts": pa.array([dt.datetime(2030, 1, 1)] * len(users), pa.timestamp("us"))})
    offline = point_in_time_join(later, "ts", {"user": (spec, ft)}).to_pylist()
    for got, want in zip(rows, offline):
        assert got["u_n"] == want["u_n"] and got["u_mean_30d"] == want["u_mean_30d"]
    assert rows[-1]["u_n"] is None and rows[-1]["item_id"] == 1
    with pytest.raises(DataError, match="user_id"):
        online.enrich({"item_id": 1})


def test_vector_parity_through_a_fitted_transform(store: Any, user_table: Any, ratings: pa.Table) -> None:
    """Serving path (online store + transform_row) against training path (PIT join + transform_batch)."""
    from loopml.features import FeaturePipeline
    from loopml.features.offline import point_in_time_join
    from loopml.features.parity import check_vector_parity
    from loopml.spec.features import Feature

    spec, source, ft = user_table
    joined = point_in_time_join(ratings, "ts", {"user": (spec, ft)})
    pipe = FeaturePipeline([
        Feature(column="u_n", transforms=[{"type": "impute", "strategy": "constant", "fill_value": 0},
                                          {"type": "log"}]),
        Feature(column="u_mean_30d", transforms=[{"type": "impute", "add_indicator": True}, {"type": "scale"}]),
        Feature(column="item_id", kind="categorical", transforms=[{"type": "hash", "n_buckets": 64}]),
        Feature(column="ts", kind="timestamp", transforms=[{"type": "date_parts", "parts": ["dayofweek"]}]),
    ]).fit(joined)
    materialize(store, {"user": (spec, ft)})
    report = check_vector_parity(store, {"user": (spec, source)}, joined, "ts", pipe, sample=40)
    assert report.ok and report.compared == 40
    # skew in the online store shows up as differing model inputs, named by column
    victim = joined.column("user_id")[0].as_py()
    got = store.read("user", [victim])[0]
    store.write("user", [OnlineRecord((victim,), {"u_n": 1.0, "u_mean_30d": 1.0}, got["_event_time"],
                                      got["_created_at"])])
    mine = joined.filter(pc.equal(joined.column("user_id"), victim))
    bad = check_vector_parity(store, {"user": (spec, source)}, mine, "ts", pipe, sample=5)
    assert not bad.ok and {m.column for m in bad.mismatches} >= {"u_n", "u_mean_30d"}


def test_concurrent_readers_and_a_writer(store: Any) -> None:
    """A serving process reads from several threads while materialisation writes."""
    from concurrent.futures import ThreadPoolExecutor

    now = time.time()
    store.write("t", [OnlineRecord((i,), {"v": float(i)}, now - 10, now - 10) for i in range(200)])

    def reader(seed: int) -> int:
        bad = 0
        for j in range(300):
            k = (seed * 7 + j) % 200
            got = store.read("t", [k, (k + 1) % 200])
            bad += got[0] is None or got[0]["v"] not in (float(k), float(k) + 1000)
        return bad

    def writer() -> int:
        for j in range(20):
            store.write("t", [OnlineRecord((i,), {"v": float(i) + 1000}, now - 5 + j, now) for i in range(0, 200, 7)])
        return 0

    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(reader, s) for s in range(4)] + [pool.submit(writer)]
        assert sum(f.result() for f in futures) == 0
    assert store.read("t", [7])[0]["v"] == 1007.0


def test_materialize_streams_records_in_batches_with_every_entity_written(
    store: Any, user_table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import loopml.features.materialize as mat

    spec, _, ft = user_table
    latest = latest_values("user", spec, ft)
    assert latest.num_rows > 3 * 7
    whole = list(mat.records(spec, latest, batch=latest.num_rows))
    assert list(mat.records(spec, latest, batch=7)) == whole  # batches give the records one table gives
    made: list[int] = []
    real = mat.records

    def counting(spec: Any, latest: pa.Table, batch: int | None = None) -> Iterator[OnlineRecord]:
        for r in real(spec, latest, batch):
            made.append(len(made))
            yield r

    monkeypatch.setattr(mat, "RECORD_BATCH", 7)
    monkeypatch.setattr(mat, "records", counting)
    written = materialize(store, {"user": (spec, ft)})
    assert written == {"user": latest.num_rows} == {"user": len(made)}  # the store consumed the stream whole
    keys = [r.key[0] for r in whole]
    got = store.read("user", keys)
    assert [g["u_n"] for g in got] == [r.values["u_n"] for r in whole]
    assert [g["_event_time"] for g in got] == [r.event_time for r in whole]
