"""A compact, exact map from run ID to `IdState`: the one structure that grows with the input.

A `dict[str, IdState]` costs about 135 bytes an ID: the 33-character `str` object (96 bytes
as allocated) and its slot in the hash table. `IdStates` keeps a run ID that follows the
rule (`fl_run_` + 1 to 64 ASCII letters or digits) as its suffix's bytes between a tag byte
and a state byte, appended to one of many `bytearray` buckets picked by hash: 31 bytes an
ID allocated for the usual 26-character suffix, 34 to 39 as the resident set sees it
(`python -m benchmarks.idstore_bench`); a lookup costs about five times a dict's. Any
other string (a hand-edited ledger may hold one) goes to a plain dict beside them, so the
map is exact for every key: no ID is ever taken for another, whatever the hashes.

A bucket is its entries back to back, each `TAG suffix STATE`:

    \\xb7 5hd3vhsiysh7mcz2xm3wecc5qb \\x04 \\x91 abc \\x02 \\x9e abcd \\x00 ...

TAG is 0x80 to 0xff (seven bits of the suffix's hash), STATE is 0x00 to 0x04, and neither
can be a letter or a digit. A lookup jumps from one byte equal to its TAG to the next with
`bytearray.find` of one byte (memchr: fast; a search for the whole suffix would crawl
through letters and digits a byte at a time), and compares the suffix there: one entry in
128 shares a tag, so that is nearly always one comparison. A bucket is split in two each time
the average passes `load` entries (linear hashing), so buckets stay small.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, MutableMapping
from typing import Final

from orchestrator.ids import MAX_SUFFIX_LEN, RUN_ID_PREFIX


class IdState(enum.IntEnum):
    """Where an ID stands. `succeeded` is never left."""

    QUEUED = -1  # taken up by the running session; replay never yields it
    RESENDABLE = 0
    IN_DOUBT = 1
    FAILED = 2
    SUCCEEDED = 3


# The states in value order, QUEUED (-1) first; state number i is stored as the byte i.
_STATES: Final = tuple(sorted(IdState))
_CODES: Final = {state: number for number, state in enumerate(_STATES)}
_LAST_CODE: Final = len(_STATES) - 1
_PREFIX: Final = RUN_ID_PREFIX.encode("ascii")
_PREFIX_LEN: Final = len(_PREFIX)
_ENTRY: Final = re.compile(rb"([\x80-\xff])([A-Za-z0-9]+)([\x00-\x04])")


def _suffix(run_id: str) -> bytes | None:
    """The stored form of a run ID that follows the rule, or None for any other string."""
    # bytes.isalnum is ASCII-only, and anything else encodes to bytes >= 0x80: exact.
    # "surrogatepass": a JSON ledger can hold a lone surrogate, which must not raise here.
    raw = run_id.encode("utf-8", "surrogatepass")
    suffix = raw[_PREFIX_LEN:]
    if raw.startswith(_PREFIX) and suffix.isalnum() and len(suffix) <= MAX_SUFFIX_LEN:
        return suffix
    return None


def _tag(hashed: int) -> int:
    # Bits the bucket index does not use until there are 2**56 buckets.
    return 0x80 | (hashed >> 56) & 0x7F


def _find(bucket: bytearray, tag: int, suffix: bytes) -> int:
    """The index of `suffix`'s state byte in `bucket`, or -1 when it is not there."""
    at = bucket.find(tag)
    while at >= 0:
        end = at + 1 + len(suffix)
        # Matching letters and digits cannot run into the bucket's last byte, a state byte,
        # so `end` is in range once the suffix matched; a state byte there means it ended.
        if bucket.startswith(suffix, at + 1) and bucket[end] <= _LAST_CODE:
            return end
        at = bucket.find(tag, at + 1)
    return -1


