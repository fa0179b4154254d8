"""The CLI: complete --help everywhere, init, spec check/schema/render, one clear error line."""

from __future__ import annotations

import json
from pathlib import Path

import typer.main

from loopml.cli.main import app, example_names
from loopml.spec import parse_spec_text


def _walk(cmd, path: tuple[str, ...] = ()):
    # typer vendors its own click: walk by duck typing, not isinstance
    yield path, cmd
    if getattr(cmd, "commands", None):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, (*path, name))


def test_help_is_complete_for_every_command_and_option() -> None:
    root = typer.main.get_command(app)
    problems = []
    n = 0
    for path, cmd in _walk(root):
        n += 1
        if path and not (cmd.help or cmd.short_help):
            problems.append(f"`loopml {' '.join(path)}` has no help text")
        for p in cmd.params:
            kind = getattr(p, "param_type_name", "")
            if kind == "option" and not p.help and p.name != "help":
                problems.append(f"option {p.opts} of `loopml {' '.join(path)}` has no help")
            if kind == "argument" and not getattr(p, "help", None):
                problems.append(f"argument {p.name} of `loopml {' '.join(path)}` has no help")
    assert n >= 6
    assert problems == []


def test_help_runs_for_each_command(cli) -> None:
    from typer.testing import CliRunner

    runner = CliRunner()
    root = typer.main.get_command(app)
    for path, _cmd in _walk(root):
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output
    assert "Usage" in cli("--help").stdout  # and once through the real entry point


def test_init_creates_commented_spec_that_checks(cli, tmp_path: Path) -> None:
    target = tmp_path / "p"
    res = cli("init", str(target))
    assert res.returncode == 0, res.stderr
    text = (target / "loopml.yaml").read_text()
    assert text.count("#") > 5  # commented
    parse_spec_text(text)
    assert cli("spec", "check", str(target)).returncode == 0
    again = cli("init", str(target))
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr


def test_init_every_shipped_example_is_valid(cli, tmp_path: Path) -> None:
    assert "minimal" in example_names()
    for name in example_names():
        res = cli("init", str(tmp_path / name), "--example", name)
        assert res.returncode == 0, res.stderr
        chk = cli("spec", "check", str(tmp_path / name))
        assert chk.returncode == 0, (name, chk.stderr)


def test_init_unknown_example(cli, tmp_path: Path) -> None:
    res = cli("init", str(tmp_path / "x"), "--example", "nope")
    assert res.returncode == 1 and "example `nope` does not exist" in res.stderr and "minimal" in res.stderr


def test_spec_check_reports_problems_with_lines_and_exit_code(cli, tmp_path: Path) -> None:
    (tmp_path / "loopml.yaml").write_text("task:\n  type: binary\ntrainng: {}\n")
    res = cli("spec", "check", str(tmp_path))
    assert res.returncode == 2
    assert "loopml.yaml:3" in res.stderr and "did you mean `training`?" in res.stderr
    assert "Traceback" not in res.stderr
    dbg = cli("--debug", "spec", "check", str(tmp_path))
    assert dbg.returncode != 0 and "Traceback" in dbg.stderr


def test_spec_schema_and_render(cli, tmp_path: Path) -> None:
    res = cli("spec", "schema")
    assert res.returncode == 0
    schema = json.loads(res.stdout)
    assert "training" in schema["properties"]
    (tmp_path / "loopml.yaml").write_text("task: {target: y}\n")
    out = cli("spec", "render", str(tmp_path))
    assert out.returncode == 0
    spec = parse_spec_text(out.stdout)
    assert spec.task.target == "y" and "latency_batch_size" in out.stdout


def test_version(cli) -> None:
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("loopml ")


def test_usage_errors_show_usage_not_internal_error(cli) -> None:
    res = cli("run", "--bogus")
    assert res.returncode == 2
    assert "No such option: --bogus" in res.stderr and "internal error" not in res.stderr
    missing = cli("lineage")
    assert missing.returncode == 2 and "Missing argument" in missing.stderr
