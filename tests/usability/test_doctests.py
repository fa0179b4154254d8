"""The examples in the docstrings of the usability modules run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "loopml.mlflow_export",
    "loopml.serving.address",
    "loopml.spec.scaffold",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_python_api_doctests() -> None:
    """The runnable examples of `loopml.project` (a real run on the breast-cancer data)."""
    result = doctest.testmod(importlib.import_module("loopml.project"), optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0
