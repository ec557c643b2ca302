"""What an answer means, classified once into one of four outcomes:

    Outcome
    ├── Accepted    2xx: the server took the rerun; never sent again
    ├── Retryable   429, 500, 502, 503, 504, timeout, connection error
    ├── Final       any other 4xx (and unexpected statuses): the input is wrong, never retried
    └── Abort       401, 403: the token is bad; stop the whole run

`Retryable.resendable` says whether the request surely was not accepted (429, 500, 503,
or the connection never opened: safe to send again later) or whether the server may have
accepted it unseen (a gateway's 502 or 504, a timeout or a connection dropped after the
request left: the ID is *in doubt*).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import aiohttp

from orchestrator.api.headers import RateHint, parse_retry_after


class ErrorKind(StrEnum):
    """Whom an error code speaks of."""

    CLIENT = "client"  # the input: this ID is wrong, and resending will not help
    SERVER = "server"  # the service: sick, or not reached
    PACING = "pacing"  # the limit: not now
    AUTH = "auth"  # the token: refused
    ANSWER = "answer"  # an answer that says nothing sure of what the server did


class ErrorCode(StrEnum):
    """Why a request did not succeed, as the ledger, the logs and the summary name it."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    NOT_FOUND = "not_found"
    CLIENT_ERROR = "client_error"
    UNEXPECTED_STATUS = "unexpected_status"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    BAD_RESPONSE = "bad_response"
    INVALID_ID = "invalid_id"
    RESPONSE_TOO_LARGE = "response_too_large"

    @property
    def kind(self) -> ErrorKind:
        return _KINDS[self]


_KINDS: Final = {
    ErrorCode.RATE_LIMITED: ErrorKind.PACING,
    ErrorCode.SERVER_ERROR: ErrorKind.SERVER,
    ErrorCode.TIMEOUT: ErrorKind.SERVER,
    ErrorCode.CONNECTION: ErrorKind.SERVER,
    ErrorCode.NOT_FOUND: ErrorKind.CLIENT,
    ErrorCode.CLIENT_ERROR: ErrorKind.CLIENT,
    ErrorCode.UNEXPECTED_STATUS: ErrorKind.CLIENT,
    ErrorCode.UNAUTHORIZED: ErrorKind.AUTH,
    ErrorCode.FORBIDDEN: ErrorKind.AUTH,
    ErrorCode.BAD_RESPONSE: ErrorKind.ANSWER,
    ErrorCode.INVALID_ID: ErrorKind.CLIENT,
    ErrorCode.RESPONSE_TOO_LARGE: ErrorKind.ANSWER,
}


def codes_of(kind: ErrorKind) -> frozenset[ErrorCode]:
    """Every code of one kind: the set a plain string (a ledger's, a test's) is tested in."""
    return frozenset(code for code in ErrorCode if code.kind is kind)


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
    error: ErrorCode
    resendable: bool
    retry_after: float | None = None
    hint: RateHint | None = None  # what the server said of its rate limit
    # With no answer: why, as an operator would read it ("connection refused").
    detail: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Failed:
    http_status: int | None
    error: ErrorCode
    hint: RateHint | None = None  # what the server said of its rate limit


@dataclass(frozen=True, slots=True)
class Abort:
    http_status: int
    error: ErrorCode
    hint: RateHint | None = None  # what the server said of its rate limit


Outcome = Accepted | Retryable | Failed | Abort


# Statuses that say the server is busy or sick and did not do the work. (A 502 or 504 is a
# gateway's: the backend behind it may have done the work after the gateway gave up.)
_SURELY_NOT_DONE: Final = frozenset({500, 503})


def classify_status(
    status: int, retry_after: str | None, hint: RateHint | None = None
) -> Outcome | None:
    """The outcome of a non-2xx status, or None for a 2xx (whose body decides); `hint` is
    what the answer's headers said of the rate limit."""
    if 200 <= status < 300:
        return None
    if status == 429:
        return Retryable(status, ErrorCode.RATE_LIMITED, True, parse_retry_after(retry_after), hint)
    if status in _SURELY_NOT_DONE or status in (502, 504):
        resendable = status in _SURELY_NOT_DONE
        after = parse_retry_after(retry_after)
        return Retryable(status, ErrorCode.SERVER_ERROR, resendable, after, hint)
    if status in (401, 403):
        code = ErrorCode.UNAUTHORIZED if status == 401 else ErrorCode.FORBIDDEN
        return Abort(status, code, hint)
    if status == 404:
        return Failed(status, ErrorCode.NOT_FOUND, hint)
    if 400 <= status < 500:
        return Failed(status, ErrorCode.CLIENT_ERROR, hint)
    if status >= 500:
        return Failed(status, ErrorCode.SERVER_ERROR, hint)
    return Failed(status, ErrorCode.UNEXPECTED_STATUS, hint)


_FAULTS: Final = codes_of(ErrorKind.SERVER)


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


@dataclass(frozen=True, slots=True)
class Answer:
    """What pacing needs to know of one answered (or failed) request."""

    throttled: bool = False  # a 429
    fault: bool = False  # 5xx, timeout or connection error: the service looks sick
    hint: RateHint | None = None
    answered: bool = True  # an HTTP answer of any status came (not a timeout, no connection)
    error: str | None = None  # with a fault: what went wrong, for the operator
