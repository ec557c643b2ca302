"""RedisStore against a real redis-server (tests/helpers/redisserver.py starts it).

The Lua scripts must do what the pure steps of `ratestore` do: the first tests drive both
with the same operations and compare. The scripts read the server's clock, which moves
between calls, so each step is bracketed by two readings of it (TIME before and after)
and the script's outcome must lie between the pure step's outcomes at the two.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from orchestrator.errors import StoreError
from orchestrator.shared.redisstore import EXPIRE_S, KEY_PREFIX, RedisStore, redis_key
from orchestrator.shared.store import (
    LEARNED_TTL_S,
    MAX_PAUSE_S,
    STATED_TTL_S,
    Grant,
    How,
    Schedule,
    SharedLimit,
    pause_step,
    publish_step,
    reserve_step,
)
from tests.helpers.redisserver import (
    RedisServer,
    Slot,
    reserve_until,
    running_redis,
)

KEY = "0123456789abcdef0123456789abcdef"
HASH = redis_key(KEY)
ROOT = Path(__file__).resolve().parents[2]

Opener = Callable[..., Awaitable[RedisStore]]
# redis-py types each command for its blocking and its async client at once (a result or
# an awaitable of it), which no await accepts: the plain client in these tests is untyped.
Raw = Any


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Raw]:
    """A plain client on the same server, to read and write the hash directly."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def open_store(redis_url: str) -> AsyncIterator[Opener]:
    """Opens RedisStores on the session's server (KEY unless told), closing them after."""
    stores: list[RedisStore] = []

    async def opener(key: str = KEY) -> RedisStore:
        store = await RedisStore.connect(redis_url, key)
        stores.append(store)
        return store

    yield opener
    for store in stores:
        await store.close()


async def server_time(raw: Raw) -> float:
    seconds, micros = await raw.time()
    return float(seconds + micros / 1_000_000)


async def stored(raw: Raw) -> Schedule:
    """The hash as the schedule it holds, read strictly (the stores write no garbage)."""
    fields = await raw.hgetall(HASH)
    limit = None
    if "limit_per_s" in fields:
        how: Any = fields["limit_how"]
        limit = SharedLimit(float(fields["limit_per_s"]), how, float(fields["limit_at"]))
    return Schedule(
        tat=float(fields.get("tat", 0.0)),
        paused_until=float(fields.get("paused_until", 0.0)),
        count=int(fields.get("count", 0)),
        limit=limit,
    )


def between(actual: float, one: float, other: float, what: str) -> None:
    low, high = min(one, other) - 1e-6, max(one, other) + 1e-6
    assert low <= actual <= high, f"{what}: {actual!r} not in [{low!r}, {high!r}]"


def same_limit(
    actual: SharedLimit | None, one: SharedLimit | None, other: SharedLimit | None, what: str
) -> None:
    if one is None or other is None:
        assert (one, other) == (None, None), f"{what}: the step is at a boundary"
        assert actual is None, f"{what}: {actual} where the pure step has none"
        return
    assert actual is not None, f"{what}: none where the pure step has {one}"
    assert (one.per_s, one.how) == (other.per_s, other.how), f"{what}: at a boundary"
    assert (actual.per_s, actual.how) == (one.per_s, one.how), f"{what}: {actual} vs {one}"
    between(actual.at, one.at, other.at, f"{what} limit.at")


def same_schedule(actual: Schedule, one: Schedule, other: Schedule, what: str) -> None:
    assert one.count == other.count, f"{what}: at a boundary"
    assert actual.count == one.count, f"{what}: count {actual.count} vs {one.count}"
    between(actual.tat, one.tat, other.tat, f"{what} tat")
    between(actual.paused_until, one.paused_until, other.paused_until, f"{what} paused")
    same_limit(actual.limit, one.limit, other.limit, what)


def same_grant(actual: Grant, one: Grant, other: Grant, what: str) -> None:
    assert one.count == other.count, f"{what}: at a boundary"
    assert actual.count == one.count, f"{what}: grant count {actual.count} vs {one.count}"
    between(actual.delay_s, one.delay_s, other.delay_s, f"{what} delay")
    if one.idle_s == other.idle_s == math.inf:
        assert actual.idle_s == math.inf, f"{what}: idle {actual.idle_s}"
    else:
        between(actual.idle_s, one.idle_s, other.idle_s, f"{what} idle")
    same_limit(actual.limit, one.limit, other.limit, f"{what} grant")


