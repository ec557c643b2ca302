"""The rate-limit matrix of `make bench`: its rows, ideal spans, judging and log reading."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from benchmarks.ratelimit import CpuSampler, run_rows
from benchmarks.ratematrix import (
    Outcome,
    Row,
    best_span,
    control_row,
    efficiency,
    matrix,
    misses,
    pick,
)
from benchmarks.serverlog import Arrival, recovery_s, reruns, seen

ROWS = matrix()


def row(label: str) -> Row:
    (found,) = [r for r in ROWS if r.label == label]
    return found


def test_the_matrix_has_every_row_the_issue_asks_for() -> None:
    kinds = [r.kind for r in ROWS]
    assert kinds.count("unknown") == 8 * 2 * 2 * 2
    assert kinds.count("known") == 8
    assert (kinds.count("control"), kinds.count("procs"), kinds.count("background")) == (1, 4, 4)
    assert len({r.label for r in ROWS}) == len(ROWS)
    shapes = {r.shape.name for r in ROWS if r.kind == "unknown" and r.limit == 2.0}
    assert shapes == {
        "gcra-b0",
        "gcra-b1",
        "gcra-b10",
        "gcra-b2",
        "fixed-window",
        "sliding-log",
        "sliding-counter",
        "sliding-log-refused",
    }


def test_a_row_is_its_server_and_client_flags() -> None:
    unknown = row("unknown sliding-log-refused 2/s hdr=none ra=off")
    assert unknown.server == (
        "--rate", "2/s", "--limiter", "sliding-log", "--window", "1", "--count-refused",
        "--rate-limit-headers", "none", "--no-retry-after",
    )  # fmt: skip
    assert (unknown.client, unknown.ids, unknown.procs) == (("--rate", "none"), 150, 1)
    procs = row("procs 4x300 gcra-b5 10/s hdr=x ra=on --rate 10/s")
    assert (procs.server, procs.client) == (("--rate", "10/s", "--burst", "5"), ("--rate", "10/s"))
    assert procs.total_ids == 1_200


@pytest.mark.parametrize(
    ("label", "ideal"),
    [
        ("unknown gcra-b0 50/s hdr=x ra=on", 999 / 50),
        ("unknown gcra-b10 50/s hdr=x ra=on", 989 / 50),
        ("unknown gcra-b50 50/s hdr=x ra=on", 949 / 50),
        ("unknown fixed-window 50/s hdr=x ra=on", 950 / 50),
        ("unknown gcra-b0 2/s hdr=x ra=on", 74.5),  # the issue's own figure
        ("procs 2x300 gcra-b5 10/s hdr=x ra=on --rate 10/s", 594 / 10),
        # 989 left after the burst: 25/s for 8 s, then 50/s.
        ("background gcra-b10 50/s hdr=x ra=on load=25/s for 8 s", 8 + (989 - 200) / 50),
        ("background gcra-b0 2/s hdr=x ra=on load=1/s for 30 s", 30 + (149 - 30) / 2),
    ],
)
def test_ideal_span(label: str, ideal: float) -> None:
    assert row(label).ideal_s() == pytest.approx(ideal)


def test_the_ideal_of_a_sliding_counter_is_what_it_lets_through_at_best() -> None:
    """Two a 1 s window weighs the last window's two into the next: a client never gets
    more than one a second through, so 150 IDs take 148 s at best, not 74; and at 50 a
    second, 20.37 s for 1,000, not 19 (a client at the formula's pace would meet 429s)."""
    assert row("unknown sliding-counter 2/s hdr=x ra=on").ideal_s() == pytest.approx(148.0)
    assert row("unknown sliding-counter 50/s hdr=x ra=on").ideal_s() == pytest.approx(
        20.37, abs=0.01
    )
    assert best_span(2.0, 2) < 0.1  # from idle, the window's two at once
    # The other shapes' formula is what such a client gets too (checked once, by hand).
    assert row("unknown sliding-log 2/s hdr=x ra=on").ideal_s() == pytest.approx(74.0)


def test_ideal_with_background_that_outlasts_the_work() -> None:
    background = row("background gcra-b10 50/s hdr=x ra=on load=25/s for 8 s")
    assert background.ideal_s(done=111) == pytest.approx(100 / 25)


def test_pick_matches_labels_by_regular_expression() -> None:
    burst_0 = pick(ROWS, ["gcra-b0 "])
    assert len(burst_0) == 8 + 1 + 2  # unknown (2 limits x 2 x 2), known, background
    assert all("gcra-b0 " in r.label for r in burst_0)
    assert {r.kind for r in pick(ROWS, ["^procs", "^control"])} == {"procs", "control"}
    assert len(pick(ROWS, ["sliding-log "])) == 8 + 1
    assert pick(ROWS, []) == ROWS


def _outcome(**kwargs: Any) -> Outcome:
    fields: dict[str, Any] = {"span_s": 20.0, "share_429": 0.0, "done": 1_000, "timed_out": False}
    return Outcome(**(fields | kwargs))


def test_judging_single_rows() -> None:
    unknown = row("unknown gcra-b0 50/s hdr=x ra=on")  # ideal 19.98 s
    assert misses(unknown, _outcome(span_s=21.0)) == []
    assert misses(unknown, _outcome(span_s=21.1, share_429=0.021)) == [
        "efficiency 0.95",
        "429s 2.1%",
    ]
    assert misses(unknown, _outcome(span_s=120.0, done=552, timed_out=True)) == [
        "timed out: 552 of 1,000",
        "efficiency 0.09",
    ]
    assert efficiency(unknown, _outcome(span_s=120.0, done=552)) == pytest.approx(551 / 50 / 120)
    known = row("known gcra-b1 50/s hdr=none ra=on --rate 50/s")
    assert misses(known, _outcome(span_s=19.97, share_429=0.01)) == ["429s 1.0%"]  # below 1%


def test_judging_the_control_procs_and_background_rows() -> None:
    # Its opening burst (45 at once: a second of its rate), then 45/s.
    control = control_row()
    assert misses(control, _outcome(span_s=954 / 45 * 1.01)) == []
    assert misses(control, _outcome(span_s=954 / 45 * 1.03, share_429=0.001)) == [
        "span +3.0%",
        "429s 0.1%",
    ]
    procs = row("procs 2x1000 gcra-b10 50/s hdr=x ra=on --rate 50/s")
    fine = _outcome(span_s=44.0, done=2_000, ratio=1.5)
    assert misses(procs, fine) == []
    assert misses(procs, _outcome(span_s=44.0, done=2_000, ratio=1.7)) == ["1.70x"]
    background = row("background gcra-b0 2/s hdr=x ra=on load=1/s for 30 s")
    assert misses(background, _outcome(span_s=95.0, done=150, recovery_s=12.0)) == []
    assert misses(background, _outcome(span_s=95.0, done=150, recovery_s=None)) == ["never back"]


LOG = {
    "total": 6,
    "fields": ["at", "method", "path", "run_id", "status", "fault"],
    "rows": [
        [10.0, "POST", "/workflows/runs/a/rerun", "a", 202, None],
        [10.1, "POST", "/workflows/runs/b/rerun", "b", 429, None],
        [10.2, "GET", "/workflows/runs/a", "a", 200, None],
        [11.0, "POST", "/workflows/runs/b/rerun", "b", 202, None],
        [11.5, "POST", "/workflows/runs/c/rerun", "c", 500, "500"],
        [12.5, "POST", "/workflows/runs/c/rerun", "c", 202, None],
    ],
}


def test_reading_the_request_log() -> None:
    arrivals = reruns(LOG)
    assert [a.run_id for a in arrivals] == ["a", "b", "b", "c", "c"]
    everyone = seen(arrivals)
    assert (everyone.requests, everyone.refused, everyone.accepted_ids) == (5, 1, 3)
    assert everyone.span_s() == pytest.approx(2.5)
    assert everyone.span_s(until=20.0) == pytest.approx(10.0)
    assert everyone.share_429 == pytest.approx(0.2)
    b = seen(arrivals, {"b"})
    assert (b.first, b.last, b.span_s()) == (10.1, 11.0, pytest.approx(0.9))
    assert seen(arrivals, set()).span_s() == 0.0


def test_a_log_that_lost_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="kept 6 of 9"):
        reruns(LOG | {"total": 9})


