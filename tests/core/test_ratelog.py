from __future__ import annotations

import logging

import pytest

from sidekick.core.ratelog import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rlog(clock: Clock) -> RateLimitedLog:
    return RateLimitedLog(logging.getLogger("sidekick.test.ratelog"), 60.0, clock=clock)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sidekick.test.ratelog"]


def test_first_occurrence_is_logged_and_repeats_within_the_interval_are_counted(
    rlog: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert rlog.warning("emfile", "Cannot open %s.", "a.log")
    for i in range(500):
        clock.now += 0.1
        assert not rlog.warning("emfile", "Cannot open %s.", f"{i}.log")
    assert lines(caplog) == ["Cannot open a.log."]
    assert rlog.held("emfile") == 500


def test_next_line_after_the_interval_carries_the_count(
    rlog: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rlog.warning("k", "Disk full.")
    for _ in range(41):
        clock.now += 1
        rlog.warning("k", "Disk full.")
    clock.now += 60
    assert rlog.warning("k", "Disk full again.")
    assert lines(caplog) == [
        "Disk full.",
        "Disk full again. (happened 41 more times in the last 101s)",
    ]
    assert rlog.held("k") == 0


def test_flush_reports_held_counts_once_their_interval_passed(
    rlog: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rlog.error("k", "Write failed: %s.", "ENOSPC")
    clock.now += 1
    rlog.error("k", "Write failed: %s.", "EIO")
    assert rlog.flush() == 0  # the interval has not passed
    clock.now += 60
    assert rlog.flush() == 1
    assert rlog.flush() == 0  # reported once
    assert lines(caplog)[-1] == "Write failed: EIO. (happened 1 more time in the last 61s)"
    assert caplog.records[-1].levelno == logging.ERROR


def test_keys_are_limited_separately(
    rlog: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert rlog.warning("a", "A")
    assert rlog.warning("b", "B")
    assert not rlog.warning("a", "A")
    assert lines(caplog) == ["A", "B"]


def test_forget_reports_what_was_held_and_logs_the_next_at_once(
    rlog: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rlog.warning("p", "P")
    rlog.warning("p", "P")
    rlog.forget("p")
    assert rlog.warning("p", "P back")
    assert lines(caplog) == ["P", "P (happened 1 more time in the last 0s)", "P back"]
