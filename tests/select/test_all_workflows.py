"""`orchestrator select --all-workflows`: GET /workflows, then each workflow walked as
`--workflow ID` walks it. Against the simulator (and a hostile server) on loopback."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import random
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from orchestrator.api.models import WorkflowList
from orchestrator.errors import ExitCode
from orchestrator.pacing.backoff import Backoff
from orchestrator.select.session import (
    SelectOutcome,
    SelectPlumbing,
    SelectResult,
    SelectSettings,
    exit_code,
    run_select,
)
from orchestrator.select.walk import Criteria, read_workflows
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.clikit import read_announcement, run_cli
from tests.helpers.fakeclock import FakeClock
from tests.helpers.hostileserver import hostile_server, respond
from tests.helpers.selectkit import FIXED, TOKEN, expected

REPO = Path(__file__).resolve().parents[2]
LOOPBACK_ONLY = ("--rate", "none", "--rate-store", "none")


async def select_all(
    base_url: str,
    token: str,
    *,
    clock: FakeClock | None = None,
    criteria: Criteria | None = None,
    **settings: Any,
) -> tuple[SelectResult, list[str]]:
    """One in-process `select --all-workflows` session; the result and stdout's lines."""
    out = io.StringIO()
    plumbing = SelectPlumbing(
        clock=clock or FakeClock(),
        rng=random.Random(0),
        stdout=out,
        backoff=Backoff(base_s=0.01, cap_s=0.01),
    )
    chosen = SelectSettings(
        workflows=(),
        all_workflows=True,
        criteria=criteria or Criteria(),
        base_url=base_url,
        **{"rate": None, **settings},
    )
    result = await run_select(chosen, token, plumbing)
    return result, out.getvalue().splitlines()


def json_answer(payload: object, status: int = 200) -> bytes:
    return respond(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


EMPTY_PAGE = json_answer({"data": [], "links": {"next": None}})


# ---- reading the list (pure) ---------------------------------------------------------------


def test_read_workflows_keeps_valid_ids_once_in_order_and_names_the_rest() -> None:
    listing = WorkflowList.model_validate(
        [
            {"id": "fl_b", "name": "B"},
            {"name": "no id"},
            5,
            {"id": "fl_run_abc"},
            {"id": 7},
            {"id": "../etc"},
            {"id": "fl_a"},
            {"id": "fl_b"},
        ]
    )
    found = read_workflows(listing)
    assert found.ids == ("fl_b", "fl_a")
    assert [u.id for u in found.unreadable] == [None, None, "fl_run_abc", None, "../etc"]
    assert "run ID" in found.unreadable[2].reason


# ---- against the simulator -----------------------------------------------------------------


async def test_all_workflows_are_walked_and_the_output_is_their_union() -> None:
    config = SimConfig(runs=400, workflows=4, per_page=9, now_wall=FIXED, seed=5)
    async with RunningSimulator(config) as sim:
        criteria = Criteria(frozenset({"failed"}))
        result, lines = await select_all(sim.base_url, sim.config.token, criteria=criteria)
        each = [expected(sim, w, "failed") for w in sim.state.workflow_ids]
        first = sim.state.request_log[0]
    assert all(each)
    # Each walked as --workflow ID walks it, in the order the API listed them.
    assert lines == list(itertools.chain.from_iterable(each))
    assert list(result.workflows) == sim.state.workflow_ids
    assert (first.method, first.path) == ("GET", "/workflows")
    assert exit_code(result) == ExitCode.OK


async def test_the_list_request_takes_its_slot_from_the_pacer() -> None:
    clock = FakeClock()
    rate = 2.0
    config = SimConfig(runs=30, workflows=3, per_page=50)
    async with RunningSimulator(config, clock=clock.now) as sim:
        result, _ = await select_all(sim.base_url, sim.config.token, clock=clock, rate=rate)
        log = [(entry.at, entry.path) for entry in sim.state.request_log]
    # The list and one page per workflow, each 1/rate after the one before.
    assert log[0][1] == "/workflows"
    assert len(log) == 4 == result.requests
    times = [at for at, _ in log]
    assert all(later - earlier >= 1 / rate - 1e-9 for earlier, later in itertools.pairwise(times))


async def test_a_refused_token_on_the_list_aborts_with_exit_3_after_one_request() -> None:
    async with RunningSimulator(SimConfig(runs=20, workflows=2)) as sim:
        result, lines = await select_all(sim.base_url, "wrong-token")
        assert sim.state.stats.requests == 1
    assert lines == []
    assert result.outcome is SelectOutcome.ABORTED
    assert exit_code(result) == ExitCode.ABORTED


# ---- a broken or hostile list --------------------------------------------------------------


async def test_a_failed_list_request_is_retried_as_a_page_is() -> None:
    def answer(n: int, request_line: str) -> bytes:
        if request_line.startswith("GET /workflows "):
            return respond(503) if n == 1 else json_answer([{"id": "fl_one"}])
        return EMPTY_PAGE

    async with hostile_server(answer) as server:
        result, lines = await select_all(server.base_url, TOKEN)
    assert [r.split()[1] for r in server.requests] == [
        "/workflows",
        "/workflows",
        "/workflows/fl_one/executions?page=1",
    ]
    assert result.retries == 1
    assert lines == []
    assert list(result.workflows) == ["fl_one"]
    assert exit_code(result) == ExitCode.OK


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [{"id": "fl_a"}]}',  # an object, not an array
        b'[{"id": "fl_a"}',  # cut off
        b"<html>502 Bad Gateway</html>",
        b"\x00\xff\xfe garbage",
    ],
)
async def test_a_malformed_list_is_one_error_and_exit_1(body: bytes) -> None:
    async with hostile_server(lambda n, line: respond(200, body)) as server:
        with capture_logs() as logs:
            result, lines = await select_all(server.base_url, TOKEN, max_attempts=2)
    assert len(server.requests) == 2  # retried as a cut-off page is, then given up
    assert lines == []
    assert result.workflows == {}
    assert result.listing_error == "bad_response"
    assert exit_code(result) == ExitCode.INCOMPLETE
    errors = [log for log in logs if log["log_level"] == "error"]
    assert [log["event"] for log in errors] == ["select.workflows_failed"]
    assert "GET /workflows gave no list" in errors[0]["detail"]


