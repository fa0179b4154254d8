"""Off-policy evaluation on the Open Bandit Dataset sample: ``python -m benchmarks experiments``.

For each campaign, the Bernoulli Thompson-sampling policy's CTR estimated from the uniform-random
logs (IPS, SNIPS, DR with 95% intervals) next to the CTR it had in its own logs (Wilson interval).
Writes ``benchmarks/results/experiments.md`` and ``.json``.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._common import datasets_dir, write_results
from loopml.experiments.openbandit import CAMPAIGNS, check_campaign


def main(argv: list[str]) -> int:
    root = datasets_dir() / "open_bandit_sample"
    rows: list[dict[str, Any]] = []
    lines = [
        "# Off-policy evaluation on the Open Bandit Dataset sample (ZOZO)",
        "",
        "Thompson sampling's CTR estimated from 10,000 uniform-random impressions per campaign, next to the CTR "
        "observed in its own 10,000 logged impressions. 95% intervals (normal; on-policy: Wilson). "
        "Target policy: the week's share of each item per position in the TS logs; DR: per (item, position) "
        "click means, 2-fold cross-fitted, shrunk toward the overall mean.",
        "",
        "| campaign | TS on-policy CTR | IPS | SNIPS | DR | all intervals hold the on-policy CTR | seconds |",
        "|---|---|---|---|---|---|---:|",
    ]
    for campaign in CAMPAIGNS:
        t0 = time.perf_counter()
        res = check_campaign(root, campaign)
        secs = time.perf_counter() - t0
        on = res.on_policy

        def fmt(e: Any) -> str:
            return f"{e.value:.5f} [{e.ci_low:.5f}, {e.ci_high:.5f}]"

        held = all(e.ci_low <= on.value <= e.ci_high for e in res.estimates)
        lines.append(f"| {campaign} | {fmt(on)} ({res.bts_clicks} clicks) | "
                     + " | ".join(fmt(e) for e in res.estimates) + f" | {'yes' if held else 'no'} | {secs:.2f} |")
        rows.append({**res.as_dict(), "seconds": secs, "covered": held})
        print(lines[-1], flush=True)
    md = write_results("experiments", {"open_bandit": rows}, "\n".join(lines) + "\n")
    print(f"wrote {md}")
    return 0
