"""``loopml demo``: the reference system (ad click prediction) end to end on simulated traffic.

>>> from pathlib import Path
>>> from rich.console import Console
>>> from loopml.demo import DemoSettings, run_demo
>>> result = run_demo(DemoSettings(project=Path("demo"), serve=False), Console())  # doctest: +SKIP
>>> result.decision["status"]  # doctest: +SKIP
'approved'
"""

from loopml.demo.replay import ReplayStats, labels_within_window, replay_day, request_rows
from loopml.demo.run import DemoResult, run_demo, serve_forever
from loopml.demo.service import Client, ServiceProcess
from loopml.demo.settings import DemoSettings

__all__ = [
    "Client",
    "DemoResult",
    "DemoSettings",
    "ReplayStats",
    "ServiceProcess",
    "labels_within_window",
    "replay_day",
    "request_rows",
    "run_demo",
    "serve_forever",
]