async def test_unusable_items_are_skipped_with_a_warning_and_the_rest_walked() -> None:
    items = [{"id": "fl_ok"}, {"name": "no id"}, {"id": "fl_run_x"}, {"id": "fl_ok"}]

    def answer(n: int, request_line: str) -> bytes:
        return json_answer(items) if request_line.startswith("GET /workflows ") else EMPTY_PAGE

    async with hostile_server(answer) as server:
        with capture_logs() as logs:
            result, _ = await select_all(server.base_url, TOKEN)
    assert list(result.workflows) == ["fl_ok"]
    assert len(server.requests) == 2
    (warning,) = [log for log in logs if log["event"] == "select.unreadable_workflows"]
    assert warning["count"] == 2
    assert exit_code(result) == ExitCode.OK


# ---- as subprocesses -----------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--workflow", "fl_a", "--all-workflows"],
            "argument --all-workflows: not allowed with argument --workflow",
        ),
        (
            ["--all-workflows", "--workflow", "fl_a"],
            "argument --workflow: not allowed with argument --all-workflows",
        ),
        ([], "one of the arguments --workflow --all-workflows is required"),
    ],
)
async def test_workflow_and_all_workflows_are_mutually_exclusive(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, out, err = await run_cli("select", *args, cwd=tmp_path, token=TOKEN)
    assert code == ExitCode.USAGE
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.subprocess
async def test_a_malformed_list_ends_the_command_with_one_error_line(tmp_path: Path) -> None:
    async with hostile_server(lambda n, line: respond(200, b"[{]")) as server:
        code, out, err = await run_cli(
            "select", "--all-workflows", "--base-url", server.base_url, "--max-attempts", "1",
            "--log-format", "json", *LOOPBACK_ONLY, cwd=tmp_path, token=TOKEN,
        )  # fmt: skip
    assert code == ExitCode.INCOMPLETE
    assert out == ""
    assert "Traceback" not in err
    records = [json.loads(line) for line in err.splitlines()]
    errors = [r for r in records if r["level"] == "error"]
    assert [r["event"] for r in errors] == ["select.workflows_failed"]
    assert records[-1]["event"] == "select.summary"
    assert records[-1]["listing_error"] == "bad_response"


@pytest.mark.subprocess
async def test_the_simulators_announced_workflows_are_what_select_walks(tmp_path: Path) -> None:
    """`orchestrator simulate` names its workflows; `select --all-workflows` prints what
    `select --workflow A --workflow B ...` over those names prints."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator", "simulate", "--port", "0", "--runs", "90",
        "--workflows", "3", "--rate", "none",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        lines, base_url = await read_announcement(process.stdout)
        start = lines.index("workflow IDs:") + 1
        announced = [line.strip() for line in lines[start : start + 3]]
        assert lines[start + 3] == "failed run IDs to try:"
        common = ("--status", "failed", "--base-url", base_url, *LOOPBACK_ONLY)
        named = [arg for w in announced for arg in ("--workflow", w)]
        with anyio.fail_after(30):
            code_all, out_all, _ = await run_cli(
                "select", "--all-workflows", *common, cwd=tmp_path, token="sim-token"
            )
            code_named, out_named, _ = await run_cli(
                "select", *named, *common, cwd=tmp_path, token="sim-token"
            )
    finally:
        process.terminate()
        await process.wait()
    assert all(w.startswith("fl_") for w in announced)
    assert code_all == code_named == 0
    assert out_all.splitlines()
    assert out_all == out_named
