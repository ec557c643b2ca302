"""Error budget, circuit breaker and the server's stated limit, end to end against the
simulator on loopback, on a virtual clock both sides share."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orchestrator.errors import ExitCode
from orchestrator.outcome import StopReason, exit_code, summary
from orchestrator.pacing.backoff import Backoff
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.fakeclock import FakeClock
from tests.helpers.rerunkit import make_ids, rerun

# Backoff so small that a gap between requests can only be the circuit's doing.
TINY_BACKOFF = Backoff(base_s=0.001, cap_s=0.001)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.jsonl"


async def test_spent_error_budget_stops_sending_and_exits_3(ledger: Path) -> None:
    ids = make_ids(40)
    config = SimConfig(accept_any=True, script={i: [404] for i in ids[2:8]})
    async with RunningSimulator(config) as sim:
        done = await rerun(sim, ledger, ids, concurrency=1, max_client_failures="3")
        assert done.result.reason is StopReason.BUDGET
        assert exit_code(done.result) == ExitCode.ABORTED
        fields = summary(done.result).as_fields()
        assert fields["abort_detail"] == (
            "3 client failures (4xx) of 5 settled IDs reached the limit of 3"
        )
        assert fields["in_doubt"] == 0
        # Nothing was sent after the third failure, and nothing in flight was lost.
        rerun_posts = [e for e in sim.state.request_log if e.method == "POST"]
        assert len(rerun_posts) == 5
        assert len(done.events("failed")) == 3
        assert len(done.events("succeeded")) == 2


async def test_server_failures_have_their_own_budget(ledger: Path) -> None:
    ids = make_ids(20)
    script: dict[str, list[str | int]] = {i: [404] for i in ids[:5]}
    script.update({i: [503, 503] for i in ids[5:8]})
    async with RunningSimulator(SimConfig(accept_any=True, script=script)) as sim:
        done = await rerun(
            sim,
            ledger,
            ids,
            concurrency=1,
            max_attempts=2,
            backoff=TINY_BACKOFF,
            max_server_failures="2",
            circuit_threshold=0,
        )
    assert done.result.tally.failed == {"not_found": 5, "server_error": 2}
    assert done.result.reason is StopReason.BUDGET


async def test_open_circuit_pauses_sending_with_growing_backoff_then_probes(
    ledger: Path,
) -> None:
    ids = make_ids(6)
    # Four 503s in a row for each of the first two IDs: two short outages.
    config = SimConfig(accept_any=True, script={ids[0]: [503] * 4, ids[1]: [503] * 4})
    clock = FakeClock()
    async with RunningSimulator(config, clock=clock.now) as sim:
        with capture_logs() as logs:
            done = await rerun(
                sim,
                ledger,
                ids,
                clock=clock,
                concurrency=1,
                max_attempts=5,
                backoff=TINY_BACKOFF,
                circuit_threshold=3,
                rate="1000/s",  # paced 1 ms apart: any longer gap is the circuit's
            )
    posts = [e for e in sim.state.request_log if e.method == "POST"]
    first = [e.at for e in posts if e.run_id == ids[0]]
    gaps = [b - a for a, b in itertools.pairwise(first)]
    # Three faults open the circuit for 1 s: the fourth attempt is the probe. It fails,
    # so the circuit opens for 2 s; the fifth attempt, the next probe, succeeds.
    assert all(g <= 0.0021 for g in gaps[:2])
    assert gaps[2] >= 1.0
    assert gaps[3] >= 2.0
    assert [e.status for e in posts if e.run_id == ids[0]] == [503, 503, 503, 503, 202]
    # Closed again: the healthy IDs go out without a pause.
    rest = [e.at for e in posts if e.run_id in ids[2:]]
    assert max(rest) - min(rest) <= 0.001 * (len(rest) - 1) + 1e-6
    assert done.result.tally.circuit_opened == 4
    circuit_events = [e["event"] for e in logs if e["event"].startswith("circuit.")]
    assert circuit_events == ["circuit.opened", "circuit.opened", "circuit.closed"] * 2
    assert exit_code(done.result) == ExitCode.OK


async def test_a_limit_stated_in_headers_sets_the_pace(ledger: Path) -> None:
    """Told nothing by --rate, the client reads the server's X-RateLimit-Limit (300/min)
    off the first answer and paces itself at 5/s: not one 429 from a bucket with no
    burst, where sending unpaced would draw one on every other request."""
    clock = FakeClock(autojump=False)
    config = SimConfig(accept_any=True, rate=5.0, burst=0)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        with capture_logs() as logs:
            done = await rerun(sim, ledger, make_ids(20), clock=clock, rate="none", concurrency=1)
    learned = next(e for e in logs if e["event"] == "rate.from_server")
    assert learned["new_per_s"] == 5.0
    arrivals = [e.at for e in sim.state.request_log if e.method == "POST"]
    assert all(e.status == 202 for e in sim.state.request_log)
    assert min(b - a for a, b in itertools.pairwise(arrivals)) >= 0.2 - 1e-9
    assert done.result.tally.succeeded == 20
