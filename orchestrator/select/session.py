"""`orchestrator select`, the session: page through each workflow's executions and print
the runs that match, one a line.

With `--all-workflows` the session first asks `GET /workflows` for the token's
workflows, paced and retried as a page is, then walks each as if it had been named.

API pages → `selection.Walk` (repeats, window, when to stop) → stdout, flushed page by
page so that a `rerun` reading the pipe starts at once. One request at a time, each
through the one `Pacer` and `call_with_retries`, with the same rate, Retry-After pause,
backoff and attempt count as a rerun's requests.
"""

from __future__ import annotations

import enum
import functools
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, TextIO, TypeVar

import aiohttp
import structlog

from orchestrator.api.client import DEFAULT_BASE_URL, AltostratClient
from orchestrator.api.models import ExecutionsPage, WorkflowList
from orchestrator.api.outcomes import Abort, Failed, Retryable
from orchestrator.errors import ExitCode, PagingError
from orchestrator.outcome import status_key
from orchestrator.pacing.backoff import Backoff
from orchestrator.pacing.clock import Clock
from orchestrator.pacing.pacer import Pacer
from orchestrator.pacing.retry import Retrying, RetryNote, call_with_retries
from orchestrator.select.walk import (
    Criteria,
    Fed,
    Listed,
    Walk,
    WalkStats,
    read_page,
    read_workflows,
)
from orchestrator.shared.schedule import SharedSchedule, open_shared
from orchestrator.shared.store import NO_STORE, BudgetReport, StoreSpec

log = structlog.get_logger("orchestrator")

# Warnings and the summary name this many runs; the counts hold the rest.
SHOWN: Final = 20

T = TypeVar("T")


@dataclass(frozen=True)
class SelectSettings:
    workflows: tuple[str, ...]  # empty with all_workflows: the API names them
    criteria: Criteria
    all_workflows: bool = False
    limit: int | None = None
    as_json: bool = False
    base_url: str = DEFAULT_BASE_URL
    rate: float | None = 1.0  # requests per second; None = no client-side limit
    max_attempts: int = 5
    timeout: float = 30.0
    rate_store: StoreSpec = NO_STORE


@dataclass(frozen=True)
class SelectPlumbing:
    """What the session is given rather than makes, so tests can swap it."""

    clock: Clock
    rng: random.Random
    stdout: TextIO
    backoff: Backoff = field(default_factory=Backoff)


class SelectOutcome(enum.StrEnum):
    COMPLETED = "completed"  # every workflow was walked as far as it had to be
    LIMIT = "limit"  # --limit runs were printed
    OUTPUT_CLOSED = "output_closed"  # the reader of stdout went away (`| head`)
    ABORTED = "aborted"  # the API refused the token


@dataclass
class WorkflowResult:
    stats: WalkStats
    error: str | None = None  # why its walk could not finish


@dataclass
class SelectResult:
    outcome: SelectOutcome
    printed: int
    workflows: dict[str, WorkflowResult]
    requests: int
    retries: int
    by_status: Counter[str]
    elapsed_s: float
    abort_detail: str | None = None
    budget: BudgetReport | None = None  # the token's rate budget, when a store was open
    listing_error: str | None = None  # --all-workflows: why GET /workflows gave no list


def exit_code(result: SelectResult) -> ExitCode:
    if result.outcome is SelectOutcome.ABORTED:
        return ExitCode.ABORTED
    if result.outcome is SelectOutcome.OUTPUT_CLOSED:
        return ExitCode.BROKEN_PIPE  # as every command whose reader went away (`| head`)
    if result.listing_error is not None:
        return ExitCode.INCOMPLETE
    if any(w.error is not None for w in result.workflows.values()):
        return ExitCode.INCOMPLETE
    return ExitCode.OK


def summary(result: SelectResult) -> dict[str, object]:
    """The end-of-run summary as flat, JSON-ready fields."""
    fields: dict[str, object] = {
        "outcome": result.outcome.value,
        "exit_code": int(exit_code(result)),
        "printed": result.printed,
        "workflows": {
            workflow_id: {
                "pages": w.stats.pages,
                "listed": w.stats.listed,
                "matched": w.stats.matched,
                "repeats": w.stats.repeats,
                "arrived_while_paging": w.stats.arrived,
                "undated_skipped": w.stats.undated,
                "unreadable": w.stats.unreadable,
                "stepped_back": w.stats.stepped_back,
                "error": w.error,
            }
            for workflow_id, w in result.workflows.items()
        },
        "requests": result.requests,
        "retries": result.retries,
        "requests_by_status": dict(sorted(result.by_status.items())),
        "elapsed_s": round(result.elapsed_s, 3),
    }
    if result.abort_detail:
        fields["abort_detail"] = result.abort_detail
    if result.listing_error:
        fields["listing_error"] = result.listing_error
    if result.budget is not None:
        fields.update(result.budget.fields())
    return fields


