"""loopml: the whole production ML loop, driven by one spec.

The public surface is small on purpose; stages live in their own packages
(``loopml.data``, ``loopml.features``, ``loopml.training``, ...).
"""

from __future__ import annotations

__version__ = "0.1.0"

from loopml.errors import LoopMLError
from loopml.spec import Spec, load_spec

__all__ = ["LoopMLError", "Spec", "__version__", "load_spec"]
