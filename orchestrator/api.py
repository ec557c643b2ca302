"""The Altostrat workflow API client: one request in, one classified outcome out.

aiohttp errors never leave this module. Every response or failure is classified once,
here, into one of four outcomes, and the engine decides on their types alone:

    Outcome
    ├── Accepted    2xx: the server took the rerun; never sent again
    ├── Retryable   429, 500, 502, 503, 504, timeout, connection error
    ├── Final       any other 4xx (and unexpected statuses): the input is wrong, never retried
    └── Abort       401, 403: the token is bad; stop the whole run

`Retryable.resendable` says whether the request surely was not accepted (429, 500, 503,
or the connection never opened: safe to send again later) or whether the server may have
accepted it unseen (a gateway's 502 or 504, a timeout or a connection dropped after the
request left: the ID is *in doubt*). A 2xx whose body names no valid new run is accepted
with `bad_response`: the rerun may well exist, so that ID is in doubt too.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, TypeVar

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, RootModel, ValidationError

from .ids import is_run_id
from .pacing import Answer, RateHint, parse_retry_after

log = structlog.get_logger("orchestrator")

DEFAULT_BASE_URL: Final = "https://v1.api.altostrat.io"
# A rerun answer is a few kB; reading more than this is a broken or hostile server.
MAX_BODY_BYTES: Final = 1 << 20

# Statuses that say the server is busy or sick and did not do the work. (A 502 or 504 is a
# gateway's: the backend behind it may have done the work after the gateway gave up.)
_SURELY_NOT_DONE: Final = frozenset({500, 503})
# What the ledger keeps of a body it cannot read, for the operator to look into.
RAW_EXCERPT_CHARS: Final = 200


class _NewRun(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    status: str | None = None


class RerunResponse(BaseModel):
    """The parts of the 202 answer we rely on; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    original_run_id: str | None = None
    new_run: _NewRun


@dataclass(frozen=True, slots=True)
class Accepted:
    http_status: int
    new_run_id: str | None
    new_run_status: str | None
    # The body could not be read, or named no valid run: we do not know the new run.
    bad_response: bool = False
    hint: RateHint | None = None  # what the server said of its rate limit
    raw: str | None = None  # with bad_response: an excerpt of what came, escaped


@dataclass(frozen=True, slots=True)
class Retryable:
    http_status: int | None
    error: str
    resendable: bool
    retry_after: float | None = None
    hint: RateHint | None = None  # what the server said of its rate limit
    # With no answer: why, as an operator would read it ("connection refused").
    detail: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Failed:
    http_status: int | None
    error: str
    hint: RateHint | None = None  # what the server said of its rate limit


@dataclass(frozen=True, slots=True)
class Abort:
    http_status: int
    error: str
    hint: RateHint | None = None  # what the server said of its rate limit


Outcome = Accepted | Retryable | Failed | Abort


def classify_status(status: int, retry_after: str | None) -> Outcome | None:
    """The outcome of a non-2xx status, or None for a 2xx (whose body decides)."""
    if 200 <= status < 300:
        return None
    if status == 429:
        return Retryable(status, "rate_limited", True, parse_retry_after(retry_after))
    if status in _SURELY_NOT_DONE:
        return Retryable(status, "server_error", True, parse_retry_after(retry_after))
    if status in (502, 504):
        return Retryable(status, "server_error", False, parse_retry_after(retry_after))
    if status in (401, 403):
        return Abort(status, "unauthorized" if status == 401 else "forbidden")
    if status == 404:
        return Failed(status, "not_found")
    if 400 <= status < 500:
        return Failed(status, "client_error")
    if status >= 500:
        return Failed(status, "server_error")
    return Failed(status, "unexpected_status")


_M = TypeVar("_M", bound=BaseModel)

