"""A plugin stage that crashes, to test how failures are recorded."""

from __future__ import annotations

from typing import Any

from loopml.pipeline import StageContext, StageResult, register_stage
from loopml.spec import Spec
from tests.foundation.plugin_stages import _TestStage


@register_stage
class Boom(_TestStage):
    name = "boom"
    order = 4
    requires = ("gamma",)

    def config(self, spec: Spec) -> Any:
        return {}

    def run(self, ctx: StageContext) -> StageResult:
        return StageResult({"x": str(1 / 0)})
