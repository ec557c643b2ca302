"""`rerun --wait`: following accepted reruns to their end, against the simulator, whose
new runs move pending → running → an end over a virtual clock both sides share."""

from __future__ import annotations

import io
import itertools
import json
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from orchestrator.errors import ExitCode
from orchestrator.ledger.report import LedgerReport
from orchestrator.outcome import Summary, exit_code, summary
from orchestrator.simulator import RunningSimulator, SimConfig
from orchestrator.ui.summary import print_summary
from tests.helpers.clikit import TOKEN, env, wait_for_event, write_ids
from tests.helpers.fakeclock import FakeClock
from tests.helpers.rerunkit import make_ids, read_ledger, rerun


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.jsonl"


async def test_each_rerun_is_followed_to_its_end_and_recorded(ledger: Path) -> None:
    ids = make_ids(4)
    ends = {ids[0]: "completed", ids[1]: "failed", ids[2]: "needs_person", ids[3]: "stuck"}
    config = SimConfig(accept_any=True, pending_s=2, running_s=5, rerun_outcomes=ends)
    clock = FakeClock(autojump=False)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        done = await rerun(
            sim, ledger, ids, clock=clock, wait=True, wait_timeout="60s", poll_interval="1s"
        )
    finished = {r["original_run_id"]: r for r in done.events("finished")}
    accepted = {r["original_run_id"]: r["new_run_id"] for r in done.events("succeeded")}
    assert {k: r["new_run_id"] for k, r in finished.items()} == accepted
    assert {k: r["outcome"] for k, r in finished.items()} == {
        ids[0]: "completed",
        ids[1]: "failed_again",
        ids[2]: "needs_person",
        ids[3]: "timed_out",
    }
    assert finished[ids[0]]["final_status"] == "completed"
    assert finished[ids[0]]["duration_in_seconds"] == 5
    assert finished[ids[1]]["error_message"]
    assert finished[ids[2]]["final_status"] == "awaiting_ui_interaction"
    assert finished[ids[3]]["final_status"] == "running"
    fields = summary(done.result).as_fields()
    assert fields["finished_by_outcome"] == {
        "completed": 1, "failed_again": 1, "needs_person": 1, "timed_out": 1,
    }  # fmt: skip
    assert fields["failed_again_ids"] == [ids[1]]
    assert fields["timed_out_ids"] == [ids[3]]
    assert exit_code(done.result) == ExitCode.INCOMPLETE
    assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(ids, 1))


async def test_a_clean_wait_exits_0(ledger: Path) -> None:
    clock = FakeClock(autojump=False)
    config = SimConfig(accept_any=True, pending_s=1, running_s=1, rerun_failure_rate=0)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        done = await rerun(sim, ledger, make_ids(5), clock=clock, wait=True, poll_interval="1s")
    assert summary(done.result).as_fields()["finished_by_outcome"] == {"completed": 5}
    assert exit_code(done.result) == ExitCode.OK


async def test_polls_back_off_until_the_timeout(ledger: Path) -> None:
    (stuck,) = make_ids(1)
    config = SimConfig(accept_any=True, rerun_outcomes={stuck: "stuck"})
    clock = FakeClock(autojump=False)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        done = await rerun(
            sim, ledger, [stuck], clock=clock, wait=True, wait_timeout="5m", poll_interval="2s"
        )
    (accepted,) = [e.at for e in sim.state.request_log if e.method == "POST"]
    polls = [e.at for e in sim.state.request_log if e.method == "GET"]
    gaps = [round(b - a, 6) for a, b in itertools.pairwise([accepted, *polls])]
    assert gaps[:4] == [2.0, 3.0, 4.5, 6.75]  # half again as long each time...
    assert max(gaps) == 60.0  # ...up to a minute
    assert polls[-1] == pytest.approx(accepted + 300)  # the last look, at the timeout
    assert done.events("finished")[0]["outcome"] == "timed_out"


async def test_reruns_and_polls_share_one_rate_and_polls_never_starve_reruns(
    ledger: Path,
) -> None:
    """A server allowing 4 requests/s with no burst answers 429 to any two requests less
    than 0.25 s apart, whatever their endpoint: none comes. And though polls fall due
    all the time (runs that take a while, polled from 0.1 s on), they take at most a
    quarter of the slots while reruns remain to be sent."""
    clock = FakeClock(autojump=False)
    config = SimConfig(
        accept_any=True, rate=4.0, burst=0, pending_s=1, running_s=10, rerun_failure_rate=0
    )
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        done = await rerun(
            sim, ledger, make_ids(16), clock=clock, rate="4/s", concurrency=1,
            wait=True, poll_interval="0.1s",
        )  # fmt: skip
    log = list(sim.state.request_log)
    assert all(e.status != 429 for e in log)
    assert min(b.at - a.at for a, b in itertools.pairwise(log)) >= 0.25 - 1e-9
    last_post = max(i for i, e in enumerate(log) if e.method == "POST")
    polls_meanwhile = sum(1 for e in log[:last_post] if e.method == "GET")
    assert polls_meanwhile <= last_post / 3  # at most a quarter of the slots
    assert summary(done.result).as_fields()["finished_by_outcome"] == {"completed": 16}


