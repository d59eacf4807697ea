"""framework.driverkit: backoff, the stream state a driver asks (the core's book), polling within a budget."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import pytest

from framework.driverkit import (
    Backoff,
    PollSource,
    attach_stream_state,
    poll_sources,
    stream_flat_since,
    wait_stream_change,
)
from framework.engine.book import PositionBook
from framework.models import PositionUpdate
from framework.plugins import new_plugin_manager
from framework.protocols import StreamEvidence


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


def book() -> PositionBook:
    return PositionBook("v", "default", new_plugin_manager(), store=None)


class PlainSink:
    """A stream sink that is no stream evidence (not the core's book)."""

    async def on_event(self, event): ...

    async def on_connected(self, reconnect): ...

    async def on_disconnected(self, detail): ...

    def on_malformed(self, raw, error): ...


async def test_flat_only_on_the_books_evidence_never_without():
    state = book()
    assert stream_flat_since(None, "S", 0) is False  # no evidence: not known flat, the venue is asked
    assert stream_flat_since(state, "S", 0) is False  # the stream said nothing yet
    await state.on_event(update(5, 10))
    assert stream_flat_since(state, "S", 0) is False
    await state.on_event(update(0, 12))
    assert stream_flat_since(state, "S", 12) and stream_flat_since(state, "S", 0)
    assert stream_flat_since(state, "S", 13) is False  # flat before the open it would contradict
    await state.on_event(update(5, 11))  # a late frame cannot resurrect the position
    assert stream_flat_since(state, "S", 12)
    await state.on_event(update(3, 13, side="short"))
    assert stream_flat_since(state, "S", 0) is False


def test_the_connection_holds_the_books_evidence_only_while_the_stream_runs():
    conn = SimpleNamespace(stream_state=None)
    first, second = book(), book()
    assert isinstance(first, StreamEvidence) and not isinstance(PlainSink(), StreamEvidence)
    with attach_stream_state(conn, PlainSink()) as state:
        assert state is None and conn.stream_state is None
    with attach_stream_state(conn, first) as state:
        assert state is first and conn.stream_state is first
        with attach_stream_state(conn, PlainSink()):  # a second stream into a plain sink changes nothing
            assert conn.stream_state is first
        assert conn.stream_state is first
        with attach_stream_state(conn, second):
            assert conn.stream_state is second
        assert conn.stream_state is first
    assert conn.stream_state is None  # no stream runs: no evidence


async def test_wait_stream_change_wakes_on_the_symbols_update():
    state = book()
    waiter = asyncio.create_task(wait_stream_change(state, "S", 60))
    await asyncio.sleep(0)  # let the waiter start waiting
    await state.on_event(update(2, 1))
    await asyncio.wait_for(waiter, 5)  # woken by the update, not by the 60 s timeout
    loop = asyncio.get_running_loop()
    start = loop.time()
    await wait_stream_change(None, "S", 0.05)  # no evidence: a plain polling interval
    await wait_stream_change(state, None, 0.05)
    assert loop.time() - start >= 0.1
    await asyncio.wait_for(wait_stream_change(state, "S", 0), 5)


async def test_poll_sources_wakes_on_change_and_respects_budget():
    state = book()
    calls = {"rest": 0}

    async def stream():
        return state.last_update("S")

    async def rest():
        calls["rest"] += 1

    loop = asyncio.get_running_loop()
    loop.call_later(0.05, lambda: loop.create_task(state.on_event(update(2, 1))))
    result = await poll_sources([PollSource("stream", stream), PollSource("rest", rest, every_ms=10_000)],
                                5_000, wake=lambda timeout_s: state.wait_changed("S", timeout_s),
                                round_interval_ms=60_000)
    # Rounds are a minute apart and the budget is 5 s: only the wake-up can bring the stream's answer.
    assert result.source == "stream" and result.answer.contracts == 2
    assert result.rounds == 2 and calls["rest"] == 1

    empty = await poll_sources([PollSource("rest", rest)], 100, round_interval_ms=20)
    assert empty.answer is None and 100 <= empty.elapsed_ms < 5_000 and empty.rounds >= 2
