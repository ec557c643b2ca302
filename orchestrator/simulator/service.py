"""What the simulated API answers to one request, decided without any I/O.

`handle` runs synchronously when a request arrives: authentication, then the rate
limit, then (rerun only) scripted or random faults, then the application itself. It
books the request and returns a `Reply`, which the aiohttp layer only has to delay,
send or drop. Deciding everything at arrival keeps fault decisions, run creation and
the request log in arrival order, whatever the latency.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Final

from orchestrator.ids import is_run_id
from orchestrator.simulator.config import Step
from orchestrator.simulator.faults import sample_latency_s
from orchestrator.simulator.ratelimit import limit_headers, refusal_headers
from orchestrator.simulator.state import RequestLogEntry, SimState
from orchestrator.simulator.views import (
    Json,
    PageWindow,
    paginated,
    parse_page,
    rerun_accepted,
    run_object,
    workflow_object,
)

_RERUN: Final = re.compile(r"/workflows/runs/([^/]+)/rerun")
_RUN: Final = re.compile(r"/workflows/runs/([^/]+)")
_EXECUTIONS: Final = re.compile(r"/workflows/([^/]+)/executions")

# The bad_body fault keeps this many bytes of the real body:
# '{"message": "Workflow run has been qu', as a cut-off answer would.
_BAD_BODY_BYTES: Final = 37
_NO_BODY: Final = frozenset({204, 304})
_MESSAGES: Final[Mapping[int, str]] = {
    400: "The request is invalid.",
    401: "Unauthenticated.",
    403: "This action is unauthorized.",
    404: "Workflow run not found.",
    409: "A rerun of this workflow run is already in progress.",
    422: "The given data was invalid.",
    429: "Too Many Attempts.",
    500: "Server Error",
    503: "Service Unavailable",
}
# A 502 comes from the gateway, not the application: HTML, not JSON, as nginx sends it.
_BAD_GATEWAY_HTML: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


@dataclass(frozen=True, slots=True)
class Incoming:
    """The parts of an HTTP request the simulated API looks at."""

    method: str
    path: str  # decoded path, no query
    url: str  # absolute URL without the query, for pagination links
    page: str | None  # raw ?page= value
    authorization: str | None


@dataclass(frozen=True, slots=True)
class Reply:
    """What to do with one request: wait `delay_s` real seconds, then answer or drop."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without any answer


@dataclass(frozen=True, slots=True)
class _Routed:
    """A reply plus the fault, if any, the request log should name."""

    reply: Reply
    fault: str | None = None
    scripted: bool = False


def _json(status: int, payload: Json, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers=dict(headers or {}))


def status_reply(status: int, headers: Mapping[str, str] | None = None) -> Reply:
    """The answer for a bare status (scripted or injected): a Laravel-like JSON message."""
    if status in _NO_BODY:
        return Reply(status, headers=dict(headers or {}))
    if status == 502:
        return Reply(status, _BAD_GATEWAY_HTML, "text/html", dict(headers or {}))
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return _json(status, {"message": _MESSAGES.get(status, phrase)}, headers)


def _bearer_ok(authorization: str | None, token: str) -> bool:
    if authorization is None:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


def _rate_limit(state: SimState, now: float) -> tuple[dict[str, str], Reply | None]:
    """The rate-limit headers for this request, and the 429 when the limiter refuses it."""
    limiter = state.limiter
    if limiter is None:
        return {}, None
    decision = limiter.decide(now)
    headers = limit_headers(state.config, limiter.rate, decision)
    if decision.allowed:
        return headers, None
    free_at = state.wall_at(now + decision.retry_after_s).timestamp()
    refused = {**headers, **refusal_headers(state.config, decision, free_at)}
    return headers, status_reply(429, refused)


def _step_name(step: Step) -> str | None:
    return None if step == "ok" else str(step)


