"""Class imbalance: class weights, random over- and under-sampling, and the focal loss.

>>> import numpy as np
>>> class_weights(np.array([0, 0, 0, 1])).round(2).tolist()
[0.67, 0.67, 0.67, 2.0]
"""

from __future__ import annotations

import numpy as np

from loopml.errors import DataError


def class_weights(y: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """Per-row weights ``n / (k * n_class)`` so that every class carries the same total weight.

    Multiplied into ``base`` (e.g. importance weights) when given.
    """
    y = np.asarray(y).astype(np.int64)
    counts = np.bincount(y).astype(np.float64)
    present = counts > 0
    per_class = np.zeros_like(counts)
    per_class[present] = len(y) / (present.sum() * counts[present])
    w = per_class[y]
    return np.asarray(w * base if base is not None else w, dtype=np.float64)


def oversample(y: np.ndarray, seed: int) -> np.ndarray:
    """Row indices with minority classes drawn with replacement up to the majority count."""
    y = np.asarray(y).astype(np.int64)
    rng = np.random.default_rng(seed)
    counts = np.bincount(y)
    target = counts.max()
    idx = [np.arange(len(y))]
    for c, n in enumerate(counts):
        if 0 < n < target:
            rows = np.nonzero(y == c)[0]
            idx.append(rng.choice(rows, size=target - n, replace=True))
    return np.sort(np.concatenate(idx))


def undersample(y: np.ndarray, seed: int) -> np.ndarray:
    """Row indices with every class cut down to the minority count."""
    y = np.asarray(y).astype(np.int64)
    rng = np.random.default_rng(seed)
    counts = np.bincount(y)
    present = counts[counts > 0]
    if present.size < 2:
        raise DataError("undersampling needs at least two classes in the training split; found one")
    target = present.min()
    idx = []
    for c, n in enumerate(counts):
        if n == 0:
            continue
        rows = np.nonzero(y == c)[0]
        idx.append(rows if n <= target else rng.choice(rows, size=target, replace=False))
    return np.sort(np.concatenate(idx))


def focal_loss(raw: np.ndarray, y: np.ndarray, gamma: float, alpha: float = 0.5) -> np.ndarray:
    """Binary focal loss per row, from raw scores (logits): ``-α_t (1-p_t)^γ log p_t``."""
    p = 1.0 / (1.0 + np.exp(-raw))
    eps = 1e-12
    pt = np.where(y > 0.5, p, 1 - p)
    at = np.where(y > 0.5, alpha, 1 - alpha)
    return -at * (1 - pt) ** gamma * np.log(np.clip(pt, eps, 1.0))  # type: ignore[no-any-return]


def _focal_grad(z: np.ndarray, y: np.ndarray, gamma: float, alpha: float) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-z))
    p = np.clip(p, 1e-12, 1 - 1e-12)
    g1 = alpha * (1 - p) ** gamma * (gamma * p * np.log(p) - (1 - p))
    g0 = -(1 - alpha) * p**gamma * (gamma * (1 - p) * np.log(1 - p) - p)
    return np.where(y > 0.5, g1, g0)  # type: ignore[no-any-return]


def focal_grad_hess(raw: np.ndarray, y: np.ndarray, gamma: float, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Gradient (analytic) and hessian (central difference of the gradient) of the focal loss.

    With ``gamma=0`` and ``alpha=0.5`` this is half the log loss: gradient ``(p - y) / 2``.
    """
    z = np.asarray(raw, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    g = _focal_grad(z, y, gamma, alpha)
    eps = 1e-4
    h = (_focal_grad(z + eps, y, gamma, alpha) - _focal_grad(z - eps, y, gamma, alpha)) / (2 * eps)
    return g, np.maximum(h, 1e-6)