Op = tuple[str, Any, Any]


async def check_step(store: RedisStore, raw: Raw, op: Op) -> None:
    """Run `op` on the store and the pure step from the same state, and compare."""
    kind, first, second = op
    what = f"{op!r}"
    state = await stored(raw)
    before = await server_time(raw)
    grant = None
    if kind == "reserve":
        grant = await store.reserve(first)
    elif kind == "publish":
        await store.publish(first, second)
    else:
        await store.pause(first)
    after = await server_time(raw)
    actual = await stored(raw)

    def pure(now: float) -> tuple[Schedule, Grant | None]:
        if kind == "reserve":
            return reserve_step(state, now, now, first)
        if kind == "publish":
            return publish_step(state, now, first, second), None
        return pause_step(state, now, first), None

    (one, grant_one), (other, grant_other) = pure(before), pure(after)
    same_schedule(actual, one, other, what)
    if grant is not None:
        assert grant_one is not None
        assert grant_other is not None
        same_grant(grant, grant_one, grant_other, what)


async def age(raw: Raw, field: str, by: float) -> None:
    """Move a stored time as if the clock had moved (or stepped)."""
    if await raw.hexists(HASH, field):
        await raw.hincrbyfloat(HASH, field, by)


async def test_scripted_steps_agree_with_pure_steps(open_store: Opener, raw: Raw) -> None:
    store = await open_store()
    ops: list[Op] = [
        ("reserve", None, None),  # nothing known: no slot, nothing written
        ("reserve", 50.0, None),  # a stated rate starts the schedule
        ("reserve", 50.0, None),
        ("reserve", 5.0, None),  # a lower --rate does not take over a fresh one
        ("reserve", 100.0, None),  # a higher one does
        ("reserve", None, None),  # the stated limit holds for one that states none
        ("publish", 10.0, "learned"),  # a learned limit beats any --rate
        ("reserve", 100.0, None),
        ("publish", 4.0, "server"),
        ("reserve", None, None),
        ("pause", 2.0, None),  # no slot before the pause ends
        ("reserve", None, None),
        ("pause", 1.0, None),  # a shorter pause leaves the longer one
        ("pause", 1000.0, None),  # clamped to MAX_PAUSE_S
        ("reserve", 3.0, None),
        ("pause", float("nan"), None),
        ("pause", float("inf"), None),
        ("pause", -5.0, None),
        ("publish", 0.0, "learned"),  # unusable rates change nothing
        ("publish", float("inf"), "server"),
        ("publish", float("nan"), "learned"),
        ("reserve", 1e9, None),
        ("reserve", 0.0, None),
        ("reserve", float("nan"), None),
        ("age", "limit_at", -LEARNED_TTL_S - 60.0),  # the server's limit lapses
        ("reserve", 0.05, None),  # 20 s apart: lasts three intervals, 60 s
        ("age", "limit_at", -40.0),
        ("age", "tat", 700.0),  # QUEUED_SLOTS intervals are 1280 s: still a queue
        ("reserve", None, None),  # still held
        ("age", "limit_at", -30.0),
        ("reserve", None, None),  # lapsed
        ("reserve", 50.0, None),
        ("age", "tat", 700.0),  # a schedule past MAX_AHEAD_S starts again from now
        ("reserve", 50.0, None),
        ("age", "paused_until", MAX_PAUSE_S + 100.0),  # as does a pause past MAX_PAUSE_S
        ("reserve", 50.0, None),
        ("publish", 8.0, "learned"),
        ("age", "limit_at", 100.0),  # dated in the future: a clock stepped back
        ("reserve", None, None),  # not trusted
    ]
    for op in ops:
        if op[0] == "age":
            await age(raw, op[1], op[2])
        else:
            await check_step(store, raw, op)
    schedule = await stored(raw)
    assert schedule.limit is None  # the future-dated one was dropped
    assert schedule.count == 17  # every reserve under a fresh limit takes a slot


