"""The model registry: versions with lineage and evaluation verdict, on a lifecycle state machine.

Public surface::

    Registry(ws).register(bundle_digest, verdict=..., lineage=...) -> ModelVersion
    Registry(ws).transition(version_id, to_state, actor=..., reason=..., force=False)
    Registry(ws).production() / .get(id) / .list() / .history() / .serving_at(time)
    record_evaluation(reg, version_id, report) / evaluations(reg, version_id): verdicts follow evaluations

States: candidate → shadow → canary → production → archived (see :mod:`loopml.registry.lifecycle`).
"""

from loopml.registry.evidence import (
    EvaluationRecord,
    check_promotion,
    evaluations,
    latest_evaluation,
    record_evaluation,
)
from loopml.registry.lifecycle import STATES, TRANSITIONS, IllegalTransition, State, check_transition
from loopml.registry.registry import ModelVersion, Registry, ServingPeriod, Transition, default_actor

__all__ = [
    "STATES",
    "TRANSITIONS",
    "EvaluationRecord",
    "IllegalTransition",
    "ModelVersion",
    "Registry",
    "ServingPeriod",
    "State",
    "Transition",
    "check_promotion",
    "check_transition",
    "default_actor",
    "evaluations",
    "latest_evaluation",
    "record_evaluation",
]
