"""The simulated API's data: workflows, runs, and what a run looks like at a given moment.

A run's status is never stored for runs that progress: it is derived from the clock
whenever it is read, so the simulator needs no background task.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeAlias

RunStatus: TypeAlias = Literal[
    "pending", "running", "completed", "failed", "awaiting_ui_interaction"
]
Outcome: TypeAlias = Literal["completed", "failed", "stuck", "needs_person"]
SCRIPTABLE_OUTCOMES: dict[str, Outcome] = {
    "completed": "completed",
    "failed": "failed",
    "stuck": "stuck",
    "needs_person": "needs_person",
}


@dataclass(frozen=True, slots=True)
class Workflow:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Settled:
    """A run whose state never changes (the seeded history)."""

    status: RunStatus
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_in_seconds: int | None


@dataclass(frozen=True, slots=True)
class Progressing:
    """A run created by a rerun: pending, then running, then its outcome, over clock time."""

    began: float  # clock seconds at creation
    pending_s: float
    running_s: float
    outcome: Outcome  # "stuck" stays running forever
    error_message: str | None  # set when the outcome is "failed"


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    workflow_id: str
    created_at: datetime
    # Creation order; breaks created_at ties so the newest run lists first.
    seq: int
    timeline: Settled | Progressing
    # The run this one reruns, if it was created by a rerun.
    rerun_of: str | None = None


@dataclass(frozen=True, slots=True)
class LogLine:
    created_at: datetime
    level: Literal["info", "error"]
    message: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A run's mutable fields as seen at one moment."""

    status: RunStatus
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_in_seconds: int | None
    logs: tuple[LogLine, ...]


def _logs(settled: Settled) -> tuple[LogLine, ...]:
    lines: list[LogLine] = []
    if settled.started_at is not None:
        lines.append(LogLine(settled.started_at, "info", "Workflow run started."))
        if settled.status == "awaiting_ui_interaction":
            lines.append(LogLine(settled.started_at, "info", "Waiting for user interaction."))
    if settled.completed_at is not None:
        if settled.status == "failed":
            message = settled.error_message or "Workflow run failed."
            lines.append(LogLine(settled.completed_at, "error", message))
        else:
            lines.append(LogLine(settled.completed_at, "info", "Workflow run completed."))
    return tuple(lines)


def _settle(run: Run, timeline: Progressing, now: float) -> Settled:
    elapsed = now - timeline.began
    if elapsed < timeline.pending_s:
        return Settled("pending", None, None, None, None)
    started_at = run.created_at + timedelta(seconds=timeline.pending_s)
    if timeline.outcome == "stuck" or elapsed < timeline.pending_s + timeline.running_s:
        return Settled("running", None, started_at, None, None)
    completed_at = started_at + timedelta(seconds=timeline.running_s)
    duration = round(timeline.running_s)
    if timeline.outcome == "failed":
        return Settled("failed", timeline.error_message, started_at, completed_at, duration)
    if timeline.outcome == "needs_person":
        return Settled("awaiting_ui_interaction", None, started_at, None, None)
    return Settled("completed", None, started_at, completed_at, duration)


def snapshot(run: Run, now: float) -> Snapshot:
    """`run` as it stands at clock time `now`."""
    timeline = run.timeline
    settled = timeline if isinstance(timeline, Settled) else _settle(run, timeline, now)
    return Snapshot(
        settled.status,
        settled.error_message,
        settled.started_at,
        settled.completed_at,
        settled.duration_in_seconds,
        _logs(settled),
    )
