"""What an operator sees at a terminal: shell completion, a progress bar that fits, a retry
command that can be pasted, the notice that `rerun` reads the terminal, and the PID of
whoever holds the ledger."""

from __future__ import annotations

import io
import json
import os
import pty
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from rich.cells import cell_len
from rich.console import Console

from orchestrator.ledger.writer import FsyncPolicy, LedgerWriter, flock_holder, lock_holder
from orchestrator.outcome import LedgerHistory, Summary
from orchestrator.simulator import RunningSimulator, SimConfig
from orchestrator.ui.progress import ProgressView
from orchestrator.ui.summary import print_summary
from tests.helpers.clikit import run_cli
from tests.helpers.progresskit import Script, snap
from tests.helpers.rerunkit import make_ids

TOKEN = "tok-5e1ec7-very-secret-padded-to-look-like-a-real-jwt"
LOOPBACK_ONLY = ("--rate", "none", "--rate-store", "none")


# ---- orchestrator completion ---------------------------------------------------------------


@pytest.mark.subprocess
async def test_completion_bash_is_a_script_bash_accepts_and_that_completes(
    tmp_path: Path,
) -> None:
    code, script, err = await run_cli("completion", "bash", cwd=tmp_path)
    assert (code, err) == (0, "")
    path = tmp_path / "orchestrator.bash"
    path.write_text(script)
    checked = await anyio.run_process(["bash", "-n", str(path)], check=False)
    assert checked.returncode == 0, checked.stderr
    # Completing as bash would: the words typed, and the one under the cursor.
    probe = f"""
source {shlex.quote(str(path))}
complete_words() {{
  COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
  _shtab_orchestrator; echo "${{COMPREPLY[*]}}"
}}
complete_words orchestrator sel
complete_words orchestrator select --all-w
complete_words orchestrator completion ''
"""
    done = await anyio.run_process(["bash", "-c", probe], check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["select", "--all-workflows", "bash zsh"]


@pytest.mark.subprocess
async def test_completion_zsh_is_a_script_zsh_accepts(tmp_path: Path) -> None:
    code, script, err = await run_cli("completion", "zsh", cwd=tmp_path)
    assert (code, err) == (0, "")
    assert script.startswith("#compdef orchestrator")
    assert "--all-workflows" in script
    zsh = shutil.which("zsh")
    assert zsh is not None, "zsh is needed for this test (.ci/run installs it)"
    path = tmp_path / "_orchestrator"
    path.write_text(script)
    checked = await anyio.run_process([zsh, "-n", str(path)], check=False)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.subprocess
async def test_completion_for_another_shell_is_a_usage_error(tmp_path: Path) -> None:
    code, out, err = await run_cli("completion", "fish", cwd=tmp_path)
    assert (code, out) == (2, "")
    assert "invalid choice: 'fish'" in err
    assert len(err.strip().splitlines()) == 1


# ---- the progress bar ----------------------------------------------------------------------


@pytest.mark.parametrize("width", [60, 80, 120])
@pytest.mark.parametrize("waiting", [False, True])
def test_the_progress_display_fits_the_terminal_on_one_line(width: int, waiting: bool) -> None:
    script = Script()
    view = ProgressView(script.snapshot, total=1_000_000, clock=script.clock)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, color_system=None)
    console.print(view)
    script.now += 3725  # elapsed 1:02:05
    script.current = snap(
        lines=300_000, done=250_000, succeeded=240_000, failed=10_000, in_flight=128,
        requests=260_000, rate_limited=3_000, target_rate=66.7,
        following=1_234 if waiting else None, ended=5_678,
    )  # fmt: skip
    out.seek(0)
    out.truncate()
    console.print(view)
    lines = out.getvalue().rstrip("\n").split("\n")
    assert len(lines) == 1, lines
    assert cell_len(lines[0]) <= width
    # What matters most is always there: how far, how it went, and how long still.
    for part in ("250,000/1,000,000", "✓ 240,000", "✗ 10,000", "ETA "):
        assert part in lines[0]
    # The bar gives way to the counts: at 60 columns a million-line run has no room for it.
    assert ("━" in lines[0]) == (width > 60)


