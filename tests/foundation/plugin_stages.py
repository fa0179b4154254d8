"""Three test stages loaded through ``LOOPML_PLUGINS`` (a real plugin, not a mock).

``alpha`` writes the project name; ``beta`` upper-cases alpha's output; ``gamma`` counts its
characters. ``LOOPML_TEST_SLEEP_IN=beta`` makes beta write half its output, then sleep (so a test
can kill the process mid-stage). Each stage appends its name to ``$LOOPML_TEST_TRACE`` when it runs.
"""

from __future__ import annotations

import os
import time
from typing import Any

from loopml.pipeline import BaseStage, StageContext, StageResult, register_stage
from loopml.spec import Spec


def _trace(name: str) -> None:
    path = os.environ.get("LOOPML_TEST_TRACE")
    if path:
        with open(path, "a") as f:
            f.write(name + "\n")


class _TestStage(BaseStage):
    @classmethod
    def enabled(cls, spec: Spec) -> bool:
        return os.environ.get("LOOPML_TEST_STAGES") == "1"


@register_stage
class Alpha(_TestStage):
    name = "alpha"
    order = 1

    def config(self, spec: Spec) -> Any:
        return {"name": spec.project.name}

    def run(self, ctx: StageContext) -> StageResult:
        _trace(self.name)
        d = ctx.put_bytes(ctx.spec.project.name.encode(), kind="text", name="alpha.txt")
        return StageResult({"text": d}, {"chars": len(ctx.spec.project.name)})


@register_stage
class Beta(_TestStage):
    name = "beta"
    order = 2
    requires = ("alpha",)

    def config(self, spec: Spec) -> Any:
        return {}

    def run(self, ctx: StageContext) -> StageResult:
        _trace(self.name)
        text = ctx.workspace.artifacts.get_bytes(ctx.input("alpha", "text")).decode()
        out = text.upper().encode() * 1000
        if os.environ.get("LOOPML_TEST_SLEEP_IN") == self.name:
            with ctx.workspace.artifacts.writer() as (f, _result):
                f.write(out[: len(out) // 2])
                f.flush()
                marker = os.environ.get("LOOPML_TEST_MARKER")
                if marker:
                    open(marker, "w").close()
                time.sleep(60)
                f.write(out[len(out) // 2 :])
        d = ctx.put_bytes(out, kind="text", name="beta.txt")
        return StageResult({"text": d}, {"bytes": len(out)})


@register_stage
class Gamma(_TestStage):
    name = "gamma"
    order = 3
    requires = ("beta",)

    def config(self, spec: Spec) -> Any:
        return {"target": spec.task.target}

    def run(self, ctx: StageContext) -> StageResult:
        _trace(self.name)
        data = ctx.workspace.artifacts.get_bytes(ctx.input("beta", "text"))
        d = ctx.put_bytes(str(len(data)).encode(), kind="count", name="gamma.txt")
        return StageResult({"count": d}, {"count": len(data)})
