"""The Altostrat workflow API client: one request in, one classified outcome out.

aiohttp errors never leave this module. Every response or failure is classified once,
here, into one of four outcomes, and the engine decides on their types alone:

    Outcome
    ├── Accepted    2xx: the server took the rerun; never sent again
    ├── Retryable   429, 500, 502, 503, 504, timeout, connection error
    ├── Final       any other 4xx (and unexpected statuses): the input is wrong, never retried
    └── Abort       401, 403: the token is bad; stop the whole run

`Retryable.resendable` says whether the request surely was not accepted (429, 500, 502,
503, or the connection never opened: safe to send again later) or whether the server may
have accepted it unseen (504, a timeout or a dropped connection: the ID is *in doubt*).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

from .pacing import parse_retry_after

DEFAULT_BASE_URL: Final = "https://v1.api.altostrat.io"
# A rerun answer is a few kB; reading more than this is a broken or hostile server.
MAX_BODY_BYTES: Final = 1 << 20

# Statuses that say the server is busy or sick and did not do the work.
_SURELY_NOT_DONE: Final = frozenset({500, 502, 503})


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
    # The body could not be read: the rerun happened, but we do not know the new run.
    bad_response: bool = False


@dataclass(frozen=True, slots=True)
class Retryable:
    http_status: int | None
    error: str
    resendable: bool
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    http_status: int | None
    error: str


@dataclass(frozen=True, slots=True)
class Abort:
    http_status: int
    error: str


Outcome = Accepted | Retryable | Failed | Abort


def classify_status(status: int, retry_after: str | None) -> Outcome | None:
    """The outcome of a non-2xx status, or None for a 2xx (whose body decides)."""
    if 200 <= status < 300:
        return None
    if status == 429:
        return Retryable(status, "rate_limited", True, parse_retry_after(retry_after))
    if status in _SURELY_NOT_DONE:
        return Retryable(status, "server_error", True, parse_retry_after(retry_after))
    if status == 504:
        # A gateway timeout: the backend may have done the work after the gateway gave up.
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


def parse_accepted(status: int, body: bytes) -> Accepted:
    try:
        parsed = RerunResponse.model_validate_json(body)
    except ValidationError:
        return Accepted(status, None, None, bad_response=True)
    return Accepted(status, parsed.new_run.id, parsed.new_run.status)


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
                outcome = classify_status(response.status, response.headers.get("Retry-After"))
                if outcome is not None:
                    return outcome
                # From here on the server has accepted: whatever goes wrong reading the body,
                # the rerun exists and must never be sent again.
                try:
                    body = await response.content.read(MAX_BODY_BYTES)
                except (aiohttp.ClientError, TimeoutError):
                    return Accepted(response.status, None, None, bad_response=True)
                return parse_accepted(response.status, body)
        except aiohttp.ConnectionTimeoutError:
            # The connection never opened, so the request never left.
            return Retryable(None, "timeout", True)
        except TimeoutError:
            return Retryable(None, "timeout", False)
        except aiohttp.ClientConnectorError:
            return Retryable(None, "connection", True)
        except aiohttp.ClientError:
            return Retryable(None, "connection", False)
