"""The Serving page over a running `loopml serve` with a canary experiment: per version and arm request counts
from the log, live rate/latency/errors per version from /metrics, the experiment with its status and analysis;
in headless Chromium with 0 console errors."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.webui.conftest import UIProcess, copy_project

pytestmark = pytest.mark.slow


def _serve(project, env):  # type: ignore[no-untyped-def]
    ready = project / ".loopml" / f"serve-{time.monotonic_ns()}.ready"
    proc = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "serve", "-p", str(project), "--port", "0",
                             "--ready-file", str(ready)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not ready.exists() or not ready.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"loopml serve did not start: {proc.communicate()}")
        time.sleep(0.1)
    host, port = ready.read_text().split()
    return proc, f"http://{host}:{port}"


def _post(url: str, body: dict) -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_the_serving_page_shows_versions_arms_and_the_canary_experiment(demo_project, tmp_path, browser, screenshots):
    from loopml.experiments import records
    from loopml.monitoring import logs
    from loopml.registry import Registry
    from loopml.training.bundle import load_bundle, save_bundle
    from loopml.workspace import Workspace
    from tests.conftest import run_cli

    proj = copy_project(demo_project, tmp_path / "p")
    env = {k: v for k, v in os.environ.items() if k != "LOOPML_ADMIN_TOKEN"}
    env["LOOPML_HASH_KEY"] = (proj / ".hash_key").read_text().strip()
    # the challenger: a copy of the production bundle registered as a new candidate (whatever the demo left)
    ws = Workspace.open(proj)
    reg = Registry(ws)
    prod = reg.production()
    assert prod is not None
    for v in reg.list():  # one challenger at a time: whatever else the demo left serving steps aside
        if v.state in ("shadow", "canary"):
            reg.transition(v.version_id, "archived", actor="ui-test", reason="the UI test's own canary")
    bundle = load_bundle(ws, prod.bundle_digest)
    bundle.manifest = {**bundle.manifest, "note": "a copy, the challenger of the UI test"}
    challenger = reg.register(save_bundle(ws, bundle, producer=None), verdict=prod.verdict,
                              lineage=dict(prod.lineage)).version_id
    spec = (proj / "loopml.yaml").read_text()
    # the server's own canary gate (loopml.serving.canary_guard) judges latency too: on a busy machine a copy of
    # production can look 2x slower over 60 requests; this test is about the page, so latency never breaches here
    spec, n = re.subn(r"(?m)^  routing: .*$",
                      "  routing: {type: canary, fraction: 0.5, experiment: ui-canary, "
                      "gate: {max_p99_ratio: 1000, p99_floor_ms: 60000}}", spec)
    assert n == 1
    (proj / "loopml.yaml").write_text(spec)
    started = run_cli("experiment", "start", challenger, "-r", "canary of a copy", "-p", str(proj), env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    table = logs.read_predictions(ws)
    now = dt.datetime.now(dt.UTC).isoformat()  # the request's event time (the log keeps its own `ts`)
    rows = [{**r, "ts": now} for r in table.select(logs.input_columns(table)).slice(0, 120).to_pylist()]
    before = table.num_rows
    server, url = _serve(proj, env)
    ui = None
    try:
        answered = [_post(url + "/v1/predict", row)["model_version"] for row in rows]
        assert set(answered) == {prod.version_id, challenger}  # production and the canary both answer
        ui = UIProcess(proj, token=None)
        deadline = time.monotonic() + 60  # the service turns its journal into log segments every flush
        while logs.log_span(ws)[2] < before + len(rows) and time.monotonic() < deadline:
            time.sleep(0.3)
        browser.get_log("browser")
        browser.get(ui.url + "/serving")
        browser.save_screenshot(str(screenshots / "serving.png"))
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        live = {r.find_elements("tag name", "td")[0].text: [td.text for td in r.find_elements("tag name", "td")]
                for r in browser.find_elements("css selector", "#live-versions tr")[1:-1]}
        assert set(live) == {prod.version_id, challenger}, live  # per version, from /metrics
        assert sum(int(v[2].replace(",", "")) for v in live.values()) == len(rows)
        assert all(v[6] != "–" for v in live.values())  # a p99 latency per version
        arms = [[td.text for td in r.find_elements("tag name", "td")]
                for r in browser.find_elements("css selector", "#traffic-arms tr")[1:]]
        canary = [a for a in arms if a[1] == "canary" and a[2] == "ui-canary"]
        assert len(canary) == 1 and canary[0][0] == challenger
        assert int(canary[0][3].replace(",", "")) == answered.count(challenger)  # the log's count per arm
        exp = browser.find_element("id", "experiment-ui-canary").text
        status = records.get(ws, "ui-canary")["status"]  # type: ignore[index]
        assert status == "running", exp  # an identical model: the server's canary gate has no reason to stop it
        assert f"ui-canary {status}" in exp and f"canary of {challenger}" in exp and "sample ratio" in exp
        assert "production" in exp and "SLO of the challenger" in exp  # from /metrics while the service runs
        charts = browser.execute_script("return window.loopmlCharts.map(c => c.id);")
        assert "chart-traffic" in charts
        # kept on disk per log fingerprint: a restarted UI shows it without reading the log again
        saved = json.loads((proj / ".loopml" / "ui" / "traffic.json").read_text())
        assert saved["data"]["rows"] == logs.log_span(ws)[2] == before + len(rows)
    finally:
        if ui is not None:
            ui.stop()
        server.terminate()
        server.wait(30)
