"""The traffic simulator: a search-ads market with a known click model, calibrated on KDD Cup 2012.

It is how loopml tests models and rollouts before real traffic: every simulated impression has a
true click probability, so a model's quality can be compared with the best achievable, and drift
(new ads, a shifted user population, a seasonal change) can be switched on for any day. The
real KDD Cup 2012 click log imports into the same event-log shape (:mod:`loopml.simulator.kdd`).

>>> from loopml.simulator import SimulatorConfig, TrafficSimulator
>>> sim = TrafficSimulator(SimulatorConfig(impressions_per_day=1000))
>>> day = sim.day(0, drift="new_ads")
>>> sorted(day.impressions.column_names)[:3]
['ad_id', 'advertiser_id', 'depth']
"""

from loopml.simulator.calibration import KDD_MARGINALS, Marginals, compare, fit_zipf, measure_marginals
from loopml.simulator.config import ClickModelConfig, Popularity, SimulatorConfig
from loopml.simulator.drift import DRIFTS, DayConditions, Drift, drift_conditions, register_drift
from loopml.simulator.kdd import ImportResult, KDDLog, event_days, import_kdd, read_kdd_log
from loopml.simulator.logs import simulate, write_day
from loopml.simulator.market import ClickModel, Market
from loopml.simulator.traffic import CLICK_SCHEMA, IMPRESSION_SCHEMA, DayLog, TrafficSimulator, oracle_auc

__all__ = [
    "CLICK_SCHEMA",
    "DRIFTS",
    "IMPRESSION_SCHEMA",
    "KDD_MARGINALS",
    "ClickModel",
    "ClickModelConfig",
    "DayConditions",
    "DayLog",
    "Drift",
    "ImportResult",
    "KDDLog",
    "Marginals",
    "Market",
    "Popularity",
    "SimulatorConfig",
    "TrafficSimulator",
    "compare",
    "drift_conditions",
    "event_days",
    "fit_zipf",
    "import_kdd",
    "measure_marginals",
    "oracle_auc",
    "read_kdd_log",
    "register_drift",
    "simulate",
    "write_day",
]
