"""The examples in the docstrings of serving and registry run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "loopml.registry.lifecycle",
    "loopml.registry.registry",
    "loopml.serving.auth",
    "loopml.serving.bandit",
    "loopml.serving.compiled",
    "loopml.serving.journal",
    "loopml.serving.logs",
    "loopml.serving.metrics",
    "loopml.serving.predictor",
    "loopml.serving.schema",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
