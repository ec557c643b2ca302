"""The circuit breaker: after faults in a row, nothing leaves for a growing while instead
of hammering a sick server; then one probe request decides whether it closes."""

from __future__ import annotations

import anyio
import anyio.lowlevel

from orchestrator.pacing.clock import Clock


class Circuit:
    """Stops dispatching while the service looks down, instead of burning every ID's
    attempts on it. After `threshold` faults in a row (5xx, timeouts, connection errors,
    from any worker) it opens: nothing leaves for a growing while; then one probe request
    goes out, and its answer closes the circuit or opens it again for longer."""

    def __init__(
        self, threshold: int, clock: Clock, base_s: float = 1.0, cap_s: float = 60.0
    ) -> None:
        self._threshold = threshold
        self._clock = clock
        self._base_s = base_s
        self._cap_s = cap_s
        self._faults = 0
        self._opened = 0  # how many times in a row it opened: the backoff grows with it
        self._reopen_at: float | None = None  # set while open
        self.open_since: float | None = None  # when it opened, while it stays open
        self._probing = False
        self._changed = anyio.Event()

    @property
    def is_open(self) -> bool:
        return self._reopen_at is not None

    async def wait(self, until: float | None = None) -> None:
        """Return when a request may leave: the circuit is closed, or this is the probe;
        or at `until`, if that comes first."""
        while self._reopen_at is not None:
            now = self._clock.now()
            if until is not None and now >= until:
                return
            left = self._reopen_at - now
            if left > 0:
                await self._clock.sleep(left if until is None else min(left, until - now))
            elif not self._probing:
                self._probing = True
                return
            else:
                await self._changed.wait()

    def record(self, fault: bool) -> str | None:
        """Count one answer; "opened" or "closed" when that changed the circuit."""
        if self._threshold <= 0:
            return None
        if not fault:
            self._faults = 0
            if self._reopen_at is None:
                return None
            self._reopen_at, self._probing, self._opened = None, False, 0
            self.open_since = None
            self._notify()
            return "closed"
        self._faults += 1
        if self._reopen_at is None and self._faults < self._threshold:
            return None
        if self._reopen_at is not None and not self._probing:
            return None  # a straggler from before the circuit opened
        self._opened += 1
        if self._reopen_at is None:
            self.open_since = self._clock.now()
        self._reopen_at = self._clock.now() + self.backoff_s
        self._probing = False
        self._notify()
        return "opened"

    @property
    def backoff_s(self) -> float:
        return min(self._cap_s, self._base_s * 2.0 ** min(self._opened - 1, 30))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
