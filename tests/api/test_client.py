"""Outcome classification at the client boundary (pure), and a few narrow aioresponses checks."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aioresponses import aioresponses

from orchestrator.api.client import AltostratClient, parse_accepted
from orchestrator.api.headers import RateHint, rate_hint
from orchestrator.api.outcomes import (
    Abort,
    Accepted,
    ErrorCode,
    ErrorKind,
    Failed,
    Outcome,
    Retryable,
    answer_of,
    classify_status,
    codes_of,
)
from orchestrator.escape import RAW_EXCERPT_CHARS, excerpt
from orchestrator.rerun.budget import error_class
from tests.helpers.fakeresponse import FakeResponse

BASE = "http://api.test"
URL = f"{BASE}/workflows/runs/fl_run_a/rerun"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, Retryable(429, "rate_limited", True, 7.0)),
        (500, Retryable(500, "server_error", True, 7.0)),
        (502, Retryable(502, "server_error", False, 7.0)),  # a gateway's: in doubt
        (503, Retryable(503, "server_error", True, 7.0)),
        (504, Retryable(504, "server_error", False, 7.0)),
        (401, Abort(401, "unauthorized")),
        (403, Abort(403, "forbidden")),
        (404, Failed(404, "not_found")),
        (400, Failed(400, "client_error")),
        (409, Failed(409, "client_error")),
        (422, Failed(422, "client_error")),
        (418, Failed(418, "client_error")),
        (501, Failed(501, "server_error")),
        (302, Failed(302, "unexpected_status")),
    ],
)
def test_status_is_classified_once(status: int, expected: Outcome) -> None:
    assert classify_status(status, "7") == expected


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_is_left_to_the_body(status: int) -> None:
    assert classify_status(status, None) is None


def test_202_body_gives_the_new_run_and_ignores_unknown_fields() -> None:
    body = (
        b'{"message": "queued", "original_run_id": "fl_run_a", "extra": 1,'
        b' "new_run": {"id": "fl_run_b", "status": "pending", "logs": [], "workflow": {}}}'
    )
    assert parse_accepted(202, body) == Accepted(202, "fl_run_b", "pending")


@pytest.mark.parametrize("body", [b"", b"{", b'{"message": "x"}', b"[]", b'{"new_run": {}}'])
def test_unreadable_202_is_still_accepted(body: bytes) -> None:
    assert parse_accepted(202, body) == Accepted(
        202, None, None, bad_response=True, raw=body.decode()
    )


@pytest.mark.parametrize(
    "new_id",
    ["", "x" * 10_000, "../../admin", '=HYPERLINK("http://x")', "fl_run_\u001b[2J", "fl_run_a b"],
)
def test_a_202_naming_no_valid_run_id_is_a_bad_response(new_id: str) -> None:
    body = json.dumps({"new_run": {"id": new_id, "status": "pending"}}).encode()
    accepted = parse_accepted(202, body)
    assert accepted.bad_response
    assert accepted.new_run_id is None
    assert accepted.raw is not None
    assert len(accepted.raw) <= RAW_EXCERPT_CHARS
    assert accepted.raw.isascii()
    assert accepted.raw.isprintable()


def test_the_raw_excerpt_escapes_what_could_drive_a_terminal() -> None:
    raw = excerpt(b'{"id": "\x1b]0;owned\x07\x1b[2J\x00\xe2\x80\xae"}')
    assert "\x1b" not in raw
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x00\\u202e" in raw


async def test_client_sends_bearer_token_and_no_body() -> None:
    with aioresponses() as mocked:
        mocked.post(
            URL,
            status=202,
            payload={"new_run": {"id": "fl_run_b", "status": "pending"}},
            response_class=FakeResponse,
        )
        async with aiohttp.ClientSession() as session:
            client = AltostratClient(session, BASE + "/", "s3cret-token", timeout_s=5)
            outcome = await client.rerun("fl_run_a")
        assert outcome == Accepted(202, "fl_run_b", "pending")
        ((_, calls),) = mocked.requests.items()
        assert calls[0].kwargs["headers"]["Authorization"] == "Bearer s3cret-token"
        assert calls[0].kwargs.get("data") is None


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        (TimeoutError(), Retryable(None, "timeout", False)),
        (aiohttp.ServerDisconnectedError(), Retryable(None, "connection", False)),
        (aiohttp.ConnectionTimeoutError(), Retryable(None, "timeout", True)),
    ],
)
async def test_transport_failures_become_retryable(
    exception: Exception, expected: Retryable
) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, exception=exception)
        async with aiohttp.ClientSession() as session:
            outcome = await AltostratClient(session, BASE, "t0ken", 5).rerun("fl_run_a")
    assert outcome == expected


async def test_retry_after_header_reaches_the_outcome() -> None:
    with aioresponses() as mocked:
        mocked.post(URL, status=429, headers={"Retry-After": "12"}, response_class=FakeResponse)
        async with aiohttp.ClientSession() as session:
            outcome = await AltostratClient(session, BASE, "t0ken", 5).rerun("fl_run_a")
    assert outcome == Retryable(429, "rate_limited", True, 12.0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59"}, RateHint(1.0, 59)),
        ({"X-RateLimit-Remaining": "3"}, RateHint(None, 3)),
        ({"RateLimit-Policy": "100;w=10"}, RateHint(10.0, None)),
        (
            {"RateLimit-Policy": '"burst";q=100;w=60, "day";q=1000;w=86400'},
            RateHint(1000 / 86400, None),
        ),
        (
            {"RateLimit-Policy": "10;w=1", "RateLimit": "limit=10, remaining=4, reset=1"},
            RateHint(10.0, 4),
        ),
        ({"RateLimit-Policy": '"p";q=50;w=1', "RateLimit": '"p";r=7;t=1'}, RateHint(50.0, 7)),
        ({"RateLimit-Policy": "bogus", "X-RateLimit-Limit": "120"}, RateHint(2.0, None)),
        ({"X-RateLimit-Limit": "lots"}, None),
    ],
)
def test_rate_limit_headers_become_a_hint(
    headers: dict[str, str], expected: RateHint | None
) -> None:
    assert rate_hint(headers) == expected


def test_every_error_code_knows_whom_it_speaks_of() -> None:
    """One table says whom a code speaks of: the error budget counts the client and server
    kinds, and pacing takes the server kind as faults."""
    kinds = {code: code.kind for code in ErrorCode}
    assert set(kinds) == set(ErrorCode)
    assert codes_of(ErrorKind.SERVER) == {"server_error", "timeout", "connection"}
    assert error_class("not_found") == "client"
    assert error_class(ErrorCode.TIMEOUT) == "server"
    assert error_class("rate_limited") is None
    assert error_class("bad_response") is None  # in doubt: not a failure of either side
    assert answer_of(Retryable(None, ErrorCode.CONNECTION, True)).fault
    assert not answer_of(Failed(404, ErrorCode.NOT_FOUND)).fault
