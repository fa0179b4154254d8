"""On-device selection (``requirements.constraints.deployment_target: on-device``).

Each trained candidate that has an ONNX form yields its compressed variants
(:func:`loopml.export.compression.variants`, the best cloud candidate on validation as the teacher of
the distilled students); every variant is judged on its exported file in ONNX Runtime: quality on the
validation rows from its ONNX scores (bootstrap interval, paired with the best cloud model and the
baseline), file size and single-row p99 on one thread. Eligible: size within ``max_model_size_mb``
and p99 within ``latency_p99_ms × (1 + latency_tolerance)``. The best eligible variant wins; the
leaderboard's ``on_device`` section lists every variant, the cloud choice beside it, and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from loopml.errors import ModelError
from loopml.export.compression import FitData, Measured, Variant, measure, variants
from loopml.export.transform_onnx import ExportRefused


@dataclass
class DeviceChoice:
    """The on-device winner (a variant), its ONNX bytes and the leaderboard section."""

    variant: Variant
    measured: Measured
    section: dict[str, Any]
    why: str


def choose_on_device(data: Any, results: list[Any], metric: Any, constraints: dict[str, Any], cloud: Any,
                     *, baseline: Any, n_boot: int, seed: int) -> DeviceChoice:
    """Variants of every exportable candidate, measured on the validation rows in ONNX Runtime; the best that fits."""
    candidates = {}
    refused: dict[str, str] = {}
    for r in results:
        if r.bundle is None or r is baseline:
            continue
        try:
            from loopml.export.onnx_export import bundle_to_onnx

            bundle_to_onnx(r.bundle)
            candidates[r.name] = r.bundle
        except ExportRefused as exc:
            refused[r.name] = exc.message
    if not candidates:
        raise ModelError("deployment_target is on-device, but no candidate has an ONNX form:\n  "
                         + "\n  ".join(f"{k}: {v}" for k, v in refused.items()),
                         hint="add a candidate `loopml zoo` marks `onnx` and use exported transforms")
    teacher = cloud.name if cloud.name in candidates else max(
        candidates, key=lambda n: metric.signed(next(r.value for r in results if r.name == n) or 0.0))
    fit = FitData(data.task, np.asarray(data.X_train), data.y_train, np.asarray(data.X_valid), data.y_valid,
                  data.categorical)
    vs = variants(candidates, fit, teacher=teacher, seed=seed)
    base_scores = baseline.bundle.predict_table(data.valid_table) if baseline is not None and baseline.bundle else \
        np.full(len(data.y_valid), float(np.mean(data.y_valid)))
    measured = measure(vs, data.valid_table, data.y_valid, data.task, metric.name, reference=teacher,
                       baseline_scores=base_scores, resamples=max(n_boot, 100), seed=seed)
    size_mb = constraints.get("max_model_size_mb")
    p99 = constraints.get("latency_p99_ms")
    tol = float(constraints.get("latency_tolerance") or 0.0)
    for m in measured:
        m.notes = []
        if size_mb is not None and m.size_kb * 1024 > size_mb * 1e6:
            m.notes.append(f"{m.size_kb * 1024 / (size_mb * 1e6):.1f}x over the size budget "
                           f"({m.size_kb * 1024 / 1e6:.3f} MB > {size_mb:g} MB)")
        if p99 is not None and m.p99_ms > p99 * (1 + tol):
            m.notes.append(f"device p99 {m.p99_ms:.3f} ms over the {p99:g} ms budget")
        m.fits = not m.notes
    fitting = [m for m in measured if m.fits]
    if not fitting:
        raise ModelError("deployment_target is on-device, but no variant fits the budget:\n  " + "\n  ".join(
            f"{m.name}: {'; '.join(m.notes)}" for m in measured),
            hint="relax max_model_size_mb / latency_p99_ms or add a smaller candidate")
    sign = 1.0 if metric.higher_is_better else -1.0
    best = max(fitting, key=lambda m: (sign * m.value, -m.size_kb))
    ref = next(m for m in measured if m.name == teacher)
    budget = " / ".join(b for b in (f"{size_mb:g} MB" if size_mb is not None else "",
                                    f"{p99:g} ms p99" if p99 is not None else "") if b) or "no budget"
    why = (f"on-device: {best.name} has the best {metric.name} on validation in ONNX Runtime ({best.value:.4f}, 95% "
           f"CI {best.interval[0]:.4f}..{best.interval[1]:.4f}) of the {len(fitting)} of {len(measured)} variants "
           f"within {budget} ({best.size_kb:,.1f} KB, device p99 {best.p99_ms:.3f} ms); it keeps "
           f"{best.lift_share:.0%} of the lift of the best cloud model {teacher} ({ref.value:.4f}, "
           f"{ref.size_kb:,.1f} KB, p99 {ref.p99_ms:.3f} ms) over the baseline")
    rejected = [m for m in measured if not m.fits and sign * m.value > sign * best.value]
    if rejected:
        top = max(rejected, key=lambda m: sign * m.value)
        why += f"; {top.name} scored higher but {top.notes[0]}"
    section = {
        "target": "on-device",
        "runtime": "onnxruntime (CPU, 1 thread)",
        "budget": {"max_model_size_mb": size_mb, "latency_p99_ms": p99, "latency_tolerance": tol},
        "metric": metric.name,
        "higher_is_better": metric.higher_is_better,
        "cloud": {"name": teacher, "value": ref.value, "interval": list(ref.interval), "size_kb": ref.size_kb,
                  "p99_ms": ref.p99_ms},
        "winner": best.name,
        "why": why,
        "refused": refused,
        "variants": [{**m.row(), "interval": list(m.interval), "delta_interval": list(m.delta_interval),
                      "lift_interval": list(m.lift_interval), "reasons": m.notes} for m in measured],
    }
    variant = next(v for v in vs if v.name == best.name)
    return DeviceChoice(variant, best, section, why)
