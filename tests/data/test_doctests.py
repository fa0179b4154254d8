"""The runnable examples in the data and validation modules' docstrings stay correct."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "loopml.data.sources",
    "loopml.data.privacy",
    "loopml.features.offline",
    "loopml.validation.columnar",
    "loopml.validation.profile",
    "loopml.validation.schema",
    "loopml.validation.checks",
    "loopml.validation.validator",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
