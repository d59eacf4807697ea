"""The driver session against the emulator over loopback: real ccxt, real websockets, the incidents."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from binance_helpers import SYMBOL, above, below, intent, losing, trading_calls

from framework.errors import (
    OrderIncomplete,
    OrderNotFound,
    OrderRejected,
    OutcomeUnknown,
    PositionGone,
    RateLimited,
    VenueError,
    WouldTriggerImmediately,
)
from framework.models import OrderIntent, OrderUpdate, StopLoss, TrailingSpec, now_ms

POSITION_RISK = "GET /fapi/v3/positionRisk"


def calls(harness, key: str) -> int:
    return harness.emulator.rest_calls[key]


def flat_since(stream, since_ms: int, symbol=SYMBOL):
    """The stream state the driver asks (the book behind ``stream``) shows the position flat at or after
    ``since_ms``."""
    def check() -> bool:
        update = stream.last_update(symbol)
        return update is not None and update.contracts == 0 and update.timestamp >= since_ms
    return check


def shows_open(stream, contracts: int, symbol=SYMBOL):
    """The stream state the driver asks shows ``contracts`` open."""
    return lambda: (p := stream.last_update(symbol)) and p.contracts == contracts


async def open_position(driver, venue, side="long", contracts="10"):
    entry = intent(venue, side, contracts)
    order = await driver.normalize_order(await driver.create_entry(entry), entry)
    return entry, order


def test_driver_info_declares_only_what_is_tested(driver):
    assert driver.venue == "binance"
    # no stop_before_entry: -4509 with no position (B7); TRAILING_STOP_MARKET with callbackRate 0.1 … 10 (B25)
    assert driver.info.capabilities == frozenset({"native_trailing_stop"})
    limits = driver.info.trailing_limits
    assert (limits.min_callback_rate, limits.max_callback_rate) == (Decimal("0.1"), Decimal(10))


@pytest.mark.parametrize("activated", [True, False], ids=["activation", "no-activation"])
@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_trailing_stop_is_one_reduce_only_trailing_stop_market_algo_order_beside_the_stop(driver, venue, side,
                                                                                                activated):
    """B25: ``TRAILING_STOP_MARKET`` with ``callbackRate`` (percent) and ``activatePrice`` (none sent without
    one: the trail starts at once, behind the mark), reduce-only for the position's size on its closing side;
    the closePosition stop stays."""
    entry, order = await open_position(driver, venue, side)
    stop = await driver.set_stop_loss(SYMBOL, side, order.filled, entry.stop_loss)
    mark = venue.mark_price(SYMBOL)
    activation = (mark * (Decimal("1.01") if side == "long" else Decimal("0.99"))).quantize(Decimal("0.0001"))
    spec = TrailingSpec(callback_rate=Decimal("0.5"), activation_price=activation if activated else None)
    before = now_ms()  # the driver's clock, which stamps placed_at
    trail = await driver.set_trailing_stop(SYMBOL, side, order.filled, spec, mark)
    [resting] = [o for o in venue.orders("default", SYMBOL, conditional=True) if o.type == "trailing_stop_market"]
    assert (resting.side, resting.reduce_only, resting.amount) == ({"long": "sell", "short": "buy"}[side], True,
                                                                  order.filled)
    assert (resting.callback_rate, resting.activation_price) == (Decimal("0.5"), spec.activation_price)
    assert trail.kind == "trailing_stop" and trail.order_id == resting.id and trail.contracts == order.filled
    assert trail.placed_at is not None and trail.placed_at >= before
    start = activation if activated else mark
    offset = start * Decimal("0.005")
    expected = start - offset if side == "long" else start + offset
    assert trail.trigger_price == expected.quantize(Decimal("0.0001"))
    assert venue.get_order("default", order_id=stop.order_id).is_open  # beside the fixed stop, not instead


async def test_a_stop_without_an_order_id_is_neither_moved_nor_cancelled_without_a_venue_call(driver, venue, harness):
    """Every Binance stop is an algo order: a stop without one cannot be this driver's. It is not moved, and
    cancelling it reports that nothing was cancelled."""
    stray = StopLoss(venue="binance", symbol=SYMBOL, side="long", kind="stop_loss", trigger_price=below(venue))
    before = trading_calls(harness.emulator)
    with pytest.raises(VenueError, match="always an order") as error:
        await driver.move_stop_loss(stray, below(venue, "3"))
    assert (error.value.venue, error.value.symbol) == ("binance", SYMBOL)
    assert await driver.cancel_stop_loss(stray) is False
    assert trading_calls(harness.emulator) == before


@pytest.mark.parametrize("side", ["long", "short"])
async def test_moving_the_stop_of_a_position_the_stream_showed_closed_is_position_gone_without_a_call(
        driver, venue, stream, harness, side):
    """I-5: the stream (the core's book) says flat after the stop was placed: nothing is placed or cancelled,
    and the error names the stop it did not move."""
    await open_position(driver, venue, side)
    stop = await driver.set_stop_loss(SYMBOL, side, Decimal(10), losing(venue, side))
    closed_at = venue.now()
    venue.manual_close("default", SYMBOL)
    await stream.wait_for(flat_since(stream, closed_at))
    before = trading_calls(harness.emulator)
    with pytest.raises(PositionGone, match="the stream reports the position flat") as error:
        await driver.move_stop_loss(stop, losing(venue, side, "3"))
    assert (error.value.venue, error.value.symbol, error.value.order_id) == ("binance", SYMBOL, stop.order_id)
    assert trading_calls(harness.emulator) == before


@pytest.mark.parametrize("kind", ["stop_loss", "trailing_stop"])
@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_stop_answered_without_its_algo_id_is_incomplete_not_placed(driver, venue, side, kind):
    """Never report a stop placed that cannot be named: an answer without ``algoId`` (fault
    ``answer_without_order_id_next``) is ``OrderIncomplete`` naming venue and symbol."""
    await open_position(driver, venue, side)
    venue.faults.answer_without_order_id_next = 1
    with pytest.raises(OrderIncomplete, match="answered without an algoId") as error:
        if kind == "stop_loss":
            await driver.set_stop_loss(SYMBOL, side, Decimal(10), losing(venue, side))
        else:
            await driver.set_trailing_stop(SYMBOL, side, Decimal(10), TrailingSpec(callback_rate=Decimal(1)),
                                           venue.mark_price(SYMBOL))
    assert (error.value.venue, error.value.symbol) == ("binance", SYMBOL)


async def test_entry_is_a_complete_market_order(driver, venue, harness):
    entry, order = await open_position(driver, venue)
    assert (order.side, order.amount, order.filled, order.status) == ("buy", Decimal(10), Decimal(10), "closed")
    assert order.client_order_id == entry.client_order_id and order.symbol == SYMBOL
    assert venue.position("default", SYMBOL).contracts == 10


async def test_minimal_response_is_completed_from_the_venue(driver, venue, harness):
    venue.faults.minimal_order_response = True
    entry = intent(venue, "short", "7")
    raw = await driver.create_entry(entry)
    assert (raw["status"], raw["filled"]) == ("open", 0)  # the ACK form: accepted, not yet filled (B11)
    before = calls(harness, "GET /fapi/v1/order")
    order = await driver.normalize_order(raw, entry)
    assert calls(harness, "GET /fapi/v1/order") == before + 1
    assert (order.side, order.amount, order.filled, order.status) == ("sell", Decimal(7), Decimal(7), "closed")


async def test_incomplete_order_unknown_to_the_venue_raises(driver, venue):
    with pytest.raises(OrderIncomplete):
        await driver.normalize_order({"id": "999", "symbol": SYMBOL, "info": {"orderId": 999}}, None)


async def test_intent_contradicting_the_venue_raises(driver, venue):
    entry, _ = await open_position(driver, venue)
    wrong = entry.model_copy(update={"side": "short"})
    order = await driver.fetch_order(SYMBOL, None, entry.client_order_id)
    with pytest.raises(OrderIncomplete):
        await driver.normalize_order({"info": {"orderId": int(order.id)}, "id": order.id, "symbol": SYMBOL,
                                      "clientOrderId": entry.client_order_id}, wrong)


async def test_stop_loss_goes_through_the_algo_api_and_protects(driver, venue, harness):
    await open_position(driver, venue)
    before = calls(harness, "POST /fapi/v1/algoOrder")
    stop = await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue))
    assert calls(harness, "POST /fapi/v1/algoOrder") == before + 1
    resting = venue.get_order("default", SYMBOL, order_id=stop.order_id)
    assert (resting.type, resting.side, resting.close_position, resting.status) == ("stop_market", "sell", True, "new")
    assert venue.is_protected("default", SYMBOL)
    assert await driver.cancel_stop_loss(stop) is True
    assert await driver.cancel_stop_loss(stop) is False


async def test_stop_under_30s_rest_lag_needs_no_position_lookup(driver, venue, harness):
    """I-4: REST positions lag 30 s, the stop is placed anyway, without asking REST."""
    venue.faults.rest_position_lag_ms = 30_000
    await open_position(driver, venue)
    snapshot = await driver.fetch_snapshot()
    assert all(p.symbol != SYMBOL for p in snapshot.positions)  # REST does not see it yet
    before = sum(n for k, n in harness.emulator.rest_calls.items() if "positionRisk" in k)
    await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue))
    assert sum(n for k, n in harness.emulator.rest_calls.items() if "positionRisk" in k) == before
    assert venue.is_protected("default", SYMBOL)


async def test_stop_already_crossed_raises_would_trigger(driver, venue):
    await open_position(driver, venue)
    with pytest.raises(WouldTriggerImmediately):
        await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue, "-1"))


async def test_second_close_position_stop_is_refused_4130(driver, venue):
    await open_position(driver, venue)
    await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue))
    with pytest.raises(OrderRejected) as error:
        await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue, "3"))
    assert error.value.code == -4130


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_stop_with_no_position_is_refused_4509_as_position_gone(driver, venue, stream, harness, side):
    """B7: Binance refuses a closePosition stop when nothing is open; the driver says the position is gone
    and nothing rests (the opener places the stop after the fill, no stop_before_entry). The stream does not see
    the position close, so only the venue can say it (else the driver would not ask: a race with the stream)."""
    await open_position(driver, venue, side)
    await stream.wait_for(shows_open(stream, 10))
    venue.faults.drop_rate = 1.0
    venue.manual_close("default", SYMBOL)
    before = calls(harness, "POST /fapi/v1/algoOrder")
    trigger = losing(venue, side)
    with pytest.raises(PositionGone) as error:
        await driver.set_stop_loss(SYMBOL, side, Decimal(10), trigger)
    assert error.value.code == -4509
    assert calls(harness, "POST /fapi/v1/algoOrder") == before + 1  # the venue was asked and said no
    assert venue.orders("default", SYMBOL) == []


@pytest.mark.parametrize("side", ["long", "short"])
async def test_close_position_stops_expire_when_the_position_closes(driver, venue, stream, side):
    """B7: the system expires a close-position algo order when its position closes (ALGO_UPDATE EXPIRED)."""
    await open_position(driver, venue, side)
    stop = await driver.set_stop_loss(SYMBOL, side, Decimal(10), losing(venue, side))
    venue.manual_close("default", SYMBOL)
    assert venue.get_order("default", SYMBOL, order_id=stop.order_id).status == "expired"
    await stream.wait_for(lambda: any(isinstance(e, OrderUpdate) and e.order.id == stop.order_id
                                      and e.order.status == "expired" for e in stream.events))
    assert await driver.cancel_stop_loss(stop) is False


@pytest.mark.parametrize("side", ["long", "short"])
async def test_stop_for_a_closed_position_is_position_gone_without_a_venue_call(driver, venue, stream, harness,
                                                                                side):
    """A stop-loss, take-profit or trailing stop for a position the stream showed closed: nothing is sent."""
    await open_position(driver, venue, side)
    closed_at = venue.now()
    venue.manual_close("default", SYMBOL)
    await stream.wait_for(flat_since(stream, closed_at))
    before = trading_calls(harness.emulator)
    stop_price, take_price = losing(venue, side), (above(venue) if side == "long" else below(venue))
    trailing = TrailingSpec(callback_rate=Decimal(1))
    for attempt in (lambda: driver.set_stop_loss(SYMBOL, side, Decimal(10), stop_price),
                    lambda: driver.set_take_profit(SYMBOL, side, Decimal(10), take_price),
                    lambda: driver.set_trailing_stop(SYMBOL, side, Decimal(10), trailing, venue.mark_price(SYMBOL))):
        with pytest.raises(PositionGone, match="the stream reports the position closed") as error:
            await attempt()
        assert (error.value.venue, error.value.symbol) == ("binance", SYMBOL)
    assert trading_calls(harness.emulator) == before
    assert venue.orders("default", SYMBOL, conditional=True) == []


async def test_take_profit(driver, venue):
    await open_position(driver, venue)
    mark = venue.mark_price(SYMBOL)
    tp = await driver.set_take_profit(SYMBOL, "long", Decimal(10), (mark * Decimal("1.02")).quantize(Decimal("0.0001")))
    assert tp.kind == "take_profit"
    assert venue.get_order("default", SYMBOL, order_id=tp.order_id).type == "take_profit_market"


async def test_move_stop_leaves_no_unprotected_window(driver, venue, stream):
    """I-5: the new stop rests before the old one is cancelled; -4130 avoided by alternating kinds."""
    await open_position(driver, venue)
    await stream.wait_for(shows_open(stream, 10))
    stop = await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue, "3"))
    start = venue.now()
    moved = await driver.move_stop_loss(stop, below(venue, "2"))
    assert moved.contracts == Decimal(10)  # reduce-only, sized from the stream (the book): no positionRisk
    moved_again = await driver.move_stop_loss(moved, below(venue, "1"))
    assert moved_again.contracts is None  # back to closePosition
    open_stops = venue.orders("default", SYMBOL, conditional=True)
    assert [o.id for o in open_stops] == [moved_again.order_id]
    assert [i for i in venue.truth.unprotected_intervals(symbol=SYMBOL) if i[3] > start] == []


async def silence_the_stream(venue, stream) -> None:
    """Every private frame from now on is dropped, once the stream showed the symbol flat (the venue fixture's
    clean-up): the driver's stream state then knows nothing of what opens next."""
    await stream.wait_for(lambda: (p := stream.last_update(SYMBOL)) is None or p.contracts == 0)
    venue.faults.drop_rate = 1.0


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_move_sizes_its_reduce_only_stop_from_the_stream_down_to_a_fraction_of_a_contract(
        driver, venue, stream, harness, side):
    """The stream (the core's book) showing the position on the stop's side sizes the replacement of a
    closePosition stop, under one contract too (0.5 BTC), without asking ``positionRisk``."""
    btc = "BTC/USDT:USDT"
    trigger = losing(venue, side, "3", symbol=btc, tick="0.1")
    entry = OrderIntent(venue="binance", symbol=btc, side=side, contracts=Decimal("0.5"), stop_loss=trigger,
                        client_order_id=f"fw-e-{now_ms()}")
    await driver.normalize_order(await driver.create_entry(entry), entry)
    await stream.wait_for(lambda: (p := stream.last_update(btc)) and p.contracts == Decimal("0.5"))
    stop = await driver.set_stop_loss(btc, side, Decimal("0.5"), trigger)
    before = calls(harness, POSITION_RISK)
    moved = await driver.move_stop_loss(stop, losing(venue, side, "2", symbol=btc, tick="0.1"))
    assert (moved.side, moved.contracts) == (side, Decimal("0.5"))
    assert calls(harness, POSITION_RISK) == before


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_move_the_stream_cannot_size_is_sized_by_positionrisk(driver, venue, stream, harness, side):
    """With no stream frame of the position, ``positionRisk?symbol=`` sizes the reduce-only replacement."""
    await silence_the_stream(venue, stream)
    await open_position(driver, venue, side, contracts="7")
    stop = await driver.set_stop_loss(SYMBOL, side, Decimal(7), losing(venue, side, "3"))
    before = calls(harness, POSITION_RISK)
    moved = await driver.move_stop_loss(stop, losing(venue, side, "2"))
    assert (moved.side, moved.contracts) == (side, Decimal(7))
    assert calls(harness, POSITION_RISK) == before + 1
    assert [o.id for o in venue.orders("default", SYMBOL, conditional=True)] == [moved.order_id]


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_stop_is_not_moved_for_a_position_rest_shows_on_the_other_side(driver, venue, stream, harness, side):
    """The stream silent, the position flipped to the other side: REST shows no position on the stop's side.
    Nothing is placed (a stop sized by the other side's contracts would be one), the old stop is not touched,
    and the error says REST does not show the position."""
    await silence_the_stream(venue, stream)
    await open_position(driver, venue, side, contracts="10")
    stop = await driver.set_stop_loss(SYMBOL, side, Decimal(10), losing(venue, side, "3"))
    other = "short" if side == "long" else "long"
    venue.manual_close("default", SYMBOL)
    await open_position(driver, venue, other, contracts="10")
    placed = calls(harness, "POST /fapi/v1/algoOrder")
    with pytest.raises(VenueError, match="REST does not show the position") as error:
        await driver.move_stop_loss(stop, losing(venue, side, "2"))
    assert not isinstance(error.value, PositionGone)
    assert (error.value.venue, error.value.symbol, error.value.order_id) == ("binance", SYMBOL, stop.order_id)
    assert calls(harness, "POST /fapi/v1/algoOrder") == placed


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_stop_read_after_the_stream_s_flat_frame_is_position_gone_once_rest_agrees(driver, venue, stream,
                                                                                          harness, side):
    """A stop object younger than the flat frame (read from a lagging snapshot after it) passes the first
    check; then neither the stream nor ``positionRisk`` shows the position, and the stream said flat after the
    last open: ``PositionGone`` naming venue, symbol and stop, nothing placed."""
    await open_position(driver, venue, side)
    await stream.wait_for(shows_open(stream, 10))
    stop = await driver.set_stop_loss(SYMBOL, side, Decimal(10), losing(venue, side, "3"))
    closed_at = venue.now()
    venue.manual_close("default", SYMBOL)
    await stream.wait_for(flat_since(stream, closed_at))
    read_later = stop.model_copy(update={"placed_at": now_ms() + 1})
    placed = calls(harness, "POST /fapi/v1/algoOrder")
    with pytest.raises(PositionGone, match="neither REST nor the stream shows the position") as error:
        await driver.move_stop_loss(read_later, losing(venue, side, "2"))
    assert (error.value.venue, error.value.symbol, error.value.order_id) == ("binance", SYMBOL, stop.order_id)
    assert calls(harness, "POST /fapi/v1/algoOrder") == placed


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_stop_cancelled_on_the_venue_during_a_move_leaves_the_new_stop(driver, venue, stream, side):
    """The old stop is gone when the move cancels it (-2011: someone cancelled it, not a trigger): the position
    is still open, so the move succeeds and the new stop is the one that rests."""
    await open_position(driver, venue, side)
    await stream.wait_for(shows_open(stream, 10))
    stop = await driver.set_stop_loss(SYMBOL, side, Decimal(10), losing(venue, side, "3"))
    venue.cancel_order("default", SYMBOL, stop.order_id)
    moved = await driver.move_stop_loss(stop, losing(venue, side, "2"))
    assert (moved.side, moved.trigger_price) == (side, losing(venue, side, "2"))
    assert [o.id for o in venue.orders("default", SYMBOL, conditional=True)] == [moved.order_id]


@pytest.mark.parametrize("closed_by", ["the old stop", "hand"])
@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_position_that_closes_during_its_stop_s_move_is_position_gone_and_the_new_stop_is_cancelled(
        driver, venue, stream, monkeypatch, side, closed_by):
    """I-5: the position closes between the new stop's placement and the old one's cancel. Either the old stop
    fired (-2011 and its status tell; the stream's flat frame is lost), or it was closed otherwise (the stream
    tells): the new stop is cancelled and the move is PositionGone."""
    await open_position(driver, venue, side)
    await stream.wait_for(shows_open(stream, 10))
    stop = await driver.set_stop_loss(SYMBOL, side, Decimal(10), losing(venue, side, "2"))
    cancel = driver.session.cancel_conditional

    async def position_closes_first(symbol, order_id):
        if order_id != stop.order_id:  # the new stop's cancel
            return await cancel(symbol, order_id)
        if closed_by == "hand":
            closed_at = venue.now()
            venue.manual_close("default", SYMBOL)
            await stream.wait_for(flat_since(stream, closed_at))
        else:
            venue.faults.drop_rate = 1.0
            venue.set_mark_price(SYMBOL, losing(venue, side, "2.5"))
        return await cancel(symbol, order_id)

    monkeypatch.setattr(driver.session, "cancel_conditional", position_closes_first)
    with pytest.raises(PositionGone, match="closed while the stop was moved") as error:
        await driver.move_stop_loss(stop, losing(venue, side, "3"))
    assert (error.value.venue, error.value.symbol, error.value.order_id) == ("binance", SYMBOL, stop.order_id)
    assert venue.position("default", SYMBOL).contracts == 0
    assert venue.orders("default", SYMBOL, conditional=True) == []


@pytest.mark.parametrize("executed", [True, False], ids=["cancelled", "not-cancelled"])
@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_move_whose_cancel_of_the_old_stop_is_lost_reports_the_new_stop(driver, venue, stream, monkeypatch,
                                                                                side, executed):
    """The new stop rests; the old one's cancel times out, executed or not. The move reports the new stop (the
    book must not keep one that may be gone); an old stop still resting is a duplicate for the reconciler."""
    await open_position(driver, venue, side)
    await stream.wait_for(shows_open(stream, 10))
    stop = await driver.set_stop_loss(SYMBOL, side, Decimal(10), losing(venue, side, "3"))
    cancel = driver.session.cancel_conditional

    async def answer_lost(symbol, order_id):
        if executed:
            await cancel(symbol, order_id)
        raise OutcomeUnknown("cancel: answer lost (test)", venue="binance", symbol=symbol, order_id=order_id)

    monkeypatch.setattr(driver.session, "cancel_conditional", answer_lost)
    moved = await driver.move_stop_loss(stop, losing(venue, side, "2"))
    assert (moved.side, moved.trigger_price) == (side, losing(venue, side, "2"))
    resting = {o.id for o in venue.orders("default", SYMBOL, conditional=True)}
    assert resting == ({moved.order_id} if executed else {moved.order_id, stop.order_id})


async def test_move_to_a_crossed_price_keeps_the_old_stop(driver, venue, stream):
    await open_position(driver, venue)
    await stream.wait_for(shows_open(stream, 10))
    stop = await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue))
    with pytest.raises(WouldTriggerImmediately):
        await driver.move_stop_loss(stop, below(venue, "-1"))
    assert venue.get_order("default", SYMBOL, order_id=stop.order_id).status == "new"


