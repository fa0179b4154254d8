"""`python -m benchmarks scale` judges issue 20's targets from what it measured."""

from __future__ import annotations

from benchmarks.bench_scale import targets


def _size(label: str, wall: float, peak: float) -> dict[str, object]:
    return {"label": label, "demo_wall_s": wall, "demo_peak_rss_mb": peak}


def test_targets_are_judged_in_the_run_records_unit() -> None:
    lines = targets([_size("1M", 248.0, 1431.0), _size("10M", 2192.0, 5752.0)])
    assert lines[0].startswith("- 1M peak RSS 1,431 MB") and lines[0].endswith("**met**")
    assert "5.62 GiB, 6.03 GB of 10^9 bytes" in lines[1] and lines[1].endswith("**met**")
    assert "= 8.8× the 1M run" in lines[2] and lines[2].endswith("**met**")


def test_a_missed_target_says_so() -> None:
    lines = targets([_size("1M", 100.0, 2049.0), _size("10M", 1201.0, 6145.0)])
    assert all(line.endswith("**NOT met**") for line in lines) and len(lines) == 3
    assert targets([_size("0.1M", 50.0, 900.0)]) == []  # nothing to judge at that size
