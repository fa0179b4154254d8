"""Operations: scraping the service's real Prometheus exposition over HTTP, and window summaries."""

from __future__ import annotations

import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopml.monitoring.ops import (
    OpsUnavailable,
    histogram_quantile,
    ops_series,
    parse_prometheus,
    scrape,
    snapshot,
    window_summary,
)
from loopml.serving.metrics import Metrics
from loopml.spec import parse_spec_text
from loopml.workspace import Workspace
from tests.services import free_port


@pytest.fixture
def metrics_server() -> Iterator[tuple[Metrics, int]]:
    """A real HTTP server answering /metrics with the serving package's own Metrics.render()."""
    metrics = Metrics()
    served = {"v1": "production", "v2": "candidate"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render(served).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield metrics, port
    finally:
        server.shutdown()
        server.server_close()


def _ws(project: Path, port: int) -> Workspace:
    spec = parse_spec_text(f"monitoring:\n  ops: {{metrics_url: 'http://127.0.0.1:{port}/metrics'}}\n", "loopml.yaml")
    return Workspace.open(project, spec)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = {"0.001": 10.0, "0.002": 60.0, "0.005": 100.0, "+Inf": 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.0018)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.002 + 0.003 * (99 - 60) / 40)
    assert histogram_quantile(0.99, {"0.001": 0.0, "+Inf": 5.0}) == pytest.approx(0.001)


def test_parser_reads_labels_with_escapes_and_skips_comments() -> None:
    text = '# HELP x y\nfoo_total{a="b\\"c",d="e"} 3\nbar 1.5 1700000000\nbad line\n'
    assert parse_prometheus(text) == [("foo_total", {"a": 'b"c', "d": "e"}, 3.0), ("bar", {}, 1.5)]


def test_scrape_and_window_summary_from_the_real_exposition(project: Path, metrics_server: tuple[Metrics, int]) -> None:
    metrics, port = metrics_server
    ws = _ws(project, port)
    for _ in range(90):
        metrics.observe("/v1/predict", "v1", "production", 200, 0.0008, 1)
    metrics.observe("/v1/predict", "v2", "production", 200, 0.004, 1)
    first = scrape(ws)
    assert first["requests"] == 91 and first["by_version"] == {"v1": 90.0, "v2": 1.0}
    assert first["loaded"] == {"v1": "production", "v2": "candidate"}
    # more traffic, some of it failing and slow
    for _ in range(40):
        metrics.observe("/v1/predict", "v1", "production", 200, 0.02, 1)
    for _ in range(10):
        metrics.observe("/v1/predict", "v1", "production", 500, 0.02, 0)
    metrics.observe("/metrics", "", "", 200, 5.0, 0)  # scrapes of /metrics are not prediction latency
    s = window_summary(ws, dt.timedelta(hours=1))
    assert s["requests"] == pytest.approx(51)  # only what happened since the first scrape (the /metrics hit included)
    assert s["errors"] == 10 and s["error_rate"] == pytest.approx(10 / 51)
    assert 10 < s["latency_p50_ms"] <= 25 and s["latency_p99_ms"] <= 25
    assert s["by_version"]["v1"]["requests"] == 50
    assert s["by_version"]["v1"]["errors"] == 10 and s["by_version"]["v1"]["error_rate"] == pytest.approx(0.2)
    assert s["by_version"]["v2"]["errors"] == 0
    assert s["memory_mb"] > 1 and "requests_per_s" in s and s["since"] != "process start"
    series = ops_series(ws)  # the report's time series: one interval between the two stored scrapes
    assert len(series) == 1 and series[0]["requests"] == 51 and series[0]["error_rate"] == pytest.approx(10 / 51)


def test_unreachable_service_is_a_clear_error(project: Path) -> None:
    ws = _ws(project, free_port())
    with pytest.raises(OpsUnavailable, match="cannot be read"):
        scrape(ws)


def test_snapshot_falls_back_to_errors_total_without_status_codes() -> None:
    snap = snapshot(parse_prometheus("app_requests_total 10\napp_errors_total 2\n"))
    assert snap["requests"] == 10 and snap["errors"] == 2
