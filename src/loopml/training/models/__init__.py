"""The model zoo: one protocol, models registered by name, each with its own config.

>>> from loopml.training.models import MODELS, load_builtin_models
>>> load_builtin_models()
>>> "lightgbm" in MODELS and "mlp" in MODELS
True
"""

from __future__ import annotations

import importlib

from loopml.training.models.base import (
    MODELS,
    BaseModel,
    FitContext,
    Model,
    ModelConfig,
    make_model,
    model_class,
    register_model,
    validate_config,
)

BUILTIN_MODEL_MODULES = [
    "loopml.training.models.baselines",
    "loopml.training.models.linear",
    "loopml.training.models.trees",
    "loopml.training.models.gbm",
    "loopml.training.models.neural",
    "loopml.training.models.ensembles",
]


def load_builtin_models() -> None:
    """Import the modules that register the built-in models (torch is imported only when fitting)."""
    for mod in BUILTIN_MODEL_MODULES:
        importlib.import_module(mod)


load_builtin_models()

__all__ = [
    "BUILTIN_MODEL_MODULES",
    "MODELS",
    "BaseModel",
    "FitContext",
    "Model",
    "ModelConfig",
    "load_builtin_models",
    "make_model",
    "model_class",
    "register_model",
    "validate_config",
]
