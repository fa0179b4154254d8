"""Bootstrap evaluation of 1,000,000 predictions × 200 resamples × 6 metrics: loopml beside the naive loop.

``python -m benchmarks evaluation [--rows N] [--resamples B] [--repeats K] [--naive-resamples M] [--skip-peers]``

The metrics: ROC-AUC, PR-AUC (average precision), log loss, Brier score, precision and recall at 0.5.
Scores of a binary classifier with ties (rounded to 1e-4, as float32 model scores are) and 30%
positives are written once to ``benchmarks/envs/evaluation-data`` (ignored by git).

- loopml: :func:`loopml.evaluation.bootstrap.bootstrap_samples` on the six kernels (Poisson
  bootstrap counts, one sort, one int64 cumsum per resample for both curve metrics, one matrix
  product for the four sum metrics), in a subprocess of this venv; also the whole
  ``evaluate_predictions`` call (point values, intervals, curves, confusion matrix).
- naive: the loop people write — draw indices with replacement and call scikit-learn's six
  metric functions per resample — in its own virtual environment (``benchmarks/envs/eval-sklearn``).
  It is slow, so it runs ``--naive-resamples`` resamples and the time is scaled to 200.

loopml runs with its default of 1 thread and with 2 worker threads (``LOOPML_EVAL_THREADS=2``:
chunks of resamples in parallel), interleaved; BLAS is single-threaded in every process.

Each system runs in its own subprocess; the parent measures wall time and peak RSS (``os.wait4``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import ENVS, peer_env, write_results

REPO = Path(__file__).resolve().parents[1]
DATA = ENVS / "evaluation-data"
METRICS = ["roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall"]
PEER_PACKAGES = ["scikit-learn==1.9.1", "numpy==2.4.6"]

LOOPML_CHILD = r"""
import json, sys, time
import numpy as np
from loopml.evaluation.bootstrap import bootstrap_samples, point_estimates, percentile_interval
from loopml.evaluation.data import EvalData
from loopml.evaluation.metrics import build_kernel
from loopml.evaluation import evaluate_predictions
from loopml.spec.evaluation import Evaluation

data, resamples, mode, method = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
y = np.load(data + "/y.npy"); s = np.load(data + "/score.npy")
metrics = json.loads(sys.argv[5])
t0 = time.perf_counter()
if mode == "bootstrap":
    d = EvalData("binary", y, s)
    kernels = {k: build_kernel(k, d) for k in metrics}
    point = point_estimates(kernels, d.n)
    samples = bootstrap_samples(kernels, d.n, resamples, seed=0, method=method)
    out = {k: percentile_interval(point[k], samples[k], 0.95).to_json() for k in metrics}
else:
    ev = Evaluation(bootstrap_resamples=resamples, metrics=[{"name": k} for k in metrics], bootstrap_method=method,
                    permutation_repeats=0)
    r = evaluate_predictions("binary", y, s, spec_eval=ev)
    out = {k: r.metrics[k].interval.to_json() for k in metrics}
print(json.dumps({"seconds": time.perf_counter() - t0, "intervals": out}))
"""

NAIVE_CHILD = r"""
import json, sys, time
import numpy as np
from sklearn import metrics as M

data, resamples = sys.argv[1], int(sys.argv[2])
y = np.load(data + "/y.npy"); s = np.load(data + "/score.npy")
rng = np.random.default_rng(0)
t0 = time.perf_counter()
vals = {k: [] for k in ["roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall"]}
for _ in range(resamples):
    i = rng.integers(0, y.size, y.size)
    yy, ss = y[i], s[i]
    pred = ss >= 0.5
    vals["roc_auc"].append(M.roc_auc_score(yy, ss))
    vals["pr_auc"].append(M.average_precision_score(yy, ss))
    vals["log_loss"].append(M.log_loss(yy, ss))
    vals["brier"].append(M.brier_score_loss(yy, ss))
    vals["precision"].append(M.precision_score(yy, pred))
    vals["recall"].append(M.recall_score(yy, pred))
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "per_resample_s": dt / resamples,
                  "std": {k: float(np.std(v, ddof=1)) for k, v in vals.items()}}))