class IdStates(MutableMapping[str, IdState]):
    """`run ID -> IdState`, in a fraction of a dict's memory; iteration order is arbitrary.

    `buckets` (a power of two: how many to start with) and `load` (the average entries a
    bucket holds before one is split) are tuning knobs; tests make them tiny so that the
    splitting is exercised."""

    def __init__(self, buckets: int = 1024, load: int = 64) -> None:
        if buckets < 1 or buckets & (buckets - 1):
            raise ValueError(f"buckets must be a power of two, got {buckets}")
        if load < 1:
            raise ValueError(f"load must be at least 1, got {load}")
        self._buckets = [bytearray() for _ in range(buckets)]
        self._load = load
        # Linear hashing (Litwin, 1980): the buckets grow one split at a time, so there is
        # never a pause to move every entry, nor a moment holding the old and new tables.
        # A round starts with `_round` buckets and splits them in order (`_split` is the
        # next); once all are split, the next round starts with twice as many.
        self._round = buckets
        self._split = 0
        self._count = 0  # entries in the buckets; `_other` counts apart
        self._other: dict[str, IdState] = {}
        # Where the last `get` looked: (run_id, suffix, bucket, tag, index of the state byte
        # or -1). The set that usually follows a get (replay, admission) then need not search
        # again. Any change clears it, so it never describes a store that has moved on.
        self._last: tuple[str, bytes, bytearray, int, int] | None = None

    def get(self, run_id: str, default: IdState | None = None) -> IdState | None:  # type: ignore[override]
        suffix = _suffix(run_id)
        if suffix is None:
            return self._other.get(run_id, default)
        hashed = hash(suffix)
        bucket = self._buckets[self._index(hashed)]
        tag = _tag(hashed)
        at = _find(bucket, tag, suffix)
        self._last = (run_id, suffix, bucket, tag, at)
        return default if at < 0 else _STATES[bucket[at]]

    def __getitem__(self, run_id: str) -> IdState:
        state = self.get(run_id)
        if state is None:
            raise KeyError(run_id)
        return state

    def __contains__(self, run_id: object) -> bool:
        return isinstance(run_id, str) and self.get(run_id) is not None

    def __setitem__(self, run_id: str, state: IdState) -> None:
        code = _CODES.get(state)
        if code is None:
            raise ValueError(f"not an IdState: {state!r}")
        last, self._last = self._last, None
        if last is not None and last[0] is run_id:
            _, suffix, bucket, tag, at = last
        else:
            found = _suffix(run_id)
            if found is None:
                self._other[run_id] = IdState(state)
                return
            suffix = found
            hashed = hash(suffix)
            bucket = self._buckets[self._index(hashed)]
            tag = _tag(hashed)
            at = _find(bucket, tag, suffix)
        if at >= 0:
            bucket[at] = code
            return
        bucket.append(tag)
        bucket += suffix
        bucket.append(code)
        self._count += 1
        if self._count > len(self._buckets) * self._load:
            self._split_next()

    def __delitem__(self, run_id: str) -> None:
        self._last = None
        suffix = _suffix(run_id)
        if suffix is None:
            del self._other[run_id]
            return
        hashed = hash(suffix)
        bucket = self._buckets[self._index(hashed)]
        at = _find(bucket, _tag(hashed), suffix)
        if at < 0:
            raise KeyError(run_id)
        del bucket[at - len(suffix) - 1 : at + 1]
        self._count -= 1

    def __len__(self) -> int:
        return self._count + len(self._other)

    def __iter__(self) -> Iterator[str]:
        for run_id, _ in self.pairs():
            yield run_id

    def pairs(self) -> Iterator[tuple[str, IdState]]:
        """Every (run ID, state), without the lookup per ID that `items()` makes.

        As with a dict, adding IDs while this runs is an error (a BufferError here)."""
        for bucket in self._buckets:
            for entry in _ENTRY.finditer(bucket):
                yield RUN_ID_PREFIX + entry[2].decode("ascii"), _STATES[entry[3][0]]
        yield from self._other.items()

    def with_state(self, state: IdState) -> Iterator[str]:
        """The IDs in `state`, e.g. the in-doubt list."""
        for run_id, found in self.pairs():
            if found == state:
                yield run_id

    def _index(self, hashed: int) -> int:
        index = hashed & (self._round - 1)
        if index < self._split:  # already split this round: one more bit of the hash decides
            index = hashed & (2 * self._round - 1)
        return index

    def _split_next(self) -> None:
        """Split one bucket in two by one more bit of each entry's hash."""
        mask = 2 * self._round - 1
        stay, move = bytearray(), bytearray()
        for entry in _ENTRY.finditer(self._buckets[self._split]):
            if hash(entry[2]) & mask == self._split:
                stay += entry[0]
            else:
                move += entry[0]  # to the new bucket at index _split + _round
        self._buckets[self._split] = stay
        self._buckets.append(move)
        self._split += 1
        if self._split == self._round:
            self._round, self._split = 2 * self._round, 0


class IdSet:
    """A set of run IDs in the same compact form: the new run IDs a ledger names, so a
    rerun is never taken for an original (about 35 bytes an ID, as `IdStates`)."""

    def __init__(self) -> None:
        self._ids = IdStates()

    def add(self, run_id: str) -> None:
        # The state byte is unused here; any one will do.
        self._ids[run_id] = IdState.SUCCEEDED

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)
