"""Counter-based randomness: per-id values computed from a hash, never stored.

The market has millions of users; their latent factors are a pure function of
``(seed, stream, id)`` so that the simulator only ever materialises the ids a day
actually draws, and the same user has the same tastes on every day and in every process.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser over an array of uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64, copy=True) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def hash_uniform(ids: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """Uniform(0, 1) values, one per id, fixed for a given ``(seed, stream)``."""
    with np.errstate(over="ignore"):
        key = splitmix64(np.array([seed * 1_000_003 + stream], dtype=np.uint64))[0]
        z = splitmix64(ids.astype(np.uint64) ^ key)
    # 53 high bits → (0, 1), never exactly 0 or 1
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def hash_normal(ids: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """Standard normal values, one per id, fixed for a given ``(seed, stream)``."""
    return np.asarray(ndtri(hash_uniform(ids, seed, stream)))


def hash_normal_matrix(ids: np.ndarray, seed: int, stream: int, dim: int) -> np.ndarray:
    """An ``(len(ids), dim)`` matrix of standard normals (one stream per column)."""
    out = np.empty((ids.shape[0], dim), dtype=np.float64)
    for j in range(dim):
        out[:, j] = hash_normal(ids, seed, stream * 1000 + j)
    return out


def permute_ids(ranks: np.ndarray, seed: int, offset: int = 10_000) -> np.ndarray:
    """Public ids for popularity ranks: a bijection on [0, 2^31) so that an id says nothing about rank."""
    a = np.uint64(2 * (seed % 1_000_000) + 2_654_435_761)  # odd: multiplication is a bijection mod 2^31
    with np.errstate(over="ignore"):
        mixed = (ranks.astype(np.uint64) * a + np.uint64(seed * 7919 + 12345)) & np.uint64((1 << 31) - 1)
    return mixed.astype(np.int64) + offset


class ZipfSampler:
    """Draws popularity ranks ``0..size-1`` with P(rank r) ∝ (r+1)^-exponent.

    Exact (inverse CDF over the cumulative weights) up to three million ids; above that a
    continuous power-law inverse CDF, which keeps memory constant for huge catalogues.

    >>> import numpy as np
    >>> ranks = ZipfSampler(1000, 1.0).sample(np.random.default_rng(0), 10_000)
    >>> bool((ranks == 0).mean() > (ranks == 9).mean() > (ranks == 99).mean())
    True
    """

    EXACT_MAX = 3_000_000

    def __init__(self, size: int, exponent: float) -> None:
        self.size = int(size)
        self.exponent = float(exponent)
        self._cdf: np.ndarray | None = None
        if self.size <= self.EXACT_MAX:
            w = np.arange(1, self.size + 1, dtype=np.float64) ** (-self.exponent)
            cdf = np.cumsum(w)
            self._cdf = cdf / cdf[-1]

    def probabilities(self) -> np.ndarray:
        """P(rank) for every rank (exact catalogues only)."""
        if self._cdf is None:
            raise ValueError(f"catalogue of {self.size:,} ids is sampled approximately; no exact probabilities")
        return np.diff(self._cdf, prepend=0.0)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` ranks."""
        return self.ranks_from_uniform(rng.random(n))

    def ranks_from_uniform(self, u: np.ndarray) -> np.ndarray:
        """Ranks for given Uniform(0, 1) values (the inverse CDF; deterministic)."""
        if self._cdf is not None:
            return np.minimum(np.searchsorted(self._cdf, u, side="right"), self.size - 1).astype(np.int64)
        s, m = self.exponent, self.size
        if abs(s - 1.0) < 1e-9:
            x = np.exp(u * np.log(m + 1.0))
        else:
            e = 1.0 - s
            x = (1.0 + u * ((m + 1.0) ** e - 1.0)) ** (1.0 / e)
        return np.asarray(np.clip(np.floor(x).astype(np.int64) - 1, 0, m - 1))