async def test_random_steps_agree_with_pure_steps(open_store: Opener, raw: Raw) -> None:
    """Random operations, with stored times moved to cross every expiry and bound."""
    rng = random.Random(20240611)
    store = await open_store()
    stated = [None, None, 50.0, 5.0, 0.2, 0.05, 1000.0, 1e9, 0.0, float("nan")]
    published = [10.0, 2.5, 0.5, 0.0, -1.0, float("inf")]
    hows: list[How] = ["learned", "server"]
    pauses = [0.0, 0.5, 2.0, 1000.0, -3.0, float("inf"), float("nan")]
    # Each clear of its boundary by seconds: a step takes milliseconds.
    agings = [
        ("limit_at", -20.0),  # a stated limit still fresh
        ("limit_at", -40.0),  # past STATED_TTL_S (unless 3 intervals are longer)
        ("limit_at", -3600.0),  # a learned limit still fresh
        ("limit_at", -LEARNED_TTL_S - 60.0),  # every limit lapsed
        ("tat", 700.0),  # a schedule past MAX_AHEAD_S (not at 0.05/s: QUEUED_SLOTS)
        ("tat", 1500.0),  # past QUEUED_SLOTS intervals at 0.05/s
        ("paused_until", MAX_PAUSE_S + 100.0),  # a pause past MAX_PAUSE_S
        ("tat", -50.0),
    ]
    for _ in range(400):
        roll = rng.random()
        if roll < 0.5:
            await check_step(store, raw, ("reserve", rng.choice(stated), None))
        elif roll < 0.65:
            op = ("publish", rng.choice(published), rng.choice(hows))
            await check_step(store, raw, op)
        elif roll < 0.8:
            await check_step(store, raw, ("pause", rng.choice(pauses), None))
        else:
            await age(raw, *rng.choice(agings))
    assert (await stored(raw)).count > 0


async def test_every_write_sets_the_expiry(open_store: Opener, raw: Raw) -> None:
    store = await open_store()
    for step in (store.reserve(20.0), store.publish(3.0, "learned"), store.pause(1.0)):
        await raw.persist(HASH)
        await step
        ttl_ms = await raw.pttl(HASH)
        assert LEARNED_TTL_S * 1000 < ttl_ms <= EXPIRE_S * 1000
    assert HASH.startswith(KEY_PREFIX)
    assert HASH.endswith(KEY)


async def test_nothing_is_written_without_a_limit(open_store: Opener, raw: Raw) -> None:
    store = await open_store()
    assert await store.reserve(None) == Grant(0.0, None, 0)
    await store.publish(float("nan"), "learned")
    assert await raw.exists(HASH) == 0
    assert await store.peek() is None


async def test_a_counted_request_with_no_limit_counts_and_reserves_nothing(
    open_store: Opener,
) -> None:
    """As reserve_step's `counting`: the count moves on, no limit appears."""
    store = await open_store()
    assert await store.reserve(None, counting=True) == Grant(0.0, None, 1)
    assert await store.reserve(None, counting=True) == Grant(0.0, None, 2)
    assert await store.peek() is None
    grant = await store.reserve(10.0)
    assert (grant.count, grant.limit is not None) == (3, True)


async def test_stated_limit_lapses_after_stated_ttl(open_store: Opener, raw: Raw) -> None:
    store = await open_store()
    first = await store.reserve(50.0)
    assert first.limit is not None
    assert first.limit.how == "stated"
    now = await server_time(raw)
    await raw.hset(HASH, "limit_at", repr(now - STATED_TTL_S + 5.0))
    held = await store.reserve(None)
    assert held.limit is not None
    assert held.limit.per_s == 50.0
    assert await store.peek() == held.limit
    await raw.hset(HASH, "limit_at", repr(now - STATED_TTL_S - 1.0))
    assert await store.peek() is None
    lapsed = await store.reserve(None)
    assert lapsed.limit is None
    assert lapsed.delay_s == 0.0
    assert lapsed.count == 2
    assert not await raw.hexists(HASH, "limit_per_s")
    # A lower --rate takes over once the higher one has lapsed.
    await store.reserve(50.0)
    await raw.hset(HASH, "limit_at", repr(now - STATED_TTL_S - 1.0))
    lower = await store.reserve(5.0)
    assert lower.limit is not None
    assert lower.limit.per_s == 5.0


async def test_slow_stated_limit_lasts_three_intervals(open_store: Opener, raw: Raw) -> None:
    store = await open_store()
    await store.reserve(0.05)  # 20 s apart: it lasts 60 s, not STATED_TTL_S
    now = await server_time(raw)
    await raw.hset(HASH, "limit_at", repr(now - 45.0))
    held = await store.reserve(None)
    assert held.limit is not None
    assert held.limit.per_s == 0.05
    await raw.hset(HASH, "limit_at", repr(now - 65.0))
    assert (await store.reserve(None)).limit is None


