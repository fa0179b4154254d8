"""The canary gate: breach, pass or hold, from the server's counters (Prometheus text) and a log analysis."""

from __future__ import annotations

from loopml.experiments.analysis import ExperimentAnalysis, slo_check
from loopml.experiments.gate import canary_gate
from loopml.serving.metrics import Metrics
from loopml.spec.deployment import CanaryGate

OK_GUARD = {"check": "KS", "breached": False, "reason": "", "ks_d": 0.05, "p_value": 0.5, "constant_scores": False}


def _slo(canary: int, canary_errors: int, prod: int = 1000, slow: float = 0.0005, **kw: float) -> dict:  # type: ignore[type-arg]
    m = Metrics()
    for _ in range(prod):
        m.observe("/v1/predict", "v1", "production", 200, 0.0005, 1)
    for i in range(canary):
        m.observe("/v1/predict", "v2", "canary", 500 if i < canary_errors else 200, slow, 1)
    return slo_check(m.render(), "v1", "v2", min_error_increase=0.01, **kw)


def test_a_step_passes_only_on_enough_evidence() -> None:
    gate = CanaryGate(min_requests=100, max_error_rate_increase=0.01)
    analysis = ExperimentAnalysis("canary-v2", [], guardrail=OK_GUARD)
    few = canary_gate(_slo(150, 0), analysis, "v2", "v1", gate)  # upper bound of 0/150 at 95%: 2.0% > 1%
    assert not few.breached and not few.passed and "upper bound" in few.waiting[0]
    enough = canary_gate(_slo(400, 0), analysis, "v2", "v1", gate)  # 0/400: 0.75% <= 1%
    assert enough.passed and not enough.waiting
    unmeasured = canary_gate(_slo(400, 0), ExperimentAnalysis("canary-v2", []), "v2", "v1", gate)
    assert not unmeasured.passed and "score guardrail" in unmeasured.waiting[0]


def test_errors_latency_guardrail_and_online_metric_breach() -> None:
    gate = CanaryGate()
    analysis = ExperimentAnalysis("canary-v2", [], guardrail=OK_GUARD)
    errors = canary_gate(_slo(200, 10), analysis, "v2", "v1", gate)
    assert errors.breached and "error rate 5.00% (10/200)" in errors.reasons[0] and "Fisher p" in errors.reasons[0]
    slow = canary_gate(_slo(200, 0, slow=0.02, max_p99_ratio=2.0, p99_floor_ms=5.0), analysis, "v2", "v1", gate)
    assert slow.breached and "p99 latency" in slow.reasons[0]
    tolerated = canary_gate(_slo(200, 0, slow=0.0009, max_p99_ratio=2.0, p99_floor_ms=5.0), analysis, "v2", "v1",
                            gate)
    assert not tolerated.breached  # slower, but within the floor
    constant = ExperimentAnalysis("canary-v2", [], guardrail={**OK_GUARD, "breached": True,
                                                                "reason": "v2 (canary) gives constant scores"})
    assert canary_gate(_slo(400, 0), constant, "v2", "v1", gate).reasons == ["v2 (canary) gives constant scores"]
    worse = ExperimentAnalysis("canary-v2", [], guardrail=OK_GUARD, online={
        "significant": True, "lift": -0.02, "mean_treatment": 0.03, "mean_control": 0.05, "ci_low": -0.03,
        "ci_high": -0.01, "p_value": 0.001, "n_treatment": 5000, "n_control": 5000})
    v = canary_gate(_slo(400, 0), worse, "v2", "v1", gate)
    assert v.breached and "online metric significantly worse" in v.summary()
