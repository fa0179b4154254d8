"""The model lifecycle as a state machine: which state may follow which.

::

    candidate ──► shadow ──► canary ──► production ──► archived
        │  └──────────┴────────┴──────────►┘  ▲            │
        └──────────────────────────────────────┼──► archived │
                                               └─────────────┘ (rollback / restore)

Every move goes through :func:`check_transition`; an undeclared move is refused with the
allowed targets named.
"""

from __future__ import annotations

from typing import Final, Literal

from loopml.errors import LoopMLError

State = Literal["candidate", "shadow", "canary", "production", "archived"]

STATES: Final[tuple[State, ...]] = ("candidate", "shadow", "canary", "production", "archived")

#: The declared transitions. ``archived → production`` exists for rollback and restore.
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "candidate": frozenset({"shadow", "canary", "production", "archived"}),
    "shadow": frozenset({"canary", "production", "archived"}),
    "canary": frozenset({"shadow", "production", "archived"}),
    "production": frozenset({"archived"}),
    "archived": frozenset({"production"}),
}

#: States that put live traffic (or a copy of it) on a model: entering them requires passed gates.
SERVING_STATES: Final[frozenset[str]] = frozenset({"shadow", "canary", "production"})


class IllegalTransition(LoopMLError):
    """A lifecycle move that the state machine does not declare."""

    status = 409


def check_state(state: str) -> State:
    """``state`` as a :data:`State`, or a clear error naming the allowed states."""
    if state not in STATES:
        raise IllegalTransition(f"unknown model state `{state}` (allowed: {', '.join(STATES)})")
    return state


def check_transition(version_id: str, from_state: str, to_state: str) -> None:
    """Raise :class:`IllegalTransition` unless ``from_state → to_state`` is declared.

    Examples
    --------
    >>> check_transition("v1", "candidate", "production")
    >>> check_transition("v1", "archived", "candidate")
    Traceback (most recent call last):
    ...
    loopml.registry.lifecycle.IllegalTransition: model version v1 cannot go from archived to candidate (allowed from archived: production)
    """
    check_state(to_state)
    allowed = TRANSITIONS[check_state(from_state)]
    if to_state not in allowed:
        raise IllegalTransition(
            f"model version {version_id} cannot go from {from_state} to {to_state} "
            f"(allowed from {from_state}: {', '.join(sorted(allowed)) or 'none'})"
        )
