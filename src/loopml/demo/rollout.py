"""The demo's rollout: the retrained candidate walks shadow → canary → production (or is rolled back) by the evidence.

1. **Shadow**: the service is restarted with ``deployment.routing.type: shadow`` and the candidate in state
   shadow; the replayed day is sent again (production answers, the candidate scores a copy), with its clicks
   as feedback. :func:`loopml.experiments.analysis.analyse` reads agreement, the score guardrail and the paired
   Brier difference on the labels: a breach or a significantly worse Brier score archives the candidate.
2. **Canary**: routing ``canary`` with gated ``steps``; the server's own guard
   (:mod:`loopml.serving.canary_guard`) advances a step only when its gate passes and rolls a breaching canary
   back by itself. The day is replayed (in small requests, so the gate sees many) until the canary is
   rolled back, or has served the last step (all traffic) for one more replay.
3. **Decision**: a canary that served its last step is promoted when the experiment's analysis shows no breach
   and the online metric (CTR on the clicks, always-valid mSPRT) is not significantly worse; otherwise it is
   archived. Each step is a registry transition with the reason and its numbers, and a row of ``experiments``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from loopml.demo.replay import replay_day
from loopml.demo.service import Client, ServiceProcess
from loopml.errors import LoopMLError
from loopml.serving.journal import wait_written
from loopml.serving.logs import feedback_log_dir, prediction_log_dir
from loopml.workspace import Workspace

ACTOR = "loopml demo"
#: canary steps and gate of the demo: its replayed traffic is small, so the error bound is looser than the
#: defaults and the latency slack is wide (the demo shares its machine with the replay client)
STEPS = [0.25, 1.0]
CANARY = (f"{{type: canary, steps: {STEPS}, hold_seconds: 2, gate: {{check_seconds: 0.5, min_requests: 50, "
          "max_error_rate_increase: 0.05, p99_floor_ms: 50, max_hold_seconds: 30}}")
ROWS_PER_PASS = 2500  # impressions of the replayed day sent per pass
BATCH = 10  # rows per request while the canary is gated (the gate counts requests)


@dataclass
class RolloutResult:
    """How the candidate's rollout ended, and why."""

    version_id: str
    decision: str = "undecided"  # promoted | rolled_back
    stage: str = "shadow"  # where it ended: shadow, canary
    reason: str = ""
    shadow: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None
    passes: int = 0
    steps_reached: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return dataclasses.asdict(self)


def set_routing(folder: Path, routing: str) -> str:
    """Rewrite ``deployment.routing`` of the demo spec (one line in the template); returns the previous value."""
    previous = routing_of(folder)
    path = folder / "loopml.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"(?m)^  routing: .*$", lambda _: f"  routing: {routing}", text), encoding="utf-8")
    return previous


def routing_of(folder: Path) -> str:
    """The ``deployment.routing`` line's value in the demo spec."""
    found = re.findall(r"(?m)^  routing: (.*)$", (folder / "loopml.yaml").read_text(encoding="utf-8"))
    if len(found) != 1:
        raise LoopMLError(f"{folder / 'loopml.yaml'}: expected one `  routing:` line under deployment, found {len(found)}")
    return str(found[0])


def _restart(holder: list[ServiceProcess]) -> ServiceProcess:
    old = holder[0]
    old.stop()
    holder[0] = ServiceProcess(old.project, old.port, host=old.host).start()
    return holder[0]


def _flush(ws: Workspace) -> None:
    time.sleep(ws.spec.deployment.log_flush_seconds + 0.2)
    wait_written([prediction_log_dir(ws.root), feedback_log_dir(ws.root)], timeout=120)


def _analyse(ws: Workspace, experiment: str) -> Any:
    from loopml.experiments.analysis import analyse
    from loopml.monitoring.logs import read_labelled, read_predictions

    return analyse(read_predictions(ws, shadows=True), read_labelled(ws, shadows=True), experiment)


def _canary_share(service: ServiceProcess) -> tuple[int, float] | None:
    client = Client(service.host, service.port)
    try:
        status, text = client.get("/metrics")
    finally:
        client.close()
    m = re.search(r'^loopml_canary_share\{[^}]*step="(\d+)"\} (\S+)$', str(text), re.M) if status == 200 else None
    return (int(m.group(1)), float(m.group(2))) if m else None


