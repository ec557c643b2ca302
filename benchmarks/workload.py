"""What the benchmark feeds the orchestrator: files of run IDs, and a ledger to resume from.

IDs look like the API's (`fl_run_` + 26 lowercase letters and digits), are distinct, and
are the same for the same seed. The ledger is made of the ledger module's own records,
so its lines are exactly what a real session writes.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from orchestrator.ledger.records import (
    AttemptFailed,
    Dispatched,
    Failed,
    SessionEnded,
    SessionStarted,
    Succeeded,
)

_SUFFIX: Final = 26
_STAMP: Final = "2026-11-30T03:56:26.417Z"
_PLACEHOLDER: Final = "fl_run_PLACEHOLDER"
_CHUNK: Final = 50_000


def run_ids(count: int, seed: int) -> Iterator[str]:
    """`count` run IDs, a function of `seed` alone; 130 random bits each, so all distinct
    (a repeat among ten million is a one-in-10^22 event)."""
    rng = random.Random(seed)
    for made in range(0, count, _CHUNK):
        take = min(_CHUNK, count - made)
        # 20 random bytes are 32 base32 characters (a-z, 2-7): keep 26 of them.
        blob = base64.b32encode(rng.randbytes(20 * take)).decode("ascii").lower()
        for at in range(0, 32 * take, 32):
            yield "fl_run_" + blob[at : at + _SUFFIX]


def write_ids(path: Path, count: int, seed: int) -> Path:
    with path.open("w", encoding="ascii") as out:
        for run_id in run_ids(count, seed):
            out.write(run_id + "\n")
    return path


def _line(record: object) -> str:
    dump = getattr(record, "model_dump_json")  # noqa: B009 - any ledger record
    return str(dump()) + "\n"


def _templates() -> dict[str, str]:
    """One finished ledger line per kind of record, with a placeholder for the run ID."""
    at, rid = _STAMP, _PLACEHOLDER
    return {
        "dispatched": _line(Dispatched(at=at, original_run_id=rid, attempt=1)),
        "redispatched": _line(Dispatched(at=at, original_run_id=rid, attempt=2)),
        "rate_limited": _line(
            AttemptFailed(
                at=at,
                original_run_id=rid,
                attempt=1,
                http_status=429,
                error="rate_limited",
                resendable=True,
            )
        ),
        "succeeded": _line(
            Succeeded(
                at=at,
                original_run_id=rid,
                new_run_id="fl_run_7wjtmoiiojxa74vmv0yoxr40rz",
                new_run_status="pending",
                http_status=202,
                attempts=1,
            )
        ),
        "not_found": _line(
            Failed(at=at, original_run_id=rid, http_status=404, error="not_found", attempts=1)
        ),
    }


# How the IDs of a long recovery end up, out of 100, and the records each leaves.
_FATES: Final = (
    (90, ("dispatched", "succeeded")),
    (5, ("dispatched", "rate_limited", "redispatched", "succeeded")),
    (3, ("dispatched", "not_found")),
    (2, ("dispatched",)),  # in doubt: the session was killed while it was in flight
)
_SESSION_LINES: Final = 100_000


def write_ledger(path: Path, lines: int, seed: int) -> int:
    """A ledger of exactly `lines` lines, as sessions of a long recovery leave it.

    Returns how many distinct IDs it holds (about one per 2.1 lines)."""
    templates = _templates()
    start = _line(SessionStarted(at=_STAMP, version="0.1.0", source="ids.txt", pid=4242))
    end = _line(SessionEnded(at=_STAMP, exit_code=1, reason="sigterm"))
    fates = [kinds for weight, kinds in _FATES for _ in range(weight)]
    rng = random.Random(seed)
    written = ids = next_session = 0
    with path.open("w", encoding="ascii") as out:
        for run_id in run_ids(lines, seed):
            if written >= next_session:
                out.write(start)
                written += 1
                next_session += _SESSION_LINES
            kinds = rng.choice(fates)
            if written + len(kinds) + 1 > lines:
                break
            out.write("".join(templates[k] for k in kinds).replace(_PLACEHOLDER, run_id))
            written += len(kinds)
            ids += 1
        while written < lines:
            out.write(end)
            written += 1
    return ids
