"""Pipeline: stages, the runner and executors."""

from loopml.pipeline.executors import (
    EXECUTORS,
    Executor,
    InProcessExecutor,
    ProcessExecutor,
    StageJob,
    make_executor,
)
from loopml.pipeline.runner import Runner, RunReport, StageOutcome, recover_interrupted
from loopml.pipeline.stage import (
    STAGES,
    BaseStage,
    Stage,
    StageContext,
    StageResult,
    load_plugins,
    pipeline_for,
    register_stage,
)

__all__ = [
    "EXECUTORS",
    "STAGES",
    "BaseStage",
    "Executor",
    "InProcessExecutor",
    "ProcessExecutor",
    "RunReport",
    "Runner",
    "Stage",
    "StageContext",
    "StageJob",
    "StageOutcome",
    "StageResult",
    "load_plugins",
    "make_executor",
    "pipeline_for",
    "recover_interrupted",
    "register_stage",
]
