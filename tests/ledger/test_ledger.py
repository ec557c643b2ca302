"""Ledger records, replay into a resume state, the writer's lock and durability."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import orchestrator.ledger.writer as ledger_module
from orchestrator.errors import LedgerLocked
from orchestrator.ledger.idstore import IdState
from orchestrator.ledger.records import (
    AttemptFailed,
    Dispatched,
    Failed,
    Rejected,
    Succeeded,
    utc_now,
)
from orchestrator.ledger.replay import replay, replay_file
from orchestrator.ledger.writer import FsyncPolicy, LedgerWriter

AT = "2026-11-30T12:00:00.000Z"


def line(record: dict[str, object]) -> bytes:
    return json.dumps(record).encode() + b"\n"


def dispatched(run_id: str, attempt: int = 1) -> bytes:
    return line({"event": "dispatched", "original_run_id": run_id, "attempt": attempt, "at": AT})


def settled(event: str, run_id: str) -> bytes:
    return line({"event": event, "original_run_id": run_id, "at": AT})


def attempt_failed(run_id: str, resendable: bool) -> bytes:
    return line(
        {"event": "attempt_failed", "original_run_id": run_id, "resendable": resendable, "at": AT}
    )


def test_utc_now_is_rfc3339_utc() -> None:
    stamp = utc_now()
    assert stamp.endswith("Z")
    assert "T" in stamp


def test_replay_classifies_each_id_by_its_last_word() -> None:
    state = replay(
        [
            dispatched("fl_run_ok"),
            settled("succeeded", "fl_run_ok"),
            dispatched("fl_run_bad"),
            settled("failed", "fl_run_bad"),
            dispatched("fl_run_doubt"),
            dispatched("fl_run_429"),
            attempt_failed("fl_run_429", resendable=True),
            dispatched("fl_run_timeout"),
            attempt_failed("fl_run_timeout", resendable=False),
        ]
    )
    assert state.ids == {
        "fl_run_ok": IdState.SUCCEEDED,
        "fl_run_bad": IdState.FAILED,
        "fl_run_doubt": IdState.IN_DOUBT,
        "fl_run_429": IdState.RESENDABLE,
        "fl_run_timeout": IdState.IN_DOUBT,
    }
    assert sorted(state.in_doubt()) == ["fl_run_doubt", "fl_run_timeout"]


def test_a_success_is_never_undone_by_later_records() -> None:
    state = replay(
        [settled("succeeded", "fl_run_a"), dispatched("fl_run_a"), settled("failed", "fl_run_a")]
    )
    assert state.ids["fl_run_a"] == IdState.SUCCEEDED


def test_torn_last_line_is_ignored_and_flagged() -> None:
    state = replay([settled("succeeded", "fl_run_a"), b'{"event": "dispatched", "orig'])
    assert state.ids == {"fl_run_a": IdState.SUCCEEDED}
    assert state.torn_tail
    assert state.corrupt_lines == 1


def test_corrupt_lines_in_the_middle_are_skipped_and_counted() -> None:
    state = replay(
        [b"garbage\n", b"[1, 2]\n", b'{"event": "martian"}\n', settled("succeeded", "fl_run_a")]
    )
    assert state.corrupt_lines == 3
    assert state.corrupt_shown == [1, 2, 3]
    assert not state.torn_tail
    assert state.ids == {"fl_run_a": IdState.SUCCEEDED}


def test_missing_ledger_is_an_empty_one(tmp_path: Path) -> None:
    state = replay_file(tmp_path / "nope.jsonl")
    assert state.ids == {}
    assert state.records == 0


events = st.sampled_from(["dispatched", "succeeded", "failed", "retry_ok", "retry_doubt"])
ids = st.sampled_from(["fl_run_a", "fl_run_b", "fl_run_c"])


@given(st.lists(st.tuples(events, ids), max_size=30), st.data())
def test_replaying_any_prefix_gives_a_consistent_state(
    steps: list[tuple[str, str]], data: st.DataObject
) -> None:
    lines = []
    for event, run_id in steps:
        if event == "dispatched":
            lines.append(dispatched(run_id))
        elif event.startswith("retry"):
            lines.append(attempt_failed(run_id, resendable=event == "retry_ok"))
        else:
            lines.append(settled(event, run_id))
    blob = b"".join(lines)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob)))
    state = replay(blob[:cut].splitlines(keepends=True))
    whole_lines = blob[:cut].count(b"\n")
    # A tail cut just before its newline is still a whole record; any other cut is torn.
    assert state.records in (whole_lines, whole_lines + 1)
    assert state.corrupt_lines == int(state.torn_tail) <= 1
    for run_id, id_state in state.ids.items():
        seen = [e for e, r in steps[: state.records] if r == run_id]
        if "succeeded" in seen:
            assert id_state == IdState.SUCCEEDED
        elif seen and seen[-1] == "dispatched":
            assert id_state == IdState.IN_DOUBT


def read_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(raw) for raw in path.read_bytes().splitlines()]


@pytest.mark.parametrize("policy", list(FsyncPolicy))
async def test_writer_appends_one_json_object_per_line(tmp_path: Path, policy: FsyncPolicy) -> None:
    path = tmp_path / "ledger.jsonl"
    writer = LedgerWriter(path, policy)
    await writer.append_durable(Dispatched(at=AT, original_run_id="fl_run_a", attempt=1))
    writer.append(
        Succeeded(
            at=AT,
            original_run_id="fl_run_a",
            new_run_id="fl_run_b",
            new_run_status="pending",
            http_status=202,
            attempts=1,
        )
    )
    writer.append(
        Failed(at=AT, original_run_id="fl_run_c", http_status=404, error="not_found", attempts=1)
    )
    writer.append(Rejected(at=AT, line=3, reason="bad_prefix", input="nope"))
    writer.append(
        AttemptFailed(
            at=AT,
            original_run_id="fl_run_d",
            attempt=1,
            http_status=None,
            error="timeout",
            resendable=False,
        )
    )
    writer.close()
    records = read_records(path)
    assert [r["event"] for r in records] == [
        "dispatched",
        "succeeded",
        "failed",
        "rejected",
        "attempt_failed",
    ]
    assert records[1] == {
        "event": "succeeded",
        "original_run_id": "fl_run_a",
        "new_run_id": "fl_run_b",
        "new_run_status": "pending",
        "http_status": 202,
        "attempts": 1,
        "error": None,
        "at": AT,
    }


async def test_group_commit_shares_fsyncs_between_concurrent_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    gate = anyio.Event()

    def slow_fsync(fd: int) -> None:
        calls.append(fd)
        anyio.from_thread.run(gate.wait)

    monkeypatch.setattr(ledger_module.os, "fsync", slow_fsync)
    writer = LedgerWriter(tmp_path / "ledger.jsonl", FsyncPolicy.BATCH)
    done = []

    async def one(n: int) -> None:
        await writer.append_durable(Dispatched(at=AT, original_run_id=f"fl_run_{n}", attempt=1))
        done.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(one, n)
        await anyio.wait_all_tasks_blocked()
        assert done == []  # nobody returns before its record is synced
        gate.set()
    assert sorted(done) == list(range(10))
    assert len(calls) == 2  # the first record's sync, then one for the nine that queued behind
    monkeypatch.setattr(ledger_module.os, "fsync", lambda fd: None)
    writer.close()


def test_second_writer_on_one_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    first = LedgerWriter(path, FsyncPolicy.NEVER)
    with pytest.raises(LedgerLocked):
        LedgerWriter(path, FsyncPolicy.NEVER)
    first.close()
    LedgerWriter(path, FsyncPolicy.NEVER).close()


def test_writer_starts_a_fresh_line_after_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(settled("succeeded", "fl_run_a") + b'{"event": "disp')
    writer = LedgerWriter(path, FsyncPolicy.NEVER)
    writer.append(Rejected(at=AT, line=1, reason="bad_prefix", input="x"))
    writer.close()
    state = replay_file(path)
    assert state.corrupt_lines == 1
    assert not state.torn_tail
    assert state.records == 2
