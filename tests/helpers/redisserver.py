"""A real redis-server for tests, on a free loopback port: no fakes.

    from tests.helpers.redisserver import redis_server, redis_url, running_redis

`redis_server` (session scope) starts one server for the whole run; `redis_url`
(function scope) empties it with FLUSHALL and gives its URL, so tests stay fast and
apart. `running_redis(directory, password=...)` starts a server of a test's own: one
that needs a password, or one the test stops.

The server is the `redis-server` program on PATH; `.ci/run` installs Debian's when it
is missing. Nothing is written to disk: no RDB snapshots, no append-only file.

Run as a program, this module is a process sharing a RedisStore schedule:

    python -m tests.helpers.redisserver reserve URL KEY RATE DURATION

connects, prints `ready`, reads a wall-clock START from its standard input, then
reserves slots at a stated RATE from START for DURATION seconds, sleeping until each slot
before asking for the next (one reservation at a time, as the orchestrator does), and
prints `slot <earliest> <latest> <count>` per slot, or `error <message>` (exit 3).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.errors import StoreError
from orchestrator.shared.redisstore import RedisStore
from tests.helpers.serverprocess import ServerProcess

START_TIMEOUT_S = 5.0
MISSING = (
    "redis-server is not on PATH: the Redis store's tests need a real server."
    " .ci/run installs it (apt-get install -y redis-server)."
)


@dataclass
class RedisServer(ServerProcess):
    """A redis-server this test run started, listening on 127.0.0.1:`port`."""

    port: int
    password: str | None

    @property
    def url(self) -> str:
        """The URL that reaches it, with its password if it has one."""
        return self.url_with(self.password)

    def url_with(self, password: str | None, user: str = "") -> str:
        auth = f"{user}:{password}@" if password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self, *args: str) -> str:
        """Send one command (after AUTH, when the server has a password) and return the
        reply's first line: for commands with a simple reply, like FLUSHALL."""
        commands: list[tuple[str, ...]] = [args]
        if self.password is not None:
            commands.insert(0, ("AUTH", self.password))
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as conn:
            conn.sendall(b"".join(_resp(command) for command in commands))
            lines = _read_lines(conn, len(commands))
        return lines[-1]


@contextmanager
def running_redis(directory: Path, password: str | None = None) -> Iterator[RedisServer]:
    """A redis-server on a free port of 127.0.0.1, answering PING; killed at the end."""
    program = shutil.which("redis-server")
    if program is None:
        pytest.fail(MISSING)
    server = _start(program, directory, password)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's server, emptied: no key left by an earlier test."""
    reply = redis_server.command("FLUSHALL")
    assert reply == "+OK", reply
    return redis_server.url


def _start(program: str, directory: Path, password: str | None) -> RedisServer:
    # A free port can be taken between finding it and the server binding it: try again.
    for attempt in range(3):
        port = _free_port()
        log = directory / f"redis-{port}.log"
        argv = [program, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(directory), "--daemonize", "no"]
        if password is not None:
            argv += ["--requirepass", password]
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        server = RedisServer(process=process, log=log, port=port, password=password)
        try:
            up = _wait_until_up(server)
        except BaseException:
            server.stop()
            raise
        if not up:
            if attempt == 2:
                pytest.fail(f"redis-server exited at start:\n{server.log_tail()}")
            continue
        return server
    raise AssertionError("unreachable")


def _wait_until_up(server: RedisServer) -> bool:
    """Whether the server came up: its output is copied to its log by a thread that says
    when it reads redis' "Ready to accept connections", or when the output ends (it
    exited). A wait on an event, not a poll."""
    said = threading.Event()
    ready: list[bool] = []

    def tee() -> None:
        assert server.process.stdout is not None
        with server.log.open("wb") as sink:
            for line in server.process.stdout:
                sink.write(line)
                sink.flush()
                if not ready and b"Ready to accept connections" in line:
                    ready.append(True)
                    said.set()
        server.process.stdout.close()
        said.set()

    threading.Thread(target=tee, daemon=True).start()
    if not said.wait(START_TIMEOUT_S):
        server.stop()
        pytest.fail(f"redis-server was not ready in {START_TIMEOUT_S} s:\n{server.log_tail()}")
    return bool(ready)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _resp(command: tuple[str, ...]) -> bytes:
    parts = [f"*{len(command)}\r\n".encode()]
    for arg in command:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_lines(conn: socket.socket, count: int) -> list[str]:
    data = b""
    while data.count(b"\r\n") < count:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("redis-server closed the connection")
        data += chunk
    return [line.decode() for line in data.split(b"\r\n")[:count]]


@dataclass(frozen=True)
class Slot:
    """A slot a client was granted: its `count`, and its time on the server's clock,
    known to lie between `earliest` and `latest`."""

    earliest: float
    latest: float
    count: int


async def reserve_until(store: RedisStore, rate: float, start: float, end: float) -> list[Slot]:
    """Reserve at a stated `rate` from wall-clock `start` until a slot falls at or after
    `end`, sleeping until each slot: every slot before `end`.

    The script reads the server's `TIME`, this host's wall clock, between the request
    and the reply: the slot is the delay after a moment between the two."""
    await asyncio.sleep(max(0.0, start - time.time()))
    slots: list[Slot] = []
    while True:
        before = time.time()
        grant = await store.reserve(rate)
        after = time.time()
        if grant.limit is None:
            raise AssertionError("a stated rate gave no limit")
        slot = Slot(before + grant.delay_s, after + grant.delay_s, grant.count)
        if slot.earliest >= end:
            return slots
        slots.append(slot)
        await asyncio.sleep(max(0.0, slot.latest - time.time()))


async def _worker(args: argparse.Namespace) -> int:
    try:
        store = await RedisStore.connect(args.url, args.key)
    except StoreError as exc:
        print(f"error {exc}", flush=True)
        return 3
    try:
        print("ready", flush=True)
        start = float(await asyncio.to_thread(sys.stdin.readline))
        slots = await reserve_until(store, args.rate, start, start + args.duration)
    except StoreError as exc:
        print(f"error {exc}", flush=True)
        return 3
    finally:
        await store.close()
    for slot in slots:
        print(f"slot {slot.earliest!r} {slot.latest!r} {slot.count}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.redisserver")
    commands = parser.add_subparsers(dest="command", required=True)
    reserve = commands.add_parser("reserve")
    reserve.add_argument("url")
    reserve.add_argument("key")
    reserve.add_argument("rate", type=float)
    reserve.add_argument("duration", type=float)
    return asyncio.run(_worker(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
