"""The shared schedule in Redis or Valkey: every process on every host that reaches it.

Each step is one Lua script (EVALSHA), which Redis runs atomically: `reserve`, `publish`
and `pause` do what `reserve_step`, `publish_step` and `pause_step` do, on one hash at
`orchestrator:rate-budget:v1:<key>`. The scripts read the clock with `TIME`, the server's
own, for both the schedule's `now` and the `wall` that dates a limit: the hosts' clocks
never meet, so they need not agree. Every write sets the hash to expire a little after a
learned limit would, so a token no longer used leaves nothing behind.

The numbers the steps use (the TTLs, MAX_AHEAD_S, QUEUED_SLOTS, MAX_PAUSE_S) come from
`ratestore` as script arguments. Numbers cross as strings both ways: Lua's are doubles, which
`%.17g` carries exactly, and Redis would cut a number in a script's reply to an integer.

Fields that are not numbers (written by hand, or by some other program) read as absent,
as in `localstore`: an unreadable `tat`, `paused_until` or `count` as 0, an unreadable
limit as none; the next write replaces them. A key of another type is a StoreError.

Timeouts are short and a step is retried once, at once, only when the connection broke
(a pooled connection the server had dropped): a store that is down fails the step fast,
and the caller paces alone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable
from typing import Final, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from orchestrator.errors import StoreError
from orchestrator.shared.store import (
    HOWS,
    LEARNED_TTL_S,
    MAX_AHEAD_S,
    MAX_PAUSE_S,
    QUEUED_SLOTS,
    STATED_TTL_S,
    Grant,
    How,
    SharedLimit,
    redacted_url,
    usable_rate,
)

KEY_PREFIX: Final = "orchestrator:rate-budget:v1:"
# An hour past the longest a limit is kept: a hash no process writes for that long holds
# nothing anyone would read.
EXPIRE_S: Final = LEARNED_TTL_S + 3600.0
# For connecting and for each reply: a step takes well under a millisecond.
TIMEOUT_S: Final = 1.0
CLIENT_NAME: Final = "orchestrator-rate-budget"

_HOW: Final[dict[str, How]] = {how: how for how in HOWS}

# Shared by the three writing scripts. ARGV[1..6] are the constants, ARGV[7..] the step's.
_PRELUDE: Final = """
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local STATED_TTL_S = tonumber(ARGV[1])
local LEARNED_TTL_S = tonumber(ARGV[2])
local MAX_AHEAD_S = tonumber(ARGV[3])
local MAX_PAUSE_S = tonumber(ARGV[4])
local QUEUED_SLOTS = tonumber(ARGV[5])
local EXPIRE_MS = ARGV[6]
local HOWS = {%(hows)s}
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local wall = now

-- A finite number, else nil (tonumber reads 'nan' and 'inf' too).
local function number(text)
  local x = tonumber(text)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return nil end
  return x
end

local function fmt(x) return string.format('%%.17g', x) end

local function read()
  local h = redis.call('HMGET', key,
    'tat', 'paused_until', 'count', 'limit_per_s', 'limit_how', 'limit_at')
  local count = number(h[3]) or 0
  if count < 0 or count >= 9007199254740992 then count = 0 end
  local state = {
    tat = number(h[1]) or 0,
    paused_until = number(h[2]) or 0,
    count = math.floor(count),
    has_limit = h[4] or h[5] or h[6],
  }
  local per_s, at = number(h[4]), number(h[6])
  if per_s ~= nil and per_s > 0 and at ~= nil and HOWS[h[5]] then
    state.limit = {per_s = per_s, how = h[5], at = at}
  end
  return state
end

-- As SharedLimit.fresh: a stated limit lasts STATED_TTL_S, or three intervals; one
-- dated in the future (a clock stepped back) is not trusted.
local function fresh(limit)
  local age = wall - limit.at
  if age < -STATED_TTL_S then return false end
  if limit.how == 'stated' then
    return age < math.max(STATED_TTL_S, 3.0 / limit.per_s)
  end
  return age < LEARNED_TTL_S
end
"""

# ARGV[7]: the caller's --rate, '' for none (only a usable rate is sent); ARGV[8]: '1'
# to count the request when there is no limit (reserve_step's `counting`).
# Reply: {delay, per_s, how, at, count}, per_s/how/at '' when there is no limit.
_RESERVE: Final = """
local stated = number(ARGV[7])
local counting = ARGV[8] == '1'
local state = read()
local limit = nil
if state.limit ~= nil and fresh(state.limit) then limit = state.limit end
local lapsed_or_lower = limit == nil or (limit.how == 'stated' and limit.per_s <= (stated or 0))
if stated ~= nil and lapsed_or_lower then
  limit = {per_s = stated, how = 'stated', at = wall}
