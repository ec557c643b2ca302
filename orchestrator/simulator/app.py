"""The aiohttp application: a thin adapter that feeds requests to the service and
carries out its replies (delay, answer, or drop the connection)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Final

from aiohttp import web

from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.service import Incoming, Reply, handle
from orchestrator.simulator.state import SimState

SIM_STATE: Final = web.AppKey("orchestrator_sim_state", SimState)
# Set when the app shuts down, so slow answers stop waiting and the server can stop at once.
_SHUTDOWN: Final = web.AppKey("orchestrator_sim_shutdown", asyncio.Event)

STATS_PATH: Final = "/_sim/stats"
REQUESTS_PATH: Final = "/_sim/requests"


def sim_state(app: web.Application) -> SimState:
    """The live state of an app made by `build_app`."""
    return app[SIM_STATE]


async def _pause(app: web.Application, seconds: float) -> None:
    """Sleep real time, cut short when the app shuts down."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app[_SHUTDOWN].wait(), timeout=seconds)


async def _api(request: web.Request) -> web.StreamResponse:
    incoming = Incoming(
        method=request.method,
        path=request.path,
        url=str(request.url.with_query(None)),
        page=request.query.get("page"),
        authorization=request.headers.get("Authorization"),
    )
    # Synchronous: decided and booked in arrival order, before any await.
    reply: Reply = handle(request.app[SIM_STATE], incoming)
    await _pause(request.app, reply.delay_s)
    if reply.drop:
        # Close without a byte of answer; aiohttp then fails to write the response
        # below and treats it as a client that went away, quietly.
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)
    return web.Response(
        status=reply.status,
        body=reply.body,
        content_type=reply.content_type,
        headers=reply.headers,
    )


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_STATE].stats_json())


async def _requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_STATE].requests_json())


async def _on_shutdown(app: web.Application) -> None:
    app[_SHUTDOWN].set()


def build_app(config: SimConfig, *, clock: Callable[[], float] = time.monotonic) -> web.Application:
    """A simulated Altostrat API for `config`.

    `clock` (monotonic seconds) drives the rate limit, run progression, timestamps of
    new runs and the request log; pass a fake one to control them from a test.
    Latency and slow answers are real-time sleeps, since clients time out in real time.
    """
    app = web.Application()
    app[SIM_STATE] = SimState(config, clock)
    app[_SHUTDOWN] = asyncio.Event()
    app.on_shutdown.append(_on_shutdown)
    app.router.add_get(STATS_PATH, _stats)
    app.router.add_get(REQUESTS_PATH, _requests)
    app.router.add_route("*", "/{tail:.*}", _api)
    return app
