"""Team-draft interleaving of two rankers and the preference test on click credit.

Per query the two rankers take turns (a coin decides who picks first in each round) adding their
best item not yet shown; each shown item remembers the team that placed it. A click credits its
team; a query is won by the team with more credited clicks, and the preference test is a
two-sided binomial (sign) test on the decisive queries (Chapelle et al., "Large-scale validation
and analysis of interleaved search evaluation", 2012).

>>> import numpy as np
>>> shown, team = team_draft([1, 2, 3], [3, 2, 1], 3, np.random.default_rng(0))
>>> sorted(shown) == [1, 2, 3], len(team)
(True, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

A, B = 0, 1


def team_draft(ranking_a: Sequence[Any], ranking_b: Sequence[Any], k: int,
               rng: np.random.Generator) -> tuple[list[Any], list[int]]:
    """The interleaved list of length ≤ ``k`` and, per position, the team (0 = A, 1 = B) that placed it."""
    shown: list[Any] = []
    team: list[int] = []
    seen: set[Any] = set()
    pos = [0, 0]
    count = [0, 0]
    lists = (ranking_a, ranking_b)
    limit = min(k, len(set(ranking_a) | set(ranking_b)))
    while len(shown) < limit:
        who = A if count[A] < count[B] or (count[A] == count[B] and rng.random() < 0.5) else B
        src = lists[who]
        i = pos[who]
        while i < len(src) and src[i] in seen:
            i += 1
        if i >= len(src):  # this ranker has nothing left: the other one fills the list
            who = 1 - who
            src = lists[who]
            i = pos[who]
            while i < len(src) and src[i] in seen:
                i += 1
        pos[who] = i + 1
        shown.append(src[i])
        seen.add(src[i])
        team.append(who)
        count[who] += 1
    return shown, team


def credit(team: Sequence[int], clicks: Sequence[bool] | np.ndarray) -> int:
    """The winner of one query: 0 (A), 1 (B) or -1 (tie, including no click)."""
    t = np.asarray(team)
    c = np.asarray(clicks, dtype=bool)[: t.size]
    a, b = int(np.sum(c & (t == A))), int(np.sum(c & (t == B)))
    return A if a > b else B if b > a else -1


@dataclass(frozen=True)
class Preference:
    """The preference test over queries: wins of each ranker, ties, the share won by B and its p-value."""

    wins_a: int
    wins_b: int
    ties: int
    share_b: float  #: wins_b / decisive queries
    ci_low: float
    ci_high: float
    p_value: float
    winner: str  #: "A", "B" or "none" at the test's level
    alpha: float


def preference_test(winners: Sequence[int] | np.ndarray, alpha: float = 0.05) -> Preference:
    """Two-sided binomial test of "each ranker wins half of the decisive queries"."""
    w = np.asarray(winners)
    wa, wb, ties = int(np.sum(w == A)), int(np.sum(w == B)), int(np.sum(w < 0))
    n = wa + wb
    if n == 0:
        return Preference(wa, wb, ties, float("nan"), 0.0, 1.0, 1.0, "none", alpha)
    res = stats.binomtest(wb, n, 0.5)
    ci = res.proportion_ci(confidence_level=1 - alpha)
    p = float(res.pvalue)
    winner = "none" if p >= alpha else ("B" if wb > wa else "A")
    return Preference(wa, wb, ties, wb / n, float(ci.low), float(ci.high), p, winner, alpha)


__all__ = ["Preference", "credit", "preference_test", "team_draft"]
