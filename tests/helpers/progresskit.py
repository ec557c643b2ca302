"""The live progress display's test kit: snapshots with chosen counts, and a script of
snapshots played to a fake terminal."""

from __future__ import annotations

import dataclasses

from orchestrator.outcome import Snapshot


def snap(**changes: object) -> Snapshot:
    base = Snapshot(
        lines=0,
        done=0,
        input_done=False,
        succeeded=0,
        failed=0,
        in_flight=0,
        requests=0,
        rate_limited=0,
        target_rate=10.0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class Script:
    """A snapshot source and a clock that a test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.current = snap()

    def clock(self) -> float:
        return self.now

    def snapshot(self) -> Snapshot:
        return self.current
