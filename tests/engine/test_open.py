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
