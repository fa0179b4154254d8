"""Ranking evaluated as it is used: each test user ranks the catalogue minus its history."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from loopml.evaluation.catalogue import catalogue_candidates
from loopml.evaluation.data import EvalData
from loopml.evaluation.metrics import compute_metric
from loopml.spec.evaluation import RankingProtocol

# catalogue a..e; u1 saw a, b before the test period, u2 saw c
HISTORY = pa.table({"user": ["u1", "u1", "u2"], "item": ["a", "b", "c"], "genre": ["x", "y", "x"],
                    "age": [30, 30, 50], "rel": [1, 1, 1]})
# in the test period u1 liked e and not c; u2 liked a and d (d appears nowhere else: only the test has it)
TEST = pa.table({"user": ["u1", "u1", "u2", "u2"], "item": ["c", "e", "a", "d"], "genre": ["x", "z", "x", "y"],
                 "age": [31, 31, 50, 50], "rel": [0, 1, 1, 1]})
SCORE = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0}  # a fixed item score (a popularity ranking)


def _candidates(protocol: str, **kw: int) -> tuple[list[tuple[str, str, float]], EvalData]:
    c = catalogue_candidates(HISTORY, TEST, np.asarray(TEST.column("rel").to_numpy(), dtype=float), "user", "item",
                             "rel", RankingProtocol(protocol=protocol, **kw), seed=0)  # type: ignore[arg-type]
    items = c.table.column("item").to_pylist()
    score = np.array([SCORE[i] for i in items])
    rows = sorted(zip(c.table.column("user").to_pylist(), items, c.relevance.tolist()))
    return rows, EvalData("ranking", c.relevance, score, groups=c.groups, items=c.items)


def test_history_is_excluded_and_unseen_catalogue_items_compete() -> None:
    rows, data = _candidates("full_catalogue")
    assert rows == [
        ("u1", "c", 0.0), ("u1", "d", 0.0), ("u1", "e", 1.0),  # a, b: seen by u1 in train; d: never rated by u1
        ("u2", "a", 1.0), ("u2", "b", 0.0), ("u2", "d", 1.0), ("u2", "e", 0.0),  # c: seen by u2
    ]
    # by hand: u1 ranks c, d, e -> its relevant e at rank 3: DCG 1/log2(4) = 0.5, ideal 1 -> 0.5
    #          u2 ranks a, b, d, e -> relevant at ranks 1 and 3: (1 + 0.5) / (1 + 1/log2(3))
    u1, u2 = 0.5, 1.5 / (1 + 1 / math.log2(3))
    assert compute_metric("ndcg@4", data) == pytest.approx((u1 + u2) / 2, abs=1e-12)
    assert compute_metric("recall@2", data) == pytest.approx((0.0 + 0.5) / 2)
    assert compute_metric("mrr", data) == pytest.approx((1 / 3 + 1.0) / 2)


def test_test_items_protocol_is_the_optimistic_old_way() -> None:
    # only the rated items: u1 ranks c, e (e at rank 2), u2 ranks a, d (both on top)
    data = EvalData("ranking", np.asarray(TEST.column("rel").to_numpy(), dtype=float),
                    np.array([SCORE[i] for i in TEST.column("item").to_pylist()]),
                    groups=np.asarray(TEST.column("user").to_numpy(zero_copy_only=False)))
    assert compute_metric("ndcg@4", data) == pytest.approx((1 / math.log2(3) + 1.0) / 2)
    _, full = _candidates("full_catalogue")
    assert compute_metric("ndcg@4", full) < compute_metric("ndcg@4", data)


def test_item_columns_come_from_the_item_user_columns_from_the_user() -> None:
    c = catalogue_candidates(HISTORY, TEST, np.asarray(TEST.column("rel").to_numpy(), dtype=float), "user", "item",
                             "rel", RankingProtocol(protocol="full_catalogue"), seed=0)
    got = {(u, i): (g, a) for u, i, g, a in zip(*(c.table.column(k).to_pylist() for k in ("user", "item", "genre", "age")))}
    assert got[("u1", "d")] == ("y", 31)  # genre is an item attribute; age the user's, as of its first test row
    assert got[("u2", "b")] == ("y", 50)
    assert "rel" not in c.table.column_names
    assert c.info["item_columns"] == ["genre", "item"] and c.info["candidate_rows"] == 7


def test_sampled_protocol_is_seeded_and_keeps_every_test_item() -> None:
    rows, _ = _candidates("sampled", sampled_items=1)
    again, _ = _candidates("sampled", sampled_items=1)
    assert rows == again
    by_user: dict[str, list[tuple[str, float]]] = {}
    for u, i, r in rows:
        by_user.setdefault(u, []).append((i, r))
    # u1: its test items c, e + 1 of {d}; u2: a, d + 1 of {b, e}; never an item from the user's history
    assert {i for i, _ in by_user["u1"]} == {"c", "d", "e"}
    assert {"a", "d"} < {i for i, _ in by_user["u2"]} and len(by_user["u2"]) == 3
    assert "c" not in {i for i, _ in by_user["u2"]}
    assert RankingProtocol(protocol="auto", max_candidate_rows=5).protocol == "auto"
    c = catalogue_candidates(HISTORY, TEST, np.ones(4), "user", "item", "rel",
                             RankingProtocol(protocol="auto", max_candidate_rows=5, sampled_items=1), seed=0)
    assert c.protocol == "sampled"  # 2 users x 5 items > 5 candidate rows