async def test_learned_limit_lapses_after_learned_ttl(open_store: Opener, raw: Raw) -> None:
    store = await open_store()
    await store.publish(10.0, "learned")
    now = await server_time(raw)
    await raw.hset(HASH, "limit_at", repr(now - LEARNED_TTL_S + 60.0))
    peeked = await store.peek()
    assert peeked is not None
    assert (peeked.per_s, peeked.how) == (10.0, "learned")
    grant = await store.reserve(None)
    assert grant.limit == peeked
    await raw.hset(HASH, "limit_at", repr(now - LEARNED_TTL_S - 1.0))
    assert await store.peek() is None
    assert (await store.reserve(None)).limit is None
    await store.publish(10.0, "server")
    await raw.hset(HASH, "limit_at", repr(now - LEARNED_TTL_S - 1.0))
    stated = await store.reserve(50.0)  # a --rate holds once the server's limit lapsed
    assert stated.limit is not None
    assert (stated.limit.per_s, stated.limit.how) == (
        50.0,
        "stated",
    )


async def test_fresh_learned_limit_beats_a_stated_rate(open_store: Opener) -> None:
    store = await open_store()
    await store.reserve(50.0)
    await store.publish(10.0, "learned")
    grant = await store.reserve(100.0)
    assert grant.limit is not None
    assert (grant.limit.per_s, grant.limit.how) == (10.0, "learned")
    assert grant.count == 2
    await store.publish(4.0, "server")  # the newest evidence replaces it
    grant = await store.reserve(100.0)
    assert grant.limit is not None
    assert (grant.limit.per_s, grant.limit.how) == (4.0, "server")
    assert 0.0 < grant.delay_s <= 1 / 50.0 + 1 / 10.0  # behind the two slots before


async def test_publish_refuses_an_unknown_source(open_store: Opener) -> None:
    store = await open_store()
    bogus: Any = "guessed"
    with pytest.raises(StoreError, match="guessed"):
        await store.publish(5.0, bogus)


async def test_pause_by_one_client_delays_another(open_store: Opener) -> None:
    pauser, other, elsewhere = await open_store(), await open_store(), await open_store("ff")
    assert (await other.reserve(50.0)).delay_s == 0.0
    assert (await elsewhere.reserve(50.0)).delay_s == 0.0
    await pauser.pause(2.0)
    paused = await other.reserve(50.0)
    assert 1.9 < paused.delay_s <= 2.0
    after = await pauser.reserve(50.0)  # the next slot is one interval behind
    assert after.delay_s == pytest.approx(paused.delay_s + 0.02, abs=0.01)
    assert (await elsewhere.reserve(50.0)).delay_s <= 0.02  # another key is not paused


def check_slots(slots: list[Slot], rate: float, duration: float) -> None:
    """Slots taken at `rate` for `duration` seconds by several clients: each count once
    and in order, one interval apart, never more than rate+1 in any second."""
    ordered = sorted(slots, key=lambda slot: slot.count)
    assert [slot.count for slot in ordered] == list(range(1, len(slots) + 1))
    interval = 1.0 / rate
    uncertainty = max(slot.latest - slot.earliest for slot in slots)
    for earlier, later in itertools.pairwise(ordered):
        gap = f"{earlier} to {later} (uncertainty {uncertainty:.4f} s)"
        assert later.latest - earlier.earliest >= interval - 1e-6, gap
    for index, first in enumerate(ordered):
        window = [slot for slot in ordered[index:] if slot.latest < first.earliest + 1.0]
        assert len(window) <= rate + 1, f"{len(window)} slots in the second from {first}"
    assert rate * duration * 0.8 <= len(slots) <= rate * duration + 1


def check_shares(shares: list[int]) -> None:
    """One reservation at a time each: the slots go round the clients in turn."""
    assert max(shares) - min(shares) <= 2, shares


async def test_concurrent_clients_share_the_rate(open_store: Opener) -> None:
    stores = [await open_store() for _ in range(4)]
    rate, duration = 50.0, 1.0
    start = time.time() + 0.1
    results = await asyncio.gather(
        *(reserve_until(store, rate, start, start + duration) for store in stores)
    )
    check_slots([slot for slots in results for slot in slots], rate, duration)
    check_shares([len(slots) for slots in results])


