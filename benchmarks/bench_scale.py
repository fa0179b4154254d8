"""How loopml's cost grows with its work: the demo's own pipeline at 0.1M, 1M (and 10M) simulated rows.

``python -m benchmarks scale`` runs ``loopml demo --no-serve --impressions-per-day N`` (7 simulated days plus
the replayed one) in a fresh project for each size, each in its own process, and reports:

* the whole demo's wall time and the peak RSS of its largest process (``getrusage`` of the waited children);
* per pipeline stage of the initial training run (ingest → register): wall time and peak RSS, read from the run
  record (``loopml runs``: every stage reports its RSS high-water mark, see ``loopml.pipeline.resources``);
* the growth exponent of each between consecutive sizes, ``log(cost ratio) / log(rows ratio)`` (1 = linear).

Sizes: ``--sizes=0.1M,1M`` (default) or ``--sizes=0.1M,1M,10M`` (with ``=``: ``python -m benchmarks`` takes bare words for benchmark names) (10M rows: 37 minutes and a 5.8 GB process on 2 cores).
The report ends with issue 20's targets, met or not.
Rows are impressions: ``0.1M`` is 15,000 impressions per day (7 days: 105k rows), as in issue 20's table.
Results: ``benchmarks/results/scale.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import write_results

STAGES = ("ingest", "validate", "features", "train", "evaluate", "register")
PER_DAY = {"0.1M": 15_000, "1M": 150_000, "10M": 1_500_000}

_CHILD = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t0
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": proc.returncode, "wall_s": wall, "peak_rss_kb": peak_kb, "stderr": proc.stderr[-3000:]}))
"""


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def run_size(label: str, per_day: int, work: Path) -> dict[str, Any]:
    """One demo run of ``per_day`` impressions per day; its wall time, peak RSS and per-stage record."""
    project = work / f"demo-{label}"
    shutil.rmtree(project, ignore_errors=True)
    cmd = [sys.executable, "-m", "loopml.cli.main", "demo", "--no-serve", "--impressions-per-day", str(per_day),
           "-p", str(project)]
    load_before = _load()
    # a fresh process per size: getrusage(RUSAGE_CHILDREN) is the peak of that size's processes only
    out = subprocess.run([sys.executable, "-c", _CHILD, *cmd], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise SystemExit(f"demo at {label} failed (exit {res['rc']}), project kept in {project}:\n{res['stderr']}")
    from loopml.lineage import list_executions, list_runs
    from loopml.workspace import Workspace

    ws = Workspace.open(project)
    first = next(r for r in reversed(list_runs(ws, 100)) if r["command"] == "loopml demo: initial training")
    stages: dict[str, dict[str, Any]] = {}
    rows = None
    for e in list_executions(ws, first["run_id"], 100):
        stages[e["stage"]] = {"seconds": e["duration_s"], "peak_rss_mb": e["peak_rss_mb"], "status": e["status"]}
        if e["stage"] == "ingest":
            rows = (e["summary"] or {}).get("rows")
    # every stage of the demo (the initial run and the monitor's retraining): the largest stage peak
    all_peaks = [e["peak_rss_mb"] for e in list_executions(ws, None, 1000) if e["peak_rss_mb"] is not None]
    pipeline_s = sum(s["seconds"] or 0.0 for s in stages.values())
    from loopml.monitoring.records import monitor_decisions, recent

    retrain = next((d for d in recent(ws, monitor_decisions, "decided_at", 20) if d["action"] == "retrain"), None)
    retrain_process = ((retrain or {}).get("evidence") or {}).get("process")  # the retraining's child process
    retrain_stages = {e["stage"]: {"seconds": e["duration_s"], "peak_rss_mb": e["peak_rss_mb"]}
                      for e in list_executions(ws, retrain["run_id"], 100)} if retrain and retrain.get("run_id") else {}
    demo = json.loads((ws.root / "demo.json").read_text())
    shutil.rmtree(project, ignore_errors=True)
    return {
        "label": label,
        "impressions_per_day": per_day,
        "rows": rows,
        "demo_wall_s": res["wall_s"],
        "demo_peak_rss_mb": max(res["peak_rss_kb"] / 1024, *all_peaks),
        "pipeline_s": pipeline_s,
        "stages": stages,
        "demo_timings": demo.get("timings", {}),
        "retrain_process": retrain_process,
        "retrain_stages": retrain_stages,
        "load_1min_before": load_before,
        "load_1min_after": _load(),
    }


def exponent(a: float | None, b: float | None, n_a: float, n_b: float) -> float | None:
    """Growth exponent between two sizes (cost ∝ rows^k)."""
    if not a or not b or a <= 0 or b <= 0:
        return None
    return math.log(b / a) / math.log(n_b / n_a)


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


#: issue 20's targets: peak RSS per size (MB of 2**20 bytes, the run record's unit) and the 10M / 1M wall-time ratio
PEAK_TARGET_MB = {"1M": 2 * 1024, "10M": 6 * 1024}
WALL_RATIO_10M_TO_1M = 12.0


def targets(results: list[dict[str, Any]]) -> list[str]:
    """One line per target that this run's sizes can judge: the measured value, the target, met or not."""
    by = {r["label"]: r for r in results}
    out = []
    for label, cap in PEAK_TARGET_MB.items():
        if label in by:
            peak = by[label]["demo_peak_rss_mb"]
            out.append(f"- {label} peak RSS {peak:,.0f} MB ({peak / 1024:.2f} GiB, {peak * 2**20 / 1e9:.2f} GB of 10^9 bytes)"
                       f" ≤ {cap:,} MB ({cap // 1024} GiB): **{'met' if peak <= cap else 'NOT met'}**")
    if "1M" in by and "10M" in by:
        ratio = by["10M"]["demo_wall_s"] / by["1M"]["demo_wall_s"]
        out.append(f"- 10M whole demo {by['10M']['demo_wall_s']:,.0f} s = {ratio:.1f}× the 1M run "
                   f"({by['1M']['demo_wall_s']:,.0f} s) ≤ {WALL_RATIO_10M_TO_1M:g}×: "
                   f"**{'met' if ratio <= WALL_RATIO_10M_TO_1M else 'NOT met'}**")
    return out


def render(results: list[dict[str, Any]]) -> str:
    """The Markdown report."""
    lines = [
        "# Scale: the demo's pipeline at growing sizes",
        "",
        "`python -m benchmarks scale` runs `loopml demo --no-serve --impressions-per-day N` (7 days + the replayed "
        "one) per size in a fresh project. Peak RSS of a stage is the RSS high-water mark of the process that ran it "
        "(the run record, `loopml runs --run ID`); the demo's peak is its largest process (`getrusage` of the waited children, and the largest stage peak of the demo, retraining included). Growth "
        "exponent k: cost ∝ rows^k between consecutive sizes (1 = linear).",
        "",
        "| size | rows | whole demo (s) | pipeline (s) | demo peak RSS (MB) | 1-min load before → after |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['rows']:,} | {r['demo_wall_s']:.0f} | {r['pipeline_s']:.0f} | "
            f"{r['demo_peak_rss_mb']:,.0f} | {r['load_1min_before']:.1f} → {r['load_1min_after']:.1f} |"
        )
    for r in results:
        proc = r.get("retrain_process")
        if proc:
            lines.append(f"\n{r['label']}: the monitor's retraining ran in its own child process (pid {proc['pid']}), "
                         f"peak RSS {proc['peak_rss_mb']:,.0f} MB.")
    lines += ["", "Per stage (initial training run): seconds / peak RSS MB", ""]
    head = "| stage | " + " | ".join(f"{r['label']} s | {r['label']} MB" for r in results)
    exps = [f"k time {a['label']}→{b['label']} | k RSS {a['label']}→{b['label']}" for a, b in itertools.pairwise(results)]
    lines.append(head + (" | " + " | ".join(exps) if exps else "") + " |")
    lines.append("|---|" + "---:|" * (2 * len(results) + 2 * len(exps)))
    for st in STAGES:
        cells = []
        for r in results:
            s = r["stages"].get(st, {})
            cells += [_fmt(s.get("seconds"), ".1f"), _fmt(s.get("peak_rss_mb"), ",.0f")]
        for a, b in itertools.pairwise(results):
            sa, sb = a["stages"].get(st, {}), b["stages"].get(st, {})
            cells += [_fmt(exponent(sa.get("seconds"), sb.get("seconds"), a["rows"], b["rows"])),
                      _fmt(exponent(sa.get("peak_rss_mb"), sb.get("peak_rss_mb"), a["rows"], b["rows"]))]
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    if any(r.get("retrain_stages") for r in results):
        lines += ["", "Per stage (the monitor's retraining, on the week plus the replayed day): seconds / peak RSS MB", "",
                  "| stage | " + " | ".join(f"{r['label']} s | {r['label']} MB" for r in results) + " |",
                  "|---|" + "---:|" * (2 * len(results))]
        for st in STAGES:
            cells = []
            for r in results:
                s = (r.get("retrain_stages") or {}).get(st, {})
                cells += [_fmt(s.get("seconds"), ".1f"), _fmt(s.get("peak_rss_mb"), ",.0f")]
            lines.append(f"| {st} | " + " | ".join(cells) + " |")
    for a, b in itertools.pairwise(results):
        lines.append(
            f"\nWhole demo {a['label']}→{b['label']}: k time {_fmt(exponent(a['demo_wall_s'], b['demo_wall_s'], a['rows'], b['rows']))}, "
            f"k peak RSS {_fmt(exponent(a['demo_peak_rss_mb'], b['demo_peak_rss_mb'], a['rows'], b['rows']))}."
        )
    goals = targets(results)
    if goals:
        lines += ["", "## Targets", "", *goals]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks scale")
    ap.add_argument("--sizes", default="0.1M,1M", help="Comma-separated sizes among 0.1M, 1M, 10M (default 0.1M,1M).")
    ap.add_argument("--note", default="", help="A line added to the report (e.g. how busy the machine was).")
    args = ap.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in PER_DAY]
    if bad:
        raise SystemExit(f"--sizes: unknown size {bad[0]!r} (choose among {', '.join(PER_DAY)})")
    results = []
    tmp = tempfile.mkdtemp(prefix="loopml-scale-")  # kept when a size fails: its project is there to look into
    for label in sizes:
        print(f"  {label}: loopml demo --impressions-per-day {PER_DAY[label]:,} …", flush=True)
        t0 = time.perf_counter()
        results.append(run_size(label, PER_DAY[label], Path(tmp)))
        r = results[-1]
        print(f"    {r['rows']:,} rows: {time.perf_counter() - t0:.0f} s, demo peak RSS {r['demo_peak_rss_mb']:,.0f} MB; "
              + ", ".join(f"{k} {v['seconds']:.0f} s/{v['peak_rss_mb'] or 0:,.0f} MB" for k, v in r["stages"].items()),
              flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    md = render(results)
    if args.note:
        md += f"\n{args.note}\n"
    path = write_results("scale", {"results": results, "note": args.note}, md)
    print(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