"""


def make_data(rows: int, ties: bool = True) -> Path:
    """Labels and scores of a plausible classifier, written once (scores rounded to 1e-4, or all distinct)."""
    out = DATA / f"{rows}-{'ties' if ties else 'continuous'}"
    if (out / "score.npy").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y = (rng.random(rows) < 0.3).astype(np.int8)
    logit = rng.normal(-1.2 + 1.6 * y, 1.0)
    s = 1 / (1 + np.exp(-logit))
    if ties:
        s = np.round(s, 4)  # ties, as tree-model scores have
    np.save(out / "y.npy", y)
    np.save(out / "score.npy", s)
    return out


def run_child(python: str, code: str, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``code`` in a subprocess; returns its JSON output with wall seconds and peak RSS (MiB)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
        script = f.name
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen([python, script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out = proc.stdout.read() if proc.stdout else ""
        err = proc.stderr.read() if proc.stderr else ""
        if status != 0:
            raise RuntimeError(f"benchmark child failed ({status}): {err[-2000:]}")
        res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        res["wall_s"] = wall
        res["peak_rss_mib"] = usage.ru_maxrss / 1024
        return res
    finally:
        os.unlink(script)


def main(argv: list[str]) -> int:
    def opt(name: str, default: int) -> int:
        for a in argv:
            if a.startswith(f"--{name}="):
                return int(a.split("=", 1)[1])
        return default

    rows = opt("rows", 1_000_000)
    resamples = opt("resamples", 200)
    repeats = opt("repeats", 3)
    naive_resamples = opt("naive-resamples", 20)
    skip_peers = "--skip-peers" in argv
    data = make_data(rows)
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    py = sys.executable
    mjson = json.dumps(METRICS)
    print(f"data: {rows:,} predictions, {resamples} resamples, metrics: {', '.join(METRICS)}", flush=True)

    runs: list[dict[str, Any]] = []
    runs1: list[dict[str, Any]] = []
    for i in range(repeats):  # interleaved, so both see the same machine load
        r = run_child(py, LOOPML_CHILD, [str(data), str(resamples), "bootstrap", "auto", mjson],
                      {**env, "LOOPML_EVAL_THREADS": "1"})
        runs.append(r)
        r1 = run_child(py, LOOPML_CHILD, [str(data), str(resamples), "bootstrap", "auto", mjson],
                       {**env, "LOOPML_EVAL_THREADS": "2"})
        runs1.append(r1)
        print(f"loopml bootstrap run {i + 1}: 1 thread {r['seconds']:.2f} s, 2 threads {r1['seconds']:.2f} s "
              f"({r['peak_rss_mib']:.0f} MiB)", flush=True)
    cont = make_data(rows, ties=False)
    runs_c = [run_child(py, LOOPML_CHILD, [str(cont), str(resamples), "bootstrap", "auto", mjson], env)
              for _ in range(repeats)]
    cont_s = float(np.median([r["seconds"] for r in runs_c]))
    print(f"loopml bootstrap, all scores distinct: {cont_s:.2f} s", flush=True)
    full = run_child(py, LOOPML_CHILD, [str(data), str(resamples), "evaluate", "auto", mjson], env)
    print(f"loopml evaluate_predictions: {full['seconds']:.2f} s", flush=True)
    exact = run_child(py, LOOPML_CHILD, [str(data), str(resamples), "bootstrap", "multinomial", mjson], env)
    print(f"loopml exact multinomial bootstrap: {exact['seconds']:.2f} s", flush=True)
    loop_s = float(np.median([r["seconds"] for r in runs]))
    loop1_s = float(np.median([r["seconds"] for r in runs1]))

    naive: dict[str, Any] | None = None
    if not skip_peers:
        peer_py = str(peer_env("eval-sklearn", PEER_PACKAGES))
        naive = run_child(peer_py, NAIVE_CHILD, [str(data), str(naive_resamples)],
                          {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
        naive["scaled_to_resamples_s"] = naive["per_resample_s"] * resamples
        print(f"naive scikit-learn loop: {naive['per_resample_s']:.2f} s per resample → "
              f"{naive['scaled_to_resamples_s']:.0f} s for {resamples}", flush=True)

    ratio = (naive["scaled_to_resamples_s"] / loop_s) if naive else None
    intervals = runs[0]["intervals"]
    data_out: dict[str, Any] = {
        "rows": rows, "resamples": resamples, "metrics": METRICS, "repeats": repeats,
        "loopml": {"bootstrap_seconds": [r["seconds"] for r in runs], "median_s": loop_s,
                   "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "method": "poisson (auto)",
                   "two_threads_median_s": loop1_s,
                   "two_threads_seconds": [r["seconds"] for r in runs1],
                   "distinct_scores_median_s": cont_s,
                   "distinct_scores_seconds": [r["seconds"] for r in runs_c],
                   "evaluate_predictions_s": full["seconds"], "exact_multinomial_s": exact["seconds"],
                   "intervals": intervals},
        "naive_sklearn": naive, "speedup_vs_naive": ratio, "target_s": 10.0, "meets_target": loop_s <= 10.0,
    }
    lines = [
        "# Evaluation benchmark: bootstrap confidence intervals",
        "",
        f"{rows:,} binary predictions (30% positives, scores rounded to 1e-4 so they have ties like tree-model "
        f"scores; one row also with all scores distinct), {resamples} bootstrap resamples, "
        f"{len(METRICS)} metrics ({', '.join(METRICS)}). Each system in its own subprocess, "
        "single-threaded BLAS (`OMP_NUM_THREADS=1`), on the shared 2-core machine; same data for all.",
        "",
        "| system | seconds for all resamples | per resample | peak RSS | note |",
        "|---|---:|---:|---:|---|",
        f"| loopml `bootstrap_samples` (Poisson counts, default 1 thread, median of {repeats}) | {loop_s:.2f} | "
        f"{1000 * loop_s / resamples:.1f} ms | {data_out['loopml']['peak_rss_mib']:.0f} MiB | "
        f"runs: {', '.join(format(r['seconds'], '.2f') for r in runs)} s; point values included |",
        f"| loopml `bootstrap_samples`, 2 threads (median of {repeats}) | {loop1_s:.2f} | "
        f"{1000 * loop1_s / resamples:.1f} ms | {max(r['peak_rss_mib'] for r in runs1):.0f} MiB | "
        f"runs: {', '.join(format(r['seconds'], '.2f') for r in runs1)} s |",
        f"| loopml `bootstrap_samples`, every score distinct (no ties; median of {repeats}) | {cont_s:.2f} | "
        f"{1000 * cont_s / resamples:.1f} ms | {max(r['peak_rss_mib'] for r in runs_c):.0f} MiB | "
        f"runs: {', '.join(format(r['seconds'], '.2f') for r in runs_c)} s |",
        f"| loopml `bootstrap_samples`, exact multinomial counts | {exact['seconds']:.2f} | "
        f"{1000 * exact['seconds'] / resamples:.1f} ms | {exact['peak_rss_mib']:.0f} MiB | one run |",
        f"| loopml `evaluate_predictions` (intervals + curves + confusion) | {full['seconds']:.2f} | | "
        f"{full['peak_rss_mib']:.0f} MiB | one run |",
    ]
    if naive:
        lines.append(
            f"| naive loop: resample indices + scikit-learn {PEER_PACKAGES[0].split('==')[1]} metric functions | "
            f"{naive['scaled_to_resamples_s']:.0f} (scaled from {naive_resamples} resamples, {naive['seconds']:.1f} s) | "
            f"{1000 * naive['per_resample_s']:.0f} ms | {naive['peak_rss_mib']:.0f} MiB | own venv |")
    lines += [
        "",
        f"**Target** ≤ 10 s: {'met' if loop_s <= 10 and cont_s <= 10 else 'NOT met'} ({loop_s:.2f} s with ties, "
        f"{cont_s:.2f} s with every score distinct; 2 threads {loop1_s:.2f} s)."
        + (f" **loopml is {ratio:.0f}× faster** than the naive loop, both single-threaded." if ratio else ""),
        "",
        "Intervals (95%, loopml):",
        "",
        "| metric | value | lower | upper | bootstrap std"
        + (f" | naive-loop std (only {naive_resamples} resamples: ±{100 / np.sqrt(2 * (naive_resamples - 1)):.0f}%) |"
           if naive else " |"),
        "|---|---:|---:|---:|---:|" + ("---:|" if naive else ""),
    ]
    for k in METRICS:
        iv = intervals[k]
        row = f"| {k} | {iv['value']:.5f} | {iv['lower']:.5f} | {iv['upper']:.5f} | {iv['std']:.6f} |"
        if naive:
            row += f" {naive['std'][k]:.6f} |"
        lines.append(row)
    lines += ["", f"Command: `python -m benchmarks evaluation{' ' + ' '.join(argv) if argv else ''}`", ""]
    md = write_results("evaluation", data_out, "\n".join(lines))
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
