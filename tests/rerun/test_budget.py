"""The error budget: limits by count or share, per class; 429s never count. Pure."""

from __future__ import annotations

import pytest

from orchestrator.rerun.budget import ErrorBudget, error_class
from orchestrator.units import MIN_SAMPLE, Limit


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("10", Limit(count=10)),
        (" 3 ", Limit(count=3)),
        ("5%", Limit(percent=5.0)),
        ("0.5%", Limit(percent=0.5)),
    ],
)
def test_limits_parse_as_a_count_or_a_share(text: str, limit: Limit) -> None:
    assert Limit.parse(text) == limit


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "0%", "101%", "lots", "5 %x", ""])
def test_bad_limits_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"count like 10|whole number|above 0%"):
        Limit.parse(text)


def test_error_classes() -> None:
    assert error_class("not_found") == "client"
    assert error_class("client_error") == "client"
    assert error_class("server_error") == "server"
    assert error_class("timeout") == "server"
    assert error_class("connection") == "server"
    assert error_class("rate_limited") is None


def test_a_count_is_spent_when_reached() -> None:
    budget = ErrorBudget(total=Limit(count=3))
    assert budget.failed_with("not_found") is None
    assert budget.failed_with("timeout") is None
    reason = budget.failed_with("server_error")
    assert reason == "3 failures of 3 settled IDs reached the limit of 3"


def test_classes_are_counted_apart() -> None:
    budget = ErrorBudget(client=Limit(count=2), server=Limit(count=5))
    for _ in range(4):
        assert budget.failed_with("server_error") is None
    assert budget.failed_with("not_found") is None
    reason = budget.failed_with("client_error")
    assert reason is not None
    assert reason.startswith("2 client failures (4xx)")


def test_rate_limited_failures_never_spend_the_budget() -> None:
    budget = ErrorBudget(total=Limit(count=1))
    assert all(budget.failed_with("rate_limited") is None for _ in range(10))


def test_a_share_is_judged_only_after_a_sample() -> None:
    budget = ErrorBudget(total=Limit(percent=10.0))
    assert budget.failed_with("not_found") is None  # 1 of 1 is not yet "100% failed"
    for _ in range(MIN_SAMPLE - 3):
        budget.succeeded()
    assert budget.failed_with("not_found") is None  # 2 of 19
    reason = budget.failed_with("not_found")  # 3 of 20 = 15%
    assert reason is not None
    assert "of 20 settled IDs reached the limit of 10%" in reason
