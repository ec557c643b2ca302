"""The live progress display: one rich line, redrawn a few times a second on stderr.

It pulls a `Snapshot` from the engine each time it is drawn (from rich's refresh thread),
so the engine never waits for the screen and knows nothing of it. Log lines written while
it is up go through `LinesAbove`, which prints them above the bar, not through it.
"""

from __future__ import annotations

import io
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, TextIO

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orchestrator.outcome import Snapshot
from orchestrator.units import format_rate

# Current rate: requests answered over the last few seconds.
RATE_WINDOW_S: Final = 5.0
# Throughput for the ETA: lines settled over a longer spell, so one pause does not swing it.
THROUGHPUT_WINDOW_S: Final = 30.0
# Requests per line are measured once this many lines are settled; before, one is assumed.
_MIN_LINES_MEASURED: Final = 20
# The bar's width on a wide terminal, and the least it shrinks to before it is left out.
_BAR_WIDTH: Final = 30
_MIN_BAR_WIDTH: Final = 10
# Counts of this rank or lower (done/total, succeeded, failed, ETA) outrank the bar itself.
_ESSENTIAL_RANK: Final = 2


def eta_seconds(
    remaining: int | None,
    requests_per_line: float,
    target_rate: float | None,
    throughput: float | None,
) -> float | None:
    """Seconds left: the slower of what the rate limit allows for the requests still to
    send, and what the last spell's throughput says. None when neither can tell."""
    if remaining is None:
        return None
    if remaining <= 0:
        return 0.0
    estimates = []
    if target_rate:
        estimates.append(remaining * requests_per_line / target_rate)
    if throughput:
        estimates.append(remaining / throughput)
    return max(estimates) if estimates else None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressView:
    """The renderable: a bar and one line of counts, drawn from a fresh snapshot each time."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        total: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._total = total  # known up front for a file; None for stdin
        self._clock = clock
        self._started = clock()
        # (time, requests answered, lines settled), newest last
        self._samples: deque[tuple[float, int, int]] = deque()

    def _rate(self, now: float, index: int, window: float) -> float | None:
        """Growth per second of sample field `index` over the last `window` seconds."""
        newest = self._samples[-1]
        earlier = [s for s in self._samples if s[0] < newest[0]]
        if not earlier:
            return None
        # The oldest sample inside the window, or failing that the last one before it.
        oldest = next((s for s in earlier if now - s[0] <= window), earlier[-1])
        if newest[0] - oldest[0] < 1.0:
            return None
        return (newest[index] - oldest[index]) / (newest[0] - oldest[0])

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.render(options.max_width)

    def render(self, width: int) -> Table:
        """The display in at most `width` columns: one line that never wraps. A narrow
        terminal gets a shorter bar and the counts that matter most: the least needed go
        first (elapsed, in flight, 429s, rates, --wait's), then the bar, and what still
        does not fit is cut with an ellipsis."""
        snap = self._snapshot()
        now = self._clock()
        self._samples.append((now, snap.requests, snap.done))
        while self._samples and now - self._samples[0][0] > THROUGHPUT_WINDOW_S:
            self._samples.popleft()
        total = self._total if self._total is not None else snap.lines
        known = self._total is not None or snap.input_done
        current = self._rate(now, 1, RATE_WINDOW_S)
        per_line = snap.requests / snap.done if snap.done >= _MIN_LINES_MEASURED else 1.0
        eta = eta_seconds(
            total - snap.done if known else None,
            max(per_line, 0.0),
            snap.target_rate,
            self._rate(now, 2, THROUGHPUT_WINDOW_S),
        )
        # (text, style, rank): shown in this order; the highest rank is left out first.
        parts: list[tuple[str, str, int]] = [
            (f"{snap.done:,}" + (f"/{total:,}" if known else f"/{total:,}+"), "bold", 0),
            (f"✓ {snap.succeeded:,}", "green", 1),
            (f"✗ {snap.failed:,}", "red" if snap.failed else "", 1),
            (f"⇄ {snap.in_flight} in flight", "", 6),
            (
                f"{0.0 if current is None else current:.1f}/s"
                f" of {format_rate(snap.target_rate, digits=3)}",
                "",
                4,
            ),
            (f"429s {snap.rate_limited:,}", "yellow" if snap.rate_limited else "", 5),
            (f"elapsed {format_duration(now - self._started)}", "", 7),
            (f"ETA {format_duration(eta)}", "", 2),
        ]
        if snap.following is not None:
            parts.append((f"waiting for {snap.following:,}, {snap.ended:,} ended", "", 3))
        bar_width = max(_MIN_BAR_WIDTH, min(_BAR_WIDTH, width // 5))
        essential = [part for part in parts if part[2] <= _ESSENTIAL_RANK]
        show_bar = _cells(essential) <= width - bar_width - 1
        counts = _fit(parts, width - bar_width - 1 if show_bar else width)
        grid = Table.grid(padding=(0, 1))
        cells: list[ProgressBar | Text] = [counts]
        if show_bar:
            bar_total = total if known and total else None
            cells.insert(0, ProgressBar(total=bar_total, completed=snap.done, width=bar_width))
        grid.add_row(*cells)
        return grid


_GAP: Final = "  "


def _cells(parts: list[tuple[str, str, int]]) -> int:
    return cell_len(_GAP.join(text for text, _, _ in parts))


def _fit(parts: list[tuple[str, str, int]], room: int) -> Text:
    """The parts that fit in `room` columns, dropping the highest ranks first; never
    more than one line (what still does not fit is cut with an ellipsis)."""
    kept = list(parts)
    while len(kept) > 1 and _cells(kept) > room:
        kept.remove(max(kept, key=lambda part: part[2]))
    line = Text(no_wrap=True, overflow="ellipsis")
    for index, (text, style, _) in enumerate(kept):
        if index:
            line.append(_GAP)
        line.append(text, style)
    line.truncate(room, overflow="ellipsis")
    return line


class LinesAbove(io.TextIOBase):
    """A text stream that prints whole lines through a rich console, so they appear above
    a live display instead of through it. Lines are not re-wrapped (JSON stays one line)."""

    def __init__(self, console: Console, file: TextIO) -> None:
        self._console = console
        self._file = file
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def isatty(self) -> bool:
        return self._file.isatty()

    def fileno(self) -> int:
        return self._file.fileno()


@contextmanager
def live_progress(
    console: Console, total: int | None, snapshot: Callable[[], Snapshot]
) -> Iterator[ProgressView]:
    """Show the progress of a session on `console` while the block runs."""
    view = ProgressView(snapshot, total)
    with Live(view, console=console, refresh_per_second=4, transient=True, redirect_stdout=False):
        yield view


def count_lines(path: str) -> int:
    """Lines in a file as the engine will count them, read fast in large blocks."""
    count = 0
    last = b"\n"
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")
