"""One rate budget per token, shared by every process that uses it: the store's contract.

The API's limit is per token, so processes on one token (two operators, a cron job and a
runbook, several hosts) take their request slots from one schedule kept in a store:

    --rate-store auto          SQLite in $XDG_STATE_HOME/orchestrator/ (this user, this host)
    --rate-store DIR           the same, kept in DIR (every account that can write it)
    --rate-store redis://…     Redis or Valkey (every host that reaches it)
    --rate-store none          no sharing

The schedule is GCRA's theoretical arrival time (see `TokenBucket`) plus the limit it runs
at, where that limit came from, a shared Retry-After pause and a count of slots taken. One
atomic step (`reserve_step`) reads and advances it: one `BEGIN IMMEDIATE` transaction in
SQLite, the same logic as one Lua script in Redis. Every process holds at most one
reservation at a time, so slots go round the processes in turn and shares come out equal.

The schedule's key is a fingerprint of the token, salted with the base URL and stretched
with scrypt: the store holds nothing from which the token could be recovered.

Pure: this module does no I/O; the stores live in `localstore` and `redisstore`.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal, Protocol

from yarl import URL

from orchestrator.errors import StoreSpecError

# A limit learned by a run, or stated by the server's headers, is kept this long.
LEARNED_TTL_S: Final = 24 * 3600.0
# A rate stated with --rate lasts while a process states it: each of its reservations
# refreshes it, and it lapses this long (or three intervals, when slower) after the last.
STATED_TTL_S: Final = 30.0
# A schedule further ahead than this was left by a clock that stepped back (or a reboot,
# for a monotonic clock): start it again from now.
MAX_AHEAD_S: Final = 600.0
# ... or than this many intervals, for rates slower than one per MAX_AHEAD_S.
QUEUED_SLOTS: Final = 64
# A shared Retry-After pause is never longer than this (as pacing.MAX_RETRY_AFTER_S).
MAX_PAUSE_S: Final = 300.0

How = Literal["stated", "learned", "server"]
HOWS: Final[tuple[How, ...]] = ("stated", "learned", "server")


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """Where the shared budget lives: `kind` none, local (a directory) or redis (a URL)."""

    kind: Literal["none", "local", "redis"]
    directory: Path | None = None
    url: str | None = None
    auto: bool = False

    def describe(self) -> str:
        """How the store reads in a log or `config show`: never a password."""
        if self.kind == "redis":
            assert self.url is not None
            return redacted_url(self.url)
        if self.kind == "local":
            return f"{self.directory}" + (" (auto)" if self.auto else "")
        return "none"


NO_STORE: Final = StoreSpec("none")


def parse_store_spec(text: str, env: dict[str, str] | None = None) -> StoreSpec:
    """`auto`, `none`, `redis://…`/`rediss://…` or a directory path.

    Raises StoreSpecError with a message fit for the user."""
    value = text.strip()
    if not value:
        raise StoreSpecError("it is empty: give auto, none, a directory or a redis:// URL")
    if value.lower() == "none":
        return StoreSpec("none")
    if value.lower() == "auto":
        return StoreSpec("local", directory=state_directory(env), auto=True)
    scheme, sep, _ = value.partition("://")
    if sep:
        if scheme.lower() not in ("redis", "rediss"):
            raise StoreSpecError(
                f"{redacted_url(value)!r}: only redis:// and rediss:// URLs are stores"
                " (or auto, none, a directory)"
            )
        try:
            url = URL(value)
        except ValueError:
            raise StoreSpecError("it is not a valid redis:// URL") from None
        if not url.host:
            raise StoreSpecError(f"{redacted_url(value)!r} names no host")
        if url.path not in ("", "/") and not url.path.lstrip("/").isdigit():
            raise StoreSpecError(f"{redacted_url(value)!r}: the path must be a database number")
        try:
            url.port  # noqa: B018 - yarl checks the port when asked for it
        except ValueError:
            raise StoreSpecError(
                "it is not a valid redis:// URL: the port is not a number"
            ) from None
        return StoreSpec("redis", url=value)
    if "\x00" in value:
        raise StoreSpecError("it holds a NUL byte")
    return StoreSpec("local", directory=Path(value).expanduser())


def state_directory(env: dict[str, str] | None = None) -> Path:
    """$XDG_STATE_HOME/orchestrator, else ~/.local/state/orchestrator (XDG base dirs)."""
    environ = os.environ if env is None else env
    base = environ.get("XDG_STATE_HOME", "").strip()
    # The spec says a relative XDG path is invalid and to be ignored.
    if not base or not os.path.isabs(base):
        return Path.home() / ".local" / "state" / "orchestrator"
    return Path(base) / "orchestrator"


def redacted_url(url: str) -> str:
    """A store URL with any password replaced by ***."""
    try:
        parsed = URL(url)
    except ValueError:
        return "<unreadable URL>"
    if "password" in parsed.query:  # redis-py takes ?password= too
        parsed = parsed.update_query(password="***")  # noqa: S106 - a mask
    if parsed.password is not None:
        parsed = parsed.with_password("***")
    return url if parsed == URL(url) else str(parsed)


def fingerprint(base_url: str, token: str) -> str:
    """The budget's key: scrypt of the token, salted with the base URL (RFC 7914).

    A token is high-entropy, but scrypt's cost keeps a guessable one from being found by
    hashing guesses against a stolen store."""
    salt = b"orchestrator rate budget v1\x00" + base_url.rstrip("/").encode()
    digest = hashlib.scrypt(token.encode(), salt=salt, n=2**14, r=8, p=1, dklen=16)
    return digest.hex()


@dataclass(frozen=True, slots=True)
class SharedLimit:
    """The token's limit as the schedule knows it: requests per second, where it came
    from (a process's --rate, a run that learned it, the server's headers), and when it
    was stated (store time: wall-clock seconds)."""

    per_s: float
    how: How
    at: float

    @property
    def known_per_s(self) -> float | None:
        """The limit as knowledge of the token's (learned, or the server's), for an
        estimate; None when it is only a process's --rate, which says nothing of it."""
        return None if self.how == "stated" else self.per_s

    def fresh(self, wall: float) -> bool:
        age = wall - self.at
        if age < -STATED_TTL_S:
            return False  # dated in the future: a wall clock stepped back; trust it no more
        if self.how == "stated":
            return age < max(STATED_TTL_S, 3.0 / self.per_s)
        return age < LEARNED_TTL_S


