"""Schema inference leaves ids and event time open-ended: a new day of logs is not out of range."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from loopml.spec import parse_spec_text
from loopml.validation import infer_schema, profile_table, validate_table
from loopml.validation.schema import open_range_columns


def _day(day: int, n: int = 5000) -> pa.Table:
    rng = np.random.default_rng(day)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC) + dt.timedelta(days=day)
    return pa.table({
        "impression_id": np.arange(day * n, (day + 1) * n, dtype=np.int64) + 10**8,
        "ts": pa.array([start + dt.timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, 86400, n))],
                       pa.timestamp("us", tz="UTC")),
        "user": rng.integers(0, 10**9, n),
        "ad_id": rng.integers(0, 500 + 100 * day, n),
        "position": rng.integers(1, 4, n),
        "price": rng.normal(10, 1, n),
    })


def test_keys_ids_and_event_time_get_no_range_but_measurements_do() -> None:
    spec = parse_spec_text("task: {entity_keys: [user], timestamp: ts}\n")
    schema = infer_schema(profile_table(_day(0)), timestamp="ts", open_range=open_range_columns(spec))
    for name in ("impression_id", "ts", "user", "ad_id"):
        assert schema.columns[name].min is None and schema.columns[name].max is None, name
    assert schema.columns["price"].min is not None and schema.columns["price"].max is not None
    assert schema.columns["position"].domain == [1, 2, 3]


def test_next_day_of_logs_is_not_quarantined_but_a_bad_measurement_is() -> None:
    ref = _day(0)
    spec = parse_spec_text("task: {entity_keys: [user], timestamp: ts}\n")
    ref_profile = profile_table(ref)
    schema = infer_schema(ref_profile, timestamp="ts", open_range=open_range_columns(spec))
    nxt = _day(3)
    price = nxt.column("price").to_numpy().copy()
    price[:7] = 1e6
    nxt = nxt.set_column(nxt.schema.get_field_index("price"), "price", pa.array(price))
    outcome = validate_table(nxt, schema, ref_profile, spec.data.verification)
    failed = {f"{c.check}:{c.column}" for c in outcome.report.checks if not c.passed}
    assert "range:price" in failed
    assert not any(k.startswith("range:") and k != "range:price" for k in failed)
    assert int((~outcome.keep).sum()) == 7
