"""Imports the modules that register loopml's built-in stages.

Each stage lives in its own domain package; adding a stage means adding one import here.
"""

from __future__ import annotations

import importlib

BUILTIN_STAGE_MODULES: list[str] = [
    "loopml.data.stages",
    "loopml.validation.stages",
    "loopml.features.stages",
    "loopml.training.stages",
    "loopml.registry.stages",
    "loopml.evaluation.stages",
]

for _mod in BUILTIN_STAGE_MODULES:
    importlib.import_module(_mod)
