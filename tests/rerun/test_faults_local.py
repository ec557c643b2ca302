"""A ledger on a full disk, or whose fsync fails: the run stops cleanly (exit 74), no
partial line is left, nothing leaves without a durable `dispatched` record, and every
outcome the ledger could not take is in the summary. The writer, in-process runs against
the simulator, and the CLI as a subprocess on a real full file system (tmpfs) when this
machine lets the tests mount one, else on the injected full disk."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import ExitCode, LedgerUnwritable
from orchestrator.ledger.idstore import IdState
from orchestrator.ledger.records import Dispatched, Rejected, Succeeded
from orchestrator.ledger.replay import replay_file
from orchestrator.ledger.writer import FsyncPolicy, LedgerWriter
from orchestrator.outcome import RunResult, StopReason, Tally, exit_code, summary
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.clikit import TOKEN, env
from tests.helpers.faultyfs import FailingFsync, FullDisk, NoTruncate
from tests.helpers.rerunkit import make_ids, read_ledger, rerun

AT = "2026-11-30T12:00:00.000Z"
REPO = Path(__file__).resolve().parents[2]


def dispatched(n: int) -> Dispatched:
    return Dispatched(at=AT, original_run_id=f"fl_run_a{n}", attempt=1)


def succeeded(n: int) -> Succeeded:
    return Succeeded(
        at=AT,
        original_run_id=f"fl_run_a{n}",
        new_run_id=f"fl_run_b{n}",
        new_run_status="pending",
        http_status=202,
        attempts=1,
    )


def line_of(record: Dispatched | Succeeded) -> bytes:
    return record.model_dump_json().encode() + b"\n"


def whole_lines(path: Path) -> list[dict[str, object]]:
    """The ledger's lines, asserting that each is a whole record and the last one ends."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(raw) for raw in data.splitlines()]


# ---- the writer ---------------------------------------------------------------------------


def test_a_write_the_disk_cuts_short_is_cut_back_to_the_last_whole_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.jsonl"
    # Room for two records and part of a third.
    disk = FullDisk(len(line_of(dispatched(1))) * 2 + 40)
    writer = LedgerWriter(path, FsyncPolicy.NEVER, disk)
    writer.append(dispatched(1))
    writer.append(dispatched(2))
    with pytest.raises(LedgerUnwritable) as failure:
        writer.append(succeeded(1))
    writer.close()
    assert not failure.value.written
    assert str(failure.value) == "No space left on device (ENOSPC)"
    assert writer.failed is failure.value
    assert not writer.torn
    assert [r["original_run_id"] for r in whole_lines(path)] == ["fl_run_a1", "fl_run_a2"]
    state = replay_file(path)
    assert (state.corrupt_lines, state.torn_tail) == (0, False)


