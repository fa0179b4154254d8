"""The model registry: versions with lineage and evaluation verdict, on a lifecycle state machine.

Public surface::

    Registry(ws).register(bundle_digest, verdict=..., lineage=...) -> ModelVersion
    Registry(ws).transition(version_id, to_state, actor=..., reason=..., force=False)
    Registry(ws).production() / .get(id) / .list() / .history() / .serving_at(time)

States: candidate → shadow → canary → production → archived (see :mod:`loopml.registry.lifecycle`).
"""

from loopml.registry.lifecycle import STATES, TRANSITIONS, IllegalTransition, State, check_transition
from loopml.registry.registry import ModelVersion, Registry, ServingPeriod, Transition, default_actor

__all__ = [
    "STATES",
    "TRANSITIONS",
    "IllegalTransition",
    "ModelVersion",
    "Registry",
    "ServingPeriod",
    "State",
    "Transition",
    "check_transition",
    "default_actor",
]
