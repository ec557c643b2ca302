"""Ledgers written by hand for the report tests: records of sessions, successes and
failures at chosen seconds, as lines or as a file."""

from __future__ import annotations

from pathlib import Path

from orchestrator.ledger.records import (
    AttemptFailed,
    Dispatched,
    Failed,
    Rejected,
    SessionEnded,
    SessionStarted,
    Succeeded,
)


def ledger_lines(records: list[object]) -> list[bytes]:
    return [r.model_dump_json().encode() + b"\n" for r in records]  # type: ignore[attr-defined]


def two_sessions() -> list[object]:
    return [
        *session(1, 0),
        *ok("fl_run_a", 0.1, 0.2),
        *fail("fl_run_b", 0.3, 0.35),
        *fail("fl_run_c", 0.4, 0.5, error="client_error"),
        Rejected(at=at(0.5), line=4, reason="bad_prefix", input="nope"),
        Dispatched(at=at(0.6), original_run_id="fl_run_d", attempt=1),
        AttemptFailed(
            at=at(1.6),
            original_run_id="fl_run_d",
            attempt=1,
            http_status=None,
            error="timeout",
            resendable=False,
        ),
        SessionEnded(at=at(2.0), exit_code=130, reason="sigint"),
        # The next session: b is retried and succeeds; the same bad line is rejected again.
        *session(2, 10),
        *ok("fl_run_b", 10.5, 10.6),
        Rejected(at=at(10.6), line=4, reason="bad_prefix", input="nope"),
        SessionEnded(at=at(11.0), exit_code=1, reason="completed"),
    ]


def write_ledger(path: Path, records: list[object]) -> Path:
    path.write_bytes(b"".join(ledger_lines(records)))
    return path


def at(second: float) -> str:
    whole, frac = divmod(second, 1)
    return f"2026-01-01T00:00:{int(whole):02d}.{round(frac * 1000):03d}Z"


def session(n: int, start: float) -> list[object]:
    return [SessionStarted(at=at(start), version="0", source="ids.txt", pid=n)]


def ok(run_id: str, sent: float, answered: float, attempt: int = 1) -> list[object]:
    return [
        Dispatched(at=at(sent), original_run_id=run_id, attempt=attempt),
        Succeeded(
            at=at(answered),
            original_run_id=run_id,
            new_run_id=run_id + "new",
            new_run_status="pending",
            http_status=202,
            attempts=attempt,
        ),
    ]


def fail(run_id: str, sent: float, answered: float, error: str = "not_found") -> list[object]:
    return [
        Dispatched(at=at(sent), original_run_id=run_id, attempt=1),
        Failed(at=at(answered), original_run_id=run_id, http_status=404, error=error, attempts=1),
    ]
