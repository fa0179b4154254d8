"""Selection on real data: tuning through executors, requirements decide eligibility, the why-line, the leaderboard."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from loopml.errors import ModelError, SpecError
from loopml.spec import Spec
from loopml.training.leaderboard import leaderboard_html, leaderboard_table
from loopml.training.measure import Latency
from loopml.training.metrics import METRICS
from loopml.training.selection import CandidateResult, explain, prepare_training_data, select_model
from loopml.training.splits import split_indices
from loopml.training.trials import PruneRule


def _spec(candidates: list[dict[str, Any]], **extra: Any) -> Spec:
    doc: dict[str, Any] = {
        "task": {"type": "binary", "target": "class", "positive_label": "bad"},
        "training": {"candidates": candidates, "tuning": {"time_budget_s": 600, "n_trials": 4}},
        "evaluation": {"bootstrap_resamples": 30},
    }
    for k, v in extra.items():
        doc.setdefault(k, {}).update(v)
    return Spec.model_validate(doc)


def _data(spec: Spec, german: pa.Table) -> Any:
    parts = split_indices(german, spec.training.split, spec.task, seed=0)
    return prepare_training_data(spec, german.take(pa.array(parts["train"])), german.take(pa.array(parts["valid"])))


def test_constraints_decide_eligibility_however_accurate(german: pa.Table) -> None:
    # sizes are deterministic (fixed seeds); the latency budget is generous so no timing decides this test
    spec = _spec(
        [{"type": "prior"}, {"type": "logistic"}, {"type": "random_forest", "params": {"n_estimators": 60}}],
        requirements={"constraints": {"latency_p99_ms": 1000, "max_model_size_mb": 0.2}},
    )
    sel = select_model(_data(spec, german), latency_calls=60)
    by = {r.name: r for r in sel.results}
    assert by["random_forest"].size_mb > 0.2 and not by["random_forest"].eligible
    assert any("over the size budget" in r for r in by["random_forest"].reasons)
    assert sel.winner.eligible and sel.winner.name in {"prior", "logistic"}
    assert "under 1000 ms p99 and 0.2 MB" in sel.why
    board = sel.to_json()
    assert board["winner"] == sel.winner.name and board["candidates"][0]["name"] == sel.winner.name
    for c in board["candidates"]:
        assert c["latency_p99_ms"] > 0 and c["size_bytes"] > 0 and c["train_s"] >= 0


def test_a_latency_budget_no_python_call_can_meet_excludes_the_candidate(german: pa.Table) -> None:
    spec = _spec([{"type": "logistic"}], requirements={"constraints": {"latency_p99_ms": 0.0001}})  # 100 ns
    with pytest.raises(ModelError, match=r"logistic: .*x over the latency budget \(CPU p99 .* ms ± .* > 0.0001 ms \+ 20% tolerance\)"):
        select_model(_data(spec, german), latency_calls=20)


def test_no_eligible_candidate_names_every_reason(german: pa.Table) -> None:
    spec = _spec([{"type": "logistic"}, {"type": "decision_tree"}],
                 requirements={"constraints": {"max_model_size_mb": 0.0001}})
    with pytest.raises(ModelError, match=r"no candidate meets the requirements(.|\n)*logistic: .*size budget(.|\n)*decision_tree"):
        select_model(_data(spec, german), latency_calls=20)


def test_bad_candidates_are_reported_together_before_training() -> None:
    spec = _spec([{"type": "lightgbm", "params": {"num_leafs": 8}}, {"type": "linear"}, {"type": "nope"}])
    with pytest.raises(SpecError) as err:
        from loopml.training.selection import validate_candidates

        validate_candidates(spec)
    text = str(err.value)
    assert "training.candidates[0] (lightgbm).params.num_leafs" in text
    assert "training.candidates[1] (linear).type: `linear` does not handle task `binary`" in text
    assert "training.candidates[2] (nope).type: model type `nope` is not registered" in text


@pytest.mark.parametrize("executor", ["inprocess", "process", "ray"])
def test_tuning_runs_trials_through_the_executor_and_records_each(german: pa.Table, executor: str) -> None:
    spec = _spec([{"type": "prior"}, {"type": "lightgbm", "tune": True}], training={"executor": executor})
    rows: list[tuple[str, dict[str, Any]]] = []
    sel = select_model(_data(spec, german), record=lambda kind, row: rows.append((kind, row)), latency_calls=20)
    trials = [r for k, r in rows if k == "trial"]
    finals = [r for k, r in rows if k == "final"]
    assert len(trials) == 4 and {r["number"] for r in trials} == {0, 1, 2, 3}
    assert trials[0]["params"] == {}  # trial 0 is the configuration given in the spec
    assert all("learning_rate" in r["params"] for r in trials[1:])
    assert all(r["state"] in {"complete", "pruned"} and r["duration_s"] > 0 for r in trials)
    assert {r["candidate"] for r in finals} == {"prior", "lightgbm"}
    lgb = next(r for r in sel.results if r.name == "lightgbm")
    assert lgb.n_trials == 4 and lgb.tuned


def test_tuning_with_fixed_seeds_is_reproducible(german: pa.Table) -> None:
    spec = _spec([{"type": "logistic", "tune": True}])
    data = _data(spec, german)
    a = select_model(data, latency_calls=10).results[0]
    b = select_model(data, latency_calls=10).results[0]
    assert a.params == b.params and a.value == b.value


def test_simpler_model_wins_within_noise_and_the_best_wins_otherwise(german: pa.Table) -> None:
    cands = [{"type": "logistic"}, {"type": "random_forest", "params": {"n_estimators": 40}}]
    data = _data(_spec(cands), german)
    sel = select_model(data, latency_calls=10)
    plain = select_model(_data(_spec(cands, training={"prefer_simpler": False}), german), latency_calls=10)
    best = max(plain.results, key=lambda r: r.value or 0)
    assert plain.winner is best
    if sel.winner is not max(sel.results, key=lambda r: r.value or 0):
        assert sel.winner.name == "logistic" and "not significantly below the best" in sel.why


def test_why_line_names_what_the_better_candidate_broke() -> None:
    auc = METRICS["roc_auc"]
    lgb = CandidateResult("lightgbm", "lightgbm", {}, False, "roc_auc", value=0.781, latency=Latency(0.1, 2.0, 0.2, 9),
                          size_bytes=2_000_000, eligible=True)
    mlp = CandidateResult("mlp", "mlp", {}, False, "roc_auc", value=0.783, latency=Latency(0.3, 4.0, 0.4, 9),
                          size_bytes=40_000_000, eligible=False,
                          reasons=["4.0x over the size budget (40.00 MB > 10 MB)"])
    line = explain(auc, [lgb, mlp], lgb, {"latency_p99_ms": 10, "max_model_size_mb": 10})
    assert line == ("lightgbm: best roc_auc (0.7810) among candidates under 10 ms p99 and 10 MB; "
                    "mlp was 0.002 better but 4.0x over the size budget (40.00 MB > 10 MB)")


def test_leaderboard_renders_as_a_table_and_a_self_contained_page(german: pa.Table) -> None:
    spec = _spec([{"type": "prior"}, {"type": "logistic"}])
    board = select_model(_data(spec, german), latency_calls=10).to_json()
    page = leaderboard_html(board)
    from tests.webui.conftest import assert_self_contained

    assert board["why"] in page and 'id="leaderboard-chart"' in page
    assert_self_contained(page)
    t = leaderboard_table(board)
    assert t.row_count == 2 and board["why"] == t.caption


def test_median_pruning_rule() -> None:
    rule = PruneRule(curves={30: [0.70, 0.72, 0.74]}, n_startup_trials=3, n_warmup_steps=20)
    assert rule.should_prune(30, 0.71) and not rule.should_prune(30, 0.73)
    assert not rule.should_prune(10, 0.1)  # warm-up
    assert not PruneRule(curves={30: [0.7]}).should_prune(30, 0.1)  # too few completed trials
    # the time cap is a separate signal (the trial is reported as cut by the cap, not pruned by the rule)
    assert PruneRule(deadline=0.0).over_time() and not PruneRule(deadline=0.0).should_prune(1, 1.0)
    assert not PruneRule().over_time()


def test_imbalance_and_sampling_reach_training(german: pa.Table) -> None:
    spec = _spec([{"type": "lightgbm"}], training={"imbalance": {"method": "focal_loss", "focal_gamma": 1.0},
                                                   "sampling": {"type": "negative_downsample", "negative_rate": 0.5}})
    data = _data(spec, german)
    assert data.focal_gamma == 1.0 and data.negative_rate == 0.5
    y_all = (np.asarray(german.column("class").to_numpy(zero_copy_only=False)) == "bad").mean()
    assert data.y_train.mean() > y_all + 0.1
    sel = select_model(data, latency_calls=10)
    b = sel.winner.bundle
    assert b is not None and b.model.objective_ == "focal" and b.manifest["calibration"] == {"negative_rate": 0.5}
    assert abs(b.predict_table(data.valid_table).mean() - data.y_valid.mean()) < 0.12


def test_ranking_selection_with_id_embeddings_on_movielens(datasets: Any) -> None:
    from .conftest import read_movielens

    t = read_movielens(datasets)
    t = t.filter(pa.compute.less_equal(t.column("user_id"), 80))
    spec = Spec.model_validate({
        "task": {"type": "ranking", "target": "rating", "group_key": "user_id", "item_key": "item_id"},
        "features": {"inputs": [
            {"column": "item_id", "kind": "categorical", "transforms": [{"type": "embedding_ids", "dim": 5}]},
            {"column": "timestamp", "kind": "numeric"},
        ]},
        "training": {"split": {"type": "random"}, "candidates": [
            {"type": "most_popular"}, {"type": "mlp", "params": {"epochs": 3, "hidden": [16]}}]},
        "evaluation": {"bootstrap_resamples": 20},
    })
    data = _data(spec, t)
    assert data.embedding_dims == {0: 5}
    sel = select_model(data, latency_calls=10)
    assert sel.metric.name == "ndcg@10" and all(0 < (r.value or 0) <= 1 for r in sel.results)
    mlp = next(r for r in sel.results if r.name == "mlp")
    assert mlp.bundle is not None and mlp.bundle.model.weights_["emb.0.weight"].shape[1] == 5


def test_one_standard_error_rule_keeps_the_given_configuration() -> None:
    from loopml.training.trials import TrialResult
    from loopml.training.tuning import TrialRecord, _beats_by_one_se

    auc = METRICS["roc_auc"]

    def rec(n: int, folds: list[float]) -> TrialRecord:
        value = float(np.mean(folds)) if folds else 0.5
        return TrialRecord(n, {}, TrialResult(n, "complete", value, [], 0.1, fold_values=folds))

    first = rec(0, [0.70, 0.80, 0.75, 0.72, 0.78])
    assert not _beats_by_one_se(auc, rec(7, [0.72, 0.78, 0.76, 0.71, 0.80]), first)  # noise
    assert _beats_by_one_se(auc, rec(8, [0.73, 0.83, 0.78, 0.75, 0.81]), first)  # +0.03 on every fold
    assert _beats_by_one_se(auc, rec(9, [0.75]), rec(0, []))  # no fold scores: the best wins


def test_trial_executors_are_chosen_by_name() -> None:
    import importlib.util

    from loopml.training.trials import TRIAL_EXECUTORS, make_trial_executor

    assert set(TRIAL_EXECUTORS) == {"inprocess", "process", "ray"}
    with pytest.raises(SpecError, match="unknown executor `dask`"):
        make_trial_executor("dask")
    if importlib.util.find_spec("ray") is None:
        with pytest.raises(SpecError, match="Ray is not installed"):
            make_trial_executor("ray")
