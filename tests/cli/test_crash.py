"""Crash safety, proven: the CLI as a real subprocess against the simulator, killed with
SIGKILL at random moments, interrupted with SIGINT/SIGTERM, then resumed. The simulator's
per-ID accepted counts are the ground truth."""

from __future__ import annotations

import json
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from orchestrator.ledger.replay import replay_file
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.clikit import TOKEN, env, wait_for_event, write_ids
from tests.helpers.rerunkit import make_ids

pytestmark = pytest.mark.subprocess

CONCURRENCY = 8


def rerun_args(source: Path, sim: RunningSimulator, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "orchestrator", "rerun", str(source), "--base-url", sim.base_url,
        "--concurrency", str(CONCURRENCY), "--log-level", "debug", "--log-format", "json",
        *extra,
    ]  # fmt: skip


async def test_kill_9_at_random_moments_loses_nothing_and_doubles_only_in_doubt_ids(
    tmp_path: Path,
) -> None:
    ids = make_ids(300)
    source = write_ids(tmp_path / "ids.txt", ids)
    ledger = tmp_path / "rerun-ledger.jsonl"
    rng = random.Random(20261130)
    # 20 ms per answer keeps requests in flight at the moment of the kill.
    config = SimConfig(accept_any=True, token=TOKEN, latency_ms=20)
    reported_in_doubt: set[str] = set()
    async with RunningSimulator(config) as sim:
        for _ in range(4):
            args = rerun_args(source, sim, "--rate", "none")
            with anyio.fail_after(30):
                async with await anyio.open_process(args, cwd=tmp_path, env=env()) as process:
                    await wait_for_event(process, "rerun.succeeded", count=rng.randint(5, 40))
                    process.kill()
                    await process.wait()
            in_doubt = set(replay_file(ledger).in_doubt())
            assert len(in_doubt - reported_in_doubt) <= CONCURRENCY
            reported_in_doubt |= in_doubt
        assert reported_in_doubt  # the kills did land with requests in flight

        # A resume without --retry-in-doubt names them and leaves them alone...
        with anyio.fail_after(60):
            done = await anyio.run_process(
                rerun_args(source, sim, "--rate", "none"), cwd=tmp_path, env=env(), check=False
            )
        summary = json.loads(done.stderr.decode().strip().splitlines()[-1])
        assert summary["in_doubt"] == len(reported_in_doubt)
        assert done.returncode == 1
        # ...and with it, sends them again.
        with anyio.fail_after(60):
            done = await anyio.run_process(
                rerun_args(source, sim, "--rate", "none", "--retry-in-doubt"),
                cwd=tmp_path, env=env(), check=False,
            )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()[-2000:]

    accepted = Counter(sim.state.stats.accepted)
    assert set(accepted) == set(ids)  # nothing lost
    twice = {run_id for run_id, n in accepted.items() if n > 1}
    assert twice <= reported_in_doubt  # nothing doubled that was not reported in doubt
    assert max(accepted.values()) <= 2


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_signal_drains_in_flight_requests_leaving_nothing_in_doubt(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    ids = make_ids(200)
    source = write_ids(tmp_path / "ids.txt", ids)
    config = SimConfig(accept_any=True, token=TOKEN, latency_ms=30)
    async with RunningSimulator(config) as sim:
        args = rerun_args(source, sim, "--rate", "100/s", "--timeout", "5")
        with anyio.fail_after(30):
            async with await anyio.open_process(args, cwd=tmp_path, env=env()) as process:
                await wait_for_event(process, "rerun.succeeded", count=10)
                process.send_signal(signum)
                assert await process.wait() == code
    resume = replay_file(tmp_path / "rerun-ledger.jsonl")
    assert resume.in_doubt() == []
    assert resume.corrupt_lines == 0
    # Every request that reached the server is settled in the ledger, once.
    assert len(sim.state.stats.accepted) == sum(
        1 for s in resume.ids.values() if s.name == "SUCCEEDED"
    )


async def test_a_hung_request_cannot_hold_a_signalled_exit_past_the_timeout(
    tmp_path: Path,
) -> None:
    ids = make_ids(50)
    source = write_ids(tmp_path / "ids.txt", ids)
    # The tenth ID's answer never comes in time: its request is in flight at the signal.
    config = SimConfig(accept_any=True, token=TOKEN, script={ids[9]: ["slow"]}, slow_s=60)
    async with RunningSimulator(config) as sim:
        args = rerun_args(source, sim, "--rate", "20/s", "--timeout", "2", "--concurrency", "2")
        with anyio.fail_after(20):
            async with await anyio.open_process(args, cwd=tmp_path, env=env()) as process:
                await wait_for_event(process, "rerun.succeeded", count=12)
                process.send_signal(signal.SIGTERM)
                stderr = await _drain(process)
                assert await process.wait() == 143
    summary = json.loads(stderr.strip().splitlines()[-1])
    # It may have been accepted (it was: the simulator applies slow reruns), so it is
    # reported in doubt, never silently resent or dropped.
    assert summary["in_doubt_ids"] == [ids[9]]
    assert replay_file(tmp_path / "rerun-ledger.jsonl").in_doubt() == [ids[9]]


async def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    ids = make_ids(50)
    source = write_ids(tmp_path / "ids.txt", ids)
    config = SimConfig(accept_any=True, token=TOKEN, script={ids[5]: ["slow"]}, slow_s=60)
    async with RunningSimulator(config) as sim:
        args = rerun_args(source, sim, "--rate", "20/s", "--timeout", "60", "--concurrency", "2")
        with anyio.fail_after(20):  # far less than --timeout: the second signal cut it short
            async with await anyio.open_process(args, cwd=tmp_path, env=env()) as process:
                # Past the opening burst (a second of the rate, at once): paced, the
                # one request in flight is the slow one.
                await wait_for_event(process, "rerun.succeeded", count=25)
                process.send_signal(signal.SIGINT)
                await wait_for_event(process, "rerun.stopping", count=1)
                process.send_signal(signal.SIGINT)
                stderr = await _drain(process)
                assert await process.wait() == 130
    summary = json.loads(stderr.strip().splitlines()[-1])
    assert summary["in_doubt_ids"] == [ids[5]]


async def _drain(process: anyio.abc.Process) -> str:
    assert process.stderr is not None
    chunks = [chunk async for chunk in process.stderr]
    return b"".join(chunks).decode()
