"""The virtual-time model of clients sharing a stated limit (benchmarks/share_model.py)."""

from __future__ import annotations

import pytest

from benchmarks.share_model import main, override_constants, run
from orchestrator.pacing.adaptive import AdaptiveRate
from orchestrator.pacing.sharing import Sharing
from orchestrator.pacing.window import Window


def test_two_clients_sharing_a_limit_use_it_and_end_near_even() -> None:
    outcome = run(2, 10.0, 5, seed=1, others_stop=False)
    assert outcome.efficiency >= 0.9
    assert outcome.slowest_over_fastest < 1.6
    assert 0 < outcome.throttled_share < 0.2


def test_the_client_left_alone_climbs_back_to_the_limit() -> None:
    outcome = run(2, 50.0, 10, seed=1, others_stop=True)
    assert outcome.back_after_s is not None
    assert outcome.back_after_s < 15


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "NOPE=1"], "no such constant"),
        (["--set", "Nope.CUT=1"], "no such constant"),
        (["--set", "Sharing.run=1"], "no such constant"),
        (["--set", "Sharing.CUT=x"], "not a number"),
        (["--limits", "10", "--bursts", "1", "2"], "one --bursts value"),
    ],
)
def test_bad_arguments_are_a_one_line_error(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert message in str(stopped.value)


def test_set_reaches_the_rate_and_its_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AdaptiveRate, "OVER_TRIM", AdaptiveRate.OVER_TRIM)
    monkeypatch.setattr(Sharing, "CUT", Sharing.CUT)
    monkeypatch.setattr(Window, "ANSWERS", Window.ANSWERS)
    override_constants(["OVER_TRIM=0.1", "Sharing.CUT=0.6", "Window.ANSWERS=10"], "prog")
    assert (AdaptiveRate.OVER_TRIM, Sharing.CUT, Window.ANSWERS) == (0.1, 0.6, 10)
    assert isinstance(Window.ANSWERS, int)
