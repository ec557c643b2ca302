"""stdout and stderr that may go away: a reader that closed the pipe (`| head`) turns
later writes into nothing, never a traceback or a lost ledger record."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import TextIO


def detach_stdout() -> None:
    """The reader of stdout went away: point stdout at /dev/null, so that flushing it at
    exit cannot fail again (the recipe in the docs of Python's `signal` module)."""
    _to_devnull(sys.stdout)


def _to_devnull(stream: TextIO) -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


class DropWhenGone(io.TextIOBase):
    """stderr as this program writes it. A write that fails (the reader of a log pipe
    exited, the terminal dropped) is dropped, and the descriptor is pointed at /dev/null,
    so no later write fails again, nor Python's flush at exit: logging never stops a run."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._drop()

    def _drop(self) -> None:
        self.gone = True
        _to_devnull(self._stream)

    def isatty(self) -> bool:
        try:
            return not self.gone and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"
