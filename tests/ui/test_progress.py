"""The live progress display: rendered to a fake terminal, its ETA, log lines above it, and
the counts the engine feeds it; and the real thing on a pseudo-terminal."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from rich.console import Console

from orchestrator.outcome import Snapshot
from orchestrator.simulator import RunningSimulator, SimConfig
from orchestrator.ui.progress import (
    LinesAbove,
    ProgressView,
    count_lines,
    eta_seconds,
    format_duration,
    live_progress,
)
from tests.helpers.progresskit import Script, snap
from tests.helpers.rerunkit import make_ids, rerun


def terminal(width: int = 140) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=width, color_system=None), out


def render(view: ProgressView, console: Console, out: io.StringIO) -> str:
    out.seek(0)
    out.truncate()
    console.print(view)
    return out.getvalue()


def test_a_file_run_shows_done_of_total_counts_rates_and_eta() -> None:
    script = Script()
    view = ProgressView(script.snapshot, total=1000, clock=script.clock)
    console, out = terminal()
    render(view, console, out)
    script.now += 10
    script.current = snap(
        lines=300,
        done=250,
        succeeded=240,
        failed=10,
        in_flight=4,
        requests=260,
        rate_limited=3,
        target_rate=10.0,
    )
    text = render(view, console, out)
    assert "250/1,000" in text
    assert "✓ 240" in text
    assert "✗ 10" in text
    assert "4 in flight" in text
    assert "26.0/s of 10/s" in text  # 260 requests in 10 s, against a 10/s target
    assert "429s 3" in text
    assert "elapsed 0:10" in text
    # 750 lines left at 1.04 requests a line and 10/s: 78 s, slower than the 25 lines/s seen.
    assert "ETA 1:18" in text
    assert "━" in text  # the bar itself


def test_stdin_total_grows_as_read_and_eta_waits_for_the_end_of_input() -> None:
    script = Script()
    view = ProgressView(script.snapshot, total=None, clock=script.clock)
    console, out = terminal()
    script.current = snap(lines=40, done=30)
    text = render(view, console, out)
    assert "30/40+" in text
    assert "ETA --:--" in text
    script.now += 5
    script.current = snap(lines=62, done=50, input_done=True, requests=50, target_rate=None)
    text = render(view, console, out)
    assert "50/62 " in text
    assert "of none" in text
    assert "ETA 0:03" in text  # 12 lines left at 4 lines/s seen, no rate limit


def test_the_display_fits_a_narrow_terminal_without_breaking() -> None:
    script = Script()
    view = ProgressView(script.snapshot, total=10, clock=script.clock)
    console, out = terminal(width=60)
    assert render(view, console, out).strip()


@pytest.mark.parametrize(
    ("remaining", "per_line", "rate", "throughput", "expected"),
    [
        (None, 1.0, 10.0, 5.0, None),  # total not known yet
        (0, 1.0, 10.0, None, 0.0),
        (100, 1.0, 10.0, None, 10.0),  # only the rate limit is known
        (100, 1.5, 10.0, None, 15.0),  # retries cost requests too
        (100, 1.0, 10.0, 2.0, 50.0),  # slower than the limit: what is seen wins
        (100, 1.0, 10.0, 50.0, 10.0),  # faster than the limit cannot last: the limit wins
        (100, 1.0, None, 4.0, 25.0),  # no limit
        (100, 1.0, None, None, None),
    ],
)
def test_eta_is_the_slower_of_the_rate_limit_and_the_seen_throughput(
    remaining: int | None,
    per_line: float,
    rate: float | None,
    throughput: float | None,
    expected: float | None,
) -> None:
    assert eta_seconds(remaining, per_line, rate, throughput) == expected


def test_durations_read_as_clock_times() -> None:
    assert format_duration(None) == "--:--"
    assert format_duration(59.6) == "1:00"
    assert format_duration(3725) == "1:02:05"


def test_log_lines_print_above_the_live_bar_whole_and_unwrapped() -> None:
    console, out = terminal(width=60)
    above = LinesAbove(console, io.StringIO())
    long_json = '{"event": "rerun.retry", "run_id": "' + "x" * 100 + '"}'
    script = Script()
    script.current = snap(lines=10, done=5)
    with live_progress(console, 10, script.snapshot):
        above.write("first line\n" + long_json + "\npartial")
        above.write(" end\n")
    text = out.getvalue()
    assert "first line" in text
    assert long_json in text  # one line, not re-wrapped at the terminal width
    assert "partial end" in text
    assert text.index("first line") < text.index("partial end")


def test_count_lines_counts_as_the_engine_reads(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    for content, lines in [(b"", 0), (b"a\n", 1), (b"a\nb", 2), (b"a\n\n# c\n", 3)]:
        path.write_bytes(content)
        assert count_lines(str(path)) == lines


async def test_the_engine_feeds_the_monitor_until_every_line_is_done(tmp_path: Path) -> None:
    seen: list[Snapshot] = []

    @contextmanager
    def monitor(snapshot: object) -> Iterator[None]:
        assert callable(snapshot)
        seen.append(snapshot())
        yield
        seen.append(snapshot())

    ids = make_ids(25)
    async with RunningSimulator(SimConfig(accept_any=True, script={ids[3]: [404]})) as sim:
        await rerun(sim, tmp_path / "l.jsonl", [*ids, "bad", "# comment"], monitor=monitor)
    first, last = seen
    assert first.done == first.lines == 0
    assert last.lines == last.done == 27
    assert last.input_done
    assert (last.succeeded, last.failed, last.in_flight) == (24, 1, 0)
    assert last.requests == 25


@pytest.mark.subprocess
async def test_on_a_real_terminal_a_run_shows_the_bar_then_the_summary_table(
    tmp_path: Path,
) -> None:
    """stderr on a pseudo-terminal: progress frames, then the table; stdout stays empty."""
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in make_ids(30)))
    async with RunningSimulator(SimConfig(accept_any=True)) as sim:
        args = [sys.executable, "-m", "orchestrator", "rerun", str(ids), "--base-url"]
        args += [sim.base_url, "--rate", "15/s", "--ledger", str(tmp_path / "l.jsonl")]
        with anyio.fail_after(30):
            code, stdout, screen = await anyio.to_thread.run_sync(_on_a_terminal, args, tmp_path)
    assert code == 0, screen
    assert stdout == b""
    assert "ETA" in screen
    assert "/30" in screen
    assert "rerun completed: exit 0" in screen
    assert "succeeded" in screen
    assert '{"' not in screen  # console lines on a terminal, not JSON


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, bytes, str]:
    """Run `args` with stderr on a new pseudo-terminal; its exit code, stdout and screen."""
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env |= {"ALTOSTRAT_TOKEN": "sim-token", "COLUMNS": "150", "TERM": "xterm"}
    # stdin not a terminal, whatever pytest's is: a run on one would ask before sending.
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary, env=env, cwd=cwd
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    stdout, _ = process.communicate(timeout=30)
    return process.returncode, stdout, b"".join(chunks).decode("utf-8", "replace")


def test_with_wait_the_bar_says_how_many_new_runs_are_still_followed() -> None:
    script = Script()
    view = ProgressView(script.snapshot, total=10, clock=script.clock)
    console, out = terminal(width=200)
    assert "waiting for" not in render(view, console, out)
    script.current = snap(lines=10, done=10, succeeded=10, following=4, ended=6)
    assert "waiting for 4, 6 ended" in render(view, console, out)
