"""Model development: dataset construction, the model zoo, tuning and requirements-driven selection.

Public surface: the model registry (:mod:`loopml.training.models`), bundles
(:mod:`loopml.training.bundle`), splits and sampling, and the ``train`` stage.
"""
