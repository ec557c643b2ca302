"""Serving a simulated API on a real socket, for tests, the demo and `orchestrator simulate`."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

from aiohttp import web

from orchestrator.simulator.app import build_app, sim_state
from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.state import SimState

# In-flight answers end early on shutdown (see app._pause), so this only bounds
# a handler that is somehow still busy.
_SHUTDOWN_TIMEOUT_S: Final = 2.0


class RunningSimulator:
    """The simulator listening on `host:port` (port 0 = an ephemeral port) while the
    `async with` block runs.

        async with RunningSimulator(SimConfig(rate=5)) as sim:
            ...  # talk to sim.base_url with sim.config.token; inspect sim.state
    """

    def __init__(
        self,
        config: SimConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.host = host
        self.app = build_app(config, clock=clock)
        self.state: SimState = sim_state(self.app)
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound."""
        if self._port is None:
            raise RuntimeError("the simulator is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """E.g. "http://127.0.0.1:43817", without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