def _rerun(state: SimState, run_id: str, now: float) -> _Routed:
    step, scripted = state.faults.next_step(run_id)
    fault = _step_name(step)
    if isinstance(step, int):
        headers = {"Retry-After": state.config.script_retry_after} if step == 429 else None
        return _Routed(status_reply(step, headers), fault, scripted)
    if step == "drop":
        return _Routed(Reply(0, drop=True), fault, scripted)
    # "ok", "slow" and "bad_body" reach the application: the rerun happens.
    original = state.lookup(run_id, now) if is_run_id(run_id) else None
    if original is None:
        reply = status_reply(404)
    else:
        new_run = state.rerun(original, now)
        workflow = state.workflows[new_run.workflow_id]
        reply = _json(202, rerun_accepted(run_id, new_run, workflow))
    if step == "slow":
        reply = replace(reply, delay_s=state.config.slow_s)
    elif step == "bad_body":
        reply = replace(reply, body=reply.body[: min(_BAD_BODY_BYTES, len(reply.body) - 1)])
    return _Routed(reply, fault, scripted)


def _get_run(state: SimState, run_id: str, now: float) -> _Routed:
    run = state.lookup(run_id, now) if is_run_id(run_id) else None
    if run is None:
        return _Routed(status_reply(404))
    body = run_object(run, state.snapshot(run, now), state.workflows[run.workflow_id])
    return _Routed(_json(200, body))


def _executions(state: SimState, workflow_id: str, incoming: Incoming, now: float) -> _Routed:
    listing = state.listing(workflow_id)
    if listing is None:
        return _Routed(_json(404, {"message": "Workflow not found."}))
    workflow = state.workflows[workflow_id]
    total = len(listing)
    window = PageWindow(parse_page(incoming.page), state.config.per_page, total)
    # `listing` is oldest first; the page counts from the newest end.
    page_runs = reversed(listing[max(0, total - window.stop) : max(0, total - window.start)])
    items = [run_object(run, state.snapshot(run, now), workflow) for run in page_runs]
    return _Routed(_json(200, paginated(items, window, incoming.url)))


def _workflows(state: SimState) -> _Routed:
    """Every workflow, as one JSON array (the API does not page this list)."""
    return _Routed(
        Reply(200, json.dumps([workflow_object(w) for w in state.workflows.values()]).encode())
    )


def _not_allowed(method: str, allowed: str) -> _Routed:
    message = f"The {method} method is not supported for this route. Supported methods: {allowed}."
    return _Routed(_json(405, {"message": message}, {"Allow": allowed}))


def _route(state: SimState, incoming: Incoming, now: float) -> _Routed:
    method, path = incoming.method, incoming.path
    if match := _RERUN.fullmatch(path):
        run_id = match.group(1)
        if method != "POST":
            return _not_allowed(method, "POST")
        return _rerun(state, run_id, now)
    if match := _RUN.fullmatch(path):
        run_id = match.group(1)
        if method != "GET":
            return _not_allowed(method, "GET")
        return _get_run(state, run_id, now)
    if path in ("/workflows", "/workflows/"):
        if method != "GET":
            return _not_allowed(method, "GET")
        return _workflows(state)
    if match := _EXECUTIONS.fullmatch(path):
        if method != "GET":
            return _not_allowed(method, "GET")
        return _executions(state, match.group(1), incoming, now)
    return _Routed(_json(404, {"message": f"The route {path.lstrip('/')} could not be found."}))


def _path_run_id(path: str) -> str | None:
    match = _RERUN.fullmatch(path) or _RUN.fullmatch(path)
    return match.group(1) if match else None


def handle(state: SimState, incoming: Incoming) -> Reply:
    """Decide and book the answer to one API request, as of the clock's current time."""
    config = state.config
    now = state.clock()
    latency_s = sample_latency_s(state.latency_rng, config.latency_ms, config.latency_spread)
    if not _bearer_ok(incoming.authorization, config.token):
        # Before anything else: an unauthenticated request is not the token's to charge.
        routed = _Routed(status_reply(401))
    else:
        rate_headers, refused = _rate_limit(state, now)
        routed = _Routed(refused) if refused is not None else _route(state, incoming, now)
        if rate_headers:
            headers = {**rate_headers, **routed.reply.headers}
            routed = replace(routed, reply=replace(routed.reply, headers=headers))
    reply = routed.reply
    state.record(
        RequestLogEntry(
            at=now,
            method=incoming.method,
            path=incoming.path,
            run_id=_path_run_id(incoming.path),
            status="drop" if reply.drop else reply.status,
            fault=routed.fault,
            scripted=routed.scripted,
        )
    )
    return replace(reply, delay_s=reply.delay_s + latency_s)
