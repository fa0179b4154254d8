"""Ranking evaluated as it is used: each test user ranks the catalogue, not only what it rated.

Re-ranking only the items a user interacted with in the test period tells the model which
items matter; a recommender in production ranks every item the user has not seen. The
protocols (``evaluation.ranking.protocol``):

- ``full_catalogue``: every catalogue item (the items of the train, valid and test splits)
  except the ones the user interacted with in the history (train and valid splits). An item's
  relevance is the user's test label for it (the largest when repeated), 0 for items the user
  did not touch in the test period.
- ``sampled``: the user's test items plus ``sampled_items`` items drawn uniformly without
  replacement (``numpy.random.default_rng(evaluation.seed)``, users in sorted order) from the
  rest of the catalogue minus the history. Cheaper on large catalogues; the metrics read higher
  than on the full catalogue, since fewer items compete.
- ``test_items``: the old protocol, kept for comparison (only the test rows are ranked).
- ``auto``: ``full_catalogue`` up to ``max_candidate_rows`` user-item pairs, else ``sampled``.

A candidate row needs every input column: columns constant per item (its id, genres, year)
come from the item's latest row in the data; every other column (the user's attributes and the
context, e.g. the hour) from the user's first test row — the moment of the recommendation.

>>> import pyarrow as pa
>>> from loopml.spec.evaluation import RankingProtocol
>>> hist = pa.table({"u": [1, 1, 2], "i": ["a", "b", "a"], "rel": [1, 0, 1]})
>>> test = pa.table({"u": [1, 2], "i": ["c", "b"], "rel": [1, 1]})
>>> c = catalogue_candidates(hist, test, test.column("rel").to_numpy(), "u", "i", "rel", RankingProtocol(), 0)
>>> sorted(zip(c.table.column("u").to_pylist(), c.table.column("i").to_pylist(), c.relevance.tolist()))
[(1, 'c', 1.0), (2, 'b', 1.0), (2, 'c', 0.0)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loopml.errors import DataError
from loopml.spec.evaluation import RankingProtocol


@dataclass
class Candidates:
    """The rows a ranking model scores under a catalogue protocol, with their relevance."""

    table: pa.Table
    relevance: np.ndarray
    groups: np.ndarray
    items: np.ndarray
    protocol: str
    info: dict[str, Any] = field(default_factory=dict)


def _codes(values: pa.ChunkedArray | pa.Array, dictionary: pa.Array) -> np.ndarray:
    idx = pc.fill_null(pc.index_in(values, value_set=dictionary), -1)
    if isinstance(idx, pa.ChunkedArray):
        idx = idx.combine_chunks()
    return np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.int64)


def _item_level(union: pa.Table, item_key: str, column: str) -> bool:
    """Whether ``column`` holds one value per item in ``union`` (an item attribute)."""
    agg = union.select([item_key, column]).group_by(item_key).aggregate([(column, "count_distinct")])
    counts = agg.column(f"{column}_count_distinct")
    return len(counts) == 0 or int(pc.max(counts).as_py() or 0) <= 1


def catalogue_candidates(
    history: pa.Table,
    test: pa.Table,
    relevance: np.ndarray,
    group_key: str,
    item_key: str,
    target: str,
    cfg: RankingProtocol,
    seed: int,
) -> Candidates:
    """Candidate rows for every test user under ``cfg.protocol`` (see the module docstring).

    Parameters
    ----------
    history
        What the model could know: the train and valid splits (their interactions are excluded).
    test
        The test split (labelled rows); ``relevance`` is each row's encoded label.
    group_key, item_key, target
        The user column, the item column and the target column (left out of the candidate rows).
    cfg
        ``evaluation.ranking``.
    seed
        Seed of the sampled protocol.
    """
    for name, t in (("history", history), ("test", test)):
        for col in (group_key, item_key):
            if col not in t.column_names:
                raise DataError(f"catalogue ranking: the {name} rows have no column `{col}`")
    shared = [c for c in test.column_names if c in history.column_names]
    union = pa.concat_tables([history.select(shared), test.select(shared)], promote_options="permissive")
    catalogue = pc.unique(union.column(item_key).combine_chunks().drop_null())
    users = pc.unique(test.column(group_key).combine_chunks().drop_null())
    users = users.take(pc.array_sort_indices(users))
    n_items, n_users = len(catalogue), len(users)
    if n_items == 0 or n_users == 0:
        raise DataError("catalogue ranking: the test split has no user or the data has no item")
    # (user, item) pairs as int64 keys: user code * n_items + item code
    h_user = _codes(history.column(group_key), users)
    h_item = _codes(history.column(item_key), catalogue)
    ok = (h_user >= 0) & (h_item >= 0)
    seen = np.unique(h_user[ok] * n_items + h_item[ok])
    t_user = _codes(test.column(group_key), users)
    t_item = _codes(test.column(item_key), catalogue)
    ok = (t_user >= 0) & (t_item >= 0)
    t_keys = t_user[ok] * n_items + t_item[ok]
    t_rel = np.asarray(relevance, dtype=np.float64)[ok]
    order = np.lexsort((t_rel, t_keys))  # the largest relevance last within a key
    t_keys, t_rel = t_keys[order], t_rel[order]
    last = np.r_[t_keys[1:] != t_keys[:-1], True] if t_keys.size else np.zeros(0, dtype=bool)
    rel_keys, rel_vals = t_keys[last], t_rel[last]
    protocol = cfg.protocol
    if protocol == "auto":
        protocol = "full_catalogue" if n_users * n_items <= cfg.max_candidate_rows else "sampled"
    rng = np.random.default_rng(seed)
    if protocol == "full_catalogue":
        keys = np.arange(n_users * n_items, dtype=np.int64)
        keys = keys[~np.isin(keys, seen, assume_unique=True)]
    elif protocol == "sampled":
        parts = []
        test_keys = rel_keys[~np.isin(rel_keys, seen, assume_unique=True)]
        test_user = test_keys // n_items
        all_items = np.arange(n_items, dtype=np.int64)
        seen_user = seen // n_items
        for u in range(n_users):
            mine = test_keys[test_user == u]
            excluded = np.concatenate([seen[seen_user == u], mine]) - u * n_items
            pool = all_items[~np.isin(all_items, excluded)]
            k = min(cfg.sampled_items, pool.size)
            drawn = rng.choice(pool, size=k, replace=False) if k else pool[:0]
            parts.append(np.concatenate([mine, np.sort(drawn) + u * n_items]))
        keys = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    else:
        raise DataError(f"catalogue ranking: unknown protocol `{protocol}`")
    rel = np.zeros(keys.size, dtype=np.float64)
    if rel_keys.size:
        pos = np.minimum(np.searchsorted(rel_keys, keys), rel_keys.size - 1)
        hit = rel_keys[pos] == keys
        rel[hit] = rel_vals[pos[hit]]
    u_code, i_code = keys // n_items, keys % n_items
    # item attributes from the item's latest row; the user's attributes and the context from its first test row
    u_all = _codes(union.column(item_key), catalogue)
    item_row = np.full(n_items, -1, dtype=np.int64)
    item_row[u_all[u_all >= 0]] = np.flatnonzero(u_all >= 0)  # later rows overwrite: the latest wins
    user_row = np.full(n_users, -1, dtype=np.int64)
    first = np.flatnonzero(t_user >= 0)
    user_row[t_user[first][::-1]] = first[::-1]  # earlier rows overwrite: the first wins
    item_cols = {item_key} | {c for c in shared if c not in (group_key, item_key, target)
                              and _item_level(union, item_key, c)}
    by_item = pa.array(item_row[i_code])
    by_user = pa.array(user_row[u_code])
    cols: dict[str, Any] = {}
    for c in test.column_names:
        if c == target:
            continue
        cols[c] = union.column(c).take(by_item) if c in item_cols else test.column(c).take(by_user)
    table = pa.table(cols)
    n_test_pairs = int(rel_keys.size)
    excluded_test = int(np.isin(rel_keys, seen).sum())
    info = {
        "protocol": protocol,
        "users": n_users,
        "catalogue_items": n_items,
        "candidate_rows": int(keys.size),
        "history_pairs_excluded": int(seen.size),
        "test_pairs": n_test_pairs,
        "test_pairs_in_history": excluded_test,
        "relevant_pairs": int((rel > 0).sum()),
        "item_columns": sorted(item_cols),
        "sampled_items": cfg.sampled_items if protocol == "sampled" else None,
        "seed": seed if protocol == "sampled" else None,
    }
    return Candidates(
        table=table,
        relevance=rel,
        groups=np.asarray(users.take(pa.array(u_code)).to_numpy(zero_copy_only=False)),
        items=np.asarray(catalogue.take(pa.array(i_code)).to_numpy(zero_copy_only=False)),
        protocol=protocol,
        info=info,
    )


def describe(info: dict[str, Any]) -> str:
    """One line for the report's notes."""
    if info["protocol"] == "full_catalogue":
        what = f"every catalogue item ({info['catalogue_items']:,})"
    else:
        what = f"its test items plus {info['sampled_items']:,} sampled catalogue items (seed {info['seed']})"
    return (
        f"ranking protocol {info['protocol']}: each of {info['users']:,} test users ranks {what} minus the items it "
        f"interacted with in train/valid ({info['candidate_rows']:,} user-item rows, {info['relevant_pairs']:,} "
        f"relevant; {info['test_pairs_in_history']:,} test interactions with already-seen items left out)"
    )