async def test_move_on_a_closed_position_raises_position_gone_and_places_nothing(driver, venue, stream, harness):
    await open_position(driver, venue)
    stop = await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue))
    closed_at = venue.now()
    venue.manual_close("default", SYMBOL)
    await stream.wait_for(flat_since(stream, closed_at))
    placed = calls(harness, "POST /fapi/v1/algoOrder")
    with pytest.raises(PositionGone):
        await driver.move_stop_loss(stop, below(venue, "1"))
    assert calls(harness, "POST /fapi/v1/algoOrder") == placed
    assert venue.truth.orders_for_closed_positions() == []


async def test_move_when_the_old_stop_fired_unseen_places_nothing(driver, venue, stream):
    """I-5: the stream is 2 s late and still shows the position: the venue refuses the new stop for want of a
    position (-2022), nothing is placed and the move fails."""
    await open_position(driver, venue)
    await stream.wait_for(shows_open(stream, 10))
    stop = StopLoss(venue="binance", symbol=SYMBOL, side="long", trigger_price=below(venue, "1"),
                    order_id=(await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue, "1"))).order_id)
    stop_order = venue.get_order("default", SYMBOL, order_id=stop.order_id)
    # the old stop fires on the venue; the stream has not told the driver yet
    venue.faults.stream_delay_ms = 2_000
    venue.set_mark_price(SYMBOL, stop_order.trigger_price - Decimal("0.0005"))
    assert venue.position("default", SYMBOL).contracts == 0
    venue.set_mark_price(SYMBOL, stop_order.trigger_price + Decimal("0.0200"))
    with pytest.raises(VenueError):  # REST shows nothing, the stream has not said flat: not "gone" yet
        await driver.move_stop_loss(stop, below(venue, "1"))
    assert venue.orders("default", SYMBOL, conditional=True) == []
    assert venue.truth.orders_for_closed_positions() == []


