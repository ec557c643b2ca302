"""`orchestrator rerun` end to end, in-process, against the simulator on loopback."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orchestrator.errors import ExitCode
from orchestrator.outcome import StopReason, exit_code, summary
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.fakeclock import FakeClock
from tests.helpers.rerunkit import make_ids, read_ledger, rerun


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.jsonl"


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with RunningSimulator(SimConfig(accept_any=True)) as running:
        yield running


def accepted(sim: RunningSimulator) -> Counter[str]:
    return Counter(sim.state.stats.accepted)


async def test_every_id_is_rerun_once_and_mapped_in_the_ledger(
    sim: RunningSimulator, ledger: Path
) -> None:
    ids = make_ids(30)
    done = await rerun(sim, ledger, ids, concurrency=4)
    assert exit_code(done.result) == ExitCode.OK
    assert accepted(sim) == Counter(dict.fromkeys(ids, 1))
    succeeded = done.events("succeeded")
    assert sorted(r["original_run_id"] for r in succeeded) == ids
    for record in succeeded:
        assert str(record["new_run_id"]).startswith("fl_run_")
        assert record["new_run_status"] == "pending"
        assert record["http_status"] == 202
        assert record["attempts"] == 1
    # Each request was preceded by its dispatched record.
    assert len(done.events("dispatched")) == 30
    assert done.result.tally.succeeded == 30


async def test_resume_skips_succeeded_ids_without_sending_a_request(
    sim: RunningSimulator, ledger: Path
) -> None:
    ids = make_ids(10)
    await rerun(sim, ledger, ids[:6])
    requests_before = sim.state.stats.requests
    again = await rerun(sim, ledger, ids)
    assert sim.state.stats.requests == requests_before + 4
    assert again.result.tally.skipped_succeeded == 6
    assert again.result.tally.succeeded == 4
    assert accepted(sim) == Counter(dict.fromkeys(ids, 1))
    assert exit_code(again.result) == ExitCode.OK


async def test_in_doubt_ids_are_held_back_unless_asked(sim: RunningSimulator, ledger: Path) -> None:
    doubtful = "fl_run_doubt1"
    line = {"event": "dispatched", "original_run_id": doubtful, "attempt": 1, "at": "x"}
    ledger.write_text(json.dumps(line) + "\n")
    held = await rerun(sim, ledger, [doubtful, "fl_run_fresh1"])
    assert doubtful not in sim.state.stats.accepted
    assert held.result.tally.in_doubt == [doubtful]
    assert summary(held.result).as_fields()["in_doubt_ids"] == [doubtful]
    assert exit_code(held.result) == ExitCode.INCOMPLETE

    resent = await rerun(sim, ledger, [doubtful], retry_in_doubt=True)
    assert sim.state.stats.accepted[doubtful] == 1
    assert exit_code(resent.result) == ExitCode.OK


async def test_failed_ids_are_skipped_unless_retry_failed(ledger: Path) -> None:
    config = SimConfig(accept_any=True, script={"fl_run_flaky": [409]})
    async with RunningSimulator(config) as sim:
        first = await rerun(sim, ledger, ["fl_run_flaky"])
        assert first.events("failed")[0]["error"] == "client_error"
        skipped = await rerun(sim, ledger, ["fl_run_flaky"])
        assert skipped.result.tally.skipped_failed == 1
        assert skipped.result.tally.requests == 0
        assert exit_code(skipped.result) == ExitCode.INCOMPLETE
        retried = await rerun(sim, ledger, ["fl_run_flaky"], retry_failed=True)
        assert retried.result.tally.succeeded == 1
        assert exit_code(retried.result) == ExitCode.OK


async def test_retryable_errors_are_retried_then_succeed_without_real_sleeping(
    ledger: Path,
) -> None:
    config = SimConfig(accept_any=True, script={"fl_run_shaky": [503, 500, 503]})
    clock = FakeClock()
    async with RunningSimulator(config) as sim:
        done = await rerun(sim, ledger, ["fl_run_shaky"], clock=clock)
    (success,) = done.events("succeeded")
    assert success["attempts"] == 4
    retries = done.events("attempt_failed")
    assert [r["http_status"] for r in retries] == [503, 500, 503]
    assert all(r["resendable"] for r in retries)
    # Three backoff waits happened, each within its full-jitter ceiling, on the fake clock.
    assert len(clock.slept) == 3
    assert all(0 <= s <= c for s, c in zip(clock.slept, [0.5, 1.0, 2.0], strict=True))
    assert sim.state.stats.accepted == {"fl_run_shaky": 1}


async def test_retries_end_in_failed_after_max_attempts(ledger: Path) -> None:
    config = SimConfig(accept_any=True, script={"fl_run_down": [503] * 10})
    async with RunningSimulator(config) as sim:
        done = await rerun(sim, ledger, ["fl_run_down"], max_attempts=3)
    (failed,) = done.events("failed")
    assert failed["error"] == "server_error"
    assert failed["attempts"] == 3
    assert failed["http_status"] == 503
    assert done.result.tally.requests == 3


async def test_404_is_final_and_never_retried(ledger: Path) -> None:
    async with RunningSimulator(SimConfig(accept_any=False)) as sim:
        known = sim.state.failed_run_ids[0]
        done = await rerun(sim, ledger, [known, "fl_run_nosuchrun"])
    (failed,) = done.events("failed")
    assert failed == {
        "event": "failed",
        "original_run_id": "fl_run_nosuchrun",
        "http_status": 404,
        "error": "not_found",
        "attempts": 1,
        "at": failed["at"],
    }
    assert done.result.tally.requests == 2
    assert exit_code(done.result) == ExitCode.INCOMPLETE


async def test_401_aborts_after_at_most_concurrency_requests(
    sim: RunningSimulator, ledger: Path
) -> None:
    ids = make_ids(200)
    done = await rerun(sim, ledger, ids, token="wrong-token", concurrency=4)
    assert done.result.reason is StopReason.ABORTED
    assert exit_code(done.result) == ExitCode.ABORTED
    assert sim.state.stats.requests <= 4
    assert sim.state.stats.by_status == {401: sim.state.stats.requests}
    assert not done.events("succeeded")
    assert not done.events("failed")
    # Refused is not done: with the right token the same command reruns everything.
    fixed = await rerun(sim, ledger, ids, concurrency=4)
    assert exit_code(fixed.result) == ExitCode.OK
    assert accepted(sim) == Counter(dict.fromkeys(ids, 1))


async def test_retry_after_pauses_every_worker_not_only_the_one_told(ledger: Path) -> None:
    ids = make_ids(40)
    config = SimConfig(accept_any=True, script={ids[0]: [429]}, script_retry_after="30")
    clock = FakeClock(autojump=False)
    concurrency = 4
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        done = await rerun(sim, ledger, ids, clock=clock, concurrency=concurrency)
    told_at = next(e.at for e in sim.state.request_log if e.status == 429)
    # While the pause lasts, nothing is sent but what had already left when it came.
    paused = [e for e in sim.state.request_log if told_at < e.at < told_at + 30]
    assert len(paused) <= concurrency - 1
    assert len(sim.state.request_log) == 41
    assert exit_code(done.result) == ExitCode.OK
    assert accepted(sim) == Counter(dict.fromkeys(ids, 1))


async def test_a_lone_429s_one_second_retry_after_holds_only_that_id(ledger: Path) -> None:
    """`Retry-After: 1` on one 429 among successes: the others go on at the pace, and the
    refused ID goes again no sooner than a second later."""
    ids = make_ids(80)
    config = SimConfig(accept_any=True, rate=1000.0, script={ids[0]: [429]}, script_retry_after="1")
    clock = FakeClock(autojump=False)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        done = await rerun(sim, ledger, ids, clock=clock, rate="40/s", concurrency=4)
    log = sim.state.request_log
    told_at = next(e.at for e in log if e.status == 429)
    during = [e for e in log if told_at < e.at < told_at + 1.0]
    assert len(during) >= 30  # about 40 a second went on
    again = [e.at for e in log if e.run_id == ids[0]]
    assert len(again) == 2
    assert again[1] - told_at >= 1.0
    assert exit_code(done.result) == ExitCode.OK
    assert accepted(sim) == Counter(dict.fromkeys(ids, 1))


async def test_rejected_lines_are_recorded_and_never_sent(
    sim: RunningSimulator, ledger: Path
) -> None:
    lines = b"\xef\xbb\xbffl_run_ok1\r\n# comment\n\nFL_RUN_bad\nfl_run_bad-chars\n\xff\xfe\n"
    lines += b'{"id": "fl_run_ok2", "status": "failed"}\n{"status": "failed"}\n'
    done = await rerun(sim, ledger, lines)
    rejected = done.events("rejected")
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (4, "bad_prefix"),
        (5, "bad_characters"),
        (6, "not_utf8"),
        (8, "json_without_id"),
    ]
    assert rejected[0]["input"] == "FL_RUN_bad"
    assert sorted(sim.state.stats.accepted) == ["fl_run_ok1", "fl_run_ok2"]
    assert exit_code(done.result) == ExitCode.INCOMPLETE


async def test_duplicate_ids_are_sent_once(sim: RunningSimulator, ledger: Path) -> None:
    done = await rerun(sim, ledger, ["fl_run_a1", "fl_run_b1", "fl_run_a1", " fl_run_a1 "])
    assert accepted(sim) == Counter({"fl_run_a1": 1, "fl_run_b1": 1})
    assert done.result.tally.duplicates == 2
    assert exit_code(done.result) == ExitCode.OK


async def test_unreadable_202_is_in_doubt_and_never_resent_unasked(ledger: Path) -> None:
    config = SimConfig(accept_any=True, script={"fl_run_garbled": ["bad_body"]})
    async with RunningSimulator(config) as sim:
        done = await rerun(sim, ledger, ["fl_run_garbled"])
        (record,) = done.events("attempt_failed")
        assert (record["http_status"], record["error"]) == (202, "bad_response")
        assert record["resendable"] is False
        assert isinstance(record["raw"], str)
        assert not done.events("succeeded")
        fields = summary(done.result).as_fields()
        assert (fields["in_doubt"], fields["in_doubt_unreadable_response"]) == (1, 1)
        assert exit_code(done.result) == ExitCode.INCOMPLETE
        again = await rerun(sim, ledger, ["fl_run_garbled"], retry_failed=True)
        assert again.result.tally.requests == 0
        assert again.result.tally.skipped_in_doubt == 1
        assert sim.state.stats.accepted == {"fl_run_garbled": 1}


async def test_dry_run_sends_and_writes_nothing_but_says_what_it_would_do(
    sim: RunningSimulator, ledger: Path
) -> None:
    await rerun(sim, ledger, ["fl_run_done1"])
    before = ledger.read_bytes()
    requests = sim.state.stats.requests
    plan = await rerun(
        sim, ledger, ["fl_run_done1", "fl_run_new1", "nope", "fl_run_new1"], dry_run=True
    )
    assert sim.state.stats.requests == requests
    assert ledger.read_bytes() == before
    assert plan.stdout.splitlines() == [
        "skip\tfl_run_done1\tsucceeded",
        "send\tfl_run_new1\tnew",
        "reject\tline 3\tbad_prefix",
        "skip\tfl_run_new1\tduplicate",
    ]
    assert summary(plan.result).as_fields()["would_send"] == 1


async def test_dry_run_without_a_ledger_creates_none(sim: RunningSimulator, ledger: Path) -> None:
    await rerun(sim, ledger, ["fl_run_x1"], dry_run=True)
    assert not ledger.exists()


@pytest.mark.parametrize("fault", ["drop", 502, 504])
async def test_a_request_that_may_have_been_accepted_is_in_doubt_not_resent(
    ledger: Path, fault: str | int
) -> None:
    """A connection cut after sending, or a gateway's 502 or 504: the server may have
    started the rerun. The ID is in doubt; neither this run nor --retry-failed resends it."""
    config = SimConfig(accept_any=True, script={"fl_run_cut": [fault]})
    async with RunningSimulator(config) as sim:
        done = await rerun(sim, ledger, ["fl_run_cut"])
        (record,) = done.events("attempt_failed")
        assert record["resendable"] is False
        assert not done.events("failed")
        assert done.result.tally.in_doubt == ["fl_run_cut"]
        assert done.result.tally.requests == 1
        again = await rerun(sim, ledger, ["fl_run_cut"], retry_failed=True)
        assert again.result.tally.requests == 0
        assert again.result.tally.in_doubt == ["fl_run_cut"]


async def test_with_retry_in_doubt_it_is_resent_and_flagged(ledger: Path) -> None:
    config = SimConfig(accept_any=True, script={"fl_run_cut": ["drop"]})
    async with RunningSimulator(config) as sim:
        done = await rerun(sim, ledger, ["fl_run_cut"], retry_in_doubt=True)
    (retry,) = done.events("attempt_failed")
    assert retry["error"] == "connection"
    assert retry["resendable"] is False
    assert done.result.tally.succeeded == 1
    assert summary(done.result).as_fields()["possibly_duplicated_ids"] == ["fl_run_cut"]


async def test_source_file_is_read_like_stdin(sim: RunningSimulator, tmp_path: Path) -> None:
    source = tmp_path / "ids.txt"
    source.write_text("fl_run_f1\nfl_run_f2\n")
    done = await rerun(sim, tmp_path / "l.jsonl", b"", source=str(source))
    assert done.result.tally.succeeded == 2
    assert read_ledger(tmp_path / "l.jsonl")[0]["event"] == "session_started"


async def test_a_torn_ledger_line_is_skipped_with_a_warning(
    sim: RunningSimulator, ledger: Path
) -> None:
    done = {"event": "succeeded", "original_run_id": "fl_run_old1", "at": "x"}
    ledger.write_bytes(json.dumps(done).encode() + b'\n{"event": "dispatched", "original_ru')
    with capture_logs() as logs:
        again = await rerun(sim, ledger, ["fl_run_old1", "fl_run_new1"])
    warning = next(e for e in logs if e["event"] == "ledger.corrupt_lines")
    assert warning["log_level"] == "warning"
    assert warning["lines"] == [2]
    assert again.result.tally.skipped_succeeded == 1
    assert sorted(sim.state.stats.accepted) == ["fl_run_new1"]
    # The next record starts on a line of its own, so the ledger stays readable.
    assert again.records[-1]["event"] == "session_ended"
