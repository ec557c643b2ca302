"""Test helpers around the embedded API simulator (`orchestrator.simulator`).

    from tests.helpers.simfixture import FakeClock, sim_harness

    clock = FakeClock()
    async with sim_harness(SimConfig(rate=1.0), clock=clock) as sim:
        response = await sim.rerun(sim.state.failed_run_ids[0])
        clock.advance(1.0)

`running_simulator` gives just the server (for tests of the real client);
`sim_harness` adds an aiohttp session and small request helpers that read each
response completely, so no test leaves a connection open.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDictProxy

from orchestrator.simulator import RunningSimulator, SimConfig, SimState
from tests.helpers.fakeclock import FakeClock


class ClockLike(Protocol):
    """Anything with a `now()` in monotonic seconds, such as `tests.helpers.fakeclock.FakeClock`."""

    def now(self) -> float: ...


@asynccontextmanager
async def running_simulator(
    config: SimConfig | None = None, *, clock: ClockLike | None = None
) -> AsyncIterator[RunningSimulator]:
    """A simulator on an ephemeral loopback port, driven by `clock` when given
    (else by the real monotonic clock)."""
    if clock is None:
        sim = RunningSimulator(config or SimConfig())
    else:
        sim = RunningSimulator(config or SimConfig(), clock=clock.now)
    async with sim:
        yield sim


@dataclass(frozen=True)
class SimResponse:
    """A response read to the end."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class SimHarness:
    """A running simulator, its fake clock and a client session to talk to it."""

    def __init__(
        self, sim: RunningSimulator, clock: FakeClock, session: aiohttp.ClientSession
    ) -> None:
        self.sim = sim
        self.clock = clock
        self.session = session

    @property
    def base_url(self) -> str:
        return self.sim.base_url

    @property
    def state(self) -> SimState:
        return self.sim.state

    @property
    def config(self) -> SimConfig:
        return self.sim.config

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        auth: bool = True,
        params: Mapping[str, str] | None = None,
    ) -> SimResponse:
        """One request; `token` overrides the configured one, `auth=False` sends none."""
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {token or self.config.token}"
        async with self.session.request(
            method, self.base_url + path, headers=headers, params=params
        ) as response:
            return SimResponse(response.status, response.headers, await response.read())

    async def rerun(self, run_id: str, **kwargs: Any) -> SimResponse:
        return await self.request("POST", f"/workflows/runs/{run_id}/rerun", **kwargs)

    async def get_run(self, run_id: str, **kwargs: Any) -> SimResponse:
        return await self.request("GET", f"/workflows/runs/{run_id}", **kwargs)

    async def executions(self, workflow_id: str, page: int | None = None) -> SimResponse:
        params = None if page is None else {"page": str(page)}
        return await self.request("GET", f"/workflows/{workflow_id}/executions", params=params)

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(self.base_url + "/_sim/stats") as response:
            stats: dict[str, Any] = await response.json()
            return stats

    async def requests(self) -> dict[str, Any]:
        """GET /_sim/requests: the request log as rows."""
        async with self.session.get(self.base_url + "/_sim/requests") as response:
            log: dict[str, Any] = await response.json()
            return log


@asynccontextmanager
async def sim_harness(
    config: SimConfig | None = None, *, clock: FakeClock | None = None
) -> AsyncIterator[SimHarness]:
    """A running simulator with a fake clock (a fresh one unless given) and a session."""
    clock = clock or FakeClock()
    async with (
        running_simulator(config, clock=clock) as sim,
        aiohttp.ClientSession() as session,
    ):
        yield SimHarness(sim, clock, session)
