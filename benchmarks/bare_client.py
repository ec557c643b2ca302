"""The bare client the orchestrator is measured against: the fastest honest aiohttp loop.

    python -m benchmarks.bare_client IDS_FILE BASE_URL --concurrency 64   (token: $ALTOSTRAT_TOKEN)

What anyone would write in a hurry, done well: one session, `TCPConnector(limit=N)` as the
orchestrator sets it, N long-lived workers pulling IDs from one shared iterator (no task
per request), and each answer read and its new run ID taken out. No ledger, no retries,
no pacing, no logging. Prints one JSON line: `{"ok": …, "other": …}`.

With `--journal FILE` it also keeps the least durable journal that makes a rerun safe to
resume: a line before each request, made durable first (one fsync shared by every line
written while the previous one ran), and a line with the answer after it. What that
costs a request is the part of the orchestrator's cost that durability alone explains.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import aiohttp


class Journal:
    """Lines appended with one write each; `durable` waits for an fsync that covers them,
    sharing one with every line written while the previous one ran (group commit)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._sync = ThreadPoolExecutor(1)
        self._written = self._synced = 0
        self._syncing = False
        self._synced_event = asyncio.Event()

    def write(self, record: dict[str, object]) -> None:
        os.write(self._fd, json.dumps(record).encode() + b"\n")
        self._written += 1

    async def durable(self) -> None:
        target = self._written
        while self._synced < target:
            if self._syncing:
                await self._synced_event.wait()  # the fsync under way; then look again
                continue
            self._syncing = True
            upto = self._written
            try:
                await asyncio.get_running_loop().run_in_executor(self._sync, os.fsync, self._fd)
                self._synced = max(self._synced, upto)  # not after a failed fsync
            finally:
                self._syncing = False
                synced, self._synced_event = self._synced_event, asyncio.Event()
                synced.set()

    def close(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._sync.shutdown()


async def _worker(
    session: aiohttp.ClientSession,
    base_url: str,
    ids: Iterator[str],
    headers: dict[str, str],
    journal: Journal | None,
) -> tuple[int, int]:
    ok = other = 0
    for run_id in ids:  # one iterator shared by every worker: each ID is taken once
        if journal is not None:
            journal.write({"event": "dispatched", "original_run_id": run_id})
            await journal.durable()
        async with session.post(f"{base_url}/workflows/runs/{run_id}/rerun", headers=headers) as r:
            body = await r.read()
        new_run = json.loads(body)["new_run"]["id"] if r.status == 202 else None
        if journal is not None:
            journal.write({"event": "answered", "original_run_id": run_id, "new_run_id": new_run})
        if new_run:
            ok += 1
        else:
            other += 1
    return ok, other


async def run(
    ids: list[str], base_url: str, token: str, concurrency: int, journal: str | None = None
) -> tuple[int, int]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    kept = None if journal is None else Journal(journal)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            shared = iter(ids)
            counts = await asyncio.gather(
                *(_worker(session, base_url, shared, headers, kept) for _ in range(concurrency))
            )
    finally:
        if kept is not None:
            kept.close()
    return sum(ok for ok, _ in counts), sum(other for _, other in counts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_client")
    parser.add_argument("ids_file")
    parser.add_argument("base_url")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--journal", metavar="FILE", help="keep a durable journal (see above)")
    args = parser.parse_args(argv)
    with open(args.ids_file, encoding="ascii") as stream:
        ids = [line.strip() for line in stream if line.strip()]
    ok, other = asyncio.run(
        run(
            ids,
            args.base_url.rstrip("/"),
            os.environ["ALTOSTRAT_TOKEN"],
            args.concurrency,
            args.journal,
        )
    )
    print(json.dumps({"ok": ok, "other": other}))
    return 0 if other == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
