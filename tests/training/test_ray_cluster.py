"""The same spec on a local 2-node Ray cluster: LightGBM trained by Ray Train, batch scores from Ray Data.

A helper process starts a Ray head and a second node (one CPU each, every server on 127.0.0.1, no
dashboard) in a temp folder of its own, prints the address and stops both nodes when its stdin closes,
so the cluster goes away even if this test process dies. The CLI reaches it through ``RAY_ADDRESS``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli

pytest.importorskip("ray", reason="Ray comes with the `scale` extra, which `make test` installs")

CLUSTER = """
import sys
from ray.cluster_utils import Cluster
c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
            "include_dashboard": False, "temp_dir": sys.argv[1]})
c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
c.wait_for_nodes()
print(c.address, flush=True)
sys.stdin.read()  # until the test closes it (or dies)
c.shutdown()
"""

SPEC = """
spec_version: 1
project: {{name: bikes-{name}}}
task: {{type: regression, target: cnt}}
data:
  sources:
    hours: {{type: csv, path: {csv}}}
  transform: >
    SELECT instant, season, yr, mnth, hr, holiday, weekday, workingday, weathersit, temp, atemp, hum, windspeed, cnt
    FROM hours
features:
  inputs:
    - {{column: hr, kind: numeric}}
    - {{column: weekday, kind: categorical}}
    - {{column: workingday, kind: numeric}}
    - {{column: season, kind: categorical}}
    - {{column: mnth, kind: numeric}}
    - {{column: yr, kind: numeric}}
    - {{column: weathersit, kind: categorical}}
    - {{column: temp, kind: numeric}}
    - {{column: hum, kind: numeric}}
    - {{column: windspeed, kind: numeric}}
training:
  split: {{type: random, valid_fraction: 0.15, test_fraction: 0.15}}
  executor: {executor}
  ray_workers: 2
  candidates:
    - {{type: lightgbm, params: {{n_estimators: 400, learning_rate: 0.1, num_leaves: 31, early_stopping_rounds: 30}}}}
evaluation:
  bootstrap_resamples: 200
  metrics: [{{name: rmse}}]
deployment:
  batch_executor: {executor}
