"""Atomic open against the real plugins and their emulators."""

from __future__ import annotations

from decimal import Decimal

import pytest

from framework.errors import OutcomeUnknown


@pytest.mark.hooks("on_order_submitted", "on_position_open", "create_entry", "normalize_order", "verify_position")
async def test_open_is_protected_and_persisted(env):
    await env.start()
    intent = env.intent(tp_pct="3")
    position = await env.engine.open(intent)
    assert position.contracts == Decimal("43") and position.side == "long"
    venue_position = env.venue.position("default", env.symbol)
    assert venue_position.contracts == Decimal("43") and venue_position.side == "long"
    env.assert_protected_but_for_the_fill_to_stop_window(intent)
    [row] = await env.store.open_positions("default", env.venue_name)
    assert row.stop_loss == intent.stop_loss and row.entry_client_order_id == intent.client_order_id
    order = await env.store.order("default", env.venue_name, intent.client_order_id)
    assert order.state == "closed" and order.filled == Decimal("43")
    assert len(env.recorder.opened()) == 1 and env.recorder.seen["on_order_submitted"] == [intent]


async def test_outcome_unknown_is_resolved_by_client_order_id(env):
    await env.start(timeout_ms=2_000)  # the lost answer costs this; above a loaded machine's ordinary call
    intent = env.intent()
    if env.driver.supports("stop_before_entry"):
        # The stop goes first: a lost answer there stops the open before any entry exists.
        env.venue.faults.timeout_after_accept_next = 1
        with pytest.raises(OutcomeUnknown):
            await env.engine.open(intent)
        assert env.venue.positions("default") == []
        assert not [o for o in env.venue.truth.orders if o.client_order_id == intent.client_order_id]
        return
    env.venue.faults.timeout_after_accept_next = 1  # the venue fills, the answer never comes
    position = await env.engine.open(intent)
    assert position.contracts == Decimal("43")
    assert [o.client_order_id for o in env.venue.truth.orders if o.client_order_id == intent.client_order_id] == [
        intent.client_order_id
    ]  # resolved, not re-submitted
    assert env.parts.book.get(env.symbol).stop is not None
    env.assert_protected_but_for_the_fill_to_stop_window(intent)


async def test_rejected_entry_leaves_nothing(env):
    await env.start()
    env.venue.faults.reject_next_orders = 1
    from framework.errors import OrderRejected

    intent = env.intent()
    with pytest.raises(OrderRejected):
        await env.engine.open(intent)
    assert env.venue.positions("default") == []
    assert await env.store.open_positions("default", env.venue_name) == []
    assert not env.parts.book.opening(env.symbol)
    report = await env.parts.reconciler.reconcile()
    assert report["adopted"] == 0


@pytest.mark.parametrize("side", ["long", "short"])
async def test_an_entry_filled_in_parts_then_expired_protects_exactly_what_filled(env, side):
    # issue 13 item 10 (docs/conformance.md B20 / Y14): a market entry filled in three executions, the rest
    # EXPIRED (Binance) / Cancelled (Bybit): the position is what filled, protected, and nothing is guessed
    await env.start()
    env.venue.faults.market_fill_parts = 3
    env.venue.faults.market_fill_ratio = 0.5
    intent = env.intent(side, contracts="43", tp_pct="3")
    position = await env.engine.open(intent)
    await env.recorder.wait_for(lambda r: env.parts.book.get(env.symbol).contracts == Decimal("21.5"))
    venue_position = env.venue.position("default", env.symbol)
    assert (venue_position.side, venue_position.contracts) == (side, Decimal("21.5"))
    assert position.side == side and env.venue.is_protected("default", env.symbol)
    order = await env.store.order("default", env.venue_name, intent.client_order_id)
    assert order.filled == Decimal("21.5") and order.state in ("expired", "canceled")
    assert env.recorder.closed() == [] and len(env.recorder.opened()) == 1
    assert not [a for a in env.recorder.seen["on_alert"] if a.level == "critical"]
    sizes = [e.contracts for e in env.recorder.opened() + env.recorder.seen["on_position_updated"]]
    assert max(sizes) == Decimal("21.5"), sizes  # never more than filled, at any moment
    env.venue.faults.market_fill_ratio = 1.0
    await env.parts.reconciler.reconcile()  # the venue and the book agree: nothing to adopt, close or cancel
    assert env.parts.book.get(env.symbol).contracts == Decimal("21.5") and env.recorder.closed() == []
    assert env.venue.is_protected("default", env.symbol)


async def test_an_entry_the_book_cannot_fill_at_all_is_refused_and_leaves_nothing(env):
    # B20 / Y14: EXPIRED (Binance) / Cancelled (Bybit) with nothing filled: refused, no position, no stop resting
    from framework.errors import OrderRejected

    await env.start()
    env.venue.faults.market_fill_ratio = 0.0
    intent = env.intent("short")
    with pytest.raises(OrderRejected):
        await env.engine.open(intent)
    assert env.venue.positions("default") == [] and env.venue.orders("default", open_only=True) == []
    order = await env.store.order("default", env.venue_name, intent.client_order_id)
    assert order.state in ("expired", "canceled") and order.filled == 0
    assert not env.parts.book.holds(env.symbol) and env.recorder.opened() == []
