"""The gate of a canary step: breached, passed, or not decided yet, with the evidence.

Inputs are the challenger's SLOs from the server's own counters (:func:`loopml.experiments.analysis.slo_check`)
and the log's analysis of the current step (:func:`loopml.experiments.analysis.analyse`: score guardrail,
sample ratio, online metric from delayed labels). Thresholds are ``deployment.routing.gate``
(:class:`loopml.spec.deployment.CanaryGate`).

- **breached** (roll back now): an SLO breach (error rate significantly above production's by at least
  ``max_error_rate_increase``; p99 above ``max_p99_ratio`` x production's), the score guardrail (constant
  scores, or a large KS distance), or the online metric significantly worse (always-valid mSPRT);
- **passed** (the step may advance): no breach, at least ``min_requests`` canary answers, the upper bound of
  its error rate within ``max_error_rate_increase`` of production's, the score guardrail measured and fine,
  and no sample-ratio mismatch;
- otherwise **undecided**: the step is held longer (up to ``max_hold_seconds``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loopml.experiments.analysis import ExperimentAnalysis


@dataclass
class GateVerdict:
    """The gate's answer for one check."""

    breached: bool
    passed: bool
    reasons: list[str] = field(default_factory=list)  #: why it breached (with the numbers)
    waiting: list[str] = field(default_factory=list)  #: why it has not passed yet
    evidence: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the verdict and its reasons."""
        if self.breached:
            return "BREACHED: " + "; ".join(self.reasons)
        return "passed" if self.passed else "undecided: " + "; ".join(self.waiting)


def canary_gate(slo: dict[str, Any], analysis: ExperimentAnalysis | None, challenger: str, incumbent: str,
                gate: Any) -> GateVerdict:
    """Judge the canary ``challenger`` against ``incumbent`` under the thresholds ``gate`` (a ``CanaryGate``).

    >>> from loopml.spec.deployment import CanaryGate
    >>> slo = {"versions": {"v2": {"requests": 500, "errors": 0, "error_rate": 0.0, "error_rate_upper": 0.006},
    ...                     "v1": {"requests": 900, "errors": 0, "error_rate": 0.0}}, "reasons": []}
    >>> v = canary_gate(slo, None, "v2", "v1", CanaryGate())
    >>> v.breached, v.passed, v.waiting
    (False, False, ['the score guardrail needs 20 logged predictions per arm in this step'])
    """
    reasons = list(slo.get("reasons", []))
    waiting: list[str] = []
    ch = slo["versions"][challenger]
    inc = slo["versions"][incumbent]
    if analysis is not None:
        g = analysis.guardrail
        if g and g["breached"]:
            reasons.append(g["reason"])
        o = analysis.online
        if o and o["significant"] and o["lift"] < 0:
            reasons.append(f"{challenger} online metric significantly worse: {o['mean_treatment']:.4f} vs "
                           f"{o['mean_control']:.4f} (lift {o['lift']:+.4f} [{o['ci_low']:+.4f}, {o['ci_high']:+.4f}], "
                           f"always-valid p {o['p_value']:.2g}, n {o['n_treatment']} vs {o['n_control']})")
    if ch["requests"] < gate.min_requests:
        waiting.append(f"{challenger} answered {ch['requests']} of the {gate.min_requests} requests a step needs")
    else:
        limit = (inc["error_rate"] or 0.0) + gate.max_error_rate_increase
        if ch["error_rate_upper"] is not None and ch["error_rate_upper"] > limit:
            waiting.append(f"{challenger} error rate {ch['error_rate']:.2%}: its upper bound "
                           f"{ch['error_rate_upper']:.2%} is above production's {inc['error_rate'] or 0:.2%} + "
                           f"{gate.max_error_rate_increase:.2%}")
    if analysis is None or analysis.guardrail is None:
        waiting.append("the score guardrail needs 20 logged predictions per arm in this step")
    if analysis is not None and analysis.srm and analysis.srm["mismatch"]:
        waiting.append(f"sample-ratio mismatch (p {analysis.srm['p_value']:.2g})")
    evidence = {"slo": slo, "analysis": analysis.as_dict() if analysis is not None else None}
    return GateVerdict(bool(reasons), not reasons and not waiting, reasons, waiting, evidence)


__all__ = ["GateVerdict", "canary_gate"]
