"""The API's response shapes, as pydantic models at the boundary: the rerun answer, a
run, a page of executions and the workflow list. Unknown fields are ignored."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, RootModel


class _NewRun(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    status: str | None = None


class RerunResponse(BaseModel):
    """The parts of the 202 answer we rely on; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    original_run_id: str | None = None
    new_run: _NewRun


# A page of runs with their logs can be large; beyond this the server is broken or hostile.
MAX_PAGE_BYTES: Final = 16 << 20


class RunObject(BaseModel):
    """A workflow run as `GET /workflows/runs/{id}` and the executions list show it: the
    documented fields, and `created_at` when the server sends one. Timestamps stay text:
    reading them is the caller's job, so one odd timestamp never costs the whole run."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str
    status: str | None = None
    error_message: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    duration_in_seconds: float | None = None
    created_at: str | None = None


class PageLinks(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    next: str | None = None


class PageMeta(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    current_page: int | None = None
    last_page: int | None = None
    per_page: int | None = None
    total: int | None = None


class ExecutionsPage(BaseModel):
    """One page of `GET /workflows/{id}/executions` (Laravel's paginator). The run objects
    in `data` are kept as sent, to be read one by one: one odd item never costs the page."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    data: list[object]
    links: PageLinks | None = None
    meta: PageMeta | None = None


class WorkflowList(RootModel[list[object]]):
    """`GET /workflows`: a JSON array, anything else is a bad answer. The items are kept as
    sent, to be read one by one (`selection.read_workflows`): one odd item never costs the
    list."""

    model_config = ConfigDict(frozen=True)
