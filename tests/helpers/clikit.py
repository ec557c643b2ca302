"""Running the `orchestrator` CLI as a real subprocess, as a user would."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from orchestrator.simulator import RunningSimulator


async def run_cli(
    *args: str, cwd: Path, stdin: bytes = b"", token: str | None = None, **extra: str
) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `python -m orchestrator ARGS`, with no
    ALTOSTRAT_* or ORCHESTRATOR_* variable of the machine's, the token (when given) in
    ALTOSTRAT_TOKEN, and `extra` variables on top; bounded at 30 s."""
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "orchestrator", *args],
            input=stdin,
            cwd=cwd,
            env=env(token) | extra,
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def debug_events(
    tmp_path: Path, run_ids: list[str], sim: RunningSimulator, rate: str
) -> list[dict[str, Any]]:
    """`orchestrator rerun` of `run_ids` against `sim` at `--rate RATE` with no rate store,
    as a real subprocess logging JSON at debug: its log events, once it exited 0."""
    ids = write_ids(tmp_path / "ids.txt", run_ids)
    code, _, err = await run_cli(
        *("rerun", str(ids), "--base-url", sim.base_url, "--rate", rate),
        *("--rate-store", "none", "--log-level", "debug", "--log-format", "json"),
        cwd=tmp_path,
        token=sim.config.token,
    )
    assert code == 0, err
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


async def read_announcement(stdout: asyncio.StreamReader) -> tuple[list[str], str]:
    """The lines `orchestrator simulate` prints at start, up to its `Ctrl-C …` line, and
    the base URL they name; bounded at 20 s."""
    lines: list[str] = []
    async with asyncio.timeout(20):
        while not lines or not lines[-1].startswith("Ctrl-C"):
            line = await stdout.readline()
            assert line, "the simulator exited before announcing itself"
            lines.append(line.decode().rstrip("\n"))
    base_url = next(line.split(" ", 1)[1] for line in lines if line.startswith("base_url: "))
    return lines, base_url


TOKEN = "tok-7f3a9c-very-secret-padded-to-look-like-a-real-jwt"


def env(token: str | None = TOKEN) -> dict[str, str]:
    """This process's environment with no ALTOSTRAT_* or ORCHESTRATOR_* variable of the
    machine's, and `token` (when given) in ALTOSTRAT_TOKEN."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("ALTOSTRAT_", "ORCHESTRATOR_"))
    }
    if token is not None:
        clean["ALTOSTRAT_TOKEN"] = token
    return clean


async def orchestrator(
    *args: str, cwd: Path, token: str | None = TOKEN, stdin: bytes = b""
) -> tuple[int, str, str]:
    """`run_cli` with the tests' token unless told otherwise."""
    return await run_cli(*args, cwd=cwd, stdin=stdin, token=token)


def write_ids(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


async def wait_for_event(process: Process, event: str, count: int) -> None:
    """Read the child's JSON log lines until `count` lines of `event` have passed."""
    assert process.stderr is not None
    seen = 0
    buffer = ""
    async for chunk in TextReceiveStream(process.stderr):
        buffer += chunk
        *lines, buffer = buffer.split("\n")
        seen += sum(1 for line in lines if f'"event": "{event}"' in line)
        if seen >= count:
            return
    raise AssertionError(f"the process ended before {count} {event} events")
