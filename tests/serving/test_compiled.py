"""Compiled trees (`deployment.compile_trees`): the same scores as LightGBM, installed only once hot.

Real LightGBM models on real data (bike sharing hours, the KDD 2012 click log), compiled by
lleaves/LLVM, and a real `loopml serve` over HTTP.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.csv as pacsv
import pytest

from loopml.serving.compiled import TOLERANCE, check_rows, compile_checked
from loopml.serving.predictor import LightGBMFastPredictor

COLUMNS = ["season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit", "temp", "atemp", "hum",
           "windspeed"]


def bike(datasets: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hourly bike rentals: inputs (a few cells NaN, so missing values take their branches), count and weather."""
    t = pacsv.read_csv(datasets / "bike_sharing" / "hour.csv")
    x = np.column_stack([t.column(c).to_numpy().astype(np.float64) for c in COLUMNS])
    x[np.random.default_rng(0).random(x.shape) < 0.03] = np.nan
    return x, t.column("cnt").to_numpy().astype(np.float64), t.column("weathersit").to_numpy().astype(np.float64)


def booster(x: np.ndarray, y: np.ndarray, objective: str, rounds: int = 60, **extra: object) -> lgb.Booster:
    params = {"objective": objective, "num_leaves": 15, "verbose": -1, "seed": 0, **extra}
    if objective == "multiclass":
        params["num_class"] = int(y.max()) + 1
    # hour of day (3) and weather (7) as LightGBM categoricals: the compiled code must take their set splits
    return lgb.train(params, lgb.Dataset(x, y, categorical_feature=[3, 7]), rounds)


