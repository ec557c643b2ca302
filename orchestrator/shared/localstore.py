"""The shared schedule in SQLite: every process of this host that can write the directory.

SQLite in WAL mode, each step one `BEGIN IMMEDIATE` transaction (the write lock is taken
before the read, so two processes never both read the old slot). Its locks are POSIX
advisory locks, which the kernel drops when a process dies: a `kill -9` at any moment
leaves no lock behind, and a transaction cut short is rolled back by the next opener.
`synchronous=NORMAL`: a power cut may lose the last few slots taken, which costs nothing.

Calls are blocking: a step takes tens of microseconds, less than a hop to a thread would.
Not for network filesystems (SQLite's WAL needs shared memory on one host).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Final, TypeVar

from orchestrator.errors import StoreError
from orchestrator.shared.store import (
    HOWS,
    Grant,
    How,
    Schedule,
    SharedLimit,
    pause_step,
    publish_step,
    reserve_step,
    usable_rate,
)

T = TypeVar("T")

FILE_NAME: Final = "rate-budget.sqlite3"
# How long a step waits for another process's transaction before giving up: far longer
# than any transaction takes, short enough that a wedged store fails the run over to
# its own budget quickly.
BUSY_TIMEOUT_S: Final = 2.0
# Opening a new store that another process is making WAL at that moment: try again after.
OPEN_RETRY_S: Final = 0.01

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS schedules (
    key TEXT PRIMARY KEY,
    tat REAL NOT NULL,
    paused_until REAL NOT NULL,
    count INTEGER NOT NULL,
    limit_per_s REAL,
    limit_how TEXT,
    limit_at REAL
)
"""


class LocalStore:
    """One key's schedule in `directory`/rate-budget.sqlite3.

    `now` is the schedule's clock: monotonic, which on Linux every process of a host
    shares (tests pass their fake clock); `wall` dates learned limits."""

    def __init__(
        self,
        directory: Path,
        key: str,
        now: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.description = f"sqlite {directory / FILE_NAME}"
        self._key = key
        self._now = now
        self._wall = wall
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(
                directory / FILE_NAME,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,  # we say when transactions begin
                check_same_thread=False,
            )
        except (OSError, ValueError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {self.description}: {_reason(exc)}") from None
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(_SCHEMA)
                break
            except sqlite3.Error as exc:
                # Processes that open a new store at the same moment race to make it WAL:
                # SQLite answers the loser "locked" at once, busy timeout or not.
                if _busy(exc) and time.monotonic() < deadline:
                    time.sleep(OPEN_RETRY_S)
                    continue
                self._db.close()
                raise StoreError(f"cannot use {self.description}: {_reason(exc)}") from None

    async def reserve(self, stated: float | None, *, counting: bool = False) -> Grant:
        def step(state: Schedule) -> tuple[Schedule, Grant]:
            return reserve_step(state, self._now(), self._wall(), stated, counting=counting)

        return self._transact(step)

    async def publish(self, per_s: float, how: How) -> None:
        self._transact(lambda state: (publish_step(state, self._wall(), per_s, how), None))

    async def pause(self, seconds: float) -> None:
        self._transact(lambda state: (pause_step(state, self._now(), seconds), None))

    async def peek(self) -> SharedLimit | None:
        try:
            row = self._db.execute(_SELECT, (self._key,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.description}: {_reason(exc)}") from None
        limit = _state(row).limit
        return limit if limit is not None and limit.fresh(self._wall()) else None

    async def close(self) -> None:
        self._db.close()

    def _transact(self, step: Callable[[Schedule], tuple[Schedule, T]]) -> T:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                state = _state(self._db.execute(_SELECT, (self._key,)).fetchone())
                new, result = step(state)
                if new != state:
                    self._db.execute(_UPSERT, (self._key, *_row(new)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self.description}: {_reason(exc)}") from None
        return result


_SELECT: Final = (
    "SELECT tat, paused_until, count, limit_per_s, limit_how, limit_at FROM schedules WHERE key = ?"
)
_UPSERT: Final = (
    "INSERT OR REPLACE INTO schedules"
    " (key, tat, paused_until, count, limit_per_s, limit_how, limit_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)

Row = tuple[float, float, int, float | None, str | None, float | None]


def _state(row: Row | None) -> Schedule:
    """A stored row as a schedule; a row written oddly (by hand, or another version)
    reads as empty: the schedule starts again, which costs at most one slot's spacing."""
    if row is None:
        return Schedule()
    try:
        tat, paused_until, count, per_s, how, at = row
        times = (float(tat), float(paused_until))
        limit = None
        if per_s is not None and at is not None and how in HOWS:
            limit = SharedLimit(float(per_s), how, float(at))
        schedule = Schedule(*times, int(count), limit)
    except (TypeError, ValueError, OverflowError):
        return Schedule()
    if not all(math.isfinite(t) for t in times):
        return Schedule()
    if limit is not None and not (usable_rate(limit.per_s) and math.isfinite(limit.at)):
        return replace(schedule, limit=None)
    return schedule


def _row(state: Schedule) -> Row:
    limit = state.limit
    return (
        state.tat,
        state.paused_until,
        state.count,
        None if limit is None else limit.per_s,
        None if limit is None else limit.how,
        None if limit is None else limit.at,
    )


def _busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock for now."""
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
