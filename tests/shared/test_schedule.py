"""The token's rate budget shared between runs: the local store, through the real pacer,
engine and simulator, in virtual time. (tests/shared/test_localstore.py tests the store itself
across real processes; tests/shared/test_redisstore.py the Redis store.)"""

from __future__ import annotations

import io
import itertools
import os
import random
import socket
import sqlite3
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from orchestrator.api.outcomes import Answer
from orchestrator.commands.rerun import FLAGS
from orchestrator.errors import ConfigError, ExitCode, StoreError
from orchestrator.outcome import Summary, exit_code, summary
from orchestrator.pacing.clock import RealClock
from orchestrator.pacing.opening import OPENING_S
from orchestrator.pacing.pacer import TRUST_S, Pacer
from orchestrator.select.session import SelectPlumbing, SelectSettings, run_select
from orchestrator.select.session import summary as select_summary
from orchestrator.select.walk import Criteria
from orchestrator.settings import load_settings
from orchestrator.shared.localstore import FILE_NAME, LocalStore
from orchestrator.shared.schedule import SharedSchedule
from orchestrator.shared.store import (
    BudgetReport,
    Grant,
    How,
    SharedLimit,
    StoreSpec,
    fingerprint,
    state_directory,
)
from orchestrator.simulator import RunningSimulator, SimConfig
from orchestrator.ui.metrics import render_metrics
from tests.helpers.fakeclock import FakeClock
from tests.helpers.rerunkit import Outcome, make_ids, rerun
from tests.helpers.sharedkit import pacers_on_one_store

# Runs here share the loop with nothing but their simulator: time may jump sooner.
QUICK = 0.001


def _posts(sim: RunningSimulator) -> list[float]:
    return [e.at for e in sim.state.request_log if e.method == "POST"]


def _most_in_a_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))


async def test_two_runs_on_one_token_share_the_limit_and_never_exceed_it(tmp_path: Path) -> None:
    """Each says --rate 10/s against a limit of 10/s with no burst: together they send at
    10/s, not 20, so no request is refused but the opening's one request over the rate
    (test_opening), and they take turns, so both end together."""
    config = SimConfig(
        accept_any=True, rate=10.0, burst=0, rate_limit_headers="none", request_log_limit=10_000
    )
    clock = FakeClock(autojump=False)
    done: dict[str, Outcome] = {}
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven(QUICK):

        async def one(name: str) -> None:
            # fsync in a thread looks idle to the virtual clock, which would then jump
            # time past a request about to leave: no fsync here, the bench has them.
            done[name] = await rerun(
                sim,
                tmp_path / f"{name}.jsonl",
                make_ids(40, name),
                clock=clock,
                rate="10/s",
                fsync="never",
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "a")
            tg.start_soon(one, "b")
    posts = [e for e in sim.state.request_log if e.method == "POST"]
    assert all(exit_code(d.result) == ExitCode.OK for d in done.values())
    assert Counter(e.status for e in posts) == Counter({202: 80, 429: 1})
    assert posts[1].status == 429  # the opening's, at the start
    assert _most_in_a_second([e.at for e in posts if e.status == 202]) <= 10
    assert _most_in_a_second([e.at for e in posts[2:]]) <= 10
    span = posts[-1].at - posts[0].at
    assert 79 / 10.0 / span >= 0.97
    spans = [
        max(e.at for e in posts if (e.run_id or "").startswith(f"fl_run_{n}"))
        - min(e.at for e in posts if (e.run_id or "").startswith(f"fl_run_{n}"))
        for n in "ab"
    ]
    assert max(spans) <= 1.05 * min(spans)
    for d in done.values():
        fields = summary(d.result).as_fields()
        assert fields["rate_budget_shared"] is True
        assert fields["rate_budget_per_s"] == 10.0
        assert fields["rate_budget_source"] == "stated"


