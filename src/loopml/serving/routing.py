"""Routing policies: which loaded model version answers a request.

A policy sees the loaded versions and the registry states once, when the service (re)loads,
and precomputes whatever it needs; per request the server calls :meth:`RoutingPolicy.route`,
which returns a :class:`Route` (the arm that answers, plus optional shadow arms scored off the
hot path). Policies register here by name with their own config and never touch the server's
request loop. Built in:

    production   every request to the version in production
    shadow       production answers; each version in state `shadow` scores a copy off the hot path
    canary       a share of requests (hash of the request id) to the version in state `canary`
    ab           sticky A/B: a unit key of the request (e.g. `user_id`) hashed with a salt picks
                 control (production) or treatment (the version in state `canary`)
    bandit       the version in state `canary` gets a share that follows its delayed-label rewards
                 (Thompson sampling or epsilon-greedy), recomputed off the hot path by
                 :mod:`loopml.serving.bandit`; the share in force is each request's logged propensity

Every route carries the experiment it belongs to and its propensity (the probability that a
request gets this arm), which the prediction log records with the arm.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from loopml.errors import NotFound
from loopml.serving.servable import Servable
from loopml.spec.deployment import CanaryGate


@dataclass(frozen=True)
class Route:
    """The answer of a policy for one request: the arm that answers and arms that only shadow it."""

    name: str
    model: Servable
    shadows: tuple[Servable, ...] = field(default_factory=tuple)
    experiment: str | None = None  #: the experiment this route belongs to (logged with the prediction)
    propensity: float | None = None  #: probability that a request gets this arm (logged)

class RoutingPolicy(Protocol):
    """Chooses the arm for a request. Required: ``name``, ``Config`` and ``route``."""

    name: ClassVar[str]

    def route(self, request_id: str, row: Any) -> Route:
        """The route of one request (called on the hot path: keep it to attribute reads)."""
        ...

class ProductionConfig(BaseModel):
    """The production policy has no options."""

    model_config = ConfigDict(extra="forbid")

class ProductionPolicy:
    """Every request goes to the version in production.

    Examples
    --------
    >>> # doctest: +SKIP
    >>> ProductionPolicy({"v3": servable}, {"v3": "production"}).route("r1", {}).model.version_id
    'v3'
    """

    name: ClassVar[str] = "production"
    Config: ClassVar[type[BaseModel]] = ProductionConfig

    def __init__(self, models: dict[str, Servable], states: dict[str, str], config: BaseModel | None = None) -> None:
        prod = [v for v, s in states.items() if s == "production" and v in models]
        if not prod:
            raise NotFound(
                "no model version is in production; promote one with `loopml models promote VERSION`",
            )
        self._route = Route("production", models[prod[-1]])

    def route(self, request_id: str, row: Any) -> Route:
        """Always the production route."""
        return self._route

def _production(models: dict[str, Servable], states: dict[str, str]) -> Servable:
    prod = [v for v, s in states.items() if s == "production" and v in models]
    if not prod:
        raise NotFound("no model version is in production; promote one with `loopml models promote VERSION`")
    return models[prod[-1]]


def _challenger(models: dict[str, Servable], states: dict[str, str], policy: str) -> Servable | None:
    found = [v for v, s in states.items() if s == "canary" and v in models]
    if len(found) > 1:
        raise NotFound(f"routing policy `{policy}` needs one version in state `canary`; found {', '.join(found)}",
                       hint="move the others back with `loopml models transition VERSION archived`")
    return models[found[0]] if found else None


def bucket(key: bytes, salt_crc: int) -> float:
    """A stable number in [0, 1) for ``key`` under a salt (CRC-32 continued from the salt's CRC).

    >>> bucket(b"user-1", zlib.crc32(b"exp1:")) == bucket(b"user-1", zlib.crc32(b"exp1:"))
    True
    """
    return zlib.crc32(key, salt_crc) / 4294967296.0


class ShadowConfig(BaseModel):
    """Options of the shadow policy."""

    model_config = ConfigDict(extra="forbid")
    experiment: str | None = Field(default=None, description="Experiment name logged with each prediction.")


class ShadowPolicy:
    """Production answers every request; every version in state `shadow` scores a copy after the response.

    The shadow scores are logged with route `shadow` and their model version (the server's
    ``_shadow``), so agreement, latency and errors of the candidate are queries over the log.
    """

    name: ClassVar[str] = "shadow"
    Config: ClassVar[type[BaseModel]] = ShadowConfig

    def __init__(self, models: dict[str, Servable], states: dict[str, str], config: BaseModel | None = None) -> None:
        cfg = config if isinstance(config, ShadowConfig) else ShadowConfig()
        shadows = tuple(models[v] for v, s in states.items() if s == "shadow" and v in models)
        exp = cfg.experiment or ("shadow-" + "-".join(m.version_id for m in shadows) if shadows else None)
        self._route = Route("production", _production(models, states), shadows, exp, 1.0)

    def route(self, request_id: str, row: Any) -> Route:
        """Always production, with the shadows attached."""
        return self._route


class SplitConfig(BaseModel):
    """Options of the canary and A/B policies."""

    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(default=0.05, ge=0, le=1, description="Share of traffic sent to the challenger.")
    experiment: str | None = Field(default=None, description="Experiment name logged with each prediction.")
    unit_key: str | None = Field(default=None, description="A/B: request field whose value assigns the arm.")
    salt: str = Field(default="", description="A/B: salt of the assignment hash (a new salt reshuffles units).")
    steps: list[float] = Field(
        default_factory=list,
        description="Canary: traffic shares in order (e.g. [0.01, 0.05, 0.25, 1.0]), each held hold_seconds; "
        "empty: `fraction` throughout.",
    )
    hold_seconds: float = Field(default=300.0, gt=0, description="Canary: how long each step is held at least.")
    gate: CanaryGate = Field(default_factory=CanaryGate, description="Canary: what the server's guard checks "
                             "before a step advances, and what rolls the canary back.")


@dataclass
class CanaryProgress:
    """Where a canary stands in this process: its step and since when (shared by the policies a reload rebuilds)."""

    step: int = 0
    since: float = field(default_factory=time.monotonic)  #: monotonic time the current step began
    started: float = field(default_factory=time.time)  #: wall time this process first routed to the canary
    step_started: float = field(default_factory=time.time)  #: wall time the current step began
    rolled_back: bool = False


#: (experiment, canary version) -> its progress in this process: a policy rebuilt by a reload keeps the step
_PROGRESS: dict[tuple[str, str], CanaryProgress] = {}


class CanaryPolicy:
    """A share of requests (by a hash of the request id) goes to the version in state `canary`.

    The share is ``fraction``, or with ``steps`` the current step's share. A step advances only through
    :meth:`advance`, which the server's canary guard (:mod:`loopml.serving.canary_guard`) calls off the
    request path once the step was held ``hold_seconds`` and the gate passed; on a breach the guard archives
    the canary and routes everything to production. Per request: one hash and one comparison.
    Without a canary version every request goes to production (outside any experiment).
    """

    name: ClassVar[str] = "canary"
    Config: ClassVar[type[BaseModel]] = SplitConfig
    arms: ClassVar[tuple[str, str]] = ("production", "canary")

    def __init__(self, models: dict[str, Servable], states: dict[str, str], config: BaseModel | None = None) -> None:
        cfg = config if isinstance(config, SplitConfig) else SplitConfig()
        prod = _production(models, states)
        cand = _challenger(models, states, self.name)
        self.config = cfg
        self.incumbent = prod.version_id
        self.challenger = cand.version_id if cand is not None else None
        self.fraction = cfg.fraction if cand is not None else 0.0
        exp = (cfg.experiment or f"{self.name}-{cand.version_id}") if cand is not None else None
        self.experiment = exp
        control, treatment = self.arms
        self._control = Route(control, prod, (), exp, 1.0 - self.fraction) if exp else Route("production", prod)
        self._treatment = Route(treatment, cand, (), exp, self.fraction) if cand is not None else self._control
        self._salt = zlib.crc32(f"{exp}:".encode())
        self._threshold = self.fraction
        self._steps: list[tuple[float, Route, Route]] = []
        self.step = 0
        self.progress: CanaryProgress | None = None
        if cand is not None and exp is not None:
            prog = _PROGRESS.get((exp, cand.version_id))
            if prog is None or prog.rolled_back:  # first served here, or put back into canary after a rollback
                prog = _PROGRESS[(exp, cand.version_id)] = CanaryProgress()
            self.progress = prog
        if cfg.steps and cand is not None and exp is not None:
            self._steps = [(f, Route(control, prod, (), exp, 1.0 - f), Route(treatment, cand, (), exp, f))
                           for f in cfg.steps]
            self._apply()

    @property
    def steps(self) -> list[float]:
        """The traffic shares of the steps (empty: ``fraction`` throughout)."""
        return [f for f, _, _ in self._steps]

    def _apply(self) -> None:
        i = min(self.progress.step if self.progress is not None else 0, len(self._steps) - 1)
        self.step = i
        self._threshold, self._control, self._treatment = self._steps[i]
        self.fraction = self._threshold

    def advance(self) -> bool:
        """Move to the next step (called by the canary guard once the gate passed); ``False`` at the last one."""
        if self.progress is None or self.step >= len(self._steps) - 1:
            return False
        self.progress.step = self.step + 1
        self.progress.since = time.monotonic()
        self.progress.step_started = time.time()
        self._apply()
        return True

    def route(self, request_id: str, row: Any) -> Route:
        """The canary route for the hashed share of request ids, else production."""
        if bucket(request_id.encode(), self._salt) < self._threshold:
            return self._treatment
        return self._control


class ABPolicy(CanaryPolicy):
    """Sticky A/B: the unit key's value (e.g. the user id) hashed with the salt picks the arm.

    A request without the unit key (or a many-row request whose first row lacks it) goes to
    production outside the experiment; a many-row request is assigned by its first row.
    """

    name: ClassVar[str] = "ab"
    arms: ClassVar[tuple[str, str]] = ("control", "treatment")
    #: ab has no valid default (the unit key names a request field): the contract suite uses these options
    example_options: ClassVar[dict[str, Any]] = {"unit_key": "user_id"}

    def __init__(self, models: dict[str, Servable], states: dict[str, str], config: BaseModel | None = None) -> None:
        cfg = config if isinstance(config, SplitConfig) else SplitConfig()
        if not cfg.unit_key:
            raise NotFound("routing policy `ab` needs a unit key", hint="set spec.deployment.routing.unit_key, "
                           "e.g. user_id: the request field that keeps a unit in one arm")
        super().__init__(models, states, cfg)
        self.unit_key = cfg.unit_key
        self._outside = Route("production", self._control.model)
        self._salt = zlib.crc32(f"{cfg.salt}:".encode())

    def route(self, request_id: str, row: Any) -> Route:
        """The arm of the request's unit."""
        if row.__class__ is dict:
            rows = row.get("rows")
            if rows.__class__ is list and rows and len(row) == 1:
                row = rows[0]
        elif row.__class__ is list and row:
            row = row[0]
        unit = row.get(self.unit_key) if row.__class__ is dict else None
        if unit is None:
            return self._outside
        if bucket(str(unit).encode(), self._salt) < self._threshold:
            return self._treatment
        return self._control


class BanditConfig(BaseModel):
    """Options of the bandit policy (see ``deployment.routing`` for each field's meaning)."""

    model_config = ConfigDict(extra="forbid")
    experiment: str | None = Field(default=None, description="Experiment name logged with each prediction.")
    algorithm: Literal["thompson", "epsilon_greedy"] = Field(default="thompson", description="How shares follow rewards.")
    epsilon: float = Field(default=0.1, gt=0, le=1, description="Exploration rate of epsilon_greedy.")
    min_share: float = Field(default=0.05, ge=0.001, le=0.5, description="Least share of each arm.")
    update_seconds: float = Field(default=10.0, gt=0, description="How often the shares are recomputed.")
    seed: int = Field(default=0, description="Seed of Thompson sampling's posterior draws.")


@dataclass
class BanditState:
    """A bandit's share and start in this process (kept across the reloads that rebuild the policy)."""

    share: float = 0.5
    started: float = field(default_factory=time.time)  #: wall time this process first routed to the challenger
    updates: int = 0


_BANDITS: dict[tuple[str, str], BanditState] = {}


class BanditPolicy:
    """Production and the version in state `canary` share the traffic by their rewards so far.

    Per request: one hash of the request id and one comparison with the challenger's share (the share
    starts at 0.5 and stays within ``[min_share, 1 - min_share]``). :meth:`set_share` is called off the
    request path by the bandit updater (:mod:`loopml.serving.bandit`) from the labelled predictions: for
    Thompson sampling the share is the posterior probability that the challenger has the higher reward
    (probability matching, so the logged propensity is exact), for epsilon-greedy 1 - epsilon/2 for the
    better mean. Without a canary version every request goes to production (outside any experiment).
    """

    name: ClassVar[str] = "bandit"
    Config: ClassVar[type[BaseModel]] = BanditConfig
    arms: ClassVar[tuple[str, str]] = ("production", "canary")

    def __init__(self, models: dict[str, Servable], states: dict[str, str], config: BaseModel | None = None) -> None:
        cfg = config if isinstance(config, BanditConfig) else BanditConfig()
        self.config = cfg
        self._prod = prod = _production(models, states)
        self._cand = cand = _challenger(models, states, "bandit")
        self.incumbent = prod.version_id
        self.challenger = cand.version_id if cand is not None else None
        self.experiment = (cfg.experiment or f"bandit-{cand.version_id}") if cand is not None else None
        self.state: BanditState | None = None
        self._salt = zlib.crc32(f"{self.experiment}:bandit".encode())
        self._control = self._treatment = Route("production", prod)
        self._threshold = 0.0
        self.fraction = 0.0
        if cand is not None and self.experiment is not None:
            self.state = _BANDITS.setdefault((self.experiment, cand.version_id), BanditState())
            self.set_share(self.state.share)

    def set_share(self, share: float) -> float:
        """Give the challenger ``share`` of the requests from now on (clipped to the floor); returns it."""
        if self._cand is None or self.state is None:
            return 0.0
        lo = self.config.min_share
        share = min(max(float(share), lo), 1.0 - lo)
        self.state.share = share
        self._control = Route("production", self._prod, (), self.experiment, 1.0 - share)
        self._treatment = Route("canary", self._cand, (), self.experiment, share)
        self._threshold = self.fraction = share
        return share

    def route(self, request_id: str, row: Any) -> Route:
        """The challenger for the hashed share of request ids, else production."""
        if bucket(request_id.encode(), self._salt) < self._threshold:
            return self._treatment
        return self._control


ROUTING_POLICIES: dict[str, type[Any]] = {
    "production": ProductionPolicy, "shadow": ShadowPolicy, "canary": CanaryPolicy, "ab": ABPolicy,
    "bandit": BanditPolicy,
}

def register_policy(cls: type[Any]) -> type[Any]:
    """Class decorator: make a routing policy available by its ``name``."""
    ROUTING_POLICIES[cls.name] = cls
    return cls

def make_policy(
    name: str, models: dict[str, Servable], states: dict[str, str], options: dict[str, Any] | None = None
) -> RoutingPolicy:
    """Instantiate the policy ``name`` over the loaded versions, validating its options."""
    cls = ROUTING_POLICIES.get(name)
    if cls is None:
        raise NotFound(
            f"routing policy `{name}` is not available (available: {', '.join(sorted(ROUTING_POLICIES))})",
            hint="spec.deployment.routing.type selects it",
        )
    config = cls.Config(**(options or {}))
    policy: RoutingPolicy = cls(models, states, config)
    return policy

__all__ = [
    "ROUTING_POLICIES", "ABPolicy", "BanditConfig", "BanditPolicy", "BanditState", "CanaryPolicy", "CanaryProgress", "ProductionPolicy", "Route", "RoutingPolicy", "ShadowPolicy",
    "bucket", "make_policy", "register_policy",
]

