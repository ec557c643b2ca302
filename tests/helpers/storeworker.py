"""A process sharing a LocalStore schedule, for tests/shared/test_localstore.py.

storeworker.py reserve DIR KEY RATE END OUT
    Reserve slots at a stated RATE until the monotonic time END (the clock every
    process of the host shares), sleep until each slot and append one line per slot
    to OUT: `slot <scheduled> <sent> <count>`. A StoreError is written as
    `error <message>` and exits 3.

storeworker.py hold DIR KEY OUT
    Open the store's file with plain sqlite3, take the write lock (BEGIN IMMEDIATE),
    write a schedule that would pause every process for minutes if it were ever
    committed, append `locked` to OUT and hold the lock until killed. With
    `--stuck-for S` it plays a process stuck that long inside its transaction: it says
    so on the signal pipe after S seconds, and still holds the lock until killed.

Progress also goes, one byte per event, to the pipe whose write end is the file
descriptor in $STOREWORKER_SIGNAL_FD, when set: `s` for each slot, `l` once the lock is
held, `h` once it has been held for --stuck-for. The test waits on that pipe (a
blocking read with a timeout), never by polling OUT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator.errors import StoreError
from orchestrator.shared.localstore import FILE_NAME, LocalStore

HELD_PAUSE_S = 250.0  # under MAX_PAUSE_S, so it would be obeyed if committed


def tell(event: bytes) -> None:
    """One byte on the signal pipe, when the test gave one."""
    if (fd := os.environ.get("STOREWORKER_SIGNAL_FD")) is not None:
        os.write(int(fd), event)


class Clock:
    """time.monotonic, remembering the last reading: the `now` the store's step used."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self) -> float:
        self.last = time.monotonic()
        return self.last


async def reserve(directory: Path, key: str, rate: float, end: float, out: Path) -> int:
    clock = Clock()
    with out.open("a", encoding="utf-8") as sink:
        try:
            store = LocalStore(directory, key, now=clock)
        except StoreError as exc:
            sink.write(f"error {exc}\n")
            return 3
        try:
            while True:
                grant = await store.reserve(rate)
                if grant.limit is None:
                    sink.write("error no limit in the grant\n")
                    return 4
                slot = clock.last + grant.delay_s
                if slot >= end:
                    return 0
                await asyncio.sleep(max(0.0, slot - time.monotonic()))
                sent = time.monotonic()
                sink.write(f"slot {slot!r} {sent!r} {grant.count}\n")
                sink.flush()
                tell(b"s")
        except StoreError as exc:
            sink.write(f"error {exc}\n")
            return 3
        finally:
            await store.close()


def hold(directory: Path, key: str, out: Path, stuck_for: float | None) -> int:
    db = sqlite3.connect(directory / FILE_NAME, timeout=5.0, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "UPDATE schedules SET paused_until = ? WHERE key = ?",
        (time.monotonic() + HELD_PAUSE_S, key),
    )
    with out.open("a", encoding="utf-8") as sink:
        sink.write("locked\n")
        sink.flush()
    tell(b"l")
    if stuck_for is not None:
        time.sleep(stuck_for)  # the fault this process plays: stuck in a transaction
        tell(b"h")
    while True:  # until SIGKILL: no timer, just a wait for the signal
        signal.pause()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    modes = parser.add_subparsers(dest="mode", required=True)
    one = modes.add_parser("reserve")
    one.add_argument("directory", type=Path)
    one.add_argument("key")
    one.add_argument("rate", type=float)
    one.add_argument("end", type=float)
    one.add_argument("out", type=Path)
    two = modes.add_parser("hold")
    two.add_argument("directory", type=Path)
    two.add_argument("key")
    two.add_argument("out", type=Path)
    two.add_argument("--stuck-for", type=float, default=None)
    args = parser.parse_args(argv)
    if args.mode == "hold":
        return hold(args.directory, args.key, args.out, args.stuck_for)
    return asyncio.run(reserve(args.directory, args.key, args.rate, args.end, args.out))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
