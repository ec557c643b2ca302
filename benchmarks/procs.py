"""Child processes, measured: wall time, CPU time, peak RSS; and servers we start and stop
(ours, and a redis-server for the shared rate budget's rows).

Peak RSS and CPU come from `os.wait4`, the kernel's own account of that one child, so a
figure never mixes two processes (as `RUSAGE_CHILDREN` would, summed over every child).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
# Children start in the repository, so `-m orchestrator` and `-m benchmarks…` are this tree's.
REPO: Final = Path(__file__).resolve().parents[1]
_READY_TIMEOUT_S: Final = 20.0


@dataclass(frozen=True, slots=True)
class Finished:
    """How a child process ended and what it cost."""

    code: int
    wall_s: float
    cpu_s: float  # user + system
    peak_rss_mb: float
    timed_out: bool = False


# Settings of this environment that an operator's shell would not have: unbuffered stdout
# turns each dry-run line into a write(2), and no bytecode cache recompiles every start.
_NOT_AN_OPERATORS: Final = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")


def child_env(token: str | None = None, *, state_home: Path | None = None) -> dict[str, str]:
    """This environment as an operator's shell has it, plus the token.

    No ALTOSTRAT_ or ORCHESTRATOR_ setting leaks in from the caller. `state_home` becomes
    XDG_STATE_HOME, where `--rate-store auto` keeps the token's shared rate budget: a
    directory of the bench's own, so that no run reads a limit another one (or the
    operator's own runs) left in ~/.local/state, nor leaves one there."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ALTOSTRAT_", "ORCHESTRATOR_")) and k not in _NOT_AN_OPERATORS
    }
    if token is not None:
        env["ALTOSTRAT_TOKEN"] = token
    if state_home is not None:
        env["XDG_STATE_HOME"] = str(state_home)
    return env


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: IO[bytes] | int | None = subprocess.DEVNULL,
    stdout: IO[bytes] | int | None = subprocess.DEVNULL,
    stderr: IO[bytes] | int | None = subprocess.DEVNULL,
    timeout_s: float = 180.0,
    cwd: Path = REPO,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Finished:
    """Run `argv` to its end (killed after `timeout_s`) and measure it; `on_start` is told
    of the child, so that a caller can kill it early."""
    killed: list[bool] = []

    def kill() -> None:
        killed.append(True)
        child.kill()

    started = time.perf_counter()
    child = subprocess.Popen(  # noqa: S603
        argv, env=dict(env), stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd
    )
    if on_start is not None:
        on_start(child)
    timer = threading.Timer(timeout_s, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(child.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait on it again
    return Finished(
        code=child.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # Linux reports kilobytes
        timed_out=bool(killed),
    )


class _Child:
    """A child process that is up between `start` and `stop` (or in a `with` block)."""

    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Server(_Child):
    """A server process of `benchmarks.servers`, up between `start` and `stop`."""

    def __init__(self, kind: str, *args: str, log: Path) -> None:
        self.kind = kind
        self._argv = [sys.executable, "-m", "benchmarks.servers", kind, *args]
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def start(self) -> Self:
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603
                self._argv, stdout=subprocess.PIPE, stderr=log, env=child_env(), cwd=REPO
            )
        assert self._process.stdout is not None
        deadline = time.monotonic() + _READY_TIMEOUT_S
        line = b""
        while time.monotonic() < deadline and not line.startswith(b"base_url: "):
            line = self._process.stdout.readline()
            if not line and self._process.poll() is not None:
                break
        if not line.startswith(b"base_url: "):
            self.stop()
            raise RuntimeError(f"the {self.kind} server did not start; see {self._log}")
        self.base_url = line.decode().removeprefix("base_url: ").strip()
        return self

    def cpu_s(self) -> float:
        """CPU seconds the server has used so far (from /proc: it is still running)."""
        assert self._process is not None
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
        return (utime + stime) / _CLK_TCK


class RedisServer(_Child):
    """A redis-server of our own on a free loopback port, writing nothing to disk (no RDB
    snapshot, no append-only file), up between `start` and `stop`."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @staticmethod
    def available() -> str | None:
        """Why no server can be started here, or None when one can."""
        if shutil.which("redis-server") is None:
            return "redis-server is not on PATH"
        try:
            import redis  # noqa: F401, PLC0415 - the orchestrator's optional extra
        except ImportError:
            return "the redis package is not installed (pip install 'orchestrator[redis]')"
        return None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        program = shutil.which("redis-server")
        if program is None:
            raise RuntimeError("redis-server is not on PATH")
        self._directory.mkdir(parents=True, exist_ok=True)
        # A free port can be taken between finding it and binding it: try again.
        for _ in range(3):
            self.port = _free_port()
            argv = [program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            argv += ["--appendonly", "no", "--dir", str(self._directory), "--daemonize", "no"]
            with (self._directory / "redis.log").open("ab") as log:
                self._process = subprocess.Popen(  # noqa: S603
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            if self._wait_until_up():
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self._directory / 'redis.log'}")

    def _wait_until_up(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"*1\r\n$4\r\nPING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
