"""Numeric transforms: impute, scale, log, clip, discretize."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any

import numpy as np

from loopml.errors import DataError, SpecError
from loopml.features.transforms.base import CATEGORY, NUMERIC, Transform, key_counts, register_transform
from loopml.features.values import Categorical
from loopml.spec.features import Clip, Discretize, Impute, Log, Scale


def _finite(values: np.ndarray) -> np.ndarray:
    out: np.ndarray = values[~np.isnan(values)]
    return out


@register_transform
class ImputeTransform(Transform):
    """Fill missing values (numbers or categories), optionally emitting a 0/1 indicator column."""

    name = "impute"
    missing_output = "filled"
    Config = Impute
    accepts = frozenset({NUMERIC, CATEGORY})
    on_missing = "filled with the fitted value; strategy 'drop' refuses the row (the features stage quarantines it)"
    config: Impute

    def __init__(self, config: Impute, column: str, kind: str) -> None:
        super().__init__(config, column, kind)
        if kind == CATEGORY and config.strategy in ("mean", "median"):
            raise SpecError(
                f"feature `{column}`: impute strategy `{config.strategy}` needs numbers, but the column "
                "holds categories (use most_frequent or constant)"
            )
        if kind == NUMERIC and config.strategy == "constant" and not isinstance(config.fill_value, int | float):
            raise SpecError(f"feature `{column}`: impute strategy `constant` needs a numeric fill_value, "
                            f"got {config.fill_value!r}")
        self.fill_: float | str | None = None

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        s = self.config.strategy
        if s == "drop":
            self.fill_ = None
            return
        if self.kind == CATEGORY:
            if s == "constant":
                self.fill_ = "" if self.config.fill_value is None else str(self.config.fill_value)
                return
            counts = {k: c for k, c in key_counts(values.keys, values.codes).items() if k is not None}
            self.fill_ = min(counts, key=lambda k: (-counts[k], k)) if counts else "<missing>"
            return
        vals = _finite(values)
        if s == "constant":
            self.fill_ = float(self.config.fill_value)  # type: ignore[arg-type]
        elif vals.size == 0:
            self.fill_ = 0.0
        elif s == "mean":
            self.fill_ = float(vals.mean())
        elif s == "median":
            self.fill_ = float(np.median(vals))
        else:
            u, c = np.unique(vals, return_counts=True)
            self.fill_ = float(u[int(np.argmax(c))])

    def _refuse(self, n: int) -> DataError:
        return DataError(
            f"column `{self.column}`: {n} missing value(s), but the spec says impute strategy `drop` "
            "(rows missing it cannot be scored)",
            hint="the features stage quarantines such rows; filter them with FeaturePipeline.drop_mask",
        )

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        fill = self.fill_
        if self.kind == CATEGORY:
            if fill is None:
                n = int(sum(1 for k in values.values() if k is None))
                if n:
                    raise self._refuse(n)
                return values
            return values.map_keys(lambda k: fill if k is None else k)
        miss = np.isnan(values)
        if fill is None:
            if miss.any():
                raise self._refuse(int(miss.sum()))
            return values.copy()
        return np.where(miss, fill, values)

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        fill = self.fill_
        if fill is None:
            refuse = self._refuse
            if self.kind == CATEGORY:
                def check_cat(k: Any) -> Any:
                    if k is None:
                        raise refuse(1)
                    return k
                return check_cat

            def check_num(x: float) -> float:
                if x != x:
                    raise refuse(1)
                return x
            return check_num
        if self.kind == CATEGORY:
            return lambda k: fill if k is None else k
        return lambda x: fill if x != x else x

    def side_names(self, base: str) -> list[str]:
        return [f"{base}__missing"] if self.config.add_indicator else []

    def side_batch(self, values: Any) -> list[np.ndarray]:
        if not self.config.add_indicator:
            return []
        if self.kind == CATEGORY:
            return [values.map(lambda k: 1.0 if k is None else 0.0)]
        return [np.isnan(values).astype(np.float64)]

    def side_row_fn(self) -> Callable[[Any], tuple[float, ...]] | None:
        if not self.config.add_indicator:
            return None
        if self.kind == CATEGORY:
            return lambda k: (1.0,) if k is None else (0.0,)
        return lambda x: (1.0,) if x != x else (0.0,)

    def get_state(self) -> dict[str, Any]:
        return {"fill": self.fill_}

    def stats(self) -> dict[str, Any]:
        return {"strategy": self.config.strategy, "fill": self.fill_, "indicator": self.config.add_indicator}

    def set_state(self, state: dict[str, Any]) -> None:
        self.fill_ = state["fill"]
        super().set_state(state)


@register_transform
class ScaleTransform(Transform):
    """(x - center) / scale with center/scale from min-max, z-score or robust (median, IQR) statistics."""

    name = "scale"
    Config = Scale
    accepts = frozenset({NUMERIC})
    on_missing = "stays NaN (put impute before scale to fill it)"
    config: Scale

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        vals = _finite(values)
        center, scale = 0.0, 1.0
        if vals.size:
            m = self.config.method
            if m == "zscore":
                # extreme finite values (±1e300) overflow the squares: scale by a power of two (exact) first
                top = float(np.max(np.abs(vals)))
                k = float(np.ldexp(1.0, np.frexp(top)[1])) if top > 1e150 else 1.0
                center, scale = float((vals / k).mean()) * k, float((vals / k).std()) * k
            elif m == "minmax":
                center, scale = float(vals.min()), float(vals.max() - vals.min())
            else:
                q1, med, q3 = np.quantile(vals, [0.25, 0.5, 0.75])
                center, scale = float(med), float(q3 - q1)
        if not np.isfinite(scale) or scale == 0.0:
            scale = 1.0
        self.center_, self.scale_ = center, scale

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        return (values - self.center_) / self.scale_

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        c, s = self.center_, self.scale_
        return lambda x: (x - c) / s

    def get_state(self) -> dict[str, Any]:
        return {"center": self.center_, "scale": self.scale_}

    def set_state(self, state: dict[str, Any]) -> None:
        self.center_, self.scale_ = float(state["center"]), float(state["scale"])
        super().set_state(state)


@register_transform
class LogTransform(Transform):
    """log1p(max(x, 0)) for skewed non-negative values."""

    name = "log"
    Config = Log
    accepts = frozenset({NUMERIC})
    on_missing = "stays NaN"

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        return None

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        return np.log1p(np.maximum(values, 0.0))

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        log1p = np.log1p

        def f(x: float) -> float:
            if x != x:
                return x
            return float(log1p(x)) if x > 0.0 else 0.0
        return f


@register_transform
class ClipTransform(Transform):
    """Clip to the training quantiles."""

    name = "clip"
    Config = Clip
    accepts = frozenset({NUMERIC})
    on_missing = "stays NaN"
    config: Clip

    def __init__(self, config: Clip, column: str, kind: str) -> None:
        super().__init__(config, column, kind)
        if config.lower_quantile > config.upper_quantile:
            raise SpecError(f"feature `{column}`: clip lower_quantile {config.lower_quantile} is above "
                            f"upper_quantile {config.upper_quantile}")

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        vals = _finite(values)
        if vals.size:
            lo, hi = np.quantile(vals, [self.config.lower_quantile, self.config.upper_quantile])
            self.lo_, self.hi_ = float(lo), float(hi)
        else:
            self.lo_, self.hi_ = float("-inf"), float("inf")

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        return np.clip(values, self.lo_, self.hi_)

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        lo, hi = self.lo_, self.hi_
        return lambda x: x if x != x else (lo if x < lo else (hi if x > hi else x))

    def get_state(self) -> dict[str, Any]:
        return {"lower": self.lo_, "upper": self.hi_}

    def set_state(self, state: dict[str, Any]) -> None:
        self.lo_, self.hi_ = float(state["lower"]), float(state["upper"])
        super().set_state(state)


@register_transform
class DiscretizeTransform(Transform):
    """Bucket index by fixed edges or training quantiles (bucket i holds edges[i-1] <= x < edges[i])."""

    name = "discretize"
    Config = Discretize
    accepts = frozenset({NUMERIC})
    on_missing = "stays NaN"
    config: Discretize

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        if self.config.edges is not None:
            edges = sorted(float(e) for e in self.config.edges)
        else:
            vals = _finite(values)
            qs = np.quantile(vals, np.linspace(0, 1, self.config.n_bins + 1))[1:-1] if vals.size else []
            edges = sorted({float(q) for q in qs})
        self.edges_ = edges

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        idx = np.searchsorted(np.asarray(self.edges_, dtype=np.float64), values, side="right").astype(np.float64)
        return np.where(np.isnan(values), np.nan, idx)

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()
        edges = list(self.edges_)
        return lambda x: x if x != x else float(bisect_right(edges, x))

    def get_state(self) -> dict[str, Any]:
        return {"edges": self.edges_}

    def set_state(self, state: dict[str, Any]) -> None:
        self.edges_ = [float(e) for e in state["edges"]]
        super().set_state(state)


__all__ = ["ClipTransform", "DiscretizeTransform", "ImputeTransform", "LogTransform", "ScaleTransform"]
_ = Categorical
