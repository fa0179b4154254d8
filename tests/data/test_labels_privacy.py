"""Natural labels (threshold, event within a window), hand labels and privacy rules."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pyarrow as pa
import pytest

from loopml.data.etl import build_examples
from loopml.errors import DataError
from loopml.spec import parse_spec_text


def test_threshold_label_on_movielens(datasets: Path) -> None:
    spec = parse_spec_text(
        f"data:\n  sources:\n    ratings: {{type: csv, path: '{datasets}/movielens_100k/u.data', delimiter: '\\t',"
        " header: false, columns: [user_id, item_id, rating, ts]}\n"
        "  labels: {type: threshold, column: rating, op: '>=', value: 4, label: liked}\n"
    )
    t = build_examples(spec, datasets).table
    assert t.num_rows == 100_000
    assert pa.compute.sum(t.column("liked")).as_py() == 34_174 + 21_201
    assert t.column("user_id").to_pylist()[:3] == [196, 186, 22]  # source order kept


def test_event_within_window_label(tmp_path: Path) -> None:
    (tmp_path / "imp.csv").write_text(
        "imp_id,user,ad,ts\n"
        "1,u1,a,2024-01-01 10:00:00\n"  # click 30 s later -> 1
        "2,u1,b,2024-01-01 10:00:00\n"  # click on other ad only -> 0
        "3,u2,a,2024-01-01 10:00:00\n"  # click 2 h later (window 1 h) -> 0
        "4,u3,a,2024-01-01 10:00:00\n"  # click before the impression -> 0
    )
    (tmp_path / "clk.csv").write_text(
        "user,ad,ts\nu1,a,2024-01-01 10:00:30\nu1,c,2024-01-01 10:00:10\n"
        "u2,a,2024-01-01 12:00:00\nu3,a,2024-01-01 09:59:00\n"
    )
    spec = parse_spec_text(
        "data:\n  sources:\n    imp: {type: csv, path: imp.csv}\n    clk: {type: csv, path: clk.csv}\n"
        "  labels: {type: event_within_window, impressions: imp, events: clk, keys: [user, ad],"
        " impression_time: ts, event_time: ts, window_seconds: 3600, label: clicked}\n"
    )
    t = build_examples(spec, tmp_path).table
    assert t.column("imp_id").to_pylist() == [1, 2, 3, 4]
    assert t.column("clicked").to_pylist() == [1, 0, 0, 0]


def test_window_label_on_epoch_seconds(tmp_path: Path) -> None:
    (tmp_path / "imp.csv").write_text("k,t\n1,100\n2,100\n")
    (tmp_path / "ev.csv").write_text("k,t\n1,150\n2,400\n")
    spec = parse_spec_text(
        "data:\n  sources:\n    imp: {type: csv, path: imp.csv}\n    ev: {type: csv, path: ev.csv}\n"
        "  labels: {type: event_within_window, impressions: imp, events: ev, keys: [k],"
        " impression_time: t, event_time: t, window_seconds: 60}\n"
    )
    assert build_examples(spec, tmp_path).table.column("label").to_pylist() == [1, 0]


def test_hand_labels_override_natural_label(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("id,score\n1,5\n2,1\n3,4\n")
    (tmp_path / "hand.csv").write_text("id,label\n2,1\n3,0\n")
    spec = parse_spec_text(
        "data:\n  sources:\n    r: {type: csv, path: r.csv}\n"
        "  labels: {type: threshold, column: score, op: '>=', value: 4}\n"
        "  hand_labels: {path: hand.csv, keys: [id]}\n"
    )
    t = build_examples(spec, tmp_path).table
    assert t.column("label").to_pylist() == [1, 1, 0]


def test_hand_labels_with_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("id,x\n1,5\n")
    (tmp_path / "hand.csv").write_text("id,label\n1,1\n1,0\n")
    spec = parse_spec_text(
        "data:\n  sources:\n    r: {type: csv, path: r.csv}\n  hand_labels: {path: hand.csv, keys: [id]}\n"
    )
    with pytest.raises(DataError, match=r"key \{'id': 1\} appears 2 times"):
        build_examples(spec, tmp_path)


def test_transform_joins_sources(datasets: Path) -> None:
    d = datasets / "movielens_100k"
    spec = parse_spec_text(
        "data:\n  sources:\n"
        f"    ratings: {{type: csv, path: '{d}/u.data', delimiter: '\\t', header: false,"
        " columns: [user_id, item_id, rating, ts]}\n"
        f"    users: {{type: csv, path: '{d}/u.user', delimiter: '|', header: false,"
        " columns: [user_id, age, gender, occupation, zip]}\n"
        "  transform: SELECT r.*, u.age, u.gender FROM ratings r JOIN users u USING (user_id)"
        " WHERE r.rating >= 3 ORDER BY r.ts, r.user_id, r.item_id\n"
    )
    res = build_examples(spec, datasets)
    t = res.table
    assert t.num_rows == 27_145 + 34_174 + 21_201
    assert {"age", "gender"} <= set(t.column_names)
    assert res.source_rows == {"ratings": 100_000, "users": 943}


PRIV_SPEC = """
requirements:
  privacy:
    drop: [zip]
    hash: [user_id]
    coarsen:
      - {column: age, method: bucket, step: 10}
      - {column: ts, method: truncate_time, unit: day}
      - {column: city, method: prefix, step: 2}
    hash_key_env: TEST_LOOPML_KEY
