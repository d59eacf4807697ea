"""What the venues send besides our own fills (issue 13 item 10, docs/conformance.md B19-B24 / Y15-Y18): funding,
forced closes, the stream's lifetime; both venues, longs and shorts."""

from __future__ import annotations

from decimal import Decimal

import pytest

SIDES = ["long", "short"]


@pytest.mark.parametrize("side", SIDES)
async def test_funding_is_no_position_change(env, side):
    await env.start()
    await env.engine.open(env.intent(side, contracts="43"))
    await env.settled()
    book = env.parts.book
    env.venue.settle_funding(env.symbol, Decimal("0.0001"))
    env.venue.settle_funding(env.symbol, Decimal("-0.0003"))
    env.venue.manual_close("default", env.symbol, Decimal(3))  # a marker behind the funding frames
    await env.recorder.wait_for(lambda r: [e.contracts for e in r.seen["on_position_updated"]] == [Decimal(40)])
    assert book.malformed_frames == 0 and env.recorder.closed() == []
    assert book.get(env.symbol).contracts == Decimal(40) and book.get(env.symbol).side == side


@pytest.mark.parametrize(("how", "reason"), [("liquidate", "liquidation"), ("adl", "adl")])
@pytest.mark.parametrize("side", SIDES)
async def test_a_forced_close_is_reported_once_with_its_reason(env, side, how, reason):
    await env.start()
    await env.engine.open(env.intent(side))
    await env.settled()
    close = getattr(env.venue, how)("default", env.symbol)
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1)
    [closed] = env.recorder.closed()
    assert (closed.reason, closed.price) == (reason, close.average)
    await env.parts.reconciler.reconcile()
    assert len(env.recorder.closed()) == 1 and not env.parts.book.holds(env.symbol)


@pytest.mark.parametrize("side", SIDES)
async def test_a_close_the_book_only_partly_fills_is_never_reported_as_a_closure(env, side):
    # B20 / Y14 on the way out: each close order fills half and its rest expires. The book follows the stream's
    # size and tries again (up to CLOSE_ATTEMPTS orders), never firing a closure for a position still held.
    await env.start()
    await env.engine.open(env.intent(side, contracts="43"))
    await env.settled()
    env.venue.faults.market_fill_ratio = 0.5
    assert await env.engine.close(env.venue_name, env.symbol) is False
    held = env.venue.position("default", env.symbol)
    assert (held.side, held.contracts) == (side, Decimal("5.4"))  # 43 → 21.5 → 10.8 → 5.4
    await env.recorder.wait_for(lambda r: env.parts.book.get(env.symbol).contracts == Decimal("5.4"))
    assert env.recorder.closed() == [] and env.venue.is_protected("default", env.symbol)
    env.venue.faults.market_fill_ratio = 1.0
    assert await env.engine.close(env.venue_name, env.symbol) is True
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1)
    assert [e.reason for e in env.recorder.closed()] == ["reduce_only_close"]
    assert not env.venue.position("default", env.symbol).is_open
