"""Prometheus metrics of the service, kept in plain integers (no client library on the hot path).

Exposed at ``/metrics`` in the text exposition format: requests and rows by model version, route
and status code, a latency histogram by model version, errors by kind, and process facts.
"""

from __future__ import annotations

import os
import resource
import time
from bisect import bisect_left

#: latency bucket upper bounds in seconds (Prometheus ``le`` labels)
BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters and histograms of one server process.

    Examples
    --------
    >>> m = Metrics()
    >>> m.observe("/v1/predict", "v1", "production", 200, 0.0004, 1)
    >>> 'loopml_requests_total{endpoint="/v1/predict",model_version="v1",route="production",code="200"} 1' in m.render()
    True
    """

    def __init__(self) -> None:
        self.started = time.time()
        self.requests: dict[tuple[str, str, str, int], int] = {}
        self.rows: dict[tuple[str, str], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.log_rows_written = 0
        self.log_rows_dropped = 0
        self.model_swaps = 0
        #: (experiment, canary version) -> (step index, traffic share), set by the canary guard
        self.canary: dict[tuple[str | None, str], tuple[int, float]] = {}
        self.canary_rollbacks = 0

    def observe(self, endpoint: str, version: str, route: str, code: int, seconds: float, rows: int) -> None:
        """Record one request (hot path: a few dict updates)."""
        key = (endpoint, version, route, code)
        self.requests[key] = self.requests.get(key, 0) + 1
        hkey = (endpoint, version)
        h = self.latency.get(hkey)
        if h is None:
            h = self.latency[hkey] = _Histogram()
        h.counts[bisect_left(BUCKETS, seconds)] += 1
        h.sum += seconds
        if rows:
            rkey = (version, route)
            self.rows[rkey] = self.rows.get(rkey, 0) + rows

    def error(self, endpoint: str, kind: str) -> None:
        """Count an error response by kind (validation, not_found, internal, ...)."""
        key = (endpoint, kind)
        self.errors[key] = self.errors.get(key, 0) + 1

    def render(self, served: dict[str, str] | None = None) -> str:
        """The text exposition format. ``served``: loaded version → registry state."""
        out: list[str] = []
        out.append("# HELP loopml_requests_total HTTP requests by endpoint, model version, route and status code.")
        out.append("# TYPE loopml_requests_total counter")
        for (ep, v, r, c), n in sorted(self.requests.items()):
            out.append(f'loopml_requests_total{{endpoint="{_esc(ep)}",model_version="{_esc(v)}",route="{_esc(r)}",code="{c}"}} {n}')
        out.append("# HELP loopml_predictions_total Rows predicted by model version and route.")
        out.append("# TYPE loopml_predictions_total counter")
        for (v, r), n in sorted(self.rows.items()):
            out.append(f'loopml_predictions_total{{model_version="{_esc(v)}",route="{_esc(r)}"}} {n}')
        out.append("# HELP loopml_errors_total Error responses by endpoint and kind.")
        out.append("# TYPE loopml_errors_total counter")
        for (ep, kind), n in sorted(self.errors.items()):
            out.append(f'loopml_errors_total{{endpoint="{_esc(ep)}",kind="{_esc(kind)}"}} {n}')
        out.append("# HELP loopml_request_duration_seconds Time from a complete request to its response being written.")
        out.append("# TYPE loopml_request_duration_seconds histogram")
        for (ep, v), h in sorted(self.latency.items()):
            labels = f'endpoint="{_esc(ep)}",model_version="{_esc(v)}"'
            acc = 0
            for le, c in zip(BUCKETS, h.counts):
                acc += c
                out.append(f'loopml_request_duration_seconds_bucket{{{labels},le="{le}"}} {acc}')
            acc += h.counts[-1]
            out.append(f'loopml_request_duration_seconds_bucket{{{labels},le="+Inf"}} {acc}')
            out.append(f"loopml_request_duration_seconds_sum{{{labels}}} {h.sum:.9f}")
            out.append(f"loopml_request_duration_seconds_count{{{labels}}} {acc}")
        out.append("# HELP loopml_model_loaded Model versions loaded in this process (value 1), labelled with their state.")
        out.append("# TYPE loopml_model_loaded gauge")
        for v, s in sorted((served or {}).items()):
            out.append(f'loopml_model_loaded{{model_version="{_esc(v)}",state="{_esc(s)}"}} 1')
        out.append("# HELP loopml_model_swaps_total Atomic swaps of the served model set.")
        out.append("# TYPE loopml_model_swaps_total counter")
        out.append(f"loopml_model_swaps_total {self.model_swaps}")
        out.append("# HELP loopml_canary_share Traffic share of the served canary (its current step, from 0).")
        out.append("# TYPE loopml_canary_share gauge")
        for (exp, v), (step, share) in sorted(self.canary.items(), key=str):
            out.append(f'loopml_canary_share{{experiment="{_esc(exp or "")}",model_version="{_esc(v)}",'
                       f'step="{step}"}} {share}')
        out.append("# HELP loopml_canary_rollbacks_total Canaries this server rolled back by itself.")
        out.append("# TYPE loopml_canary_rollbacks_total counter")
        out.append(f"loopml_canary_rollbacks_total {self.canary_rollbacks}")
        out.append("# HELP loopml_prediction_log_rows_total Prediction log rows written durably / dropped.")
        out.append("# TYPE loopml_prediction_log_rows_total counter")
        out.append(f'loopml_prediction_log_rows_total{{outcome="written"}} {self.log_rows_written}')
        out.append(f'loopml_prediction_log_rows_total{{outcome="dropped"}} {self.log_rows_dropped}')
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out.append("# HELP process_cpu_seconds_total User and system CPU time of the server process.")
        out.append("# TYPE process_cpu_seconds_total counter")
        out.append(f"process_cpu_seconds_total {ru.ru_utime + ru.ru_stime:.6f}")
        out.append("# HELP process_start_time_seconds Start time of the process since the epoch.")
        out.append("# TYPE process_start_time_seconds gauge")
        out.append(f"process_start_time_seconds {self.started:.3f}")
        out.append("# HELP process_resident_memory_bytes Peak resident memory.")
        out.append("# TYPE process_resident_memory_bytes gauge")
        out.append(f"process_resident_memory_bytes {ru.ru_maxrss * 1024}")
        out.append(f'loopml_build_info{{pid="{os.getpid()}"}} 1')
        return "\n".join(out) + "\n"
