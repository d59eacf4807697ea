"""The protector: every position the book holds gets a resting stop on its losing side, for longs and
shorts alike; a venue that says the position is gone closes it; a stop that would trigger at once means
the position is closed at market, never left without a stop (docs/incidents.md I-1, I-4)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from framework.models import PositionUpdate, close_side
from tests.engine.conftest import FAST, NO_SETTLE, move_stop_toward_mark, until, venue_env
from tests.engine.intercept import SessionWrapper

BOUND_S = 5.0
SIDES = ["long", "short"]


def resting_stop_price(env) -> Decimal:
    """The stop-loss resting on the venue for the position (attached, or a conditional order on the closing
    side); fails when there is none or more than one."""
    position = env.venue.position("default", env.symbol)
    assert position.is_open
    if position.stop_loss is not None:
        return position.stop_loss
    closing = close_side(position.side)
    stops = [o for o in env.venue.orders("default", env.symbol, open_only=True, conditional=True)
             if o.type == "stop_market"]
    assert [o.side for o in stops] == [closing], stops
    return stops[0].trigger_price


def on_losing_side(side: str, stop: Decimal, mark: Decimal) -> bool:
    return stop < mark if side == "long" else stop > mark


def remove_stops(env) -> None:
    """What a person, the venue's expiry or a bug can do: the position's stop is gone from the venue."""
    for stop in env.venue.orders("default", env.symbol, open_only=True, conditional=True):
        env.venue.cancel_order("default", env.symbol, stop.id)
    if env.venue.position("default", env.symbol).stop_loss is not None:
        env.venue.set_trading_stop("default", env.symbol, stop_loss=Decimal(0))
    assert not env.venue.is_protected("default", env.symbol)


def total(env, key: str) -> int:
    return sum(report[key] for _, report in env.recorder.seen["on_reconciled"])


@pytest.mark.parametrize("side", SIDES)
async def test_a_position_opened_elsewhere_is_adopted_and_protected_on_its_losing_side(env, side):
    await env.start()
    await env.settled()
    env.venue.place_order("default", env.symbol, "buy" if side == "long" else "sell", amount=Decimal(43))
    # The mark moved since the entry: the stop is measured from the mark the snapshot reports, not the entry.
    env.venue.set_mark_price(env.symbol, (env.venue.mark_price(env.symbol) * Decimal("1.01")).quantize(
        env.venue.instrument(env.symbol).tick_size))
    mark = env.venue.mark_price(env.symbol)
    await env.parts.reconciler.reconcile()
    assert total(env, "adopted") == 1 and total(env, "reprotected") == 1
    held = env.parts.book.get(env.symbol)
    assert held.side == side and held.contracts == Decimal(43) and held.stop is not None
    stop = resting_stop_price(env)
    assert on_losing_side(side, stop, mark)
    expected = mark * (1 - FAST.adopt_stop_pct / 100 if side == "long" else 1 + FAST.adopt_stop_pct / 100)
    tick = env.venue.instrument(env.symbol).tick_size
    assert abs(stop - expected) <= tick, (stop, expected)
    assert held.stop.trigger_price == stop and held.stop.side == side
    assert env.venue.is_protected("default", env.symbol)


@pytest.mark.parametrize("side", SIDES)
async def test_a_position_opened_by_hand_right_after_a_closure_is_adopted_on_the_stream_s_word(env, side):
    """A lagging snapshot of a position just closed must not resurrect it (I-2), so the reconciler leaves a symbol
    closed less than ``orphan_grace_ms`` ago (60 s here) alone; unless the stream has shown it open again since the
    closure: then a position opened by hand right after it is adopted and protected at once."""
    await env.start()
    await env.engine.open(env.intent(side))
    await env.settled()
    env.venue.manual_close("default", env.symbol)
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1, 10)
    env.venue.place_order("default", env.symbol, "buy" if side == "long" else "sell", amount=Decimal(43))
    await until(lambda: env.parts.book.stream_shows_open(env.symbol, side))
    await env.parts.reconciler.reconcile()
    held = env.parts.book.get(env.symbol)
    assert held is not None and (held.side, held.contracts) == (side, Decimal(43))
    assert env.venue.is_protected("default", env.symbol)


@pytest.mark.parametrize("side", SIDES)
async def test_a_stop_removed_on_the_venue_is_placed_again_at_the_intended_price(env, side):
    await env.start()
    intent = env.intent(side)
    await env.engine.open(intent)
    await env.settled()
    env.venue.faults.drop_rate = 1.0  # the stream does not tell: the reconciliation must find it
    remove_stops(env)
    before = total(env, "reprotected")
    await env.parts.reconciler.reconcile()
    assert total(env, "reprotected") == before + 1
    assert resting_stop_price(env) == intent.stop_loss
    assert env.parts.book.get(env.symbol).stop.trigger_price == intent.stop_loss
    assert env.venue.is_protected("default", env.symbol)


@pytest.mark.parametrize("side", SIDES)
async def test_a_stop_that_would_trigger_at_once_closes_the_position_at_market(env, side):
    await env.start()
    await env.engine.open(env.intent(side))
    await env.settled()
    remove_stops(env)
    mark = env.venue.mark_price(env.symbol)
    crossed = mark * (Decimal("1.01") if side == "long" else Decimal("0.99"))  # on the winning side
    assert await env.parts.protector.protect(env.symbol, trigger_price=crossed.quantize(Decimal("0.0001"))) is None
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1, BOUND_S)
    assert not env.venue.position("default", env.symbol).is_open
    assert not env.parts.book.holds(env.symbol)
    closing = close_side(side)
    [fill] = [f for f in env.venue.truth.fills if f.client_order_id and f.client_order_id.startswith("fw-c-")]
    assert fill.side == closing
    assert env.venue.truth.wrong_side_orders() == []


@pytest.mark.parametrize("side", SIDES)
async def test_a_venue_saying_zero_position_closes_the_position_and_places_nothing(store, side):
    # Bybit's trading-stop answers "can not set tp/sl/ts for zero position": closed, not retried (I-1).
    async with venue_env("bybit", store) as env:
        await env.start()
        await env.engine.open(env.intent(side))
        env.venue.faults.drop_rate = 1.0  # the stream tells the book nothing
        env.venue.manual_close("default", env.symbol)
        attempts = env.parts.protector.stop_attempts[env.symbol]
        assert await env.parts.protector.protect(env.symbol, trigger_price=env.intent(side).stop_loss) is None
        assert env.parts.protector.stop_attempts[env.symbol] == attempts + 1  # once: gone means closed
        assert not env.parts.book.holds(env.symbol)
        assert [(e.reason, e.source) for e in env.recorder.closed()] == [("position_gone", "error")]
        assert env.venue.truth.orders_for_closed_positions() == []


@pytest.mark.parametrize("venue_name", ["binance", "bybit"])
@pytest.mark.parametrize("side", SIDES)
async def test_a_stop_cancelled_on_the_venue_is_replaced_at_once_from_the_stream(store, venue_name, side):
    # Binance: the stop order's ALGO_UPDATE CANCELED; Bybit: the cancelled system order that carries the
    # attached stop (conformance Y1). Either re-protects without waiting for a reconciliation pass.
    async with venue_env(venue_name, store) as env:
        await env.start()
        intent = env.intent(side)
        await env.engine.open(intent)
        await env.settled()
        passes = len(env.recorder.seen["on_reconciled"])
        cancelled = env.parts.book.get(env.symbol).stop.order_id
        moves = len(env.recorder.seen["on_stop_moved"])
        remove_stops(env)
        await env.recorder.wait_for(lambda r: len(r.seen["on_stop_moved"]) > moves, BOUND_S)
        assert len(env.recorder.seen["on_reconciled"]) == passes, "re-protected by a pass, not by the stream"
        held = env.parts.book.get(env.symbol).stop
        assert held.order_id != cancelled or held.attached
        assert held.trigger_price == intent.stop_loss == resting_stop_price(env)
        assert env.venue.is_protected("default", env.symbol)
        assert any(a.level == "warning" and "removed on the venue" in a.message for a in env.recorder.seen["on_alert"])


async def test_a_trailing_move_that_cancels_the_old_stop_is_not_taken_for_a_removal(store):
    # new-before-cancel: the cancel event of the replaced stop must not place a third stop
    async with venue_env("binance", store) as env:
        await env.start()
        await env.engine.open(env.intent("long"))
        await env.settled()
        old = env.parts.book.get(env.symbol).stop
        moved = await env.parts.driver.move_stop_loss(old, old.trigger_price * Decimal("1.001"))
        await env.parts.protector.record(env.symbol, moved, previous=old.trigger_price)
        reprotected = await env.parts.protector.reprotect(env.symbol, old.order_id)
        assert reprotected is None
        resting = env.venue.orders("default", env.symbol, open_only=True, conditional=True)
        assert [o.id for o in resting] == [moved.order_id]


@pytest.mark.parametrize("side", SIDES)
async def test_a_stop_removal_heard_during_a_move_waits_for_it_and_leaves_the_moved_stop(store, side):
    """A move holds the symbol's stop lock from placing the new stop to recording it. The removal of the stop
    it replaces, heard meanwhile, is judged after the move: the stop moved, so nothing is placed."""
    async with venue_env("binance", store) as env:
        await env.start(NO_SETTLE)
        await env.engine.open(env.intent(side))
        await env.settled()
        old = env.parts.book.get(env.symbol).stop
        async with env.parts.book.stop_lock(env.symbol):
            removal = asyncio.create_task(env.parts.protector.reprotect(env.symbol, old.order_id))
            moved = await move_stop_toward_mark(env, side)
        assert await removal is None
        resting = env.venue.orders("default", env.symbol, open_only=True, conditional=True)
        assert [o.id for o in resting] == [moved.order_id]
        assert env.parts.book.get(env.symbol).stop.order_id == moved.order_id


@pytest.mark.parametrize("side", SIDES)
async def test_a_stop_removed_after_the_stream_said_flat_is_left_to_the_closure(env, side):
    """A flat frame waits for its closing fill (``fill_grace_ms``, a minute here), so the book still holds the
    position when the venue's cancel of its stop is heard. That stop is not placed again: the stream says the
    position is gone. A flat frame stamped at the very millisecond the position opened counts as after it."""
    await env.start(NO_SETTLE.model_copy(update={"fill_grace_ms": 60_000}))
    await env.engine.open(env.intent(side))
    await env.settled()
    book = env.parts.book
    held = book.get(env.symbol)
    last = book.last_update(env.symbol)
    await book.on_event(PositionUpdate(venue=env.venue_name, symbol=env.symbol, side=None, contracts=Decimal(0),
                                       sequence=last.sequence + 1 if last else 1, timestamp=held.opened_at))
    assert book.holds(env.symbol) and book.last_update(env.symbol).contracts == 0
    orders = len(env.venue.orders("default", env.symbol, open_only=False))
    assert await env.parts.protector.reprotect(env.symbol, held.stop.order_id) is None
    assert len(env.venue.orders("default", env.symbol, open_only=False)) == orders
    assert not any("removed on the venue" in a.message for a in env.recorder.seen["on_alert"])


@pytest.mark.parametrize("side", SIDES)
async def test_a_stop_removed_with_its_position_closed_meanwhile_places_nothing(env, side):
    await env.start(NO_SETTLE)
    await env.engine.open(env.intent(side))
    await env.settled()
    stop = env.parts.book.get(env.symbol).stop
    env.venue.manual_close("default", env.symbol)
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1, BOUND_S)
    orders = len(env.venue.orders("default", env.symbol, open_only=False))
    assert await env.parts.protector.reprotect(env.symbol, stop.order_id) is None
    assert len(env.venue.orders("default", env.symbol, open_only=False)) == orders
    assert env.venue.truth.orders_for_closed_positions() == []


@pytest.mark.parametrize("side", SIDES)
async def test_reconciling_a_protected_bybit_position_cancels_nothing_and_the_stop_rests(store, side):
    """Bybit lists the position's TP/SL as Untriggered system orders beside the position's stopLoss field
    (docs/conformance.md Y1-Y2): that is one stop, never a duplicate to cancel."""
    async with venue_env("bybit", store) as env:
        await env.start()
        intent = env.intent(side, tp_pct="3")
        await env.engine.open(intent)
        await env.settled()
        emulator = env.harness.emulator
        writes = {k: emulator.rest_calls[k] for k in ("POST /v5/order/cancel", "POST /v5/position/trading-stop")}
        for _ in range(3):
            await env.parts.reconciler.reconcile()
        assert {k: emulator.rest_calls[k] for k in writes} == writes  # nothing cancelled, nothing re-placed
        for key in ("duplicate_stops_cancelled", "stale_stops_cancelled", "reprotected", "closed"):
            assert total(env, key) == 0, key
        position = env.venue.position("default", env.symbol)
        assert (position.stop_loss, position.take_profit) == (intent.stop_loss, intent.take_profit)
        assert resting_stop_price(env) == intent.stop_loss
        assert env.parts.book.get(env.symbol).stop.trigger_price == intent.stop_loss
        assert env.venue.truth.unprotected_ms(symbol=env.symbol)["max"] == 0


@pytest.mark.parametrize("side", SIDES)
async def test_a_stop_the_venue_rejects_when_it_triggers_is_followed_by_a_close_at_market(store, side):
    """Binance's algo service can deny a conditional order when it triggers (ALGO_UPDATE ``REJECTED``, "such as
    in scenarios of margin check failures"; docs/conformance.md B27): the position is then past its stop with
    no stop. The book takes the rejection as the stop's removal; re-protecting at the intended price would
    trigger at once, so the position is closed at market, not left naked until a reconciliation pass."""
    async with venue_env("binance", store) as env:
        await env.start()
        intent = env.intent(side)
        await env.engine.open(intent)
        await env.settled()
        passes = len(env.recorder.seen["on_reconciled"])
        env.venue.faults.reject_triggered_stops = 1
        through = intent.stop_loss * (Decimal("0.99") if side == "long" else Decimal("1.01"))
        env.venue.set_mark_price(env.symbol, through.quantize(Decimal("0.0001")))
        await env.recorder.wait_for(lambda r: len(r.closed()) == 1, BOUND_S)
        assert env.venue.faults.reject_triggered_stops == 0  # the stop did trigger and was rejected
        assert not env.venue.position("default", env.symbol).is_open
        assert len(env.recorder.seen["on_reconciled"]) == passes, "closed from the stream, not by a pass"
        [fill] = [f for f in env.venue.truth.fills if f.client_order_id and f.client_order_id.startswith("fw-c-")]
        assert fill.side == close_side(side)
        assert env.venue.truth.wrong_side_orders() == []
        assert any("removed on the venue" in a.message for a in env.recorder.seen["on_alert"])


class StopRefusedOnce(SessionWrapper):
    """The venue (its gateway) answers 503 to the first stop placed through this wrapper."""

    def __init__(self, env) -> None:
        self.env = env
        self.calls = 0

    async def set_stop_loss(self, call, *args):
        self.calls += 1
        if self.calls == 1:
            self.env.venue.faults.http_error_status = 503
            self.env.venue.faults.http_error_next = 1
        return await call(*args)


class ClosedWhileStopPlaced(SessionWrapper):
    """The position closes on the venue, and the book hears of it, while its stop is being placed."""

    def __init__(self, env) -> None:
        self.env = env

    async def set_stop_loss(self, call, *args):
        stop = await call(*args)
        self.env.venue.manual_close("default", self.env.symbol)
        await self.env.parts.book.close(self.env.symbol, "manual", source="stream")
        return stop


@pytest.mark.parametrize("side", SIDES)
async def test_a_stop_refused_once_is_placed_by_the_next_attempt(env, side):
    await env.start()
    intent = env.intent(side)
    await env.engine.open(intent)
    await env.settled()
    env.venue.faults.drop_rate = 1.0  # the stream does not re-protect on its own
    remove_stops(env)
    refusing = StopRefusedOnce(env)
    refusing.wrap(env.driver.session)
    attempts = env.parts.protector.stop_attempts[env.symbol]
    stop = await env.parts.protector.protect(env.symbol)
    assert refusing.calls == 2 and env.parts.protector.stop_attempts[env.symbol] == attempts + 2
    assert stop is not None and stop.side == side and stop.trigger_price == intent.stop_loss
    assert resting_stop_price(env) == intent.stop_loss and env.venue.is_protected("default", env.symbol)
    assert env.parts.book.get(env.symbol).stop == stop
    assert not any(a.level == "critical" for a in env.recorder.seen["on_alert"])


@pytest.mark.parametrize("side", SIDES)
async def test_a_stop_placed_for_a_position_that_closed_meanwhile_is_cancelled(env, side):
    await env.start()
    await env.engine.open(env.intent(side))
    await env.settled()
    env.venue.faults.drop_rate = 1.0  # the closure reaches the book through the wrapper only
    remove_stops(env)
    ClosedWhileStopPlaced(env).wrap(env.driver.session)
    moves = len(env.recorder.seen["on_stop_moved"])
    assert await env.parts.protector.protect(env.symbol) is None
    assert not env.parts.book.holds(env.symbol) and not env.venue.position("default", env.symbol).is_open
    assert env.venue.orders("default", env.symbol, open_only=True, conditional=True) == []  # nothing left behind
    assert len(env.recorder.seen["on_stop_moved"]) == moves  # no stop recorded for a closed position
