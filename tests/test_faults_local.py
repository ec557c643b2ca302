"""A ledger on a full disk, or whose fsync fails: the writer leaves no partial line
behind, makes nothing durable after a failure, and keeps the first failure."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.idstore import IdState
from orchestrator.ledger import (
    Dispatched,
    FsyncPolicy,
    LedgerUnwritable,
    LedgerWriter,
    Rejected,
    Succeeded,
    replay_file,
)
from tests.faultyfs import FailingFsync, FullDisk, NoTruncate

AT = "2026-11-30T12:00:00.000Z"
REPO = Path(__file__).resolve().parent.parent


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
