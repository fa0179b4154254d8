"""The curated public surface of loopml.evaluation stays honest, and the docstring examples run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import loopml.evaluation as evaluation

MODULES = sorted(m.name for m in pkgutil.iter_modules(evaluation.__path__))


def test_all_names_exist_and_are_documented() -> None:
    assert sorted(evaluation.__all__) == sorted(set(evaluation.__all__))
    for name in evaluation.__all__:
        obj = getattr(evaluation, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
    for name in ("evaluate_predictions", "check_gates", "EvaluationResult", "GateVerdict"):  # the contract
        assert name in evaluation.__all__


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    mod = importlib.import_module(f"loopml.evaluation.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