async def test_a_resumed_wait_polls_accepted_reruns_and_never_resends_them(
    ledger: Path,
) -> None:
    ids = make_ids(6)
    clock = FakeClock(autojump=False)
    config = SimConfig(accept_any=True, pending_s=1, running_s=1, rerun_failure_rate=0)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        await rerun(sim, ledger, ids, clock=clock)  # no --wait: accepted, not finished
        posts = sim.state.stats.requests
        done = await rerun(sim, ledger, ids, clock=clock, wait=True, poll_interval="1s")
        assert sim.state.stats.requests > posts
        assert all(e.method == "GET" for e in list(sim.state.request_log)[posts:])
    assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(ids, 1))
    assert done.result.tally.skipped_succeeded == 6
    assert summary(done.result).as_fields()["finished_by_outcome"] == {"completed": 6}
    assert exit_code(done.result) == ExitCode.OK


@pytest.mark.subprocess
async def test_kill_9_while_waiting_then_resume_polls_again_and_resends_nothing(
    tmp_path: Path,
) -> None:
    ids = make_ids(20)
    source = write_ids(tmp_path / "ids.txt", ids)
    # Real time here: the new runs end 1.5 s after their rerun.
    config = SimConfig(
        accept_any=True, token=TOKEN, pending_s=0.5, running_s=1.0, rerun_failure_rate=0
    )
    async with RunningSimulator(config) as sim:
        args = [
            sys.executable, "-m", "orchestrator", "rerun", str(source), "--base-url",
            sim.base_url, "--rate", "none", "--wait", "--poll-interval", "0.2s",
            "--log-format", "json",
        ]  # fmt: skip
        with anyio.fail_after(30):
            async with await anyio.open_process(args, cwd=tmp_path, env=env()) as process:
                await wait_for_event(process, "wait.following", count=1)
                process.kill()
                await process.wait()
            records = read_ledger(tmp_path / "rerun-ledger.jsonl")
            assert not any(r["event"] == "finished" for r in records)
            done = await anyio.run_process(args, cwd=tmp_path, env=env(), check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    final = json.loads(done.stderr.decode().strip().splitlines()[-1])
    assert final["finished_by_outcome"] == {"completed": 20}
    assert final["skipped_done"] == 20
    assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(ids, 1))


async def test_report_shows_how_the_waited_reruns_ended(ledger: Path) -> None:
    ids = make_ids(3)
    ends = {ids[0]: "completed", ids[1]: "failed", ids[2]: "stuck"}
    config = SimConfig(accept_any=True, pending_s=1, running_s=1, rerun_outcomes=ends)
    clock = FakeClock(autojump=False)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        done = await rerun(
            sim, ledger, ids, clock=clock, wait=True, wait_timeout="30s", poll_interval="1s"
        )
    folded = LedgerReport()
    with ledger.open("rb") as lines:
        folded.feed_lines(lines)
    fields = folded.summary(str(ledger), running=False).as_fields()
    assert fields["finished_by_outcome"] == summary(done.result).as_fields()["finished_by_outcome"]
    assert fields["failed_again_ids"] == [ids[1]]
    assert fields["timed_out_ids"] == [ids[2]]
    assert folded.exit_code() == ExitCode.INCOMPLETE


def test_the_summary_table_shows_how_the_new_runs_ended() -> None:
    fields = Summary(
        outcome="completed",
        exit_code=1,
        succeeded=3,
        finished_by_outcome={"completed": 1, "failed_again": 1, "timed_out": 1},
        finished_ids={"failed_again": ("fl_run_a1",), "timed_out": ("fl_run_b1",)},
        ledger="l.jsonl",
    )
    out = io.StringIO()
    print_summary(fields, "rerun completed: exit 1", out)
    text = out.getvalue()
    assert "new runs completed" in text
    assert "new runs failed again" in text
    assert "fl_run_a1" in text
    assert "new runs timed out" in text
    assert "fl_run_b1" in text
