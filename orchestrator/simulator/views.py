"""The JSON shapes of the simulated API: run objects, the rerun answer, paginated lists.

Pure: builds plain dicts from models; the service encodes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from orchestrator.simulator.models import Run, Snapshot, Workflow

Json: TypeAlias = dict[str, Any]


def timestamp(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with microseconds and a Z, as Laravel serialises dates."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_object(run: Run, snap: Snapshot, workflow: Workflow) -> Json:
    """A run as GET /workflows/runs/{id} and the executions list return it."""
    return {
        "id": run.id,
        "status": snap.status,
        "trigger_payload": {},
        "error_message": snap.error_message,
        "started_at": timestamp(snap.started_at),
        "completed_at": timestamp(snap.completed_at),
        "duration_in_seconds": snap.duration_in_seconds,
        "created_at": timestamp(run.created_at),
        "workflow_id": workflow.id,
        "workflow": {"id": workflow.id, "name": workflow.name},
        "logs": [
            {"created_at": timestamp(line.created_at), "level": line.level, "message": line.message}
            for line in snap.logs
        ],
    }


def workflow_object(workflow: Workflow) -> Json:
    """A workflow as GET /workflows lists it."""
    return {"id": workflow.id, "name": workflow.name}


def rerun_accepted(original_run_id: str, new_run: Run, workflow: Workflow) -> Json:
    """The 202 body of POST /workflows/runs/{id}/rerun: the new run just as it was queued."""
    return {
        "message": "Workflow run has been queued for rerun.",
        "original_run_id": original_run_id,
        "new_run": {
            "id": new_run.id,
            "status": "pending",
            "trigger_payload": {},
            "error_message": None,
            "started_at": None,
            "completed_at": None,
            "duration_in_seconds": None,
            "created_at": timestamp(new_run.created_at),
            "workflow": {"id": workflow.id, "name": workflow.name},
            "logs": [],
        },
    }


def parse_page(raw: str | None) -> int:
    """The requested page; like Laravel, anything but a positive integer means page 1."""
    if raw is None or not raw.isascii() or not raw.isdigit():
        return 1
    return max(1, int(raw))


@dataclass(frozen=True, slots=True)
class PageWindow:
    """Which slice of a newest-first list one page shows."""

    current_page: int
    per_page: int
    total: int

    @property
    def last_page(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def start(self) -> int:
        """Index of the first item on the page (may be past the end)."""
        return (self.current_page - 1) * self.per_page

    @property
    def stop(self) -> int:
        return min(self.total, self.start + self.per_page)

    @property
    def is_empty(self) -> bool:
        return self.start >= self.total


def paginated(items: list[Json], window: PageWindow, path: str) -> Json:
    """Laravel's paginator JSON for one page: `items` are that page's objects, `path`
    the absolute URL of the list without a query."""

    def url(page: int) -> str:
        return f"{path}?page={page}"

    page = window.current_page
    return {
        "data": items,
        "links": {
            "first": url(1),
            "last": url(window.last_page),
            "prev": url(page - 1) if page > 1 else None,
            "next": url(page + 1) if page < window.last_page else None,
        },
        "meta": {
            "current_page": page,
            "from": None if window.is_empty else window.start + 1,
            "last_page": window.last_page,
            "path": path,
            "per_page": window.per_page,
            "to": None if window.is_empty else window.stop,
            "total": window.total,
        },
    }
