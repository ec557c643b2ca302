"""`orchestrator select` end to end against the simulator on loopback: in-process for
paging, windows, pacing and failures; as subprocesses for the pipe into `rerun`."""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aioresponses import aioresponses
from structlog.testing import capture_logs

from orchestrator.api.client import AltostratClient
from orchestrator.api.models import ExecutionsPage, RunObject
from orchestrator.api.outcomes import Failed, Retryable
from orchestrator.cli import main
from orchestrator.errors import ExitCode
from orchestrator.ids import parse_line
from orchestrator.pacing.backoff import Backoff
from orchestrator.select.session import (
    SelectOutcome,
    exit_code,
)
from orchestrator.select.walk import Criteria
from orchestrator.simulator import RunningSimulator, SimConfig
from orchestrator.simulator.models import Run
from tests.helpers.fakeclock import FakeClock
from tests.helpers.fakeresponse import FakeResponse
from tests.helpers.selectkit import FIXED, TOKEN, expected, newest_first, select


class ShiftingClock(FakeClock):
    """A fake clock that changes the world whenever the client waits its turn, that is
    between two page reads (with a rate, the pacer sleeps before every request but the
    first)."""

    def __init__(self) -> None:
        super().__init__()
        self.between: Callable[[], None] = lambda: None

    async def sleep(self, seconds: float) -> None:
        self.between()
        await super().sleep(seconds)


# ---- what is printed -------------------------------------------------------------------


async def test_failed_runs_in_a_window_are_printed_newest_first_across_many_pages() -> None:
    config = SimConfig(runs=900, workflows=2, per_page=7, now_wall=FIXED, seed=3)
    since, until = FIXED - timedelta(hours=9), FIXED - timedelta(hours=1)
    async with RunningSimulator(config) as sim:
        workflow_id = sim.state.workflow_ids[1]
        want = expected(sim, workflow_id, "failed", since, until)
        criteria = Criteria(frozenset({"failed"}), since, until)
        result, lines = await select(sim, [workflow_id], criteria=criteria)
    assert len(want) > 30
    assert lines == want
    assert exit_code(result) == ExitCode.OK
    assert result.outcome is SelectOutcome.COMPLETED
    assert result.workflows[workflow_id].stats.matched == len(want)


async def test_paging_stops_at_the_first_page_wholly_older_than_since() -> None:
    config = SimConfig(runs=600, workflows=1, per_page=10, now_wall=FIXED, seed=4)
    since = FIXED - timedelta(hours=5)
    async with RunningSimulator(config) as sim:
        workflow_id = sim.state.workflow_ids[0]
        runs = newest_first(sim, workflow_id)
        first_older = next(i for i, run in enumerate(runs) if run.created_at < since)
        # The page holding the first older run, and the page after it unless that run opens
        # its page (then that page is wholly older already).
        boundary = first_older // 10 + 1
        pages = boundary if first_older % 10 == 0 else boundary + 1
        result, lines = await select(sim, criteria=Criteria(since=since))
        assert sim.state.stats.requests == pages
    assert pages < 60
    assert lines == [run.id for run in runs[:first_older]]
    assert result.workflows[workflow_id].stats.pages == pages


async def test_since_is_inclusive_and_until_exclusive_to_the_microsecond() -> None:
    async with RunningSimulator(SimConfig(runs=120, workflows=1, now_wall=FIXED)) as sim:
        runs = newest_first(sim, sim.state.workflow_ids[0])
        since, until = runs[40].created_at, runs[10].created_at
        _, lines = await select(sim, criteria=Criteria(since=since, until=until))
    assert lines == [run.id for run in runs[11:41]]


