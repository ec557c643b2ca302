from __future__ import annotations

import pytest

from tests.helpers.simfixture import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