# X-RateLimit-Limit states no window; Laravel's, and so Altostrat's, is one minute.
_X_RATELIMIT_WINDOW_S: Final = 60.0
# A count in a header: ASCII digits only (int() takes other scripts' digits too), and
# few enough of them that no header can make int() work hard or fail.
_QUOTA: Final = re.compile(r"^\s*([0-9]{1,12})\s*$", re.ASCII)
# A stated limit outside this range is a broken or hostile header, not a limit.
_SANE_PER_S: Final = (1e-4, 1e5)


def _whole(value: str | None) -> int | None:
    if value is None or (match := _QUOTA.match(value)) is None:
        return None
    return int(match.group(1))


def _sane(per_second: float | None) -> float | None:
    low, high = _SANE_PER_S
    return per_second if per_second is not None and low <= per_second <= high else None


def _policy_rate(policy: str) -> float | None:
    """The sustained rate of an IETF RateLimit-Policy header: the strictest q/w of its
    policies. Reads both `100;w=60` (drafts up to -06) and `"p";q=100;w=60` (later)."""
    rates = []
    for item in policy.split(","):
        head, *params = (part.strip() for part in item.split(";"))
        named = dict(p.split("=", 1) for p in params if "=" in p)
        quota = _whole(named.get("q", head))
        window = _whole(named.get("w"))
        if quota is not None and window:
            rates.append(quota / window)
    return min(rates) if rates else None


def _ietf_remaining(field: str) -> int | None:
    """`r=` of a structured `RateLimit` header (draft -07 on), or `remaining=` (earlier)."""
    match = re.search(r"(?:^|[;,\s])(?:r|remaining)=([0-9]{1,12})(?![0-9])", field, re.ASCII)
    return int(match.group(1)) if match else None


def rate_hint(headers: Mapping[str, str]) -> RateHint | None:
    """What the answer's headers say of the rate limit, or None when they say nothing."""
    per_second = None
    if (policy := headers.get("RateLimit-Policy")) is not None:
        per_second = _sane(_policy_rate(policy))
    if per_second is None and (limit := headers.get("X-RateLimit-Limit")) is not None:
        per_second = _x_limit_rate(limit)
    remaining = _whole(headers.get("X-RateLimit-Remaining"))
    if remaining is None:
        remaining = _whole(headers.get("RateLimit-Remaining"))
    if remaining is None and (field := headers.get("RateLimit")) is not None:
        remaining = _ietf_remaining(field)
    if per_second is None and remaining is None:
        return None
    return RateHint(per_second, remaining)


def _x_limit_rate(value: str) -> float | None:
    quota = _whole(value)
    return _sane(quota / _X_RATELIMIT_WINDOW_S) if quota else None


# How each rate-limit header is read; None means it can't be, or says something absurd.
_HEADER_READERS: Final[dict[str, Callable[[str], object]]] = {
    "Retry-After": parse_retry_after,
    "RateLimit-Policy": lambda value: _sane(_policy_rate(value)),
    "X-RateLimit-Limit": _x_limit_rate,
    "X-RateLimit-Remaining": _whole,
    "RateLimit-Remaining": _whole,
    "RateLimit": _ietf_remaining,
}


def ignored_headers(headers: Mapping[str, str]) -> list[str]:
    """The names of the rate-limit headers present whose values could not be read, or
    were absurd, and so are ignored."""
    return [
        name
        for name, read in _HEADER_READERS.items()
        if (value := headers.get(name)) is not None and read(value) is None
    ]


class _IgnoredHeaderLog:
    """Logs each rate-limit header that had to be ignored, once per name and process:
    a server that sends garbage sends it on every answer."""

    def __init__(self) -> None:
        self._logged: set[str] = set()

    def note(self, headers: Mapping[str, str]) -> None:
        if len(self._logged) == len(_HEADER_READERS):
            return
        for name in ignored_headers(headers):
            if name not in self._logged:
                self._logged.add(name)
                value = headers[name].encode("utf-8", "surrogateescape")
                log.debug("api.header_ignored", header=name, value=excerpt(value))


_ignored_header_log = _IgnoredHeaderLog()

_FAULTS: Final = frozenset({"server_error", "timeout", "connection"})