async def test_json_lines_are_the_run_objects_and_rerun_reads_their_ids() -> None:
    async with RunningSimulator(SimConfig(runs=60, workflows=1, now_wall=FIXED)) as sim:
        workflow_id = sim.state.workflow_ids[0]
        _, lines = await select(sim, criteria=Criteria(frozenset({"failed"})), as_json=True)
        want = expected(sim, workflow_id, "failed")
    objects = [json.loads(line) for line in lines]
    assert [o["id"] for o in objects] == want
    assert all(o["status"] == "failed" and o["workflow_id"] == workflow_id for o in objects)
    assert all("error_message" in o and "logs" in o for o in objects)  # as the API sent it
    assert [parse_line(line.encode(), n) for n, line in enumerate(lines, 1)] == want


async def test_limit_stops_printing_and_paging() -> None:
    async with RunningSimulator(SimConfig(runs=200, workflows=1, now_wall=FIXED)) as sim:
        result, lines = await select(sim, limit=5)
        assert sim.state.stats.requests == 1
        assert lines == expected(sim, sim.state.workflow_ids[0])[:5]
    assert result.outcome is SelectOutcome.LIMIT
    assert exit_code(result) == ExitCode.OK


async def test_workflows_are_walked_in_the_order_given_and_each_once() -> None:
    async with RunningSimulator(SimConfig(runs=90, workflows=3, now_wall=FIXED)) as sim:
        first, second, _ = sim.state.workflow_ids
        result, lines = await select(sim, [second, first])
        assert lines == expected(sim, second) + expected(sim, first)
    assert list(result.workflows) == [second, first]


async def test_an_empty_selection_exits_0() -> None:
    async with RunningSimulator(SimConfig(runs=50, workflows=1, now_wall=FIXED)) as sim:
        result, lines = await select(sim, criteria=Criteria(since=FIXED))
    assert lines == []
    assert exit_code(result) == ExitCode.OK


# ---- a list that moves while it is read ----------------------------------------------------


async def test_runs_joining_between_page_reads_are_neither_repeated_nor_skipped() -> None:
    """Reruns land on top of the list between page reads (a burst of more than a page
    once), so items slide to later pages: each run of the list as it stood is printed
    once, in order, and none of the runs that joined."""
    clock = ShiftingClock()
    config = SimConfig(runs=200, workflows=1, per_page=10, now_wall=FIXED, seed=5)
    async with RunningSimulator(config, clock=clock.now) as sim:
        workflow_id = sim.state.workflow_ids[0]
        at_start = expected(sim, workflow_id)
        oldest = sim.state.runs[at_start[-1]]
        bursts = iter([3, 25, 0, 7, *[4] * 200])
        joined: list[str] = []

        def rerun_some() -> None:
            for _ in range(next(bursts)):
                joined.append(sim.state.rerun(oldest, clock.now()).id)

        clock.between = rerun_some
        result, lines = await select(sim, clock=clock, rate=1.0)
    stats = result.workflows[workflow_id].stats
    assert lines == at_start
    assert not set(lines) & set(joined)
    assert stats.repeats > 0
    assert stats.arrived > 0  # the burst pushed new runs onto a page not yet read
    assert exit_code(result) == ExitCode.OK


async def test_runs_deleted_between_page_reads_make_the_walk_read_back() -> None:
    clock = ShiftingClock()
    config = SimConfig(runs=150, workflows=1, per_page=10, now_wall=FIXED, seed=6)
    async with RunningSimulator(config, clock=clock.now) as sim:
        workflow_id = sim.state.workflow_ids[0]
        at_start = expected(sim, workflow_id)
        # The simulator's live listing, oldest first: deleting from it is what a retention
        # job on the real service would do.
        listing: list[Run] = sim.state.listing(workflow_id)  # type: ignore[assignment]
        rng = random.Random(1)
        deleted: set[str] = set()

        def delete_some() -> None:
            for _ in range(min(3, len(listing))):
                deleted.add(listing.pop(rng.randrange(len(listing))).id)

        clock.between = delete_some
        result, lines = await select(sim, clock=clock, rate=1.0)
    assert len(lines) == len(set(lines))
    assert set(lines) <= set(at_start)
    assert {i for i in at_start if i not in deleted} <= set(lines)
    assert result.workflows[workflow_id].stats.stepped_back > 0