async def test_close_position_and_position_gone(driver, venue, harness):
    await open_position(driver, venue, "short", "5")
    closed = await driver.close_position(SYMBOL, "short", Decimal(5), "fw-c-test-close-1")
    assert (closed.side, closed.filled, closed.reduce_only) == ("buy", Decimal(5), True)
    assert venue.position("default", SYMBOL).contracts == 0
    before = calls(harness, "POST /fapi/v1/order")
    with pytest.raises(PositionGone) as error:
        await driver.close_position(SYMBOL, "short", Decimal(5), "fw-c-test-close-2")
    assert error.value.code == -2022 and calls(harness, "POST /fapi/v1/order") == before + 1
    assert venue.truth.wrong_side_orders() == []


async def test_fetch_order_by_id_client_id_and_algo(driver, venue):
    entry, order = await open_position(driver, venue)
    assert (await driver.fetch_order(SYMBOL, order.id, None)).id == order.id
    assert (await driver.fetch_order(SYMBOL, None, entry.client_order_id)).id == order.id
    stop = await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue))
    fetched = await driver.fetch_order(SYMBOL, stop.order_id, None)
    assert (fetched.side, fetched.status, fetched.trigger_price) == ("sell", "open", stop.trigger_price)
    with pytest.raises(OrderNotFound):
        await driver.fetch_order(SYMBOL, "123", None)