async def test_concurrent_processes_share_the_rate(redis_url: str) -> None:
    rate, duration, workers = 50.0, 1.0, 3
    argv = [sys.executable, "-m", "tests.helpers.redisserver", "reserve", redis_url, KEY]
    argv += [repr(rate), repr(duration)]
    processes = [
        await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for _ in range(workers)
    ]
    try:
        for process in processes:  # every one connected before any starts
            assert process.stdout is not None
            ready = await asyncio.wait_for(process.stdout.readline(), 30.0)
            assert ready == b"ready\n", ready
        go = f"{time.time() + 0.2!r}\n".encode()
        outputs = await asyncio.wait_for(
            asyncio.gather(*(process.communicate(go) for process in processes)), 20.0
        )
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.communicate()
    assert [process.returncode for process in processes] == [0] * workers, outputs
    shares: list[int] = []
    slots: list[Slot] = []
    for output, _ in outputs:
        lines = output.decode().splitlines()
        assert lines, "a worker took no slot"
        assert all(line.startswith("slot ") for line in lines), lines[:3]
        shares.append(len(lines))
        for line in lines:
            _, earliest, latest, count = line.split()
            slots.append(Slot(float(earliest), float(latest), int(count)))
    check_slots(slots, rate, duration)
    check_shares(shares)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_unreachable_server_fails_fast_without_the_password() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{closed_port()}/0"
    began = time.monotonic()
    with pytest.raises(StoreError) as caught:
        await RedisStore.connect(url, KEY)
    assert time.monotonic() - began < 3.0
    message = str(caught.value)
    assert "s3cret" not in message
    assert "\n" not in message
    assert "127.0.0.1" in message