data:
  sources:
    u: {type: csv, path: u.csv}
"""


def _users(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text(
        "user_id,zip,age,ts,city\n"
        "alice,12345,34,2024-03-05 13:45:00,Berlin\n"
        "bob,99999,61,2024-03-06 01:00:00,Boston\n"
        "alice,12345,35,2024-03-07 23:59:59,Berlin\n"
    )


def test_privacy_drop_hash_coarsen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _users(tmp_path)
    monkeypatch.setenv("TEST_LOOPML_KEY", "k3y")
    t = build_examples(parse_spec_text(PRIV_SPEC), tmp_path).table
    assert "zip" not in t.column_names
    ids = t.column("user_id").to_pylist()
    expected = hmac.new(b"k3y", b"alice", hashlib.sha256).hexdigest()[:32]
    assert ids[0] == ids[2] == expected and ids[1] != ids[0]
    assert "alice" not in ids
    assert t.column("age").to_pylist() == [30, 60, 30]
    assert [d.day for d in t.column("ts").to_pylist()] == [5, 6, 7]
    assert all(d.hour == 0 and d.minute == 0 for d in t.column("ts").to_pylist())
    assert t.column("city").to_pylist() == ["Be", "Bo", "Be"]


def test_privacy_hash_needs_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _users(tmp_path)
    monkeypatch.delenv("TEST_LOOPML_KEY", raising=False)
    with pytest.raises(DataError, match=r"\$TEST_LOOPML_KEY is not set") as err:
        build_examples(parse_spec_text(PRIV_SPEC), tmp_path)
    assert "export TEST_LOOPML_KEY" in (err.value.hint or "")


def test_privacy_different_key_gives_different_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _users(tmp_path)
    monkeypatch.setenv("TEST_LOOPML_KEY", "one")
    a = build_examples(parse_spec_text(PRIV_SPEC), tmp_path).table.column("user_id").to_pylist()
    monkeypatch.setenv("TEST_LOOPML_KEY", "two")
    b = build_examples(parse_spec_text(PRIV_SPEC), tmp_path).table.column("user_id").to_pylist()
    assert set(a).isdisjoint(b)


def test_coarsen_wrong_type_is_clear(tmp_path: Path) -> None:
    _users(tmp_path)
    spec = parse_spec_text(
        "requirements: {privacy: {coarsen: [{column: city, method: round, step: 5}]}}\n"
        "data:\n  sources:\n    u: {type: csv, path: u.csv}\n"
    )
    with pytest.raises(DataError, match=r"coarsen `city` \(round\): column type is string, expected a number"):
        build_examples(spec, tmp_path)