async def test_snapshot_costs_three_calls_whatever_the_positions(driver, venue, harness):
    await open_position(driver, venue)
    venue.place_order("default", "BTC/USDT:USDT", "sell", amount=Decimal("0.01"))
    stop = await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue))
    before = trading_calls(harness.emulator)
    snapshot = await driver.fetch_snapshot()
    assert trading_calls(harness.emulator) - before == snapshot.rest_calls == 3
    assert {(p.symbol, p.side) for p in snapshot.positions} == {(SYMBOL, "long"), ("BTC/USDT:USDT", "short")}
    found = [(s.order_id, s.side, s.kind, s.contracts) for s in snapshot.stops]
    assert found == [(stop.order_id, "long", "stop_loss", None)]


async def test_timeout_after_accept_is_outcome_unknown_and_resolvable(driver, venue, harness):
    harness.emulator.accept_timeout_hold_s = 3.0
    venue.faults.timeout_after_accept_next = 1
    entry = intent(venue)
    with pytest.raises(OutcomeUnknown):
        await driver.create_entry(entry)
    found = await driver.fetch_order(SYMBOL, None, entry.client_order_id)
    assert (found.filled, found.side) == (Decimal(10), "buy")


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_duplicate_after_a_lost_answer_is_the_order_that_exists(driver, venue, harness, side):
    """B9: a retry with the same client id after an outcome-unknown timeout gets -4116; the first order
    exists, so the driver answers with it (fetched by client id), never "rejected", and nothing doubles."""
    await open_position(driver, venue, side)
    close, trigger = ("sell", below(venue)) if side == "long" else ("buy", below(venue, "-2"))
    cid = f"fw-s-dup{side}"
    harness.emulator.accept_timeout_hold_s = 3.0
    venue.faults.timeout_after_accept_next = 1
    with pytest.raises(OutcomeUnknown):
        await driver.session.create_conditional(SYMBOL, close, "stop_loss", trigger, amount=Decimal(10),
                                                 client_order_id=cid)
    before = calls(harness, "GET /fapi/v1/algoOrder")
    again = await driver.session.create_conditional(SYMBOL, close, "stop_loss", trigger, amount=Decimal(10),
                                                 client_order_id=cid)
    assert calls(harness, "GET /fapi/v1/algoOrder") == before + 1  # resolved by client id
    [resting] = venue.orders("default", SYMBOL, open_only=True, conditional=True)
    assert (str(again["id"]), again["clientOrderId"]) == (resting.id, cid)


