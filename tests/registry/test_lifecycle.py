"""The lifecycle state machine: exactly the declared transitions are allowed."""

from __future__ import annotations

import itertools

import pytest

from loopml.registry import STATES, TRANSITIONS, IllegalTransition, check_transition


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(STATES, STATES)))
def test_only_declared_transitions_pass(src: str, dst: str) -> None:
    if dst in TRANSITIONS[src]:
        check_transition("v1", src, dst)
    else:
        with pytest.raises(IllegalTransition) as exc:
            check_transition("v1", src, dst)
        assert f"from {src} to {dst}" in str(exc.value)
        assert exc.value.status == 409


def test_unknown_state_names_the_allowed_ones() -> None:
    with pytest.raises(IllegalTransition, match=r"unknown model state `live`.*candidate, shadow, canary"):
        check_transition("v1", "candidate", "live")


def test_every_state_is_reachable_from_candidate() -> None:
    seen, frontier = {"candidate"}, ["candidate"]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(STATES)
