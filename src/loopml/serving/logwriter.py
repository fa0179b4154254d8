"""``python -m loopml.serving.logwriter DIR --kind predictions``: the log writer process.

The service starts one per log folder (see :class:`loopml.serving.journal.Journal`); it can
also be run by hand to turn journals left by a stopped service into segments.
"""

from __future__ import annotations

import sys

from loopml.serving.journal import main

if __name__ == "__main__":
    sys.exit(main())
