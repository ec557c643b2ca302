"""The session's side of the ledger: a record the ledger cannot take stops the run (as a
signal does), and the error is told once; what it could not take is kept for the summary
by the caller."""

from __future__ import annotations

import structlog

from orchestrator.errors import LedgerUnwritable
from orchestrator.ledger.records import Record
from orchestrator.ledger.writer import LedgerWriter
from orchestrator.outcome import StopReason
from orchestrator.rerun.stop import Stop

log = structlog.get_logger("orchestrator")


class Recorder:
    def __init__(self, writer: LedgerWriter, ledger: str, stop: Stop) -> None:
        self.writer = writer
        self._ledger = ledger
        self._stop = stop
        self.error: str | None = None  # why the ledger stopped taking records

    def record(self, record: Record) -> bool:
        """Append a record; False when the ledger could not take it (the run then stops)."""
        try:
            self.writer.append(record)
        except LedgerUnwritable as exc:
            self.failed(exc)
            return False
        return True

    async def durable(self, record: Record) -> None:
        """Append a record and make it durable; raises LedgerUnwritable (and the run
        stops) when it could not be."""
        try:
            await self.writer.append_durable(record)
        except LedgerUnwritable as exc:
            self.failed(exc)
            raise

    def failed(self, exc: LedgerUnwritable) -> None:
        """Stop as a signal does; what the ledger cannot take is kept for the summary."""
        if self.error is None:
            self.error = str(exc)
            log.error(
                "ledger.unwritable",
                ledger=self._ledger,
                error=self.error,
                detail="no new request starts; requests in flight finish, and outcomes the "
                "ledger cannot take are listed in the summary",
            )
        self._stop.request(StopReason.LEDGER, f"ledger: {self.error}")
