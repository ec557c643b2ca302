"""The bare loop's durable journal (`benchmarks.bare_client --journal`): the yardstick for
what durability alone costs must itself be durable, and share its fsyncs as the ledger
writer does."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import anyio
import pytest

from benchmarks import bare_client
from benchmarks.bare_client import Journal


async def test_every_line_is_synced_before_durable_returns_and_fsyncs_are_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal.jsonl"
    synced: list[int] = []  # lines in the file at each fsync
    gate = threading.Event()

    def fsync(fd: int) -> None:  # on the journal's thread
        gate.wait(timeout=10)
        synced.append(len(path.read_bytes().splitlines()))

    monkeypatch.setattr(bare_client.os, "fsync", fsync)
    journal = Journal(str(path))
    returned: list[int] = []

    async def one(n: int) -> None:
        journal.write({"n": n})
        lines = len(path.read_bytes().splitlines())  # this one among them
        await journal.durable()
        assert synced[-1] >= lines  # an fsync that began after this line was written
        returned.append(n)

    async with anyio.create_task_group() as tasks:
        for n in range(50):
            tasks.start_soon(one, n)
        await anyio.wait_all_tasks_blocked()  # every writer waits on the gated fsync
        assert len(path.read_bytes().splitlines()) == 50  # every line is written ...
        assert returned == []  # ... and nobody returns before an fsync covers its line
        gate.set()
    assert sorted(returned) == list(range(50))
    assert synced[-1] == 50
    assert len(synced) <= 3  # the first line's fsync, then one for all that queued behind
    journal.close()
    assert [json.loads(line)["n"] for line in path.read_bytes().splitlines()] == list(range(50))
