"""The ``evaluate`` stage (order 50, requires ``train``) and the bundle-on-table evaluation it runs.

Loads the trained bundle and the ``test`` split, scores them, scores the production model
(when the registry has one) and the baseline (the prior/mean model from the leaderboard) on
the same rows, computes everything in :func:`~loopml.evaluation.evaluate.evaluate_predictions`,
adds the analysis tools, checks the gates and writes the ``report`` (JSON) and ``html``.
A failed gate does not fail the stage: the verdict travels to the registry with the model.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from loopml.errors import DataError, LoopMLError, NotFound
from loopml.evaluation.analysis import input_permutation_importance, largest_loss, native_importance
from loopml.evaluation.data import EvalData
from loopml.evaluation.evaluate import evaluate_predictions
from loopml.evaluation.gates import GateContext, baseline_gate, check_gates, parse_gates
from loopml.evaluation.report import build_report, render_html
from loopml.pipeline.resources import MemoryFloor
from loopml.pipeline.stage import STAGES, BaseStage, StageContext, StageResult, register_stage
from loopml.spec import Spec
from loopml.training.models.baselines import BASELINE_MODELS
from loopml.training.models.baselines import TASK_BASELINES as BASELINE_FOR
from loopml.workspace import Workspace

MAX_EXAMPLE_COLUMNS = 12


@dataclass
class EvaluationInputs:
    """What an evaluation needs besides the candidate: measured values, references, notes."""

    measured: dict[str, float] = field(default_factory=dict)
    baseline_digest: str | None = None
    notes: list[str] = field(default_factory=list)
    # ranking: the rows the model could know (train + valid splits); the catalogue protocol excludes
    # each user's interactions in them and ranks the rest of the catalogue
    history: pa.Table | None = None
    history_splits: list[str] = field(default_factory=list)  # or the digests of those splits, read when needed


def _column_values(table: pa.Table, name: str, what: str) -> np.ndarray:
    if name not in table.column_names:
        raise DataError(
            f"evaluation {what} column `{name}` is not in the test table "
            f"(columns: {', '.join(table.column_names[:40])})",
            hint=f"fix evaluation.{what} in loopml.yaml",
        )
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False))


def _production(ws: Workspace) -> Any | None:
    """The production model version, or None (also when the registry is not available)."""
    try:
        from loopml.registry import Registry
    except ImportError:  # pragma: no cover - the registry ships with loopml
        return None
    return Registry(ws).production()


def requirement_budgets(spec: Spec) -> dict[str, float]:
    """Budgets from ``spec.requirements.constraints`` under the names gates use."""
    c = spec.requirements.constraints
    out: dict[str, float] = {}
    if c.latency_p99_ms is not None:
        out["latency_p99_ms"] = float(c.latency_p99_ms)
    if c.max_model_size_mb is not None:
        out["model_size_mb"] = float(c.max_model_size_mb)
    return out


def measured_from_leaderboard(board: dict[str, Any], bundle_digest: str) -> dict[str, float]:
    """Latency and size of the evaluated bundle as measured by training (its leaderboard row)."""
    rows = board.get("candidates") or []
    row = next((r for r in rows if r.get("bundle") == bundle_digest), None)
    if row is None:
        row = next((r for r in rows if r.get("name") == board.get("winner")), None)
    out: dict[str, float] = {}
    if row:
        for src, dst in (("latency_p99_ms", "latency_p99_ms"), ("latency_p50_ms", "latency_p50_ms"),
                         ("size_mb", "model_size_mb"), ("train_s", "train_seconds")):
            if row.get(src) is not None:
                out[dst] = float(row[src])
    return out


def measured_from_manifest(manifest: dict[str, Any]) -> dict[str, float]:
    """Latency measured by training and the artifact size, as recorded in a bundle's manifest."""
    out: dict[str, float] = {}
    lat = (manifest.get("training") or {}).get("latency_p99_ms")
    if lat is not None:
        out["latency_p99_ms"] = float(lat)
    if manifest.get("size_bytes") is not None:
        out["model_size_mb"] = float(manifest["size_bytes"]) / 1e6
    return out


