"""The virtual-time model of rate discovery against each limiter shape
(benchmarks/discovery_model.py)."""

from __future__ import annotations

import pytest

from benchmarks.discovery_model import SHAPES, back_after, ideal_s, main, one_case
from tests.helpers.ratemodel import ModelRun


def test_a_bucket_with_no_burst_is_found_and_held_with_few_429s() -> None:
    figures = one_case(SHAPES["gcra-b0"], 20.0, 400, retry_after=False, seed=0)
    assert figures.efficiency >= 0.85
    assert figures.throttled <= 0.03
    assert figures.late_throttled <= figures.throttled


def test_a_sliding_counter_is_measured_against_what_it_sustains() -> None:
    """It lets one less than its limit through a window, held: the efficiency counts
    against that, so a client at its best reads near 1, not 0.95."""
    figures = one_case(SHAPES["sliding-counter"], 20.0, 400, retry_after=False, seed=0)
    assert 0.9 <= figures.efficiency <= 1.02


def test_every_shape_prints_a_row_with_and_without_retry_after(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--limits", "5", "--seeds", "1", "--ids", "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("limit")
    assert len(lines) == 1 + 2 * len(SHAPES)
    assert {line.split()[1] for line in lines[1:]} == set(SHAPES)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "NOPE=1"], "no such constant"),
        (["--set", "OVER_TRIM=x"], "not a number"),
    ],
)
def test_a_bad_setting_is_a_one_line_error(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert message in str(stopped.value)


def test_a_limit_under_2_per_s_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--limits", "1"])
    assert "--limits: 2 a second or more" in capsys.readouterr().err


def test_with_a_background_the_ideal_counts_half_the_limit_until_it_stops() -> None:
    assert ideal_s(100, 10.0, None) == 10.0
    assert ideal_s(20, 10.0, 8.0) == 4.0  # all within the shared stretch, at 5 a second
    assert ideal_s(100, 10.0, 8.0) == 8.0 + (100 - 40) / 10.0


def test_with_a_background_the_seconds_back_after_its_stop_are_measured() -> None:
    figures = one_case(SHAPES["gcra-b10"], 50.0, 1000, retry_after=False, seed=0, background=True)
    assert figures.back_after_s is not None
    assert 0 <= figures.back_after_s < 20
    assert 0.5 < figures.efficiency <= 1.02


def test_back_after_is_none_when_the_client_never_gets_the_limit() -> None:
    run = ModelRun()
    run.arrivals = [(at / 10, True) for at in range(100)]  # 10 a second against 50
    assert back_after(run, 50.0, 2.0) is None
    assert back_after(run, 10.0, 2.0) == 0.0
