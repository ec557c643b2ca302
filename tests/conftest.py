"""Fixtures every test gets, and those of the real programs some tests run against."""

from __future__ import annotations

from pathlib import Path

import pytest

# The real programs' fixtures, for every test module that asks for them by name.
from tests.helpers.nodeexporter import node_exporter  # noqa: F401 - a fixture
from tests.helpers.redisserver import redis_server, redis_url  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def _own_state_directory(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Each test gets its own state directory, so the default rate store (`auto`) never
    shares a schedule or a learned limit with another test or with the user's own."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state
