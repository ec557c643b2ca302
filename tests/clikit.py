"""Running the `orchestrator` CLI as a real subprocess, as a user would."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio


async def run_cli(
    *args: str, cwd: Path, stdin: bytes = b"", token: str | None = None, **extra: str
) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `python -m orchestrator ARGS`, with no
    ALTOSTRAT_* or ORCHESTRATOR_* variable of the machine's, the token (when given) in
    ALTOSTRAT_TOKEN, and `extra` variables on top; bounded at 30 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALTOSTRAT_", "ORCHESTRATOR_"))}
    if token is not None:
        env["ALTOSTRAT_TOKEN"] = token
    env |= extra
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "orchestrator", *args],
            input=stdin,
            cwd=cwd,
            env=env,
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()