"""


def _ray_processes(marker: str) -> list[int]:
    """Pids of the processes whose command line names ``marker`` (the cluster's own temp folder)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def _listening(pids: list[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every listening TCP socket the processes hold (from /proc)."""
    addrs: dict[str, str] = {}
    for table, v6 in (("tcp", False), ("tcp6", True)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A":  # LISTEN
                continue
            hexip = f[1].split(":")[0]
            raw = bytes.fromhex(hexip)
            # /proc prints each 32-bit word little-endian
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            addr = ipaddress.IPv6Address(words) if v6 else ipaddress.IPv4Address(words)
            mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
            ip = str(mapped or addr)
            addrs[f[9]] = ip
    out = []
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in addrs:
                    out.append((pid, addrs[link[8:-1]]))
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[dict[str, Any]]:
    """A 2-node Ray cluster on 127.0.0.1 (one CPU per node), stopped and checked for leftovers afterwards."""
    temp = tempfile.mkdtemp(prefix="lmray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    helper = subprocess.Popen([sys.executable, "-c", CLUSTER, temp], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    assert helper.stdout is not None and helper.stdin is not None
    address = helper.stdout.readline().strip()
    try:
        assert address.startswith("127.0.0.1:"), f"the cluster did not start (helper said {address!r})"
        yield {"address": address, "temp": temp, "env": {**env, "RAY_ADDRESS": address}}
    finally:
        helper.stdin.close()
        helper.wait(timeout=120)
        deadline = time.time() + 60
        while _ray_processes(temp) and time.time() < deadline:
            time.sleep(1)
        left = _ray_processes(temp)
        for pid in left:  # only the processes of this cluster (its own temp folder), by pid
            os.kill(pid, signal.SIGKILL)
        assert not left, f"Ray processes left after the cluster stopped: {left}"


def _project(root: Path, name: str, executor: str, datasets: Path) -> Path:
    proj = root / name
    proj.mkdir()
    csv = datasets / "bike_sharing" / "hour.csv"
    (proj / "loopml.yaml").write_text(SPEC.format(name=name, csv=csv, executor=executor))
    return proj


def _report(proj: Path) -> tuple[str, dict[str, Any], str]:
    """The registered version, its evaluation report and the digest of its test split."""
    from loopml.project import Project
    from loopml.registry import Registry

    p = Project(proj)

    version = Registry(p.workspace).list()[-1]
    manifest_split = json.loads(p.workspace.artifacts.get_bytes(version.bundle_digest))["training"]["splits"]["test"]
    return version.version_id, p.evaluation(version.version_id), manifest_split


def _scores(proj: Path, version: str, batch: Path, out: Path, executor: str, env: dict[str, str]) -> np.ndarray:
    res = run_cli("predict", "-p", str(proj), "--batch", str(batch), "--version", version, "--executor", executor,
                  "--chunk-rows", "500", "--keep", "instant", "-o", str(out), "--json", env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    table = pq.read_table(out)
    return np.column_stack([table.column("instant").to_numpy(), table.column("score").to_numpy()])


@pytest.mark.slow
def test_ray_training_and_batch_scoring_match_the_single_machine_run(
    ray_cluster: dict[str, Any], datasets: Path, tmp_path: Path
) -> None:
    env = ray_cluster["env"]
    local = _project(tmp_path, "local", "inprocess", datasets)
    on_ray = _project(tmp_path, "ray", "ray", datasets)
    t0 = time.time()
    res = run_cli("run", "-p", str(local), "-q", env={k: v for k, v in env.items() if k != "RAY_ADDRESS"}, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    t1 = time.time()
    res = run_cli("run", "-p", str(on_ray), "-q", env=env, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    t2 = time.time()

    v_local, rep_local, test_digest = _report(local)
    v_ray, rep_ray, _ = _report(on_ray)
    from loopml.project import Project

    board = Project(on_ray).leaderboard()
    single, dist = rep_local["metrics"]["rmse"], rep_ray["metrics"]["rmse"]
    # the Ray-trained model's test RMSE lies inside the single-machine run's bootstrap interval
    assert single["lower"] <= dist["value"] <= single["upper"], (single, dist)
    assert dist["value"] != single["value"]  # a different fit (data-parallel), not the same model twice
    assert any("lightgbm: fitted data-parallel on Ray Train, 2 worker(s)" in n for n in board["notes"]), board["notes"]

    # the test split (same seed, same rows in both projects) as a folder of three Parquet files
    table = pq.read_table(Project(local).workspace.artifacts.open_verified(test_digest))
    batch = tmp_path / "batch"
    batch.mkdir()
    third = table.num_rows // 3
    for i, (a, b) in enumerate([(0, third), (third, 2 * third), (2 * third, table.num_rows)]):
        pq.write_table(table.slice(a, b - a), batch / f"part-{i}.parquet")
    t3 = time.time()
    diffs = {}
    for name, proj, version in [("local", local, v_local), ("ray", on_ray, v_ray)]:
        in_process = _scores(proj, version, batch, tmp_path / f"{name}-inprocess.parquet", "inprocess", env)
        ray_data = _scores(proj, version, batch, tmp_path / f"{name}-ray.parquet", "ray", env)
        assert in_process.shape == ray_data.shape == (table.num_rows, 2)
        np.testing.assert_array_equal(ray_data[:, 0], in_process[:, 0])  # same rows, same order
        np.testing.assert_allclose(ray_data[:, 1], in_process[:, 1], rtol=0, atol=1e-6)
        diffs[name] = float(np.abs(ray_data[:, 1] - in_process[:, 1]).max())
    # the two models differ, so their scores do (the comparison above is not vacuous)
    assert not np.allclose(pq.read_table(tmp_path / "local-ray.parquet").column("score").to_numpy(),
                           pq.read_table(tmp_path / "ray-ray.parquet").column("score").to_numpy())

    # every listening socket of the cluster's processes is on the loopback interface
    listening = _listening(_ray_processes(ray_cluster["temp"]))
    assert listening  # the check sees the cluster's servers
    assert all(ip in ("127.0.0.1", "::1") for _, ip in listening), listening
    print(f"\nrmse single {single['value']:.3f} [{single['lower']:.3f}, {single['upper']:.3f}], "
          f"ray {dist['value']:.3f}; max score diff {diffs}; run local {t1 - t0:.0f}s, ray {t2 - t1:.0f}s, "
          f"4 batch scorings {time.time() - t3:.0f}s")