@dataclass(frozen=True, slots=True)
class Schedule:
    """What the store keeps per key. `tat` and `paused_until` are on the schedule's
    clock; `limit.at` is wall-clock time, so a limit outlives a reboot."""

    tat: float = 0.0
    paused_until: float = 0.0
    count: int = 0
    limit: SharedLimit | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to one reservation. `limit` is the limit the schedule ran at, or None
    when no fresh limit is known: then nothing was reserved and the process paces alone.
    `delay_s` is how long from now the slot is; `count` numbers the slot among all the
    slots ever taken on this schedule (this process's share is measured from it)."""

    delay_s: float
    limit: SharedLimit | None
    count: int
    # How long the schedule had gone unused before this slot (infinite when nothing was
    # reserved): a limiter behind it has saved up its burst.
    idle_s: float = math.inf


def usable_rate(per_s: float) -> bool:
    """A rate that a schedule can run at: finite and within sane bounds."""
    return math.isfinite(per_s) and 1e-6 <= per_s <= 1e6


def reserve_step(
    state: Schedule, now: float, wall: float, stated: float | None, *, counting: bool = False
) -> tuple[Schedule, Grant]:
    """Take the next slot: the state to store, and what the caller gets.

    `stated` is the caller's --rate: it becomes the schedule's limit when none fresher is
    known, or when it is at least the stated limit (so the highest rate stated by a live
    process holds, and a lower one takes over when that lapses). A limit that a run
    learned or that the server stated beats any --rate until it expires.

    With no limit known nothing is reserved; `counting` still counts the request, so
    that processes that have met a limit but know none yet can each measure their share
    of the token's requests (and publish the token's limit, not their share of it)."""
    limit = state.limit if state.limit is not None and state.limit.fresh(wall) else None
    lapsed_or_lower = limit is None or (limit.how == "stated" and limit.per_s <= (stated or 0))
    if stated is not None and usable_rate(stated) and lapsed_or_lower:
        limit = SharedLimit(stated, "stated", wall)
    if limit is None:
        count = state.count + 1 if counting else state.count
        return replace(state, limit=None, count=count), Grant(0.0, None, count)
    # Slots waiting their turn put the schedule ahead by a few intervals; more than this
    # (even at an hourly rate) is a clock that stepped back.
    ahead = max(MAX_AHEAD_S, QUEUED_SLOTS / limit.per_s)
    tat = state.tat if state.tat <= now + ahead else now
    paused = state.paused_until if state.paused_until <= now + MAX_PAUSE_S else now
    start = max(tat, now, paused)
    count = state.count + 1
    return (
        Schedule(tat=start + 1.0 / limit.per_s, paused_until=paused, count=count, limit=limit),
        Grant(start - now, limit, count, max(0.0, now - max(tat, paused))),
    )


def publish_step(state: Schedule, wall: float, per_s: float, how: How) -> Schedule:
    """Record a limit learned by a run or stated by the server: it replaces whatever was
    there, since the newest evidence is the best. A stated --rate goes through
    `reserve_step` instead."""
    if not usable_rate(per_s):
        return state
    return replace(state, limit=SharedLimit(per_s, how, wall))


def pause_step(state: Schedule, now: float, seconds: float) -> Schedule:
    """A Retry-After heard by one process: no slot starts before it ends."""
    seconds = min(MAX_PAUSE_S, max(0.0, seconds)) if math.isfinite(seconds) else 0.0
    return replace(state, paused_until=max(state.paused_until, now + seconds))


@dataclass(frozen=True, slots=True)
class BudgetReport:
    """What the summary and the metrics say of the shared budget."""

    store: str
    fingerprint: str
    shared: bool  # at least one request took its slot from the shared schedule
    per_s: float | None  # the limit the schedule ran at last
    how: How | None

    @property
    def rounded_per_s(self) -> float | None:
        """`per_s` as the summary and the metrics state it: to the thousandth."""
        return None if self.per_s is None else round(self.per_s, 3)

    def fields(self) -> dict[str, object]:
        """As the summary's flat fields."""
        return {
            "rate_store": self.store,
            "rate_budget_shared": self.shared,
            "rate_budget_per_s": self.rounded_per_s,
            "rate_budget_source": self.how,
        }


class RateStore(Protocol):
    """A shared schedule, keyed by token fingerprint. Every method raises StoreError on
    any failure of the store; none ever raises anything else."""

    description: str

    async def reserve(self, stated: float | None, *, counting: bool = False) -> Grant: ...

    async def publish(self, per_s: float, how: How) -> None: ...

    async def pause(self, seconds: float) -> None: ...

    async def peek(self) -> SharedLimit | None:
        """The fresh limit, if any, without taking a slot."""
        ...

    async def close(self) -> None: ...