def test_a_narrow_terminal_keeps_a_shorter_bar_when_the_counts_are_short() -> None:
    script = Script()
    view = ProgressView(script.snapshot, total=1000, clock=script.clock)
    script.current = snap(lines=300, done=250, succeeded=240, failed=10)
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=60, color_system=None).print(view)
    (line,) = out.getvalue().rstrip("\n").split("\n")
    assert cell_len(line) <= 60
    assert "━" in line
    assert "250/1,000" in line


def test_a_wide_terminal_shows_every_count() -> None:
    script = Script()
    view = ProgressView(script.snapshot, total=100, clock=script.clock)
    script.current = snap(lines=10, done=5, succeeded=4, failed=1, in_flight=2, rate_limited=1)
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=120, color_system=None).print(view)
    for part in ("5/100", "in flight", "/s of 10/s", "429s 1", "elapsed", "ETA"):
        assert part in out.getvalue()


# ---- the retry command ---------------------------------------------------------------------


COMMAND = (
    "orchestrator report 'incident ledger.jsonl' --ids failed | orchestrator rerun - "
    "--ledger 'incident ledger.jsonl' --retry-failed --base-url http://127.0.0.1:49152"
)


def test_the_retry_command_prints_whole_on_one_line_at_a_narrow_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    fields = Summary(
        outcome="completed",
        exit_code=1,
        ledger="incident ledger.jsonl",
        succeeded=3,
        failed_by_error={"not_found": 2},
        retry_command=COMMAND,
    )
    print_summary(fields, "rerun completed: exit 1", out)
    lines = out.getvalue().splitlines()
    assert max(cell_len(line) for line in lines if line != COMMAND) <= 40  # the table fits
    assert lines[lines.index("retry failed:") + 1] == COMMAND


@pytest.mark.subprocess
async def test_a_failed_run_ends_with_a_retry_command_that_pastes_back(tmp_path: Path) -> None:
    ids = make_ids(4)
    source = tmp_path / "ids.txt"
    source.write_text("".join(f"{i}\n" for i in ids))
    config = SimConfig(accept_any=True, token=TOKEN, script={ids[0]: [404]})
    async with RunningSimulator(config) as sim:
        code, _, err = await run_cli(
            "rerun", str(source), "--ledger", "incident ledger.jsonl", "--base-url",
            sim.base_url, "--log-format", "console", "--summary-json", "summary.json",
            *LOOPBACK_ONLY, cwd=tmp_path, token=TOKEN, COLUMNS="40",
        )  # fmt: skip
    assert code == 1
    command = json.loads((tmp_path / "summary.json").read_text())["retry_command"]
    lines = err.splitlines()
    assert lines[lines.index("retry failed:") + 1] == command
    assert len(command) > 40  # so it would have wrapped
    words = shlex.split(command)
    assert words.count("incident ledger.jsonl") == 2  # each path one word, as quoted


# ---- rerun reading a terminal --------------------------------------------------------------


@pytest.mark.subprocess
async def test_rerun_with_no_source_on_a_terminal_says_at_once_it_reads_stdin(
    tmp_path: Path,
) -> None:
    """The notice comes before any input: nothing is typed until it has been read."""
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALTOSTRAT_", "ORCHESTRATOR_"))}
    env["ALTOSTRAT_TOKEN"] = TOKEN
    args = [sys.executable, "-m", "orchestrator", "rerun", "--base-url", "http://127.0.0.1:9"]
    try:
        with anyio.fail_after(30):
            async with await anyio.open_process(
                [*args, *LOOPBACK_ONLY, "--log-format", "json"],
                stdin=secondary, stdout=subprocess.DEVNULL, cwd=tmp_path, env=env,
            ) as process:  # fmt: skip
                os.close(secondary)
                secondary = -1
                assert process.stderr is not None
                said = b""
                async for chunk in process.stderr:
                    said += chunk
                    if b"input.from_terminal" in said:
                        break
                os.write(primary, b"\x04")  # Ctrl-D: the end of the input
                async for chunk in process.stderr:
                    said += chunk
                code = await process.wait()
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    first = json.loads(said.decode().splitlines()[0])
    assert first["event"] == "input.from_terminal"
    assert "reading run IDs from the terminal" in first["detail"]
    assert code == 0