end
if limit == nil then
  if state.has_limit then
    redis.call('HDEL', key, 'limit_per_s', 'limit_how', 'limit_at')
    redis.call('PEXPIRE', key, EXPIRE_MS)
  end
  local count = state.count
  if counting then
    count = count + 1
    redis.call('HSET', key, 'count', string.format('%d', count))
    redis.call('PEXPIRE', key, EXPIRE_MS)
  end
  return {'0', '', '', '', string.format('%d', count)}
end
-- Slots waiting their turn put the schedule ahead by a few intervals; more than this
-- is a clock that stepped back.
local ahead = math.max(MAX_AHEAD_S, QUEUED_SLOTS / limit.per_s)
local tat = state.tat
if tat > now + ahead then tat = now end
local paused = state.paused_until
if paused > now + MAX_PAUSE_S then paused = now end
local start = math.max(tat, now, paused)
local count = state.count + 1
redis.call('HSET', key,
  'tat', fmt(start + 1 / limit.per_s), 'paused_until', fmt(paused),
  'count', string.format('%d', count), 'limit_per_s', fmt(limit.per_s),
  'limit_how', limit.how, 'limit_at', fmt(limit.at))
redis.call('PEXPIRE', key, EXPIRE_MS)
return {fmt(start - now), fmt(limit.per_s), limit.how, fmt(limit.at), string.format('%d', count),
  fmt(math.max(0, now - math.max(tat, paused)))}
"""

# ARGV[7], ARGV[8]: a usable rate and where it came from.
_PUBLISH: Final = """
local per_s = number(ARGV[7])
local how = ARGV[8]
if per_s == nil or per_s <= 0 or not HOWS[how] then
  return redis.error_reply('ERR orchestrator: not a limit to publish')