def baseline_from_leaderboard(board: dict[str, Any], bundle_digest: str) -> str | None:
    """Bundle digest of the baseline (prior/mean/most popular) model trained beside the candidate."""
    for r in board.get("candidates") or []:
        if r.get("model_type") in BASELINE_MODELS and r.get("bundle") and r.get("bundle") != bundle_digest:
            return str(r["bundle"])
    return None


def inputs_for_bundle(ws: Workspace, bundle_digest: str) -> EvaluationInputs:
    """Measured values and the baseline of a stored bundle, from the leaderboard of the run that trained it.

    Used when a bundle is evaluated outside the pipeline (``loopml evaluate --bundle``), so that
    it is judged against the same baseline (and budgets) as in its own run.
    """
    from sqlalchemy import select

    from loopml.workspace.metadata import executions

    board: dict[str, Any] = {}
    producer = ws.artifact_info(bundle_digest).get("producer")
    if producer:
        with ws.engine.connect() as conn:
            row = conn.execute(select(executions.c.outputs).where(executions.c.execution_id == producer)).first()
        outs = (row[0] if row is not None else None) or {}
        digest = outs.get("leaderboard")
        splits = [str(outs[k]) for k in ("train", "valid") if outs.get(k)]
        if digest:
            with contextlib.suppress(NotFound, ValueError):
                board = json.loads(ws.artifacts.get_bytes(digest))
    if not board:
        return EvaluationInputs(notes=["no leaderboard found for this bundle: measured values and baseline unknown"])
    return EvaluationInputs(measured=measured_from_leaderboard(board, bundle_digest),
                            baseline_digest=baseline_from_leaderboard(board, bundle_digest),
                            history_splits=splits if len(splits) == 2 else [])


