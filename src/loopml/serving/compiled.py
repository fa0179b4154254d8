"""Compiled trees: a hot LightGBM version's trees turned into machine code while it serves.

LightGBM walks its trees as data: one row of the serving benchmark's model (200 trees, 31
leaves) costs about 16 µs on the single-row fast path and 11 µs per row in a 100-row matrix,
most of a request's CPU. `lleaves <https://github.com/siboehm/lleaves>`_ compiles the same model
text into straight-line code with LLVM: about 8 µs for one row and 5 µs per row in a matrix, the
scores equal to LightGBM's up to float64 rounding (≤ 1e-15 on that model).

Compiling costs seconds of CPU, so a version is compiled only once it is hot: a task next to
the registry poller counts the rows each version answered (the server's own metrics) and, past
``deployment.compile_after_rows``, has it compiled. The compiler runs in a **child process** at
the lowest OS priority (:func:`compile_object`): about a second of it is Python building the
IR, which in a thread of the server would hold the GIL against the request loop (seen: p99 of
200+ ms while a version compiled). The child hands back the object code through a pipe; the
server links it in memory (:class:`CompiledForest`; LLVM's MCJIT, no Python work) and checks
it against LightGBM on rows drawn from the model's own feature ranges (every category, NaN,
values around the range). It is installed only when every score agrees within
:data:`TOLERANCE`; a model that does not compile (an objective or feature lleaves lacks) or
disagrees keeps LightGBM, and the server says so once on stderr. Off the loop, the compile
inlines the trees (``finline``): one row then costs about 4 µs instead of 6.6 µs, unless their
categorical bitsets would make one call's stack frame larger than :data:`STACK_BUDGET` (lleaves
keeps them on the stack): then one function per tree, and a version whose single tree would not
fit keeps LightGBM (:func:`choose_inline`); the object's frames are checked before it is linked.
Nothing is loaded from disk: the model text goes to the child in a private temporary folder
(it writes its object there and sends it back), and the code is linked from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import platform
import re
import subprocess
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
#: seconds a compile may take before the version keeps LightGBM
COMPILE_TIMEOUT = 900.0
#: the compiled entry point
_ENTRY = "forest_root"
#: most stack (bytes) one call of the compiled trees may take: far below any thread's stack in the server
STACK_BUDGET = 512 * 1024
#: stack bytes per 32-bit word of a categorical split's bitset, an upper bound of lleaves' code (measured on the
#: 1M-row demo's model, 200 trees: 1.51 bytes of frame per bitset byte inlined, 1.68 for one tree alone)
_STACK_PER_WORD = 8
_STACK_BASE = 16 * 1024


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


class CompileError(RuntimeError):
    """The child process could not compile the trees (its stderr says why)."""


def compile_object(model_text: str, *, inline: bool = True, timeout: float = COMPILE_TIMEOUT) -> bytes:
    """The trees of ``model_text`` compiled by lleaves to a native object for this machine, in a
    child process at the lowest OS priority (see the module docstring)."""
    cmd = [sys.executable, "-m", "loopml.serving.compiled"] + ([] if inline else ["--no-inline"])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _RUNNING.add(proc)
    try:
        out, err = proc.communicate(model_text.encode(), timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise CompileError(f"the compiler took more than {timeout:.0f} s") from exc
    finally:
        _RUNNING.discard(proc)
    if proc.returncode != 0 or not out:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise CompileError(tail[0][:300])
    return out


#: compiler children running now (killed when the server stops: see :func:`stop_compilers`)
_RUNNING: set[subprocess.Popen[bytes]] = set()


def stop_compilers() -> None:
    """Kill the compiler children still running (a stopping server does not wait for them)."""
    for proc in list(_RUNNING):
        with contextlib.suppress(OSError):
            proc.kill()


def _main() -> int:
    """The compiler child: model text on stdin, the object code on stdout."""
    with contextlib.suppress(OSError):
        os.nice(19)
    import lleaves

    text = sys.stdin.buffer.read()
    with tempfile.TemporaryDirectory(prefix="loopml-trees-") as d:
        model_path, obj_path = Path(d) / "model.txt", Path(d) / "model.o"
        model_path.write_bytes(text)
        # lleaves writes the object it compiled to the cache path: it is sent back, not reused
        lleaves.Model(model_file=str(model_path)).compile(cache=str(obj_path), finline="--no-inline" not in sys.argv,
                                                          froot_func_name=_ENTRY)
        sys.stdout.buffer.write(obj_path.read_bytes())
    return 0


def _bitset_words(model_text: str) -> list[int]:
    """32-bit words of categorical bitsets in each tree that has categorical splits."""
    return [len(m.split()) for m in re.findall(r"^cat_threshold=(.*)$", model_text, re.MULTILINE)]


def stack_estimate(model_text: str, *, inline: bool) -> int:
    """Bytes of stack one call of the compiled trees takes, at most (an upper bound of lleaves' code).

    lleaves keeps each categorical split's bitset on the stack frame of the function holding the
    split. Inlined, the entry function holds every tree's bitsets at once: the 1M-row demo's model
    (200 trees, ad and user ids with thousands of levels) needed a 4.3 MB frame, and the 10M-row one
    overflowed the 8 MB stack of the thread that called it (the server died of SIGSEGV). Not
    inlined, a call holds one tree's frame at a time (68 KB at most on that model).

    >>> text = "Tree=0\\ncat_threshold=1 2 3\\nTree=1\\ncat_threshold=4\\n"
    >>> stack_estimate(text, inline=True) - stack_estimate(text, inline=False)
    8
    """
    words = _bitset_words(model_text)
    return _STACK_BASE + _STACK_PER_WORD * (sum(words) if inline else max(words, default=0))


def choose_inline(model_text: str, budget: int | None = None) -> bool | None:
    """Inline the trees when the inlined code fits the stack budget, else compile them one function per tree;
    ``None`` when even one tree's frame would not fit (the version keeps LightGBM)."""
    budget = STACK_BUDGET if budget is None else budget
    if stack_estimate(model_text, inline=True) <= budget:
        return True
    if stack_estimate(model_text, inline=False) <= budget:
        return False
    return None


def frame_sizes(obj: bytes) -> list[int]:
    """Stack frame sizes an x86-64 object reserves with ``sub $imm32, %rsp`` (``48 81 EC``), largest first.

    A byte scan of the whole object: a constant that happens to hold those bytes can only add a
    false, larger size (so a check errs on the safe side). Empty on other machines.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    sizes = [int.from_bytes(obj[m.end() : m.end() + 4], "little") for m in re.finditer(rb"\x48\x81\xec", obj)]
    return sorted(sizes, reverse=True)


def _header_int(model_text: str, key: str, default: int) -> int:
    m = re.search(rf"^{key}=(\d+)$", model_text, re.MULTILINE)
    return int(m.group(1)) if m else default


class CompiledForest:
    """One booster's trees as a compiled function ``f(rows*, out*, start, end)`` (float64, 2-D C order).

    Built from the model text (compiled in a child process: :func:`compile_object`, or from
    ``obj``, the object it returned) and linked in memory; :meth:`predict` scores a matrix like
    ``Booster.predict`` (the objective's transform applied; class probabilities for multiclass).
    ``fn`` keeps the GIL (one row on the event loop: a release would let another thread take it
    for up to a switch interval); :meth:`predict` releases it while it scores.
    """

    def __init__(self, model_text: str, obj: bytes | None = None, *, inline: bool | None = None,
                 stack_budget: int | None = None) -> None:
        from llvmlite import binding as llvm

        budget = STACK_BUDGET if stack_budget is None else stack_budget
        if inline is None:  # inlined when the trees' categorical bitsets fit the stack budget
            chosen = choose_inline(model_text, budget)
            if chosen is None:
                raise CompileError(
                    f"one tree's categorical splits would need about {stack_estimate(model_text, inline=False):,} "
                    f"bytes of stack per call (budget {budget:,})")
            inline = chosen
        self.inline = inline
        code = obj if obj is not None else compile_object(model_text, inline=inline)
        frames = frame_sizes(code)
        if frames and frames[0] > budget:  # checked before any of it is linked or run
            raise CompileError(f"the compiled trees reserve a {frames[0]:,}-byte stack frame (budget {budget:,})")
        llvm.initialize()
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_triple(llvm.get_process_triple())
        try:
            features = llvm.get_host_cpu_features().flatten()
        except RuntimeError:
            features = ""
        # the machine lleaves compiled for in the child (its defaults: this host, large code model)
        machine = target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=features, reloc="pic",
                                               codemodel="large")
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
        engine.set_object_cache(getbuffer_func=lambda _module: code)  # the child's object, from memory
        engine.finalize_object()
        engine.run_static_constructors()
        addr = engine.get_function_address(_ENTRY)
        if not addr:
            raise CompileError(f"the compiled object has no {_ENTRY}")
        self._engine = engine  # keeps the code alive
        args = (ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double), ctypes.c_int32, ctypes.c_int32)
        self.fn = ctypes.PYFUNCTYPE(None, *args)(addr)
        # the same entry without argument conversion, for the one-row hot path: it must be called with
        # exactly (c_void_p, c_void_p, c_int32, c_int32) instances (measured: 0.3 µs less per call)
        raw = ctypes.PYFUNCTYPE(None)(addr)
        raw.argtypes = None  # type: ignore[assignment]
        self.fn_raw = raw
        self._fn_nogil = ctypes.CFUNCTYPE(None, *args)(addr)
        self.num_features = _header_int(model_text, "max_feature_idx", -1) + 1
        self.num_outputs = max(1, _header_int(model_text, "num_class", 1))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores of a 2-D matrix (one thread, the GIL released)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        n = x.shape[0]
        out = np.zeros(n * self.num_outputs, dtype=np.float64)
        if n:
            self._fn_nogil(x.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
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
            stop_compilers()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    sys.exit(_main())
