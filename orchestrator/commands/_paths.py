"""Whether a file the run reads or writes is usable, asked before anything is sent.

A symlink loop, a directory, a missing directory or a path through a file would otherwise
surface mid-run, or at its end, as an exception: here each is one line, and exit 2.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _problem_with_directory(path: Path, *, write: bool) -> str | None:
    # abspath, not resolve(): the file is made next to the name given, link or not.
    directory = Path(os.path.abspath(path)).parent
    try:
        found = directory.stat()
    except FileNotFoundError:
        return "its directory does not exist"
    except OSError as exc:
        return f"its directory: {_reason(exc)}"
    if not stat.S_ISDIR(found.st_mode):
        return "its directory does not exist"
    if write and not os.access(directory, os.W_OK | os.X_OK):
        return "its directory is not writable"
    return None


def _problem(path: Path, *, access: int, replace: bool) -> str | None:
    try:
        found = path.stat()  # follows links: a loop, or a link into nowhere, shows here
    except FileNotFoundError:
        return _problem_with_directory(path, write=bool(access & os.W_OK))
    except OSError as exc:  # a loop, a path through a file, a name too long, no access
        return _reason(exc)
    if stat.S_ISDIR(found.st_mode):
        return "it is a directory"
    if not stat.S_ISREG(found.st_mode):
        return "it is not a regular file"
    if not os.access(path, access):
        return "permission denied"
    return _problem_with_directory(path, write=True) if replace else None


def ledger_problem(path: Path, *, write: bool) -> str | None:
    """Why the ledger at `path` cannot be read (and appended to, with `write`) or made
    anew; None when it can. A missing ledger is an empty one."""
    return _problem(path, access=os.R_OK | (os.W_OK if write else 0), replace=False)


def output_problem(path: Path) -> str | None:
    """Why a file could not be written at `path` at the end of a run (by a rename from a
    file beside it, or beside the target when `path` is a symlink); None when it could.

    A file is made and removed in that directory: permission bits and access(2) do not
    tell the whole truth (root ignores the bits; some file systems refuse files anyway)."""
    target = Path(os.path.realpath(path))  # a loop stays a loop, and fails to stat below
    link = f" (it links to {target})" if target != Path(os.path.abspath(path)) else ""
    if (problem := _problem(target, access=os.W_OK, replace=True)) is not None:
        return problem + link
    try:
        fd, made = tempfile.mkstemp(prefix=".orchestrator-check-", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        return f"cannot create a file in {target.parent}: {_reason(exc)}{link}"
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(made)
    return None
