"""Routing policies: which loaded model version answers a request.

A policy sees the loaded versions and the registry states once, when the service (re)loads,
and precomputes whatever it needs; per request the server calls :meth:`RoutingPolicy.route`,
which returns a :class:`Route` (the arm that answers, plus optional shadow arms scored off the
hot path). New policies (shadow, canary, A/B, bandit) register here by name with their own
config and never touch the server's request loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from loopml.errors import NotFound
from loopml.serving.servable import Servable


@dataclass(frozen=True)
class Route:
    """The answer of a policy for one request: the arm that answers and arms that only shadow it."""

    name: str
    model: Servable
    shadows: tuple[Servable, ...] = field(default_factory=tuple)

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

ROUTING_POLICIES: dict[str, type[Any]] = {"production": ProductionPolicy}

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

__all__ = ["ROUTING_POLICIES", "ProductionPolicy", "Route", "RoutingPolicy", "make_policy", "register_policy"]

