"""``loopml demo``: the reference system (ad click prediction) end to end on simulated traffic.

With ``DemoSettings(data=PATH)`` (``loopml demo --data PATH``) the same spec runs on the real KDD
Cup 2012 click log instead (:func:`imported_traffic`; the import is :mod:`loopml.simulator.kdd`).

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
from loopml.demo.traffic import DemoTraffic, imported_traffic, simulated_traffic

__all__ = [
    "Client",
    "DemoResult",
    "DemoSettings",
    "DemoTraffic",
    "ReplayStats",
    "ServiceProcess",
    "imported_traffic",
    "labels_within_window",
    "replay_day",
    "request_rows",
    "run_demo",
    "serve_forever",
    "simulated_traffic",
]
