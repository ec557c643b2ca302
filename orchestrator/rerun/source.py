"""Where run IDs come from: the input file or stdin, read in a thread, back-pressured.

A daemon thread reads lines in batches and hands them to the event loop through a bounded
stream, blocking while the loop is behind: the input is never read faster than the API
can take it, and a stdin that never ends (an idle pipe) cannot keep the process alive.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import anyio
import anyio.from_thread
import anyio.lowlevel

from orchestrator.errors import ConfigError
from orchestrator.ids import read_capped_lines

# Lines handed over from the reader thread at a time: amortises the thread hop.
_BATCH_LINES: Final = 512


@dataclass(frozen=True, slots=True)
class InputFailed:
    """Sent in place of a batch when the input breaks off: it must not pass for its end."""

    message: str


Batch = list[bytes] | InputFailed


def open_source(source: str, stdin: BinaryIO | None = None) -> BinaryIO:
    """The input stream of SOURCE: a file, or stdin for `-`."""
    if source == "-":
        return stdin or sys.stdin.buffer
    try:
        return Path(source).open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None


class Batches:
    """The loop's end of the reader thread: batches of raw lines, then the end.

    The thread waits for room on a semaphore and hands each batch over with a plain
    callback in the loop (`send_nowait`, which cannot block once room is taken). No
    coroutine is ever made in the thread: one made just as the loop shuts down would never
    be awaited, and Python reports that as an error at interpreter exit.
    """

    def __init__(self, token: anyio.lowlevel.EventLoopToken, depth: int = 1) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[Batch](depth)
        self._room = threading.Semaphore(depth)
        self._unwanted = threading.Event()
        self._token = token

    # The loop's side.

    def __aiter__(self) -> Batches:
        return self

    async def __anext__(self) -> Batch:
        try:
            batch = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        self._room.release()
        return batch

    async def __aenter__(self) -> Batches:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Take no more: the thread stops at its next hand-over (or now, if it waits)."""
        self._unwanted.set()
        self._room.release()
        self._receive.close()
        self._send.close()

    # The thread's side.

    def hand_over(self, item: Batch) -> None:
        """Block until the loop has room, then pass `item`; `_Unwanted` once it takes no more."""
        self._room.acquire()
        if self._unwanted.is_set():
            self._room.release()  # another hand-over may be waiting too
            raise _Unwanted
        try:
            anyio.from_thread.run_sync(self._put, item, token=self._token)
        except (anyio.RunFinishedError, RuntimeError):
            # The loop ended, or closed between anyio's check and the call.
            raise _Unwanted from None

    def _put(self, item: Batch) -> None:
        try:
            self._send.send_nowait(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise _Unwanted from None

    def finish(self) -> None:
        """The end of input: close the stream in the loop, so every batch is read first."""
        with contextlib.suppress(anyio.RunFinishedError, RuntimeError):
            anyio.from_thread.run_sync(self._send.close, token=self._token)
            return
        self._send.close()


def read_in_background(stream: BinaryIO) -> Batches:
    """Start the reader thread; batches of raw lines arrive on the returned stream, which
    ends at the end of input (after an `InputFailed` when the input broke off)."""
    batches = Batches(anyio.lowlevel.current_token())
    threading.Thread(
        target=_read,
        args=(stream, batches),
        name="orchestrator-input",
        daemon=True,
    ).start()
    return batches


async def read_lines(batches: Batches, line: Callable[[bytes], Awaitable[None]]) -> str | None:
    """Hand each line to `line`, in order, then close `batches`; None at the input's end,
    or why it broke off (what was read before is handed on all the same)."""
    async with batches:
        async for batch in batches:
            if isinstance(batch, InputFailed):
                return batch.message
            for raw in batch:
                await line(raw)
    return None


class _Unwanted(Exception):
    """The run takes no more input: it stopped reading, or its event loop is gone."""


def _read(stream: BinaryIO, batches: Batches) -> None:
    wanted = True
    batch: list[bytes] = []
    try:
        for line in read_capped_lines(stream):
            batch.append(line)
            if len(batch) >= _BATCH_LINES:
                batches.hand_over(batch)
                batch = []
        if batch:
            batches.hand_over(batch)
    except _Unwanted:
        wanted = False
    except OSError as exc:
        with contextlib.suppress(_Unwanted):
            if batch:  # what was read before the break is still sent
                batches.hand_over(batch)
            batches.hand_over(InputFailed(exc.strerror or str(exc)))
    except ValueError:
        # The run stopped before the input's end and closed it under this thread.
        if not stream.closed:
            raise
        wanted = False
    finally:
        if wanted:
            batches.finish()
