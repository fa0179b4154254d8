"""Sample-ratio mismatch: are the arms' unit counts consistent with the planned split?

A mismatch means the assignment or the logging is broken (bots, redirects, a crashing arm), and
the experiment's comparison cannot be trusted whatever its p-value.

>>> srm_check([5_000, 5_400], [0.5, 0.5]).mismatch
True
>>> srm_check([5_000, 5_050], [0.5, 0.5]).mismatch
False
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from loopml.errors import LoopMLError


@dataclass(frozen=True)
class SRMResult:
    """Chi-square goodness-of-fit of the observed counts against the planned shares."""

    counts: tuple[int, ...]
    expected_shares: tuple[float, ...]
    chi2: float
    p_value: float
    threshold: float
    mismatch: bool


def srm_check(counts: Sequence[int], shares: Sequence[float], threshold: float = 0.001) -> SRMResult:
    """Chi-square test of ``counts`` against ``shares`` (a mismatch when p < ``threshold``, 0.001 by convention)."""
    c = np.asarray(counts, dtype=float)
    s = np.asarray(shares, dtype=float)
    if c.shape != s.shape or c.size < 2:
        raise LoopMLError(f"srm_check needs one count per arm and as many shares; got {len(c)} counts, {len(s)} shares")
    if (s <= 0).any() or abs(s.sum() - 1.0) > 1e-9:
        raise LoopMLError(f"the planned shares must be positive and sum to 1; got {list(shares)}")
    if c.sum() == 0:
        return SRMResult(tuple(int(x) for x in c), tuple(map(float, s)), 0.0, 1.0, threshold, False)
    res = stats.chisquare(c, f_exp=s * c.sum())
    p = float(res.pvalue)
    return SRMResult(tuple(int(x) for x in c), tuple(map(float, s)), float(res.statistic), p, threshold, p < threshold)


__all__ = ["SRMResult", "srm_check"]