def _stop_experiment(ws: Workspace, name: str, status: str, reason: str, evidence: dict[str, Any] | None) -> None:
    import json

    from loopml.experiments.records import get, record_stop

    rec = get(ws, name, missing_ok=True)
    if rec is not None and rec["status"] == "running":
        record_stop(ws, name, status, ACTOR, reason, json.loads(json.dumps(evidence, default=str)) if evidence else None)


def _archive(ws: Workspace, res: RolloutResult, experiment: str, why: str, evidence: dict[str, Any] | None) -> None:
    from loopml.registry import Registry

    reason = f"experiment {experiment} rolled back: {why}"
    Registry(ws).transition(res.version_id, "archived", actor=ACTOR, reason=reason)
    _stop_experiment(ws, experiment, "rolled_back", reason, evidence)
    res.decision, res.reason = "rolled_back", reason


def rollout(ws: Workspace, version_id: str, day: Any, holder: list[ServiceProcess], console: Console,
            *, window_s: float = 600.0, budget_s: float = 120.0) -> RolloutResult:
    """Shadow, canary, then promote or roll back ``version_id``. ``holder[0]`` is the running service: the
    rollout restarts it (new routing), leaving the running one there (the caller stops it, also on errors).
    The spec's routing line is restored afterwards (the running service keeps the routing it started with)."""
    original = routing_of(ws.project_dir)
    try:
        return _rollout(ws, version_id, day, holder, console, window_s=window_s, budget_s=budget_s)
    finally:
        set_routing(ws.project_dir, original)