async def test_after_a_failed_write_nothing_is_made_durable_but_outcomes_still_go_in(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.jsonl"
    disk = FullDisk(10)
    writer = LedgerWriter(path, FsyncPolicy.BATCH, disk)
    with pytest.raises(LedgerUnwritable):
        await writer.append_durable(dispatched(1))
    disk.room = 10_000  # space came back (a log rotated away)
    with pytest.raises(LedgerUnwritable) as refused:
        await writer.append_durable(dispatched(2))
    assert not refused.value.written
    assert path.read_bytes() == b""  # refused without a byte written
    writer.append(succeeded(3))  # an outcome of a request in flight is still recorded
    writer.close()
    assert [r["event"] for r in whole_lines(path)] == ["succeeded"]


def test_when_the_cut_back_fails_too_the_next_record_starts_a_line_of_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.jsonl"
    disk = NoTruncate(len(line_of(dispatched(1))) + 30)
    writer = LedgerWriter(path, FsyncPolicy.NEVER, disk)
    writer.append(dispatched(1))
    with pytest.raises(LedgerUnwritable):
        writer.append(dispatched(2))
    assert writer.torn
    disk.room = 10_000
    writer.append(succeeded(1))
    writer.close()
    state = replay_file(path)
    # The partial line is skipped as corrupt; the records around it are whole.
    assert (state.records, state.corrupt_lines, state.torn_tail) == (2, 1, False)
    assert state.ids == {"fl_run_a1": IdState.SUCCEEDED}


def test_a_torn_tail_from_before_waits_for_a_record_that_fits(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(line_of(dispatched(1)) + b'{"event": "disp')
    disk = FullDisk(0)
    writer = LedgerWriter(path, FsyncPolicy.NEVER, disk)  # opening writes nothing
    with pytest.raises(LedgerUnwritable):
        writer.append(succeeded(1))
    disk.room = 10_000
    writer.append(succeeded(1))
    writer.close()
    state = replay_file(path)
    assert (state.records, state.corrupt_lines) == (2, 1)
    assert state.ids == {"fl_run_a1": IdState.SUCCEEDED}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(room=st.integers(0, 3000), kinds=st.lists(st.booleans(), min_size=1, max_size=25))
def test_whatever_the_room_left_the_ledger_holds_exactly_the_records_that_were_taken(
    tmp_path_factory: pytest.TempPathFactory, room: int, kinds: list[bool]
) -> None:
    path = tmp_path_factory.mktemp("ledger") / "ledger.jsonl"
    writer = LedgerWriter(path, FsyncPolicy.NEVER, FullDisk(room))
    taken = []
    for n, short in enumerate(kinds):
        record = Rejected(at=AT, line=n, reason="bad_prefix", input="x" * (5 if short else 300))
        with contextlib.suppress(LedgerUnwritable):
            writer.append(record)
            taken.append(n)
    writer.close()
    assert [r["line"] for r in whole_lines(path)] == taken


async def test_a_failed_fsync_fails_every_record_waiting_on_it_and_is_never_retried(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.jsonl"
    ops = FailingFsync(good=0)
    writer = LedgerWriter(path, FsyncPolicy.BATCH, ops)
    failures: list[LedgerUnwritable] = []

    async def one(n: int) -> None:
        try:
            await writer.append_durable(dispatched(n))
        except LedgerUnwritable as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(one, n)
    assert len(failures) == 6  # none of them may send its request
    assert all(f.written for f in failures)  # their lines are there, but not durable
    assert str(failures[0]) == "Input/output error (EIO)"
    with pytest.raises(LedgerUnwritable):
        await writer.append_durable(dispatched(7))
    calls = ops.calls
    await writer.sync()
    writer.close()  # does not raise, and does not ask again: a second fsync would "succeed"
    assert ops.calls == calls
    assert writer.failed is not None


@pytest.mark.parametrize("policy", [FsyncPolicy.ALWAYS, FsyncPolicy.BATCH])
async def test_a_dispatched_record_whose_fsync_fails_is_not_durable(
    tmp_path: Path, policy: FsyncPolicy
) -> None:
    writer = LedgerWriter(tmp_path / "ledger.jsonl", policy, FailingFsync(good=1))
    await writer.append_durable(dispatched(1))
    with pytest.raises(LedgerUnwritable) as failure:
        await writer.append_durable(dispatched(2))
    assert failure.value.written
    writer.close()


def test_a_last_fsync_that_fails_at_close_is_kept_not_raised(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path / "ledger.jsonl", FsyncPolicy.BATCH, FailingFsync(good=0))
    writer.append(succeeded(1))
    writer.close()
    assert writer.failed is not None
    assert writer.failed.written


# ---- a run on a failing ledger, in-process ----------------------------------------------


def sent_ids(sim: RunningSimulator) -> Counter[str]:
    """Rerun requests the simulator received, by original run ID."""
    return Counter(
        row.run_id
        for row in sim.state.request_log
        if row.method == "POST" and row.run_id is not None
    )


def mapping(sim: RunningSimulator) -> dict[str, str]:
    """Original -> new run ID of every rerun the simulator accepted."""
    return {run.rerun_of: run.id for run in sim.state.runs.values() if run.rerun_of}


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    # Answers take a few milliseconds, so several requests are in flight when the disk fills.
    async with RunningSimulator(SimConfig(accept_any=True, latency_ms=5)) as running:
        yield running


async def test_a_full_disk_stops_the_run_and_keeps_every_unrecorded_mapping(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ids = make_ids(200)
    disk = FullDisk(12_000)  # room for a few dozen IDs
    done = await rerun(sim, ledger, ids, concurrency=8, ledger_ops=disk)
    result, tally = done.result, done.result.tally

    assert exit_code(result) == ExitCode.IOERR
    assert result.reason is StopReason.LEDGER
    assert result.ledger_error == "No space left on device (ENOSPC)"
    records = whole_lines(ledger)  # no partial line
    durable = {r["original_run_id"] for r in records if r["event"] == "dispatched"}
    recorded = {r["original_run_id"]: r["new_run_id"] for r in records if r["event"] == "succeeded"}
    sent = sent_ids(sim)
    # Nothing left without its dispatched record on disk, and nothing left twice.
    assert set(sent) <= durable
    assert set(sent.values()) == {1}
    # Every accepted rerun's mapping is in the ledger or in the summary, never both.
    assert tally.unrecorded_mappings  # requests in flight finished after the disk filled
    assert not set(recorded) & set(tally.unrecorded_mappings)
    assert recorded | tally.unrecorded_mappings == mapping(sim)
    fields = summary(result).as_fields()
    assert fields["unrecorded_mappings"] == tally.unrecorded_mappings
    assert fields["ledger_error"] == "No space left on device (ENOSPC)"
    # The run stopped admitting IDs: every ID read was sent or counted as not sent.
    assert tally.sent == len(sent)
    assert tally.sent + tally.not_sent == tally.lines
    assert len(sent) < 100


async def test_the_next_run_holds_unrecorded_accepted_reruns_in_doubt_and_sends_the_rest(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ids = make_ids(120)
    first = await rerun(sim, ledger, ids, concurrency=8, ledger_ops=FullDisk(9_000))
    accepted = set(first.result.tally.unrecorded_mappings)
    assert accepted
    again = await rerun(sim, ledger, ids, concurrency=8)
    assert exit_code(again.result) == ExitCode.INCOMPLETE
    assert_resumed_safely(sim, ids, first.result.tally, set(again.result.tally.in_doubt))


def assert_resumed_safely(
    sim: RunningSimulator, ids: list[str], tally: Tally, in_doubt: set[str]
) -> None:
    """After a run that stopped on a full ledger, the next one: every accepted rerun the
    ledger missed is held in doubt, never resent; so may be an ID whose dispatched line
    is there but whose request never left (the summary said `resendable`); every other
    ID has now been sent, and nothing twice."""
    assert set(tally.unrecorded_mappings) <= in_doubt
    assert in_doubt <= set(tally.unrecorded_mappings) | set(tally.unrecorded_outcomes)
    never_left = in_doubt - set(tally.unrecorded_mappings)
    assert all(tally.unrecorded_outcomes[i] == "resendable" for i in never_left)
    sent = sent_ids(sim)
    assert set(sent.values()) == {1}
    assert set(sent) == set(ids) - never_left


async def test_a_ledger_that_takes_not_even_the_session_start_sends_nothing(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    done = await rerun(sim, ledger, make_ids(20), ledger_ops=FullDisk(0))
    assert exit_code(done.result) == ExitCode.IOERR
    assert sim.state.stats.requests == 0
    assert ledger.read_bytes() == b""


async def test_a_failed_fsync_sends_nothing_more_and_says_the_unsent_attempt_never_left(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ids = make_ids(100)
    done = await rerun(
        sim, ledger, ids, concurrency=4, ledger_ops=FailingFsync(good=10), fsync="batch"
    )
    assert exit_code(done.result) == ExitCode.IOERR
    assert done.result.ledger_error == "Input/output error (EIO)"
    not_sent = {
        r["original_run_id"]
        for r in done.events("attempt_failed")
        if r["error"] == "not_sent" and r["resendable"] is True
    }
    assert not_sent  # their dispatched lines are in the file, but not durable
    sent = sent_ids(sim)
    assert not not_sent & set(sent)  # so their requests never left
    # Requests in flight finished and were recorded; nothing is in doubt.
    assert {r["original_run_id"] for r in done.events("succeeded")} == set(sent)
    assert replay_file(ledger).in_doubt() == []
    assert done.result.tally.unrecorded_mappings == {}

    again = await rerun(sim, ledger, ids, concurrency=4)
    assert exit_code(again.result) == ExitCode.OK  # the unsent ones go now, once
    assert sent_ids(sim) == Counter(dict.fromkeys(ids, 1))


@pytest.mark.parametrize("reason", list(StopReason))
def test_a_failed_ledger_outranks_whatever_else_stopped_the_run(reason: StopReason) -> None:
    """Outcomes are missing from the ledger: that is what the exit code must say."""
    failed = RunResult(Tally(), reason, 1.0, "l.jsonl", ledger_error="Input/output error (EIO)")
    assert exit_code(failed) == ExitCode.IOERR
    assert exit_code(replace(failed, ledger_error=None)) != ExitCode.IOERR


# ---- the CLI on a full file system --------------------------------------------------------


def mount_tmpfs(where: Path, size: str) -> bool:
    """Mount a small tmpfs at `where`; False when this machine does not let us."""
    where.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(params=["real", "injected"])
def full_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A ledger path on a file system with 64 KiB, and the command that runs the CLI on
    it: a real tmpfs when it can be mounted, else (and for "injected") the CLI with the
    ledger's writes going to a full disk of that size."""
    small = tmp_path / "small"
    if request.param == "real" and mount_tmpfs(small, "64k"):
        try:
            yield small / "ledger.jsonl", [sys.executable, "-m", "orchestrator"]
        finally:
            subprocess.run(["umount", "-l", str(small)], check=False, timeout=10)
        return
    small.mkdir(exist_ok=True)
    yield small / "ledger.jsonl", failing_cli("65536")


def failing_cli(fault: str) -> list[str]:
    """The CLI with its ledger on a failing file system (tests/helpers/fulldisk_cli.py)."""
    return [sys.executable, str(REPO / "tests" / "helpers" / "fulldisk_cli.py"), fault]


def assert_stopped_on_the_ledger(
    done: subprocess.CompletedProcess[bytes], ledger: Path, error: str
) -> None:
    """Exit 74, and stderr ends with the one line that names the ledger and the error."""
    err = done.stderr.decode()
    assert done.returncode == 74, err[-3000:]
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"orchestrator: error: cannot write ledger {ledger}: ")
    assert error in lines[-1]
    assert sum(line.startswith("orchestrator:") for line in lines) == 1
    assert "Traceback" not in err


@pytest.mark.subprocess
async def test_a_full_disk_exits_74_with_one_line_and_the_summary_holds_the_mappings(
    full_ledger: tuple[Path, list[str]], tmp_path: Path
) -> None:
    ledger, command = full_ledger
    ids = make_ids(600)
    source = tmp_path / "ids.txt"
    source.write_text("".join(f"{i}\n" for i in ids))
    config = SimConfig(accept_any=True, token=TOKEN, latency_ms=10)
    async with RunningSimulator(config) as sim:
        args = [
            *command, "rerun", str(source), "--ledger", str(ledger), "--base-url", sim.base_url,
            "--rate", "none", "--concurrency", "8", "--log-format", "json",
            "--summary-json", str(tmp_path / "summary.json"),
            "--metrics-file", str(tmp_path / "rerun.prom"),
        ]  # fmt: skip
        with anyio.fail_after(50):
            done = await anyio.run_process(args, cwd=tmp_path, env=env(), check=False)
        assert_stopped_on_the_ledger(done, ledger, "No space left on device (ENOSPC)")
        summary_json = json.loads((tmp_path / "summary.json").read_text())
        assert summary_json["exit_code"] == 74
        assert summary_json["ledger_error"] == "No space left on device (ENOSPC)"
        assert 'orchestrator_exit_code{job="ledger"} 74' in (tmp_path / "rerun.prom").read_text()

        records = whole_lines(ledger)
        recorded = {
            r["original_run_id"]: r["new_run_id"] for r in records if r["event"] == "succeeded"
        }
        unrecorded = summary_json["unrecorded_mappings"]
        assert recorded | unrecorded == mapping(sim)
        assert set(sent_ids(sim)) <= {
            r["original_run_id"] for r in records if r["event"] == "dispatched"
        }

        # On a disk with room again, the next run names them in doubt and sends the rest.
        roomy = tmp_path / "ledger.jsonl"
        roomy.write_bytes(ledger.read_bytes())
        args = [
            sys.executable, "-m", "orchestrator", "rerun", str(source), "--ledger", str(roomy),
            "--base-url", sim.base_url, "--rate", "none", "--log-format", "json",
        ]  # fmt: skip
        with anyio.fail_after(50):
            again = await anyio.run_process(args, cwd=tmp_path, env=env(), check=False)
        assert again.returncode == 1
        tally = Tally(
            unrecorded_mappings=unrecorded,
            unrecorded_outcomes=summary_json["unrecorded_outcomes"],
        )
        assert_resumed_safely(sim, ids, tally, set(replay_file(roomy).in_doubt()))
    assert read_ledger(roomy)[-1]["event"] == "session_ended"


@pytest.mark.subprocess
async def test_a_failed_fsync_exits_74_with_one_line_and_nothing_resent_by_the_next_run(
    tmp_path: Path,
) -> None:
    """As on a full disk: a ledger whose fsync reports EIO stops the run with 74 and one
    line; nothing is in doubt that was never sent, and the next run sends each ID that
    the server has not seen, once."""
    ledger, ids = tmp_path / "ledger.jsonl", make_ids(200)
    source = tmp_path / "ids.txt"
    source.write_text("".join(f"{i}\n" for i in ids))
    config = SimConfig(accept_any=True, token=TOKEN, latency_ms=10)
    async with RunningSimulator(config) as sim:
        common = [
            "rerun", str(source), "--ledger", str(ledger), "--base-url", sim.base_url,
            "--rate", "none", "--concurrency", "4", "--log-format", "json",
        ]  # fmt: skip
        args = [*failing_cli("fsync:10"), *common, "--fsync", "batch"]
        args += ["--summary-json", str(tmp_path / "summary.json")]
        with anyio.fail_after(50):
            done = await anyio.run_process(args, cwd=tmp_path, env=env(), check=False)
        assert_stopped_on_the_ledger(done, ledger, "Input/output error (EIO)")
        assert json.loads((tmp_path / "summary.json").read_text())["exit_code"] == 74
        first = sent_ids(sim)
        assert 0 < len(first) < len(ids)  # it stopped sending

        again = [sys.executable, "-m", "orchestrator", *common]
        with anyio.fail_after(50):
            await anyio.run_process(again, cwd=tmp_path, env=env(), check=False)
        assert max(sent_ids(sim).values()) == 1  # nothing reached the server twice
        assert set(sent_ids(sim)) == set(ids) - set(replay_file(ledger).in_doubt())
