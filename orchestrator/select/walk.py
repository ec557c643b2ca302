"""Which runs `orchestrator select` prints, and how it pages to find them. Pure: no I/O.

The executions list is offset-paginated and newest first, and new runs (reruns among
them) join it at the top while we page, so every item slides down and page n+1 starts
with the last items of page n. The walk copes thus:

- Every ID is printed once: an ID already seen is dropped. That set of IDs is the only
  state that grows (bounded by the runs in the window, plus one page).
- Nothing slides past us: an insertion at the top only pushes items towards pages not
  read yet.
- Runs that joined after the first page was read are left out: anything dated after the
  newest run of the first page (the *horizon*) arrived while paging. The output is the
  list as it stood when `select` started, and a `rerun` reading it never sees its own new
  runs come back.
- If the list shrank between two reads (runs deleted), items may have slid *up* into a
  page already read: the walk steps back far enough to read them again (repeats are
  dropped). A deletion balanced by as many insertions between two reads cannot be seen
  through offset pages; only a cursor API could show it.
- It stops at an empty page, when the server says there is no next page (`links.next`
  null, or `meta.current_page` at `meta.last_page`), or once every dated run of a page is
  older than `--since`.
- It ends with `PagingError` when the server loops: a page answering with another page
  number than asked, pages that keep bringing nothing new, pages going on well past the
  last page the server announced, or a list that keeps shrinking.

A run's time is its `created_at` (the order of the list) when the server sends one, else
its `started_at`. A run with neither readable is *undated*: listed when no time window is
given, skipped (and reported) when one is.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.api.models import ExecutionsPage, RunObject, WorkflowList
from orchestrator.errors import PagingError
from orchestrator.ids import RUN_ID_PREFIX, is_run_id
from orchestrator.units import is_span, parse_span

STATUSES: Final = ("pending", "running", "completed", "failed", "awaiting_ui_interaction")

# Pages past the furthest read that bring no new run, in a row, before the walk gives up.
MAX_IDLE_PAGES: Final = 5
# Pages read past the last page the server ever announced, before the walk gives up.
EXTRA_PAGES: Final = 10
# Times the list may shrink under the walk (each costing a step back) before it gives up.
MAX_STEP_BACKS: Final = 100
MAX_WORKFLOW_ID_LEN: Final = 128

# Python reads at most microseconds; servers may send nanoseconds.
_LONG_FRACTION: Final = re.compile(r"(\.\d{6})\d+")


# ---- times -----------------------------------------------------------------------------


def _iso(text: str) -> datetime | None:
    candidate = text.strip().upper()  # RFC 3339 allows a lower-case t and z
    if candidate.endswith("Z"):
        candidate = candidate[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", candidate))
    except ValueError:
        return None


def parse_time(text: str, now: datetime) -> datetime:
    """An instant (UTC) from an RFC 3339 time with an offset, `now`, or a span back from
    `now` such as `90s`, `30m`, `2h`, `1d`, `1w` or `1h30m`.

    Raises ValueError with a message fit for the user.
    """
    raw = text.strip().lower()
    try:
        if raw == "now":
            return now
        if is_span(raw):
            return now - timedelta(seconds=parse_span(raw))
        moment = _iso(text)
        if moment is None:
            raise ValueError(
                f"{text!r} is neither an RFC 3339 time such as 2026-03-02T09:10:00Z "
                "nor a span back from now such as 90s, 30m, 2h, 1d or 1h30m"
            )
        if moment.tzinfo is None:
            raise ValueError(f"{text!r} has no UTC offset: add Z (UTC) or one such as +01:00")
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is too far from now") from None


def parse_api_time(value: str | None) -> datetime | None:
    """A timestamp from the API (RFC 3339 or ISO 8601; naive ones are UTC, as Laravel
    writes them); None when absent or unreadable."""
    if value is None:
        return None
    moment = _iso(value)
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


def workflow_problem(text: str) -> str | None:
    """Why `text` cannot be a workflow ID, or None when it can."""
    if not text:
        return "is empty"
    if text.startswith(RUN_ID_PREFIX):
        return "is a run ID, not a workflow ID"
    if len(text) > MAX_WORKFLOW_ID_LEN:
        return f"is longer than {MAX_WORKFLOW_ID_LEN} characters"
    if not (text.isascii() and all(c.isalnum() or c in "_-" for c in text)):
        return "may hold only ASCII letters, digits, _ and -"
    return None


# ---- what matches ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listed:
    """One run of a page, readable."""

    id: str
    status: str | None
    at: datetime | None  # created_at, else started_at; None when neither is readable
    raw: object  # the object as the server sent it, printed by --json


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An item of a page that is not a run object we can use."""

    reason: str
    id: str | None = None


