"""A hostile or broken HTTP server for tests: raw asyncio on loopback, so that it can send
what no well-behaved framework would (headers with garbage in them, bodies that lie, no
answer at all).

    async with hostile_server(answer) as server:
        ... server.base_url, server.requests ...

`answer(n, request_line)` is called for the n-th request (from 1) and returns the raw
bytes to send (`respond(...)` builds them), SILENT to read the request and never answer,
or CUT to close the connection without a word.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Final

SILENT: Final = b"<silent>"
CUT: Final = b"<cut>"

Answer = Callable[[int, str], bytes]


def respond(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """One raw HTTP/1.1 response, headers as given (no checks: that is the point)."""
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


def accepted(new_run_id: str = "fl_run_new0001", status: str = "pending") -> bytes:
    body = json.dumps({"new_run": {"id": new_run_id, "status": status}}).encode()
    return respond(202, body, {"Content-Type": "application/json"})


@dataclass
class HostileServer:
    base_url: str
    requests: list[str] = field(default_factory=list)  # request lines, in order


@asynccontextmanager
async def hostile_server(answer: Answer) -> AsyncIterator[HostileServer]:
    held: set[asyncio.StreamWriter] = set()
    state = HostileServer("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        state.requests.append(request_line)
        reply = answer(len(state.requests), request_line)
        if reply == SILENT:
            held.add(writer)  # closed when the server stops
            return
        if reply != CUT:
            writer.write(reply)
            with suppress(ConnectionError):
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state.base_url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        for writer in held:
            writer.close()
        server.close()
        with suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
