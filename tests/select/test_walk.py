"""What `select` prints and how it pages, as pure logic: times, filters, and the walk over
offset pages that move while they are read."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.api.models import ExecutionsPage
from orchestrator.errors import PagingError
from orchestrator.select.walk import (
    EXTRA_PAGES,
    MAX_IDLE_PAGES,
    MAX_STEP_BACKS,
    Criteria,
    Fit,
    Listed,
    Page,
    Unreadable,
    Walk,
    parse_api_time,
    parse_time,
    read_item,
    read_page,
    workflow_problem,
)

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


# ---- times -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T09:10:00Z", datetime(2026, 3, 2, 9, 10, tzinfo=UTC)),
        ("2026-03-02T10:10:00+01:00", datetime(2026, 3, 2, 9, 10, tzinfo=UTC)),
        ("2026-03-02t09:10:00.5z", datetime(2026, 3, 2, 9, 10, 0, 500000, tzinfo=UTC)),
        ("2026-03-02 09:10:00Z", datetime(2026, 3, 2, 9, 10, tzinfo=UTC)),
        ("now", NOW),
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        (" 2H ", NOW - timedelta(hours=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("1d", NOW - timedelta(days=1)),
        ("1w", NOW - timedelta(weeks=1)),
        ("1h30m", NOW - timedelta(minutes=90)),
    ],
)
def test_a_time_is_rfc3339_or_a_span_back_from_now(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-03-02T09:10:00", "has no UTC offset"),
        ("yesterday", "is neither an RFC 3339 time"),
        ("-2h", "is neither an RFC 3339 time"),
        ("2 hours", "is neither an RFC 3339 time"),
        ("", "is neither an RFC 3339 time"),
        ("99999999999w", "is too far from now"),
    ],
)
def test_a_bad_time_is_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time(text, NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-02T09:10:00.123456Z", datetime(2026, 3, 2, 9, 10, 0, 123456, tzinfo=UTC)),
        ("2026-03-02T09:10:00.123456789Z", datetime(2026, 3, 2, 9, 10, 0, 123456, tzinfo=UTC)),
        ("2026-03-02T11:10:00+02:00", datetime(2026, 3, 2, 9, 10, tzinfo=UTC)),
        ("2026-03-02 09:10:00", datetime(2026, 3, 2, 9, 10, tzinfo=UTC)),  # naive: UTC
        ("not a time", None),
        ("", None),
        (None, None),
    ],
)
def test_api_timestamps_are_read_robustly(value: str | None, expected: datetime | None) -> None:
    assert parse_api_time(value) == expected


@given(st.datetimes(timezones=st.just(UTC), min_value=datetime(1971, 1, 1)))
def test_the_simulators_timestamp_format_reads_back_exactly(moment: datetime) -> None:
    assert parse_api_time(moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == moment


@given(st.text(max_size=40))
def test_no_text_makes_time_parsing_crash(text: str) -> None:
    parse_api_time(text)
    with contextlib.suppress(ValueError):
        parse_time(text, NOW)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("fl_w1un9427qd9afza5vpuemopj82", None),
        ("wf-2", None),
        ("", "is empty"),
        ("fl_run_abc", "is a run ID, not a workflow ID"),
        ("fl_a/../b", "may hold only"),
        ("fl_a?page=9", "may hold only"),
        ("fl_é", "may hold only"),
        ("x" * 129, "is longer than 128"),
    ],
)
def test_workflow_ids_are_checked_before_they_go_into_a_url(text: str, problem: str | None) -> None:
    found = workflow_problem(text)
    assert found == problem if problem is None else problem in (found or "")


# ---- what matches ----------------------------------------------------------------------


def run(n: int, at: datetime | None, status: str = "failed") -> Listed:
    return Listed(f"fl_run_r{n}", status, at, {"id": f"fl_run_r{n}"})


def test_since_after_until_is_refused() -> None:
    with pytest.raises(ValueError, match="must be before --until"):
        Criteria(since=NOW, until=NOW)


def test_the_window_includes_since_and_excludes_until() -> None:
    since, until = NOW - timedelta(hours=1), NOW
    criteria = Criteria(since=since, until=until)
    assert criteria.judge(run(1, since), None) is Fit.MATCH
    assert criteria.judge(run(2, until - timedelta(microseconds=1)), None) is Fit.MATCH
    assert criteria.judge(run(3, until), None) is Fit.OUTSIDE
    assert criteria.judge(run(4, since - timedelta(microseconds=1)), None) is Fit.OUTSIDE


def test_status_filter_takes_any_of_the_statuses_given() -> None:
    criteria = Criteria(statuses=frozenset({"failed", "awaiting_ui_interaction"}))
    assert criteria.judge(run(1, NOW, "failed"), None) is Fit.MATCH
    assert criteria.judge(run(2, NOW, "awaiting_ui_interaction"), None) is Fit.MATCH
    assert criteria.judge(run(3, NOW, "completed"), None) is Fit.STATUS
    assert criteria.judge(run(4, NOW, None), None) is Fit.STATUS


def test_an_undated_run_is_listed_only_without_a_window() -> None:
    assert Criteria().judge(run(1, None), None) is Fit.MATCH
    assert Criteria(since=NOW).judge(run(1, None), None) is Fit.UNDATED
    assert Criteria(until=NOW).judge(run(1, None), None) is Fit.UNDATED


def test_a_run_newer_than_the_horizon_arrived_while_paging() -> None:
    assert Criteria().judge(run(1, NOW + timedelta(seconds=1)), NOW) is Fit.ARRIVED
    assert Criteria().judge(run(2, NOW), NOW) is Fit.MATCH


def test_an_item_is_read_by_its_documented_fields_and_kept_as_sent() -> None:
    raw = {
        "id": "fl_run_a1",
        "status": "failed",
        "created_at": "2026-03-02T09:10:00.000000Z",
        "started_at": "2026-03-02T09:10:05.000000Z",
        "undocumented": {"kept": True},
    }
    assert read_item(raw) == Listed(
        "fl_run_a1", "failed", datetime(2026, 3, 2, 9, 10, tzinfo=UTC), raw
    )


def test_an_item_without_created_at_is_dated_by_started_at() -> None:
    item = read_item({"id": "fl_run_a1", "created_at": "junk", "started_at": "2026-03-02T09:10Z"})
    assert isinstance(item, Listed)
    assert item.at == datetime(2026, 3, 2, 9, 10, tzinfo=UTC)
    assert read_item({"id": "fl_run_a1"}) == Listed("fl_run_a1", None, None, {"id": "fl_run_a1"})


@pytest.mark.parametrize(
    ("raw", "reason", "run_id"),
    [
        ({"status": "failed"}, "id: Field required", None),
        ({"id": 7}, "id: Input should be a valid string", None),
        ({"id": "fl_run_a1", "error_message": []}, "error_message", "fl_run_a1"),
        ({"id": "not-a-run"}, "id is not a run ID", "not-a-run"),
        ("fl_run_a1", "Input should be a valid dictionary", None),
    ],
)
def test_an_unusable_item_is_unreadable_with_a_reason(
    raw: object, reason: str, run_id: str | None
) -> None:
    item = read_item(raw)
    assert isinstance(item, Unreadable)
    assert reason in item.reason
    assert item.id == run_id


def test_a_page_is_read_from_laravels_paginator() -> None:
    body = (
        b'{"data": [{"id": "fl_run_a1"}, 5], "links": {"next": "http://elsewhere/?page=3"},'
        b' "meta": {"current_page": 2, "last_page": 9, "per_page": 15, "total": 130, "x": 1}}'
    )
    page = read_page(2, ExecutionsPage.model_validate_json(body))
    assert page.items[0] == Listed("fl_run_a1", None, None, {"id": "fl_run_a1"})
    assert isinstance(page.items[1], Unreadable)
    assert (page.current_page, page.last_page, page.per_page, page.total) == (2, 9, 15, 130)
    assert page.has_next is True
    bare = read_page(1, ExecutionsPage.model_validate_json(b'{"data": []}'))
    assert (bare.has_next, bare.last_page, bare.total) == (None, None, None)


# ---- the walk, on hand-made pages ----------------------------------------------------------


def at(minutes_ago: float) -> datetime:
    return NOW - timedelta(minutes=minutes_ago)


def page(number: int, runs: list[Listed], **paging: object) -> Page:
    return Page(number, tuple(runs), **paging)  # type: ignore[arg-type]


def walk_all(walk: Walk, pages: dict[int, Page]) -> list[str]:
    printed: list[str] = []
    while walk.next_page is not None:
        printed += [r.id for r in walk.feed(pages[walk.next_page]).matches]
    return printed


def test_the_walk_stops_at_links_next_null() -> None:
    walk = Walk(Criteria())
    pages = {
        1: page(1, [run(1, at(1)), run(2, at(2))], has_next=True, last_page=2),
        2: page(2, [run(3, at(3))], has_next=False, last_page=2),
    }
    assert walk_all(walk, pages) == ["fl_run_r1", "fl_run_r2", "fl_run_r3"]
    assert walk.stats.pages == 2


def test_without_links_the_walk_follows_meta_last_page() -> None:
    pages = {1: page(1, [run(1, at(1))], last_page=2), 2: page(2, [run(2, at(2))], last_page=2)}
    assert walk_all(Walk(Criteria()), pages) == ["fl_run_r1", "fl_run_r2"]


def test_without_any_paging_info_the_walk_reads_until_an_empty_page() -> None:
    pages = {1: page(1, [run(1, at(1))]), 2: page(2, [run(2, at(2))]), 3: page(3, [])}
    walk = Walk(Criteria())
    assert walk_all(walk, pages) == ["fl_run_r1", "fl_run_r2"]
    assert walk.stats.pages == 3


def test_the_walk_stops_after_the_first_page_wholly_older_than_since() -> None:
    """The boundary page is read to its end; the page after it is all older: stop there."""
    walk = Walk(Criteria(since=at(10)))
    pages = {
        1: page(1, [run(1, at(1)), run(2, at(5))], has_next=True),
        2: page(2, [run(3, at(9)), run(4, at(11))], has_next=True),
        3: page(3, [run(5, at(12)), run(6, at(13))], has_next=True),
    }
    assert walk_all(walk, pages) == ["fl_run_r1", "fl_run_r2", "fl_run_r3"]
    assert walk.stats.pages == 3


def test_undated_runs_do_not_stop_the_walk() -> None:
    walk = Walk(Criteria(since=at(10)))
    pages = {
        1: page(1, [run(1, at(1)), run(2, None)], has_next=True),
        2: page(2, [run(3, None), run(4, at(11))], has_next=True),
        3: page(3, [], has_next=False),
    }
    fed = [walk.feed(pages[n]) for n in (1, 2)]
    assert walk.next_page is None  # page 2's only dated run is older than since
    assert [r.id for f in fed for r in f.undated] == ["fl_run_r2", "fl_run_r3"]
    assert walk.stats.undated == 2


def test_a_page_shifted_by_new_runs_repeats_nothing() -> None:
    walk = Walk(Criteria())
    first = page(1, [run(1, at(1)), run(2, at(2)), run(3, at(3))], has_next=True)
    # Two runs joined on top: page 2 now starts with the last two of page 1.
    second = page(2, [run(2, at(2)), run(3, at(3)), run(4, at(4))], has_next=False)
    assert walk_all(walk, {1: first, 2: second}) == [
        "fl_run_r1",
        "fl_run_r2",
        "fl_run_r3",
        "fl_run_r4",
    ]
    assert walk.stats.repeats == 2


def test_a_shrinking_list_is_read_back_so_nothing_slides_past() -> None:
    walk = Walk(Criteria())
    assert walk.feed(page(1, [run(1, at(1)), run(2, at(2))], has_next=True, total=6)).matches
    # Run 2 was deleted: run 3 slid up onto page 1, already read.
    walk.feed(page(2, [run(4, at(4)), run(5, at(5))], has_next=True, total=5, per_page=2))
    assert walk.next_page == 1
    fed = walk.feed(page(1, [run(1, at(1)), run(3, at(3))], has_next=True, total=5, per_page=2))
    assert [r.id for r in fed.matches] == ["fl_run_r3"]
    assert walk.next_page == 2
    assert walk.stats.stepped_back == 1


def test_a_page_answering_another_number_is_a_paging_error() -> None:
    walk = Walk(Criteria())
    walk.feed(page(1, [run(1, at(1))], current_page=1, has_next=True))
    with pytest.raises(PagingError, match="asked for page 2, the server answered with page 1"):
        walk.feed(page(2, [run(1, at(1))], current_page=1, has_next=True))


def test_a_server_that_ignores_the_page_number_is_caught() -> None:
    walk = Walk(Criteria())
    same = [run(1, at(1)), run(2, at(2))]
    for number in range(1, MAX_IDLE_PAGES + 1):
        walk.feed(page(number, same, has_next=True))
    with pytest.raises(PagingError, match="brought no run not already read"):
        walk.feed(page(MAX_IDLE_PAGES + 1, same, has_next=True))


def test_pages_going_on_past_the_announced_last_page_are_caught() -> None:
    walk = Walk(Criteria())
    for number in range(1, 3 + EXTRA_PAGES + 1):
        walk.feed(page(number, [run(number, at(number))], has_next=True, last_page=3))
    beyond = 3 + EXTRA_PAGES + 1
    with pytest.raises(PagingError, match="said there were at most 3"):
        walk.feed(page(beyond, [run(beyond, at(beyond))], has_next=True, last_page=3))


def test_a_list_that_keeps_shrinking_is_caught() -> None:
    walk = Walk(Criteria())
    shrinking = iter(range(10_000, 0, -1))

    def feed_next() -> None:
        total = next(shrinking)
        number = walk.next_page
        assert number is not None
        walk.feed(page(number, [run(total, at(1))], has_next=True, total=total, per_page=1))

    while walk.stats.stepped_back < MAX_STEP_BACKS:
        feed_next()
    if walk.next_page == 1:  # page 1 has nothing before it to step back to
        feed_next()
    with pytest.raises(PagingError, match="shrank"):
        feed_next()


# ---- the walk against a model of a list that moves while it is read ----------------------


@dataclass
class MovingList:
    """A newest-first list served in offset pages, like the executions endpoint."""

    per_page: int
    runs: list[Listed] = field(default_factory=list)
    made: int = 0

    def add(self, count: int) -> list[str]:
        new = [run(self.made + i, NOW + timedelta(seconds=self.made + i)) for i in range(count)]
        self.made += count
        self.runs[:0] = reversed(new)
        return [r.id for r in new]

    def page(self, number: int) -> Page:
        start = (number - 1) * self.per_page
        total = len(self.runs)
        last_page = max(1, -(-total // self.per_page))
        return Page(
            number,
            tuple(self.runs[start : start + self.per_page]),
            current_page=number,
            last_page=last_page,
            per_page=self.per_page,
            total=total,
            has_next=number < last_page,
        )


# Between two page reads: nothing, `n` new runs on top, or `n` runs deleted anywhere.
_moves = st.lists(
    st.one_of(
        st.just(("none", 0)),
        st.tuples(st.just("add"), st.integers(1, 30)),
        st.tuples(st.just("delete"), st.integers(1, 12)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(0, 120),
    per_page=st.integers(1, 12),
    moves=_moves,
    since_index=st.none() | st.integers(0, 130),
    seed=st.integers(0, 2**16),
)
def test_a_moving_list_prints_each_run_once_and_skips_none_that_stayed(
    start: int,
    per_page: int,
    moves: list[tuple[str, int]],
    since_index: int | None,
    seed: int,
) -> None:
    """Runs join on top and are deleted anywhere between reads (never both at once: offset
    pages cannot show that). Every run there from start to end and inside the window is
    printed, once; no run that joined after the first read is printed."""
    rng = random.Random(seed)
    listing = MovingList(per_page)
    listing.add(start)
    at_start = list(listing.runs)
    since = None
    if since_index is not None and at_start:
        since = at_start[min(since_index, len(at_start) - 1)].at
    walk = Walk(Criteria(since=since))
    printed: list[str] = []
    joined: set[str] = set()
    deleted: set[str] = set()
    moves_left = list(moves)
    reads = 0
    while walk.next_page is not None:
        reads += 1
        assert reads < 10_000, "the walk does not end"
        try:
            fed = walk.feed(listing.page(walk.next_page))
        except PagingError:
            # Only adds of a page or more each time may starve progress; that is the guard.
            assert any(kind == "add" and n >= per_page for kind, n in moves)
            return
        printed += [r.id for r in fed.matches]
        kind, n = moves_left.pop(0) if moves_left else ("none", 0)
        if kind == "add":
            joined.update(listing.add(n))
        elif kind == "delete":
            for _ in range(min(n, len(listing.runs))):
                deleted.add(listing.runs.pop(rng.randrange(len(listing.runs))).id)
    assert len(printed) == len(set(printed))
    assert not set(printed) & joined
    stayed = {r.id for r in at_start if r.id not in deleted and (since is None or r.at >= since)}
    assert stayed <= set(printed)
    in_window = {r.id for r in at_start if since is None or r.at >= since}
    assert set(printed) <= in_window


def test_reading_a_list_that_only_grows_never_steps_back() -> None:
    listing = MovingList(per_page=5)
    listing.add(40)
    at_start = [r.id for r in listing.runs]
    walk = Walk(Criteria())
    printed: list[str] = []
    while walk.next_page is not None:
        printed += [r.id for r in walk.feed(listing.page(walk.next_page)).matches]
        listing.add(3)
    assert printed == at_start
    assert walk.stats.stepped_back == 0
    assert walk.stats.repeats > 0


def test_a_timezone_other_than_utc_compares_as_the_same_instant() -> None:
    paris = timezone(timedelta(hours=1))
    criteria = Criteria(since=datetime(2026, 3, 2, 10, 10, tzinfo=paris))
    assert criteria.judge(run(1, datetime(2026, 3, 2, 9, 10, tzinfo=UTC)), None) is Fit.MATCH
