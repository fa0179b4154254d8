"""`loopml export --format onnx` on a real project: the file's scores are `loopml predict`'s, in ONNX Runtime for
Python and in ONNX Runtime Web inside a headless Chromium page."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from loopml.export.artifact import held_out_split, resolve_version
from loopml.export.onnx_export import feeds, run, session
from loopml.training.bundle import load_bundle
from loopml.workspace import Workspace
from tests.examples.test_examples import _small_copy
from tests.export.conftest import browser_scores


def test_export_writes_one_onnx_file_that_predicts_like_loopml_predict(cli, tmp_path, datasets, browser):
    proj = _small_copy("german_credit_fairness", tmp_path / "credit", datasets)
    run_ = cli("run", "-p", str(proj), "-q", timeout=900)
    assert run_.returncode == 0, run_.stdout[-2000:] + run_.stderr[-2000:]
    out = tmp_path / "credit.onnx"
    exp = cli("export", "--format", "onnx", "-p", str(proj), "--out", str(out))
    assert exp.returncode == 0, exp.stdout + exp.stderr
    assert "parity on" in exp.stdout and ": ok" in exp.stdout and out.is_file()
    as_json = json.loads(cli("export", "--format", "onnx", "-p", str(proj), "--out", str(out), "--json",
                             check=True).stdout)
    assert as_json["parity"]["max_abs_diff"] <= 1e-5 and as_json["output"] == "score"
    assert "checking_status" in as_json["inputs"] and as_json["inputs"]["duration"] == "double"

    ws = Workspace.open(proj)
    v = resolve_version(ws, None)
    table = held_out_split(ws, v)
    src = tmp_path / "rows.parquet"
    pq.write_table(table, src)
    pred_path = tmp_path / "pred.parquet"
    cli("predict", "-p", str(proj), "--version", v.version_id, "--batch", str(src), "-o", str(pred_path),
        "--no-online", "-q", check=True)
    predicted = pq.read_table(pred_path).column("score").to_numpy()
    bundle = load_bundle(ws, v.bundle_digest)
    onnx_scores = run(session(out.read_bytes()), feeds(bundle.transform, table))
    assert np.abs(onnx_scores - predicted).max() <= 1e-5
    # the same file in a web page: ONNX Runtime Web (WebAssembly, from the project's node_modules) in Chromium
    web = browser_scores(browser, out, feeds(bundle.transform, table), tmp_path)
    assert web.shape == predicted.shape and np.abs(web - predicted).max() <= 1e-5

    bad = cli("export", "--format", "pmml", "-p", str(proj), "--out", str(out))
    assert bad.returncode != 0 and "--format 'pmml' is not supported" in (bad.stdout + bad.stderr)
