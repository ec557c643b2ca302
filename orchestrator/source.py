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


class _Unwanted(Exception):
    """The run takes no more input: it stopped reading, or its event loop is gone."""


async def _offer(send: MemoryObjectSendStream[Batch], item: Batch) -> bool:
    """Hand a batch over, in the loop; False when the run takes no more."""
    try:
        await send.send(item)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        return False
    except anyio.get_cancelled_exc_class():
        # Only the loop shutting down cancels this task: the run is over. Returning, not
        # raising, keeps asyncio from reporting it as an error at shutdown.
        return False
    return True


def _read(
    stream: BinaryIO, send: MemoryObjectSendStream[Batch], token: anyio.lowlevel.EventLoopToken
) -> None:
    def hand_over(item: Batch) -> None:
        try:
            taken = anyio.from_thread.run(_offer, send, item, token=token)
        except (anyio.RunFinishedError, concurrent.futures.CancelledError, RuntimeError):
            # The loop ended, or closed between anyio's check and the call
            # ("Event loop is closed").
            taken = False
        if not taken:
            raise _Unwanted

    wanted = True
    batch: list[bytes] = []
    try:
        for line in read_capped_lines(stream):
            batch.append(line)
            if len(batch) >= _BATCH_LINES:
                hand_over(batch)
                batch = []
        if batch:
            hand_over(batch)
    except _Unwanted:
        wanted = False
    except OSError as exc:
        with contextlib.suppress(_Unwanted):
            if batch:  # what was read before the break is still sent
                hand_over(batch)
            hand_over(InputFailed(exc.strerror or str(exc)))
    except ValueError:
        # The run stopped before the input's end and closed it under this thread.
        if not stream.closed:
            raise
        wanted = False
    finally:
        _close(send, token, in_loop=wanted)


def _close(
    send: MemoryObjectSendStream[Batch], token: anyio.lowlevel.EventLoopToken, *, in_loop: bool
) -> None:
    """Close the thread's end. Once the run takes no more, nothing receives from the
    stream and it is closed from here; otherwise the loop closes it (the end of input)."""
    if in_loop:
        with contextlib.suppress(anyio.RunFinishedError, RuntimeError):
            anyio.from_thread.run_sync(send.close, token=token)
            return
    send.close()