def evaluate_bundle(
    ws: Workspace,
    spec: Spec,
    bundle_digest: str,
    test: pa.Table,
    inputs: EvaluationInputs | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a stored bundle on a table; returns the report JSON (gates included).

    Parameters
    ----------
    ws
        The workspace holding the bundle (and the registry).
    spec
        The project spec (task, evaluation section, requirements).
    bundle_digest
        Manifest digest of the candidate bundle.
    test
        The rows to evaluate on, holding the target column and the model's inputs.
    inputs
        Measured latency/size, the baseline bundle, notes from the caller.
    progress
        Called with a short message as each phase starts.
    """
    from loopml.training.bundle import load_bundle
    from loopml.training.labels import encode_labels

    inp = inputs or EvaluationInputs()
    say = progress or (lambda msg: None)
    ev = spec.evaluation
    gates = parse_gates(ev.gates)  # a malformed gate fails before any work
    say("loading the model")
    bundle = load_bundle(ws, bundle_digest)
    measured = {**measured_from_manifest(bundle.manifest), **inp.measured}
    task = spec.task.type
    notes = list(inp.notes)
    classes = bundle.manifest.get("classes") or None
    labels = encode_labels(test, spec.task, classes=classes if task == "multiclass" else None)
    if not labels.labeled.all():
        dropped = int((~labels.labeled).sum())
        notes.append(f"{dropped} test row(s) without a label were not evaluated")
        test = test.filter(pa.array(labels.labeled))
        y = labels.y[labels.labeled]
    else:
        y = labels.y
    if test.num_rows == 0:
        raise DataError("the test split has no labelled rows to evaluate on")
    ranking_protocol: dict[str, Any] | None = None
    if task == "ranking":
        history = inp.history
        if history is None and inp.history_splits and spec.evaluation.ranking.protocol != "test_items":
            history = pa.concat_tables([pq.read_table(ws.artifacts.open_verified(d)) for d in inp.history_splits],
                                       promote_options="permissive")
        test, y, ranking_protocol = _ranking_candidates(spec, test, y, history, notes, say)
    say("scoring the test rows")
    matrices: dict[str, Any] = {}

    def scores_of(b: Any) -> np.ndarray:
        # bundles trained together share one fitted transform (same digest): the test matrix is built once
        # (sentence embeddings or TF-IDF of a text column cost more than scoring)
        key = str(b.manifest.get("transform") or id(b))
        if key not in matrices:
            matrices[key] = b.matrix(test)
        return np.asarray(b.predict_matrix(matrices[key]))

    def matrix_of(table: pa.Table) -> Any:
        key = str(bundle.manifest.get("transform") or id(bundle))
        return matrices[key] if table is test and key in matrices else bundle.matrix(table)

    score = scores_of(bundle)
    prod_score = None
    prod_info: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    prod = _production(ws)
    if prod is None:
        prod_info["production"] = None
    else:
        prod_info["production"] = {"version_id": prod.version_id, "bundle": prod.bundle_digest}
        if prod.bundle_digest == bundle_digest:
            # re-evaluating the served model (e.g. a rerun after its promotion): it is not compared with
            # itself, so a gate like `> production + margin` does not un-approve the model in production
            unavailable["production"] = f"the candidate is the production model ({prod.version_id})"
            notes.append(f"the candidate is the production model ({prod.version_id}): not compared with itself")
        else:
            try:
                prod_score = scores_of(load_bundle(ws, prod.bundle_digest))
            except LoopMLError as exc:
                notes.append(f"production model {prod.version_id} cannot score this test table ({exc.message}); "
                             "comparisons with production are skipped")
    base_score = None
    base_name: str | None = BASELINE_FOR.get(task)
    base_missing: str | None = None
    if inp.baseline_digest:
        try:
            base_bundle = load_bundle(ws, inp.baseline_digest)
            base_name = str(base_bundle.manifest.get("model_type") or base_name)
            base_score = scores_of(base_bundle)
            prod_info["baseline"] = inp.baseline_digest
            prod_info["baseline_model"] = base_name
        except LoopMLError as exc:
            base_missing = f"baseline bundle {inp.baseline_digest[:12]} cannot score the test table: {exc.message}"
            notes.append(base_missing)
    elif bundle.manifest.get("model_type") not in BASELINE_MODELS:
        base_missing = "no baseline model (prior/mean/most_popular) in the leaderboard"
        notes.append(base_missing + ": comparison with the baseline skipped")
    slices = {c: _column_values(test, c, "slices") for c in ev.slices}
    sensitive = {c: _column_values(test, c, "fairness.sensitive_columns") for c in ev.fairness.sensitive_columns}
    groups = items = None
    if task == "ranking":
        gk = spec.task.group_key or (spec.task.entity_keys[0] if spec.task.entity_keys else None)
        if gk is None:
            raise DataError("a ranking evaluation needs task.group_key (the query or user of each ranked list)")
        groups = _column_values(test, gk, "task.group_key")
        if spec.task.item_key:
            items = _column_values(test, spec.task.item_key, "task.item_key")
    result = evaluate_predictions(
        task, y, score, slices=slices, sensitive=sensitive, production_score=prod_score, baseline_score=base_score,
        spec_eval=ev, groups=groups, items=items, online_metric=spec.task.online_metric, progress=say,
    )
    result.notes.extend(notes)
    if result.confusion is not None and task == "multiclass" and classes and len(classes) == len(result.confusion["labels"]):
        result.confusion["labels"] = [c if isinstance(c, (int, float, str, bool)) else str(c) for c in classes]
    say("analysis: importance and largest losses")
    result.analysis = _analysis(bundle, test, y, score, result.primary_metric, task, spec, matrix=matrix_of, say=say)
    info = result.analysis.get("importance_info") or {}
    if info.get("note"):
        result.notes.append(str(info["note"]))
    verdicts = check_gates(
        gates, result, GateContext(measured=measured, requirements=requirement_budgets(spec), unavailable=unavailable,
                                   tolerances={"latency_p99_ms": spec.requirements.constraints.latency_tolerance})
    )
    cand_type = bundle.manifest.get("model_type")
    verdicts.append(baseline_gate(result, enabled=ev.baseline_gate, baseline=base_name,
                                  candidate_model=cand_type if cand_type in BASELINE_MODELS else None,
                                  unavailable=base_missing))
    model = {
        "bundle": bundle_digest,
        "model_type": bundle.manifest.get("model_type"),
        **prod_info,
    }
    report = build_report(result, verdicts, model)
    if ranking_protocol is not None:
        report["ranking_protocol"] = ranking_protocol
    return report


def _ranking_candidates(spec: Spec, test: pa.Table, y: np.ndarray, history: pa.Table | None, notes: list[str],
                        say: Callable[[str], None]) -> tuple[pa.Table, np.ndarray, dict[str, Any]]:
    """The rows a ranking model is tested on under ``evaluation.ranking`` (see :mod:`loopml.evaluation.catalogue`)."""
    from loopml.evaluation.catalogue import catalogue_candidates, describe

    rk = spec.evaluation.ranking
    gk = spec.task.group_key or (spec.task.entity_keys[0] if spec.task.entity_keys else None)
    if rk.protocol == "test_items":
        notes.append("ranking protocol test_items: each user re-ranks only the items it interacted with in the test "
                     "period (optimistic: the catalogue protocols rank every item the user has not seen)")
        return test, y, {"protocol": "test_items"}
    if history is None or gk is None or not spec.task.item_key:
        why = ("no training history was given" if history is None
               else "it needs task.item_key and task.group_key")
        notes.append(f"ranking protocol {rk.protocol} not applied ({why}): only the test items are re-ranked")
        return test, y, {"protocol": "test_items", "requested": rk.protocol, "why_not": why}
    say(f"ranking protocol {rk.protocol}: building each test user's candidates")
    cand = catalogue_candidates(history, test, y, gk, spec.task.item_key, spec.task.target, rk, spec.evaluation.seed)
    notes.append(describe(cand.info))
    return cand.table, cand.relevance, cand.info


def _analysis(bundle: Any, test: pa.Table, y: np.ndarray, score: np.ndarray, primary: str, task: str,
              spec: Spec, matrix: Callable[[pa.Table], Any] | None = None,
              say: Callable[[str], None] | None = None) -> dict[str, Any]:
    ev = spec.evaluation
    out: dict[str, Any] = {"importance": {}}
    names = list(bundle.transform.feature_names)
    native = native_importance(bundle.model, names)
    if native is not None:
        out["importance"]["native"] = native
    if task in ("binary", "multiclass", "regression") and ev.permutation_repeats > 0 and names:
        finish = getattr(bundle, "_finish", lambda s: s)  # the bundle's calibration, as served

        def score_fn(X: Any) -> np.ndarray:
            return np.asarray(finish(bundle.model.score(X)))

        n = test.num_rows
        take = np.arange(n)
        if n > ev.permutation_max_rows:
            take = np.sort(np.random.default_rng(ev.seed).choice(n, ev.permutation_max_rows, replace=False))
        sub = test.take(pa.array(take))
        X = matrix(test) if matrix is not None and take.size == n else bundle.matrix(sub)
        data = EvalData(task, y[take], score[take], threshold=ev.threshold, calibration_bins=ev.calibration_bins)
        rows, info = input_permutation_importance(
            score_fn, bundle.transform, sub, X, data, primary, repeats=ev.permutation_repeats, seed=ev.seed,
            budget_s=ev.importance_budget_s, progress=say,
        )
        out["importance"]["permutation"] = rows
        out["importance_info"] = info
    if task in ("binary", "multiclass", "regression") and ev.largest_loss_examples > 0:
        data = EvalData(task, y, score, threshold=ev.threshold)
        idx = largest_loss(data, ev.largest_loss_examples)
        from loopml.evaluation.analysis import example_losses

        loss = example_losses(data)
        cols = [c for c in bundle.transform.input_columns if c in test.column_names][:MAX_EXAMPLE_COLUMNS]
        rows = test.select(cols).take(pa.array(idx)).to_pylist() if idx.size else []
        out["largest_loss"] = [
            {"row": int(i), "label": _plain(y[i]), "score": _plain(score[i] if score.ndim == 1 else score[i].tolist()),
             "loss": float(loss[i]), **{k: _plain(v) for k, v in r.items()}}
            for i, r in zip(idx.tolist(), rows)
        ]
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float):
        return round(v, 6)
    if v is None or isinstance(v, (int, str, bool, list)):
        return v
    return str(v)


@contextmanager
def _phases(show: bool) -> Iterator[Callable[[str], None]]:
    """A transient spinner naming the phase being computed (nothing when progress is off)."""
    if not show:
        yield lambda msg: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("[bold]evaluate[/bold] {task.description}"), TimeElapsedColumn(),
                  transient=True) as prog:
        task = prog.add_task("starting", total=None)
        yield lambda msg: prog.update(task, description=msg)


def _record_verdict(ws: Workspace, bundle_digest: str, report: dict[str, Any], report_ref: str) -> None:
    """A registered bundle's verdict follows this evaluation (history kept in the registry)."""
    from loopml.registry import Registry
    from loopml.registry.evidence import record_for_bundle

    record_for_bundle(Registry(ws), bundle_digest, report, report_ref=report_ref, source="evaluate")


@register_stage
class EvaluateStage(BaseStage):
    """Judge the trained model by evidence: metrics with intervals, comparisons, slices, fairness, gates."""

    name: ClassVar[str] = "evaluate"
    requires: ClassVar[tuple[str, ...]] = ("train",)
    order: ClassVar[int] = 50
    description: ClassVar[str] = "metrics with bootstrap intervals, vs production and baseline, slices, fairness, gates"

    @classmethod
    def enabled(cls, spec: Spec) -> bool:
        """Part of the pipeline when training is."""
        return "train" in STAGES and STAGES["train"].enabled(spec)

    def config(self, spec: Spec) -> Any:
        return {
            "task": spec.task.model_dump(mode="json"),
            "evaluation": spec.evaluation.model_dump(mode="json"),
            "constraints": spec.requirements.constraints.model_dump(mode="json"),
        }

    def fingerprint(self, ws: Workspace) -> Any:
        """The production model compared against: a new production version means a new evaluation."""
        try:
            prod = _production(ws)
        except LoopMLError:
            return None
        return None if prod is None else prod.bundle_digest

    def memory_floor(self, ctx: StageContext) -> MemoryFloor:
        """It reads the test split whole."""
        return ctx.input_table_floor("train", "test")

    def run(self, ctx: StageContext) -> StageResult:
        ws = ctx.workspace
        spec = ctx.spec
        parse_gates(spec.evaluation.gates)
        bundle_digest = ctx.input("train", "bundle")
        test = pq.read_table(ws.artifacts.open_verified(ctx.input("train", "test")))
        board: dict[str, Any] = {}
        with contextlib.suppress(NotFound):  # an older train stage may not store a leaderboard
            board = json.loads(ws.artifacts.get_bytes(ctx.input("train", "leaderboard")))
        measured = measured_from_leaderboard(board, bundle_digest)
        summary = ctx.upstream_summaries.get("train") or {}
        if "latency_p99_ms" not in measured and summary.get("latency_p99_ms") is not None:
            measured["latency_p99_ms"] = float(summary["latency_p99_ms"])
        history = None
        if spec.task.type == "ranking" and spec.evaluation.ranking.protocol != "test_items":
            history = pa.concat_tables(
                [pq.read_table(ws.artifacts.open_verified(ctx.input("train", k))) for k in ("train", "valid")],
                promote_options="permissive",
            )
        inputs = EvaluationInputs(measured=measured, baseline_digest=baseline_from_leaderboard(board, bundle_digest),
                                  history=history)
        with _phases(ctx.show_progress) as say:
            report = evaluate_bundle(ws, spec, bundle_digest, test, inputs, progress=say)
        data = json.dumps(report, indent=1, allow_nan=False).encode()
        html = render_html(report)
        ws.publish_report("evaluation.json", data, execution_id=ctx.execution_id)
        ws.publish_report("evaluation.html", html, execution_id=ctx.execution_id)
        outputs = {
            "report": ctx.put_bytes(data, kind="evaluation-report", name="evaluation.json",
                                    meta={"approved": report["approved"]}),
            "html": ctx.put_bytes(html.encode(), kind="html", name="evaluation.html"),
        }
        _record_verdict(ws, bundle_digest, report, outputs["report"])
        pm = report["primary_metric"]
        m = report["metrics"][pm]
        return StageResult(outputs=outputs, summary={
            "approved": report["approved"],
            "primary_metric": pm,
            "value": m["value"],
            "lower": m["lower"],
            "upper": m["upper"],
            "failed_gates": [g["gate"] for g in report["gates"] if not g["passed"]],
            "rows": report["rows"],
        })
