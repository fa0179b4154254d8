"""Distribution distances and test tails in plain numpy/math (no scipy import on the hot path).

Importing ``scipy.stats`` costs about a second here; the few special functions drift needs
(the Kolmogorov and chi-square upper tails) are a few lines each and are checked against
scipy in the tests.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-4  # floor for empty bins in PSI (the usual choice: PSI stays finite, small bins still count)


def kolmogorov_sf(lam: float) -> float:
    """Upper tail of the Kolmogorov distribution, P(K > lam).

    Parameters
    ----------
    lam : float
        The scaled KS statistic ``sqrt(n_eff) * D`` (with Stephens' small-sample correction).

    Examples
    --------
    >>> round(kolmogorov_sf(1.36), 3)
    0.049
    """
    if lam <= 0.0:
        return 1.0
    if lam < 1.0:
        # the CDF series converges fast for small lambda
        s = 0.0
        for k in range(1, 50):
            term = math.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8.0 * lam * lam))
            s += term
            if term < 1e-17:
                break
        cdf = math.sqrt(2.0 * math.pi) / lam * s
        return float(min(1.0, max(0.0, 1.0 - cdf)))
    s = 0.0
    for k in range(1, 101):
        term = 2.0 * (-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam)
        s += term
        if abs(term) < 1e-17:
            break
    return float(min(1.0, max(0.0, s)))


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Asymptotic two-sample KS p-value of statistic ``d`` for sample sizes ``n`` and ``m``.

    Uses Stephens' correction ``(sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) * d``, accurate from a
    few dozen rows per side, which is all a monitoring window needs.
    """
    if n <= 0 or m <= 0:
        return 1.0
    en = math.sqrt(n * m / (n + m))
    return kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


def _gamma_p_series(a: float, x: float) -> float:
    term = 1.0 / a
    total = term
    ap = a
    for _ in range(10_000):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * 1e-15:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_q_cf(a: float, x: float) -> float:
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(x: float, dof: int) -> float:
    """Upper tail of the chi-square distribution with ``dof`` degrees of freedom.

    Examples
    --------
    >>> round(chi2_sf(3.841, 1), 3)
    0.05
    """
    if dof <= 0:
        return 1.0
    if x <= 0.0:
        return 1.0
    a = dof / 2.0
    hx = x / 2.0
    if hx < a + 1.0:
        return float(min(1.0, max(0.0, 1.0 - _gamma_p_series(a, hx))))
    return float(min(1.0, max(0.0, _gamma_q_cf(a, hx))))


def psi(p: np.ndarray, q: np.ndarray) -> float:
    """Population stability index of bin shares ``q`` (current) against ``p`` (reference)."""
    p = np.maximum(np.asarray(p, dtype=np.float64), EPS)
    q = np.maximum(np.asarray(q, dtype=np.float64), EPS)
    p = p / p.sum()
    q = q / q.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between two histograms."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    ps, qs = p.sum(), q.sum()
    if ps <= 0 or qs <= 0:
        return 0.0
    p = p / ps
    q = q / qs
    m = 0.5 * (p + q)

    def _kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return float(math.sqrt(max(0.0, 0.5 * _kl(p) + 0.5 * _kl(q))))


def chi2_two_sample(ref_counts: np.ndarray, cur_counts: np.ndarray, min_expected: float = 5.0) -> tuple[float, int, float]:
    """Chi-square test of homogeneity of two count vectors over the same categories.

    Categories whose expected count is below ``min_expected`` in either sample are pooled
    into one "rare" cell so the chi-square approximation holds.

    Returns
    -------
    (statistic, degrees of freedom, Cramér's V)
    """
    r = np.asarray(ref_counts, dtype=np.float64)
    c = np.asarray(cur_counts, dtype=np.float64)
    nr, nc = r.sum(), c.sum()
    if nr <= 0 or nc <= 0:
        return 0.0, 0, 0.0
    tot = r + c
    small = min(nr, nc) * tot / (nr + nc) < min_expected
    if small.any():
        rr, cc = r[small].sum(), c[small].sum()
        r, c = r[~small], c[~small]
        if r.size and min(nr, nc) * (rr + cc) / (nr + nc) < min_expected:
            # the pooled cell is still too small: add it to the smallest remaining cell
            j = int(np.argmin(r + c))
            r[j] += rr
            c[j] += cc
        elif rr + cc > 0:
            r, c = np.append(r, rr), np.append(c, cc)
        tot = r + c
    keep = tot > 0
    r, c, tot = r[keep], c[keep], tot[keep]
    k = r.size
    if k < 2:
        return 0.0, 0, 0.0
    n = nr + nc
    er = tot * (nr / n)
    ec = tot * (nc / n)
    stat = float(np.sum((r - er) ** 2 / er) + np.sum((c - ec) ** 2 / ec))
    v = math.sqrt(stat / n)  # min(rows, cols) - 1 == 1 for a 2 x k table
    return stat, k - 1, min(1.0, v)
