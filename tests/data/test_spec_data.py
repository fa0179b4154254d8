"""Cross-field rules of the `data` spec section give one actionable message each."""

from __future__ import annotations

import pytest

from loopml.errors import SpecError
from loopml.spec import parse_spec_text


def test_window_label_must_name_declared_sources() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec_text(
            "data:\n  sources:\n    imp: {type: csv, path: a.csv}\n"
            "  labels: {type: event_within_window, impressions: imp, events: clk, keys: [k],"
            " impression_time: t, event_time: t, window_seconds: 5}\n"
        )
    assert "labels.events names source `clk`, which is not declared (sources: imp)" in str(err.value)


def test_psi_thresholds_ordered() -> None:
    with pytest.raises(SpecError, match=r"psi_warn \(0.5\) must not exceed psi_error \(0.25\)"):
        parse_spec_text("data:\n  verification: {psi_warn: 0.5}\n")


def test_unknown_source_type_and_key_are_rejected() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec_text("data:\n  sources:\n    a: {type: excel, path: a.xlsx}\n")
    assert "data.sources.a" in str(err.value)
    with pytest.raises(SpecError) as err2:
        parse_spec_text("data:\n  sources:\n    a: {type: csv, path: a.csv, delimeter: ';'}\n")
    assert "delimeter" in str(err2.value)