# ---- pacing, retries and failures ------------------------------------------------------


async def test_pages_are_requested_no_faster_than_the_rate() -> None:
    clock = FakeClock()
    rate = 4.0
    async with RunningSimulator(
        SimConfig(runs=300, workflows=1, per_page=10), clock=clock.now
    ) as sim:
        await select(sim, clock=clock, rate=rate)
        times = [entry.at for entry in sim.state.request_log]
    assert len(times) == 30
    # In every second, at most `rate` requests: each one 1/rate after the one before.
    assert all(later - earlier >= 1 / rate - 1e-9 for earlier, later in itertools.pairwise(times))


async def test_a_429_with_retry_after_pauses_then_the_walk_finishes() -> None:
    clock = FakeClock()
    config = SimConfig(runs=100, workflows=1, per_page=20, rate=1.0, now_wall=FIXED)
    async with RunningSimulator(config, clock=clock.now) as sim:
        with capture_logs() as logs:
            result, lines = await select(sim, clock=clock)
        assert lines == expected(sim, sim.state.workflow_ids[0])
    assert result.by_status["429"] == result.retries > 0
    assert any(log["event"] == "select.paused" for log in logs)
    assert exit_code(result) == ExitCode.OK


async def test_retries_running_out_exit_1_and_keep_what_was_printed() -> None:
    # One request an hour, and no header to say so: the second page is refused for good.
    config = SimConfig(
        runs=100, workflows=1, per_page=15, rate=1 / 3600, retry_after=False,
        rate_limit_headers="none",
    )  # fmt: skip
    clock = FakeClock()
    async with RunningSimulator(config, clock=clock.now) as sim:
        with capture_logs() as logs:
            result, lines = await select(
                sim, clock=clock, max_attempts=2, backoff=Backoff(base_s=0.01, cap_s=0.01)
            )
        first_page = expected(sim, sim.state.workflow_ids[0])[:15]
    assert lines == first_page
    assert exit_code(result) == ExitCode.INCOMPLETE
    (workflow,) = result.workflows.values()
    assert workflow.error == "rate_limited"
    (failed,) = [log for log in logs if log["event"] == "select.workflow_failed"]
    assert (failed["http_status"], failed["page"]) == (429, 2)


async def test_a_refused_token_aborts_with_exit_3_after_one_request() -> None:
    async with RunningSimulator(SimConfig(runs=50, workflows=2)) as sim:
        result, lines = await select(sim, sim.state.workflow_ids, token="wrong-token")
        assert sim.state.stats.requests == 1
    assert lines == []
    assert result.outcome is SelectOutcome.ABORTED
    assert exit_code(result) == ExitCode.ABORTED


async def test_an_unknown_workflow_is_reported_and_the_others_are_still_listed() -> None:
    async with RunningSimulator(SimConfig(runs=50, workflows=1, now_wall=FIXED)) as sim:
        real = sim.state.workflow_ids[0]
        with capture_logs() as logs:
            result, lines = await select(sim, ["fl_nosuchworkflow", real])
        assert lines == expected(sim, real)
    assert result.workflows["fl_nosuchworkflow"].error == "not_found"
    assert [log["event"] for log in logs if log["log_level"] == "error"] == [
        "select.workflow_not_found"
    ]
    assert exit_code(result) == ExitCode.INCOMPLETE


# ---- the client's read methods -----------------------------------------------------------


async def test_get_run_and_list_executions_against_the_simulator() -> None:
    async with (
        RunningSimulator(SimConfig(runs=40, workflows=1)) as sim,
        aiohttp.ClientSession() as session,
    ):
        client = AltostratClient(session, sim.base_url, sim.config.token, 5)
        run_id = sim.state.failed_run_ids[0]
        run = await client.get_run(run_id)
        assert isinstance(run, RunObject)
        assert (run.id, run.status) == (run_id, "failed")
        assert run.error_message
        assert await client.get_run("fl_run_nosuchrun") == Failed(404, "not_found")
        page = await client.list_executions(sim.state.workflow_ids[0], 2)
        assert isinstance(page, ExecutionsPage)
        assert page.meta is not None
        assert page.meta.current_page == 2
        requests = sim.state.stats.requests
        assert await client.get_run("fl_run_a/../x") == Failed(None, "invalid_id")
        assert await client.list_executions("a?page=9", 1) == Failed(None, "invalid_id")
        assert sim.state.stats.requests == requests  # nothing was sent for those


