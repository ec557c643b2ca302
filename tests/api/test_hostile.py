"""Hostile and broken answers: no answer at all, headers with garbage in them, a 202 that
names no valid run. Each holds through the real CLI, in a subprocess, against a raw
server (tests/helpers/hostileserver.py); the header parsing also under hypothesis."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.api.headers import ignored_headers, parse_retry_after, rate_hint
from orchestrator.api.outcomes import Answer, classify_status
from orchestrator.pacing.pacer import Pacer
from tests.helpers.clikit import run_cli
from tests.helpers.fakeclock import FakeClock
from tests.helpers.hostileserver import CUT, SILENT, accepted, hostile_server, respond

TOKEN = "hostile-test-token-0123456789-padded-to-look-like-a-real-jwt"
IDS = [f"fl_run_h{n:04d}" for n in range(4)]


async def cli(*args: str, cwd: Path, stdin: bytes = b"") -> tuple[int, str, str]:
    return await run_cli(*args, cwd=cwd, stdin=stdin, token=TOKEN, ORCHESTRATOR_LOG_FORMAT="json")


def ledger_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def ids_file(tmp_path: Path, ids: list[str] = IDS) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


async def test_no_answer_leaves_the_id_in_doubt_and_retry_failed_does_not_resend_it(
    tmp_path: Path,
) -> None:
    """The server reads each request and never answers (`--timeout 1 --max-attempts 1`,
    as seen): in doubt, listed by `report --ids in-doubt`, and not sent again by the retry
    of failed IDs."""
    async with hostile_server(lambda n, line: SILENT) as server:
        code, _, err = await cli(
            "rerun", str(ids_file(tmp_path)), "--base-url", server.base_url,
            "--timeout", "0.5", "--max-attempts", "1", "--rate", "none", cwd=tmp_path,
        )  # fmt: skip
        sent = len(server.requests)
        assert (code, sent) == (1, len(IDS)), err
        _, listed, _ = await cli("report", "rerun-ledger.jsonl", "--ids", "in-doubt", cwd=tmp_path)
        assert sorted(listed.split()) == IDS
        _, failed, _ = await cli("report", "rerun-ledger.jsonl", "--ids", "failed", cwd=tmp_path)
        assert failed == ""
        code, _, _ = await cli(
            "rerun", str(ids_file(tmp_path)), "--base-url", server.base_url,
            "--retry-failed", "--rate", "none", cwd=tmp_path,
        )  # fmt: skip
        assert len(server.requests) == sent  # nothing resent
    last = {
        r["original_run_id"]: r
        for r in ledger_records(tmp_path / "rerun-ledger.jsonl")
        if "original_run_id" in r
    }
    assert {r["event"] for r in last.values()} == {"attempt_failed"}
    assert all(r["resendable"] is False and r["error"] == "timeout" for r in last.values())


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "²"},
        {"Retry-After": "Mon, 99 Foo 99999 00:00:00 GMT"},
        {"Retry-After": "-1"},
        {"RateLimit-Policy": "0;w=60"},
        {"RateLimit-Policy": "10;w=0"},
        {"RateLimit-Policy": '"p";q=1e308;w=1'},
        {"X-RateLimit-Limit": "9" * 5000},
        {"X-RateLimit-Limit": "0", "X-RateLimit-Remaining": "-5"},
        {"X-RateLimit-Limit": "٣٠"},
        {"RateLimit": "r=" + "9" * 5000},
    ],
    ids=lambda h: next(iter(h.items()))[0] + "=" + next(iter(h.values()))[:12],
)
@pytest.mark.parametrize("rate", ["none", "20/s"])
async def test_garbage_in_rate_limit_headers_never_crashes_the_run(
    tmp_path: Path, headers: dict[str, str], rate: str
) -> None:
    """Each ID meets one 429 with the garbage header, then a 202 carrying it too: every
    ID ends succeeded, the session ends, and the exit code says so."""

    def answer(n: int, line: str) -> bytes:
        if n % 2:
            return respond(429, b"{}", headers)
        run_id = line.split("/")[3]
        body = json.dumps({"new_run": {"id": run_id + "x", "status": "pending"}}).encode()
        return respond(202, body, headers)

    async with hostile_server(answer) as server:
        code, _, err = await cli(
            "rerun", str(ids_file(tmp_path)), "--base-url", server.base_url,
            "--rate", rate, "--concurrency", "1", "--max-attempts", "3",
            "--log-level", "debug", cwd=tmp_path,
        )  # fmt: skip
    assert code == 0, err
    assert "internal error" not in err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    ignored = [e["header"] for e in events if e["event"] == "api.header_ignored"]
    assert sorted(ignored) == sorted(headers)  # each garbage header logged, and only once
    records = ledger_records(tmp_path / "rerun-ledger.jsonl")
    assert sorted(str(r["original_run_id"]) for r in records if r["event"] == "succeeded") == IDS
    assert records[-1]["event"] == "session_ended"


@pytest.mark.parametrize(
    "new_run_id",
    [
        "",
        "x" * 10_000,
        "../../admin",
        '=HYPERLINK("http://evil")',
        "fl_run_\x1b[2J\x1b]0;owned\x07",
    ],
    ids=["empty", "10kB", "path", "formula", "escapes"],
)
async def test_a_202_naming_no_valid_run_leaves_the_id_in_doubt_with_the_raw_value_escaped(
    tmp_path: Path, new_run_id: str
) -> None:
    async with hostile_server(lambda n, line: accepted(new_run_id)) as server:
        code, out, err = await cli(
            "rerun", str(ids_file(tmp_path, IDS[:1])), "--base-url", server.base_url,
            "--rate", "none", cwd=tmp_path,
        )  # fmt: skip
        assert len(server.requests) == 1
    assert code == 1
    ledger = (tmp_path / "rerun-ledger.jsonl").read_bytes()
    assert b"\x1b" not in ledger
    (record,) = [
        r for r in ledger_records(tmp_path / "rerun-ledger.jsonl") if r["event"] == "attempt_failed"
    ]
    assert (record["http_status"], record["error"], record["resendable"]) == (
        202,
        "bad_response",
        False,
    )
    assert isinstance(record["raw"], str)
    assert len(record["raw"]) <= 200
    assert "\x1b" not in out + err


GATEWAY_PAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@pytest.mark.parametrize(
    "reply",
    [CUT, respond(502, GATEWAY_PAGE, {"Content-Type": "text/html"}), respond(504, b"")],
    ids=["cut", "502", "504"],
)
async def test_a_connection_cut_after_sending_or_a_gateway_error_leaves_the_id_in_doubt(
    tmp_path: Path, reply: bytes
) -> None:
    """The server may have acted on the request: in doubt at once, never resent."""
    async with hostile_server(lambda n, line: reply) as server:
        code, _, _ = await cli(
            "rerun", str(ids_file(tmp_path, IDS[:2])), "--base-url", server.base_url,
            "--rate", "none", cwd=tmp_path,
        )  # fmt: skip
        assert len(server.requests) == 2  # each sent once, never again
    assert code == 1
    _, listed, _ = await cli("report", "rerun-ledger.jsonl", "--ids", "in-doubt", cwd=tmp_path)
    assert sorted(listed.split()) == IDS[:2]


header_values = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"[0-9]{1,40}", fullmatch=True),
    st.from_regex(r'("?[a-z]*"?;)?q?=?[0-9]{0,30};w=[0-9]{0,30}', fullmatch=True),
)
header_names = st.sampled_from(
    [
        "Retry-After",
        "RateLimit-Policy",
        "RateLimit",
        "RateLimit-Remaining",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    headers=st.dictionaries(header_names, header_values, max_size=6),
    status=st.sampled_from([200, 202, 429, 500, 502, 503, 504]),
)
def test_no_header_value_makes_parsing_or_pacing_raise(
    headers: dict[str, str], status: int
) -> None:
    hint = rate_hint(headers)
    ignored_headers(headers)
    if hint is not None and hint.per_second is not None:
        assert math.isfinite(hint.per_second)
        assert 0 < hint.per_second <= 1e5
    retry_after = parse_retry_after(headers.get("Retry-After"))
    assert retry_after is None or 0 <= retry_after <= 300
    classify_status(status, headers.get("Retry-After"))
    clock = FakeClock()
    for ceiling in (None, 5.0):
        pacer = Pacer(ceiling, clock)
        pacer.observe(Answer(throttled=status == 429, hint=hint), retry_after)
        pacer.observe(Answer(hint=hint))
        assert pacer.bucket.per_second is None or pacer.bucket.per_second > 0


def test_headers_that_read_well_are_not_called_ignored() -> None:
    headers = {
        "Retry-After": "1",
        "RateLimit-Policy": '"p";q=60;w=60',
        "RateLimit": '"p";r=12;t=30',
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "0",
        "RateLimit-Remaining": "7",
    }
    assert ignored_headers(headers) == []
