"""Reports keep their history per run; the monitoring report and page with several windows draw lines;
the design document says whose metrics it shows."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.webui.conftest import UIProcess, copy_project

pytestmark = pytest.mark.slow


def test_a_runs_report_stays_readable_after_later_runs(demo_project):
    from loopml.lineage import list_executions, list_runs
    from loopml.workspace import Workspace

    ws = Workspace.open(demo_project)
    runs = list_runs(ws)[::-1]  # oldest first: the demo's initial training, then the retraining
    assert len(runs) == 2
    kept = {}
    for run in runs:
        folder = ws.reports / run["run_id"]
        evaluate = next(e for e in list_executions(ws, run["run_id"]) if e["stage"] == "evaluate")
        # the first run's report is still there, byte for byte what its evaluate stage stored as an artifact
        kept_json = (folder / "evaluation.json").read_bytes()
        assert kept_json == ws.artifacts.get_bytes(evaluate["outputs"]["report"])
        assert (folder / "evaluation.html").read_text().lower().startswith("<!doctype html")
        assert (folder / "leaderboard.html").exists()
        assert list(folder.glob("validation-*.html"))
        kept[run["run_id"]] = kept_json
    first, last = (r["run_id"] for r in runs)
    assert kept[first] != kept[last]  # the retraining did not overwrite the first run's report
    assert json.loads(kept[first])["model"] != json.loads(kept[last])["model"] or \
        json.loads(kept[first])["created_at"] != json.loads(kept[last])["created_at"]
    # the latest stays where it always was
    assert (ws.reports / "evaluation.json").read_bytes() == kept[last]


@pytest.fixture(scope="module")
def several_windows(demo_project, tmp_path_factory):
    """A copy of the demo project whose prediction log spans three daily windows: the replayed day's log
    segment written again through the log's segment store, moved back one and two days."""
    from loopml.monitoring.logs import predictions_dir
    from loopml.serving.logs import SegmentStore
    from loopml.workspace import Workspace

    proj = copy_project(demo_project, tmp_path_factory.mktemp("windows") / "p")
    folder = predictions_dir(Workspace.open(proj))
    table = pa.concat_tables([pa.parquet.read_table(p) for p in sorted(folder.glob("*.parquet"))])
    store = SegmentStore(folder)
    ts = table.column("ts")
    for days in (1, 2):
        shifted = pc.subtract(ts, pa.scalar(dt.timedelta(days=days), pa.duration("us")))
        part = table.set_column(table.schema.get_field_index("ts"), "ts", shifted.cast(ts.type))
        store.write(part, store.next_name(f"-back{days}d"))
    return proj


def test_the_monitoring_report_with_several_windows_draws_lines(several_windows):
    from loopml.monitoring.report import write_report
    from loopml.workspace import Workspace

    html_path, json_path = write_report(Workspace.open(several_windows))
    data = json.loads(json_path.read_text())
    assert len(data["windows"]) == 3
    page = html_path.read_text()
    # every feature's drift chart holds the three windows, each series drawn as a line through them
    specs = [json.loads(m) for m in re.findall(r'<script type="application/json" id="chart-feature-\d+">(.*?)</script>',
                                               page)]
    assert len(specs) == len(data["windows"][-1]["features"])
    for spec in specs:
        assert len(spec["x"]) == 3 and sum(v is not None for v in spec["series"][0]["values"]) == 3
    assert "http://" not in page and "https://cdn" not in page  # self-contained: uPlot is inlined


def test_the_exported_monitoring_report_draws_in_a_browser(several_windows, browser, screenshots):
    from loopml.monitoring.report import write_report
    from loopml.workspace import Workspace

    html_path, _ = write_report(Workspace.open(several_windows))
    browser.get_log("browser")
    browser.get(html_path.as_uri())
    charts = browser.execute_script("return window.loopmlCharts.map(c => [c.id, c.data[0].length]);")
    assert ["chart-drift", 3] in charts and any(c[0].startswith("chart-distribution") for c in charts)
    assert browser.execute_script("return document.querySelectorAll('.chart canvas').length") == len(charts)
    browser.save_screenshot(str(screenshots / "monitoring_report_file.png"))
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_the_monitoring_page_with_several_windows_draws_lines(several_windows, browser, screenshots):
    server = UIProcess(several_windows, token=None)
    try:
        browser.get(server.url + "/monitoring")
        charts = browser.execute_script(
            "return window.loopmlCharts.map(c => ({id: c.id, x: c.data[0].length,"
            " points: c.data.slice(1).map(s => s.filter(v => v !== null).length)}));")
        drift = next(c for c in charts if c["id"] == "chart-drift")
        assert drift["x"] == 3 and max(drift["points"]) == 3  # three windows joined by a line per feature
        browser.save_screenshot(str(screenshots / "monitoring_three_windows.png"))
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        server.stop()


