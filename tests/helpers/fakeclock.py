"""A virtual clock for tests: sleeping costs no real time.

`autojump=True`: a sleep moves virtual time straight to its deadline (for tests that only
care that waits happened, one sleeper at a time). `autojump=False`: sleepers wait until the
test calls `advance`, so a test can look at the world while every worker is parked; or,
inside `async with clock.driven():`, until every task is blocked, when time jumps to the
earliest deadline (trio's autojump clock): faithful for many concurrent sleepers. Work
handed to a worker thread (the ledger's fsync) counts as running: time never jumps while
it is out, whatever the disk's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import anyio
import anyio.lowlevel
import anyio.to_thread

# Loop turns without a change before time may jump: enough for a loopback round trip.
_QUIET_TURNS: Final = 20
# How long a runnable task is given before a driven clock looks again (anyio's
# `wait_all_tasks_blocked` takes 100 ms): long enough, on a loaded machine, for the work
# of threads that the clock does not see (a resolver's) and for loopback I/O to land.
_LOOK_AGAIN_S: Final = 0.1


async def _all_tasks_blocked(look_again_s: float) -> None:
    """`anyio.wait_all_tasks_blocked`, looking again after `look_again_s`."""
    await anyio.lowlevel.checkpoint()
    this_task = asyncio.current_task()
    while True:
        for task in asyncio.all_tasks():
            waiter = getattr(task, "_fut_waiter", None)
            if task is not this_task and (waiter is None or waiter.done()):
                await asyncio.sleep(look_again_s)
                break
        else:
            return


class FakeClock:
    def __init__(self, start: float = 1000.0, *, autojump: bool = True) -> None:
        self._now = start
        self.autojump = autojump
        self.slept: list[float] = []
        self._sleepers: list[tuple[float, anyio.Event]] = []
        self._changed = anyio.Event()
        self._in_threads = 0
        self._threads_idle = anyio.Event()
        self._look_again_s = _LOOK_AGAIN_S

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds <= 0 or self.autojump:
            self._now += max(0.0, seconds)
            await anyio.lowlevel.checkpoint()
            return
        entry = (self._now + seconds, anyio.Event())
        self._sleepers.append(entry)
        self._notify()
        try:
            await entry[1].wait()
        finally:
            self._sleepers.remove(entry)
            self._notify()

    async def sleep_until(self, deadline: float) -> None:
        await self.sleep(deadline - self._now)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self._now += seconds
        for deadline, event in self._sleepers:
            if deadline <= self._now:
                event.set()

    @asynccontextmanager
    async def driven(self, look_again_s: float = _LOOK_AGAIN_S) -> AsyncIterator[None]:
        """Time jumps whenever every task is blocked. A test whose only other work is its
        own simulator and pacing may look again sooner (1 ms): a test of a slow rate
        makes thousands of jumps, each costing this much real time."""
        assert not self.autojump
        self._look_again_s = look_again_s
        real = anyio.to_thread.run_sync

        async def counted(func: Callable[..., object], *args: object, **kwargs: object) -> object:
            self._in_threads += 1
            try:
                return await real(func, *args, **kwargs)  # type: ignore[arg-type]
            finally:
                self._in_threads -= 1
                if not self._in_threads:
                    self._threads_idle.set()
                    self._threads_idle = anyio.Event()

        anyio.to_thread.run_sync = counted  # type: ignore[assignment]
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drive)
                yield
                tg.cancel_scope.cancel()
        finally:
            anyio.to_thread.run_sync = real

    async def _drive(self) -> None:
        while True:
            if not self._sleepers:
                await self._changed.wait()
                continue
            await self._quiet()
            if self._sleepers:
                self.advance(max(0.0, min(d for d, _ in self._sleepers) - self._now))

    async def _quiet(self) -> None:
        """Return when every task is blocked and loopback I/O has stopped moving.

        A task waiting on a socket counts as blocked, yet its answer may be one loop turn
        away: jumping then would make in-flight requests arrive late in virtual time and
        bunch up at the server. So the loop is turned until nothing moved for a while.
        """
        while True:
            while self._in_threads:
                await self._threads_idle.wait()
            await _all_tasks_blocked(self._look_again_s)
            before = self._now, len(self._sleepers), self._activity(), self._in_threads
            for _ in range(_QUIET_TURNS):
                await anyio.lowlevel.checkpoint()
            if (self._now, len(self._sleepers), self._activity(), self._in_threads) == before:
                return

    @staticmethod
    def _activity() -> int:
        """How many callbacks the event loop has queued: a cheap sign of life."""
        loop = asyncio.get_running_loop()
        return len(getattr(loop, "_ready", ()))

    @property
    def sleepers(self) -> int:
        return len(self._sleepers)

    async def wait_for_sleepers(self, count: int) -> None:
        """Wait (no real time) until at least `count` tasks sleep on this clock."""
        while len(self._sleepers) < count:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