def _status_key(answer: ExecutionsPage | WorkflowList | Retryable | Failed | Abort) -> str:
    """How a request is counted: its HTTP status, or the error when no answer came."""
    if isinstance(answer, ExecutionsPage | WorkflowList):
        return "2xx"
    return status_key(answer.http_status, answer.error)


class Selector:
    """One `orchestrator select` session over an API client."""

    def __init__(
        self,
        settings: SelectSettings,
        client: AltostratClient,
        plumbing: SelectPlumbing,
        shared: SharedSchedule | None = None,
    ) -> None:
        self.settings = settings
        self._client = client
        self._plumbing = plumbing
        self._pacer = Pacer(settings.rate, plumbing.clock, shared=shared)
        self._retrying = Retrying(self._pacer, plumbing.backoff, plumbing.rng)
        self._workflows: dict[str, WorkflowResult] = {}
        self._printed = 0
        self._requests = 0
        self._retries = 0
        self._by_status: Counter[str] = Counter()
        self._abort_detail: str | None = None
        self._listing_error: str | None = None

    async def run(self) -> SelectResult:
        clock = self._plumbing.clock
        started = clock.now()
        outcome = SelectOutcome.COMPLETED
        workflows: tuple[str, ...] | SelectOutcome | None = self.settings.workflows
        if self.settings.all_workflows:
            workflows = await self._list_workflows()
        if isinstance(workflows, SelectOutcome):
            outcome = workflows
        for workflow_id in workflows if isinstance(workflows, tuple) else ():
            stop = await self._walk(workflow_id)
            if stop is not None:
                outcome = stop
                break
        return SelectResult(
            outcome=outcome,
            printed=self._printed,
            workflows=self._workflows,
            requests=self._requests,
            retries=self._retries,
            by_status=self._by_status,
            elapsed_s=clock.now() - started,
            abort_detail=self._abort_detail,
            budget=None if self._pacer.shared is None else self._pacer.shared.report(),
            listing_error=self._listing_error,
        )

    async def _list_workflows(self) -> tuple[str, ...] | SelectOutcome | None:
        """The token's workflows, from `GET /workflows`; an outcome when the whole session
        must stop, None when there is no list to walk (said in the log)."""

        async def once() -> WorkflowList | Retryable | Failed | Abort:
            self._requests += 1
            answer = await self._client.list_workflows()
            self._by_status[_status_key(answer)] += 1
            return answer

        where: dict[str, object] = {"request": "GET /workflows"}
        answer: WorkflowList | Retryable | Failed | Abort = await self._call(
            once, functools.partial(self._on_retry, where)
        )
        if isinstance(answer, Abort):
            self._abort(answer, None)
            return SelectOutcome.ABORTED
        if not isinstance(answer, WorkflowList):
            self._listing_error = answer.error
            why = (
                f"gave up after {self.settings.max_attempts} attempts"
                if isinstance(answer, Retryable)
                else "the API refused the request"
            )
            log.error(
                "select.workflows_failed",
                http_status=answer.http_status,
                error=answer.error,
                detail=f"GET /workflows gave no list of workflows ({why}); nothing was walked",
            )
            return None
        found = read_workflows(answer)
        if found.unreadable:
            log.warning(
                "select.unreadable_workflows",
                count=len(found.unreadable),
                items=[{"id": u.id, "reason": u.reason} for u in found.unreadable[:SHOWN]],
                detail="items of GET /workflows that are not usable workflow objects: skipped",
            )
        log.info("select.workflows_listed", count=len(found.ids), workflows=list(found.ids))
        return found.ids

    async def _walk(self, workflow_id: str) -> SelectOutcome | None:
        """Walk one workflow; an outcome when the whole session must stop."""
        walk = Walk(self.settings.criteria)
        result = self._workflows[workflow_id] = WorkflowResult(walk.stats)
        while (number := walk.next_page) is not None:
            answer = await self._fetch(workflow_id, number)
            if isinstance(answer, Abort):
                result.error = answer.error
                self._abort(answer, workflow_id)
                return SelectOutcome.ABORTED
            if not isinstance(answer, ExecutionsPage):
                result.error = self._failed(workflow_id, number, answer)
                return None
            try:
                fed = walk.feed(read_page(number, answer))
            except PagingError as exc:
                result.error = "paging_failed"
                log.error(  # noqa: TRY400 - the message says it all; a traceback would not
                    "select.paging_failed", workflow=workflow_id, page=number, detail=str(exc)
                )
                return None
            self._warn(workflow_id, number, fed)
            if (stop := self._emit(fed.matches)) is not None:
                return stop
        return None

    def _abort(self, answer: Abort, workflow_id: str | None) -> None:
        self._abort_detail = f"HTTP {answer.http_status} {answer.error}"
        log.error(
            "select.aborted",
            workflow=workflow_id,
            http_status=answer.http_status,
            error=answer.error,
            detail="the API refused the token; no further requests are sent",
        )

    async def _fetch(
        self, workflow_id: str, number: int
    ) -> ExecutionsPage | Retryable | Failed | Abort:
        async def once() -> ExecutionsPage | Retryable | Failed | Abort:
            self._requests += 1
            answer = await self._client.list_executions(workflow_id, number)
            self._by_status[_status_key(answer)] += 1
            return answer

        where: dict[str, object] = {"workflow": workflow_id, "page": number}
        return await self._call(once, functools.partial(self._on_retry, where))

    async def _call(
        self, once: Callable[[], Awaitable[T | Retryable]], on_retry: Callable[[RetryNote], None]
    ) -> T | Retryable:
        """One request through the one pacer and the one retry loop, as every request is."""
        p = self._plumbing
        return await call_with_retries(
            self._retrying,
            once,
            clock=p.clock,
            max_attempts=self.settings.max_attempts,
            on_retry=on_retry,
        )

    def _on_retry(self, where: dict[str, object], note: RetryNote) -> None:
        """Log a retry; `where` names the request (a workflow's page, or the list)."""
        self._retries += 1
        # One request at a time: a Retry-After that holds only this one holds the walk.
        if note.paused or (note.delay_s and note.delay_s == note.outcome.retry_after):
            log.info("select.paused", seconds=note.outcome.retry_after, **where)
        log.info(
            "select.retry",
            **where,
            attempt=note.attempt,
            http_status=note.outcome.http_status,
            error=note.outcome.error,
        )

    def _failed(self, workflow_id: str, number: int, answer: Retryable | Failed) -> str:
        """Say why a workflow could not be walked to its end; the error for the summary."""
        if isinstance(answer, Failed) and answer.http_status == 404:
            log.error(
                "select.workflow_not_found",
                workflow=workflow_id,
                page=number,
                detail="the API knows no such workflow; check the --workflow ID",
            )
            return "not_found"
        detail = (
            f"gave up after {self.settings.max_attempts} attempts"
            if isinstance(answer, Retryable)
            else "the API refused the request"
        )
        log.error(
            "select.workflow_failed",
            workflow=workflow_id,
            page=number,
            http_status=answer.http_status,
            error=answer.error,
            detail=f"{detail}; runs printed before this page stand",
        )
        return answer.error

    def _warn(self, workflow_id: str, number: int, fed: Fed) -> None:
        if fed.undated:
            log.warning(
                "select.undated_runs",
                workflow=workflow_id,
                page=number,
                count=len(fed.undated),
                run_ids=[run.id for run in fed.undated[:SHOWN]],
                detail="no readable created_at or started_at: left out of the time window",
            )
        if fed.unreadable:
            log.warning(
                "select.unreadable_runs",
                workflow=workflow_id,
                page=number,
                count=len(fed.unreadable),
                items=[{"id": u.id, "reason": u.reason} for u in fed.unreadable[:SHOWN]],
            )

    def _emit(self, runs: tuple[Listed, ...]) -> SelectOutcome | None:
        """Print runs up to the limit; an outcome when printing is over."""
        limit = self.settings.limit
        out = self._plumbing.stdout
        try:
            for run in runs:
                if limit is not None and self._printed >= limit:
                    break
                out.write(self._line(run))
                self._printed += 1
            out.flush()
        except BrokenPipeError:
            log.info("select.output_closed", printed=self._printed)
            return SelectOutcome.OUTPUT_CLOSED
        if limit is not None and self._printed >= limit:
            return SelectOutcome.LIMIT
        return None

    def _line(self, run: Listed) -> str:
        if self.settings.as_json:
            # ASCII-only JSON: safe on any stdout encoding, read back by `rerun -`.
            return json.dumps(run.raw, separators=(",", ":")) + "\n"
        return run.id + "\n"


async def run_select(
    settings: SelectSettings, token: str, plumbing: SelectPlumbing
) -> SelectResult:
    """Run one `orchestrator select` session."""
    log.info(
        "select.starting",
        workflows="all" if settings.all_workflows else list(settings.workflows),
        statuses=sorted(settings.criteria.statuses),
        since=settings.criteria.since.isoformat() if settings.criteria.since else None,
        until=settings.criteria.until.isoformat() if settings.criteria.until else None,
        limit=settings.limit,
        base_url=settings.base_url,
        rate_per_s=settings.rate,
    )
    # One request at a time: pages of a workflow follow one another by nature.
    connector = aiohttp.TCPConnector(limit=1)
    shared = await open_shared(
        settings.rate_store, settings.base_url, token, settings.rate, plumbing.clock.now
    )
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            client = AltostratClient(session, settings.base_url, token, settings.timeout)
            return await Selector(settings, client, plumbing, shared).run()
    finally:
        if shared is not None:
            await shared.close()
