"""Fault injection over real HTTP: seeded random faults, scripts, drops, bad bodies, slowness."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import aiohttp
import pytest

from orchestrator.simulator import RunningSimulator, SimConfig, seeded_failed_run_ids
from orchestrator.simulator.service import Incoming, handle
from orchestrator.simulator.state import SimState
from tests.helpers.simfixture import FakeClock, SimHarness, sim_harness

FAULTY = SimConfig(runs=10, p_500=0.15, p_502=0.1, p_503=0.15, p_drop=0.1, p_bad_body=0.1)


async def _attempt(sim: SimHarness, run_id: str) -> int | str:
    """The status a real client sees, "drop" for a closed connection, "bad" for bad JSON."""
    try:
        response = await sim.rerun(run_id)
    except aiohttp.ServerDisconnectedError:
        return "drop"
    if response.status == 202:
        try:
            response.json()
        except json.JSONDecodeError:
            return "bad"
    return response.status


async def _fault_sequence(seed: int, attempts: int = 40) -> tuple[list[int | str], dict[str, int]]:
    async with sim_harness(dataclasses.replace(FAULTY, seed=seed)) as sim:
        run_id = sim.state.failed_run_ids[0]
        seen = [await _attempt(sim, run_id) for _ in range(attempts)]
        return seen, dict(sim.state.stats.accepted)


async def test_random_faults_are_reproducible_under_a_seed() -> None:
    first, accepted = await _fault_sequence(seed=1)
    again, _ = await _fault_sequence(seed=1)
    other, _ = await _fault_sequence(seed=2)
    assert first == again
    assert first != other
    assert {500, 502, 503, "drop", "bad", 202} <= set(first)
    # Only 202s (bad bodies included) applied the rerun; errors and drops did not.
    assert sum(accepted.values()) == first.count(202) + first.count("bad")


async def test_faults_do_not_touch_gets() -> None:
    config = SimConfig(runs=5, p_500=0.5, p_drop=0.5)
    async with sim_harness(config) as sim:
        run_id = sim.state.seeded_run_ids[0]
        statuses = {(await sim.get_run(run_id)).status for _ in range(20)}
        workflow_id = sim.state.workflow_ids[0]
        statuses |= {(await sim.executions(workflow_id)).status for _ in range(5)}
        assert statuses == {200}


async def test_drop_is_a_connection_error_and_applies_nothing() -> None:
    run_id = "fl_run_dropme"
    config = SimConfig(runs=0, accept_any=True, script={run_id: ["drop"]})
    async with sim_harness(config) as sim:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await sim.rerun(run_id)
        assert sim.state.stats.accepted == {}
        assert (await sim.rerun(run_id)).status == 202  # the next one goes through
        stats = await sim.stats()
        assert stats["dropped"] == 1
        assert stats["by_status"] == {"drop": 1, "202": 1}
        assert [e.status for e in sim.state.request_log] == ["drop", 202]


async def test_bad_body_applies_the_rerun_but_is_unreadable() -> None:
    run_id = seeded_failed_run_ids(SimConfig(runs=5))[0]
    async with sim_harness(SimConfig(runs=5, script={run_id: ["bad_body"]})) as sim:
        url = f"{sim.base_url}/workflows/runs/{run_id}/rerun"
        headers = {"Authorization": f"Bearer {sim.config.token}"}
        async with sim.session.post(url, headers=headers) as response:
            assert response.status == 202
            assert await response.text() == '{"message": "Workflow run has been qu'
            with pytest.raises(json.JSONDecodeError):
                await response.json()
        assert sim.state.stats.accepted == {run_id: 1}
        reruns = [r for r in sim.state.runs.values() if r.rerun_of == run_id]
        assert len(reruns) == 1
        assert reruns[0].workflow_id == sim.state.runs[run_id].workflow_id


SLOW_RUN = "fl_run_slow"
HEADERS = {"Authorization": "Bearer sim-token"}


def watching_arrivals(config: SimConfig) -> tuple[RunningSimulator, asyncio.Event]:
    """A simulator whose clock says when a request arrives: the service reads it then,
    and books the request (a slow rerun is applied) before anything is awaited."""
    arrived = asyncio.Event()

    def clock() -> float:
        arrived.set()
        return time.monotonic()

    return RunningSimulator(config, clock=clock), arrived


async def test_slow_applies_the_rerun_and_answers_late() -> None:
    config = SimConfig(runs=0, accept_any=True, slow_s=0.2, script={SLOW_RUN: ["slow", "slow"]})
    sim, arrived = watching_arrivals(config)
    async with sim, aiohttp.ClientSession() as session:
        arrived.clear()  # building the app read it too
        url = f"{sim.base_url}/workflows/runs/{SLOW_RUN}/rerun"
        # A client that gives up once the server has the request: the in-doubt case, the
        # rerun happened anyway, though no answer came.
        request = asyncio.create_task(session.post(url, headers=HEADERS))
        async with asyncio.timeout(10):
            await arrived.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert sim.state.stats.accepted == {SLOW_RUN: 1}
        # A patient client gets the normal 202, after the slow answer's delay.
        async with session.post(url, headers=HEADERS) as response:
            assert response.status == 202
            assert (await response.json())["original_run_id"] == SLOW_RUN
        assert sim.state.stats.accepted == {SLOW_RUN: 2}


async def test_stopping_does_not_wait_for_slow_answers() -> None:
    config = SimConfig(runs=0, accept_any=True, slow_s=60.0, script={SLOW_RUN: ["slow"]})
    sim, arrived = watching_arrivals(config)
    async with sim, aiohttp.ClientSession() as session:
        arrived.clear()  # building the app read it too
        url = f"{sim.base_url}/workflows/runs/{SLOW_RUN}/rerun"
        request = asyncio.create_task(session.post(url, headers=HEADERS))
        await arrived.wait()
        started = time.monotonic()
        await sim.stop()
        async with await request as response:
            assert response.status == 202
        assert time.monotonic() - started < 5.0


async def test_scripted_answers_come_in_order_then_normal() -> None:
    run_id = "fl_run_scripted"
    http_date = "Wed, 21 Oct 2015 07:28:00 GMT"
    script: list[str | int] = [503, 500, 502, 429, 404, 409, 400, 403, "ok"]
    config = SimConfig(
        runs=0, accept_any=True, script={run_id: script}, script_retry_after=http_date
    )
    async with sim_harness(config) as sim:
        responses = [await sim.rerun(run_id) for _ in range(len(script) + 1)]
        assert [r.status for r in responses] == [503, 500, 502, 429, 404, 409, 400, 403, 202, 202]
        assert responses[0].json() == {"message": "Service Unavailable"}
        assert responses[2].headers["Content-Type"].startswith("text/html")
        assert responses[3].headers["Retry-After"] == http_date
        assert responses[3].json() == {"message": "Too Many Attempts."}
        assert "Retry-After" not in responses[0].headers
        # Scripted errors never applied the rerun; "ok" and the one after did.
        assert sim.state.stats.accepted == {run_id: 2}
        log = list(sim.state.request_log)
        assert [e.scripted for e in log] == [True] * 8 + [False, False]
        assert [e.fault for e in log][:4] == ["503", "500", "502", "429"]
        # Other runs are not scripted.
        assert (await sim.rerun("fl_run_other")).status == 202


async def test_scripts_take_precedence_over_random_faults() -> None:
    run_id = "fl_run_scripted"
    config = SimConfig(runs=0, accept_any=True, p_503=1.0, script={run_id: [409]})
    async with sim_harness(config) as sim:
        assert [(await sim.rerun(run_id)).status for _ in range(3)] == [409, 503, 503]


def test_latency_is_decided_per_request_without_a_server() -> None:
    clock = FakeClock()
    state = SimState(SimConfig(runs=3, latency_ms=20.0), clock.now)
    incoming = Incoming(
        method="GET",
        path=f"/workflows/runs/{state.seeded_run_ids[0]}",
        url="http://sim/",
        page=None,
        authorization="Bearer sim-token",
    )
    reply = handle(state, incoming)
    assert reply.status == 200
    assert reply.delay_s == pytest.approx(0.02)
    unauthenticated = handle(state, Incoming("GET", "/x", "http://sim/x", None, None))
    assert unauthenticated.status == 401
    assert unauthenticated.delay_s == pytest.approx(0.02)


def test_slow_delay_adds_to_latency() -> None:
    clock = FakeClock()
    config = SimConfig(runs=0, accept_any=True, latency_ms=10.0, slow_s=3.0, p_slow=1.0)
    state = SimState(config, clock.now)
    reply = handle(
        state,
        Incoming("POST", "/workflows/runs/fl_run_a/rerun", "http://sim/", None, "Bearer sim-token"),
    )
    assert reply.status == 202
    assert reply.delay_s == pytest.approx(3.01)
