"""Closed pipes and a dropped terminal: a reader of stdout that goes away ends a command
with 141 and no message; a reader of stderr that goes away stops nothing; SIGHUP drains the
run as SIGTERM does (exit 129), unless the run was started under nohup. The CLI runs as a
real subprocess against the simulator, as in tests/cli/test_crash.py."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from orchestrator import cli
from orchestrator.commands import report as report_command
from orchestrator.commands.rerun import FLAGS
from orchestrator.errors import ExitCode, InputError
from orchestrator.ledger.replay import replay_file
from orchestrator.outcome import StopReason, exit_code
from orchestrator.rerun.plumbing import Plumbing
from orchestrator.rerun.session import run_rerun
from orchestrator.settings import load_settings
from orchestrator.simulator import RunningSimulator, SimConfig
from orchestrator.ui.streams import DropWhenGone
from tests.helpers.clikit import TOKEN, env, wait_for_event, write_ids
from tests.helpers.fakeclock import FakeClock
from tests.helpers.rerunkit import make_ids, read_ledger

PYTHON_M = [sys.executable, "-m", "orchestrator"]
QUIET = ("Traceback", "internal error", "Exception ignored", "BrokenPipeError")


async def first_line_then_close(args: list[str], cwd: Path) -> tuple[int, bytes, str]:
    """Run the CLI with stdout into a pipe whose reader takes one line and closes it, as
    `| head -1` does; the exit code, that line, and stderr."""
    read, write = os.pipe()
    with anyio.fail_after(40):
        process = await anyio.open_process(args, stdout=write, cwd=cwd, env=env())
        os.close(write)
        async with process:
            with os.fdopen(read, "rb") as reader:
                first = await anyio.to_thread.run_sync(reader.readline)
            assert process.stderr is not None
            err = b"".join([chunk async for chunk in process.stderr])
            code = await process.wait()
    return code, first, err.decode()


@pytest.mark.subprocess
async def test_a_dry_run_whose_reader_goes_away_exits_141_with_no_message(
    tmp_path: Path,
) -> None:
    """`rerun --dry-run ids.txt | head -1`: once exit 1 with an internal error."""
    source = write_ids(tmp_path / "ids.txt", make_ids(30_000))  # far more than a pipe holds
    args = [*PYTHON_M, "rerun", str(source), "--dry-run", "--log-format", "json"]
    code, first, err = await first_line_then_close(args, tmp_path)
    assert code == ExitCode.BROKEN_PIPE, err
    assert first == b"send\tfl_run_t00000\tnew\n"
    assert not any(word in err for word in QUIET), err
    assert "rerun.summary" not in err  # stopped quietly, as `cat` would
    assert [json.loads(line)["event"] for line in err.splitlines()] == ["rerun.starting"]


@pytest.mark.subprocess
@pytest.mark.parametrize("what", [["--ids", "succeeded"], ["--mapping"]])
async def test_a_report_whose_reader_goes_away_exits_141_with_no_message(
    tmp_path: Path, what: list[str]
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    with ledger.open("w") as out:
        for n in range(20_000):
            out.write(
                json.dumps(
                    {
                        "at": "2026-11-30T03:56:26.414Z",
                        "event": "succeeded",
                        "original_run_id": f"fl_run_a{n:05d}",
                        "new_run_id": f"fl_run_b{n:05d}",
                    }
                )
                + "\n"
            )
    code, first, err = await first_line_then_close(
        [*PYTHON_M, "report", str(ledger), *what], tmp_path
    )
    assert code == ExitCode.BROKEN_PIPE
    assert first
    assert err == ""


async def test_a_dry_run_plan_that_cannot_be_written_stops_at_that_line(tmp_path: Path) -> None:
    class Gone(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            raise BrokenPipeError

    stdout = Gone()
    settings = load_settings(
        {"source": "-", "ledger": tmp_path / "ledger.jsonl", "dry_run": True}, FLAGS
    ).settings
    plumbing = Plumbing(
        clock=FakeClock(),
        rng=random.Random(0),
        handle_signals=False,
        stdin=io.BytesIO("".join(f"{i}\n" for i in make_ids(3000)).encode()),
        stdout=stdout,
    )
    result = await run_rerun(settings, None, plumbing)
    assert result.reason is StopReason.OUTPUT_CLOSED
    assert exit_code(result) == ExitCode.BROKEN_PIPE
    assert stdout.writes == 1  # nothing more was tried
    assert result.tally.lines <= 512  # nor read, past the batch in hand


def test_a_broken_pipe_inside_a_task_group_still_exits_141(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    detached = []
    monkeypatch.setattr(cli, "detach_stdout", lambda: detached.append(True))

    def raises(group: BaseException) -> object:
        def run(_args: object) -> int:
            raise group

        return run

    monkeypatch.setattr(report_command, "run", raises(ExceptionGroup("", [BrokenPipeError()])))
    assert cli.main(["report", "l.jsonl"]) == ExitCode.BROKEN_PIPE
    assert detached == [True]
    # A group holding anything else is a bug, reported as one.
    mixed = ExceptionGroup("", [BrokenPipeError(), KeyError("x")])
    monkeypatch.setattr(report_command, "run", raises(mixed))
    assert cli.main(["report", "l.jsonl"]) == ExitCode.SOFTWARE


def test_a_stream_whose_reader_is_gone_drops_writes_and_points_at_dev_null() -> None:
    read, write = os.pipe()
    os.close(read)
    raw = os.fdopen(write, "w", buffering=1)
    stream = DropWhenGone(raw)
    try:
        stream.write("a log line\n")  # EPIPE: dropped, not raised
        stream.flush()
        assert stream.gone
        assert os.readlink(f"/proc/self/fd/{write}") == os.devnull
        stream.write("and the next one goes nowhere\n")
        raw.flush()  # nor does Python's own flush at exit fail any more
    finally:
        raw.close()


# ---- a closed stderr and SIGHUP, mid-run ---------------------------------------------------


def rerun_args(source: Path, sim: RunningSimulator, tmp_path: Path, *extra: str) -> list[str]:
    return [
        *PYTHON_M, "rerun", str(source), "--base-url", sim.base_url, "--rate", "100/s",
        "--concurrency", "4", "--log-level", "debug", "--log-format", "json", "--timeout", "5",
        "--summary-json", str(tmp_path / "summary.json"),
        "--metrics-file", str(tmp_path / "rerun.prom"),
        *extra,
    ]  # fmt: skip


@pytest.mark.subprocess
async def test_a_closed_stderr_never_stops_the_run_and_every_id_ends_in_the_ledger(
    tmp_path: Path,
) -> None:
    """`rerun … 2>&1 | head`: once a crash that left IDs in doubt, an accepted rerun
    unrecorded and the rest unsent."""
    ids = make_ids(300)
    source = write_ids(tmp_path / "ids.txt", ids)
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN, latency_ms=10)) as sim:
        args = rerun_args(source, sim, tmp_path)
        with anyio.fail_after(40):
            async with await anyio.open_process(args, cwd=tmp_path, env=env()) as process:
                await wait_for_event(process, "rerun.succeeded", count=10)
                assert process.stderr is not None
                await process.stderr.aclose()  # the log reader exits, mid-run
                code = await process.wait()
    assert code == ExitCode.OK
    assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(ids, 1))
    records = read_ledger(tmp_path / "rerun-ledger.jsonl")
    assert {r["original_run_id"] for r in records if r["event"] == "succeeded"} == set(ids)
    assert records[-1] == {**records[-1], "event": "session_ended", "exit_code": 0}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["succeeded"], summary["in_doubt"]) == (300, 0)
    assert 'orchestrator_exit_code{job="rerun-ledger"} 0' in (tmp_path / "rerun.prom").read_text()


@pytest.mark.subprocess
async def test_sighup_drains_like_sigterm_and_exits_129(tmp_path: Path) -> None:
    """An SSH session that drops: once like `kill -9`, with IDs in doubt and no summary."""
    ids = make_ids(300)
    source = write_ids(tmp_path / "ids.txt", ids)
    # A request held by the server for a moment is in flight when the signal lands.
    config = SimConfig(accept_any=True, token=TOKEN, script={ids[20]: ["slow"]}, slow_s=0.5)
    async with RunningSimulator(config) as sim:
        args = rerun_args(source, sim, tmp_path)
        with anyio.fail_after(40):
            async with await anyio.open_process(args, cwd=tmp_path, env=env()) as process:
                await wait_for_event(process, "rerun.succeeded", count=15)
                process.send_signal(signal.SIGHUP)
                assert process.stderr is not None
                err = b"".join([chunk async for chunk in process.stderr]).decode()
                code = await process.wait()
    assert code == ExitCode.SIGHUP
    events = [json.loads(line) for line in err.splitlines()]
    assert any(e["event"] == "rerun.stopping" and e["signal"] == "sighup" for e in events)
    logged = events[-1]
    assert (logged["event"], logged["outcome"], logged["exit_code"]) == (
        "rerun.summary",
        "sighup",
        129,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["outcome"], summary["in_doubt"]) == ("sighup", 0)
    assert 'orchestrator_exit_code{job="rerun-ledger"} 129' in (tmp_path / "rerun.prom").read_text()
    records = read_ledger(tmp_path / "rerun-ledger.jsonl")
    assert records[-1] == {**records[-1], "event": "session_ended", "reason": "sighup"}
    dispatched = {r["original_run_id"] for r in records if r["event"] == "dispatched"}
    settled = {r["original_run_id"] for r in records if r["event"] in ("succeeded", "failed")}
    assert dispatched == settled  # in-flight requests finished: nothing in doubt
    assert len(settled) < len(ids)
    assert replay_file(tmp_path / "rerun-ledger.jsonl").in_doubt() == []
    assert set(sim.state.stats.accepted) == settled


@pytest.mark.subprocess
async def test_under_nohup_sighup_does_not_stop_the_run(tmp_path: Path) -> None:
    """`nohup orchestrator rerun …` asked to outlive the terminal: SIGHUP stays ignored."""
    ids = make_ids(150)
    source = write_ids(tmp_path / "ids.txt", ids)
    nohup = [
        sys.executable, "-c",
        "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
    ]  # fmt: skip
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        args = [*nohup, *rerun_args(source, sim, tmp_path)[1:]]
        with anyio.fail_after(40):
            async with await anyio.open_process(args, cwd=tmp_path, env=env()) as process:
                await wait_for_event(process, "rerun.succeeded", count=10)
                process.send_signal(signal.SIGHUP)
                assert process.stderr is not None
                async for _ in process.stderr:
                    pass
                code = await process.wait()
    assert code == ExitCode.OK
    assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(ids, 1))


async def test_an_input_that_breaks_off_is_still_an_input_error(tmp_path: Path) -> None:
    """The reader thread's quiet end when the run stops early leaves this path alone, and
    the lines read before the break are still sent."""

    class BreaksOff(io.BytesIO):
        def readline(self, size: int | None = -1) -> bytes:
            if self.tell() > 100:
                raise OSError(5, "Input/output error")
            return super().readline(size)

    ids = make_ids(50)
    plumbing = Plumbing(
        clock=FakeClock(),
        rng=random.Random(0),
        handle_signals=False,
        stdin=BreaksOff("".join(f"{i}\n" for i in ids).encode()),  # 14 bytes a line
    )
    async with RunningSimulator(SimConfig(accept_any=True)) as sim:
        given = {"ledger": tmp_path / "l.jsonl", "base_url": sim.base_url, "rate": "none"}
        settings = load_settings(given, FLAGS).settings
        with pytest.raises(InputError, match="Input/output error"):
            await run_rerun(settings, sim.config.token, plumbing)
    assert set(sim.state.stats.accepted) == set(ids[:8])  # 8 lines of 14 bytes were read
