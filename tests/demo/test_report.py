"""`loopml report` on projects whose stages have not run, have failed, or carry hostile text."""

from __future__ import annotations

from loopml.demo.project import template_text
from loopml.reporting import build_design


def _project(tmp_path, text: str):
    p = tmp_path / "proj"
    p.mkdir()
    (p / "loopml.yaml").write_text(text)
    return p


def test_report_before_any_run_says_plainly_what_is_not_measured(cli, tmp_path):
    proj = _project(tmp_path, template_text())
    proc = cli("report", "-p", str(proj))
    assert proc.returncode == 0, proc.stderr
    md = (proj / ".loopml" / "reports" / "design.md").read_text()
    for stage in ("ingest", "train", "evaluate", "register"):
        assert f"the `{stage}` stage has not run in this workspace" in md
    assert "no monitoring cycle has run yet" in md
    # the spec part is there all the same: requirements, framing, features, gates
    assert "p99 latency ≤ 25.0 ms" in md and "not measured yet" in md
    assert "| user_history | user_id | ts | user_ctr_7d = rate(label, 7 d)" in md
    assert "roc_auc >= 0.60" in md
    assert "not measured yet: 3. Data" in proc.stdout.replace("\n", " ")


def test_report_names_a_failed_stage(cli, tmp_path):
    proj = _project(tmp_path, template_text())  # no data/ folder: ingest fails
    run = cli("run", "-p", str(proj), "-q", env={"LOOPML_HASH_KEY": "k"})
    assert run.returncode != 0
    cli("report", "-p", str(proj), check=True)
    md = (proj / ".loopml" / "reports" / "design.md").read_text()
    assert "the `ingest` stage failed (" in md and "data/impressions" in md


def test_report_html_escapes_text_from_the_spec(tmp_path):
    from loopml.workspace import Workspace

    text = template_text().replace("name: ad-clicks", "name: '<script>alert(1)</script>'")
    ws = Workspace.open(_project(tmp_path, text))
    page = build_design(ws).to_html()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
