"""Atomic open against the real plugins and their emulators."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.engine.conftest import venue_env


async def test_open_is_protected_and_persisted(env):
    await env.start()
    intent = env.intent(tp_pct="3")
    position = await env.engine.open(intent)
    assert position.contracts == Decimal("43") and position.side == "long"
    venue_position = env.venue.position("default", env.symbol)
    assert venue_position.contracts == Decimal("43") and venue_position.side == "long"
    assert env.venue.truth.unprotected_ms()["max"] == 0
    [row] = await env.store.open_positions("default", env.venue_name)
    assert row["stop_loss"] == intent.stop_loss and row["entry_client_order_id"] == intent.client_order_id
    order = await env.store.order("default", env.venue_name, intent.client_order_id)
    assert order["state"] == "closed" and order["filled"] == Decimal("43")
    assert len(env.recorder.opened()) == 1 and env.recorder.seen["on_order_submitted"] == [intent]