def test_recovery_is_when_a_sliding_window_reaches_the_level() -> None:
    # 2 a second accepted until 10 s, 4 a second after: the limit is 4.
    slow = [Arrival(t / 2, "x", 202) for t in range(20)]
    fast = [Arrival(10 + t / 4, "x", 202) for t in range(40)]
    refused = [Arrival(10.1, "y", 429)] * 5
    arrivals = slow + refused + fast
    # The 1 s window ending at 10.75 holds 10.0 .. 10.75: 4 >= 3.6; the 5 s one, ending at
    # 13.75, holds 9.0, 9.5 and 16 after the stop: 18 >= 18.
    assert recovery_s(arrivals, 10.0, 4.0, 1.0, 0.9) == pytest.approx(0.75)
    assert recovery_s(arrivals, 10.0, 4.0, 5.0, 0.9) == pytest.approx(3.75)
    assert recovery_s(arrivals, 10.0, 8.0, 1.0, 0.9) is None


def test_cpu_peak_is_the_busiest_stretch_and_when_it_began() -> None:
    sampler = CpuSampler()
    sampler.samples = [0.1] * 10 + [0.9] * 5 + [0.2] * 3
    assert sampler.peak() == (pytest.approx(0.9), 10)
    assert sampler.mean == pytest.approx((1.0 + 4.5 + 0.6) / 18)
    assert CpuSampler().peak() == (0.0, 0)


def test_rows_with_no_burst_at_10_per_s_or_more_run_alone_and_first(tmp_path: Path) -> None:
    """A limiter with no burst measures the machine's timing: no other row runs beside
    such a row, and they come first."""
    alone = [r for r in ROWS if r.alone]
    assert {r.label for r in alone} == {
        r.label for r in pick(ROWS, ["gcra-b0 50/s"]) if r.kind in ("unknown", "known")
    }
    rows = [*alone[:2], *pick(ROWS, ["^unknown gcra-b10 50/s", "^unknown gcra-b10 2/s"])]
    lock = threading.Lock()
    running: list[Row] = []
    seen_beside: list[list[str]] = []
    order: list[str] = []

    def run(one: Row, work: Path, runner: object) -> str:
        with lock:
            order.append(one.label)
            running.append(one)
            seen_beside.append([r.label for r in running if r is not one])
        with lock:
            running.remove(one)
        return one.label

    results = run_rows(rows, tmp_path, 4, lambda result: None, run)
    assert results == [r.label for r in rows]
    assert order[:2] == [r.label for r in alone[:2]]
    for label, beside in zip(order, seen_beside, strict=True):
        if label in {r.label for r in alone}:
            assert beside == []
