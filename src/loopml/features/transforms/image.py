"""Images: pixel arrays to normalised float vectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from loopml.errors import DataError
from loopml.features.transforms.base import COLUMNS, IMAGE, Transform, register_transform
from loopml.spec.features import ImagePixels


@register_transform
class ImagePixelsTransform(Transform):
    """x / scale, then (optionally) standardised by the training mean and std of all pixels."""

    name = "image_pixels"
    missing_output = "zeros"
    example_kind = "image"
    Config = ImagePixels
    accepts = frozenset({IMAGE})
    produces = COLUMNS
    on_missing = "an all-zero image"
    config: ImagePixels

    def _fit(self, values: Any, y: np.ndarray | None) -> None:
        first = next((v for v in values if v is not None), None)
        if first is None:
            raise DataError(f"column `{self.column}`: no image to fit on (every value is missing)")
        self.size_ = int(first.size)
        mean, std = 0.0, 1.0
        if self.config.standardize:
            stack = self._stack(values, scaled_only=True)
            mean, std = float(stack.mean()), float(stack.std()) or 1.0
        self.mean_, self.std_ = mean, std

    def _check(self, v: np.ndarray, row: int | None) -> None:
        if v.size != self.size_:
            where = f" row {row}" if row is not None else ""
            raise DataError(f"column `{self.column}`{where}: image has {v.size} pixels, expected {self.size_}")

    def _one(self, v: np.ndarray | None, scaled_only: bool = False) -> np.ndarray:
        if v is None:
            return np.zeros(self.size_, dtype=np.float64)
        x = v / self.config.scale
        return x if scaled_only else (x - self.mean_) / self.std_

    def _stack(self, values: Any, scaled_only: bool = False) -> np.ndarray:
        out = np.empty((len(values), self.size_), dtype=np.float64)
        for i, v in enumerate(values):
            if v is not None:
                self._check(v, i)
            out[i] = self._one(v, scaled_only)
        return out

    def output_names(self, base: str) -> list[str]:
        return [f"{base}__px{i}" for i in range(self.size_)]

    def transform(self, values: Any) -> Any:
        self.check_fitted()
        return self._stack(values)

    def row_fn(self) -> Callable[[Any], Any]:
        self.check_fitted()

        def f(v: np.ndarray | None) -> np.ndarray:
            if v is not None:
                self._check(v, None)
            return self._one(v)
        return f

    def get_state(self) -> dict[str, Any]:
        return {"size": self.size_, "mean": self.mean_, "std": self.std_}

    def set_state(self, state: dict[str, Any]) -> None:
        self.size_, self.mean_, self.std_ = int(state["size"]), float(state["mean"]), float(state["std"])
        super().set_state(state)
