"""`loopml evaluate` with permutation importance on, on the davidson_hate_speech example (24,783 tweets).

``python -m benchmarks importance [--projects DIR] [--only=NAME,...]``

Each project is trained once with ``loopml run`` (a cache hit when already trained) and then
evaluated with ``loopml evaluate --force`` (timed: the whole CLI process, wall clock):

- ``davidson``: the example as shipped (``examples/davidson_hate_speech``: sparse TF-IDF of the
  tweet, up to 50,000 terms);
- ``davidson_embedding`` (only with ``--only=davidson_embedding``): the same with MiniLM sentence
  embeddings (384 model columns); training times ~900 single-row encodings per candidate, which
  takes most of an hour on a busy 2-core machine.

Importance is by input column: one shuffle per input column and repeat (3 repeats, the default),
so the text column costs three scorings, not 3 × (its number of model columns). The target is
under 30 s. The machine is shared: the figures say when it was busy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import ENVS, datasets_dir, write_results

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "davidson_hate_speech" / "loopml.yaml"
PREFIX = "../../../shared/datasets"


def spec_text(name: str) -> str:
    """The example's spec with absolute data paths (and, for the embedding variant, the text feature swapped)."""
    text = EXAMPLE.read_text().replace(PREFIX, str(datasets_dir()))
    if name == "davidson_embedding":
        old = "    - {column: tweet, kind: text, transforms: [{type: tfidf, max_features: 50000, min_df: 2}]}"
        if old not in text:
            raise RuntimeError("the davidson example's feature line changed; update bench_importance")
        text = text.replace(old, "    - {column: tweet, kind: text, transforms: [{type: sentence_embedding, "
                                 "batch_size: 128}]}")
    return text


def loopml(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the CLI; returns the process and its wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "loopml.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, check=False)
    return proc, time.perf_counter() - t0


def bench(name: str, root: Path) -> dict[str, Any]:
    """Train (cached) and time one ``loopml evaluate --force`` with importance on."""
    proj = root / name
    proj.mkdir(parents=True, exist_ok=True)
    spec = proj / "loopml.yaml"
    text = spec_text(name)
    if not spec.exists() or spec.read_text() != text:
        spec.write_text(text)
    print(f"[{name}] loopml run (trains once; a cache hit afterwards)", flush=True)
    run, run_s = loopml("run", "-p", str(proj), "-q")
    if run.returncode not in (0, 1):
        raise RuntimeError(f"loopml run failed in {proj}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    load = os.getloadavg()[0]
    proc, secs = loopml("evaluate", "-p", str(proj), "--force", "-q")
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"loopml evaluate failed in {proj}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    report = json.loads((proj / ".loopml" / "reports" / "evaluation.json").read_text())
    info = report["analysis"].get("importance_info") or {}
    perm = report["analysis"]["importance"].get("permutation") or []
    print(f"[{name}] loopml evaluate --force: {secs:.1f} s (load {load:.1f}); importance {info.get('seconds')} s, "
          f"{info.get('shuffles')} shuffles, stopped early: {info.get('stopped_early')}", flush=True)
    return {
        "project": name,
        "evaluate_s": secs,
        "run_s": run_s,
        "load_1min": load,
        "test_rows": report["rows"],
        "model_type": report["model"]["model_type"],
        "model_columns": perm[0]["model_columns"] if perm else None,
        "importance": info,
        "top": perm[:3],
        "primary": {"metric": report["primary_metric"], "value": report["metrics"][report["primary_metric"]]["value"]},
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# `loopml evaluate` with permutation importance on (davidson_hate_speech)",
        "",
        "Wall time of the whole `loopml evaluate -p PROJECT --force -q` process (load the bundles, build the test "
        "matrix once, score candidate and baseline, bootstrap intervals, slices, importance, largest losses, "
        "reports) after `loopml run` trained the project. Importance: one shuffle per input column and repeat "
        "(3 repeats), within `evaluation.importance_budget_s` (15 s). Target: under 30 s. Measured on the shared "
        "2-core machine while other work ran (1-minute load average in the table).",
        "",
        "| project | text feature | model | model columns of the text | test rows | evaluate s | importance s | "
        "shuffles | stopped early | load |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        info = r["importance"]
        feat = "MiniLM sentence embedding" if r["project"] == "davidson_embedding" else "TF-IDF (sparse)"
        lines.append(
            f"| {r['project']} | {feat} | {r['model_type']} | {r['model_columns']} | {r['test_rows']:,} | "
            f"{r['evaluate_s']:.1f} | {info.get('seconds', float('nan')):.2f} | {info.get('shuffles')} | "
            f"{info.get('stopped_early')} | {r['load_1min']:.1f} |"
        )
    lines += ["", "Command: `python -m benchmarks importance`", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    root = ENVS / "importance-projects"
    only: list[str] | None = None
    for a in argv:
        if a.startswith("--projects="):
            root = Path(a.split("=", 1)[1])
        elif a.startswith("--only="):
            only = a.split("=", 1)[1].split(",")
    names = only or ["davidson"]
    rows = [bench(n, root) for n in names]
    md = markdown(rows)
    path = write_results("importance", {"rows": rows}, md)
    print(md)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