def _rollout(ws: Workspace, version_id: str, day: Any, holder: list[ServiceProcess], console: Console,
             *, window_s: float, budget_s: float) -> RolloutResult:
    from loopml.experiments.records import record_start
    from loopml.registry import Registry
    from loopml.serving.promotion import verify_servable

    res = RolloutResult(version_id)
    folder = ws.project_dir
    reg = Registry(ws)
    part = dataclasses.replace(day, impressions=day.impressions.slice(0, ROWS_PER_PASS))

    # 1. shadow: production answers, the candidate scores a copy of every request
    verify_servable(ws, version_id)  # loads and answers a smoke prediction before the registry moves
    shadow_exp = f"shadow-{version_id}"
    set_routing(folder, "{type: shadow}")
    record_start(ws, shadow_exp, "shadow", version_id, ACTOR, None)
    reg.transition(version_id, "shadow", actor=ACTOR, reason=f"experiment {shadow_exp} started: retrained after "
                   "the drift alert, approved by its evaluation gates")
    service = _restart(holder)
    replay_day(part, Workspace.open(folder).spec, service.host, service.port, batch=50, window_s=window_s)
    res.passes += 1
    _flush(ws)
    sh = _analyse(ws, shadow_exp)
    agree = sh.shadow[0] if sh.shadow else {}
    q = agree.get("quality")
    res.shadow = {"pairs": agree.get("pairs"), "score_correlation": agree.get("score_correlation"),
                  "decision_flips": agree.get("decision_flips"), "quality": q, "guardrail": sh.guardrail}
    console.print(f"    shadow {version_id}: {agree.get('pairs', 0):,} paired predictions, score correlation "
                  f"{agree.get('score_correlation', float('nan')):.3f}"
                  + (f"; Brier {q['difference']:+.5f} [{q['ci_low']:+.5f}, {q['ci_high']:+.5f}] vs production "
                     "(lower is better)" if q else ""))
    worse = q is not None and q["ci_low"] > 0
    if sh.breached or worse:
        why = "; ".join(sh.reasons()) or (f"significantly worse Brier score on {q['pairs']} labelled requests: "  # type: ignore[index]
                                          f"{q['difference']:+.5f} [{q['ci_low']:+.5f}, {q['ci_high']:+.5f}]")  # type: ignore[index]
        _archive(ws, res, shadow_exp, why, sh.as_dict())
        return res
    passed = (f"shadow passed: {agree.get('pairs', 0)} pairs, score correlation {agree.get('score_correlation', 0):.3f}"
              + (f", Brier difference {q['difference']:+.5f} [{q['ci_low']:+.5f}, {q['ci_high']:+.5f}]" if q else "")
              + f"; {version_id} goes on to a canary")
    _stop_experiment(ws, shadow_exp, "passed", passed, sh.as_dict())
    console.print(f"    {passed}")

    # 2. canary: the server gates its steps and rolls it back by itself on a breach
    res.stage = "canary"
    canary_exp = f"canary-{version_id}"
    set_routing(folder, CANARY)
    record_start(ws, canary_exp, "canary", version_id, ACTOR, None)
    reg.transition(version_id, "canary", actor=ACTOR, reason=f"experiment {canary_exp} started: {passed}")
    service = _restart(holder)
    spec = Workspace.open(folder).spec
    deadline = time.monotonic() + budget_s
    final_passes = 0
    while time.monotonic() < deadline:
        replay_day(part, spec, service.host, service.port, batch=BATCH, window_s=window_s)
        res.passes += 1
        if reg.get(version_id).state != "canary":
            break  # the server's guard rolled it back
        share = _canary_share(service)
        if share is not None and share[1] not in res.steps_reached:
            res.steps_reached.append(share[1])
            console.print(f"    canary {version_id}: step {share[0] + 1} of {len(STEPS)}, {share[1]:.0%} of the traffic "
                          f"(after {res.passes - 1} replays{'; the server passed its gate' if share[0] else ''})")
        if share is not None and share[1] >= 1.0:
            final_passes += 1
            if final_passes >= 2:  # one whole pass served by the canary at the last step, and judged
                break
        time.sleep(0.5)
    _flush(ws)
    if reg.get(version_id).state == "archived":
        last = [t for t in reg.history(version_id) if t.to_state == "archived"][-1]
        res.decision, res.reason = "rolled_back", f"{last.reason} (by {last.actor})"
        res.canary = {"rolled_back_by": last.actor}
        console.print(f"    canary {version_id}: rolled back by {last.actor}")
        return res
    cy = _analyse(ws, canary_exp)
    o = cy.online
    res.canary = {"arms": cy.arms, "guardrail": cy.guardrail, "online": o, "steps_reached": res.steps_reached}
    if final_passes < 2:
        why = (f"the canary did not pass its gated steps within the demo's {budget_s:.0f} s (steps reached: "
               f"{', '.join(f'{s:.0%}' for s in res.steps_reached) or 'none'})")
        _archive(ws, res, canary_exp, why, cy.as_dict())
        return res
    worse = o is not None and o["significant"] and o["lift"] < 0
    guard = cy.guardrail  # (not the sample ratio: the canary's share changed between its steps)
    if (guard and guard["breached"]) or worse:
        why = (guard["reason"] if guard and guard["breached"] else "") or (f"CTR significantly worse: {o['mean_treatment']:.4f} vs "
                                          f"{o['mean_control']:.4f}, always-valid p {o['p_value']:.2g}")
        _archive(ws, res, canary_exp, why, cy.as_dict())
        return res
    online = (f"CTR {o['mean_treatment']:.4f} vs production {o['mean_control']:.4f} (lift {o['lift']:+.4f} "
              f"[{o['ci_low']:+.4f}, {o['ci_high']:+.4f}], always-valid p {o['p_value']:.2g}, not significantly "
              "worse)" if o else "no labelled traffic of both arms")
    reason = (f"experiment {canary_exp} promoted: every gated step passed (traffic "
              f"{' -> '.join(f'{s:.0%}' for s in res.steps_reached)}), score guardrail ok, {online}")
    try:
        reg.transition(version_id, "production", actor=ACTOR, reason=reason)
    except LoopMLError as exc:  # e.g. its offline evaluation found it significantly worse than production
        _archive(ws, res, canary_exp, f"promotion refused: {exc.message}", cy.as_dict())
        return res
    _stop_experiment(ws, canary_exp, "promoted", reason, cy.as_dict())
    res.decision, res.reason = "promoted", reason
    return res


__all__ = ["RolloutResult", "rollout", "routing_of", "set_routing"]