# ---- who holds the ledger ------------------------------------------------------------------

PROC_LOCKS = """\
1: POSIX  ADVISORY  WRITE 811 fe:00:2146487 0 EOF
2: FLOCK  ADVISORY  WRITE 6496 fe:00:5334208 0 EOF
2: -> FLOCK  ADVISORY  WRITE 7001 fe:00:5334208 0 EOF
3: FLOCK  ADVISORY  WRITE 977 08:01:5334208 0 EOF
4: FLOCK  ADVISORY  READ 1200 fe:00:42 0 EOF
"""


@pytest.mark.parametrize(
    ("major", "minor", "inode", "holder"),
    [
        (0xFE, 0, 5334208, 6496),  # not the process waiting for it
        (8, 1, 5334208, 977),  # the same inode on another device is another file
        (0xFE, 0, 2146487, None),  # a POSIX lock is not ours
        (0xFE, 0, 42, 1200),
        (0xFE, 0, 7, None),
    ],
)
def test_flock_holder_reads_the_holder_from_proc_locks(
    major: int, minor: int, inode: int, holder: int | None
) -> None:
    assert flock_holder(PROC_LOCKS, major, minor, inode) == holder


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="Linux lists locks in /proc/locks")
def test_lock_holder_names_the_process_that_holds_the_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "rerun-ledger.jsonl"
    writer = LedgerWriter(ledger, FsyncPolicy.NEVER)
    try:
        fd = os.open(ledger, os.O_RDONLY)
        try:
            assert lock_holder(fd) == os.getpid()
        finally:
            os.close(fd)
    finally:
        writer.close()
    fd = os.open(ledger, os.O_RDONLY)
    try:
        assert lock_holder(fd) is None  # let go
    finally:
        os.close(fd)


@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="Linux lists locks in /proc/locks")
async def test_a_second_rerun_on_a_ledger_in_use_names_the_pid_of_the_first(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALTOSTRAT_", "ORCHESTRATOR_"))}
    env["ALTOSTRAT_TOKEN"] = TOKEN
    args = [sys.executable, "-m", "orchestrator", "rerun", "-", "--ledger", "shared.jsonl"]
    args += ["--base-url", "http://127.0.0.1:9", *LOOPBACK_ONLY, "--log-format", "json"]
    with anyio.fail_after(30):
        async with await anyio.open_process(args, cwd=tmp_path, env=env) as first:
            assert first.stdin is not None
            assert first.stderr is not None
            said = b""
            async for chunk in first.stderr:  # the ledger is locked once this is said
                said += chunk
                if b"rerun.starting" in said:
                    break
            code, out, err = await run_cli(
                "rerun", "-", "--ledger", "shared.jsonl", "--base-url", "http://127.0.0.1:9",
                *LOOPBACK_ONLY, cwd=tmp_path, token=TOKEN, stdin=b"fl_run_a1\n",
            )  # fmt: skip
            await first.stdin.aclose()  # no input: the first run ends
            first_code = await first.wait()
    assert code == 2
    assert out == ""
    assert err.strip() == (
        f"orchestrator: error: ledger shared.jsonl is in use by another orchestrator process "
        f"(PID {first.pid}); wait for it to finish or use another --ledger"
    )
    assert first_code == 0


def test_the_report_table_leaves_out_times_a_ledger_does_not_have() -> None:
    """A ledger written by hand may hold no times: no "first record None" row."""

    def table(history: LedgerHistory) -> str:
        out = io.StringIO()
        print_summary(Summary("completed", 0, "l.jsonl", history=history), "report", out)
        return out.getvalue()

    untimed = table(LedgerHistory(sessions=1))
    assert "None" not in untimed
    assert "first record" not in untimed
    assert "latency ms" not in untimed
    timed = table(
        LedgerHistory(
            sessions=1, first_at="2026-01-01T00:00:00.000Z", last_at="2026-01-01T00:00:02.000Z",
            latency_ms={"p50": 12.0},
        )
    )  # fmt: skip
    assert "2026-01-01T00:00:00.000Z" in timed
    assert "p50 12.0" in timed