async def test_silent_server_times_out() -> None:
    """A port that accepts connections and never answers: the reply timeout ends it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(StoreError, match="timed out") as caught:
            await RedisStore.connect(f"redis://:s3cret@127.0.0.1:{port}/0", KEY)
        assert time.monotonic() - began < 3.0
        assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret@127.0.0.1:99999/0",
        "redis://:s3cret@127.0.0.1:port/0",
        "redis://:s3cret@127.0.0.1:6379/0?db=x&password=s3cret",
        "redis://:s3cret@[::1/0",
    ],
)
async def test_unusable_url_is_a_store_error_without_the_password(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        await RedisStore.connect(url, KEY)
    assert "s3cret" not in str(caught.value)


async def test_server_gone_under_an_open_store(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        store = await RedisStore.connect(server.url, KEY)
        assert (await store.reserve(10.0)).limit is not None
        server.stop()
        steps: list[Callable[[], Awaitable[object]]] = [
            lambda: store.reserve(10.0),
            lambda: store.publish(5.0, "server"),
            lambda: store.pause(1.0),
            store.peek,
        ]
        for step in steps:
            began = time.monotonic()
            with pytest.raises(StoreError) as caught:
                await step()
            assert time.monotonic() - began < 3.0
            assert "\n" not in str(caught.value)
        await store.close()


async def test_password(tmp_path: Path) -> None:
    with running_redis(tmp_path, password="s3cret-pw") as server:
        for url in (
            server.url_with("s3cret-pw"),
            server.url_with("s3cret-pw", user="default"),
            f"redis://127.0.0.1:{server.port}/0?password=s3cret-pw",
        ):
            store = await RedisStore.connect(url, KEY)
            try:
                assert "s3cret-pw" not in store.description
                assert (await store.reserve(10.0)).limit is not None
            finally:
                await store.close()
        for url in (
            server.url_with("wr0ng-pw"),
            server.url_with("wr0ng-pw", user="default"),
            server.url_with(None),
        ):
            with pytest.raises(StoreError) as caught:
                await RedisStore.connect(url, KEY)
            assert "wr0ng-pw" not in str(caught.value)
            assert "s3cret-pw" not in str(caught.value)


async def test_description_holds_no_password(redis_server: RedisServer) -> None:
    store = await RedisStore.connect(redis_server.url, KEY)
    try:
        assert store.description == f"redis redis://127.0.0.1:{redis_server.port}/0"
    finally:
        await store.close()
    url = f"redis://user:s3cret@127.0.0.1:{closed_port()}/0"
    with pytest.raises(StoreError, match=r"redis redis://user:\*\*\*@127\.0\.0\.1"):
        await RedisStore.connect(url, KEY)


# Garbage in the hash reads as absent, field by field (as localstore reads an odd row):
# a time or count that is not a finite number as 0, a limit with any unreadable part as
# none. The next write replaces it. The schedule restarts from now, which costs at most
# one slot early; refusing to run until someone cleans the key would cost more.
async def test_garbage_fields_read_as_absent(open_store: Opener, raw: Raw) -> None:
    store = await open_store()
    await raw.hset(
        HASH,
        mapping={
            "tat": "abc",
            "paused_until": "nan",
            "count": "-5",
            "limit_per_s": "zero",
            "limit_how": "bogus",
            "limit_at": "yesterday",
        },
    )
    assert await store.peek() is None
    assert await store.reserve(None) == Grant(0.0, None, 0)
    grant = await store.reserve(50.0)
    assert grant.delay_s == 0.0
    assert grant.count == 1
    assert grant.limit is not None
    assert (grant.limit.per_s, grant.limit.how) == (50.0, "stated")
    schedule = await stored(raw)  # every field readable again
    assert schedule.count == 1
    assert schedule.limit == grant.limit


@pytest.mark.parametrize(
    "fields",
    [
        {"tat": "inf", "paused_until": "-inf", "count": "1e400"},
        {"tat": "", "paused_until": "0x", "count": "2.5"},
        {"limit_per_s": "0", "limit_how": "learned", "limit_at": "1e300"},
        {"limit_per_s": "-3", "limit_how": "server", "limit_at": "0"},
        {"limit_per_s": "inf", "limit_how": "learned", "limit_at": "nan"},
    ],
)
async def test_odd_numbers_do_not_crash(
    open_store: Opener, raw: Raw, fields: dict[str, str]
) -> None:
    store = await open_store()
    await raw.hset(HASH, mapping=fields)
    assert await store.peek() is None
    grant = await store.reserve(None)
    assert grant.limit is None
    assert grant.delay_s == 0.0
    grant = await store.reserve(20.0)
    assert grant.limit is not None
    assert grant.limit.per_s == 20.0
    assert 0.0 <= grant.delay_s < 0.06  # an unreadable tat is 0, and count 2.5 is 2
    await store.pause(0.5)
    await store.publish(3.0, "server")
    assert (await store.peek()) is not None


async def test_key_of_another_type_is_a_store_error(open_store: Opener, raw: Raw) -> None:
    store = await open_store()
    await raw.set(HASH, "not a hash")
    steps: list[Callable[[], Awaitable[object]]] = [
        lambda: store.reserve(10.0),
        lambda: store.publish(5.0, "server"),
        lambda: store.pause(1.0),
        store.peek,
    ]
    for step in steps:
        with pytest.raises(StoreError, match="WRONGTYPE"):
            await step()
    assert await raw.get(HASH) == "not a hash"


class FakeScript:
    def __init__(self, reply: object) -> None:
        self.reply = reply

    async def __call__(self, **_: object) -> object:
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply


FAILURES = [OSError("socket gone"), RuntimeError("a bug in redis-py"), TimeoutError()]


@pytest.mark.parametrize(
    "reply",
    [
        None,
        42,
        ["0", "", "", ""],
        ["x", "50", "stated", "1", "1"],
        ["0", "50", "guessed", "1", "1"],
        ["0", "50", "stated", "1", "one"],
        ["nan", "50", "stated", "1", "1"],
        ["0", 50, "stated", "1", "1"],
        [b"\xff", "50", "stated", "1", "1"],
        *FAILURES,
    ],
)
async def test_unreadable_reserve_reply_is_a_store_error(open_store: Opener, reply: object) -> None:
    store = await open_store()
    store._reserve = FakeScript(reply)  # type: ignore[assignment]
    with pytest.raises(StoreError):
        await store.reserve(10.0)


@pytest.mark.parametrize(
    "reply", [None, 42, ["1", "0", "", ""], ["x", "0", "", "", ""], ["1", 0, "", "", ""], *FAILURES]
)
async def test_unreadable_peek_reply_is_a_store_error(open_store: Opener, reply: object) -> None:
    store = await open_store()
    store._peek = FakeScript(reply)  # type: ignore[assignment]
    with pytest.raises(StoreError):
        await store.peek()


async def test_cost_of_a_reserve_is_measurable(open_store: Opener) -> None:
    """Many reserves in a row at a rate no schedule runs behind: all granted, counted
    once each (the cost itself is measured outside the suite)."""
    store = await open_store()
    grants = [await store.reserve(1e6) for _ in range(300)]
    assert [grant.count for grant in grants] == list(range(1, 301))
    assert all(math.isfinite(grant.delay_s) and grant.delay_s < 0.01 for grant in grants)