async def test_a_limit_learned_by_one_run_starts_the_next_there(tmp_path: Path) -> None:
    """The cron case: the first run finds the limit (no headers to tell it), the second
    starts at what the first learned instead of finding it again, and meets no 429."""
    config = SimConfig(
        accept_any=True,
        rate=20.0,
        burst=2,
        rate_limit_headers="none",
        retry_after=False,
        request_log_limit=10_000,
    )
    clock = FakeClock(autojump=False)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven(QUICK):
        first = await rerun(
            sim, tmp_path / "first.jsonl", make_ids(320, "a"), clock=clock, fsync="never"
        )
        learned = summary(first.result).as_fields()["rate_budget_per_s"]
        sent_before = len(_posts(sim))
        await clock.sleep(5.0)  # the next cron run
        with capture_logs() as logs:
            second = await rerun(
                sim, tmp_path / "second.jsonl", make_ids(60, "b"), clock=clock, fsync="never"
            )
    assert summary(first.result).as_fields()["rate_budget_source"] == "learned"
    assert isinstance(learned, float)
    assert 0.9 * 20.0 <= learned <= 20.0
    assert exit_code(second.result) == ExitCode.OK
    posts = [e for e in sim.state.request_log if e.method == "POST"][sent_before:]
    assert [e.status for e in posts] == [202] * 60
    assert 59 / (posts[-1].at - posts[0].at) >= 0.95 * learned
    shared = [e for e in logs if e["event"] == "rate.shared"]
    assert shared[0]["how"] == "learned"


async def test_a_retry_after_heard_by_one_process_pauses_the_others(tmp_path: Path) -> None:
    clock = FakeClock()
    one, other = await pacers_on_one_store(tmp_path, clock, 10.0, 2)
    await one.turn()
    await clock.sleep(2.0)  # past the first one's opening burst (see test_opening)
    await one.turn()
    await other.turn()
    heard = clock.now()
    one.observe(Answer(throttled=True), retry_after=3.0, sent_at=heard)
    assert one.shared is not None
    await one.shared.flush()  # what its next turn does first
    await other.turn()
    assert clock.now() >= heard + 3.0


async def test_a_store_that_cannot_be_opened_warns_once_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    clock = FakeClock()
    async with RunningSimulator(SimConfig(accept_any=True), clock=clock.now) as sim:
        with capture_logs() as logs:
            done = await rerun(
                sim,
                tmp_path / "ledger.jsonl",
                make_ids(5),
                clock=clock,
                rate="100/s",
                rate_store=str(blocker / "store"),
            )
    assert exit_code(done.result) == ExitCode.OK
    assert done.result.tally.succeeded == 5
    warnings = [e for e in logs if e["event"] == "rate_store.unavailable"]
    assert len(warnings) == 1
    assert "rate_store" not in summary(done.result).as_fields()


class _Failing:
    """A store that works `good` times, then fails every call."""

    description = "failing test store"

    def __init__(self, good: int) -> None:
        self.calls = 0
        self._good = good

    def _call(self) -> None:
        self.calls += 1
        if self.calls > self._good:
            raise StoreError("disk I/O error")

    async def reserve(self, stated: float | None, *, counting: bool = False) -> Grant:
        self._call()
        return Grant(0.0, SharedLimit(stated or 1.0, "stated", 0.0), self.calls)

    async def publish(self, per_s: float, how: How) -> None:
        self._call()

    async def pause(self, seconds: float) -> None:
        self._call()

    async def peek(self) -> SharedLimit | None:
        self._call()
        return None

    async def close(self) -> None:
        pass


async def test_a_store_failing_mid_run_warns_once_and_paces_alone() -> None:
    clock = FakeClock()
    store = _Failing(good=3)
    shared = SharedSchedule(store, "key", 50.0, clock.now)
    await shared.start()
    pacer = Pacer(50.0, clock, shared=shared)
    with capture_logs() as logs:
        times = []
        for _ in range(10):
            times.append(await pacer.turn())
    assert [e["event"] for e in logs if e["event"].startswith("rate_store")] == [
        "rate_store.unavailable"
    ]
    assert store.calls == 4  # it is not asked again
    assert not shared.active
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= 1 / 50 - 1e-9 for g in gaps)  # the process's own rate still holds


async def test_an_unlimited_run_that_meets_no_limit_never_touches_the_schedule(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    async with RunningSimulator(SimConfig(accept_any=True), clock=clock.now) as sim:
        done = await rerun(sim, tmp_path / "ledger.jsonl", make_ids(50), clock=clock)
    assert exit_code(done.result) == ExitCode.OK
    assert summary(done.result).as_fields()["rate_budget_shared"] is False
    with sqlite3.connect(state_directory() / FILE_NAME) as db:
        assert db.execute("SELECT count(*) FROM schedules").fetchone() == (0,)


async def test_the_store_holds_no_trace_of_the_token(tmp_path: Path) -> None:
    token = "s3cret-Token-Value-0123456789"
    clock = FakeClock()
    config = SimConfig(accept_any=True, token=token)
    async with RunningSimulator(config, clock=clock.now) as sim:
        done = await rerun(sim, tmp_path / "ledger.jsonl", make_ids(5), clock=clock, rate="50/s")
    assert summary(done.result).as_fields()["rate_budget_shared"] is True
    directory = state_directory()
    stored = b"".join(p.read_bytes() for p in directory.iterdir())
    assert token.encode() not in stored
    assert token[:8].encode() not in stored
    assert fingerprint(sim.base_url, token).encode() in stored


def test_a_malformed_rate_store_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match=r"^invalid --rate-store: 'http://x'"):
        load_settings({"rate_store": "http://x"}, FLAGS)


