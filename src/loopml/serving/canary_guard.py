"""The canary guard: `loopml serve` gates its own canary steps and rolls a breaching canary back.

While the routing policy is ``canary`` with a version in state canary, a task on the event loop wakes
every ``deployment.routing.gate.check_seconds`` (never on the request path) and judges the canary
(:func:`loopml.experiments.gate.canary_gate`) from

- the server's own per-version counters (error rate, p99 latency vs production: :func:`slo_check`
  over :meth:`Metrics.render`, no HTTP round trip), and
- the prediction and feedback logs of the current step, read in a worker thread (score guardrail vs
  production, sample ratio, the online metric from delayed labels: :func:`analyse`).

A breach rolls back in two phases: first the served set is swapped to one without the canary (every
request goes to production from the next one on), then the registry records the transition
canary → archived with actor ``loopml serve (canary guard)`` and the reason with its numbers; the
experiment record (if `loopml experiment start` made one) is closed as rolled back with the evidence.
If the registry cannot be written the next poll serves the canary again and the next check retries.

A step advances when it was held ``hold_seconds`` and the gate passed; an undecided gate holds the step
longer, up to ``max_hold_seconds`` (default 3 x hold_seconds), after which the canary is rolled back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from typing import Any

from loopml.errors import LoopMLError, NotFound
from loopml.experiments.gate import GateVerdict, canary_gate
from loopml.serving.routing import CanaryPolicy, make_policy
from loopml.serving.sources import describe_error

ACTOR = "loopml serve (canary guard)"
#: what the analysis reads of the log (not the inputs: the guard reads the step's rows every check)
COLUMNS = ["request_id", "ts", "model_version", "route", "experiment", "propensity", "score", "prediction"]


def _say(msg: str) -> None:
    sys.stderr.write(f"loopml serve: canary guard: {msg}\n")


class CanaryGuard:
    """Checks the canary of ``app`` (a :class:`loopml.serving.app.ServingApp`) on a timer; see the module."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last: GateVerdict | None = None

    def _policy(self) -> CanaryPolicy | None:
        p = self.app.state.policy
        if isinstance(p, CanaryPolicy) and p.name == "canary" and p.challenger is not None \
                and p.progress is not None and not p.progress.rolled_back:
            return p
        return None

    async def run_forever(self) -> None:
        """Check, then sleep ``gate.check_seconds`` (1 s while no canary is served), until cancelled."""
        while True:
            p = self._policy()
            await asyncio.sleep(p.config.gate.check_seconds if p is not None else 1.0)
            try:
                await self.check()
            except LoopMLError as exc:
                _say(f"check failed, will retry: {exc}")
            except Exception as exc:
                _say(f"check crashed, will retry: {describe_error(exc)}")

    def _analyse(self, policy: CanaryPolicy, since: float, gate: Any) -> Any:
        """The log's analysis of the canary's experiment since ``since`` (wall time), or None without rows."""
        from loopml.experiments.analysis import analyse
        from loopml.monitoring.logs import read_labelled, read_predictions

        ws = self.app.registry.ws
        start = dt.datetime.fromtimestamp(since, dt.UTC)
        log = read_predictions(ws, start, columns=COLUMNS)
        try:
            labelled = read_labelled(ws, start, columns=COLUMNS)
            return analyse(log, labelled if labelled.num_rows else None, policy.experiment, alpha=gate.alpha,
                           min_effect=gate.max_score_shift, guardrail_alpha=gate.score_p_value)
        except NotFound:
            return None

    async def check(self) -> GateVerdict | None:
        """One check of the served canary: roll back, advance, hold or nothing. Returns the verdict."""
        policy = self._policy()
        if policy is None or self.app.registry is None:
            return None
        from loopml.experiments.analysis import slo_check

        gate = policy.config.gate
        hold = policy.config.hold_seconds
        progress = policy.progress
        if progress is None or policy.challenger is None:  # (_policy returns only canaries that have both)
            return None
        final = policy.step >= len(policy.steps) - 1
        # the current step's rows (consistent propensities); in the last step of all traffic, the whole canary
        since = progress.started if final or not policy.steps else progress.step_started
        text = self.app.metrics.render(self.app.state.states)  # on the loop: the counters are not locked
        slo = slo_check(text, policy.incumbent, policy.challenger, min_error_increase=gate.max_error_rate_increase,
                        alpha=gate.alpha, max_p99_ratio=gate.max_p99_ratio, p99_floor_ms=gate.p99_floor_ms)
        loop = asyncio.get_running_loop()
        analysis = await loop.run_in_executor(None, self._analyse, policy, since, gate)
        if self.app.state.policy is not policy and self._policy() is None:
            return None  # the canary left while the log was read
        verdict = canary_gate(slo, analysis, policy.challenger, policy.incumbent, gate)
        self.last = verdict
        self.app.metrics.canary = {(policy.experiment, policy.challenger): (policy.step, policy.fraction)}
        if verdict.breached:
            await self.rollback(policy, "; ".join(verdict.reasons), verdict)
            return verdict
        if not policy.steps or final:
            return verdict
        held = time.monotonic() - progress.since
        if held < hold:
            return verdict
        if verdict.passed:
            policy.advance()
            self.app.metrics.canary = {(policy.experiment, policy.challenger): (policy.step, policy.fraction)}
            _say(f"{policy.experiment}: {policy.challenger} passed the gate after {held:.0f} s; step "
                 f"{policy.step + 1}/{len(policy.steps)}: {policy.fraction:.0%} of the traffic")
            return verdict
        bound = gate.max_hold_seconds or 3 * hold
        if held >= bound:
            why = (f"gate undecided after holding step {policy.step + 1} ({policy.fraction:.0%}) for {held:.0f} s "
                   f"(max_hold_seconds {bound:g}): " + "; ".join(verdict.waiting))
            await self.rollback(policy, why, verdict)
        return verdict

    async def rollback(self, policy: CanaryPolicy, why: str, verdict: GateVerdict) -> None:
        """Route everything to production now, then archive the canary in the registry with the reason."""
        app = self.app
        vid = policy.challenger
        if vid is None or policy.progress is None:  # nothing in canary: nothing to roll back
            return
        loop = asyncio.get_running_loop()
        async with app._admin_lock:
            state = app.state
            if state.states.get(vid) != "canary":
                return
            from loopml.serving.app import ServingState

            # phase 1: serve without the canary (what the registry will say once phase 2 is written)
            states = {v: s for v, s in state.states.items() if v != vid}
            models = {v: m for v, m in state.models.items() if v != vid}
            new_policy = make_policy(app.routing, models, states, app.routing_options)
            app.swap(ServingState(models, states, new_policy))
            policy.progress.rolled_back = True
            app.metrics.canary_rollbacks += 1
            reason = (f"experiment {policy.experiment} rolled back by the server at step {policy.step + 1}"
                      f"{'/' + str(len(policy.steps)) if policy.steps else ''} ({policy.fraction:.0%} of the traffic): "
                      f"{why} [evidence: {_numbers(verdict)}]")
            _say(f"{vid} routed out; {reason}")
            # phase 2: the registry and the experiment record
            try:
                await loop.run_in_executor(None, self._record, vid, policy.experiment, reason, verdict)
            except Exception as exc:
                policy.progress.rolled_back = False  # the next poll serves it again; the next check retries
                _say(f"could not record the rollback of {vid} in the registry ({describe_error(exc)}); will retry")
                return
            _say(f"{vid}: canary -> archived in the registry")

    def _record(self, vid: str, experiment: str | None, reason: str, verdict: GateVerdict) -> None:
        from loopml.experiments.records import get, record_stop

        reg = self.app.registry
        reg.transition(vid, "archived", actor=ACTOR, reason=reason)
        if experiment is not None:
            rec = get(reg.ws, experiment, missing_ok=True)
            if rec is not None and rec["status"] == "running" and rec["version_id"] == vid:
                record_stop(reg.ws, experiment, "rolled_back", ACTOR, reason, _jsonable(verdict.evidence))


def _numbers(verdict: GateVerdict) -> str:
    """The SLO counters of both versions, in one line."""
    parts = []
    for v, d in verdict.evidence.get("slo", {}).get("versions", {}).items():
        p99 = d.get("latency_p99_ms")
        parts.append(f"{v} {d['requests']} answers, {d['errors']} errors"
                     + (f", p99 {p99:.1f} ms" if isinstance(p99, float) and p99 == p99 else ""))
    return "; ".join(parts)


def _jsonable(x: Any) -> Any:
    """``x`` with non-finite floats as None (the evidence goes into a JSON column)."""
    import math

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


__all__ = ["ACTOR", "CanaryGuard"]
