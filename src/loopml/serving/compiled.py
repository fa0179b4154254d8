"""Compiled trees: a hot LightGBM version's trees turned into machine code while it serves.

LightGBM walks its trees as data: one row of the serving benchmark's model (200 trees, 31
leaves) costs about 16 µs on the single-row fast path and 11 µs per row in a 100-row matrix,
most of a request's CPU. `lleaves <https://github.com/siboehm/lleaves>`_ compiles the same model
text into straight-line code with LLVM: about 8 µs for one row and 5 µs per row in a matrix, the
scores equal to LightGBM's up to float64 rounding (≤ 1e-15 on that model).

Compiling costs seconds of CPU (most of it building the IR in Python), so a version is compiled
only once it is hot: a task next to the registry poller counts the rows each version answered
(the server's own metrics) and, past ``deployment.compile_after_rows``, compiles it in a
background thread at the lowest OS priority. The compiled code is then checked against
LightGBM on rows drawn from the model's own feature ranges (every category, NaN, values
around the range) and installed only when every score agrees within :data:`TOLERANCE`; a model
that does not compile (an objective or feature lleaves lacks) or disagrees keeps LightGBM,
and the server says so once on stderr. Nothing is written to or loaded from disk but the
model text in a private temporary folder: the code is built from the checksummed bundle
in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import sys
import tempfile
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from loopml.serving.predictor import LightGBMFastPredictor

#: largest |compiled − LightGBM| score accepted on the check rows
TOLERANCE = 1e-9
#: rows of the check
CHECK_ROWS = 512


def available() -> bool:
    """Whether the compiler (lleaves + llvmlite) can be imported here and can compile: lleaves 1.3
    drives LLVM through the legacy pass manager, which llvmlite 0.45 removed."""
    try:
        import lleaves  # noqa: F401
        import llvmlite
        from llvmlite import binding
    except Exception:  # a missing or broken LLVM binding: serve with LightGBM
        return False
    return hasattr(binding, "PassManagerBuilder") and bool(llvmlite.__version__)


def check_rows(model_text: str, n: int = CHECK_ROWS, seed: int = 0) -> np.ndarray:
    """Rows spanning the model's own feature ranges (its ``feature_infos``): numeric values
    uniform over ``[min − 10%, max + 10%]`` plus the ends, every category code of a categorical
    feature plus an unseen one, and NaN in about 5% of the cells."""
    m = re.search(r"^feature_infos=(.*)$", model_text, re.MULTILINE)
    infos = m.group(1).split() if m else []
    rng = np.random.default_rng(seed)
    x = np.zeros((n, len(infos)), dtype=np.float64)
    for j, info in enumerate(infos):
        if info.startswith("["):
            lo, hi = (float(v) for v in info.strip("[]").split(":"))
            pad = 0.1 * (hi - lo) + 1e-3
            col = rng.uniform(lo - pad, hi + pad, n)
            col[: min(n, 2)] = [lo, hi][: min(n, 2)]
        elif info == "none":  # a feature the trees never split on
            col = rng.normal(size=n)
        else:
            cats = [float(v) for v in info.split(":")] + [max(float(v) for v in info.split(":")) + 1.0]
            col = np.asarray(cats)[rng.integers(0, len(cats), n)]
        x[:, j] = col
    x[rng.random(x.shape) < 0.05] = np.nan
    return x


class CompiledForest:
    """One booster's trees as a compiled function ``f(rows*, out*, start, end)`` (float64, 2-D C order).

    Built from the model text; :meth:`predict` scores a matrix like ``Booster.predict`` (the
    objective's transform applied; class probabilities for multiclass).
    """

    def __init__(self, model_text: str) -> None:
        import lleaves

        with tempfile.TemporaryDirectory(prefix="loopml-trees-") as d:
            path = Path(d) / "model.txt"
            path.write_text(model_text)
            model = lleaves.Model(model_file=str(path))
            # finline=False: compiles ~7x faster than the default for ~25% slower predictions
            model.compile(finline=False)
        self._model = model  # keeps the execution engine (and the code) alive
        self.fn = model._c_entry_func
        self.num_features = int(model.num_feature())
        self.num_outputs = max(1, int(model._n_classes))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores of a 2-D matrix (one thread)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        n = x.shape[0]
        out = np.zeros(n * self.num_outputs, dtype=np.float64)
        if n:
            self.fn(x.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                    out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), 0, n)
        return out if self.num_outputs == 1 else out.reshape(n, self.num_outputs)


def compile_checked(predictor: LightGBMFastPredictor) -> tuple[CompiledForest | None, str]:
    """The predictor's trees compiled and checked against LightGBM, or ``None`` and why not."""
    text = predictor.booster.model_to_string()
    try:
        forest = CompiledForest(text)
    except Exception as exc:  # lleaves refuses what it cannot compile (objective, linear trees, ...)
        return None, f"did not compile ({type(exc).__name__}: {str(exc)[:200]})"
    if forest.num_features != predictor.num_features:
        return None, f"compiled {forest.num_features} features, LightGBM has {predictor.num_features}"
    rows = check_rows(text)
    ref = np.asarray(predictor.booster.predict(rows, num_threads=1), dtype=np.float64)
    got = forest.predict(rows).reshape(ref.shape)
    diff = float(np.nanmax(np.abs(got - ref))) if ref.size else 0.0
    if not np.array_equal(np.isnan(got), np.isnan(ref)) or not diff <= TOLERANCE:
        return None, f"compiled scores differ from LightGBM's by {diff:.3g} on {len(rows)} check rows"
    return forest, f"max |compiled − LightGBM| {diff:.2g} on {len(rows)} check rows"


def _lowest_priority() -> None:
    with contextlib.suppress(AttributeError, OSError):  # Linux: a thread has its own nice value
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class TreeCompiler:
    """Compiles the served LightGBM versions that have answered ``min_rows`` rows (see the module docstring).

    ``app``: the :class:`~loopml.serving.app.ServingApp` (its state and metrics are read on the loop).
    """

    def __init__(self, app: Any, min_rows: int, every_s: float = 1.0) -> None:
        self.app = app
        self.min_rows = min_rows
        self.every_s = every_s
        self._tried: weakref.WeakSet[LightGBMFastPredictor] = weakref.WeakSet()  # compiled or given up on
        self._pool: ThreadPoolExecutor | None = None

    def due(self) -> list[tuple[str, LightGBMFastPredictor]]:
        """Versions whose LightGBM fast path has answered enough rows and was not tried yet."""
        rows: dict[str, int] = {}
        for (version, _route), n in self.app.metrics.rows.items():
            rows[version] = rows.get(version, 0) + n
        out = []
        for vid, servable in self.app.state.models.items():
            pred = getattr(servable, "_pred", None)
            if isinstance(pred, LightGBMFastPredictor) and pred not in self._tried and \
                    rows.get(vid, 0) >= self.min_rows:
                out.append((vid, pred))
        return out

    async def step(self) -> int:
        """Compile what is due, one version at a time; returns how many were installed."""
        installed = 0
        for vid, pred in self.due():
            self._tried.add(pred)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="loopml-compile", initializer=_lowest_priority)
            forest, why = await asyncio.get_running_loop().run_in_executor(self._pool, compile_checked, pred)
            if forest is None:
                sys.stderr.write(f"loopml serve: version {vid} keeps LightGBM's tree walker: {why}\n")
                continue
            pred.install_compiled(forest)  # on the loop: between two requests
            installed += 1
            sys.stderr.write(f"loopml serve: version {vid} now scores with compiled trees ({why})\n")
        return installed

    async def run_forever(self) -> None:
        """Check every ``every_s`` seconds until cancelled."""
        try:
            while True:
                await asyncio.sleep(self.every_s)
                try:
                    await self.step()
                except Exception as exc:  # never take the server down for an optimisation
                    sys.stderr.write(f"loopml serve: tree compilation failed: {type(exc).__name__}: {exc}\n")
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
