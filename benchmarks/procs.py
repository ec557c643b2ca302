"""Child processes, measured: wall time, CPU time, peak RSS; and servers we start and stop.

Peak RSS and CPU come from `os.wait4`, the kernel's own account of that one child, so a
figure never mixes two processes (as `RUSAGE_CHILDREN` would, summed over every child).
"""

from __future__ import annotations

import os
import signal
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


def child_env(token: str | None = None) -> dict[str, str]:
    """This environment as an operator's shell has it, plus the token.

    No ALTOSTRAT_ or ORCHESTRATOR_ setting leaks in from the caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ALTOSTRAT_", "ORCHESTRATOR_")) and k not in _NOT_AN_OPERATORS
    }
    if token is not None:
        env["ALTOSTRAT_TOKEN"] = token
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


class Server:
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
