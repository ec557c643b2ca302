"""What a rerun session is given rather than makes, so tests can swap it."""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from orchestrator.ledger.writer import FileOps
from orchestrator.outcome import Snapshot
from orchestrator.pacing.backoff import Backoff
from orchestrator.pacing.clock import Clock, RealClock
from orchestrator.rerun.plan import Plan


@dataclass(frozen=True)
class Plumbing:
    clock: Clock
    rng: random.Random
    backoff: Backoff = field(default_factory=Backoff)
    handle_signals: bool = True
    stdin: BinaryIO | None = None
    stdout: TextIO | None = None
    # Watches a sending session from start to end, such as the live progress display;
    # it is handed a function it may call from any thread for the counts so far.
    monitor: Callable[[Callable[[], Snapshot]], AbstractContextManager[object]] | None = None
    # The ledger's system calls; tests fill the disk or fail an fsync here.
    ledger_ops: FileOps | None = None
    # Asked, before a real run sends anything, whether to go on with this plan (the
    # terminal's y/N); None sends without asking.
    confirm: Callable[[Plan], bool] | None = None
    # Dry run: the token, when one is set, to read a limit learned for it from the store.
    token: str | None = field(default=None, repr=False)

    @classmethod
    def default(cls) -> Plumbing:
        return cls(clock=RealClock(), rng=random.Random())
