"""Runner: caching, --force, --until/--from, resume after a kill, the concurrent-run lock, lineage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopml.lineage import lineage, list_executions
from loopml.workspace import Workspace
from tests.conftest import LOOPML, REPO, run_cli

SPEC = "project: {name: demo}\ntask: {target: y}\n"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "LOOPML_PLUGINS": "tests.foundation.plugin_stages",
        "LOOPML_TEST_STAGES": "1",
        "LOOPML_TEST_TRACE": str(tmp_path / "trace.txt"),
        "PYTHONPATH": str(REPO),
    }


@pytest.fixture
def proj(project: Path) -> Path:
    (project / "loopml.yaml").write_text(SPEC)
    return project


def trace(env: dict[str, str]) -> list[str]:
    p = Path(env["LOOPML_TEST_TRACE"])
    lines = p.read_text().split() if p.exists() else []
    p.unlink(missing_ok=True)
    return lines


def run(proj: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "-q", "-p", str(proj), *args, env=env)


def test_second_run_is_all_cache_hits(proj: Path, env: dict[str, str]) -> None:
    first = run(proj, env)
    assert first.returncode == 0, first.stderr
    assert trace(env) == ["alpha", "beta", "gamma"]
    second = run(proj, env)
    assert second.returncode == 0, second.stderr
    assert trace(env) == []
    assert second.stdout.count("cache hit") >= 3


def test_force_reruns_everything(proj: Path, env: dict[str, str]) -> None:
    run(proj, env)
    trace(env)
    assert run(proj, env, "--force").returncode == 0
    assert trace(env) == ["alpha", "beta", "gamma"]


def test_config_change_reruns_only_affected_stages(proj: Path, env: dict[str, str]) -> None:
    run(proj, env)
    trace(env)
    (proj / "loopml.yaml").write_text("project: {name: demo}\ntask: {target: z}\n")
    assert run(proj, env).returncode == 0
    assert trace(env) == ["gamma"]  # only gamma's config includes task.target
    (proj / "loopml.yaml").write_text("project: {name: other}\ntask: {target: z}\n")
    assert run(proj, env).returncode == 0
    assert trace(env) == ["alpha", "beta", "gamma"]  # alpha's output changed, so everything downstream


def test_until_and_from(proj: Path, env: dict[str, str]) -> None:
    assert run(proj, env, "--until", "beta").returncode == 0
    assert trace(env) == ["alpha", "beta"]
    assert run(proj, env, "--from", "beta").returncode == 0
    assert trace(env) == ["beta", "gamma"]
    bad = run(proj, env, "--until", "nope")
    assert bad.returncode != 0 and "no such stage" in bad.stderr and "alpha" in bad.stderr


def _start_sleeping_run(proj: Path, env: dict[str, str], tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    marker = tmp / "marker"
    marker.unlink(missing_ok=True)
    full = {**os.environ, **env, "LOOPML_TEST_SLEEP_IN": "beta", "LOOPML_TEST_MARKER": str(marker)}
    # a shell starts background jobs with SIGINT ignored (so does `nohup ... &` of a CI script), and a
    # process started that way keeps ignoring it: the run gets the disposition a terminal gives it
    proc = subprocess.Popen([*LOOPML, "run", "-q", "-p", str(proj)], env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not marker.exists():
        if proc.poll() is not None or time.time() > deadline:
            out, err = proc.communicate()
            raise AssertionError(f"run ended before reaching beta: {out}\n{err}")
        time.sleep(0.05)
    return proc, marker


def test_resume_after_kill_mid_stage(proj: Path, env: dict[str, str], tmp_path: Path) -> None:
    proc, _ = _start_sleeping_run(proj, env, tmp_path)
    ws = Workspace.open(proj)
    assert any(ws.artifacts.tmp.iterdir()), "beta should have a half-written temp file"
    proc.kill()
    proc.wait()
    assert trace(env) == ["alpha", "beta"]
    running = [e for e in list_executions(ws) if e["status"] == "running"]
    assert [e["stage"] for e in running] == ["beta"]
    # no half artifact is visible under a final name: every stored file verifies
    for f in ws.artifacts.root.rglob("*"):
        if f.is_file() and ".tmp" not in f.parts:
            ws.artifacts.open_verified(f.name)

    again = run(proj, env)
    assert again.returncode == 0, again.stderr
    assert trace(env) == ["beta", "gamma"]  # alpha finished before the kill: not redone
    assert list(ws.artifacts.tmp.iterdir()) == []
    statuses = {(e["stage"], e["status"]) for e in list_executions(ws)}
    assert ("beta", "interrupted") in statuses and ("alpha", "cached") in statuses


def test_ctrl_c_exits_130_and_resumes(proj: Path, env: dict[str, str], tmp_path: Path) -> None:
    proc, _ = _start_sleeping_run(proj, env, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "resume" in err
    trace(env)
    assert run(proj, env).returncode == 0
    assert trace(env) == ["beta", "gamma"]


def test_concurrent_run_is_refused(proj: Path, env: dict[str, str], tmp_path: Path) -> None:
    proc, _ = _start_sleeping_run(proj, env, tmp_path)
    try:
        second = run(proj, env, "--wait", "0.5")
        assert second.returncode != 0
        assert "in use by another run" in second.stderr and f"pid {proc.pid}" in second.stderr
    finally:
        proc.kill()
        proc.wait()


def test_process_executor_gives_same_outputs(proj: Path, env: dict[str, str], tmp_path: Path) -> None:
    assert run(proj, env).returncode == 0
    ws = Workspace.open(proj)
    first = {e["stage"]: e["outputs"] for e in list_executions(ws) if e["status"] == "success"}
    assert run(proj, env, "--force", "--executor", "process").returncode == 0
    second = {e["stage"]: e["outputs"] for e in list_executions(ws, limit=3)}
    assert first == second


def test_ray_executor_gives_same_outputs(proj: Path, env: dict[str, str]) -> None:
    pytest.importorskip("ray", reason="Ray comes with the `scale` extra, which `make test` installs")
    assert run(proj, env).returncode == 0
    ws = Workspace.open(proj)
    first = {e["stage"]: e["outputs"] for e in list_executions(ws) if e["status"] == "success"}
    res = run(proj, {**env, "RAY_AUTH_MODE": "disabled"}, "--force", "--executor", "ray")
    assert res.returncode == 0, res.stderr
    assert trace(env) == ["alpha", "beta", "gamma", "alpha", "beta", "gamma"]  # written by the Ray workers
    second = {e["stage"]: e["outputs"] for e in list_executions(ws, limit=3)}
    assert first == second


def test_lineage_of_three_stage_run(proj: Path, env: dict[str, str]) -> None:
    assert run(proj, env).returncode == 0
    ws = Workspace.open(proj)
    gamma = next(e for e in list_executions(ws) if e["stage"] == "gamma")
    steps = lineage(ws, gamma["outputs"]["count"])
    assert [(s.depth, s.stage, s.name) for s in steps] == [
        (0, "gamma", "gamma.txt"),
        (1, "beta", "beta.txt"),
        (2, "alpha", "alpha.txt"),
    ]
    assert all(s.status == "success" and s.config_hash and s.code_version for s in steps)
    out = run_cli("lineage", gamma["outputs"]["count"][:10], "-p", str(proj), env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.index("gamma") < out.stdout.index("beta") < out.stdout.index("alpha")
    runs = run_cli("runs", "-p", str(proj), env=env)
    assert runs.returncode == 0 and "success" in runs.stdout and "gamma" in runs.stdout


def test_failed_stage_is_recorded_and_exit_nonzero(proj: Path, env: dict[str, str]) -> None:
    (proj / "loopml.yaml").write_text(SPEC)
    bad_env = {**env, "LOOPML_PLUGINS": "tests.foundation.plugin_stages,tests.foundation.failing_stage"}
    res = run(proj, bad_env)
    assert res.returncode == 1
    assert "stage `boom` crashed" in res.stderr and "ZeroDivisionError" in res.stderr
    ws = Workspace.open(proj)
    boom = next(e for e in list_executions(ws) if e["stage"] == "boom")
    assert boom["status"] == "failed" and "ZeroDivisionError" in boom["error"]
    assert sys.executable  # the suite runs the CLI with this interpreter


def test_debug_prints_the_failing_stage_traceback_and_without_it_one_line(proj: Path, env: dict[str, str]) -> None:
    (proj / "loopml.yaml").write_text(SPEC)
    bad_env = {**env, "LOOPML_PLUGINS": "tests.foundation.plugin_stages,tests.foundation.failing_stage"}
    plain = run(proj, bad_env)
    assert plain.returncode == 1
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1, plain.stderr  # one clear line, no traceback
    assert lines[0].startswith("error: stage `boom` crashed: ZeroDivisionError: division by zero"), lines[0]
    assert "--debug" in lines[0] and "Traceback" not in plain.stderr
    debug = run_cli("--debug", "run", "-q", "-p", str(proj), env=bad_env)
    assert debug.returncode == 1
    # the original traceback of the stage: the frame that raised, in the plugin's module, not the CLI's re-raise
    assert "Traceback (most recent call last)" in debug.stderr
    assert "failing_stage.py" in debug.stderr and 'return StageResult({"x": str(1 / 0)})' in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("error: stage `boom` crashed")
