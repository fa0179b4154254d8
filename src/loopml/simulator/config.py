"""Configuration of the traffic simulator: the market, the click model and the traffic volume.

Every default is either measured on the real KDD Cup 2012 track 2 sample
(``kdd2012_click_small``, see :mod:`loopml.simulator.calibration`) or a documented assumption
where the real file carries no information (it has no timestamps and no device).
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Popularity(_Strict):
    """A catalogue of ids with Zipf popularity: rank ``r`` is drawn with probability ∝ ``r^-exponent``."""

    size: int = Field(ge=1, description="Number of distinct ids in the catalogue.")
    exponent: float = Field(ge=0, le=3, description="Zipf exponent (0 = uniform; larger = heavier head).")


class ClickModelConfig(_Strict):
    """The known click model: logit P(click) = position/depth intercept + user, ad and context terms."""

    factors: int = Field(default=8, ge=1, le=64, description="Dimension of the user and ad latent factors.")
    affinity_scale: float = Field(
        default=0.8, ge=0, description="Standard deviation of the user·ad latent affinity term (logit units)."
    )
    ad_quality_sd: float = Field(default=0.6, ge=0, description="Standard deviation of the per-ad logit offset.")
    advertiser_quality_sd: float = Field(
        default=0.4, ge=0, description="Standard deviation of the per-advertiser logit offset."
    )
    user_propensity_sd: float = Field(
        default=0.5, ge=0, description="Standard deviation of the per-user click propensity (logit units)."
    )
    relevance_scale: float = Field(
        default=0.9, ge=0, description="Standard deviation of the query–ad relevance term (logit units)."
    )
    device_effect: dict[str, float] = Field(
        default_factory=lambda: {"desktop": 0.0, "mobile": -0.25, "tablet": 0.1},
        description="Logit offset per device (an assumption: the KDD sample has no device).",
    )
    hour_amplitude: float = Field(
        default=0.15, ge=0, description="Amplitude of the time-of-day logit effect (evening clicks more)."
    )
    target_ctr: dict[str, float] | None = Field(
        default=None,
        description="Click rate per 'depth,position' cell the intercepts are calibrated to; the KDD sample's "
        "measured rates when unset.",
    )
    target_anonymous_ctr: float | None = Field(
        default=None, gt=0, lt=1, description="Click rate of anonymous users; the KDD sample's when unset."
    )


class SimulatorConfig(_Strict):
    """The simulated market and its traffic.

    Examples
    --------
    >>> cfg = SimulatorConfig(impressions_per_day=1000)
    >>> cfg.ads.size > 0
    True
    """

    seed: int = Field(default=0, description="Seed of the market (ids, latent factors) and of the traffic.")
    start_date: dt.date = Field(default=dt.date(2026, 11, 2), description="Date of simulated day 0 (UTC).")
    impressions_per_day: int = Field(default=40_000, ge=1, description="Mean number of ad impressions per day.")
    users: Popularity = Field(
        default_factory=lambda: Popularity(size=4_758_196, exponent=0.44),
        description="Identified users (fitted to the KDD sample's user id frequencies).",
    )
    ads: Popularity = Field(
        default_factory=lambda: Popularity(size=36_478, exponent=0.64),
        description="Ads (fitted to the KDD sample's ad id frequencies).",
    )
    advertisers: Popularity = Field(
        default_factory=lambda: Popularity(size=23_000, exponent=0.96),
        description="Advertisers; each ad belongs to one, drawn from this catalogue (size fitted by simulation "
        "so that impressions show the KDD sample's advertiser frequencies).",
    )
    queries: Popularity = Field(
        default_factory=lambda: Popularity(size=2_220_350, exponent=0.82),
        description="Search queries; one per page view (fitted to the KDD sample's query frequencies).",
    )
    keywords: Popularity = Field(
        default_factory=lambda: Popularity(size=50_610, exponent=0.72),
        description="Bid keywords matched per impression (fitted to the KDD sample's keyword frequencies).",
    )
    anonymous_share: float = Field(
        default=0.2411, ge=0, lt=1, description="Share of impressions from unidentified users (user_id 0)."
    )
    cell_share: dict[str, float] = Field(
        default_factory=lambda: {"1,1": 0.27669, "2,1": 0.25213, "2,2": 0.23448, "3,1": 0.08241, "3,2": 0.07923, "3,3": 0.07507},
        description="Share of impressions per 'depth,position' page cell (depth = ads on the page), as "
        "measured on the KDD sample.",
    )
    device_share: dict[str, float] = Field(
        default_factory=lambda: {"desktop": 0.55, "mobile": 0.38, "tablet": 0.07},
        description="Share of page views by device (an assumption).",
    )
    click_model: ClickModelConfig = Field(default_factory=ClickModelConfig, description="The click model.")
    click_delay_median_s: float = Field(default=25.0, gt=0, description="Median seconds from impression to click.")
    click_delay_sigma: float = Field(
        default=1.3, ge=0, description="Log-normal sigma of the click delay (a few clicks arrive late)."
    )

    @field_validator("cell_share", "device_share")
    @classmethod
    def _shares(cls, v: dict) -> dict:  # type: ignore[type-arg]
        total = sum(v.values())
        if not v or any(x < 0 for x in v.values()) or abs(total - 1.0) > 1e-3:
            raise ValueError(f"shares must be non-negative and sum to 1, got {v} (sum {total:.4f})")
        return v

    @field_validator("cell_share")
    @classmethod
    def _cells(cls, v: dict[str, float]) -> dict[str, float]:
        allowed = {"1,1", "2,1", "2,2", "3,1", "3,2", "3,3"}
        bad = [c for c in v if c not in allowed]
        if bad:
            raise ValueError(f"cells must be 'depth,position' with 1 <= position <= depth <= 3, got {bad}")
        return v

    def scaled(self, factor: float) -> SimulatorConfig:
        """A smaller (or larger) market: every catalogue size multiplied by ``factor``.

        Used by the demo so that a week of traffic shows users and ads more than once.
        """
        upd = {}
        for name in ("users", "ads", "advertisers", "queries", "keywords"):
            pop: Popularity = getattr(self, name)
            upd[name] = Popularity(size=max(10, int(pop.size * factor)), exponent=pop.exponent)
        return self.model_copy(update=upd)
