"""A demo project (one small `loopml demo --no-serve` per session), `loopml ui` over it, headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

DEMO_ARGS = ["--no-serve", "--days", "3", "--impressions-per-day", "2500", "--replay-batch", "200", "--no-rollout"]
TOKEN = "ui-test-token"


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project made by the demo: two runs, v1 in production, v2 approved, one drift alert."""
    from tests.conftest import run_cli

    proj = tmp_path_factory.mktemp("webui") / "loopml-demo"
    env = {k: v for k, v in os.environ.items() if k != "LOOPML_HASH_KEY"}
    proc = run_cli("demo", "-p", str(proj), *DEMO_ARGS, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proj


def copy_project(src: Path, dst: Path) -> Path:
    """A private copy of a project (tests that change the registry or the logs use one)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock", "serve.ready"))
    return dst


class UIProcess:
    """`loopml ui` in a child process on a free port."""

    def __init__(self, project: Path, token: str | None) -> None:
        ready = project / ".loopml" / f"ui-{time.monotonic_ns()}.ready"
        env = {k: v for k, v in os.environ.items() if k != "LOOPML_ADMIN_TOKEN"}
        if token:
            env["LOOPML_ADMIN_TOKEN"] = token
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loopml.cli.main", "ui", "-p", str(project), "--port", "0", "--ready-file", str(ready)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"loopml ui did not start: {self.proc.stdout.read() if self.proc.stdout else ''}"
                                     f"{self.proc.stderr.read() if self.proc.stderr else ''}")
            time.sleep(0.1)
        host, port = ready.read_text().split()
        self.url = f"http://{host}:{port}"
        self.wait_for_monitoring()

    def wait_for_monitoring(self, timeout: float = 600) -> None:
        """Until the monitoring report the UI computes in the background at start-up is ready (pages that show it
        answer with a progress page before)."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = httpx.get(self.url + "/monitoring/status", timeout=30).json()
            if status["ready"] or status["error"]:
                return
            time.sleep(0.2)
        raise AssertionError(f"the monitoring report was not computed in {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save a screenshot of each page (``$LOOPML_UI_SCREENSHOTS`` or the pytest tmp dir)."""
    env = os.environ.get("LOOPML_UI_SCREENSHOTS")
    d = Path(env) if env else tmp_path_factory.mktemp("ui-screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Selenium (Debian `chromium` + `chromium-driver`), logging console and network."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.fail("Chromium and chromedriver are required (`make services` installs Debian's chromium and "
                    "chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def assert_self_contained(page: str) -> None:
    """A page that needs nothing but itself: no linked stylesheet or script, no fetched URL; its charts' layer
    (uPlot and charts.js) and data inlined."""
    low = page.lower()
    assert "<link" not in low and "<script src" not in low and "@import" not in low and "url(" not in low
    assert not re.findall(r"""(?:src|href)\s*=\s*(?!["']?#)""", low), "a resource or link outside the page"
    assert "new uplot(" in low and 'type="application/json"' in low, "the chart layer is not inlined"
