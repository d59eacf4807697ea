"""The dead-receiver measurement's verdict (issue 18: closure p99 with a dead alert receiver within 10 % of
the p99 without): an equivalence test on a bootstrap interval of the ratio, ``tools/degraded.py``."""

from __future__ import annotations

import random

import pytest

from tools.degraded import ratio_interval, within


@pytest.mark.parametrize(("interval", "verdict"), [
    ([0.93, 1.08], "yes"), ([0.90, 1.10], "yes"),
    ([0.95, 1.12], "unresolved"), ([0.85, 1.02], "unresolved"),
    ([1.11, 1.40], "no"), ([0.70, 0.89], "no"),
])
def test_the_verdict_is_yes_only_when_the_whole_interval_lies_within_ten_percent(interval: list[float],
                                                                                  verdict: str) -> None:
    assert within(interval) == verdict


def test_a_90_percent_interval_lies_inside_the_95_percent_one_and_brackets_a_1_5x_slower_arm() -> None:
    rng = random.Random(1)
    base = [[rng.expovariate(1.0) for _ in range(50)] for _ in range(40)]
    slower = [[rng.expovariate(1.0) * 1.5 for _ in range(50)] for _ in range(40)]
    wide = ratio_interval(base, slower, 0.99, 0.95)
    narrow = ratio_interval(base, slower, 0.99, 0.90)
    assert wide[0] <= narrow[0] < 1.5 < narrow[1] <= wide[1]
    assert within(narrow) == "no"