@pytest.fixture(scope="module")
def bike_data(datasets: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return bike(datasets)


@pytest.mark.parametrize("objective", ["regression", "binary", "multiclass"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_trees_give_lightgbms_scores_on_real_rows(bike_data, objective, dtype):
    x, cnt, weather = bike_data
    y = {"regression": cnt, "binary": (cnt > np.median(cnt)).astype(float), "multiclass": weather - 1}[objective]
    b = booster(x, y, objective)
    pred = LightGBMFastPredictor(b, dtype, batch_threads=1)
    rows = x[:3000].astype(dtype)
    before_one, before_probs = [], []
    for r in rows[:500]:
        pred.buffer[:] = r
        before_one.append(pred.predict_buffer())
        before_probs.append(pred.outputs())
    before_matrix = pred.predict_matrix(rows)

    forest, why = compile_checked(pred)
    assert forest is not None, why
    assert "check rows" in why
    pred.install_compiled(forest)
    assert pred.compiled is forest

    after_one, after_probs = [], []
    for r in rows[:500]:
        pred.buffer[:] = r
        after_one.append(pred.predict_buffer())
        after_probs.append(pred.outputs())
    after_matrix = pred.predict_matrix(rows)
    assert np.abs(np.array(after_one) - np.array(before_one)).max() <= TOLERANCE
    assert np.abs(np.array(after_probs) - np.array(before_probs)).max() <= TOLERANCE
    assert after_matrix.shape == before_matrix.shape
    assert np.abs(after_matrix - before_matrix).max() <= TOLERANCE
    if objective == "multiclass":
        assert after_matrix.shape == (3000, int(y.max()) + 1)
        assert np.allclose(after_matrix.sum(axis=1), 1.0)


def test_batch_jobs_keep_lightgbm_threads(bike_data):
    x, cnt, _ = bike_data
    pred = LightGBMFastPredictor(booster(x, cnt, "regression", rounds=10), np.float64, batch_threads=0)
    forest, why = compile_checked(pred)
    assert forest is not None, why
    pred.install_compiled(forest)
    # more than one thread: the matrix goes to LightGBM (bit-identical to Booster.predict)
    assert np.array_equal(pred.predict_matrix(x[:1000]), pred.booster.predict(x[:1000]))


def test_check_rows_cover_every_category_and_missing_values(bike_data):
    x, cnt, _ = bike_data
    text = booster(x, cnt, "regression", rounds=10).model_to_string()
    rows = check_rows(text)
    assert rows.shape[1] == len(COLUMNS)
    assert np.isnan(rows).any(axis=0).all()  # every feature gets NaN cells
    hours = set(rows[:, 3][~np.isnan(rows[:, 3])].astype(int))
    assert set(range(24)) <= hours and 24 in hours  # every hour the model saw, and one it never saw
    temp = rows[:, 8][~np.isnan(rows[:, 8])]
    assert temp.min() < np.nanmin(x[:, 8]) and temp.max() > np.nanmax(x[:, 8])  # beyond the training range


def test_a_model_that_does_not_compile_keeps_lightgbm(bike_data):
    x, cnt, _ = bike_data
    # linear trees: a linear model in every leaf, which lleaves does not compile
    b = booster(np.nan_to_num(x), cnt, "regression", rounds=5, linear_tree=True)
    pred = LightGBMFastPredictor(b, np.float64, batch_threads=1)
    forest, why = compile_checked(pred)
    assert forest is None
    assert why.startswith(("did not compile", "compiled scores differ"))
    assert pred.compiled is None


# -- a real server ------------------------------------------------------------------------------
def _wait_scorer(server, want: str, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    scorer = ""
    while time.monotonic() < deadline:
        status, body, _ = server.request("GET", "/v1/models")
        assert status == 200
        scorer = body["versions"][0]["scorer"]
        if scorer == want:
            break
        time.sleep(0.2)
    return scorer


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, bike_data) -> tuple[Path, np.ndarray]:
    x, cnt, _ = bike_data
    b = booster(np.nan_to_num(x), (cnt > np.median(cnt)).astype(float), "binary", rounds=80)
    path = tmp_path_factory.mktemp("compiled") / "model.txt"
    b.save_model(str(path))
    return path, np.nan_to_num(x[:400])


def _rows(x: np.ndarray) -> list[dict[str, float]]:
    return [{f"Column_{j}": float(v) for j, v in enumerate(r)} for r in x]


def test_a_hot_version_is_compiled_while_it_serves_and_answers_the_same(serve, model_file):
    path, x = model_file
    server = serve("--model-file", str(path), "--compile-after-rows", "300")
    rows = _rows(x)
    assert _wait_scorer(server, "lightgbm", timeout=5) == "lightgbm"  # nothing answered yet: not compiled
    first = []
    for r in rows:  # single rows: the fast path
        status, body, _ = server.request("POST", "/v1/predict", r)
        assert status == 200, body
        first.append(body["score"])
    status, many_before, _ = server.request("POST", "/v1/predict", rows)
    assert status == 200
    assert _wait_scorer(server, "compiled") == "compiled"
    again = [server.request("POST", "/v1/predict", r)[1]["score"] for r in rows]
    status, many_after, _ = server.request("POST", "/v1/predict", rows)
    assert status == 200
    assert np.abs(np.array(again) - np.array(first)).max() <= TOLERANCE
    assert np.abs(np.array(many_after["scores"]) - np.array(many_before["scores"])).max() <= TOLERANCE
    assert np.abs(np.array(many_after["scores"]) - np.array(first)).max() <= TOLERANCE
    err = server.stop()
    assert "now scores with compiled trees (max |compiled − LightGBM|" in err


def test_compile_trees_off_keeps_lightgbm(serve, model_file):
    path, x = model_file
    server = serve("--model-file", str(path), "--compile-after-rows", "0", "--compile-trees", "off")
    for r in _rows(x[:50]):
        assert server.request("POST", "/v1/predict", r)[0] == 200
    time.sleep(2.5)  # the compiler would have run twice by now (every second) had it been on
    assert _wait_scorer(server, "compiled", timeout=0.5) == "lightgbm"
    assert "compiled trees" not in server.stop()


def test_compile_trees_must_be_auto_or_off(cli, tmp_path, model_file):
    path, _ = model_file
    r = cli("serve", "--model-file", str(path), "--compile-trees", "always", "--port", "0")
    assert r.returncode != 0
    assert "--compile-trees must be `auto` or `off`, not 'always'" in r.stdout + r.stderr


def _compiler_children(pid: int) -> list[int]:
    """Pids of the compiler processes whose parent is ``pid``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"loopml.serving.compiled" in cmd:
            found.append(int(d.name))
    return found


def test_trees_compile_in_a_child_process_that_a_stopping_server_does_not_wait_for(serve, bike_data, tmp_path):
    x, cnt, _ = bike_data
    b = booster(np.nan_to_num(x), (cnt > np.median(cnt)).astype(float), "binary", rounds=1500)  # long to compile
    path = tmp_path / "big.txt"
    b.save_model(str(path))
    server = serve("--model-file", str(path), "--compile-after-rows", "50")
    for r in _rows(np.nan_to_num(x[:60])):
        assert server.request("POST", "/v1/predict", r)[0] == 200
    deadline = time.monotonic() + 30
    children: list[int] = []
    while not children and time.monotonic() < deadline:
        children = _compiler_children(server.proc.pid)
        time.sleep(0.05)
    assert children, "no compiler child process appeared"
    assert _wait_scorer(server, "compiled", timeout=0.2) == "lightgbm"  # still compiling: LightGBM answers
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 15  # a bound: it did not wait for the compile to end
    assert server.proc.returncode == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


# -- the stack a call takes ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def click_ids(datasets: Path) -> lgb.Booster:
    """LightGBM on the KDD 2012 click log with ad and advertiser ids as categoricals: thousands of levels, so
    every categorical split carries a bitset of hundreds of words (what overflowed the stack at 10M rows)."""
    t = pacsv.read_csv(datasets / "kdd2012_click_small" / "Click_prediction_small.csv")
    cols = []
    for name in ("ad_id", "advertiser_id"):
        _, codes = np.unique(t.column(name).to_numpy(), return_inverse=True)
        cols.append(codes.astype(np.float64))
    cols += [t.column(c).to_numpy().astype(np.float64) for c in ("depth", "position")]
    x, y = np.column_stack(cols), t.column("click").to_numpy().astype(np.float64)
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 0, "min_data_per_group": 5,
              "cat_smooth": 1.0, "max_cat_threshold": 256}
    return lgb.train(params, lgb.Dataset(x, y, categorical_feature=[0, 1]), 30)


def test_the_stack_estimate_bounds_the_frames_lleaves_compiles(click_ids):
    from loopml.serving.compiled import compile_object, frame_sizes, stack_estimate

    text = click_ids.model_to_string()
    inlined, per_tree = compile_object(text, inline=True), compile_object(text, inline=False)
    if not frame_sizes(inlined):
        pytest.skip("frame sizes are read from x86-64 code only")
    assert stack_estimate(text, inline=True) >= frame_sizes(inlined)[0] > 100_000  # every tree's bitsets at once
    assert stack_estimate(text, inline=False) >= frame_sizes(per_tree)[0]
    assert frame_sizes(per_tree)[0] < frame_sizes(inlined)[0] / 5


def test_trees_too_big_to_inline_compile_one_function_per_tree_and_agree(click_ids, monkeypatch):
    from loopml.serving import compiled

    text = click_ids.model_to_string()
    low, high = compiled.stack_estimate(text, inline=False), compiled.stack_estimate(text, inline=True)
    assert low < high
    monkeypatch.setattr(compiled, "STACK_BUDGET", (low + high) // 2)
    pred = LightGBMFastPredictor(click_ids, np.float64, batch_threads=1)
    forest, why = compile_checked(pred)
    assert forest is not None and forest.inline is False, why
    rows = check_rows(text)
    np.testing.assert_allclose(forest.predict(rows), click_ids.predict(rows, num_threads=1), rtol=0, atol=TOLERANCE)

    monkeypatch.setattr(compiled, "STACK_BUDGET", low - 1)  # not even one tree fits: LightGBM keeps the version
    pred = LightGBMFastPredictor(click_ids, np.float64, batch_threads=1)
    forest, why = compile_checked(pred)
    assert forest is None and pred.compiled is None
    assert "bytes of stack per call" in why and f"budget {low - 1:,}" in why
