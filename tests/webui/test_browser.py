"""`loopml ui` in a real headless Chromium over a project made by the demo.

Every page opens, every link and tab works (a crawl from the Runs page), the promote action shows the
comparison and asks for the token, 0 console errors, 0 failed requests; a screenshot of each page is
saved (the `screenshots` fixture says where).
"""

from __future__ import annotations

import json
import re
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urlparse

import pytest

from tests.webui.conftest import TOKEN, UIProcess, copy_project

pytestmark = pytest.mark.slow


def drain(driver) -> tuple[list[str], list[str]]:
    """Console errors and failed requests (HTTP >= 400 or network failures) since the last call."""
    console = [f"{e['level']}: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    failed = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.responseReceived":
            resp = msg["params"]["response"]
            if resp["status"] >= 400:
                failed.append(f"{resp['status']} {resp['url']}")
        elif msg["method"] == "Network.loadingFailed" and not msg["params"].get("canceled"):
            failed.append(f"failed {msg['params'].get('errorText')}")
    return console, failed


def shot(driver, folder: Path, name: str) -> Path:
    path = folder / ((re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "index") + ".png")
    driver.save_screenshot(str(path))
    return path


def _pattern(path: str) -> str:
    """Pages of one kind share a pattern (ids replaced); the crawl opens a few of each kind."""
    return re.sub(r"/[0-9a-f]{16,}", "/ID", re.sub(r"/v\d+(?=/|$)", "/vN", re.sub(r"/v\d+-[0-9a-f]+", "/SNAP", path)))


@pytest.fixture(scope="module")
def ui(demo_project, tmp_path_factory):
    proj = copy_project(demo_project, tmp_path_factory.mktemp("ui-ro") / "p")
    server = UIProcess(proj, token=None)
    yield server
    server.stop()


def test_every_page_and_link_opens_without_errors(ui, browser, screenshots):
    drain(browser)
    origin = urlparse(ui.url).netloc
    queue: deque[str] = deque([ui.url + "/runs"])
    seen: set[str] = set()
    per_pattern: dict[str, int] = {}
    opened: list[str] = []
    problems: list[str] = []
    while queue and len(opened) < 60:
        url = queue.popleft()
        if url in seen:
            continue
        seen.add(url)
        browser.get(url)
        title = browser.title
        console, failed = drain(browser)
        problems += [f"{url}: {p}" for p in console + failed]
        if "/reports/" in url:  # a run's kept static report: it opens without errors; its links are its own
            opened.append(url)
            shot(browser, screenshots, urlparse(url).path)
            continue
        h1 = browser.find_elements("tag name", "h1")
        assert h1 and "Not available" not in h1[0].text, f"{url}: {browser.page_source[:500]}"
        opened.append(url)
        shot(browser, screenshots, urlparse(url).path + "_" + (urlparse(url).query or ""))
        assert title.endswith("· loopml")
        for a in browser.find_elements("css selector", "a[href]"):
            href = urldefrag(a.get_attribute("href"))[0]
            p = urlparse(href)
            if p.netloc != origin or href in seen or p.path.startswith("/static"):
                continue
            key = _pattern(p.path) + ("?" + re.sub(r"(?<!tab)=[^&]*", "=", p.query) if p.query else "")
            if per_pattern.get(key, 0) >= 2 and p.path != "/runs":
                continue
            per_pattern[key] = per_pattern.get(key, 0) + 1
            queue.append(href)
    assert not problems, "\n".join(problems)
    kinds = {_pattern(urlparse(u).path) for u in opened}
    for expected in ("/runs", "/runs/ID", "/runs/ID/reports/evaluation.html", "/artifacts/ID", "/data", "/data/SNAP", "/models", "/models/vN",
                     "/models/compare", "/models/vN/promote", "/serving", "/monitoring", "/design"):
        assert expected in kinds, f"{expected} not reached by the crawl: {sorted(kinds)}"
    tabs = {urlparse(u).query for u in opened if "/data/" in u}
    assert {"tab=validation", "tab=profile", "tab=quarantine"} <= tabs
    assert len(list(screenshots.glob("*.png"))) >= len(kinds)


def test_pages_show_what_the_workspace_holds(ui, browser):
    browser.get(ui.url + "/runs")
    rows = browser.find_elements("css selector", "#runs tr")
    assert len(rows) == 3  # header + the demo's initial training and the retraining
    assert "loopml demo: initial training" in browser.page_source
    browser.get(ui.url + "/models")
    versions = browser.find_element("id", "versions").text
    assert "v1 production" in versions and "v2 candidate" in versions
    assert browser.find_element("css selector", "p.why").text.startswith("why:")
    browser.get(ui.url + "/models/compare?a=v1&b=v2")
    table = browser.find_element("id", "compare-metrics").text
    assert "roc_auc" in table and "[" in table  # values with intervals
    browser.get(ui.url + "/data")
    snap = browser.find_element("css selector", "#snapshots a").get_attribute("href")
    browser.get(snap + "?tab=validation")
    results = [r.find_elements("tag name", "td")[0].text for r in browser.find_elements("css selector", "#checks tr")[1:]]
    assert "FAILED" in results and results.index("ok") > max(i for i, r in enumerate(results) if r == "FAILED")
    browser.get(ui.url + "/monitoring")
    assert "device" in browser.find_element("id", "drift-latest").text
    charts = browser.execute_script("return window.loopmlCharts.map(c => [c.id, c.kind, c.data.length]);")
    ids = {c[0] for c in charts}
    assert {"chart-drift", "chart-distribution", "chart-volume"} <= ids
    assert not drain(browser)[0]


def test_read_only_ui_offers_no_promotion(ui, browser):
    browser.get(ui.url + "/models/v2/promote")
    assert browser.find_elements("id", "compare-metrics"), "the comparison is shown first"
    assert browser.find_elements("id", "read-only") and not browser.find_elements("id", "promote-form")
    drain(browser)


def _until(browser: Any, done: Any, seconds: float = 60.0) -> None:
    """Wait until ``done(browser)`` holds (the submitted form's answer page has loaded); fail after ``seconds``."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, seconds, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(
        done, message=f"the page did not show the expected answer: {browser.page_source[:800]}")


def test_promote_shows_the_comparison_and_asks_for_the_token(demo_project, browser, tmp_path, screenshots):
    from loopml.registry import Registry
    from loopml.workspace import Workspace

    proj = copy_project(demo_project, tmp_path / "p")
    server = UIProcess(proj, token=TOKEN)
    try:
        drain(browser)
        browser.get(server.url + "/models/v2/promote")
        assert browser.find_element("id", "compare-metrics").is_displayed()
        token = browser.find_element("id", "token")
        assert token.get_attribute("type") == "password"
        shot(browser, screenshots, "promote_form")
        # a wrong token: refused, the registry unchanged
        browser.find_element("name", "reason").send_keys("better on the drifted day")
        token.send_keys("wrong")
        browser.find_element("id", "promote-submit").click()
        _until(browser, lambda b: "token rejected" in b.find_element("id", "action-error").text)
        assert Registry(Workspace.open(proj)).production().version_id == "v1"  # type: ignore[union-attr]
        drain(browser)  # the refusal answered 401 on purpose
        # the right token: v2 serves, the actor is the token's name
        browser.find_element("name", "reason").send_keys("better on the drifted day")
        browser.find_element("id", "token").send_keys(TOKEN)
        browser.find_element("id", "promote-submit").click()
        _until(browser, lambda b: "v2 is now production" in b.page_source)
        shot(browser, screenshots, "promoted")
        reg = Registry(Workspace.open(proj))
        assert reg.production().version_id == "v2"  # type: ignore[union-attr]
        assert reg.history("v2")[-1].actor == "admin-api"
        # and back: the rollback page shows the comparison and asks for the token too
        browser.get(server.url + "/models/rollback")
        assert browser.find_element("id", "compare-metrics").is_displayed()
        browser.find_element("name", "reason").send_keys("undo")
        browser.find_element("name", "token").send_keys(TOKEN)
        browser.find_element("id", "rollback-submit").click()
        _until(browser, lambda b: "done=rolled-back" in b.current_url)
        assert Registry(Workspace.open(proj)).production().version_id == "v1"  # type: ignore[union-attr]
        console, failed = drain(browser)
        assert not console and not failed, console + failed
    finally:
        server.stop()
