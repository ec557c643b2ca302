"""Strings from a server, an input file or a ledger are data, never control: every console
and text output shows their control characters escaped, CSV cells never start a formula,
and JSON output stays exact."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.escape import csv_cell, escape
from orchestrator.ledger.records import Dispatched, Failed, Rejected, SessionStarted, Succeeded
from orchestrator.outcome import LedgerHistory, Summary
from orchestrator.ui.logs import configure_logging
from orchestrator.ui.summary import print_summary
from tests.helpers.clikit import run_cli

AT = "2026-11-30T12:00:00.000Z"
TOKEN = "tok-output-safety-77-padded-to-look-like-a-real-jwt"
# Characters a terminal or a text viewer obeys, or that make a line read other than it is.
DANGEROUS = frozenset(
    chr(c)
    for c in (
        *range(0x20),
        0x7F,
        *range(0x80, 0xA0),
        0x061C,
        0x200E,
        0x200F,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        0x2028,
        0x2029,
        *range(0xD800, 0xE000),
    )
)
# Clears the screen, forges a hyperlink (OSC 8), a NUL, DEL, a C1 CSI, and a bidi override.
HOSTILE = "boom\x1b[2J\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07\x00\x7f\x9b31m\u202eexe.txt"


def controls(text: str, allowed: str = "\n") -> set[str]:
    """The dangerous characters in `text`, beyond the line breaks (or tabs) it is made of."""
    return {c for c in text if c in DANGEROUS and c not in allowed}


# ---- the one escaping function -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b", "\\x1b"),
        ("\x00", "\\x00"),
        ("\x07", "\\x07"),
        ("\x7f", "\\x7f"),
        ("\x9b", "\\x9b"),
        ("\t", "\\t"),
        ("\n", "\\n"),
        ("\r", "\\r"),
        ("\u202e", "\\u202e"),
        ("\u2066", "\\u2066"),
        ("\u200f", "\\u200f"),
        ("\u2028", "\\u2028"),
        ("\udc80", "\\udc80"),
    ],
)
def test_escape_shows_each_control_as_its_escape(raw: str, shown: str) -> None:
    assert escape(f"a{raw}b") == f"a{shown}b"


@pytest.mark.parametrize(
    "text", ["fl_run_abc", "Webhook endpoint returned HTTP 500.", "café 日本 ✓ —", "C:\\dir\\x"]
)
def test_escape_leaves_printable_text_alone(text: str) -> None:
    assert escape(text) == text


@given(st.text(alphabet=st.characters(exclude_categories=[])))
def test_escaped_text_holds_no_control_and_safe_text_is_unchanged(text: str) -> None:
    shown = escape(text)
    assert not controls(shown, allowed="")
    assert (shown == text) == (not controls(text, allowed=""))


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://evil","x")', '\'=HYPERLINK("http://evil","x")'),
        ("+1+1", "'+1+1"),
        ("-1+1", "'-1+1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\\t=1"),
        ("\r=1", "'\\r=1"),
        ("fl_run_a\x1b[31m", "fl_run_a\\x1b[31m"),
        ("fl_run_abc", "fl_run_abc"),
        (None, ""),
    ],
)
def test_a_csv_cell_never_starts_a_formula_nor_holds_a_control(
    value: str | None, cell: str
) -> None:
    assert csv_cell(value) == cell


# ---- console logs and the summary table ----------------------------------------------------


@pytest.fixture
def own_logging() -> Iterator[None]:
    """structlog's configuration is global: put it back as it was."""
    before = structlog.get_config()
    yield
    structlog.configure(**before)


def _fail(message: str) -> None:
    raise RuntimeError(message)


def test_console_log_lines_escape_every_value_and_the_traceback(own_logging: None) -> None:
    out = io.StringIO()
    configure_logging("info", "console", secrets=[TOKEN], stream=out)
    log = structlog.get_logger("test")
    log.warning("wait.finished", error_message=HOSTILE, run_id="fl\x1b[8m", nested={"k": HOSTILE})
    try:
        _fail(HOSTILE + TOKEN)
    except RuntimeError:
        log.exception("internal_error")
    text = out.getvalue()
    assert not controls(text)
    assert "\\x1b[2J" in text
    assert "\\u202e" in text
    assert "run_id=fl\\x1b[8m" in text  # a bare value stays bare
    assert "Traceback (most recent call last):" in text  # the traceback keeps its lines
    assert TOKEN not in text


def test_json_log_lines_stay_exact(own_logging: None) -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    structlog.get_logger("test").warning("wait.finished", error_message=HOSTILE)
    assert not controls(out.getvalue())
    assert json.loads(out.getvalue())["error_message"] == HOSTILE


def test_the_summary_table_escapes_every_cell_and_reads_no_markup() -> None:
    fields = Summary(
        outcome="completed\x1b[2J",
        exit_code=1,
        succeeded=1,
        failed_by_error={"not_found\x1b[31m": 1, "[/]": 1},
        in_doubt=1,
        in_doubt_ids=("fl_run_\u202eexe",),
        finished_by_outcome={"failed_again": 1, "odd\x9b": 1},
        finished_ids={"failed_again": ("fl_run_a\x00",)},
        history=LedgerHistory(first_at="[bold]2026\x07"),
        ledger="l[/red].jsonl\x1b]8;;x\x07",
    )
    out = io.StringIO()
    print_summary(fields, "ledger l[/].jsonl\x1b[2J: completed", out)
    text = out.getvalue()
    assert not controls(text)
    for shown in ("\\x1b[2J", "not_found\\x1b[31m", "[/]", "\\u202e", "odd\\x9b", "[bold]2026"):
        assert shown in text


