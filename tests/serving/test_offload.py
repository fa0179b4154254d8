"""Large bodies scored in the worker thread: the load estimate behind the 503 of an overloaded
worker learns the work's own time, not the time a request waited in the queue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pyarrow as pa
from helpers import click_spec, rows_of, train_bundle

from loopml.serving import Servable, ServingApp
from loopml.serving.auth import AdminAuth
from loopml.training.bundle import load_bundle
from loopml.workspace import Workspace


class OneVersion:
    def __init__(self, servable: Servable) -> None:
        self.servable = servable

    def snapshot(self) -> dict[str, str]:
        return {"v1": "production"}

    def load(self, version_id: str) -> Servable:
        return self.servable


def test_queued_large_bodies_do_not_inflate_the_work_estimate(tmp_path: Path, click: pa.Table) -> None:
    ws = Workspace.open(tmp_path / "p", click_spec())
    d = train_bundle(ws, click, n_estimators=50, seed=0)
    app = ServingApp(OneVersion(Servable.from_bundle("v1", load_bundle(ws, d), d)), prediction_log=None,
                     feedback_log=None, auth=AdminAuth("NO_SUCH_ENV"))
    app.load_initial()
    body = orjson.dumps(rows_of(click, 2000))
    assert len(body) >= app.offload_min_bytes

    async def burst(n: int) -> tuple[list[int], float]:
        t0 = time.perf_counter()
        answers = await asyncio.gather(*[app.predict({}, body) for _ in range(n)])  # type: ignore[misc]
        return [a[0] for a in answers], time.perf_counter() - t0

    async def run() -> tuple[list[int], float]:
        for _ in range(3):  # warm: the pool, the model's buffers (a cold first request teaches a long time)
            await burst(1)
        return await burst(8)  # 8 at once on one worker thread: the last waits for 7 others

    codes, seconds = asyncio.run(run())
    assert codes == [200] * 8
    per_request = seconds / 8  # one worker thread: the burst took about 8 requests' own time
    estimate = app._seconds_per_byte * len(body)
    print(f"one request's own time ~{per_request * 1e3:.1f} ms, learned estimate {estimate * 1e3:.1f} ms")
    # counting the queueing in, the later requests of the burst would have taught 2-8x their own time
    assert estimate < 2 * per_request
    assert app._queued_seconds < 1e-9  # all answered: nothing queued (up to float rounding)
