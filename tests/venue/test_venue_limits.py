"""The façades' request accounting and lifetimes, on a clock the test moves (framework/venue/limits.py)."""

from __future__ import annotations

from framework.venue.limits import Ban, FixedWindow, Lifetimes


def test_a_fixed_window_counts_until_its_end_and_starts_again():
    window = FixedWindow(window_ms=60_000, limit=10)
    assert window.charge(120_000, 5) and window.charge(179_999, 5)
    assert window.remaining() == 0 and window.reset_at(179_999) == 180_000
    assert not window.charge(179_999, 1) and window.used == 11
    assert window.charge(180_000, 1) and window.used == 1  # a new minute


def test_a_ban_refuses_until_it_ends_and_rounds_its_wait_up_to_whole_seconds():
    ban = Ban()
    assert not ban.active(0) and ban.remaining_s(0) == 0
    ban.impose(1_000, 120_000)
    assert ban.active(120_999) and ban.remaining_s(120_001) == 1 and ban.remaining_s(1_000) == 120
    assert not ban.active(121_000)


def test_lifetimes_lapse_at_their_deadline_unless_extended():
    keys: Lifetimes[str] = Lifetimes()
    keys.start("a", 0, 3_600_000)
    keys.start("b", 0, 3_600_000)
    assert keys.extend("a", 3_000_000, 3_600_000)
    assert keys.lapsed(3_599_999) == []
    assert keys.lapsed(3_600_000) == ["b"]
    assert not keys.extend("b", 3_600_000, 3_600_000)  # lapsed: a keep-alive cannot revive it
    assert keys.deadline("a") == 6_600_000
