"""Train/serve skew check: recompute a sample of online feature vectors offline and compare them."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from loopml.features.materialize import records
from loopml.features.offline import compute_feature_table, connect, feature_columns, latest_values
from loopml.features.store import entity_key, expired
from loopml.spec.features import FeatureTable


@dataclass
class Mismatch:
    """One feature value of one entity that differs between the online store and the offline recomputation."""

    table: str
    entity: str
    feature: str
    online: Any
    offline: Any


@dataclass
class ParityReport:
    """What the parity check compared and what differed."""

    checked: dict[str, int] = field(default_factory=dict)  # entities compared per table
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every compared value matched."""
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return {"ok": self.ok, "checked": self.checked,
                "mismatches": [m.__dict__ for m in self.mismatches]}


def _same(a: Any, b: Any, rel: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel, abs_tol=rel)
    return bool(a == b)


def check_parity(store: Any, tables: Mapping[str, tuple[FeatureTable, pa.Table]], *, sample: int = 100,
                 as_of: Any | None = None, rel_tol: float = 1e-9, seed: int = 0,
                 now: float | None = None) -> ParityReport:
    """Compare ``sample`` online entities per table with values recomputed offline from the source rows.

    ``tables`` maps a table name to (its definition, its *source* rows): the values are recomputed
    from scratch with the same window SQL, not read back from the materialised table.
    """
    report = ParityReport()
    con = connect()
    now = time.time() if now is None else now
    for name, (spec, source) in tables.items():
        ft = compute_feature_table(name, spec, source, con=con)
        offline = {entity_key(r.key): r for r in records(spec, latest_values(name, spec, ft, as_of=as_of, con=con))}
        keys = store.sample_keys(name, sample, seed=seed)
        # entities the offline side has but the online side may have lost
        extra = [k for k in sorted(offline)[: max(1, sample // 10)] if k not in set(keys)]
        keys = keys + extra
        online = store.read(name, keys)
        feats = feature_columns(spec, ft)
        for k, got in zip(keys, online):
            want = offline.get(k)
            if want is not None and expired(want.event_time, spec.ttl_seconds, now):
                want = None
            if want is None or got is None:
                if (want is None) != (got is None):
                    report.mismatches.append(Mismatch(name, k, "*", "present" if got else None,
                                                      "present" if want else None))
                continue
            for f in feats:
                if not _same(got.get(f), want.values.get(f), rel_tol):
                    report.mismatches.append(Mismatch(name, k, f, got.get(f), want.values.get(f)))
            if not _same(got["_event_time"], want.event_time, 0.0):
                report.mismatches.append(Mismatch(name, k, "_event_time", got["_event_time"], want.event_time))
        report.checked[name] = len(keys)
    return report


@dataclass
class VectorMismatch:
    """One model-input column that differs between the online and the offline feature vector of a row."""

    row: int
    column: str
    online: float
    offline: float


@dataclass
class VectorParityReport:
    """Rows whose full model-input vector was built both ways, and what differed."""

    compared: int = 0
    mismatches: list[VectorMismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every vector matched."""
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return {"ok": self.ok, "compared": self.compared, "mismatches": [m.__dict__ for m in self.mismatches]}


def check_vector_parity(store: Any, tables: Mapping[str, tuple[FeatureTable, pa.Table]], examples: pa.Table,
                        timestamp: str, transform: Any, *, sample: int = 50, seed: int = 0) -> VectorParityReport:
    """The serving path against the training path, for whole model-input vectors.

    For a sample of example rows (their entity-table feature columns removed): the online vector is
    ``transform.transform_row`` of the row enriched from the online store (what serving does); the
    offline vector is ``transform.transform_batch`` of the same rows joined point-in-time, as of now,
    with tables recomputed from ``tables`` (definition, source rows). Any differing column is reported.
    """
    import datetime as dt

    import numpy as np

    from loopml.features.offline import point_in_time_join
    from loopml.features.online import OnlineFeatures

    con = connect()
    computed = {n: (s, compute_feature_table(n, s, src, con=con)) for n, (s, src) in tables.items()}
    feats = {f for s, ft in computed.values() for f in feature_columns(s, ft)}
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(examples.num_rows, size=min(sample, examples.num_rows), replace=False))
    rows = examples.take(pa.array(idx)).drop_columns([c for c in examples.column_names if c in feats])
    now = pa.array([dt.datetime.now(dt.UTC).replace(tzinfo=None)] * rows.num_rows, type=pa.timestamp("us"))
    at_now = rows.set_column(rows.schema.get_field_index(timestamp), timestamp, now)
    offline = transform.transform_batch(point_in_time_join(at_now, timestamp, computed, con=con))
    online_rows = OnlineFeatures({n: s for n, (s, _) in computed.items()}, store,
                                 {n: feature_columns(s, ft) for n, (s, ft) in computed.items()}
                                 ).enrich_many(at_now.to_pylist())
    report = VectorParityReport(compared=rows.num_rows)
    names = transform.feature_names
    for i, r in enumerate(online_rows):
        v = transform.transform_row(r)
        diff = ~((v == offline[i]) | (np.isnan(v) & np.isnan(offline[i])))
        for j in np.flatnonzero(diff).tolist():
            report.mismatches.append(VectorMismatch(int(idx[i]), names[j], float(v[j]), float(offline[i][j])))
    return report