end
redis.call('HSET', key, 'limit_per_s', fmt(per_s), 'limit_how', how, 'limit_at', fmt(wall))
redis.call('PEXPIRE', key, EXPIRE_MS)
return 1
"""

# ARGV[7]: the pause in seconds, any float's repr.
_PAUSE: Final = """
local seconds = math.min(MAX_PAUSE_S, math.max(0, number(ARGV[7]) or 0))
local paused = math.max(read().paused_until, now + seconds)
redis.call('HSET', key, 'paused_until', fmt(paused))
redis.call('PEXPIRE', key, EXPIRE_MS)
return 1
"""

# Reads only: {seconds, microseconds, per_s, how, at}.
_PEEK: Final = """
local time = redis.call('TIME')
local h = redis.call('HMGET', KEYS[1], 'limit_per_s', 'limit_how', 'limit_at')
return {time[1], time[2], h[1] or '', h[2] or '', h[3] or ''}
"""


def _script(body: str) -> str:
    hows = ", ".join(f"['{how}'] = true" for how in HOWS)
    return _PRELUDE % {"hows": hows} + body


RESERVE_SCRIPT: Final = _script(_RESERVE)
PUBLISH_SCRIPT: Final = _script(_PUBLISH)
PAUSE_SCRIPT: Final = _script(_PAUSE)
PEEK_SCRIPT: Final = _PEEK

_CONSTANTS: Final = (
    repr(STATED_TTL_S),
    repr(LEARNED_TTL_S),
    repr(MAX_AHEAD_S),
    repr(MAX_PAUSE_S),
    repr(float(QUEUED_SLOTS)),
    str(int(EXPIRE_S * 1000)),
)


def redis_key(key: str) -> str:
    """The hash that holds the schedule of `key` (a token's fingerprint)."""
    return KEY_PREFIX + key


class RedisStore:
    """One key's schedule in a Redis or Valkey server. Open it with `connect`."""

    def __init__(self, client: redis.asyncio.Redis, key: str, url: str) -> None:
        """Use `connect`, which checks that the server answers."""
        self.description = "redis " + _scrub(redacted_url(url), url)
        self._client = client
        self._url = url
        self._keys = [redis_key(key)]
        self._reserve = client.register_script(RESERVE_SCRIPT)
        self._publish = client.register_script(PUBLISH_SCRIPT)
        self._pause = client.register_script(PAUSE_SCRIPT)
        self._peek = client.register_script(PEEK_SCRIPT)

    @classmethod
    async def connect(cls, url: str, key: str) -> RedisStore:
        """A store on the server at `url` (redis:// or rediss://), once it answers PING.

        Raises StoreError when the URL is unusable or the server does not answer."""
        description = "redis " + _scrub(redacted_url(url), url)
        try:
            client = redis.asyncio.Redis.from_url(
                url,
                socket_connect_timeout=TIMEOUT_S,
                socket_timeout=TIMEOUT_S,
                retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
                decode_responses=True,
                client_name=CLIENT_NAME,
            )
        except Exception as exc:
            raise StoreError(f"cannot use {description}: {_reason(exc, url)}") from None
        store = cls(client, key, url)
        try:
            # redis-py types its commands for both clients: this one's return awaitables.
            await cast("Awaitable[bool]", client.ping())
        except Exception as exc:
            await store._close_quietly()
            raise StoreError(f"cannot reach {description}: {_reason(exc, url)}") from None
        return store

    async def reserve(self, stated: float | None, *, counting: bool = False) -> Grant:
        rate = repr(float(stated)) if stated is not None and usable_rate(stated) else ""
        args = [*_CONSTANTS, rate, "1" if counting else ""]
        try:
            reply = await self._reserve(keys=self._keys, args=args)
            return _grant(reply)
        except Exception as exc:
            raise self._error("reserve a slot in", exc) from None

    async def publish(self, per_s: float, how: How) -> None:
        if how not in _HOW:
            raise StoreError(f"cannot publish a limit stated by {how!r}: not one of {HOWS}")
        if not usable_rate(per_s):
            return
        try:
            await self._publish(keys=self._keys, args=[*_CONSTANTS, repr(float(per_s)), how])
        except Exception as exc:
            raise self._error("publish a limit to", exc) from None

    async def pause(self, seconds: float) -> None:
        try:
            await self._pause(keys=self._keys, args=[*_CONSTANTS, repr(float(seconds))])
        except Exception as exc:
            raise self._error("pause", exc) from None

    async def peek(self) -> SharedLimit | None:
        try:
            reply = await self._peek(keys=self._keys)
            wall, limit = _peeked(reply)
        except Exception as exc:
            raise self._error("read", exc) from None
        return limit if limit is not None and limit.fresh(wall) else None

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception as exc:
            raise self._error("close", exc) from None

    async def _close_quietly(self) -> None:
        """Close, ignoring a failure: for a store already failed."""
        with contextlib.suppress(Exception):
            await self._client.aclose()

    def _error(self, doing: str, exc: BaseException) -> StoreError:
        return StoreError(f"cannot {doing} {self.description}: {_reason(exc, self._url)}")


def _grant(reply: object) -> Grant:
    """The reserve script's reply; ValueError, TypeError, KeyError when unreadable."""
    if not isinstance(reply, list) or len(reply) not in (5, 6):
        raise ValueError(f"unreadable reply {reply!r:.80}")
    delay, per_s, how, at, count, *idle = (_text(item) for item in reply)
    if not per_s:
        return Grant(_finite(delay), None, int(count))
    limit = SharedLimit(_finite(per_s), _HOW[how], _finite(at))
    return Grant(_finite(delay), limit, int(count), _finite(idle[0]) if idle else 0.0)


def _peeked(reply: object) -> tuple[float, SharedLimit | None]:
    """The peek script's reply: server time, and the stored limit if it reads as one."""
    if not isinstance(reply, list) or len(reply) != 5:
        raise ValueError(f"unreadable reply {reply!r:.80}")
    seconds, micros, per_s, how, at = (_text(item) for item in reply)
    wall = int(seconds) + int(micros) / 1e6
    try:
        limit = SharedLimit(_finite(per_s), _HOW[how], _finite(at))
    except (ValueError, KeyError):
        return wall, None  # absent, or not written by a store: as the scripts read it
    return wall, limit if limit.per_s > 0 else None


def _text(item: object) -> str:
    if isinstance(item, bytes):
        return item.decode()
    if isinstance(item, str):
        return item
    raise TypeError(f"unreadable reply item {item!r:.40}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r:.40}")
    return value


def _secrets(url: str) -> list[str]:
    """The password in `url`, as written and decoded, and any password= in its query."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [value for name, value in parse_qsl(parts.query) if name == "password"]
    except ValueError:
        return []
    found += [unquote(secret) for secret in found]
    # Longest first, so a password that holds another is replaced whole.
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def _reason(exc: BaseException, url: str) -> str:
    """One line, fit for a log: what went wrong, with no password in it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        text = f"timed out ({text})"
    return _scrub(text, url)
