"""Hyperparameter tuning with Optuna: a number of trials, reproducibly, with a time limit only as a cap.

Optuna proposes parameters (TPE sampler with a fixed seed) through its ask/tell interface;
each proposal runs as a :class:`~loopml.training.trials.TrialJob` on a trial executor, so
trials can run in parallel worker processes (or on Ray) while the study stays here. The
candidate's own parameters always run first as trial 0, so tuning never returns something
worse on validation than the configuration it started from.

Reproducibility: the budget is ``n_trials``. Trials are asked in batches of the executor's
parallelism; a batch is told back to the study (and joins the pruning snapshot) in trial-number
order once all of it is done, so the proposals and pruning decisions do not depend on which
worker finished first or how busy the machine is. The time limit is a safety cap: when it stops
the search (or prunes a running trial) early, :attr:`TuneResult.stopped_by` says ``time cap``.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopml.training.metrics import Metric
from loopml.training.trials import PruneRule, TrialExecutor, TrialJob, TrialResult, run_trial


@dataclass
class TrialRecord:
    """One finished trial: its parameters and outcome."""

    number: int
    params: dict[str, Any]
    result: TrialResult


@dataclass
class TuneResult:
    """The outcome of tuning one candidate."""

    best_params: dict[str, Any]
    best_value: float | None
    trials: list[TrialRecord] = field(default_factory=list)
    seconds: float = 0.0
    fitted_params: dict[str, Any] = field(default_factory=dict)
    #: ``n_trials`` (the budget was used), ``time cap`` (the safety cap stopped it early) or ``no search space``
    stopped_by: str = "n_trials"
    planned: int = 0

    @property
    def cut_short(self) -> bool:
        """The time cap, not the trial count, ended the search (the result depends on the machine's speed)."""
        return self.stopped_by == "time cap"

    @property
    def n_pruned(self) -> int:
        """Trials stopped early."""
        return sum(t.result.state == "pruned" for t in self.trials)

    @property
    def n_failed(self) -> int:
        """Trials that raised."""
        return sum(t.result.state == "failed" for t in self.trials)


def _curves(records: list[TrialRecord]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in records:
        if r.result.state == "complete":
            for step, v in r.result.intermediate:
                out.setdefault(step, []).append(v)
    return out


def _beats_by_one_se(metric: Metric, best: TrialRecord, first: TrialRecord) -> bool:
    """Whether ``best`` beats trial 0 by more than one standard error of the paired fold differences.

    The one-standard-error rule: a search over many trials finds the luckiest fold noise, so
    the configuration given in the spec is kept unless the gain is larger than that noise.
    Without fold scores (trials scored on the validation split) the best trial wins.
    """
    a, b = best.result.fold_values, first.result.fold_values
    if not a or len(a) != len(b):
        return True
    d = np.asarray([metric.signed(x) - metric.signed(y) for x, y in zip(a, b)], dtype=np.float64)
    if len(d) < 2 or not np.all(np.isfinite(d)):
        return True
    return bool(d.mean() > d.std(ddof=1) / np.sqrt(len(d)))


def tune(
    executor: TrialExecutor,
    *,
    data_path: str,
    candidate: str,
    model_type: str,
    search_space: Callable[[Any], dict[str, Any]] | None,
    fixed_params: dict[str, Any],
    task: str,
    seed: int,
    metric: Metric,
    budget_s: float | None,
    n_trials: int | None,
    focal_gamma: float | None = None,
    item_key: str | None = None,
    negative_rate: float | None = None,
    cv: bool = False,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> TuneResult:
    """Search parameters for one candidate until the budget or ``n_trials`` is used up.

    Parameters
    ----------
    executor : where trials run.
    data_path : npz file written by :func:`~loopml.training.trials.save_trial_data`.
    search_space : ``space(trial) -> params`` of the model class; ``None`` runs trial 0 only.
    fixed_params : parameters given in the spec; they win over proposed values.
    metric : the validation metric (direction taken from it).
    budget_s : safety cap in wall-clock seconds on this candidate's search (None: no cap).
    n_trials : the budget: trials including trial 0 (None: 20).
    on_trial : called with every finished trial (recording, progress).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.time()
    deadline = t0 + budget_s if budget_s is not None else float("inf")
    capped = False
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True)
    )
    records: list[TrialRecord] = []
    pending: dict[cf.Future[TrialResult], tuple[Any, dict[str, Any], int]] = {}
    max_parallel = int(getattr(executor, "max_parallel", 1))
    limit = n_trials if n_trials is not None else 20
    number = 0

    def submit(trial: Any, params: dict[str, Any]) -> None:
        nonlocal number
        rule = PruneRule(curves=_curves(records), deadline=None if deadline == float("inf") else deadline,
                         n_warmup_steps=1 if cv else 20, n_startup_trials=5 if cv else 3)
        job = TrialJob(
            data_path=data_path, candidate=candidate, model_type=model_type, params=params, task=task, seed=seed,
            metric=metric.name, number=number, focal_gamma=focal_gamma, item_key=item_key, rule=rule,
            negative_rate=negative_rate,
        )
        pending[executor.submit(run_trial, job)] = (trial, params, number)
        number += 1

    def collect(block: bool) -> None:
        """Wait for every pending trial, then tell them in trial-number order (not completion order)."""
        nonlocal capped
        if not pending:
            return
        cf.wait(list(pending), timeout=None, return_when=cf.ALL_COMPLETED)
        for fut in sorted(pending, key=lambda f: pending[f][2]):
            trial, params, num = pending[fut]
            res = fut.result()
            capped = capped or res.state == "capped"
            rec = TrialRecord(num, params, res)
            records.append(rec)
            if trial is not None:
                for step, v in res.intermediate:
                    trial.report(v, step)
                if res.state == "complete" and res.value is not None and res.value == res.value:
                    study.tell(trial, metric.signed(res.value))
                elif res.state in ("pruned", "capped"):
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
            if on_trial is not None:
                on_trial(rec)
        pending.clear()

    # trial 0: the configuration given in the spec (no deadline-based pruning on it)
    job0 = TrialJob(
        data_path=data_path, candidate=candidate, model_type=model_type, params=dict(fixed_params), task=task,
        seed=seed, metric=metric.name, number=0, focal_gamma=focal_gamma, item_key=item_key, rule=None,
        negative_rate=negative_rate,
    )
    pending[executor.submit(run_trial, job0)] = (None, dict(fixed_params), 0)
    number = 1
    collect(block=True)
    # keep back what the final fit will take (about one trial-0 fit) so that the budget covers it
    deadline -= min(records[0].result.duration_s, max(0.0, deadline - time.time()) / 2) if records else 0.0
    if search_space is not None:
        while number < limit and time.time() < deadline:
            # one batch of the executor's parallelism, asked in order, told in order when all are done
            while len(pending) < max_parallel and number < limit:
                trial = study.ask()
                params = {**search_space(trial), **fixed_params}
                submit(trial, params)
            collect(block=True)
        if number < limit:
            capped = True
    stopped = "no search space" if search_space is None else ("time cap" if capped else "n_trials")
    done = [r for r in records if r.result.state == "complete" and r.result.value is not None
            and r.result.value == r.result.value]
    if not done:
        return TuneResult(dict(fixed_params), None, sorted(records, key=lambda r: r.number), time.time() - t0,
                          stopped_by=stopped, planned=limit)
    best = max(done, key=lambda r: (metric.signed(r.result.value or 0.0), -r.number))
    first = next((r for r in done if r.number == 0), None)
    if first is not None and best is not first and not _beats_by_one_se(metric, best, first):
        best = first
    return TuneResult(best.params, best.result.value, sorted(records, key=lambda r: r.number), time.time() - t0,
                      dict(best.result.fitted_params), stopped_by=stopped, planned=limit)