@pytest.mark.parametrize(("status", "error"), [(429, RateLimited), (503, OutcomeUnknown)])
async def test_http_errors_on_order_creation(driver, venue, status, error):
    await driver.rate_limit_pause()  # a 429 before pauses the venue's calls: the fault is for the entry's call
    venue.faults.http_error_status = status
    venue.faults.http_error_path = "/fapi/v1/order"  # the entry's call, not a background one
    venue.faults.http_error_next = 1
    try:
        with pytest.raises(error):
            await driver.create_entry(intent(venue))
    finally:
        venue.faults.http_error_path = None
    assert venue.faults.http_error_next == 0


async def test_stream_delivers_fills_with_origins_and_flat_updates(driver, venue, stream):
    await open_position(driver, venue)
    stop = await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue))
    fired_at = venue.now()
    venue.set_mark_price(SYMBOL, stop.trigger_price - Decimal("0.0001"))
    await stream.wait_for(flat_since(stream, fired_at))
    fills = [e for e in stream.events if isinstance(e, OrderUpdate) and e.origin == "stop_loss"
             and e.order.status == "closed" and e.order.type == "stop_market" and e.last_fill_amount > 0]
    assert fills and fills[-1].order.side == "sell"


@pytest.mark.parametrize(("testnet", "host"), [(False, "wss://fstream.binance.com"),
                                               (True, "wss://stream.binancefuture.com")])
