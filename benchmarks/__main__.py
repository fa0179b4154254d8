"""Run benchmarks: ``python -m benchmarks`` (all) or ``python -m benchmarks serving drift``.

Each benchmark measures loopml and its peers side by side in the same run and writes
``benchmarks/results/<name>.md`` and ``.json`` (ratios and medians).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")] or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)} (available: {', '.join(available())})", file=sys.stderr)
        return 2
    rc = 0
    for name in names:
        print(f"=== benchmark {name} ===", flush=True)
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        rc |= int(mod.main([a for a in argv if a.startswith("-")]) or 0)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