def read_item(raw: object) -> Listed | Unreadable:
    try:
        run = RunObject.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "item"
        run_id = raw.get("id") if isinstance(raw, dict) else None
        return Unreadable(f"{where}: {error['msg']}", run_id if isinstance(run_id, str) else None)
    if not is_run_id(run.id):
        return Unreadable("id is not a run ID", run.id[:100])
    at = parse_api_time(run.created_at) or parse_api_time(run.started_at)
    return Listed(run.id, run.status, at, raw)


# ---- which workflows (--all-workflows) -------------------------------------------------


class _WorkflowObject(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str


@dataclass(frozen=True, slots=True)
class Workflows:
    """What `GET /workflows` named: the IDs to walk, each once in the order listed, and
    the items that are not usable workflow objects."""

    ids: tuple[str, ...]
    unreadable: tuple[Unreadable, ...]


def read_workflows(listing: WorkflowList) -> Workflows:
    ids: dict[str, None] = {}
    unreadable: list[Unreadable] = []
    for raw in listing.root:
        try:
            workflow_id = _WorkflowObject.model_validate(raw).id
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "item"
            unreadable.append(Unreadable(f"{where}: {error['msg']}"))
            continue
        if (problem := workflow_problem(workflow_id)) is not None:
            unreadable.append(Unreadable(f"id {problem}", workflow_id[:100]))
        else:
            ids[workflow_id] = None
    return Workflows(tuple(ids), tuple(unreadable))


class Fit(enum.Enum):
    """How a listed run fits the criteria: it matches, or why it does not."""

    MATCH = "match"
    STATUS = "status"  # another status
    OUTSIDE = "outside"  # outside the window
    UNDATED = "undated"  # no readable time, and a window was given
    ARRIVED = "arrived"  # newer than the horizon: joined the list while it was paged


@dataclass(frozen=True, slots=True)
class Criteria:
    """What to print: any of `statuses` (all when empty), dated in [since, until)."""

    statuses: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError(
                f"--since ({self.since.isoformat()}) must be before --until "
                f"({self.until.isoformat()})"
            )

    @property
    def windowed(self) -> bool:
        return self.since is not None or self.until is not None

    def judge(self, run: Listed, horizon: datetime | None) -> Fit:
        if self.statuses and run.status not in self.statuses:
            return Fit.STATUS
        if run.at is None:
            return Fit.UNDATED if self.windowed else Fit.MATCH
        if horizon is not None and run.at > horizon:
            return Fit.ARRIVED
        if self.since is not None and run.at < self.since:
            return Fit.OUTSIDE
        if self.until is not None and run.at >= self.until:
            return Fit.OUTSIDE
        return Fit.MATCH


# ---- the page walk ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    """One page as the walk needs it; the paging fields are None when the server left
    them out."""

    number: int  # the page asked for
    items: tuple[Listed | Unreadable, ...]
    current_page: int | None = None
    last_page: int | None = None
    per_page: int | None = None
    total: int | None = None
    has_next: bool | None = None  # links.next given or null; None without links


def read_page(number: int, page: ExecutionsPage) -> Page:
    meta, links = page.meta, page.links
    return Page(
        number=number,
        items=tuple(read_item(raw) for raw in page.data),
        current_page=meta.current_page if meta else None,
        last_page=meta.last_page if meta else None,
        per_page=meta.per_page if meta else None,
        total=meta.total if meta else None,
        has_next=(links.next is not None) if links else None,
    )


@dataclass
class WalkStats:
    pages: int = 0  # pages read, re-reads included
    listed: int = 0  # distinct runs seen
    matched: int = 0
    repeats: int = 0  # runs met again on a later page (the list moved), dropped
    arrived: int = 0  # runs newer than the first page: joined while paging, left out
    undated: int = 0  # left out: no readable time, and a window was given
    unreadable: int = 0  # items that are not usable run objects
    stepped_back: int = 0  # times the list shrank and pages were read again


@dataclass(frozen=True, slots=True)
class Fed:
    """What one page brought: runs to print, and runs left out that deserve a warning."""

    matches: tuple[Listed, ...]
    undated: tuple[Listed, ...]
    unreadable: tuple[Unreadable, ...]


class Walk:
    """The paging of one workflow's executions: feed it the page it asks for (`next_page`)
    until `next_page` is None."""

    def __init__(self, criteria: Criteria) -> None:
        self.criteria = criteria
        self.stats = WalkStats()
        self.next_page: int | None = 1
        self.horizon: datetime | None = None
        self._seen: set[str] = set()
        self._last_total: int | None = None
        self._lost = 0  # how much the list shrank since the page read before
        self._per_page = 0
        self._most_pages = 0  # the most pages the list was ever said to have
        self._furthest = 0  # the furthest page read
        self._idle = 0

    def feed(self, page: Page) -> Fed:
        """Take the page asked for; what it brought. Raises PagingError (before any run of
        the page is taken) when the server's pages cannot be walked."""
        if page.number != self.next_page:
            raise ValueError(f"fed page {page.number}, expected {self.next_page}")
        self._check(page)
        if self.stats.pages == 0:
            dated = [i.at for i in page.items if isinstance(i, Listed) and i.at is not None]
            self.horizon = max(dated, default=None)
        self.stats.pages += 1
        matches: list[Listed] = []
        undated: list[Listed] = []
        unreadable: list[Unreadable] = []
        fresh = 0
        for item in page.items:
            if isinstance(item, Unreadable):
                unreadable.append(item)
                continue
            if item.id in self._seen:
                self.stats.repeats += 1
                continue
            self._seen.add(item.id)
            fresh += 1
            verdict = self.criteria.judge(item, self.horizon)
            if verdict is Fit.MATCH:
                matches.append(item)
            elif verdict is Fit.UNDATED:
                undated.append(item)
            elif verdict is Fit.ARRIVED:
                self.stats.arrived += 1
        self.stats.listed += fresh
        self.stats.matched += len(matches)
        self.stats.undated += len(undated)
        self.stats.unreadable += len(unreadable)
        self._count_idle(page, fresh)
        self.next_page = self._next(page)
        return Fed(tuple(matches), tuple(undated), tuple(unreadable))

    def _check(self, page: Page) -> None:
        if page.current_page is not None and page.current_page != page.number:
            raise PagingError(
                f"asked for page {page.number}, the server answered with page {page.current_page}"
            )
        self._per_page = page.per_page or max(self._per_page, len(page.items))
        pages = page.last_page or 0
        if page.total is not None and self._per_page > 0:
            pages = max(pages, math.ceil(page.total / self._per_page))
        self._most_pages = max(self._most_pages, pages)
        if self._most_pages and page.number > self._most_pages + EXTRA_PAGES:
            raise PagingError(
                f"page {page.number - 1} said a next page exists, though the server "
                f"also said there were at most {self._most_pages}"
            )
        self._lost = 0
        if self._last_total is not None and page.total is not None:
            self._lost = max(0, self._last_total - page.total)
        self._last_total = page.total
        if self._lost and page.number > 1:
            if self.stats.stepped_back >= MAX_STEP_BACKS:
                raise PagingError(f"the list shrank {MAX_STEP_BACKS} times while it was read")
            self.stats.stepped_back += 1

    def _count_idle(self, page: Page, fresh: int) -> None:
        if page.number <= self._furthest:
            return  # a re-read after a step back brings nothing new by design
        self._furthest = page.number
        self._idle = 0 if fresh or not page.items else self._idle + 1
        if self._idle >= MAX_IDLE_PAGES:
            # Nothing new on this page, so nothing is lost by stopping here.
            raise PagingError(
                f"{self._idle} pages in a row brought no run not already read: the list "
                "grows faster than it can be read, or the server ignores ?page="
            )

    def _next(self, page: Page) -> int | None:
        if self._lost and page.number > 1:
            # Up to `lost` items slid up past the start of this page: read them again.
            return max(1, page.number - math.ceil(self._lost / max(1, self._per_page)))
        if not page.items or self._all_before_since(page) or not self._more(page):
            return None
        return page.number + 1

    def _all_before_since(self, page: Page) -> bool:
        since = self.criteria.since
        if since is None:
            return False
        dated = [i.at for i in page.items if isinstance(i, Listed) and i.at is not None]
        return bool(dated) and all(at < since for at in dated)

    @staticmethod
    def _more(page: Page) -> bool:
        """Whether the server says a next page exists (either of its signs will do)."""
        if page.has_next:
            return True
        if page.last_page is not None and page.number < page.last_page:
            return True
        return page.has_next is None and page.last_page is None
