"""Pacers of several processes on one token's shared schedule, in one test."""

from __future__ import annotations

from pathlib import Path

from orchestrator.pacing.pacer import Pacer
from orchestrator.shared.localstore import LocalStore
from orchestrator.shared.schedule import SharedSchedule
from tests.helpers.fakeclock import FakeClock


async def pacers_on_one_store(
    directory: Path, clock: FakeClock, rate: float, count: int
) -> list[Pacer]:
    """`count` pacers, each as a process stating `rate`, sharing a local store in `directory`."""
    pacers = []
    for _ in range(count):
        store = LocalStore(directory, "key", now=clock.now)
        shared = SharedSchedule(store, "key", rate, clock.now)
        await shared.start()
        pacers.append(Pacer(rate, clock, shared=shared))
    return pacers
