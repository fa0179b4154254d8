"""Monitoring reaches a service bound to all interfaces on loopback, and any other host as given."""

from __future__ import annotations

from loopml.monitoring.ops import _scrape_host


def test_wildcard_binds_are_scraped_on_loopback_and_names_kept() -> None:
    assert _scrape_host("0.0.0.0") == "127.0.0.1"
    assert _scrape_host("::") == "127.0.0.1"
    assert _scrape_host("") == "127.0.0.1"
    assert _scrape_host("127.0.0.1") == "127.0.0.1"
    assert _scrape_host("10.1.2.3") == "10.1.2.3"
    assert _scrape_host("metrics.internal") == "metrics.internal"
