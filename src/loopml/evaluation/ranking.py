"""Ranking metrics per query, vectorised over all queries at once.

Rows are sorted once by (query, descending score); every per-query value (hits in the top k,
average precision, reciprocal rank, DCG) is a ``bincount`` over query codes. A metric is the
mean of its per-query values over the queries where it is defined (at least one relevant
item), so the bootstrap resamples whole queries (a cluster bootstrap).

Conventions: tied scores are ranked pessimistically (less relevant first); Precision@k divides by k; nDCG uses linear gain (the relevance itself) and a
log2(rank + 1) discount, like scikit-learn's ``ndcg_score``; MAP averages over the full list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from loopml.errors import DataError
from loopml.evaluation.data import EvalData


@dataclass(eq=False)
class GroupLayout:
    """Rows sorted by (query, descending score) with per-row rank inside the query."""

    order: np.ndarray
    codes: np.ndarray  # query code of each sorted row
    rank: np.ndarray  # 0-based position inside its query
    n_groups: int
    rel: np.ndarray  # relevance of each sorted row
    n_relevant: np.ndarray  # relevant rows per query


def group_layout(data: EvalData) -> GroupLayout:
    """The sorted layout of a ranking evaluation (cached on ``data``)."""

    def make() -> GroupLayout:
        _, codes = np.unique(np.asarray(data.groups), return_inverse=True)
        codes = codes.astype(np.int64)
        # ties in score are broken pessimistically (less relevant first): the metric then does not
        # depend on the order the rows arrived in
        rel_raw = np.asarray(data.y, dtype=np.float64)
        order = np.lexsort((rel_raw, -np.asarray(data.score, dtype=np.float64), codes))
        sc = codes[order]
        n_groups = int(sc.max()) + 1 if sc.size else 0
        starts = np.searchsorted(sc, np.arange(n_groups))
        rank = np.arange(sc.size) - starts[sc]
        rel = np.asarray(data.y, dtype=np.float64)[order]
        n_rel = np.bincount(sc, weights=(rel > 0).astype(np.float64), minlength=n_groups)
        return GroupLayout(order, sc, rank, n_groups, rel, n_rel)

    return data.cached("group_layout", make)  # type: ignore[no-any-return]


def _per_group(lay: GroupLayout, values: np.ndarray) -> np.ndarray:
    return np.bincount(lay.codes, weights=values, minlength=lay.n_groups)


def per_query(data: EvalData, metric: str, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(value, defined)`` per query for ``metric`` in precision, recall, map, ndcg, mrr, hit_rate."""
    lay = group_layout(data)
    relevant = (lay.rel > 0).astype(np.float64)
    top = np.ones_like(relevant) if k is None else (lay.rank < k).astype(np.float64)
    defined = (lay.n_relevant > 0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "precision":
            vals = _per_group(lay, relevant * top) / float(k or 1)
        elif metric == "recall":
            vals = _per_group(lay, relevant * top) / lay.n_relevant
        elif metric == "hit_rate":
            vals = (_per_group(lay, relevant * top) > 0).astype(np.float64)
        elif metric in ("map", "mrr"):
            cum = np.cumsum(relevant)
            starts = np.searchsorted(lay.codes, np.arange(lay.n_groups))
            base = cum[starts] - relevant[starts]  # relevant rows before each query's first row
            cum_in = cum - base[lay.codes]
            if metric == "map":
                vals = _per_group(lay, relevant * top * cum_in / (lay.rank + 1.0)) / lay.n_relevant
            else:
                first = relevant * top * (cum_in == 1)
                vals = _per_group(lay, first / (lay.rank + 1.0))
        elif metric == "ndcg":
            disc = top / np.log2(lay.rank + 2.0)
            dcg = _per_group(lay, lay.rel * disc)
            ideal_order = np.lexsort((-lay.rel, lay.codes))
            idcg = _per_group(lay, lay.rel[ideal_order] * disc)
            vals = dcg / idcg
            defined = (idcg > 0).astype(np.float64)
        else:
            raise ValueError(f"unknown ranking metric {metric}")
    vals = np.where(defined > 0, vals, 0.0)
    return vals, defined


def coverage_incidence(data: EvalData, k: int | None) -> tuple[sp.csr_matrix, int]:
    """``(queries × items)`` incidence of items shown in each query's top k, and the catalogue size."""
    lay = group_layout(data)
    if data.items is None:
        raise DataError("catalogue coverage needs the item of each row (set task.item_key)")
    _, icodes = np.unique(np.asarray(data.items), return_inverse=True)
    icodes = icodes.astype(np.int64)[lay.order]
    n_items = int(icodes.max()) + 1 if icodes.size else 0
    keep = lay.rank < (k if k is not None else np.inf)
    inc = sp.csr_matrix(
        (np.ones(int(keep.sum())), (lay.codes[keep], icodes[keep])), shape=(lay.n_groups, n_items)
    )
    inc.data[:] = 1.0
    catalogue = data.catalogue_size or n_items
    return inc, catalogue