def test_stream_urls_follow_the_2026_split(testnet, host):
    """B1/B3/B6: user data on ``/private/ws`` in the query form with every event named, marks on ``/market``."""
    from framework_binance.rest import BinanceConnection, make_exchange
    from pydantic import SecretStr

    from framework.models import DriverConfig

    config = DriverConfig(api_key=SecretStr("k"), api_secret=SecretStr("s"), testnet=testnet)
    conn = BinanceConnection(config, make_exchange(config))
    assert conn.user_stream_url("Key1") == (
        f"{host}/private/ws?listenKey=Key1&events=ORDER_TRADE_UPDATE/ACCOUNT_UPDATE/ALGO_UPDATE/listenKeyExpired"
    )
    assert conn.market_stream_url(["xrpusdt@markPrice@1s", "btcusdt@markPrice@1s"]) == (
        f"{host}/market/stream?streams=xrpusdt@markPrice@1s/btcusdt@markPrice@1s"
    )


async def test_a_driver_on_the_legacy_path_hears_nothing(driver, venue, stream, monkeypatch):
    """B2: the old ``/ws/<listenKey>`` connects (no error, no close) and then delivers nothing, while the
    driver on ``/private/ws`` sees the same fill."""

    from binance_helpers import Sink
    from framework_binance import rest

    monkeypatch.setattr(rest.BinanceConnection, "user_stream_url", lambda conn, key: f"{conn.ws_base()}/ws/{key}")
    legacy = Sink()
    task = asyncio.create_task(driver.run_stream(legacy))
    try:
        await legacy.wait_for(lambda: legacy.connected)
        entry, order = await open_position(driver, venue)
        await stream.wait_for(lambda: any(isinstance(e, OrderUpdate) and e.order.id == order.id
                                          and e.order.status == "closed" for e in stream.events))
        await driver.session.keep_alive()  # one more round trip for any frame in flight: still nothing
        assert legacy.events == [] and legacy.disconnected == [] and legacy.malformed == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
