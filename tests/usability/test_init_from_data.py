"""`loopml init --from FILE --target COL`: from a CSV no example uses to a served model, without editing the spec."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from loopml.monitoring.ops import metrics_url
from loopml.spec.scaffold import scaffold_from_data
from loopml.workspace import Workspace
from tests.usability.helpers import breast_cancer_csv, post_json, served, wine_csv


def test_csv_to_served_model_without_editing_the_spec(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = breast_cancer_csv(tmp_path)
    proj = tmp_path / "cancer"
    made = cli("init", str(proj), "--from", str(data), "--target", "target", check=True)
    assert "binary on `target`, 30 inputs" in made.stdout
    spec_text = (proj / "loopml.yaml").read_text()
    assert "type: binary" in spec_text and "baseline_gate: true" in spec_text and "{type: prior}" in spec_text
    assert "online_metric: null" in spec_text and "CTR" not in spec_text  # a placeholder, not the template's CTR
    assert '"mean radius"' in spec_text  # names with spaces are quoted

    checked = cli("spec", "check", str(proj), check=True)
    assert "task binary on `target`" in checked.stdout and "fits its data" in checked.stdout

    ran = cli("run", "-p", str(proj), "--json", check=True)
    result = json.loads(ran.stdout)
    assert result["approved"] is True and result["state"] == "production" and result["version"] == "v1"
    assert result["primary_metric"]["name"] == "roc_auc" and result["primary_metric"]["value"] > 0.9
    assert result["baseline"]["name"] == "prior"
    assert (proj / "loopml.yaml").read_text() == spec_text  # nothing edited it

    import pyarrow.csv as pacsv

    table = pacsv.read_csv(data)
    row = {k: v for k, v in table.drop_columns(["target"]).slice(0, 1).to_pylist()[0].items()}
    with served(proj) as (host, port):
        status, body = post_json(host, port, "/v1/predict", row)
        assert status == 200, body
        assert body["model_version"] == "v1" and 0.0 <= body["score"] <= 1.0
        # `loopml monitor` finds the port serve picked (port 0) in the workspace
        assert metrics_url(Workspace.open(proj)) == f"http://{host}:{port}/metrics"
        ops = cli("monitor", "ops", "-p", str(proj), check=True)
        assert "latency_p99_ms" in ops.stdout

    out = tmp_path / "scored.parquet"
    cli("predict", "-p", str(proj), "--batch", str(data), "-o", str(out), "-q", check=True)
    scored = pq.read_table(out)
    assert scored.num_rows == table.num_rows
    assert "score" in scored.column_names


def test_inference_of_task_ids_timestamps_and_kinds(tmp_path: Path) -> None:
    wine = scaffold_from_data(wine_csv(tmp_path), "target", project_dir=tmp_path / "p")
    assert wine.task == "multiclass" and len(wine.inputs) == 13
    assert "{type: prior}" in wine.text and "{type: logistic}" in wine.text
    reg = scaffold_from_data(wine_csv(tmp_path), "alcohol", project_dir=tmp_path / "p")
    assert reg.task == "regression" and "{type: mean}" in reg.text and "rmse <= production + 0.005" in reg.text

    lines = ["order_id,customer,ts,city,note,amount,status"]
    for i in range(300):
        note = f"customer wrote a long free text message number {i} about delivery {i * 7}" if i % 2 else ""
        lines.append(f"O{i:05d},C{i % 40},2024-01-{1 + i % 28:02d} 10:00:00,{'xyz'[i % 3]},{note},{i * 1.5},"
                     f"{'paid' if i % 5 else 'refunded'}")
    (tmp_path / "orders.csv").write_text("\n".join(lines) + "\n")
    s = scaffold_from_data(tmp_path / "orders.csv", "status", project_dir=tmp_path / "p")
    assert s.task == "binary" and s.positive_label == "refunded"  # the rarer value is positive
    assert s.ids == ["order_id"] and s.timestamps == ["ts"]
    kinds = {f.column: f.kind for f in s.inputs}
    assert kinds == {"customer": "categorical", "city": "categorical", "note": "text", "amount": "numeric"}
    assert "order_id: an identifier" in s.text and "ts: a date/time" in s.text
    assert 'split: {type: time, time_column: "ts"}' in s.text

    rank = scaffold_from_data(tmp_path / "orders.csv", "amount", project_dir=tmp_path / "p", group_key="customer")
    assert rank.task == "ranking" and "lambdarank" in rank.text and 'group_key: "customer"' in rank.text


def test_init_list_and_clear_errors(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    listed = cli("init", "--list", check=True)
    assert "minimal" in listed.stdout and "ad_clicks" in listed.stdout
    data = breast_cancer_csv(tmp_path)
    wrong = cli("init", str(tmp_path / "p"), "--from", str(data), "--target", "mean radios")
    assert wrong.returncode != 0 and "did you mean `mean radius`" in wrong.stderr
    assert not (tmp_path / "p" / "loopml.yaml").exists()
    no_target = cli("init", str(tmp_path / "p"), "--from", str(data))
    assert no_target.returncode != 0 and "--target" in no_target.stderr
