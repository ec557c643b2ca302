"""Giving up on a dead API (`--max-outage`): the run stops with exit 3 and leaves every ID
it did not settle resendable, so the same command finishes the job once the API is back.
On loopback, against a port where nothing listens, on a virtual clock."""

from __future__ import annotations

import contextlib
import io
import json
import random
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orchestrator.api.outcomes import Answer
from orchestrator.commands.rerun import FLAGS
from orchestrator.errors import ExitCode, OutageError
from orchestrator.ledger.idstore import IdState
from orchestrator.ledger.replay import replay_file
from orchestrator.outcome import RunResult, StopReason, exit_code, summary
from orchestrator.pacing.pacer import Pacer
from orchestrator.rerun.plumbing import Plumbing
from orchestrator.rerun.session import run_rerun
from orchestrator.settings import load_settings
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.clikit import run_cli
from tests.helpers.fakeclock import FakeClock
from tests.helpers.rerunkit import make_ids

TOKEN = "sim-token"
REFUSED = Answer(fault=True, answered=False, error="connection: connection refused")
BUSY = Answer(fault=True, error="HTTP 503 server_error")


def dead_port() -> int:
    """A loopback port where nothing listens: bound, read, and closed again."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def run(
    base_url: str, ledger: Path, ids: list[str], clock: FakeClock, **flags: object
) -> RunResult:
    given: dict[str, object] = {"base_url": base_url, "ledger": ledger, "rate": "none"}
    given |= {"rate_store": "none", **flags}
    settings = load_settings(given, FLAGS).settings
    data = "".join(f"{i}\n" for i in ids).encode()
    plumbing = Plumbing(
        clock=clock,
        rng=random.Random(0),
        handle_signals=False,
        stdin=io.BytesIO(data),
        stdout=io.StringIO(),
    )
    return await run_rerun(settings, TOKEN, plumbing)


@pytest.mark.parametrize(
    ("given", "seconds"),
    [(None, 300.0), ("90s", 90.0), ("1h", 3600.0), ("none", None), ("0", None), (0, None)],
)
def test_max_outage_is_5_minutes_unless_set_and_none_or_0_turn_it_off(
    given: object, seconds: float | None
) -> None:
    flags = {} if given is None else {"max_outage": given}
    assert load_settings(flags, FLAGS).settings.max_outage == seconds


# ---- the pacer's watch ----------------------------------------------------------------


def test_an_outage_counts_from_the_first_request_that_got_no_answer() -> None:
    clock = FakeClock()
    pacer = Pacer(None, clock, max_outage=300)
    assert pacer.outage_deadline() is None
    pacer.observe(REFUSED, sent_at=clock.now() - 2)
    assert pacer.outage_deadline() == clock.now() - 2 + 300
    clock.advance(60)
    pacer.observe(REFUSED)  # still the first one's time
    assert pacer.outage_deadline() == clock.now() - 60 - 2 + 300
    pacer.observe(Answer(), sent_at=clock.now())  # any HTTP answer ends it
    assert pacer.outage_deadline() is None


def test_without_max_outage_there_is_never_an_outage() -> None:
    clock = FakeClock()
    pacer = Pacer(None, clock, circuit_threshold=1)
    pacer.observe(REFUSED)
    clock.advance(86400)
    assert pacer.outage_deadline() is None
    pacer.check_outage()  # raises nothing


async def test_a_circuit_held_open_raises_outage_at_max_outage_and_waits_no_longer() -> None:
    """Answers come (503s), but the circuit stays open: the turn that reaches max-outage
    raises, at that instant, not at the end of the circuit's next backoff."""
    clock = FakeClock()
    pacer = Pacer(None, clock, circuit_threshold=1, max_outage=10)
    opened = clock.now()
    pacer.observe(BUSY)

    async def probe_until_given_up() -> None:
        for _ in range(20):
            pacer.observe(BUSY, sent_at=await pacer.turn())  # each probe fails again

    with pytest.raises(OutageError) as caught:
        await probe_until_given_up()
    assert caught.value.kind == "circuit_open"
    assert caught.value.last_error == "HTTP 503 server_error"
    assert clock.now() == pytest.approx(opened + 10)


# ---- the engine, on loopback ----------------------------------------------------------