def test_a_redis_store_without_the_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util  # noqa: PLC0415 - patched just here

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'orchestrator\[redis\]'"):
        load_settings({"rate_store": "redis://127.0.0.1:6379/0"}, FLAGS)


def test_metrics_say_whether_the_budget_was_shared_and_at_what_rate() -> None:
    budget = BudgetReport("sqlite x", "fp", shared=True, per_s=2.5, how="stated")
    fields = Summary(outcome="completed", exit_code=0, ledger="l.jsonl", budget=budget)
    text = render_metrics(fields, 0, 1000.0, 0.0, "j")
    assert 'orchestrator_rate_budget_shared{job="j"} 1\n' in text
    assert 'orchestrator_rate_budget_requests_per_second{job="j"} 2.5\n' in text
    alone = Summary(outcome="completed", exit_code=0, ledger="l.jsonl")
    assert "rate_budget" not in render_metrics(alone, 0, 1000.0, 0.0, "j")


async def test_two_runs_share_the_limit_through_redis(
    tmp_path: Path,
    redis_url: str,
) -> None:
    """The Redis store's schedule runs on the server's clock, so this one runs in real
    time: two runs of 15 IDs at 20/s each, against a limit of 20/s, together at 20/s."""
    config = SimConfig(
        accept_any=True, rate=20.0, burst=3, rate_limit_headers="none", request_log_limit=1000
    )
    done: dict[str, Outcome] = {}
    async with RunningSimulator(config) as sim:

        async def one(name: str) -> None:
            done[name] = await rerun(
                sim,
                tmp_path / f"{name}.jsonl",
                make_ids(15, name),
                clock=RealClock(),
                rate="20/s",
                rate_store=redis_url,
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "a")
            tg.start_soon(one, "b")
    posts = [e for e in sim.state.request_log if e.method == "POST"]
    statuses = Counter(e.status for e in posts)
    assert statuses[202] == 30
    # No 429 but the opening burst's (test_opening), before its extras are paid back: at
    # most OPENING_S of the rate and one slot. Real time on a busy machine can start the
    # second run a few hundred ms late, into the first one's payback.
    assert statuses[429] <= 3
    assert all(e.at - posts[0].at < OPENING_S + 1 / 20 for e in posts if e.status == 429)
    assert _most_in_a_second([e.at for e in posts if e.status == 202]) <= 20 + 3
    for d in done.values():
        fields = summary(d.result).as_fields()
        assert fields["rate_store"] == f"redis {redis_url}"
        assert fields["rate_budget_shared"] is True


