"""End to end: `loopml run --until features` on MovieLens, then `loopml features ...` on the result."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

SPEC = """
spec_version: 1
project: {{name: ml-features}}
task:
  type: binary
  target: label
  timestamp: ts
  entity_keys: [user_id]
  item_key: item_id
data:
  sources:
    ratings:
      type: csv
      path: {data}/movielens_100k/u.data
      delimiter: "\\t"
      header: false
      columns: [user_id, item_id, rating, unix_time]
  transform: >
    SELECT user_id, item_id, rating, to_timestamp(unix_time) AS ts,
           CASE WHEN item_id % 97 = 0 THEN NULL ELSE item_id % 7 END AS shelf
    FROM ratings WHERE user_id <= 60
  labels: {{type: threshold, column: rating, op: ">=", value: 4, label: label}}
features:
  inputs:
    - {{column: shelf, kind: numeric, transforms: [{{type: impute, strategy: drop}}]}}
    - {{column: item_id, kind: categorical, transforms: [{{type: target_encode, smoothing: 10}}]}}
    - {{column: user_like_30d, kind: numeric, transforms: [{{type: impute, strategy: constant, fill_value: -1}}]}}
  tables:
    user:
      entity: [user_id]
      timestamp: ts
      ttl_seconds: 1.0e10
      aggregations:
        - {{name: user_like_30d, function: rate, column: label, window_days: 30}}
        - {{name: user_n, function: count}}
    item:
      entity: [item_id]
      timestamp: ts
      aggregations:
        - {{name: item_mean, function: mean, column: rating}}
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory, datasets: Path) -> Path:
    from tests.conftest import run_cli

    proj = tmp_path_factory.mktemp("proj")
    (proj / "loopml.yaml").write_text(SPEC.format(data=datasets))
    run_cli("run", "-p", str(proj), "--until", "features", "-q", check=True)
    return proj


def _outputs(proj: Path) -> dict[str, str]:
    con = sqlite3.connect(proj / ".loopml" / "metadata.sqlite")
    row = con.execute("SELECT outputs FROM executions WHERE stage='features' AND status='success' "
                      "ORDER BY ended_at DESC LIMIT 1").fetchone()
    return json.loads(row[0])


def test_stage_joins_tables_and_quarantines_dropped_rows(ran: Path) -> None:
    outs = _outputs(ran)
    d = outs["table"]
    table = pq.read_table(ran / ".loopml" / "artifacts" / d[:2] / d)
    assert {"user_like_30d", "user_n", "item_mean", "label", "ts"} <= set(table.column_names)
    assert table.column("shelf").null_count == 0  # rows missing `shelf` (impute: drop) were quarantined
    con = sqlite3.connect(ran / ".loopml" / "metadata.sqlite")
    n_q = con.execute("SELECT count(*) FROM data_quarantine WHERE \"check\" = 'features.impute_drop'").fetchone()[0]
    assert n_q > 0
    assert "feature_tables" in outs
    online = sqlite3.connect(ran / ".loopml" / "online.sqlite")
    assert online.execute("SELECT count(*) FROM online_features WHERE table_name='user'").fetchone()[0] == 60


def test_cli_lookup_parity_show_materialize(ran: Path, cli) -> None:  # type: ignore[no-untyped-def]
    out = cli("features", "lookup", "user", "1", "999999", "-p", str(ran), check=True).stdout
    assert "user_like_30d" in out and "missing or expired" in out
    # a transform fitted on the joined features table, as training would store it
    from loopml.features import FeaturePipeline
    from loopml.spec import load_spec

    spec = load_spec(ran / "loopml.yaml")
    d = _outputs(ran)["table"]
    joined = pq.read_table(ran / ".loopml" / "artifacts" / d[:2] / d)
    pipe = FeaturePipeline.from_spec(spec.features, task=spec.task).fit(joined, joined.column("label").to_numpy())
    (ran / "transform.json").write_text(json.dumps(pipe.to_json()))
    par = cli("features", "parity", "-p", str(ran), "--json", "--transform", str(ran / "transform.json"), check=True)
    report = json.loads(par.stdout)
    assert report["ok"] and report["checked"]["user"] >= 60
    assert report["vectors"]["ok"] and report["vectors"]["compared"] >= 50
    # train/serve skew: an online value changed behind the store's back is reported, with exit code 1
    con = sqlite3.connect(ran / ".loopml" / "online.sqlite")
    con.execute("UPDATE online_features SET value = '{\"user_like_30d\": 0.123456, \"user_n\": 1.0}' "
                "WHERE table_name='user' AND entity='1'")
    con.commit()
    bad = cli("features", "parity", "-p", str(ran), "--sample", "100")
    assert bad.returncode == 1 and "user_like_30d" in bad.stdout and "0.123456" in bad.stdout
    mat = cli("features", "materialize", "-p", str(ran), check=True).stdout
    assert "user" in mat and "item" in mat
    # re-materialising rewrites the value (same event time, so the offline value wins again)
    assert cli("features", "parity", "-p", str(ran)).returncode == 0
    show = cli("features", "show", "-p", str(ran), "--json", check=True).stdout
    desc = json.loads(show)
    assert "preview" in desc["source"]
    by_name = {d["feature"]: d for d in desc["features"]}
    assert by_name["item_id"]["chain"].startswith("target_encode") and by_name["item_id"]["stats"]["target_encode"]
    assert by_name["shelf"]["stats"]["impute"]["strategy"] == "drop"


def test_cli_errors_are_clear(ran: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("features", "lookup", "nope", "1", "-p", str(ran))
    assert r.returncode != 0 and "nope" in r.stderr and "user" in r.stderr
    empty = ran.parent / "empty"
    empty.mkdir(exist_ok=True)
    r = cli("features", "parity", "-p", str(empty))  # a folder that is no project: named, nothing created
    assert r.returncode != 0 and "holds no loopml.yaml" in r.stderr and not (empty / ".loopml").exists()
