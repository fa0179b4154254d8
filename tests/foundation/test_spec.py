"""The spec: round trip, every class of invalid spec with its message and line, schema and render."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopml.errors import SpecError
from loopml.spec import Spec, load_spec, parse_spec_text, render_spec, spec_json_schema
from loopml.spec.loader import valid_keys_at
from loopml.spec.root import SPEC_VERSION

FULL = """\
spec_version: 1
project: {name: clicks}
requirements:
  objective: more revenue
  constraints: {latency_p99_ms: 5, max_model_size_mb: 20, deployment_target: on-device}
  privacy:
    drop: [email]
    hash: [user_id]
    coarsen: [{column: ts, method: truncate_time, unit: hour}]
task: {type: binary, target: click, entity_keys: [user_id], timestamp: ts, online_metric: CTR}
data:
  sources:
    impressions: {type: csv, path: "logs/*.csv", delimiter: "\\t"}
    users: {type: sql, url: "sqlite:///users.db", query: "select * from users"}
  labels: {type: threshold, column: rating, value: 4}
features:
  inputs:
    - column: age
      transforms: [{type: impute, strategy: median}, {type: scale, method: zscore}]
    - {column: ad_id, kind: categorical, transforms: [{type: hash, n_buckets: 64}]}
training:
  split: {type: time, time_column: ts}
  candidates: [{type: prior}, {type: lightgbm, params: {num_leaves: 15}, tune: true}]
evaluation:
  gates: ["roc_auc >= 0.7"]
deployment: {port: 9000}
monitoring:
  alerts: [{name: drift, metric: drift.share, threshold: 0.3, retrain: true}]
"""


def test_round_trip_full_spec() -> None:
    spec = parse_spec_text(FULL)
    again = parse_spec_text(render_spec(spec))
    assert again == spec
    assert spec.data.sources["impressions"].type == "csv"
    assert spec.features.inputs[0].transforms[1].type == "scale"
    assert spec.requirements.constraints.deployment_target == "on-device"


def test_round_trip_defaults() -> None:
    spec = parse_spec_text("")
    assert spec == Spec()
    assert parse_spec_text(render_spec(spec)) == spec
    assert spec.spec_version == SPEC_VERSION


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec_text(text, "p/loopml.yaml")
    return info.value.problems


def test_unknown_top_level_key_suggests_closest() -> None:
    (p,) = _problems("task: {type: binary}\ntrainng:\n  seed: 1\n")
    assert "unknown key `trainng` at line 2" in p
    assert "did you mean `training`?" in p
    assert p.startswith("p/loopml.yaml:2:")


def test_unknown_nested_key_inside_plugin_suggests_closest() -> None:
    (p,) = _problems("data:\n  sources:\n    a:\n      type: csv\n      path: x.csv\n      delimter: ';'\n")
    assert "unknown key `delimter` at line 6" in p
    assert "did you mean `delimiter`?" in p
    assert "data.sources.a" in p


def test_wrong_enum_value_lists_allowed() -> None:
    (p,) = _problems("task:\n  type: binery\n")
    assert "p/loopml.yaml:2" in p
    assert "task.type" in p and "'binery'" in p
    assert "'binary'" in p and "'regression'" in p


def test_out_of_range_number() -> None:
    (p,) = _problems("training:\n  split:\n    valid_fraction: 2\n")
    assert "p/loopml.yaml:3" in p and "training.split.valid_fraction" in p and "less than 1" in p


def test_wrong_type() -> None:
    (p,) = _problems("deployment:\n  port: eighty\n")
    assert "deployment.port" in p and "'eighty'" in p and "integer" in p


def test_missing_required_field_of_a_plugin() -> None:
    (p,) = _problems("data:\n  sources:\n    a: {type: csv}\n")
    assert "data.sources.a.path" in p and "nothing" in p and "required" in p.lower()


def test_unknown_plugin_type_lists_registered_names() -> None:
    (p,) = _problems("data:\n  sources:\n    a: {type: excel, path: x.xlsx}\n")
    assert "'excel'" in p and "csv" in p and "parquet" in p


def test_every_problem_reported_at_once_in_line_order() -> None:
    probs = _problems("task:\n  type: nope\ntrainng: {}\ndeployment:\n  port: -1\n")
    assert len(probs) == 3
    lines = [int(p.split(":")[1]) for p in probs]
    assert lines == sorted(lines)


def test_invalid_yaml_names_line_and_column() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec_text("task:\n  type: [binary\n", "bad.yaml")
    assert "bad.yaml:" in str(info.value) and "not valid YAML" in str(info.value)


def test_top_level_must_be_mapping() -> None:
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_spec_text("- a\n- b\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path)


def test_valid_keys_walks_unions_and_dicts() -> None:
    assert "delimiter" in valid_keys_at(("data", "sources", "x", "csv"))
    assert "window_seconds" in valid_keys_at(("data", "labels", "event_within_window"))
    assert "n_buckets" in valid_keys_at(("features", "inputs", 0, "transforms", 0, "hash"))


def _descriptions_missing(schema: dict) -> list[str]:
    defs = schema.get("$defs", {})

    def described(ps: dict) -> bool:
        # pydantic leaves out a field description equal to the referenced model's docstring
        ref = ps.get("$ref", "").rsplit("/", 1)[-1]
        return "description" in ps or bool(ref and defs.get(ref, {}).get("description"))

    missing = []
    for name, d in defs.items():
        for prop, ps in d.get("properties", {}).items():
            if not described(ps):
                missing.append(f"{name}.{prop}")
    for prop, ps in schema.get("properties", {}).items():
        if not described(ps):
            missing.append(f"Spec.{prop}")
    return missing


def test_schema_every_field_described_and_extra_forbidden() -> None:
    schema = spec_json_schema()
    json.dumps(schema)
    assert _descriptions_missing(schema) == []
    for name, d in schema["$defs"].items():
        if d.get("type") == "object" and "properties" in d:
            assert d.get("additionalProperties") is False, name
    assert set(schema["properties"]) >= {
        "requirements", "task", "data", "features", "training", "evaluation", "deployment", "monitoring",
    }
