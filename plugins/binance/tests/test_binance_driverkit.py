"""framework.driverkit: backoff, stream cache, polling within a budget."""

from __future__ import annotations

import asyncio
import random

import pytest

from framework.driverkit import Backoff, PollSource, StreamCache, poll_sources
from framework.models import PositionUpdate


def update(contracts, sequence, side="long"):
    return PositionUpdate(venue="v", symbol="S", side=side if contracts else None, contracts=contracts,
                          sequence=sequence, timestamp=sequence)


def test_backoff_is_capped_jittered_and_reproducible():
    a, b = Backoff(0.1, 1.0, 0.0, random.Random(3)), Backoff(0.1, 1.0, 0.0, random.Random(3))
    delays = [a.next_delay() for _ in range(20)]
    assert delays == [b.next_delay() for _ in range(20)]
    assert all(0 <= d <= 1.0 for d in delays) and len(set(delays)) > 1
    assert max(delays[:1]) <= 0.1  # first ceiling is the base
    a.reset()
    assert a.attempts == 0 and a.next_delay() <= 0.1
    with pytest.raises(ValueError):
        Backoff(0, 1)


async def test_cache_ignores_stale_updates_and_notifies():
    cache = StreamCache()
    assert cache.apply(update(5, 10))
    assert cache.apply(update(0, 12))
    assert not cache.apply(update(5, 11))  # late frame cannot resurrect the position
    assert cache.position("S").contracts == 0
    waiter = asyncio.create_task(cache.wait_changed(5))
    await asyncio.sleep(0)
    cache.apply(update(3, 13))
    assert await waiter is True
    assert await cache.wait_changed(0.01) is False


async def test_poll_sources_wakes_on_change_and_respects_budget():
    cache = StreamCache()
    calls = {"rest": 0}

    async def stream():
        return cache.position("S")

    async def rest():
        calls["rest"] += 1

    asyncio.get_running_loop().call_later(0.05, cache.apply, update(2, 1))
    result = await poll_sources([PollSource("stream", stream), PollSource("rest", rest, every_ms=10_000)],
                                5_000, wake=cache.wait_changed, round_interval_ms=60_000)
    # Rounds are a minute apart and the budget is 5 s: only the wake-up can bring the stream's answer.
    assert result.source == "stream" and result.answer.contracts == 2
    assert result.rounds == 2 and calls["rest"] == 1

    empty = await poll_sources([PollSource("rest", rest)], 100, round_interval_ms=20)
    assert empty.answer is None and 100 <= empty.elapsed_ms < 5_000 and empty.rounds >= 2
