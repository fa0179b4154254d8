"""Drift on demand: what changes in the market on a drifted day.

Each drift kind is a small registered class that turns a strength (1.0 = the documented
default magnitude) into :class:`DayConditions`, which the traffic generator reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from loopml.errors import SpecError


@dataclass(frozen=True)
class DayConditions:
    """How one simulated day differs from the calibrated market (all neutral by default)."""

    kind: str = "none"
    volume_factor: float = 1.0
    new_ad_share: float = 0.0
    new_ads: int = 2_000
    new_ad_quality_shift: float = 0.0
    new_user_share: float = 0.0
    new_users: int = 50_000
    new_user_propensity_shift: float = 0.0
    anonymous_share_shift: float = 0.0
    mobile_shift: float = 0.0
    hour_shift: float = 0.0
    ctr_logit_shift: float = 0.0
    query_rotation: float = 0.0
    notes: list[str] = field(default_factory=list)


class Drift:
    """A named change of the market. Subclasses set ``name``, ``description`` and :meth:`conditions`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def conditions(self, strength: float) -> DayConditions:
        """The day conditions for this drift at ``strength`` (1.0 = default magnitude)."""
        raise NotImplementedError


DRIFTS: dict[str, type[Drift]] = {}


def register_drift(cls: type[Drift]) -> type[Drift]:
    """Class decorator: make a drift kind available by name."""
    DRIFTS[cls.name] = cls
    return cls


@register_drift
class NoDrift(Drift):
    """The calibrated market, unchanged."""

    name = "none"
    description = "no change: the calibrated market"

    def conditions(self, strength: float) -> DayConditions:
        return DayConditions()


@register_drift
class NewAds(Drift):
    """A campaign launch: a batch of never-seen ads takes a share of the traffic, and they click better."""

    name = "new_ads"
    description = "never-seen ads take 50% of impressions (x strength) and click better (+0.4 logit)"

    def conditions(self, strength: float) -> DayConditions:
        share = min(0.95, 0.5 * strength)
        return DayConditions(
            kind=self.name,
            new_ad_share=share,
            new_ad_quality_shift=0.4 * strength,
            notes=[f"{share:.0%} of impressions go to {DayConditions.new_ads:,} new ads (+{0.4 * strength:.2f} logit)"],
        )


@register_drift
class UserShift(Drift):
    """A shifted user population: a new cohort, more anonymous and mobile traffic, lower propensity."""

    name = "user_shift"
    description = "a new user cohort (60% of identified traffic, -0.6 logit), +16 points anonymous, +40 points mobile"

    def conditions(self, strength: float) -> DayConditions:
        return DayConditions(
            kind=self.name,
            new_user_share=min(0.95, 0.6 * strength),
            new_user_propensity_shift=-0.6 * strength,
            anonymous_share_shift=0.16 * strength,
            mobile_shift=0.4 * strength,
            notes=["new user cohort, mobile-heavy, more anonymous traffic, lower click propensity"],
        )


@register_drift
class Seasonal(Drift):
    """A seasonal change: holiday traffic (more volume, evening peak, other queries, higher CTR)."""

    name = "seasonal"
    description = "holiday season: +30% volume, evening peak 4 h later, query mix rotated, +0.3 logit CTR"

    def conditions(self, strength: float) -> DayConditions:
        return DayConditions(
            kind=self.name,
            volume_factor=1.0 + 0.3 * strength,
            hour_shift=4.0 * strength,
            ctr_logit_shift=0.3 * strength,
            query_rotation=0.3 * min(1.0, strength),
            notes=["holiday season: more traffic, later peak, different popular queries, higher CTR"],
        )


def drift_conditions(kind: str | None, strength: float = 1.0) -> DayConditions:
    """The conditions of a drift kind by name (``None`` or ``"none"`` for the calibrated market).

    >>> drift_conditions("new_ads").new_ad_share, drift_conditions("new_ads", 0.0).new_ad_share
    (0.5, 0.0)
    """
    name = kind or "none"
    if name not in DRIFTS:
        raise SpecError(f"unknown drift kind `{name}` (available: {', '.join(sorted(DRIFTS))})")
    if strength < 0:
        raise SpecError(f"drift strength must be >= 0, got {strength}")
    return DRIFTS[name]().conditions(strength)
