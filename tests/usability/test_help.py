"""Help pages: an Examples section on every command, and one spelling for the project and output options."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer.main

from loopml.cli.main import app
from tests.conftest import run_cli


def _commands(cmd: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
    subs = getattr(cmd, "commands", None)
    if subs:
        if cmd.callback is not None and path:
            yield " ".join(path), cmd
        for name, sub in subs.items():
            yield from _commands(sub, [*path, name])
    else:
        yield " ".join(path), cmd


def test_every_command_has_examples_and_the_option_convention() -> None:
    seen = 0
    for name, cmd in _commands(typer.main.get_command(app), []):
        if cmd.callback is None:
            continue
        seen += 1
        assert "Examples:" in (cmd.help or ""), f"`loopml {name} --help` has no Examples section"
        assert "loopml " in (cmd.help or "").split("Examples:", 1)[1], f"`loopml {name}`: examples show no command"
        for p in cmd.params:
            opts = set(p.opts)
            if "--project" in opts:
                assert "-p" in opts, f"`loopml {name}`: --project without -p"
            if p.hidden or getattr(p, "is_flag", False):  # `train --html/--no-html` is a switch, not a path
                continue
            assert not opts & {"--output", "--html"}, f"`loopml {name}`: visible old spelling {opts}; use -o/--out"
            if "--out" in opts:
                assert "-o" in opts, f"`loopml {name}`: --out without -o"
    assert seen >= 43  # every command (43 when this test was last extended)


def test_help_pages_render_examples_and_old_spellings_still_work(tmp_path) -> None:  # type: ignore[no-untyped-def]
    shown = run_cli("predict", "--help", env={"COLUMNS": "120"}, check=True).stdout
    assert "Examples" in shown and "--out" in shown and "--output" not in shown  # the alias is hidden
    out = tmp_path / "schema.json"
    run_cli("spec", "schema", "-o", str(out), check=True)
    assert '"properties"' in out.read_text()
    (tmp_path / "loopml.yaml").write_text("task: {type: regression, target: y}\n")
    rendered = run_cli("spec", "render", "-p", str(tmp_path), check=True).stdout
    assert "type: regression" in rendered and "baseline_gate: true" in rendered
