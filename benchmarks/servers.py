"""The servers the benchmark talks to, each run in a process of its own.

    python -m benchmarks.servers sim [--rate 50/s] [--limiter SHAPE] [--burst N] ...
    python -m benchmarks.servers static

`sim` is the embedded simulator (`orchestrator.simulator`) accepting any well-formed run
ID, as the real API would for a batch of failed runs. `static` answers every request with
one canned 202 rerun answer of the same shape and size, from a bare asyncio protocol: it
costs so little per request that it shows how fast a client can go when the server is
not the limit. Both bind 127.0.0.1 on a free port and print `base_url: …` once ready;
SIGTERM stops them. `sim` takes the rate-limit options of `orchestrator simulate`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from collections.abc import Sequence
from typing import Final, NoReturn

from orchestrator.commands.simulate import add_rate_limit_arguments, with_rate_limit
from orchestrator.simulator import RunningSimulator, SimConfig

HOST: Final = "127.0.0.1"
TOKEN: Final = "bench-token"  # noqa: S105 - the well-known token of a local fake
# The simulator's request log is for tests; a small one keeps its memory flat here, and
# the rate-limit rows, which read it back, ask for a larger one (`--request-log`).
_REQUEST_LOG: Final = 1000

# The simulator's 202 answer, with fixed values: same keys, same size (about 400 bytes).
_CANNED_BODY: Final = json.dumps(
    {
        "message": "Workflow run has been queued for rerun.",
        "original_run_id": "fl_run_5hd3vhsiysh7mcz2xm3wecc5qb",
        "new_run": {
            "id": "fl_run_7wjtmoiiojxa74vmv0yoxr40rz",
            "status": "pending",
            "trigger_payload": {},
            "error_message": None,
            "started_at": None,
            "completed_at": None,
            "duration_in_seconds": None,
            "created_at": "2026-11-30T03:56:26.520000Z",
            "workflow": {"id": "wf_bench", "name": "Benchmark workflow"},
            "logs": [],
        },
    }
).encode()
_CANNED: Final = (
    b"HTTP/1.1 202 Accepted\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_CANNED_BODY)).encode() + b"\r\n"
    b"\r\n" + _CANNED_BODY
)
_CONTENT_LENGTH: Final = b"\r\ncontent-length:"


class CannedHTTP(asyncio.Protocol):
    """HTTP/1.1 keep-alive that answers every request with `_CANNED`, pipelining included.

    Only what a client of this benchmark sends is understood: a head, and a body only when
    Content-Length says so (aiohttp's bodiless POST says 0; curl's says nothing)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        buffer = self._buffer + data
        answers = 0
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = buffer[:end].lower()
            length = 0
            if (at := head.find(_CONTENT_LENGTH)) >= 0:
                value_end = head.find(b"\r\n", at + 2)
                value = head[at + len(_CONTENT_LENGTH) : None if value_end < 0 else value_end]
                length = int(value.strip() or b"0")
            if len(buffer) < end + 4 + length:
                break
            buffer = buffer[end + 4 + length :]
            answers += 1
        self._buffer = buffer
        if answers:
            self._transport.write(_CANNED * answers)


async def _serve_static(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CannedHTTP, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    print(f"base_url: http://{HOST}:{port}", flush=True)
    async with server:
        await stop.wait()


async def _serve_sim(stop: asyncio.Event, config: SimConfig) -> None:
    async with RunningSimulator(config, host=HOST) as sim:
        print(f"base_url: {sim.base_url}", flush=True)
        await stop.wait()


async def _main(args: argparse.Namespace, config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if args.kind == "static":
        await _serve_static(stop)
    else:
        await _serve_sim(stop, config)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="python -m benchmarks.servers")
    parser.add_argument("kind", choices=("sim", "static"))
    parser.add_argument(
        "--request-log",
        type=int,
        default=_REQUEST_LOG,
        metavar="N",
        help="sim only: requests kept for /_sim/requests",
    )
    add_rate_limit_arguments(parser)
    args = parser.parse_args(argv)
    base = SimConfig(token=TOKEN, accept_any=True, runs=0)
    try:
        config = with_rate_limit(base, args)
        config = dataclasses.replace(config, request_log_limit=args.request_log)
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(_main(args, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