def answer_of(outcome: object) -> Answer:
    """What pacing learns from an outcome: a throttle, a fault, a stated limit, or just an
    answer (any other result, such as a run read back); and whether any HTTP answer came."""
    if not isinstance(outcome, Accepted | Retryable | Failed | Abort):
        return Answer()
    throttled = isinstance(outcome, Retryable) and outcome.http_status == 429
    fault = isinstance(outcome, Retryable | Failed) and outcome.error in _FAULTS
    return Answer(
        throttled=throttled,
        fault=fault,
        hint=outcome.hint,
        answered=outcome.http_status is not None,
        error=describe_error(outcome) if fault and not isinstance(outcome, Accepted) else None,
    )


def describe_error(outcome: Retryable | Failed | Abort) -> str:
    """An outcome's error as an operator reads it: `HTTP 503 server_error`, or without
    an answer `connection: connection refused`."""
    if outcome.http_status is not None:
        return f"HTTP {outcome.http_status} {outcome.error}"
    detail = outcome.detail if isinstance(outcome, Retryable) else None
    return outcome.error if detail is None else f"{outcome.error}: {detail}"


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """Why a connection did not open, in the system's words and free of the URL."""
    os_error = exc.os_error
    if isinstance(os_error, socket.gaierror):
        return f"cannot resolve host ({os_error.strerror})"
    if os_error.errno:
        return os.strerror(os_error.errno).lower()
    return type(os_error).__name__


def parse_accepted(status: int, body: bytes) -> Accepted:
    """A 2xx answer to a rerun; `bad_response` unless it names a new run by a valid ID."""
    try:
        parsed = RerunResponse.model_validate_json(body)
    except ValidationError:
        return Accepted(status, None, None, bad_response=True, raw=excerpt(body))
    if not is_run_id(parsed.new_run.id):
        return Accepted(status, None, None, bad_response=True, raw=excerpt(body))
    return Accepted(status, parsed.new_run.id, _status_text(parsed.new_run.status))


def excerpt(body: bytes) -> str:
    """The start of a body as printable ASCII: controls and non-ASCII as escapes, so a
    hostile body can neither bloat the ledger nor drive a terminal that shows it."""
    text = body[: RAW_EXCERPT_CHARS * 4].decode("utf-8", "replace")[:RAW_EXCERPT_CHARS]
    return text.encode("ascii", "backslashreplace").decode("ascii").translate(_CONTROLS)


def _status_text(status: str | None) -> str | None:
    """A new run's status as the ledger keeps it: a short word, or None."""
    if status is None or len(status) > 64 or not status.isascii() or not status.isprintable():
        return None
    return status


# C0 controls and DEL as visible escapes (non-ASCII is already escaped by then).
_CONTROLS: Final = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


