"""The Altostrat workflow API client: one request in, one classified outcome out.

aiohttp errors never leave this module. Every response or failure is classified once
(see `outcomes`), and the rerun session decides on the outcome's type alone. A 2xx whose
body names no valid new run is accepted with `bad_response`: the rerun may well exist, so
that ID is in doubt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import aiohttp
import structlog
from pydantic import ValidationError

from orchestrator.api.headers import _M, RateHint, _ignored_header_log, rate_hint
from orchestrator.api.models import (
    MAX_PAGE_BYTES,
    ExecutionsPage,
    RerunResponse,
    RunObject,
    WorkflowList,
)
from orchestrator.api.outcomes import (
    Abort,
    Accepted,
    ErrorCode,
    Failed,
    Outcome,
    Retryable,
    _connect_reason,
    classify_status,
)
from orchestrator.escape import excerpt
from orchestrator.ids import is_run_id

log = structlog.get_logger("orchestrator")

DEFAULT_BASE_URL: Final = "https://v1.api.altostrat.io"
# A rerun answer is a few kB; reading more than this is a broken or hostile server.
MAX_BODY_BYTES: Final = 1 << 20


def parse_accepted(status: int, body: bytes, hint: RateHint | None = None) -> Accepted:
    """A 2xx answer to a rerun; `bad_response` unless it names a new run by a valid ID."""
    try:
        parsed = RerunResponse.model_validate_json(body)
    except ValidationError:
        return Accepted(status, None, None, bad_response=True, hint=hint, raw=excerpt(body))
    if not is_run_id(parsed.new_run.id):
        return Accepted(status, None, None, bad_response=True, hint=hint, raw=excerpt(body))
    return Accepted(status, parsed.new_run.id, _status_text(parsed.new_run.status), hint=hint)


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
                headers = response.headers
                hint = rate_hint(headers)
                _ignored_header_log.note(headers)
                outcome = classify_status(response.status, headers.get("Retry-After"), hint)
                if outcome is not None:
                    return outcome
                # From here on the server has accepted: whatever goes wrong reading the body,
                # the rerun exists and must never be sent again.
                try:
                    body = await _read_capped(response, MAX_BODY_BYTES)
                except (aiohttp.ClientError, TimeoutError):
                    body = None
                if body is None:
                    raw = "<unreadable or over the size cap>"
                    return Accepted(
                        response.status, None, None, bad_response=True, hint=hint, raw=raw
                    )
                return parse_accepted(response.status, body, hint)
        except aiohttp.ConnectionTimeoutError:
            # The connection never opened, so the request never left.
            return Retryable(None, ErrorCode.TIMEOUT, True, detail="connecting timed out")
        except TimeoutError:
            return Retryable(None, ErrorCode.TIMEOUT, False, detail="no answer in time")
        except aiohttp.ClientConnectorError as exc:
            return Retryable(None, ErrorCode.CONNECTION, True, detail=_connect_reason(exc))
        except aiohttp.ClientError as exc:
            return Retryable(None, ErrorCode.CONNECTION, False, detail=type(exc).__name__)
        except Exception as exc:  # whatever a server sends, the run goes on
            # The request may have left: in doubt, never retried.
            log.debug("api.unreadable_answer", error=type(exc).__name__)
            return Retryable(None, ErrorCode.BAD_RESPONSE, False)

    # ---- reading runs: a GET is idempotent, so every failure to get an answer may be retried

    async def get_run(self, run_id: str) -> RunObject | Retryable | Failed | Abort:
        """One run as it stands now: `GET /workflows/runs/{runId}`."""
        if not _safe_segment(run_id):
            return Failed(None, ErrorCode.INVALID_ID)
        return await self._get_model(RunObject, f"/workflows/runs/{run_id}", None, MAX_BODY_BYTES)

    async def list_executions(
        self, workflow_id: str, page: int
    ) -> ExecutionsPage | Retryable | Failed | Abort:
        """One page of a workflow's runs, newest first: `GET /workflows/{id}/executions`."""
        if not _safe_segment(workflow_id):
            return Failed(None, ErrorCode.INVALID_ID)
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
            return Retryable(answer.http_status, ErrorCode.BAD_RESPONSE, True)

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
                headers = response.headers
                # A page or a run read back carries no hint: only a refusal tells pacing.
                hint = None if 200 <= response.status < 300 else rate_hint(headers)
                outcome = classify_status(response.status, headers.get("Retry-After"), hint)
                if isinstance(outcome, Retryable | Failed | Abort):
                    _ignored_header_log.note(headers)
                    return outcome
                body = await _read_capped(response, cap)
                if body is None:
                    return Failed(response.status, ErrorCode.RESPONSE_TOO_LARGE)
                return _Body(response.status, body)
        except TimeoutError:  # connect or read timeout: nothing was changed, so nothing in doubt
            return Retryable(None, ErrorCode.TIMEOUT, True, detail="no answer in time")
        except aiohttp.ClientConnectorError as exc:
            return Retryable(None, ErrorCode.CONNECTION, True, detail=_connect_reason(exc))
        except aiohttp.ClientError as exc:
            return Retryable(None, ErrorCode.CONNECTION, True, detail=type(exc).__name__)
        except Exception as exc:  # whatever a server sends, the run goes on
            log.debug("api.unreadable_answer", error=type(exc).__name__)
            return Retryable(None, ErrorCode.BAD_RESPONSE, True)


@dataclass(frozen=True, slots=True)
class _Body:
    http_status: int
    body: bytes


def _safe_segment(text: str) -> bool:
    """True when `text` can go into a URL path as it is: an ID, not a path or a query."""
    return bool(text) and text.isascii() and all(c.isalnum() or c in "_-" for c in text)


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The whole body, or None when it is longer than `cap` bytes."""
    length = response.content_length
    if length is not None and "Content-Encoding" not in response.headers:
        # The parser reads no more than Content-Length says (and a body cut short raises),
        # so a stated length within the cap is read in one call: the usual answer. (A
        # compressed body is counted as it unpacks, below: its length says too little.)
        return await response.content.read() if length <= cap else None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _status_text(status: str | None) -> str | None:
    """A new run's status as the ledger keeps it: a short word, or None."""
    if status is None or len(status) > 64 or not status.isascii() or not status.isprintable():
        return None
    return status
