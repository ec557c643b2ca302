"""The bare client the orchestrator is measured against: the fastest honest aiohttp loop.

    python -m benchmarks.bare_client IDS_FILE BASE_URL --concurrency 64   (token: $ALTOSTRAT_TOKEN)

What anyone would write in a hurry, done well: one session, `TCPConnector(limit=N)` as the
orchestrator sets it, N long-lived workers pulling IDs from one shared iterator (no task
per request), and each answer read and its new run ID taken out. No ledger, no retries,
no pacing, no logging. Prints one JSON line: `{"ok": …, "other": …}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator, Sequence

import aiohttp


async def _worker(
    session: aiohttp.ClientSession, base_url: str, ids: Iterator[str], headers: dict[str, str]
) -> tuple[int, int]:
    ok = other = 0
    for run_id in ids:  # one iterator shared by every worker: each ID is taken once
        async with session.post(f"{base_url}/workflows/runs/{run_id}/rerun", headers=headers) as r:
            body = await r.read()
        if r.status == 202 and json.loads(body)["new_run"]["id"]:
            ok += 1
        else:
            other += 1
    return ok, other


async def run(ids: list[str], base_url: str, token: str, concurrency: int) -> tuple[int, int]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        shared = iter(ids)
        counts = await asyncio.gather(
            *(_worker(session, base_url, shared, headers) for _ in range(concurrency))
        )
    return sum(ok for ok, _ in counts), sum(other for _, other in counts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_client")
    parser.add_argument("ids_file")
    parser.add_argument("base_url")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    with open(args.ids_file, encoding="ascii") as stream:
        ids = [line.strip() for line in stream if line.strip()]
    ok, other = asyncio.run(
        run(ids, args.base_url.rstrip("/"), os.environ["ALTOSTRAT_TOKEN"], args.concurrency)
    )
    print(json.dumps({"ok": ok, "other": other}))
    return 0 if other == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