async def test_an_unreachable_redis_warns_once_and_the_run_goes_on(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clock = FakeClock()
    async with RunningSimulator(SimConfig(accept_any=True), clock=clock.now) as sim:
        with capture_logs() as logs:
            done = await rerun(
                sim,
                tmp_path / "ledger.jsonl",
                make_ids(5),
                clock=clock,
                rate="100/s",
                rate_store=f"redis://user:pw-s3cret@127.0.0.1:{port}/0",
            )
    assert exit_code(done.result) == ExitCode.OK
    warnings = [e for e in logs if e["event"] == "rate_store.unavailable"]
    assert len(warnings) == 1
    assert "pw-s3cret" not in repr(warnings)


async def test_select_pages_take_their_slots_from_the_shared_schedule(tmp_path: Path) -> None:
    clock = FakeClock()
    async with RunningSimulator(SimConfig(runs=60, per_page=10), clock=clock.now) as sim:
        settings = SelectSettings(
            workflows=(sim.state.workflow_ids[0],),
            criteria=Criteria(),
            base_url=sim.base_url,
            rate=5.0,
            rate_store=StoreSpec("local", directory=tmp_path),
        )
        plumbing = SelectPlumbing(clock=clock, rng=random.Random(0), stdout=io.StringIO())
        result = await run_select(settings, sim.config.token, plumbing)
    pages = [e for e in sim.state.request_log if e.method == "GET"]
    assert result.requests == len(pages) > 1
    fields = select_summary(result)
    assert (fields["rate_budget_shared"], fields["rate_budget_per_s"]) == (True, 5.0)
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        assert db.execute("SELECT count, limit_how FROM schedules").fetchone() == (
            len(pages),
            "stated",
        )


@pytest.mark.parametrize("store", ["none", "auto"])
async def test_select_honours_rate_store_on_the_command_line(tmp_path: Path, store: str) -> None:
    state = tmp_path / "state"
    async with RunningSimulator(SimConfig(runs=30, per_page=10)) as sim:
        workflow = sim.state.workflow_ids[0]
        env = {**os.environ, "XDG_STATE_HOME": str(state), "ALTOSTRAT_TOKEN": sim.config.token}
        done = await anyio.run_process(
            [
                *(sys.executable, "-m", "orchestrator", "select", "--workflow", workflow),
                *("--base-url", sim.base_url, "--rate", "50/s", "--rate-store", store),
            ],
            env=env,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    database = state / "orchestrator" / FILE_NAME
    if store == "none":
        assert not database.exists()
    else:
        with sqlite3.connect(database) as db:
            assert db.execute("SELECT count FROM schedules").fetchone()[0] > 0


async def test_settling_at_the_ceiling_with_no_429_publishes_nothing(tmp_path: Path) -> None:
    """A stated rate that the server takes whole says nothing new of the token's limit:
    it stays a stated one, which lapses when the process stops stating it."""
    clock = FakeClock()
    store = LocalStore(tmp_path, "key", now=clock.now)
    shared = SharedSchedule(store, "key", 10.0, clock.now)
    await shared.start()
    pacer = Pacer(10.0, clock, shared=shared)
    settled = False
    for _ in range(100):
        sent_at = await pacer.turn()
        events = pacer.observe(Answer(), sent_at=sent_at)
        settled |= events.rate is not None and events.rate.settled
        await shared.flush()
    assert pacer.rate.settled or settled
    assert shared.published is None
    limit = await store.peek()
    assert limit is not None
    assert (limit.per_s, limit.how) == (10.0, "stated")


async def test_a_learned_limit_that_proves_too_high_is_replaced(tmp_path: Path) -> None:
    """A run that starts at a learned 13/s against a limit of 10/s meets 429s there, and
    publishes the lower limit it holds at for the next run."""
    config = SimConfig(
        accept_any=True,
        rate=10.0,
        burst=5,
        rate_limit_headers="none",
        retry_after=False,
        request_log_limit=10_000,
    )
    clock = FakeClock(autojump=False)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven(QUICK):
        key = fingerprint(sim.base_url, sim.config.token)
        seeded = LocalStore(state_directory(), key, now=clock.now)
        await seeded.publish(13.0, "learned")
        done = await rerun(
            sim, tmp_path / "ledger.jsonl", make_ids(250), clock=clock, fsync="never"
        )
        limit = await seeded.peek()
        await seeded.close()
    assert exit_code(done.result) == ExitCode.OK
    assert limit is not None
    assert limit.how == "learned"
    assert 0.85 * 10.0 <= limit.per_s <= 10.3


def _headerless(limit_per_s: float, **more: object) -> SimConfig:
    """A GCRA at `limit_per_s`, burst 1, that states its limit in no header and sends no
    Retry-After: the client has only its 429s to go by."""
    return SimConfig(
        accept_any=True,
        rate=limit_per_s,
        burst=1,
        rate_limit_headers="none",
        retry_after=False,
        request_log_limit=20_000,
        **more,  # type: ignore[arg-type]
    )


def _accepted_rate(posts: Sequence[tuple[float, object]], start: float, end: float) -> float:
    return sum(1 for at, status in posts if start <= at < end and status == 202) / (end - start)


async def test_a_learned_limit_that_proves_too_low_is_probed_above_and_raised(
    tmp_path: Path,
) -> None:
    """A learned limit is a lower bound, not a ceiling: a run that starts at a learned
    1/s against a limit raised to 2/s holds 1/s for its first minute (no 429 there: the
    trust), then probes above it, finds the limit and publishes it."""
    limit_per_s = 2.0
    config = _headerless(limit_per_s)
    clock = FakeClock(autojump=False)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven(QUICK):
        key = fingerprint(sim.base_url, sim.config.token)
        seeded = LocalStore(state_directory(), key, now=clock.now)
        await seeded.publish(limit_per_s / 2, "learned")
        done = await rerun(
            sim, tmp_path / "ledger.jsonl", make_ids(200), clock=clock, fsync="never"
        )
        limit = await seeded.peek()
        await seeded.close()
    assert exit_code(done.result) == ExitCode.OK
    posts = [(e.at, e.status) for e in sim.state.request_log if e.method == "POST"]
    start, end = posts[0][0], posts[-1][0]
    trusted = [status for at, status in posts if at < start + TRUST_S]
    assert 429 not in trusted
    assert len(trusted) <= limit_per_s / 2 * TRUST_S + 2
    assert _accepted_rate(posts, end - 30.0, end) >= 0.85 * limit_per_s  # found above it
    assert limit is not None
    assert limit.how == "learned"
    assert 0.85 * limit_per_s <= limit.per_s <= 1.03 * limit_per_s


async def test_a_limit_learned_beside_another_client_is_left_once_it_stops(
    tmp_path: Path,
) -> None:
    """The neighbouring shape of the background rows, with the default store: a run
    that learns its limit while another client of the token (no store of ours) takes
    half of it publishes that half; when the other client stops, the run finds the whole
    limit again, as a run with no store does, and publishes it."""
    limit_per_s, load, stop_s = 4.0, 2.0, 60.0
    config = _headerless(limit_per_s, background_load=load, background_stop_s=stop_s)
    clock = FakeClock(autojump=False)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven(QUICK):
        with capture_logs() as logs:
            done = await rerun(
                sim, tmp_path / "ledger.jsonl", make_ids(300), clock=clock, fsync="never"
            )
        key = fingerprint(sim.base_url, sim.config.token)
        store = LocalStore(state_directory(), key, now=clock.now)
        limit = await store.peek()
        await store.close()
    assert exit_code(done.result) == ExitCode.OK
    published = [e["per_s"] for e in logs if e["event"] == "rate_store.published"]
    assert published[0] <= 0.7 * limit_per_s  # the share it had while the other sent
    ours = [(e.at, e.status) for e in sim.state.request_log if e.method == "POST"]
    stops_at = ours[0][0] + stop_s  # the background starts with the first request
    starts = (stops_at + n / 2 for n in range(400))
    back = next((t for t in starts if _accepted_rate(ours, t, t + 5.0) >= 0.9 * limit_per_s), None)
    assert back is not None, "never back at the whole limit"
    assert back - stops_at <= 60.0  # the target at 2/s
    assert limit is not None
    assert limit.per_s >= 0.85 * limit_per_s


async def test_runs_that_learn_together_publish_the_tokens_limit_not_their_share(
    tmp_path: Path,
) -> None:
    """Three `--rate none` runs on one token, on one store, learn the limit at once: each
    gets a share of it, and what is published is the token's limit (the store counts
    every run's requests let through once it met a 429), not one run's share."""
    limit_per_s = 6.0
    config = _headerless(limit_per_s)
    clock = FakeClock(autojump=False)
    done: dict[str, Outcome] = {}
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven(QUICK):
        with capture_logs() as logs:

            async def one(name: str) -> None:
                ids = make_ids(120, name)
                done[name] = await rerun(
                    sim, tmp_path / f"{name}.jsonl", ids, clock=clock, fsync="never"
                )

            async with anyio.create_task_group() as tg:
                for name in "abc":
                    tg.start_soon(one, name)
    assert all(exit_code(d.result) == ExitCode.OK for d in done.values())
    published = [e["per_s"] for e in logs if e["event"] == "rate_store.published"]
    assert published
    assert min(published) >= 0.8 * limit_per_s
    assert max(published) <= 1.03 * limit_per_s


async def test_another_processs_rate_caps_this_one_only_while_it_is_stated(
    tmp_path: Path,
) -> None:
    """`select` (at its default 60/min) then `rerun --rate none`: the select's rate holds
    the rerun while it is stated, and lapses 30 s after; from then the rerun's own rate
    is free to find the limit. (It had held the rerun at 1/s to its end.)"""
    clock = FakeClock()
    other = LocalStore(tmp_path, "key", now=clock.now, wall=clock.now)
    await other.reserve(1.0)  # the select's last slot at --rate 1/s
    store = LocalStore(tmp_path, "key", now=clock.now, wall=clock.now)
    shared = SharedSchedule(store, "key", None, clock.now)
    await shared.start()
    pacer = Pacer(None, clock, shared=shared)
    assert pacer.rate.cap == 1.0
    start = clock.now()
    for _ in range(2_000):  # bounded: once unlimited, a turn takes no time at all
        sent_at = await pacer.turn()
        pacer.observe(Answer(), sent_at=sent_at)
        if clock.now() > start + 120.0:
            break
    assert pacer.rate.cap is None
    assert pacer.rate.rate is None or pacer.rate.rate > 4.0
    await other.close()
    await shared.close()
