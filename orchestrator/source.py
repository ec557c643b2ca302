"""Where run IDs come from: the input file or stdin, read in a thread, back-pressured.

A daemon thread reads lines in batches and hands them to the event loop through a bounded
stream, blocking while the loop is behind: the input is never read faster than the API
can take it, and a stdin that never ends (an idle pipe) cannot keep the process alive.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .ids import read_capped_lines
from .settings import ConfigError

# Lines handed over from the reader thread at a time: amortises the thread hop.
_BATCH_LINES: Final = 512
# The run stopped reading, or ended: the lines left unread are not wanted. A hand-over
# still pending when the loop closes is cancelled (concurrent.futures.CancelledError).
_LOOP_GONE: Final = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.RunFinishedError,
    concurrent.futures.CancelledError,
)


@dataclass(frozen=True, slots=True)
class InputFailed:
    """Sent in place of a batch when the input breaks off: it must not pass for its end."""

    message: str


Batch = list[bytes] | InputFailed


class InputError(Exception):
    """The input could not be read to its end; what was read before it has been handled."""


def open_source(source: str, stdin: BinaryIO | None = None) -> BinaryIO:
    """The input stream of SOURCE: a file, or stdin for `-`."""
    if source == "-":
        return stdin or sys.stdin.buffer
    try:
        return Path(source).open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None


def read_in_background(stream: BinaryIO) -> MemoryObjectReceiveStream[Batch]:
    """Start the reader thread; batches of raw lines arrive on the returned stream, which
    closes at the end of input (after an `InputFailed` when the input broke off)."""
    send, receive = anyio.create_memory_object_stream[Batch](1)
    threading.Thread(
        target=_read,
        args=(stream, send, anyio.lowlevel.current_token()),
        name="orchestrator-input",
        daemon=True,
    ).start()
    return receive


def _read(
    stream: BinaryIO, send: MemoryObjectSendStream[Batch], token: anyio.lowlevel.EventLoopToken
) -> None:
    def hand_over(item: Batch) -> None:
        anyio.from_thread.run(send.send, item, token=token)

    with contextlib.suppress(*_LOOP_GONE):
        try:
            batch: list[bytes] = []
            for line in read_capped_lines(stream):
                batch.append(line)
                if len(batch) >= _BATCH_LINES:
                    hand_over(batch)
                    batch = []
            if batch:
                hand_over(batch)
        except OSError as exc:
            hand_over(InputFailed(exc.strerror or str(exc)))
        finally:
            try:
                anyio.from_thread.run_sync(send.close, token=token)
            except anyio.RunFinishedError:
                send.close()  # the loop is gone: nothing else can touch the stream now
