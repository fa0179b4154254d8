"""Shared benchmark helpers: peer virtual environments, timing statistics, result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ENVS = HERE / "envs"
RESULTS = HERE / "results"


def datasets_dir() -> Path:
    """``$LOOPML_DATASETS`` or ``../shared/datasets`` beside the repository."""
    env = os.environ.get("LOOPML_DATASETS")
    return Path(env) if env else HERE.parent.parent / "shared" / "datasets"


def peer_env(name: str, packages: list[str]) -> Path:
    """Python of a virtual environment ``benchmarks/envs/NAME`` holding ``packages`` (created once).

    Each peer lives in its own environment so its pins never touch loopml's.
    """
    env = ENVS / name
    py = env / "bin" / "python"
    stamp = env / ".installed"
    want = "\n".join(packages)
    if stamp.exists() and stamp.read_text() == want:
        return py
    ENVS.mkdir(parents=True, exist_ok=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-U", "pip"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *packages], check=True)
    stamp.write_text(want)
    return py


def stats_ms(samples_s: list[float] | np.ndarray) -> dict[str, float]:
    """Median, p90, p99 and mean of timings given in seconds, reported in milliseconds."""
    a = np.asarray(samples_s, dtype=float) * 1000.0
    return {
        "median_ms": float(np.median(a)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "n": int(a.size),
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_results(name: str, data: dict[str, Any], markdown: str) -> Path:
    """Write ``results/NAME.json`` and ``results/NAME.md``; returns the Markdown path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))
    md = RESULTS / f"{name}.md"
    md.write_text(markdown)
    return md