# ---- as subprocesses ---------------------------------------------------------------------


async def orchestrator(
    *args: str, cwd: Path, stdin: bytes = b"", token: str | None = TOKEN
) -> tuple[int, str, str]:
    return await run_cli(*args, cwd=cwd, stdin=stdin, token=token)


def hostile_ledger(path: Path) -> Path:
    records = [
        SessionStarted(at=AT, version="0", source="ids.txt", pid=1),
        Rejected(at=AT, line=1, reason="bad_prefix", input="\x1b[2Jcleared\x00nul"),
        Dispatched(at=AT, original_run_id="fl_run_bad\x1b[31m", attempt=1),
        Failed(
            at=AT,
            original_run_id="fl_run_bad\x1b[31m",
            http_status=404,
            error="not_found",
            attempts=1,
        ),
        Dispatched(at=AT, original_run_id="fl_run_ok", attempt=1),
        Succeeded(
            at=AT,
            original_run_id="fl_run_ok",
            new_run_id='=HYPERLINK("http://evil.example","open")',
            new_run_status="pending",
            http_status=202,
            attempts=1,
        ),
        Dispatched(at=AT, original_run_id="-fl_run_odd", attempt=1),
        Succeeded(
            at=AT,
            original_run_id="-fl_run_odd",
            new_run_id="fl_run_new\x1b[8m",
            new_run_status="pending",
            http_status=202,
            attempts=1,
        ),
    ]
    path.write_bytes(b"".join(r.model_dump_json().encode() + b"\n" for r in records))
    return path


@pytest.mark.subprocess
async def test_report_text_outputs_escape_what_the_ledger_holds(tmp_path: Path) -> None:
    ledger = str(hostile_ledger(tmp_path / "l.jsonl"))

    code, out, _ = await orchestrator("report", ledger, "--ids", "rejected", cwd=tmp_path)
    assert code == 0
    assert out == "\\x1b[2Jcleared\\x00nul\n"

    code, out, _ = await orchestrator("report", ledger, "--ids", "failed", cwd=tmp_path)
    assert out == "fl_run_bad\\x1b[31m\n"

    code, out, _ = await orchestrator("report", ledger, "--mapping", cwd=tmp_path)
    assert code == 0
    assert not controls(out)
    assert list(csv.reader(io.StringIO(out))) == [
        ["original_run_id", "new_run_id"],
        ["fl_run_ok", '\'=HYPERLINK("http://evil.example","open")'],
        ["'-fl_run_odd", "fl_run_new\\x1b[8m"],
    ]


@pytest.mark.subprocess
async def test_report_json_outputs_stay_exact(tmp_path: Path) -> None:
    ledger = str(hostile_ledger(tmp_path / "l.jsonl"))
    code, out, _ = await orchestrator("report", ledger, "--json", cwd=tmp_path)
    assert code == 1
    assert not controls(out)
    assert json.loads(out)["failed"] == 1
    code, out, _ = await orchestrator(
        "report", ledger, "--mapping", "--format", "jsonl", cwd=tmp_path
    )
    assert not controls(out)
    assert [json.loads(line)["new_run_id"] for line in out.splitlines()] == [
        '=HYPERLINK("http://evil.example","open")',
        "fl_run_new\x1b[8m",
    ]


@pytest.mark.subprocess
@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_a_dry_run_shows_hostile_input_lines_only_escaped(
    tmp_path: Path, log_format: str
) -> None:
    stdin = "fl_run_ok1\n\x1b[2Jfl_run_x\x00\n\u202egnp.exe\nfl_run_\x9b1\n".encode()
    code, out, err = await orchestrator(
        "rerun", "-", "--dry-run", "--log-format", log_format, cwd=tmp_path, stdin=stdin
    )
    assert code == 1  # rejected lines
    assert out.splitlines()[0] == "send\tfl_run_ok1\tnew"
    assert "reject\tline 2\tbad_prefix" in out
    assert not controls(out, allowed="\n\t")
    assert not controls(err)


@asynccontextmanager
async def hostile_api(error_message: str) -> AsyncIterator[str]:
    """An API on loopback that accepts every rerun and says each new run failed with
    `error_message`; yields its base URL."""

    async def rerun(request: web.Request) -> web.Response:
        original = request.match_info["run_id"]
        return web.json_response(
            {"new_run": {"id": original + "new", "status": "pending"}}, status=202
        )

    async def get_run(request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        body = {"id": run_id, "status": "failed", "error_message": error_message}
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/workflows/runs/{run_id}/rerun", rerun)
    app.router.add_get("/workflows/runs/{run_id}", get_run)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.subprocess
async def test_wait_shows_a_failed_runs_error_message_escaped_on_the_console(
    tmp_path: Path,
) -> None:
    async with hostile_api(HOSTILE) as base_url:
        code, out, err = await orchestrator(
            "rerun",
            "-",
            "--base-url",
            base_url,
            "--rate",
            "none",
            "--rate-store",
            "none",
            "--wait",
            "--poll-interval",
            "0.05",
            "--log-format",
            "console",
            cwd=tmp_path,
            stdin=b"fl_run_a1\n",
        )
    assert code == 1, err  # the new run failed again
    assert "wait.finished" in err
    assert "\\x1b[2J" in err  # shown, escaped, at the default level
    assert not controls(err)
    assert out == ""


@pytest.mark.subprocess
async def test_config_show_escapes_the_users_own_text(tmp_path: Path) -> None:
    code, out, _ = await orchestrator(
        "config", "show", "--ledger", "l\x1b[2J.jsonl", "--summary-json", "s\u202e.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0
    assert not controls(out)
    assert "l\\x1b[2J.jsonl" in out
    assert "s\\u202e.json" in out