def test_the_monitoring_page_answers_from_the_last_report_while_a_newer_one_is_computed(demo_project, tmp_path):
    import pyarrow.parquet as pq
    from starlette.testclient import TestClient

    from loopml.monitoring.logs import predictions_dir
    from loopml.serving.auth import AdminAuth
    from loopml.serving.logs import SegmentStore
    from loopml.webui import create_app
    from loopml.workspace import Workspace

    proj = copy_project(demo_project, tmp_path / "p")
    app = create_app(proj, auth=AdminAuth("UNSET_TOKEN_ENV", token=None))
    client = TestClient(app)
    for _ in range(3000):  # the report computed when the UI started
        if client.get("/monitoring/status").json()["ready"]:
            break
        time.sleep(0.1)
    first = client.get("/monitoring")
    assert first.status_code == 200 and "a newer one is being computed" not in first.text
    rows = re.search(r"([\d,]+) logged predictions", first.text).group(1)  # type: ignore[union-attr]
    # the log grows: the page answers at once from the report it has, and says a newer one is coming
    folder = predictions_dir(Workspace.open(proj))
    table = pq.read_table(sorted(folder.glob("*.parquet"))[0])
    SegmentStore(folder).write(table, "extra-000001.parquet")
    stale = client.get("/monitoring")
    assert "a newer one is being computed" in stale.text and f"{rows} logged predictions" in stale.text
    for _ in range(600):  # the background computation finishes; then the page shows the grown log
        page = client.get("/monitoring").text
        if "a newer one is being computed" not in page:
            break
        time.sleep(0.1)
    grown = int(rows.replace(",", "")) + table.num_rows
    assert f"{grown:,} logged predictions" in page


def test_the_first_monitoring_request_answers_at_once_and_a_restart_reads_the_report_from_disk(demo_project, tmp_path):
    from starlette.testclient import TestClient

    from loopml.serving.auth import AdminAuth
    from loopml.webui import create_app
    from loopml.webui.app import MonitoringCache
    from loopml.workspace import Workspace

    proj = copy_project(demo_project, tmp_path / "p")
    shutil.rmtree(proj / ".loopml" / "ui", ignore_errors=True)
    ws = Workspace.open(proj)
    window = ws.spec.monitoring.drift.window
    cache = MonitoringCache(ws, wait_s=0.0)
    assert cache.get(window) is None  # nothing computed yet: no waiting for it, a progress page instead
    assert cache.progress(window)["computing"] and not cache.progress(window)["ready"]
    for _ in range(3000):
        if cache.progress(window)["ready"]:
            break
        time.sleep(0.1)
    data, refreshing, _ = cache.get(window)  # type: ignore[misc]
    assert not refreshing and data["log_rows"] > 0
    saved = list((proj / ".loopml" / "ui").glob("monitoring-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["data"] == data
    # a restarted UI answers from the saved report, computing nothing while the log is unchanged
    again = MonitoringCache(Workspace.open(proj), wait_s=0.0)
    assert again.warm(window) is None
    assert again.get(window) == (data, False, json.loads(saved[0].read_text())["seconds"])
    assert not again.progress(window)["computing"]
    # the page and its progress endpoint, while the first report is computed
    shutil.rmtree(proj / ".loopml" / "ui")
    client = TestClient(create_app(proj, auth=AdminAuth("UNSET_TOKEN_ENV", token=None), warm=False))
    status = client.get("/monitoring/status").json()
    assert status == {"window": window, "ready": False, "computing": False, "elapsed_s": None, "last_seconds": None,
                      "error": None}
    page = client.get("/monitoring")
    assert page.status_code == 200
    if "monitoring-pending" in page.text:  # (on a quick machine the report may be ready within the wait)
        assert '<meta http-equiv="refresh"' in page.text and f"{data['log_rows']:,} logged predictions" in page.text


def test_the_design_document_says_whose_metrics_it_shows(demo_project):
    from loopml.reporting import build_design
    from loopml.workspace import Workspace

    glance = dict(build_design(Workspace.open(demo_project)).glance)
    # the demo's retraining registered v2 (not promoted): its test metric is labelled as v2's, not beside "v1" bare
    assert "test roc_auc of v2" in glance and "verdict of v2" in glance
    assert glance["in production"].startswith("v1 (not v2")


def test_the_runs_leaderboard_evaluation_and_validation_reports_open_in_a_browser(demo_project, browser, screenshots):
    """The static reports (and the design document) are the UI's templates and uPlot charts inlined: each file needs nothing but itself,
    draws its charts in Chromium with 0 console errors and keeps its content (intervals, paired comparisons,
    why-not lines, failing checks first)."""
    from loopml.lineage import list_runs
    from loopml.workspace import Workspace
    from tests.webui.conftest import assert_self_contained

    ws = Workspace.open(demo_project)
    folder = ws.reports / list_runs(ws)[0]["run_id"]  # the retraining run: v2 compared with v1 in production
    pages = {"leaderboard": folder / "leaderboard.html", "evaluation": folder / "evaluation.html",
             "validation": next(folder.glob("validation-*.html")), "design": ws.reports / "design.html"}
    report = json.loads((folder / "evaluation.json").read_text())
    for name, path in pages.items():
        html = path.read_text()
        assert_self_contained(html)
        browser.get_log("browser")
        browser.get(path.as_uri())
        charts = browser.execute_script("return window.loopmlCharts.map(c => [c.id, c.data[0].length]);")
        assert charts and all(n > 0 for _, n in charts), charts
        assert browser.execute_script("return document.querySelectorAll('.chart canvas').length") == len(charts)
        browser.save_screenshot(str(screenshots / f"report_{name}.png"))
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"], name
        text = browser.find_element("tag name", "body").text
        if name == "leaderboard":
            assert "why:" in text and "leaderboard-chart" in [c[0] for c in charts]
        elif name == "evaluation":
            assert "Candidate vs production" in text and "95% interval" in text
            assert {"evaluation-curve-1", "evaluation-slices"} <= {c[0] for c in charts}
            lo, hi = report["metrics"][report["primary_metric"]]["lower"], report["metrics"][report["primary_metric"]]["upper"]
            assert f"[{lo:.4f}, {hi:.4f}]" in text
        elif name == "validation":
            assert text.index("Failing checks") < text.index("Columns") < text.index("Passing checks")
        else:  # the design document's figures: candidates, slices, drift per feature
            assert len([c for c in charts if c[0].startswith("design-figure-")]) >= 3
