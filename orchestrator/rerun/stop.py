"""Stopping a rerun session: why it stops, and every wait a stop interrupts.

A signal, an auth failure, an outage, a spent error budget, a ledger that fails or a
reader that went away stops the run. The reading, the workers and the waiter all run in
one cancel scope (`scope`), which a stop cancels: every wait ends, wherever it is, so no
new request starts. Only a request and its ledger records are shielded (`shielded`), so a
request in flight finishes and is recorded (bounded by the request timeout). A second
signal lifts the shields: what was in flight is then in doubt.
"""

from __future__ import annotations

import signal
from types import TracebackType

import anyio
import structlog

from orchestrator.api.outcomes import Abort
from orchestrator.errors import OutageError
from orchestrator.outcome import StopReason
from orchestrator.units import format_span

log = structlog.get_logger("orchestrator")

# Signals that drain the run: no new request, those in flight finish. SIGHUP is a dropped
# terminal or SSH session.
STOP_SIGNALS = {
    signal.SIGINT: StopReason.SIGINT,
    signal.SIGTERM: StopReason.SIGTERM,
    signal.SIGHUP: StopReason.SIGHUP,
}


class Stop:
    """Whether the session stops, and why; `scope` is what a stop cancels."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self.reason: StopReason | None = None
        self.detail: str | None = None
        self.scope = anyio.CancelScope()
        self._shields: set[anyio.CancelScope] = set()

    @property
    def stopping(self) -> bool:
        return self.reason is not None

    def request(self, reason: StopReason, detail: str | None = None) -> None:
        """Start no new request: cancel the scope; requests in flight finish.

        A second signal stops at once, cancelling the requests in flight too."""
        if self.reason is not None:
            if reason in STOP_SIGNALS.values():
                log.warning("rerun.forced_stop", signal=reason.value)
                for shield in self._shields:
                    shield.cancel()
            return
        self.reason = reason
        self.detail = detail
        self.scope.cancel()

    def shielded(self) -> _Shield:
        """A request and its ledger records: a stop lets them finish, a second signal
        does not (the scope's `cancelled_caught` then says so)."""
        return _Shield(self._shields)

    async def watch_signals(self) -> None:
        watched = [
            signum
            for signum in STOP_SIGNALS
            # Started under nohup: the operator asked to outlive the terminal.
            if not (signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN)
        ]
        with anyio.open_signal_receiver(*watched) as signals:
            async for signum in signals:
                reason = STOP_SIGNALS[signal.Signals(signum)]
                if not self.stopping:
                    log.warning(
                        "rerun.stopping",
                        signal=reason.value,
                        detail="finishing requests in flight; signal again to stop at once",
                    )
                self.request(reason)

    def outage(self, exc: OutageError) -> None:
        """The API has been down for --max-outage: stop as a signal does. Requests in
        flight finish; whatever is not settled stays resendable (or in doubt, when a
        request may have been accepted unseen)."""
        if self.stopping:
            return
        what = (
            "no HTTP answer"
            if exc.kind == "no_answer"
            else "the circuit open (the service kept failing)"
        )
        detail = (
            f"outage: {what} from {self._base_url} for {format_span(exc.seconds)} "
            f"(--max-outage); last error: {exc.last_error or 'none'}"
        )
        log.error(
            "rerun.outage",
            base_url=self._base_url,
            last_error=exc.last_error,
            max_outage_s=exc.seconds,
            detail=detail + "; no new request starts, and the same command resends "
            "what is not settled once the API is back",
        )
        self.request(StopReason.OUTAGE, detail)

    def refused(self, outcome: Abort) -> None:
        """The API refused the token (to a rerun or a poll): stop everything."""
        if not self.stopping:
            log.error(
                "rerun.aborted",
                http_status=outcome.http_status,
                error=outcome.error,
                detail="the API refused the token; no further requests are sent",
            )
        self.request(StopReason.ABORTED, f"HTTP {outcome.http_status} {outcome.error}")


class _Shield:
    """A shielded cancel scope that `Stop` can find while it is entered (a second signal
    cancels it). A class, not a generator: it is entered once a request."""

    __slots__ = ("_scope", "_shields")

    def __init__(self, shields: set[anyio.CancelScope]) -> None:
        self._shields = shields
        self._scope = anyio.CancelScope(shield=True)

    def __enter__(self) -> anyio.CancelScope:
        scope = self._scope.__enter__()
        self._shields.add(scope)
        return scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._shields.discard(self._scope)
        return bool(self._scope.__exit__(exc_type, exc, tb))
