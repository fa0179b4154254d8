"""The examples in the monitoring docstrings run and give what they say; the public surface is real."""

from __future__ import annotations

import doctest
import importlib

import pytest

import loopml.monitoring

MODULES = ["drift", "stats", "quality", "ops", "windows"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    mod = importlib.import_module(f"loopml.monitoring.{name}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", loopml.monitoring.__all__)
def test_public_names_resolve(name: str) -> None:
    assert getattr(loopml.monitoring, name) is not None
    with pytest.raises(AttributeError):
        loopml.monitoring.no_such_name  # noqa: B018