LIST_URL = "http://api.test/workflows/fl_w1/executions?page=1"


@pytest.mark.parametrize(
    ("mock", "outcome"),
    [
        ({"status": 200, "body": b'{"data": '}, Retryable(200, "bad_response", True)),
        ({"status": 200, "body": b"<html>ok</html>"}, Retryable(200, "bad_response", True)),
        ({"status": 302, "headers": {"Location": "http://x/"}}, Failed(302, "unexpected_status")),
        ({"exception": TimeoutError()}, Retryable(None, "timeout", True)),
        ({"exception": aiohttp.ServerDisconnectedError()}, Retryable(None, "connection", True)),
    ],
)
async def test_a_read_classifies_broken_answers(mock: dict[str, Any], outcome: object) -> None:
    """A GET changes nothing, so a timeout or cut connection is safe to retry."""
    with aioresponses() as mocked:
        mocked.get(LIST_URL, response_class=FakeResponse, **mock)
        async with aiohttp.ClientSession() as session:
            answer = await AltostratClient(session, "http://api.test", "t0ken", 5).list_executions(
                "fl_w1", 1
            )
    assert answer == outcome


# ---- the command line ------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "one of the arguments --workflow --all-workflows is required"),
        (["--workflow", "fl_a", "--status", "broken"], "argument --status: invalid choice"),
        (["--workflow", "fl_a", "--since", "yesterday"], "invalid --since: 'yesterday' is neither"),
        (["--workflow", "fl_a", "--until", "2026-03-02T09:00"], "invalid --until: '2026-03-02"),
        (["--workflow", "fl_a", "--since", "1h", "--until", "2h"], "must be before --until"),
        (["--workflow", "fl_run_abc"], "invalid --workflow 'fl_run_abc': it is a run ID"),
        (["--workflow", "../x"], "invalid --workflow '../x': it may hold only"),
        (["--workflow", "fl_a", "--limit", "0"], "invalid --limit: must be at least 1"),
        (["--workflow", "fl_a", "--rate", "fast"], "invalid --rate"),
        (["--workflow", "fl_a", "--max-attempts", "0"], "invalid --max-attempts"),
        (["--workflow", "fl_a", "--base-url", "localhost:80"], "invalid --base-url"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("ALTOSTRAT_TOKEN", TOKEN)
    code, err = cli(capsys, "select", *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_no_token_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALTOSTRAT_TOKEN", raising=False)
    code, err = cli(capsys, "select", "--workflow", "fl_a")
    assert code == 2
    assert err.strip() == (
        "orchestrator: error: no API token: set ALTOSTRAT_TOKEN or pass --token-file PATH"
    )


# ---- as subprocesses ---------------------------------------------------------------------


def clean_env(token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALTOSTRAT_", "ORCHESTRATOR_"))}
    if token is not None:
        env["ALTOSTRAT_TOKEN"] = token
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


@pytest.mark.subprocess
async def test_select_piped_into_rerun_reruns_exactly_the_failed_runs_of_the_last_hour(
    tmp_path: Path,
) -> None:
    """The issue's own words: `select --workflow … --status failed --since 1h | rerun -`."""
    config = SimConfig(runs=2400, workflows=3, token=TOKEN)
    async with RunningSimulator(config) as sim:
        workflow_id = sim.state.workflow_ids[0]
        failed = [
            (run.id, run.created_at)
            for run in newest_first(sim, workflow_id)
            if sim.state.snapshot(run).status == "failed"
        ]
        read, write = os.pipe()
        before = datetime.now(UTC)
        select_args = ["select", "--workflow", workflow_id, "--status", "failed", "--since", "1h"]
        with (
            (tmp_path / "select.err").open("wb") as select_err,
            (tmp_path / "rerun.err").open("wb") as rerun_err,
            anyio.fail_after(60),
        ):
            selecting = await anyio.open_process(
                command(*select_args, "--base-url", sim.base_url, "--rate", "20/s"),
                stdout=write,
                stderr=select_err,
                env=clean_env(),
                cwd=tmp_path,
            )
            rerunning = await anyio.open_process(
                command("rerun", "-", "--base-url", sim.base_url, "--rate", "20/s"),
                stdin=read,
                stderr=rerun_err,
                env=clean_env(),
                cwd=tmp_path,
            )
            os.close(read)
            os.close(write)
            async with selecting, rerunning:
                select_code = await selecting.wait()
                rerun_code = await rerunning.wait()
        after = datetime.now(UTC)
        accepted = Counter(sim.state.stats.accepted)
    assert (select_code, rerun_code) == (0, 0), (tmp_path / "select.err").read_text()
    # Select read the clock somewhere between `before` and `after`.
    surely_in = {run_id for run_id, created in failed if created >= after - timedelta(hours=1)}
    maybe_in = {run_id for run_id, created in failed if created >= before - timedelta(hours=1)}
    assert len(surely_in) >= 5
    assert surely_in <= set(accepted) <= maybe_in
    assert set(accepted.values()) == {1}
    summary = json.loads((tmp_path / "select.err").read_text().splitlines()[-1])
    assert summary["event"] == "select.summary"
    assert summary["printed"] == len(accepted)


@pytest.mark.subprocess
async def test_a_reader_that_goes_away_ends_select_quietly(tmp_path: Path) -> None:
    """`orchestrator select … | head -1`: exit 141, as every command whose reader went
    away, and no traceback on stderr."""
    async with RunningSimulator(SimConfig(runs=3000, workflows=1, token=TOKEN)) as sim:
        args = ["select", "--workflow", sim.state.workflow_ids[0], "--base-url", sim.base_url]
        read, write = os.pipe()
        with anyio.fail_after(60):
            process = await anyio.open_process(
                command(*args, "--rate", "50/s"), stdout=write, env=clean_env(), cwd=tmp_path
            )
            os.close(write)
            async with process:
                with os.fdopen(read, "rb") as reader:
                    first = await anyio.to_thread.run_sync(reader.readline)
                # The read end is closed now, as `head -1` closes it after its line.
                assert process.stderr is not None
                err = b""
                async for chunk in process.stderr:
                    err += chunk
                code = await process.wait()
    assert first.startswith(b"fl_run_")
    assert code == 141
    text = err.decode()
    assert "Traceback" not in text
    assert "Exception ignored" not in text
    assert json.loads(text.splitlines()[-1])["outcome"] == "output_closed"


@pytest.mark.subprocess
async def test_the_token_never_appears_in_any_output(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    outputs: list[str] = []
    async with RunningSimulator(SimConfig(runs=60, workflows=1, token=TOKEN)) as sim:
        workflow_id = sim.state.workflow_ids[0]
        for token, log_format, expected_code in ((TOKEN, "json", 0), ("x" + TOKEN, "console", 3)):
            token_file.write_text(token + "\n")
            args = ["select", "--workflow", workflow_id, "--base-url", sim.base_url]
            args += ["--log-level", "debug", "--log-format", log_format, "--rate", "none"]
            args += ["--token-file", str(token_file), "--json"]
            with anyio.fail_after(30):
                done = await anyio.run_process(
                    command(*args), env=clean_env(None), cwd=tmp_path, check=False
                )
            assert done.returncode == expected_code
            outputs += [done.stdout.decode(), done.stderr.decode()]
    assert '"id":"fl_run_' in outputs[0]
    for text in outputs:
        assert TOKEN not in text