@pytest.mark.parametrize("circuit_threshold", [10, 0], ids=["circuit", "no-circuit"])
async def test_a_dead_api_stops_with_outage_exit_3_and_every_id_stays_resendable(
    tmp_path: Path, circuit_threshold: int
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ids = make_ids(30)
    base_url = f"http://127.0.0.1:{dead_port()}"
    clock = FakeClock(autojump=False)
    started = clock.now()
    with capture_logs() as logs:
        async with clock.driven():
            result = await run(
                base_url,
                ledger,
                ids,
                clock,
                concurrency=4,
                circuit_threshold=circuit_threshold,
                max_outage="2m",
            )
    assert result.reason is StopReason.OUTAGE
    assert exit_code(result) == ExitCode.ABORTED
    # Given up once the 2 minutes were up, not after the next minute-long backoff or more.
    assert 120 <= clock.now() - started < 150
    detail = str(summary(result).as_fields()["abort_detail"])
    assert detail.startswith("outage: no HTTP answer from " + base_url)
    assert "last error: connection: connection refused" in detail
    [error] = [e for e in logs if e["log_level"] == "error"]
    assert error["event"] == "rerun.outage"
    assert (error["base_url"], error["last_error"]) == (base_url, "connection: connection refused")
    # Nothing settled, nothing in doubt: the next run sends every ID again.
    states = replay_file(ledger).ids
    assert result.tally.succeeded == result.tally.failed_total == 0
    assert result.tally.in_doubt == []
    assert set(states.values()) <= {IdState.RESENDABLE}
    assert states.keys() <= set(ids)

    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        again = await run(sim.base_url, ledger, ids, FakeClock())
    assert again.reason is StopReason.COMPLETED
    assert again.tally.succeeded == 30
    assert exit_code(again) == ExitCode.OK


async def test_a_circuit_held_open_by_5xx_answers_is_an_outage_too(tmp_path: Path) -> None:
    ids = make_ids(12)
    config = SimConfig(accept_any=True, token=TOKEN, script={i: [503] * 100 for i in ids})
    async with RunningSimulator(config) as sim:
        result = await run(sim.base_url, tmp_path / "l.jsonl", ids, FakeClock(), max_attempts=100)
    assert result.reason is StopReason.OUTAGE
    detail = str(summary(result).as_fields()["abort_detail"])
    assert "the circuit open" in detail
    assert "last error: HTTP 503 server_error" in detail
    assert result.tally.in_doubt == []
    assert result.tally.failed_total == 0


class AtTime(FakeClock):
    """A virtual clock that runs `action` once, the first time it passes `at` seconds."""

    def __init__(
        self, at: float, action: Callable[[], Awaitable[None]], *, autojump: bool = True
    ) -> None:
        super().__init__(autojump=autojump)
        self._at = self.now() + at
        self._action: Callable[[], Awaitable[None]] | None = action

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if self._action is not None and self.now() >= self._at:
            action, self._action = self._action, None
            await action()


async def test_a_run_whose_api_comes_back_before_max_outage_goes_on(tmp_path: Path) -> None:
    """Down for 4 virtual minutes, under the default 5: the run waits it out and sends all."""
    port = dead_port()
    ids = make_ids(20)
    async with contextlib.AsyncExitStack() as stack:

        async def revive() -> None:
            sim = RunningSimulator(SimConfig(accept_any=True, token=TOKEN), port=port)
            await stack.enter_async_context(sim)

        clock = AtTime(240, revive, autojump=False)  # many sleepers: time driven faithfully
        started = clock.now()
        async with clock.driven():
            result = await run(f"http://127.0.0.1:{port}", tmp_path / "l.jsonl", ids, clock)
    assert result.reason is StopReason.COMPLETED
    assert result.tally.succeeded == 20
    assert result.tally.circuit_opened >= 1
    assert clock.now() - started >= 240  # it did wait the outage out


async def test_with_wait_an_api_gone_while_following_stops_as_an_outage(tmp_path: Path) -> None:
    """Polls pass the same pacer: once the API is gone for --max-outage, the run stops
    (exit 3) instead of polling on until --wait-timeout, and the next run follows on."""
    ids = make_ids(5)
    ledger = tmp_path / "l.jsonl"
    stuck = dict.fromkeys(ids, "stuck")  # new runs that never end
    async with RunningSimulator(
        SimConfig(accept_any=True, token=TOKEN, rerun_outcomes=stuck)
    ) as sim:
        # The API goes away while the new runs are followed (a clock driven faithfully:
        # the first poll's nap must not carry time past the reruns still in flight).
        clock = AtTime(5, sim.stop, autojump=False)
        async with clock.driven():
            result = await run(
                sim.base_url, ledger, ids, clock, wait=True, poll_interval="10s", max_outage="2m"
            )
    assert result.reason is StopReason.OUTAGE
    assert exit_code(result) == ExitCode.ABORTED
    assert result.tally.succeeded == 5
    assert sum(result.tally.finished.values()) == 0  # none given up as timed out
    assert len(replay_file(ledger, unfinished=True).unfinished or {}) == 5


# ---- the CLI ------------------------------------------------------------------------------


@pytest.mark.subprocess
async def test_cli_gives_up_on_a_dead_api_with_exit_3_and_an_outage_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in make_ids(5)))
    base_url = f"http://127.0.0.1:{dead_port()}"
    code, _, stderr = await run_cli(
        "rerun",
        "ids.txt",
        "--base-url",
        base_url,
        "--max-outage",
        "1s",
        "--rate-store",
        "none",
        "--log-format",
        "json",
        cwd=tmp_path,
        token="a-token-long-enough-to-pass-for-a-real-one",
    )
    assert code == ExitCode.ABORTED, stderr
    lines = [json.loads(line) for line in stderr.splitlines()]
    [error] = [
        line for line in lines if line["level"] == "error" and line["event"] != "rerun.summary"
    ]
    assert error["event"] == "rerun.outage"
    assert "outage" in error["detail"]
    assert error["base_url"] == base_url
    assert error["last_error"] == "connection: connection refused"
    [final] = [line for line in lines if line["event"] == "rerun.summary"]
    assert final["outcome"] == "outage"
    assert final["exit_code"] == 3
    assert final["base_url"] == base_url
    assert final["in_doubt"] == 0
    states = replay_file(tmp_path / "rerun-ledger.jsonl").ids
    assert len(states) > 0
    assert set(states.values()) == {IdState.RESENDABLE}
