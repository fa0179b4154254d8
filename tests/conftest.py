"""Shared fixtures: the real datasets folder, a fresh project folder, and the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOOPML = [sys.executable, "-m", "loopml.cli.main"]


def datasets_dir() -> Path:
    """``$LOOPML_DATASETS`` or ``../shared/datasets`` beside the repository."""
    env = os.environ.get("LOOPML_DATASETS")
    d = Path(env) if env else REPO.parent / "shared" / "datasets"
    if not d.is_dir():
        raise RuntimeError(f"real datasets folder not found at {d}; set LOOPML_DATASETS")
    return d


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The real datasets folder (``kdd2012_click_small``, ``german_credit``, ...)."""
    return datasets_dir()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder."""
    p = tmp_path / "proj"
    p.mkdir()
    return p


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600,
            check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``loopml ARGS`` in a subprocess and return the completed process (text output)."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("COLUMNS", "200")
    proc = subprocess.run([*LOOPML, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"loopml {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    """The ``run_cli`` helper as a fixture."""
    return run_cli
