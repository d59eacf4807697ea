"""Native trailing stops (issue 17 item 4): when the driver declares ``native_trailing_stop`` and the spec fits
its limits, the venue runs the trail beside the fixed stop-loss, which stays as the floor; the engine does not
trail that position, the closure is reported once as ``trailing_stop`` with the fill's price, and a spec
outside the limits is trailed by the engine.  Longs and shorts, both venues."""

from __future__ import annotations

from decimal import Decimal

import pytest

from framework.models import TrailingSpec
from tests.engine.conftest import FAST, until

SIDES = ["long", "short"]
TICK = Decimal("0.0001")
NATIVE = FAST.model_copy(update={"native_trailing_stop": True})


def favourable(side: str, mark: Decimal, pct: str) -> Decimal:
    step = Decimal(pct) / 100
    return (mark * (1 + step if side == "long" else 1 - step)).quantize(TICK)


def venue_trail(env):
    """What the venue itself trails for the test's symbol: Binance a TRAILING_STOP_MARKET order, Bybit the
    position's ``trailingStop`` distance."""
    orders = [o for o in env.venue.orders("default", env.symbol, conditional=True) if o.type == "trailing_stop_market"]
    if orders:
        return orders
    distance = env.venue.position("default", env.symbol).trailing_stop
    return [distance] if distance is not None else []


def fixed_stops(env):
    orders = [o for o in env.venue.orders("default", env.symbol, conditional=True) if o.type == "stop_market"]
    attached = env.venue.position("default", env.symbol).stop_loss
    return orders + ([attached] if attached is not None else [])


@pytest.mark.parametrize("side", SIDES)
async def test_the_venue_trails_beside_the_fixed_stop_and_the_closure_is_one_trailing_stop(env, side):
    await env.start(NATIVE)
    intent = env.intent(side, trailing=TrailingSpec(callback_rate=Decimal(1)))
    held = await env.engine.open(intent)
    assert held.native_trail is not None and held.native_trail.kind == "trailing_stop"
    assert held.stop is not None and held.stop.kind == "stop_loss" and held.stop.trigger_price == intent.stop_loss
    assert len(venue_trail(env)) == 1 and len(fixed_stops(env)) == 1  # beside it, not instead of it
    assert env.parts.watched_marks is not None and env.symbol not in env.parts.watched_marks.current()
    mark = env.venue.mark_price(env.symbol)
    env.venue.set_mark_price(env.symbol, favourable(side, mark, "3"))
    await env.parts.trailing.on_mark_price(env.symbol, favourable(side, mark, "3"))
    assert env.parts.trailing.moves[env.symbol] == 0  # the venue trails, not the engine
    env.venue.set_mark_price(env.symbol, favourable(side, mark, "1"))  # 2 % back from the best: the trail fires
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1)
    closure = env.venue.truth.closures_for("default", env.symbol)[-1]
    event = env.recorder.closed()[0]
    assert closure.origin == "trailing_stop" and event.reason == "trailing_stop"
    assert event.price == closure.price
    await until(lambda: not env.venue.orders("default", env.symbol, conditional=True))
    assert env.venue.truth.unprotected_ms("default", env.symbol)["total"] == 0 or not env.stop_rests_by_the_fill
    assert len(env.recorder.closed()) == 1


@pytest.mark.parametrize("side", SIDES)
async def test_a_spec_outside_the_venue_limits_is_trailed_by_the_engine(env, side):
    await env.start(NATIVE)
    # Binance: below callbackRate's 0.1 %; Bybit: a distance under one tick (refused by the driver, alerted)
    rate = Decimal("0.05") if env.venue_name == "binance" else Decimal("0.001")
    await env.engine.open(env.intent(side, trailing=TrailingSpec(callback_rate=rate)))
    held = env.parts.book.get(env.symbol)
    assert held.native_trail is None and held.engine_trails and venue_trail(env) == []
    await until(lambda: env.symbol in env.parts.watched_marks.current())
    if env.venue_name == "bybit":  # refused by the driver: said so, and the fixed stop protects the position
        [refusal] = [a for a in env.recorder.seen["on_alert"] if "trailing stop was not placed" in a.message]
        assert (refusal.level, refusal.venue, refusal.symbol) == ("warning", "bybit", env.symbol)
        assert env.venue.is_protected("default", env.symbol)
        return
    mark = env.venue.mark_price(env.symbol)
    best = favourable(side, mark, "1")
    env.venue.set_mark_price(env.symbol, best)
    await env.parts.trailing.on_mark_price(env.symbol, best)
    assert env.parts.trailing.moves[env.symbol] >= 1 and env.venue.is_protected("default", env.symbol)


async def lifecycle(env, side: str) -> dict[str, int]:
    """Open (+ stop + trail), ten favourable moves the venue follows, close: the REST calls of it all."""
    before = env.harness.rest_calls()
    await env.engine.open(env.intent(side, trailing=TrailingSpec(callback_rate=Decimal(1))))
    mark = env.venue.mark_price(env.symbol)
    for step in range(1, 11):
        env.venue.set_mark_price(env.symbol, favourable(side, mark, str(Decimal("0.2") * step)))
    assert env.parts.trailing.moves[env.symbol] == 0
    closed = len(env.recorder.closed())
    await env.engine.close(env.venue_name, env.symbol)
    await env.recorder.wait_for(lambda r: len(r.closed()) == closed + 1)
    await until(lambda: not env.venue.orders("default", env.symbol, conditional=True))
    env.venue.set_mark_price(env.symbol, mark)
    calls = env.harness.rest_calls()
    calls.subtract(before)
    return dict(+calls)


@pytest.mark.parametrize("side", SIDES)
async def test_rest_calls_per_lifecycle_with_the_venues_trail(env, side):
    """The second lifecycle (the first one pays ccxt's one-off account look-ups) stays within issue 17's
    budget: ≤ 8 REST calls on Binance, ≤ 6 on Bybit."""
    await env.start(NATIVE)
    await env.settled()
    await lifecycle(env, side)
    calls = await lifecycle(env, side)
    total = sum(calls.values())
    print(f"{env.venue_name} {side}: {total} REST calls per lifecycle {calls}")
    assert total <= (8 if env.venue_name == "binance" else 6), calls


@pytest.mark.parametrize("side", SIDES)
async def test_after_a_restart_the_venue_s_trail_is_recognised_and_not_trailed_again(env, side):
    await env.start(NATIVE)
    await env.engine.open(env.intent(side, trailing=TrailingSpec(callback_rate=Decimal(1))))
    await env.engine.stop()
    await env.start(NATIVE)  # a new process: the position comes back from the database, then reconciliation
    await env.parts.reconciler.reconcile()
    held = env.parts.book.get(env.symbol)
    assert held is not None and held.native_trail is not None and not held.engine_trails
    assert held.stop is not None and held.stop.kind == "stop_loss"
    assert len(venue_trail(env)) == 1 and len(fixed_stops(env)) == 1  # nothing cancelled as a duplicate
    await until(lambda: env.symbol not in env.parts.watched_marks.current())
