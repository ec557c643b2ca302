"""`orchestrator select`'s test kit: the runs a selection should print, newest first, and
`select` run in process against a simulator."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime
from typing import Any

from orchestrator.pacing.backoff import Backoff
from orchestrator.select.session import (
    SelectPlumbing,
    SelectResult,
    SelectSettings,
    run_select,
)
from orchestrator.select.walk import Criteria
from orchestrator.simulator import RunningSimulator
from orchestrator.simulator.models import Run
from tests.helpers.fakeclock import FakeClock

FIXED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TOKEN = "tok-5e1ec7-very-secret-padded-to-look-like-a-real-jwt"


def expected(
    sim: RunningSimulator,
    workflow_id: str,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[str]:
    """What select should print for one workflow, from the simulator's own books."""
    return [
        run.id
        for run in newest_first(sim, workflow_id)
        if (status is None or sim.state.snapshot(run).status == status)
        and (since is None or run.created_at >= since)
        and (until is None or run.created_at < until)
    ]


# ---- helpers -----------------------------------------------------------------------------


def newest_first(sim: RunningSimulator, workflow_id: str) -> list[Run]:
    runs = [r for r in sim.state.runs.values() if r.workflow_id == workflow_id]
    return sorted(runs, key=lambda r: (r.created_at, r.seq), reverse=True)


async def select(
    sim: RunningSimulator,
    workflows: list[str] | None = None,
    *,
    clock: FakeClock | None = None,
    token: str | None = None,
    criteria: Criteria | None = None,
    backoff: Backoff | None = None,
    **settings: Any,
) -> tuple[SelectResult, list[str]]:
    """One in-process session (`--rate none` unless told otherwise); the result and stdout."""
    out = io.StringIO()
    plumbing = SelectPlumbing(
        clock=clock or FakeClock(), rng=random.Random(0), stdout=out, backoff=backoff or Backoff()
    )
    chosen = SelectSettings(
        workflows=tuple(workflows or sim.state.workflow_ids[:1]),
        criteria=criteria or Criteria(),
        base_url=sim.base_url,
        **{"rate": None, **settings},
    )
    result = await run_select(chosen, token or sim.config.token, plumbing)
    return result, out.getvalue().splitlines()
