"""The size cap on what the client reads, against a real aiohttp server on loopback: a body
within the cap is read whole (with a Content-Length, chunked, or compressed), and one over
it is never read to its end, whatever its Content-Length says. A compressed body is
counted as it unpacks: a few kilobytes of gzip must not become gigabytes in memory."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from orchestrator.api.client import MAX_BODY_BYTES, AltostratClient
from orchestrator.api.models import MAX_PAGE_BYTES
from orchestrator.api.outcomes import Accepted, ErrorCode, Failed

TOKEN = "cap-test-token"
NEW_RUN = "fl_run_new0001"
ACCEPTED_BODY = json.dumps(
    {"message": "queued", "original_run_id": "fl_run_a", "new_run": {"id": NEW_RUN}}
).encode()
OVERSIZED = "<unreadable or over the size cap>"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def client_against(handler: Handler) -> AsyncIterator[AltostratClient]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            yield AltostratClient(session, f"http://127.0.0.1:{port}", TOKEN, timeout_s=10)
    finally:
        await runner.cleanup()


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=9)


def sized(body: bytes, status: int = 202, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, status=status, headers=headers)

    return handler


def chunked(body: bytes, status: int = 202) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 64 * 1024):
            await response.write(body[start : start + 64 * 1024])
        await response.write_eof()
        return response

    return handler


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(sized(ACCEPTED_BODY), id="content-length"),
        pytest.param(chunked(ACCEPTED_BODY), id="chunked"),
        pytest.param(sized(gzipped(ACCEPTED_BODY), **{"Content-Encoding": "gzip"}), id="gzip"),
    ],
)
async def test_an_answer_within_the_cap_is_read_whole(handler: Handler) -> None:
    async with client_against(handler) as client:
        outcome = await client.rerun("fl_run_a")
    assert outcome == Accepted(202, NEW_RUN, None)


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(sized(b" " * (MAX_BODY_BYTES + 1)), id="content-length"),
        pytest.param(chunked(b" " * (MAX_BODY_BYTES + 1)), id="chunked"),
        # 64 KiB of gzip that unpacks to 64 MiB: its Content-Length says nothing of that.
        pytest.param(
            sized(gzipped(b" " * (64 << 20)), **{"Content-Encoding": "gzip"}), id="gzip-bomb"
        ),
        pytest.param(
            sized(zlib.compress(b" " * (64 << 20), 9), **{"Content-Encoding": "deflate"}),
            id="deflate-bomb",
        ),
    ],
)
async def test_an_accepted_answer_over_the_cap_is_in_doubt_and_not_read_to_its_end(
    handler: Handler,
) -> None:
    """The server accepted (a 2xx), so the rerun exists: in doubt, never resent."""
    async with client_against(handler) as client:
        outcome = await client.rerun("fl_run_a")
    assert outcome == Accepted(202, None, None, bad_response=True, raw=OVERSIZED)


async def test_a_page_over_its_cap_is_a_failure_not_read_to_its_end() -> None:
    page = gzipped(b" " * (MAX_PAGE_BYTES * 4))
    async with client_against(sized(page, 200, **{"Content-Encoding": "gzip"})) as client:
        outcome = await client.list_workflows()
    assert outcome == Failed(200, ErrorCode.RESPONSE_TOO_LARGE)
