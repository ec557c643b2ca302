"""`IdStates` behaves exactly as a `dict[str, IdState]` would, in a fraction of the memory."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from orchestrator.ledger.idstore import IdState, IdStates

# Short suffixes over a tiny alphabet: many IDs are prefixes of others ("fl_run_a",
# "fl_run_ab") and share buckets, which is where a byte-level store could go wrong.
_rule_ids = st.text("abAB01", min_size=1, max_size=6).map(lambda s: "fl_run_" + s)
# Strings the rule refuses: they must be kept all the same, and never confused with IDs.
_other_keys = st.one_of(
    st.text(max_size=8),
    st.text("ab-_ é\ud800", min_size=1, max_size=4).map(lambda s: "fl_run_" + s),
    st.just("fl_run_"),
    st.just("fl_run_" + "a" * 65),
    st.just("FL_RUN_abc"),
)
_keys = st.one_of(_rule_ids, _rule_ids, _other_keys)
_states = st.sampled_from(list(IdState))


class AgainstADict(RuleBasedStateMachine):
    """Random sets, gets and deletes on a tiny store (so it grows often) and on a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.store = IdStates(buckets=1, load=2)
        self.model: dict[str, IdState] = {}

    keys = Bundle("keys")

    @rule(target=keys, key=_keys)
    def new_key(self, key: str) -> str:
        return key

    @rule(key=keys, state=_states)
    def set(self, key: str, state: IdState) -> None:
        self.store[key] = state
        self.model[key] = state

    @rule(key=keys, state=_states)
    def get_then_set(self, key: str, state: IdState) -> None:
        """The engine's pattern: look, then write the same ID."""
        assert self.store.get(key) == self.model.get(key)
        self.store[key] = state
        self.model[key] = state

    @rule(key=keys)
    def get(self, key: str) -> None:
        assert self.store.get(key) == self.model.get(key)
        assert (key in self.store) == (key in self.model)

    @rule(key=keys)
    def delete(self, key: str) -> None:
        if key in self.model:
            del self.store[key]
            del self.model[key]
        else:
            with pytest.raises(KeyError):
                del self.store[key]

    @invariant()
    def same_contents(self) -> None:
        assert len(self.store) == len(self.model)
        assert dict(self.store.pairs()) == self.model
        assert sorted(self.store) == sorted(self.model)


TestAgainstADict = AgainstADict.TestCase
TestAgainstADict.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_every_id_is_found_after_many_splits() -> None:
    store = IdStates(buckets=1, load=1)
    ids = [f"fl_run_{n:x}" for n in range(5_000)]
    for n, run_id in enumerate(ids):
        store[run_id] = IdState(n % 5 - 1)
    assert len(store) == len(ids)
    assert all(store.get(run_id) == IdState(n % 5 - 1) for n, run_id in enumerate(ids))
    assert store.get("fl_run_nothere") is None


def test_prefix_of_a_stored_id_is_not_found() -> None:
    store = IdStates()
    store["fl_run_abcdef"] = IdState.SUCCEEDED
    assert store.get("fl_run_abc") is None
    assert store.get("fl_run_abcdefg") is None
    assert "fl_run_abcdef" in store


def test_strings_outside_the_run_id_rule_are_kept_exactly() -> None:
    store = IdStates()
    odd = ["fl_run_a-b", "fl_run_\ud800", "fl_run_" + "x" * 65, "fl_run_", "éé", ""]
    for n, key in enumerate(odd):
        store[key] = IdState(n % 4)
    assert dict(store.pairs()) == {key: IdState(n % 4) for n, key in enumerate(odd)}


def test_with_state_lists_exactly_the_ids_in_that_state() -> None:
    store = IdStates(buckets=2, load=1)
    for n in range(100):
        store[f"fl_run_{n}"] = IdState.IN_DOUBT if n % 7 == 0 else IdState.SUCCEEDED
    store["odd one"] = IdState.IN_DOUBT
    expected = {f"fl_run_{n}" for n in range(0, 100, 7)} | {"odd one"}
    assert set(store.with_state(IdState.IN_DOUBT)) == expected


def test_a_value_that_is_not_an_id_state_is_refused() -> None:
    store = IdStates()
    with pytest.raises(ValueError, match="not an IdState"):
        store["fl_run_a"] = 7  # type: ignore[assignment]
    assert len(store) == 0


@pytest.mark.parametrize(("buckets", "load"), [(0, 64), (3, 64), (1024, 0)])
def test_bad_tuning_is_refused(buckets: int, load: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        IdStates(buckets=buckets, load=load)


def test_takes_under_a_third_of_the_memory_of_a_dict() -> None:
    """The reason the module exists; IDs shaped as the API's (26-character suffixes)."""
    count = 20_000
    ids = [f"fl_run_{n:026d}" for n in range(count)]

    def traced_bytes(store: IdStates | dict[str, IdState]) -> int:
        tracemalloc.start()
        try:
            for run_id in ids:
                store[run_id.replace("0", "a", 1)] = IdState.QUEUED  # fresh str, as parsed
            return tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

    compact = traced_bytes(IdStates())
    plain = traced_bytes({})
    assert compact * 3 < plain
