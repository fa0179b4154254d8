"""The docstring examples of the simulator, the demo and the design document run as tests."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import loopml.demo
import loopml.reporting
import loopml.simulator

PACKAGES = (loopml.simulator, loopml.reporting, loopml.demo)
MODULES = [
    *(p.__name__ for p in PACKAGES),
    *sorted(m.name for pkg in PACKAGES for m in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + ".")),
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.__name__)
def test_public_surface_is_honest(pkg):
    """Every name in ``__all__`` exists, and every public class or function exported has a docstring."""
    for name in pkg.__all__:
        obj = getattr(pkg, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"{pkg.__name__}.{name} has no docstring"
