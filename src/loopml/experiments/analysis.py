"""An online experiment read from the prediction and feedback logs: arms, SRM, guardrails, the A/B test.

Every logged prediction carries its ``experiment``, ``route`` (the arm) and ``propensity``
(:mod:`loopml.serving.routing`), so the analysis of an experiment is a query over the log:

- **arms**: requests, model version, mean and spread of the scores, planned share;
- **sample-ratio mismatch** of the traffic arms against their propensities (shadows mirror all traffic);
- **shadow agreement**: score correlation and decision flips of each shadow against the answering arm,
  paired by request id;
- **guardrail**: the challenger's score distribution against the incumbent's (two-sample KS, with a floor
  on the effect size so huge samples do not alarm on nothing); a constant-score challenger breaches;
- **online metric**: the labelled rows (feedback) per traffic arm and the always-valid mSPRT of the
  challenger against the incumbent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from loopml.errors import NotFound
from loopml.experiments.sequential import SequentialTest
from loopml.experiments.srm import srm_check

#: answering arm first, then the challenger, per routing type
INCUMBENT = ("production", "control")
CHALLENGER = ("canary", "treatment")
SHADOW = "shadow"


@dataclass
class ExperimentAnalysis:
    """What the log says about one experiment."""

    experiment: str
    arms: list[dict[str, Any]]
    srm: dict[str, Any] | None = None
    shadow: list[dict[str, Any]] = field(default_factory=list)
    guardrail: dict[str, Any] | None = None
    online: dict[str, Any] | None = None
    slo: dict[str, Any] | None = None
    #: per traffic arm, the off-policy value (IPS and SNIPS with intervals) of "always this arm" from the
    #: labelled rows and their logged propensities (valid when the shares changed, e.g. under a bandit)
    policy_values: list[dict[str, Any]] = field(default_factory=list)

    @property
    def breached(self) -> bool:
        """Whether a guardrail or the SRM check failed (the challenger should not get more traffic)."""
        return bool((self.guardrail and self.guardrail["breached"]) or (self.srm and self.srm["mismatch"])
                    or (self.slo and self.slo["breached"]))

    def reasons(self) -> list[str]:
        """One line per failed check, with its evidence."""
        out = []
        if self.guardrail and self.guardrail["breached"]:
            out.append(self.guardrail["reason"])
        if self.slo and self.slo["breached"]:
            out.extend(self.slo["reasons"])
        if self.srm and self.srm["mismatch"]:
            out.append(f"sample-ratio mismatch: counts {self.srm['counts']} vs planned shares "
                       f"{[round(s, 4) for s in self.srm['expected_shares']]} (chi2 {self.srm['chi2']:.1f}, "
                       f"p {self.srm['p_value']:.2g})")
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"experiment": self.experiment, "arms": self.arms, "srm": self.srm, "shadow": self.shadow,
                "guardrail": self.guardrail, "online": self.online, "slo": self.slo, "breached": self.breached,
                "reasons": self.reasons(), "policy_values": self.policy_values}


def experiments_in(log: pa.Table) -> list[str]:
    """The experiments named in a prediction log, in order of first appearance."""
    if log.num_rows == 0 or "experiment" not in log.column_names:
        return []
    seen: dict[str, None] = {}
    for e in log.column("experiment").to_pylist():
        if e is not None:
            seen.setdefault(e, None)
    return list(seen)


def _scores(t: pa.Table, route: str) -> np.ndarray:
    return np.asarray(t.filter(pc.equal(t.column("route"), route)).column("score").to_numpy(zero_copy_only=False),
                      dtype=float)


def analyse(log: pa.Table, labelled: pa.Table | None = None, experiment: str | None = None, *,
            alpha: float = 0.05, tau: float = 0.01, min_effect: float = 0.2,
            guardrail_alpha: float = 0.01) -> ExperimentAnalysis:
    """Analyse ``experiment`` (default: the latest in the log) from the prediction log and its labelled rows.

    ``tau``: mixture standard deviation of the sequential test (near the smallest effect worth
    detecting on the online metric); the guardrail breaches on constant scores, or on a KS distance of at least
    ``min_effect`` with p < ``guardrail_alpha`` (a retrained model may shift scores a little; a broken one a lot).
    """
    names = experiments_in(log)
    if not names:
        raise NotFound("no experiment in the prediction log: serve with deployment.routing.type shadow, canary, bandit "
                       "or ab and send traffic first")
    name = experiment or names[-1]
    if name not in names:
        raise NotFound(f"experiment `{name}` is not in the prediction log (found: {', '.join(names)})")
    t = log.filter(pc.equal(log.column("experiment"), name))
    routes = t.column("route").to_pylist()
    versions = t.column("model_version").to_pylist()
    props = t.column("propensity").to_pylist()
    arms: list[dict[str, Any]] = []
    for route in dict.fromkeys(routes):
        s = _scores(t, route)
        i = routes.index(route)
        arms.append({"route": route, "model_version": versions[i], "requests": int(s.size),
                     "planned_share": props[i], "score_mean": float(s.mean()), "score_sd": float(s.std())})
    res = ExperimentAnalysis(name, arms)
    traffic = [a for a in arms if a["route"] != SHADOW]
    if len(traffic) == 2 and all(a["planned_share"] for a in traffic):
        # expected requests per arm: each request's chance of the arm when it was routed (the logged
        # propensity of its own arm, one minus it for the other), so shares that moved (a canary step, a
        # bandit) are expected as they were
        first = traffic[0]["route"]
        p_first = np.array([q if r == first else 1.0 - q for r, q in zip(routes, props, strict=True)
                            if r != SHADOW and q is not None], dtype=float)
        if p_first.size:
            share = float(p_first.mean())
            res.srm = srm_check([a["requests"] for a in traffic], [share, 1.0 - share]).__dict__
    elif len(traffic) >= 2 and all(a["planned_share"] for a in traffic):
        shares = np.array([a["planned_share"] for a in traffic], dtype=float)
        res.srm = srm_check([a["requests"] for a in traffic], list(shares / shares.sum())).__dict__
    incumbent = next((a for a in arms if a["route"] in INCUMBENT), None)
    challenger = next((a for a in arms if a["route"] in (*CHALLENGER, SHADOW)), None)
    if incumbent is not None:
        ids = t.column("request_id").to_pylist()
        scores = t.column("score").to_pylist()
        preds = t.column("prediction").to_pylist()
        answer = {ids[i]: (scores[i], preds[i]) for i in range(len(ids)) if routes[i] in INCUMBENT}
        pairs = [(answer[ids[i]], (scores[i], preds[i])) for i in range(len(ids))
                 if routes[i] == SHADOW and ids[i] in answer]
        if pairs:
            a = np.array([p[0][0] for p in pairs])
            b = np.array([p[1][0] for p in pairs])
            corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
            flips = float(np.mean([p[0][1] != p[1][1] for p in pairs]))
            res.shadow.append({"pairs": len(pairs), "score_correlation": corr, "decision_flips": flips,
                               "mean_abs_score_diff": float(np.mean(np.abs(a - b)))})
    if incumbent is not None and challenger is not None:
        x, y = _scores(t, incumbent["route"]), _scores(t, challenger["route"])
        if x.size >= 20 and y.size >= 20:
            ks = stats.ks_2samp(x, y)
            constant = bool(np.ptp(y) <= 1e-12 and np.ptp(x) > 1e-12)
            breached = constant or bool(ks.pvalue < guardrail_alpha and ks.statistic >= min_effect)
            why = (f"{challenger['model_version']} ({challenger['route']}) gives constant scores "
                   f"({y[0]:.4g} on {y.size} requests) while {incumbent['model_version']} varies (sd {x.std():.3g})"
                   if constant else
                   f"{challenger['model_version']} ({challenger['route']}) score distribution differs from "
                   f"{incumbent['model_version']}: KS D {ks.statistic:.3f} (floor {min_effect}), p {ks.pvalue:.2g}, "
                   f"means {y.mean():.4f} vs {x.mean():.4f}, n {y.size} vs {x.size}")
            res.guardrail = {"check": "score distribution vs incumbent (KS)", "ks_d": float(ks.statistic),
                             "p_value": float(ks.pvalue), "constant_scores": constant, "breached": breached,
                             "reason": why}
    if labelled is not None and labelled.num_rows and "experiment" in labelled.column_names and incumbent \
            and res.shadow:
        res.shadow[0]["quality"] = _paired_brier(labelled.filter(pc.equal(labelled.column("experiment"), name)),
                                                 incumbent["route"], alpha)
    if labelled is not None and labelled.num_rows and "experiment" in labelled.column_names and incumbent \
            and challenger and challenger["route"] != SHADOW:
        lt = labelled.filter(pc.equal(labelled.column("experiment"), name))
        lab = {r: np.asarray(lt.filter(pc.equal(lt.column("route"), r)).column("label").to_numpy(
            zero_copy_only=False), dtype=float) for r in (incumbent["route"], challenger["route"])}
        c, tr = lab[incumbent["route"]], lab[challenger["route"]]
        if c.size and tr.size:
            test = SequentialTest(alpha, tau)
            r = test.update_means(float(c.mean()), float(c.var()) or 1e-12, c.size, float(tr.mean()),
                                  float(tr.var()) or 1e-12, tr.size)
            res.online = {"metric": "mean label (e.g. CTR)", "test": "mSPRT (always valid)", **r.as_dict()}
            if not math.isfinite(res.online["relative_lift"]):
                res.online["relative_lift"] = None
    if labelled is not None and labelled.num_rows and "experiment" in labelled.column_names and len(traffic) == 2:
        res.policy_values = _policy_values(labelled.filter(pc.equal(labelled.column("experiment"), name)),
                                           [a["route"] for a in traffic], alpha)
    return res


def _policy_values(t: pa.Table, arms: list[str], alpha: float) -> list[dict[str, Any]]:
    """IPS and SNIPS of "every request to this arm", from labelled rows with logged propensities."""
    from loopml.experiments.offpolicy import ips, snips

    keep = [i for i, (r, q) in enumerate(zip(t.column("route").to_pylist(), t.column("propensity").to_pylist(),
                                             strict=True)) if r in arms and q is not None and q > 0]
    if len(keep) < 2:
        return []
    t = t.take(keep)
    routes = np.asarray(t.column("route").to_pylist(), dtype=object)
    logged = np.asarray(t.column("propensity").to_numpy(zero_copy_only=False), dtype=float)
    rewards = np.asarray(t.column("label").to_numpy(zero_copy_only=False), dtype=float)
    out = []
    for arm in arms:
        target = (routes == arm).astype(float)
        if not target.any():
            continue
        v_ips, v_snips = ips(rewards, logged, target, 1 - alpha), snips(rewards, logged, target, 1 - alpha)
        out.append({"policy": f"always {arm}", "rows": int(rewards.size), "ips": v_ips.as_dict(),
                    "snips": v_snips.as_dict()})
    return out


def _paired_brier(t: pa.Table, incumbent: str, alpha: float) -> dict[str, Any] | None:
    """Shadow minus answering arm Brier score on the same labelled requests, with its normal interval."""
    ids = t.column("request_id").to_pylist()
    routes = t.column("route").to_pylist()
    scores = t.column("score").to_pylist()
    labels = t.column("label").to_pylist()
    answer = {ids[i]: (scores[i] - labels[i]) ** 2 for i in range(len(ids)) if routes[i] == incumbent}
    d = np.array([(scores[i] - labels[i]) ** 2 - answer[ids[i]] for i in range(len(ids))
                  if routes[i] == SHADOW and ids[i] in answer])
    if d.size < 2:
        return None
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    z = float(stats.norm.ppf(1 - alpha / 2))
    m = float(d.mean())
    return {"metric": "Brier score, shadow minus answering arm (lower is better)", "pairs": int(d.size),
            "difference": m, "ci_low": m - z * se, "ci_high": m + z * se}


def _tail_test(buckets: dict[str, float], limit_s: float, alpha: float) -> dict[str, Any]:
    """Is the share of answers slower than ``limit_s`` significantly above 1% (so the p99 is above it)?

    From cumulative histogram buckets: only answers in buckets whose lower edge is at or above the limit
    count as slower (conservative: an answer that may be faster never counts against the challenger).
    """
    items = sorted(((math.inf if le in ("+Inf", "inf") else float(le)), c) for le, c in buckets.items())
    total = items[-1][1] if items else 0.0
    at_or_below = 0.0  # answers in buckets that end at or below the first boundary at or above the limit
    for le, c in items:
        at_or_below = c
        if le >= limit_s:
            break
    slower = round(total - at_or_below)
    n = round(total)
    p = float(stats.binomtest(slower, n, 0.01, alternative="greater").pvalue) if n else 1.0
    return {"limit_ms": limit_s * 1000, "requests": n, "slower": slower, "p_value": p, "significant": p < alpha}


def slo_check(metrics_text: str, incumbent: str, challenger: str, *, latency_p99_ms: float | None = None,
              min_error_increase: float = 0.01, alpha: float = 0.05, max_p99_ratio: float | None = None,
              p99_floor_ms: float = 0.0) -> dict[str, Any]:
    """SLOs of the challenger from the service's Prometheus metrics (``/metrics`` text), per model version.

    Error rate: non-2xx answers of ``/v1/predict`` (client errors fall on both arms alike, so the
    comparison stays fair); a breach is a rate at least ``min_error_increase`` above the incumbent's and
    significantly so (Fisher's exact test, one-sided); ``error_rate_upper`` is the challenger's one-sided
    Clopper-Pearson upper bound at ``1 - alpha``. Latency: a limit (``latency_p99_ms`` when given; and
    ``max_p99_ratio`` times the incumbent's p99, at least ``p99_floor_ms`` above it, when given) is breached
    only when significantly more than 1% of the challenger's answers are slower than it (one-sided
    binomial test at ``alpha``, counting only answers whose histogram bucket lies wholly above the limit):
    a point p99 from a few dozen requests on a busy machine is noise, not a breach.

    >>> from loopml.serving.metrics import Metrics
    >>> m = Metrics()
    >>> for i in range(60):  # one slow answer of 60 on each side: p99 differs, the tail does not
    ...     m.observe("/v1/predict", "v1", "production", 200, 0.004 if i else 0.016, 1)
    ...     m.observe("/v1/predict", "v2", "canary", 200, 0.004 if i else 0.016, 1)
    >>> slo_check(m.render(), "v1", "v2", max_p99_ratio=2.0, p99_floor_ms=5.0)["breached"]
    False
    """
    from loopml.monitoring.ops import histogram_quantile, parse_prometheus

    arms: dict[str, dict[str, Any]] = {v: {"requests": 0.0, "errors": 0.0, "buckets": {}} for v in (incumbent, challenger)}
    for name, labels, value in parse_prometheus(metrics_text):
        v = labels.get("model_version")
        if v not in arms or labels.get("endpoint") != "/v1/predict":
            continue
        if name == "loopml_requests_total":
            arms[v]["requests"] += value
            if not labels.get("code", "").startswith("2"):
                arms[v]["errors"] += value
        elif name == "loopml_request_duration_seconds_bucket":
            le = labels.get("le", "+Inf")
            arms[v]["buckets"][le] = arms[v]["buckets"].get(le, 0.0) + value
    out: dict[str, Any] = {"versions": {}, "reasons": []}
    for v, a in arms.items():
        n = a["requests"]
        k = a["errors"]
        out["versions"][v] = {"requests": int(n), "errors": int(k),
                              "error_rate": k / n if n else None,
                              "error_rate_upper": (float(stats.beta.ppf(1 - alpha, k + 1, n - k)) if k < n else 1.0)
                              if n else None,
                              "latency_p99_ms": histogram_quantile(0.99, a["buckets"]) * 1000 if a["buckets"] else None}
    ci, ch = out["versions"][incumbent], out["versions"][challenger]
    if ch["requests"] and ci["requests"]:
        table = [[ch["errors"], ch["requests"] - ch["errors"]], [ci["errors"], ci["requests"] - ci["errors"]]]
        p = float(stats.fisher_exact(table, alternative="greater").pvalue)
        out["error_p_value"] = p
        if ch["error_rate"] - ci["error_rate"] >= min_error_increase and p < alpha:
            out["reasons"].append(
                f"{challenger} error rate {ch['error_rate']:.2%} ({ch['errors']}/{ch['requests']}) vs {incumbent} "
                f"{ci['error_rate']:.2%} ({ci['errors']}/{ci['requests']}), Fisher p {p:.2g}")
    p99 = ch["latency_p99_ms"]
    buckets = arms[challenger]["buckets"]
    if latency_p99_ms is not None and p99 is not None and math.isfinite(p99) and p99 > latency_p99_ms:
        tail = _tail_test(buckets, latency_p99_ms / 1000, alpha)
        out["latency_tail"] = tail
        if tail["significant"]:
            out["reasons"].append(f"{challenger} p99 latency {p99:.1f} ms above the SLO {latency_p99_ms} ms "
                                  f"({tail['slower']}/{tail['requests']} answers slower, binomial p {tail['p_value']:.2g})")
    p99_inc = ci["latency_p99_ms"]
    if max_p99_ratio is not None and p99 is not None and p99_inc is not None and math.isfinite(p99) \
            and math.isfinite(p99_inc) and p99 > max_p99_ratio * p99_inc and p99 - p99_inc > p99_floor_ms:
        limit_ms = max(max_p99_ratio * p99_inc, p99_inc + p99_floor_ms)
        tail = _tail_test(buckets, limit_ms / 1000, alpha)
        out["latency_tail_vs_incumbent"] = tail
        if tail["significant"]:
            out["reasons"].append(
                f"{challenger} p99 latency {p99:.1f} ms vs {incumbent} {p99_inc:.1f} ms: above {max_p99_ratio:g}x and "
                f"by more than {p99_floor_ms:g} ms ({tail['slower']}/{tail['requests']} answers slower than "
                f"{limit_ms:.1f} ms, binomial p {tail['p_value']:.2g})")
    out["breached"] = bool(out["reasons"])
    return out


__all__ = ["ExperimentAnalysis", "analyse", "experiments_in", "slo_check"]
