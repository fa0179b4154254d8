"""Registered transforms (by spec ``type``); importing this package registers all of them."""

from loopml.features.transforms import categorical, image, numeric, temporal, text
from loopml.features.transforms.base import TRANSFORMS, Transform, register_transform

__all__ = ["TRANSFORMS", "Transform", "categorical", "image", "numeric", "register_transform", "temporal", "text"]
