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


TASKS = """
import json, sys, tempfile
from pathlib import Path
import numpy as np
from loopml.training.metrics import bootstrap_ci, metric_for
from loopml.training.models import make_model
from loopml.training.models.base import BaseModel, FitContext

rng = np.random.default_rng(0)
n, d = 3000, 6
X = rng.normal(size=(n, d)); Xt = rng.normal(size=(n, d))
lin, lint = X[:, 0] + 0.5 * X[:, 1], Xt[:, 0] + 0.5 * Xt[:, 1]
g, gt = np.repeat(np.arange(n // 10), 10), np.repeat(np.arange(n // 10), 10)
cases = {
    "multiclass": ("multiclass", np.digitize(lin + rng.normal(size=n), [-0.7, 0.7]),
                   np.digitize(lint + rng.normal(size=n), [-0.7, 0.7]), None, None, None),
    "focal": ("binary", (lin + rng.normal(size=n) > 1.0).astype(int), (lint + rng.normal(size=n) > 1.0).astype(int),
              None, None, 2.0),
    "ranking": ("ranking", np.clip(np.round(lin + rng.normal(size=n) + 1), 0, 3),
                np.clip(np.round(lint + rng.normal(size=n) + 1), 0, 3), g, gt, None),
}
out = {}
for name, (task, y, yt, grp, grpt, focal) in cases.items():
    metric = metric_for(task, None)
    res = {}
    for how, workers in (("local", 0), ("ray", 2)):
        m = make_model("lightgbm", task=task, n_estimators=200, early_stopping_rounds=20)
        ctx = FitContext(group=grp, eval_X=Xt[: n // 2], eval_y=yt[: n // 2],
                         eval_group=None if grpt is None else grpt[: n // 2], focal_gamma=focal,
                         extra={"ray_workers": workers})
        m.fit(X, y, context=ctx)
        s = m.score(Xt[n // 2:])
        with tempfile.TemporaryDirectory() as tmp:
            m.save(Path(tmp) / "m")
            again = BaseModel.load(Path(tmp) / "m").score(Xt[n // 2:])
        ci = bootstrap_ci(metric, yt[n // 2:], s, None if grpt is None else grpt[n // 2:], resamples=200, seed=0)
        res[how] = {"value": float(metric.fn(yt[n // 2:], s, None if grpt is None else grpt[n // 2:])),
                    "lower": float(ci[0]), "upper": float(ci[1]), "rounds": m.best_iteration_,
                    "reload_diff": float(np.abs(np.asarray(again) - np.asarray(s)).max())}
    out[name] = res
# the same data and seed on Ray twice: the same model (fixed shards, ranks read their own shard)
y, yt = cases["multiclass"][1], cases["multiclass"][2]
twice = [make_model("lightgbm", task="multiclass", n_estimators=30).fit(X, y, context=FitContext(
    extra={"ray_workers": 2})).score(Xt) for _ in range(2)]
out["repeat_diff"] = float(np.abs(twice[0] - twice[1]).max())
from loopml.errors import ModelError
from loopml.training.distributed import train_lightgbm_on_ray
try:
    train_lightgbm_on_ray({}, X=X, y=lin > 0, w=None, group=None, cats=[], init_score=None, valid=None, rounds=5,
                          early_stopping_rounds=None, workers=3)
except ModelError as exc:
    out["too_many_workers"] = exc.message
print(json.dumps(out))
"""


@pytest.mark.slow
def test_ray_train_fits_multiclass_focal_and_ranking_like_one_machine(ray_cluster: dict[str, Any]) -> None:
    """Every LightGBM objective the spec allows fits on Ray Train: within the single machine's interval."""
    res = subprocess.run([sys.executable, "-c", TASKS], env=ray_cluster["env"], capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out) == {"multiclass", "focal", "ranking", "too_many_workers", "repeat_diff"}
    assert out.pop("repeat_diff") == 0.0  # reproducible
    # more workers than the cluster's CPUs: a clear error at once, not a wait for ever
    assert "training.ray_workers is 3 but the Ray cluster has 2 free CPU(s) of 2" in out.pop("too_many_workers")
    for name, r in out.items():
        local, dist = r["local"], r["ray"]
        assert local["lower"] <= dist["value"] <= local["upper"], (name, r)
        assert dist["rounds"] < 200 or local["rounds"] == 200, (name, r)  # early stopping worked on every worker
        assert dist["reload_diff"] == 0.0 and local["reload_diff"] == 0.0  # saved as text, reloaded identically
    print("\n" + json.dumps(out))


def test_shards_cover_every_row_once_and_keep_queries_whole() -> None:
    import doctest

    from loopml.training import distributed
    from loopml.training.distributed import shard_rows

    assert doctest.testmod(distributed).failed == 0
    rng = np.random.default_rng(1)
    group = rng.integers(0, 50, size=1000)
    shards = shard_rows(1000, 3, group)
    assert sorted(np.concatenate(shards).tolist()) == list(range(1000))
    owners = [{int(q) for q in group[s]} for s in shards]
    assert all(not (owners[a] & owners[b]) for a in range(3) for b in range(a + 1, 3))  # a query on one worker
    for s in shards:  # rows of a query are contiguous on its worker (LightGBM's group sizes)
        q = group[s]
        assert (np.diff(q) >= 0).all()
    plain = shard_rows(7, 2, None)
    assert [x.tolist() for x in plain] == [[0, 2, 4, 6], [1, 3, 5]]
