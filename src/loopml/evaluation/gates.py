"""Promotion gates: a tiny language parsed from the spec, evaluated against an evaluation result.

Grammar (whitespace is free)::

    gate       := subject op bound [ "at" NUMBER "%" "confidence" ]
    subject    := NAME ("." NAME)* ["@" INT]      roc_auc, ndcg@10, fairness.demographic_parity_difference,
                                                  fairness.sex.equalized_odds_difference, latency_p99_ms
    op         := ">=" | ">" | "<=" | "<" | "=="
    bound      := NUMBER | reference [("+" | "-") NUMBER] | "requirements"
    reference  := "production" | "baseline"

Meaning:

- ``roc_auc >= 0.75``: the point estimate passes the threshold. With ``at 95% confidence`` the
  one-sided bootstrap bound must pass instead (the lower bound for ``>``/``>=``, the upper bound
  for ``<``/``<=``).
- ``roc_auc > production + 0.002``: decided on the paired bootstrap interval of the difference
  candidate − production (same resamples), never on the point difference: the lower end of the
  report's two-sided interval (``evaluation.confidence``, the interval shown next to the verdict)
  must exceed 0.002 (the upper end for ``<``/``<=``; ``==`` asks the interval to contain the
  bound). ``at 95% confidence`` uses the one-sided 95% bound instead. Without a production model
  there is nothing to beat and the gate passes, saying so.
- The baseline gate (:func:`baseline_gate`, on unless ``evaluation.baseline_gate: false``) is
  implicit: the primary metric must be significantly better than the task's baseline (prior,
  mean, most popular), the paired interval of the difference excluding zero in the right direction.
- ``fairness.demographic_parity_difference <= 0.1``: the worst sensitive column must pass
  (``fairness.COLUMN.METRIC`` names one column).
- ``latency_p99_ms <= requirements``: a measured value (from training) against the budget of the
  same name in ``spec.requirements.constraints``.

Examples
--------
>>> parse_gate("roc_auc > production + 0.002 at 95% confidence")
Gate(text='roc_auc > production + 0.002 at 95% confidence', subject='roc_auc', op='>', threshold=None, reference='production', margin=0.002, confidence=0.95)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopml.errors import SpecError
from loopml.evaluation.bootstrap import Interval, one_sided_bound
from loopml.evaluation.fairness import FAIRNESS_METRICS
from loopml.evaluation.result import EvaluationResult

OPS = (">=", "<=", "==", ">", "<")
REFERENCES = ("production", "baseline")
MEASURED = ("latency_p99_ms", "latency_p50_ms", "model_size_mb", "train_seconds")


class GateSyntaxError(SpecError):
    """A gate could not be parsed; the message shows the gate, the position and what was expected."""


@dataclass
class Gate:
    """A parsed gate."""

    text: str
    subject: str
    op: str
    threshold: float | None = None  # absolute bound
    reference: str | None = None  # "production", "baseline" or "requirements"
    margin: float = 0.0
    confidence: float | None = None

    @property
    def kind(self) -> str:
        """``absolute``, ``relative`` (vs a model) or ``requirement`` (vs the spec's budgets)."""
        if self.reference == "requirements":
            return "requirement"
        return "relative" if self.reference else "absolute"


@dataclass
class GateVerdict:
    """Whether one gate passed, with the evidence."""

    gate: str
    passed: bool
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"gate", "passed", "evidence"}``."""
        return {"gate": self.gate, "passed": self.passed, "evidence": _clean(self.evidence)}


@dataclass
class GateContext:
    """What gates may need beyond the evaluation result.

    Attributes
    ----------
    measured
        Values measured elsewhere (``latency_p99_ms`` from the training leaderboard...).
    requirements
        Budgets from ``spec.requirements.constraints`` by the same names.
    """

    measured: dict[str, float] = field(default_factory=dict)
    requirements: dict[str, float] = field(default_factory=dict)
    #: why a reference ("production", "baseline") was not compared, when it exists but was left out
    unavailable: dict[str, str] = field(default_factory=dict)
    #: relative measurement tolerance of a budget (``latency_p99_ms``: ``constraints.latency_tolerance``)
    tolerances: dict[str, float] = field(default_factory=dict)


_TOKEN = re.compile(
    r"\s*(?:(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<op>>=|<=|==|>|<)|(?P<name>[A-Za-z_][A-Za-z0-9_]*"
    r"(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:@\d+)?)|(?P<sym>[+%-]))"
)


def _fail(text: str, pos: int, expected: str, index: int | None) -> GateSyntaxError:
    where = f"evaluation.gates[{index}] " if index is not None else ""
    found = text[pos:].strip()
    got = f"found `{found.split()[0]}`" if found else "the gate ends"
    caret = " " * (pos + 4) + "^"
    return GateSyntaxError(
        f"{where}gate `{text}`: expected {expected} at position {pos + 1}, but {got}\n    {text}\n{caret}",
        hint="gates look like `roc_auc >= 0.75`, `roc_auc > production + 0.002 at 95% confidence`, "
        "`fairness.demographic_parity_difference <= 0.1`, `latency_p99_ms <= requirements`",
    )


def parse_gate(text: str, index: int | None = None) -> Gate:
    """Parse one gate; :class:`GateSyntaxError` names the gate, the position and what was expected."""
    toks: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            start = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
            raise _fail(text, start, "a metric name, a comparison, a number or a reference", index)
        kind = m.lastgroup or ""
        toks.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    end = len(text.rstrip())
    i = 0

    def peek() -> tuple[str, str, int]:
        return toks[i] if i < len(toks) else ("end", "", end)

    def take(kind: str, expected: str, value: str | None = None) -> tuple[str, str, int]:
        nonlocal i
        t = peek()
        if t[0] != kind or (value is not None and t[1].lower() != value):
            raise _fail(text, t[2], expected, index)
        i += 1
        return t

    subject = take("name", "a metric name (e.g. roc_auc)")[1]
    if subject in REFERENCES or subject == "requirements":
        raise _fail(text, 0, "a metric name on the left (the reference goes on the right)", index)
    op = take("op", "a comparison (>=, >, <=, <, ==)")[1]
    gate = Gate(text=text, subject=subject, op=op)
    t = peek()
    if t[0] == "num":
        gate.threshold = float(take("num", "a number")[1])
    elif t[0] == "name" and t[1] in (*REFERENCES, "requirements"):
        i += 1
        gate.reference = t[1]
        nt = peek()
        if gate.reference != "requirements" and ((nt[0] == "sym" and nt[1] in "+-") or nt[0] == "num"):
            if nt[0] == "sym":
                i += 1
                sign = -1.0 if nt[1] == "-" else 1.0
                gate.margin = sign * float(take("num", "a number after + or -")[1])
            else:  # the tokenizer glued the sign to the number: "production +0.002"
                if nt[1][0] not in "+-":
                    raise _fail(text, nt[2], "`+` or `-` before the margin", index)
                i += 1
                gate.margin = float(nt[1])
    else:
        raise _fail(text, t[2], "a number, `production`, `baseline` or `requirements`", index)
    t = peek()
    if t[0] == "name" and t[1].lower() == "at":
        i += 1
        num = take("num", "a confidence level such as 95")
        take("sym", "`%` after the confidence level", "%")
        take("name", "the word `confidence`", "confidence")
        level = float(num[1])
        if not 50 <= level < 100:
            raise _fail(text, num[2], "a confidence level in [50, 100)", index)
        gate.confidence = level / 100.0
        if gate.reference == "requirements":
            raise _fail(text, t[2], "no confidence level for a requirements gate (budgets are exact)", index)
    if peek()[0] != "end":
        raise _fail(text, peek()[2], "the end of the gate (or `at NN% confidence`)", index)
    return gate


def parse_gates(gates: list[str]) -> list[Gate]:
    """Parse every gate; one :class:`SpecError` lists all malformed ones."""
    parsed: list[Gate] = []
    problems: list[str] = []
    for i, g in enumerate(gates):
        try:
            parsed.append(parse_gate(g, i))
        except GateSyntaxError as exc:
            problems.append(exc.message)
    if problems:
        if len(problems) == 1:
            raise GateSyntaxError(problems[0])
        raise GateSyntaxError(f"{len(problems)} evaluation gates are malformed", problems)
    return parsed


def gate_metrics(gates: list[Gate]) -> list[str]:
    """Metric keys the gates refer to (so that they are computed even if not listed in the spec)."""
    return [g.subject for g in gates if not g.subject.startswith("fairness.") and g.subject not in MEASURED
            and g.kind != "requirement"]


def _compare(value: float, op: str, bound: float) -> bool:
    if not (np.isfinite(value) and np.isfinite(bound)):
        return False
    return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound,
            "==": bool(np.isclose(value, bound))}[op]


def _side(op: str) -> str:
    return "lower" if op in (">", ">=") else "upper"


def evaluate_gate(gate: Gate, result: EvaluationResult, context: GateContext | None = None) -> GateVerdict:
    """The verdict of one parsed gate against ``result``."""
    ctx = context or GateContext()
    ev: dict[str, Any] = {"kind": gate.kind, "subject": gate.subject, "op": gate.op}
    if gate.kind == "requirement":
        value = ctx.measured.get(gate.subject)
        budget = ctx.requirements.get(gate.subject)
        ev.update(measured=value, budget=budget)
        if budget is None:
            ev["reason"] = f"spec.requirements.constraints.{gate.subject} is not set"
            return GateVerdict(gate.text, False, ev)
        if value is None:
            ev["reason"] = f"no measured {gate.subject} (training did not report one)"
            return GateVerdict(gate.text, False, ev)
        tol = ctx.tolerances.get(gate.subject, 0.0)
        if tol and gate.op in ("<", "<="):
            ev["tolerance"] = tol
            budget = budget * (1.0 + tol)
        return GateVerdict(gate.text, _compare(value, gate.op, budget), ev)
    if gate.subject.startswith("fairness."):
        return _fairness_gate(gate, result, ev)
    if gate.subject in MEASURED:
        value = ctx.measured.get(gate.subject)
        ev.update(measured=value, threshold=gate.threshold)
        if value is None or gate.threshold is None:
            ev["reason"] = f"no measured {gate.subject}" if value is None else "compare with a number or requirements"
            return GateVerdict(gate.text, False, ev)
        return GateVerdict(gate.text, _compare(value, gate.op, gate.threshold), ev)
    from loopml.evaluation.metrics import canonical_key

    key = canonical_key(gate.subject, result.task)
    if key not in result.metrics:
        ev["reason"] = f"metric `{gate.subject}` was not evaluated (evaluated: {', '.join(result.metrics)})"
        return GateVerdict(gate.text, False, ev)
    m = result.metrics[key]
    if gate.kind == "absolute":
        threshold = gate.threshold if gate.threshold is not None else float("nan")
        ev.update(value=m.value, threshold=threshold, interval=m.interval.to_json())
        if gate.confidence is None:
            return GateVerdict(gate.text, _compare(m.value, gate.op, threshold), ev)
        bound = one_sided_bound(m.samples, gate.confidence, _side(gate.op))  # type: ignore[arg-type]
        ev.update(confidence=gate.confidence, bound=bound, bound_side=_side(gate.op))
        if not np.isfinite(bound):
            ev["reason"] = "no bootstrap resamples to bound the metric (evaluation.bootstrap_resamples is 0)"
            return GateVerdict(gate.text, False, ev)
        return GateVerdict(gate.text, _compare(bound, gate.op, threshold), ev)
    ref = gate.reference or ""
    comp = result.comparisons.get(ref, {}).get(key)
    ev.update(reference=ref, margin=gate.margin)
    if comp is None:
        ev["skipped"] = (ctx.unavailable.get(ref) or f"no {ref} model to compare against") + "; the gate holds vacuously"
        ev["value"] = m.value
        return GateVerdict(gate.text, True, ev)
    ev.update(candidate=comp.candidate_value, reference_value=comp.reference_value,
              difference=comp.difference.to_json(), p_value=comp.p_value)
    return _interval_verdict(gate, comp.difference, comp.samples, result.confidence, ev)


def _interval_verdict(gate: Gate, diff: Interval, samples: np.ndarray, confidence: float,
                      ev: dict[str, Any]) -> GateVerdict:
    """A relative gate decided on the paired interval of the difference (never the point estimate)."""
    margin = gate.margin
    if gate.confidence is None:
        ev.update(confidence=confidence, decided_on="interval")
        lo, hi = diff.lower, diff.upper
        if not (np.isfinite(lo) and np.isfinite(hi)):
            ev["reason"] = "no bootstrap resamples to bound the difference (evaluation.bootstrap_resamples is 0)"
            return GateVerdict(gate.text, False, ev)
        if gate.op == "==":
            passed = bool(lo <= margin <= hi)
            bound = lo if abs(lo - margin) < abs(hi - margin) else hi
        else:
            bound = lo if _side(gate.op) == "lower" else hi
            passed = _compare(bound, gate.op, margin)
        ev.update(bound=bound, bound_side=_side(gate.op))
    else:
        bound = one_sided_bound(samples, gate.confidence, _side(gate.op))  # type: ignore[arg-type]
        ev.update(confidence=gate.confidence, bound=bound, bound_side=_side(gate.op), decided_on="one-sided bound")
        if not np.isfinite(bound):
            ev["reason"] = "no bootstrap resamples to bound the difference (evaluation.bootstrap_resamples is 0)"
            return GateVerdict(gate.text, False, ev)
        passed = _compare(bound, gate.op, margin)
    if not passed and np.isfinite(diff.value) and _compare(diff.value, gate.op, margin):
        where = "interval" if gate.confidence is None else f"one-sided {round(100 * gate.confidence)}% bound"
        ev["why"] = (f"the point difference {diff.value:+.4g} passes but the {where} "
                     f"({_fmt_interval(diff, ev)}) does not: the difference is not significant")
    return GateVerdict(gate.text, passed, ev)


def _fmt_interval(diff: Interval, ev: dict[str, Any]) -> str:
    if ev.get("decided_on") == "interval":
        return f"[{diff.lower:+.4g}, {diff.upper:+.4g}]"
    return f"{ev.get('bound_side')} bound {ev.get('bound', float('nan')):+.4g}"


def baseline_gate(result: EvaluationResult, *, enabled: bool = True, baseline: str | None = None,
                  candidate_model: str | None = None, unavailable: str | None = None) -> GateVerdict:
    """The implicit baseline gate: the primary metric is significantly better than the task's baseline.

    The paired bootstrap interval (``result.confidence``) of candidate − baseline on the primary
    metric must exclude zero in the right direction. Fails (saying why) when the candidate is the
    baseline itself or no baseline could be scored; passes, saying it was off, when ``enabled``
    is false (``evaluation.baseline_gate: false``).

    Examples
    --------
    >>> import numpy as np
    >>> from loopml.evaluation.evaluate import evaluate_predictions
    >>> from loopml.spec.evaluation import Evaluation
    >>> rng = np.random.default_rng(0); y = rng.integers(0, 2, 500)
    >>> r = evaluate_predictions("binary", y, rng.random(500), baseline_score=np.full(500, y.mean()),
    ...                          spec_eval=Evaluation(bootstrap_resamples=100))
    >>> v = baseline_gate(r, baseline="prior"); v.passed, v.evidence["verdict"]
    (False, 'no better than the baseline (prior)')
    """
    pm = result.primary_metric
    name = baseline or "baseline"
    text = f"{pm} better than the baseline ({name})"
    ev: dict[str, Any] = {"kind": "baseline", "subject": pm, "reference": "baseline", "baseline": baseline,
                          "enabled": enabled, "confidence": result.confidence}
    if not enabled:
        ev["skipped"] = "the baseline gate is off (evaluation.baseline_gate: false)"
        return GateVerdict(text, True, ev)
    no_better = f"no better than the baseline ({name})"
    if candidate_model is not None and candidate_model == baseline:
        ev.update(verdict=no_better, reason=f"the candidate is the baseline model ({name}) itself",
                  candidate_is_baseline=True)
        return GateVerdict(text, False, ev)
    comp = result.comparisons.get("baseline", {}).get(pm)
    if comp is None:
        ev.update(verdict=no_better, reason=(unavailable or "no baseline model was scored")
                  + "; a model is approved only against its baseline (evaluation.baseline_gate: false turns this off)")
        return GateVerdict(text, False, ev)
    d = comp.difference
    ev.update(candidate=comp.candidate_value, reference_value=comp.reference_value, difference=d.to_json(),
              p_value=comp.p_value, higher_is_better=comp.higher_is_better, decided_on="interval",
              bound_side="lower" if comp.higher_is_better else "upper")
    if not (np.isfinite(d.lower) and np.isfinite(d.upper)):
        ev.update(verdict=no_better,
                  reason="no bootstrap resamples to bound the difference (evaluation.bootstrap_resamples is 0)")
        return GateVerdict(text, False, ev)
    passed = bool(d.lower > 0) if comp.higher_is_better else bool(d.upper < 0)
    ev["bound"] = d.lower if comp.higher_is_better else d.upper
    if passed:
        ev["verdict"] = f"better than the baseline ({name})"
    else:
        ev["verdict"] = no_better
        ev["why"] = (f"{pm} {d.value:+.4g} vs {name}, {round(100 * result.confidence)}% paired interval "
                     f"[{d.lower:+.4g}, {d.upper:+.4g}] "
                     + ("includes 0" if d.lower <= 0 <= d.upper else "is on the wrong side of 0"))
    return GateVerdict(text, passed, ev)


def _fairness_gate(gate: Gate, result: EvaluationResult, ev: dict[str, Any]) -> GateVerdict:
    parts = gate.subject.split(".")
    metric = parts[-1]
    if metric not in FAIRNESS_METRICS or len(parts) not in (2, 3):
        ev["reason"] = (f"`{gate.subject}`: expected fairness.METRIC or fairness.COLUMN.METRIC with METRIC one of "
                        f"{', '.join(FAIRNESS_METRICS)}")
        return GateVerdict(gate.text, False, ev)
    if gate.threshold is None:
        ev["reason"] = "fairness gates compare with a number"
        return GateVerdict(gate.text, False, ev)
    cols = [parts[1]] if len(parts) == 3 else list(result.fairness)
    if not cols or any(c not in result.fairness for c in cols):
        ev["reason"] = ("no fairness analysis for "
                        + (f"column `{parts[1]}`" if len(parts) == 3 else "any column")
                        + f" (evaluated: {', '.join(result.fairness) or 'none'}; declare "
                        "evaluation.fairness.sensitive_columns)")
        return GateVerdict(gate.text, False, ev)
    per: dict[str, Any] = {}
    passed = True
    for c in cols:
        val = result.fairness[c].metric(metric)
        if isinstance(val, Interval):
            point = bound = val.value
            if gate.confidence is not None:
                samples = result.fairness[c].samples.get(metric, np.empty(0))
                bound = one_sided_bound(samples, gate.confidence, _side(gate.op))  # type: ignore[arg-type]
            per[c] = {"value": point, "bound": bound, "interval": val.to_json()}
        else:
            point = bound = float(val)
            per[c] = {"value": point}
        ok = _compare(bound, gate.op, gate.threshold)
        per[c]["passed"] = ok
        passed = passed and ok
    ev.update(threshold=gate.threshold, columns=per, confidence=gate.confidence)
    return GateVerdict(gate.text, passed, ev)


def check_gates(
    gates: list[str] | list[Gate], result: EvaluationResult, context: GateContext | None = None
) -> list[GateVerdict]:
    """Verdicts of every gate (strings are parsed first; a malformed gate raises :class:`GateSyntaxError`).

    Examples
    --------
    >>> import numpy as np
    >>> from loopml.evaluation.evaluate import evaluate_predictions
    >>> from loopml.spec.evaluation import Evaluation
    >>> y = np.array([0, 1] * 50); s = np.where(y == 1, 0.7, 0.3)
    >>> r = evaluate_predictions("binary", y, s, spec_eval=Evaluation(bootstrap_resamples=20))
    >>> [v.passed for v in check_gates(["roc_auc >= 0.9", "log_loss < 0.1"], r)]
    [True, False]
    """
    parsed = [g if isinstance(g, Gate) else parse_gate(str(g), i) for i, g in enumerate(gates)]
    return [evaluate_gate(g, result, context) for g in parsed]


def approved(verdicts: list[GateVerdict]) -> bool:
    """A model is approved only when every gate passed."""
    return all(v.passed for v in verdicts)


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
