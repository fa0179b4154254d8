"""Features: transforms, the fitted ``FeaturePipeline`` and the feature store.

Public API::

    from loopml.features import FeaturePipeline, TRANSFORMS
    p = FeaturePipeline.from_spec(spec.features, task=spec.task).fit(train_table, y)
    X = p.transform_batch(table)          # float32 (n, d)
    x = p.transform_row({"age": 31, ...}) # float32 (d,), equal to the batch row
"""

from loopml.features.pipeline import Chain, FeaturePipeline
from loopml.features.transforms import TRANSFORMS, Transform, register_transform

__all__ = ["TRANSFORMS", "Chain", "FeaturePipeline", "Transform", "register_transform"]