class AltostratClient:
    """Sends requests over one injected `ClientSession`; the token lives only in a header."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, token: str, timeout_s: float
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def rerun(self, run_id: str) -> Outcome:
        url = f"{self._base}/workflows/runs/{run_id}/rerun"
        try:
            async with self._session.post(
                url, headers=self._headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                hint = rate_hint(response.headers)
                _ignored_header_log.note(response.headers)
                outcome = classify_status(response.status, response.headers.get("Retry-After"))
                if outcome is not None:
                    return replace(outcome, hint=hint)
                # From here on the server has accepted: whatever goes wrong reading the body,
                # the rerun exists and must never be sent again.
                try:
                    body = await _read_capped(response.content, MAX_BODY_BYTES)
                except (aiohttp.ClientError, TimeoutError):
                    body = None
                if body is None:
                    raw = "<unreadable or over the size cap>"
                    return Accepted(
                        response.status, None, None, bad_response=True, hint=hint, raw=raw
                    )
                return replace(parse_accepted(response.status, body), hint=hint)
        except aiohttp.ConnectionTimeoutError:
            # The connection never opened, so the request never left.
            return Retryable(None, "timeout", True, detail="connecting timed out")
        except TimeoutError:
            return Retryable(None, "timeout", False, detail="no answer in time")
        except aiohttp.ClientConnectorError as exc:
            return Retryable(None, "connection", True, detail=_connect_reason(exc))
        except aiohttp.ClientError as exc:
            return Retryable(None, "connection", False, detail=type(exc).__name__)
        except Exception as exc:  # whatever a server sends, the run goes on
            # The request may have left: in doubt, never retried.
            log.debug("api.unreadable_answer", error=type(exc).__name__)
            return Retryable(None, "bad_response", False)

    # ---- reading runs: a GET is idempotent, so every failure to get an answer may be retried

    async def get_run(self, run_id: str) -> RunObject | Retryable | Failed | Abort:
        """One run as it stands now: `GET /workflows/runs/{runId}`."""
        if not _safe_segment(run_id):
            return Failed(None, "invalid_id")
        return await self._get_model(RunObject, f"/workflows/runs/{run_id}", None, MAX_BODY_BYTES)

    async def list_executions(
        self, workflow_id: str, page: int
    ) -> ExecutionsPage | Retryable | Failed | Abort:
        """One page of a workflow's runs, newest first: `GET /workflows/{id}/executions`."""
        if not _safe_segment(workflow_id):
            return Failed(None, "invalid_id")
        path = f"/workflows/{workflow_id}/executions"
        return await self._get_model(ExecutionsPage, path, {"page": str(page)}, MAX_PAGE_BYTES)

    async def list_workflows(self) -> WorkflowList | Retryable | Failed | Abort:
        """The token's workflows: `GET /workflows`, a JSON array of workflow objects."""
        return await self._get_model(WorkflowList, "/workflows", None, MAX_PAGE_BYTES)

    async def _get_model(
        self, model: type[_M], path: str, params: dict[str, str] | None, cap: int
    ) -> _M | Retryable | Failed | Abort:
        """A GET whose 2xx body is read as `model`; an unreadable one is most likely cut off
        on the way, and asking again is harmless."""
        answer = await self._get(path, params, cap)
        if not isinstance(answer, _Body):
            return answer
        try:
            return model.model_validate_json(answer.body)
        except ValidationError:
            return Retryable(answer.http_status, "bad_response", True)

    async def _get(
        self, path: str, params: dict[str, str] | None, cap: int
    ) -> _Body | Retryable | Failed | Abort:
        try:
            async with self._session.get(
                self._base + path,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,  # the token goes to the base URL and nowhere else
            ) as response:
                outcome = classify_status(response.status, response.headers.get("Retry-After"))
                if isinstance(outcome, Retryable | Failed | Abort):
                    _ignored_header_log.note(response.headers)
                    return replace(outcome, hint=rate_hint(response.headers))
                body = await _read_capped(response.content, cap)
                if body is None:
                    return Failed(response.status, "response_too_large")
                return _Body(response.status, body)
        except TimeoutError:  # connect or read timeout: nothing was changed, so nothing in doubt
            return Retryable(None, "timeout", True, detail="no answer in time")
        except aiohttp.ClientConnectorError as exc:
            return Retryable(None, "connection", True, detail=_connect_reason(exc))
        except aiohttp.ClientError as exc:
            return Retryable(None, "connection", True, detail=type(exc).__name__)
        except Exception as exc:  # whatever a server sends, the run goes on
            log.debug("api.unreadable_answer", error=type(exc).__name__)
            return Retryable(None, "bad_response", True)


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


@dataclass(frozen=True, slots=True)
class _Body:
    http_status: int
    body: bytes


def _safe_segment(text: str) -> bool:
    """True when `text` can go into a URL path as it is: an ID, not a path or a query."""
    return bool(text) and text.isascii() and all(c.isalnum() or c in "_-" for c in text)


async def _read_capped(content: aiohttp.StreamReader, cap: int) -> bytes | None:
    """The whole body, or None when it is longer than `cap` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_any():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
