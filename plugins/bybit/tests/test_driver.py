"""The driver's hooks, called through the core's Driver handle, against the emulator over loopback (real
ccxt, real websockets), including the incident scenarios of docs/incidents.md."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from bybit_helpers import SYMBOL, BookSink, RecordingSink, intent
from framework_bybit import rest, stream
from pydantic import SecretStr

from framework.errors import (
    OrderIncomplete,
    OrderNotFound,
    OrderRejected,
    OutcomeUnknown,
    PositionGone,
    RateLimited,
    StreamError,
    VenueError,
    WouldTriggerImmediately,
)
from framework.models import Position, PositionUpdate, StopLoss, TrailingSpec


def test_driver_info_declares_only_tested_capabilities(driver):
    assert driver.venue == "bybit"
    assert set(driver.info.capabilities) == {"attached_stop_on_entry", "amend_stop_in_place", "native_trailing_stop"}
    assert driver.info.trailing_limits is not None  # the price distance is checked against the tick when placed


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_trailing_stop_is_a_price_distance_beside_the_stop_loss(driver, venue, side):
    """Y19: ``trailingStop`` = ``callback_rate`` % of the activation price, rounded to the tick, with
    ``activePrice``; the position's ``stopLoss`` is left as it was."""
    mark = venue.mark_price(SYMBOL)
    stop_loss = (mark * (Decimal("0.95") if side == "long" else Decimal("1.05"))).quantize(Decimal("0.0001"))
    entry = intent(side=side, stop_loss=str(stop_loss))
    await driver.normalize_order(await driver.create_entry(entry), entry)
    activation = (mark * (Decimal("1.02") if side == "long" else Decimal("0.98"))).quantize(Decimal("0.0001"))
    trail = await driver.set_trailing_stop(SYMBOL, side, entry.contracts,
                                           TrailingSpec(callback_rate=Decimal(1), activation_price=activation), mark)
    position = venue.position("default", SYMBOL)
    distance = (activation / 100).quantize(Decimal("0.0001"))
    assert (position.trailing_stop, position.trailing_active_price) == (distance, activation)
    assert position.stop_loss == stop_loss
    assert trail.kind == "trailing_stop" and trail.attached
    assert trail.trigger_price == (activation - distance if side == "long" else activation + distance)


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_trail_under_one_tick_is_refused_without_a_venue_call(driver, venue, emulator, side):
    """Y19: the distance is ``callback_rate`` % of the price, rounded to the tick; under one tick the driver
    refuses it (``OrderRejected`` naming venue and symbol) and sends nothing: the stop-loss stays alone."""
    mark = venue.mark_price(SYMBOL)
    entry = await open_side(driver, venue, side)
    before = emulator.rest_calls["POST /v5/position/trading-stop"]
    with pytest.raises(OrderRejected, match="less than one tick") as error:
        await driver.set_trailing_stop(SYMBOL, side, entry.contracts, TrailingSpec(callback_rate=Decimal("0.001")),
                                       mark)
    assert (error.value.venue, error.value.symbol) == ("bybit", SYMBOL)
    assert emulator.rest_calls["POST /v5/position/trading-stop"] == before
    assert venue.position("default", SYMBOL).trailing_stop is None


@pytest.mark.parametrize("side", ["long", "short"])
async def test_moving_a_trailing_stop_as_a_fixed_stop_is_refused_without_a_venue_call(driver, venue, emulator, side):
    """trading-stop moves a stop-loss or take-profit price; a trailing stop is a distance (Y19), so "move it
    to this price" is refused (naming venue and symbol) and nothing is sent."""
    trail = StopLoss(venue="bybit", symbol=SYMBOL, side=side, kind="trailing_stop", trigger_price=Decimal("0.9"))
    before = sum(emulator.rest_calls.values())
    with pytest.raises(VenueError, match="trailing_stop is not supported by trading-stop") as error:
        await driver.move_stop_loss(trail, Decimal("0.95"))
    assert (error.value.venue, error.value.symbol) == ("bybit", SYMBOL)
    assert sum(emulator.rest_calls.values()) == before


async def open_side(driver, venue, side: str):
    """An entry of 43 contracts on ``side`` with its stop-loss 5 % on the losing side of the mark; the intent."""
    mark = venue.mark_price(SYMBOL)
    entry = intent(side=side, stop_loss=str(mark * (Decimal("0.95") if side == "long" else Decimal("1.05"))))
    await driver.normalize_order(await driver.create_entry(entry), entry)
    return entry


async def open_long(driver, venue, contracts="43", stop_loss="0.95"):
    entry = intent(contracts=contracts, stop_loss=stop_loss)
    raw = await driver.create_entry(entry)
    order = await driver.normalize_order(raw, entry)
    return entry, order


async def test_entry_with_attached_stop_and_minimal_response_completed_from_venue(driver, venue, emulator):
    entry = intent(contracts="43", stop_loss="0.95")
    raw = await driver.create_entry(entry)
    # Bybit answers only ids: ccxt's order has no side / amount / status (docs/incidents.md I-3).
    assert raw["side"] is None and raw["amount"] is None and raw["status"] is None
    before = emulator.rest_calls["GET /v5/order/realtime"]
    order = await driver.normalize_order(raw, entry)
    assert emulator.rest_calls["GET /v5/order/realtime"] == before + 1
    assert (order.side, order.amount, order.filled, order.status) == ("buy", Decimal(43), Decimal(43), "closed")
    assert order.client_order_id == entry.client_order_id
    position = venue.position("default", SYMBOL)
    assert (position.side, position.contracts, position.stop_loss) == ("long", Decimal(43), Decimal("0.95"))
    assert venue.truth.unprotected_ms(symbol=SYMBOL)["max"] == 0  # the stop rode on the entry


async def test_normalize_falls_back_to_order_history(driver, venue, emulator):
    emulator.realtime_open_only = True
    entry = intent()
    raw = await driver.create_entry(entry)
    order = await driver.normalize_order(raw, entry)
    assert order.status == "closed" and order.side == "buy"
    assert emulator.rest_calls["GET /v5/order/history"] >= 1


async def test_normalize_unknown_order_raises_order_incomplete_never_guesses(driver):
    raw = {"id": "999", "info": {"orderId": "999", "orderLinkId": ""}, "side": None, "amount": None}
    with pytest.raises(OrderIncomplete):
        await driver.normalize_order(raw, intent())


async def test_normalize_rejects_an_order_contradicting_the_intent(driver):
    entry = intent()
    raw = await driver.create_entry(entry)
    short = intent(side="short", stop_loss="1.05")
    with pytest.raises(OrderIncomplete, match="contradicts"):
        await driver.normalize_order(raw, short)


async def test_set_stop_loss_with_30s_rest_lag_succeeds_without_position_lookup(driver, venue, emulator):
    venue.faults.rest_position_lag_ms = 30_000
    await open_long(driver, venue)
    positions_before = emulator.rest_calls["GET /v5/position/list"]
    stop = await driver.set_stop_loss(SYMBOL, "long", Decimal(43), Decimal("0.9"))
    assert emulator.rest_calls["GET /v5/position/list"] == positions_before  # never fetch_positions (I-4)
    assert (stop.trigger_price, stop.attached) == (Decimal("0.9"), True)
    assert venue.position("default", SYMBOL).stop_loss == Decimal("0.9")


async def test_stop_on_a_closed_position_is_position_gone_after_one_call(driver, venue, emulator):
    await open_long(driver, venue)
    venue.manual_close("default", SYMBOL)
    before = emulator.rest_calls["POST /v5/position/trading-stop"]
    with pytest.raises(PositionGone) as error:
        await driver.set_stop_loss(SYMBOL, "long", Decimal(43), Decimal("0.9"))
    assert (error.value.venue, error.value.symbol) == ("bybit", SYMBOL) and "trading-stop" in error.value.message
    assert emulator.rest_calls["POST /v5/position/trading-stop"] == before + 1  # never retried (I-1)
    assert venue.truth.orders_for_closed_positions() == []


async def test_stop_already_crossed_would_trigger_immediately(driver, venue):
    await open_long(driver, venue)
    with pytest.raises(WouldTriggerImmediately):
        await driver.set_stop_loss(SYMBOL, "long", Decimal(43), Decimal("1.01"))
    assert venue.position("default", SYMBOL).stop_loss == Decimal("0.95")


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize(("fault", "raised"), [("crossed", OrderRejected), ("503", OutcomeUnknown),
                                               ("off-step size", OrderRejected)])
async def test_a_stop_loss_order_that_fails_is_translated_with_its_client_id_and_rests_nothing(
        driver, venue, side, fault, raised):
    """``create_stop_loss_order`` (Y21): a trigger already past the mark is the venue's 10001 refusal
    (``OrderRejected``, not a duplicate id); a 5xx on this write is ``OutcomeUnknown`` (it may have rested); a
    size off the qty step is refused before anything is sent.  Each error names the symbol and the caller's
    client order id; nothing rests."""
    entry = await open_side(driver, venue, side)
    mark, client_id = venue.mark_price(SYMBOL), "k-stop-order"
    trigger = mark * (Decimal("0.97") if side == "long" else Decimal("1.03"))
    contracts = entry.contracts + (Decimal("0.00001") if fault == "off-step size" else 0)
    if fault == "crossed":
        trigger = mark * (Decimal("1.01") if side == "long" else Decimal("0.99"))
    elif fault == "503":
        await driver.rate_limit_pause()
        venue.faults.http_error_status, venue.faults.http_error_next = 503, 1
    with pytest.raises(raised) as error:
        await driver.create_stop_loss_order(SYMBOL, side, contracts, trigger.quantize(Decimal("0.0001")), client_id)
    assert (error.value.venue, error.value.symbol, error.value.order_id) == ("bybit", SYMBOL, client_id)
    assert ("nothing sent" if fault == "off-step size" else "create stop-loss order") in error.value.message
    assert [o for o in venue.orders("default", SYMBOL) if o.client_order_id == client_id] == []


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_stop_loss_order_answered_without_its_order_id_is_incomplete_not_placed(driver, venue, side):
    """An answer with an empty ``orderId`` (fault ``answer_without_order_id_next``) is ``OrderIncomplete`` naming
    venue, symbol and the caller's client order id, by which it can be found."""
    mark = venue.mark_price(SYMBOL)
    entry = await open_side(driver, venue, side)
    venue.faults.answer_without_order_id_next = 1
    trigger = (mark * (Decimal("0.97") if side == "long" else Decimal("1.03"))).quantize(Decimal("0.0001"))
    with pytest.raises(OrderIncomplete, match="answered without an orderId") as error:
        await driver.create_stop_loss_order(SYMBOL, side, entry.contracts, trigger, f"k-no-id-{side}")
    assert (error.value.venue, error.value.symbol, error.value.order_id) == ("bybit", SYMBOL, f"k-no-id-{side}")


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_stop_move_answered_5xx_is_outcome_unknown_naming_trading_stop_and_the_symbol(driver, venue, side):
    """A 5xx on ``POST /v5/position/trading-stop`` (no retCode to read: ccxt's own error) is a write whose
    outcome is unknown (``OutcomeUnknown``, never a refusal), naming the venue, the symbol and the call; here the
    gateway answered before the venue acted, so the position keeps the stop it had."""
    entry = await open_side(driver, venue, side)
    stop = StopLoss(venue="bybit", symbol=SYMBOL, side=side, trigger_price=entry.stop_loss)
    before = venue.position("default", SYMBOL).stop_loss
    await driver.rate_limit_pause()
    venue.faults.http_error_status, venue.faults.http_error_next = 503, 1
    with pytest.raises(OutcomeUnknown) as error:
        await driver.move_stop_loss(stop, (entry.stop_loss * Decimal("1.01")).quantize(Decimal("0.0001")))
    assert (error.value.venue, error.value.symbol) == ("bybit", SYMBOL)
    assert error.value.message.startswith("trading-stop: ")  # the call, not only its URL
    assert venue.position("default", SYMBOL).stop_loss == before


async def test_move_stop_amends_in_place_with_no_unprotected_window(driver, venue, emulator):
    await open_long(driver, venue)
    stop = StopLoss(venue="bybit", symbol=SYMBOL, side="long", trigger_price=Decimal("0.95"))
    for price in ("0.96", "0.97", "0.98"):
        stop = await driver.move_stop_loss(stop, Decimal(price))
    assert venue.position("default", SYMBOL).stop_loss == Decimal("0.98")
    assert venue.truth.unprotected_ms(symbol=SYMBOL)["max"] == 0
    assert emulator.rest_calls["POST /v5/order/cancel"] == 0  # never cancel + create


async def test_move_to_the_same_price_is_not_modified_and_returns_the_resting_stop(driver, venue):
    await open_long(driver, venue)
    stop = StopLoss(venue="bybit", symbol=SYMBOL, side="long", trigger_price=Decimal("0.95"))
    moved = await driver.move_stop_loss(stop, Decimal("0.95"))  # 34040 not modified
    assert moved.trigger_price == Decimal("0.95")


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_duplicate_client_order_id_resolves_to_the_existing_order(driver, venue, emulator, side):
    """110072: the order with this orderLinkId exists (a retry after a lost answer): it is the result."""
    entry = intent(side, stop_loss="0.95" if side == "long" else "1.05")
    venue.faults.timeout_after_accept_next = 1
    emulator.timeout_hold_s = 5.0  # past the client's 3 s timeout
    with pytest.raises(OutcomeUnknown):
        await driver.create_entry(entry)
    raw = await driver.create_entry(entry)  # the retry: 110072 on the venue
    assert [r.reject_reason for r in venue.truth.orders][-1] == "duplicate_client_order_id"
    order = await driver.normalize_order(raw, entry)
    assert (order.client_order_id, order.side, order.filled) == (entry.client_order_id, entry.order_side, Decimal(43))
    assert venue.position("default", SYMBOL).contracts == Decimal(43)  # one position, not two


async def test_34040_is_not_read_as_already_set_unless_the_position_shows_it(conn, venue):
    """34040 also means "you didn't pass a required parameter" (bybit docs error.mdx)."""
    await rest.create_entry(conn, intent())
    with pytest.raises(VenueError) as missing:  # no price at all: the venue answers 34040
        await rest._trading_stop(conn, SYMBOL, {"slTriggerBy": "MarkPrice"})
    assert missing.value.code == 34040 and not isinstance(missing.value, PositionGone)
    venue.faults.rest_position_lag_ms = 30_000  # the position list cannot confirm the value yet
    with pytest.raises(VenueError):
        await rest.set_trigger(conn, SYMBOL, "long", Decimal("0.95"), "stop_loss")
    venue.faults.rest_position_lag_ms = 0
    stop = await rest.set_trigger(conn, SYMBOL, "long", Decimal("0.95"), "stop_loss")  # shown: already set
    assert stop.trigger_price == Decimal("0.95")


async def test_move_on_a_closed_position_is_position_gone_and_places_nothing(driver, venue):
    await open_long(driver, venue)
    venue.manual_close("default", SYMBOL)
    stop = StopLoss(venue="bybit", symbol=SYMBOL, side="long", trigger_price=Decimal("0.95"))
    with pytest.raises(PositionGone):
        await driver.move_stop_loss(stop, Decimal("0.97"))
    assert venue.truth.orders_for_closed_positions() == []


async def test_take_profit_and_cancel_stop(driver, venue):
    await open_long(driver, venue)
    tp = await driver.set_take_profit(SYMBOL, "long", Decimal(43), Decimal("1.2"))
    assert tp.kind == "take_profit" and venue.position("default", SYMBOL).take_profit == Decimal("1.2")
    stop = StopLoss(venue="bybit", symbol=SYMBOL, side="long", trigger_price=Decimal("0.95"))
    assert await driver.cancel_stop_loss(stop) is True
    assert venue.position("default", SYMBOL).stop_loss is None
    assert await driver.cancel_stop_loss(stop) is False  # already gone: not modified


async def test_close_position_reduce_only_and_position_gone_when_flat(driver, venue):
    await open_long(driver, venue)
    closing = await driver.close_position(SYMBOL, "long", Decimal(43), "fw-c-close-1")
    assert (closing.side, closing.reduce_only, closing.filled) == ("sell", True, Decimal(43))
    assert venue.position("default", SYMBOL).contracts == 0
    with pytest.raises(PositionGone):
        await driver.close_position(SYMBOL, "long", Decimal(43), "fw-c-close-2")
    assert venue.truth.wrong_side_orders() == []


async def test_fetch_order_by_client_id_and_not_found(driver, venue):
    entry, order = await open_long(driver, venue)
    fetched = await driver.fetch_order(SYMBOL, client_order_id=entry.client_order_id)
    assert fetched.id == order.id
    with pytest.raises(OrderNotFound):
        await driver.fetch_order(SYMBOL, order_id="424242")


async def test_snapshot_is_two_calls_whatever_the_positions(driver, venue, emulator):
    await open_long(driver, venue)
    venue.place_order("default", "BTC/USDT:USDT", "sell", amount=Decimal("0.01"), stop_loss=Decimal(70000))
    before = sum(emulator.rest_calls.values())
    snapshot = await driver.fetch_snapshot()
    assert sum(emulator.rest_calls.values()) - before == 2 == snapshot.rest_calls
    assert {(p.symbol, p.side) for p in snapshot.positions} == {(SYMBOL, "long"), ("BTC/USDT:USDT", "short")}
    assert {(s.symbol, s.trigger_price) for s in snapshot.stops} == {
        (SYMBOL, Decimal("0.95")), ("BTC/USDT:USDT", Decimal(70000))}


@pytest.mark.hooks("fetch_snapshot")
async def test_snapshot_follows_every_page(driver, venue, emulator):
    await open_long(driver, venue)
    venue.place_order("default", "BTC/USDT:USDT", "sell", amount=Decimal("0.01"), stop_loss=Decimal(70000))
    venue.place_order("default", "BTC/USDT:USDT", "buy", type="stop_market", amount=Decimal("0.01"),
                      reduce_only=True, trigger_price=Decimal(71000))
    config = driver.session.config
    driver.session.config = config.model_copy(update={"options": {**config.options, "snapshot_page_limit": 1}})
    before = sum(emulator.rest_calls.values())
    snapshot = await driver.fetch_snapshot()
    assert {p.symbol for p in snapshot.positions} == {SYMBOL, "BTC/USDT:USDT"}  # two pages of one
    assert Decimal(71000) in {s.trigger_price for s in snapshot.stops}
    # 2 position pages + 3 order pages (the stop order and the two positions' system stop-loss orders)
    assert snapshot.rest_calls == sum(emulator.rest_calls.values()) - before == 5


async def system_tpsl_rows(conn) -> dict[str, dict]:
    result = await conn.call("privateGetV5OrderRealtime", {"category": "linear", "settleCoin": "USDT"})
    return {row["stopOrderType"]: row for row in result["list"]}


@pytest.mark.parametrize("side", ["long", "short"])
async def test_snapshot_reports_the_position_stop_once_though_the_venue_lists_its_order(driver, venue, side):
    stop, take = ("0.95", "1.1") if side == "long" else ("1.05", "0.9")
    entry = intent(side, stop_loss=stop, take_profit=Decimal(take))
    await driver.normalize_order(await driver.create_entry(entry), entry)
    rows = await system_tpsl_rows(driver.session)
    assert set(rows) == {"StopLoss", "TakeProfit"}  # the venue lists them as Untriggered orders (Y2)
    snapshot = await driver.fetch_snapshot()
    assert sorted((s.kind, s.side, s.trigger_price, s.order_id) for s in snapshot.stops) == [
        ("stop_loss", side, Decimal(stop), None), ("take_profit", side, Decimal(take), None)]
    assert {o.id for o in snapshot.open_orders} == {rows["StopLoss"]["orderId"], rows["TakeProfit"]["orderId"]}


@pytest.mark.parametrize("side", ["long", "short"])
async def test_cancelling_the_stop_works_in_either_representation(driver, venue, side):
    stop = "0.95" if side == "long" else "1.05"
    entry = intent(side, stop_loss=stop)
    await driver.normalize_order(await driver.create_entry(entry), entry)
    # attached (as the snapshot and set_trigger report it): trading-stop "0" removes the field and the order
    attached = StopLoss(venue="bybit", symbol=SYMBOL, side=side, trigger_price=Decimal(stop))
    assert await driver.cancel_stop_loss(attached) is True
    assert venue.position("default", SYMBOL).stop_loss is None and await system_tpsl_rows(driver.session) == {}
    # by the system order's id (as the venue lists it): cancelling the order removes the position's stop
    await driver.set_stop_loss(SYMBOL, side, Decimal(43), Decimal(stop))
    order_id = (await system_tpsl_rows(driver.session))["StopLoss"]["orderId"]
    by_order = attached.model_copy(update={"order_id": order_id})
    assert await driver.cancel_stop_loss(by_order) is True
    assert venue.position("default", SYMBOL).stop_loss is None and await system_tpsl_rows(driver.session) == {}
    assert await driver.cancel_stop_loss(by_order) is False
    assert await driver.cancel_stop_loss(attached) is False


async def test_rejected_entry_is_order_rejected(driver, venue):
    venue.faults.reject_next_orders = 1
    with pytest.raises(OrderRejected):
        await driver.create_entry(intent())
    assert venue.position("default", SYMBOL).contracts == 0


async def test_rate_limit_is_rate_limited(driver, venue):
    venue.faults.http_error_status, venue.faults.http_error_next = 429, 1
    with pytest.raises(RateLimited):
        await driver.create_entry(intent())


async def test_5xx_on_entry_is_outcome_unknown(driver, venue):
    await driver.rate_limit_pause()  # a 429 before pauses the venue's calls: the fault is for the entry's call
    venue.faults.http_error_status, venue.faults.http_error_next = 503, 1
    with pytest.raises(OutcomeUnknown):
        await driver.create_entry(intent())


async def test_timeout_after_accept_is_outcome_unknown_and_resolvable_by_client_id(driver, venue, emulator):
    emulator.timeout_hold_s = 3.0
    venue.faults.timeout_after_accept_next = 1
    entry = intent()
    with pytest.raises(OutcomeUnknown):
        await driver.create_entry(entry)
    found = await driver.fetch_order(SYMBOL, client_order_id=entry.client_order_id)
    assert found.filled == Decimal(43) and venue.position("default", SYMBOL).contracts == Decimal(43)


# --- private stream -----------------------------------------------------------------------------------------


async def test_stream_delivers_open_and_flat_updates_and_order_updates(conn, venue, emulator):
    sink = RecordingSink()
    task = asyncio.create_task(stream.run_stream(conn, sink))
    try:
        await sink.wait_for(lambda: sink.connected)
        assert sink.connected == [False]
        entry = intent()
        await rest.create_entry(conn, entry)
        await sink.wait_for(lambda: sink.order(entry.client_order_id))
        open_update = await sink.wait_for(lambda: [e for e in sink.events if isinstance(e, PositionUpdate)
                                                   and e.contracts == 43])
        assert open_update[0].side == "long"
        venue.set_mark_price(SYMBOL, Decimal("0.94"))  # the attached stop fires
        flat = await sink.wait_for(lambda: [e for e in sink.events if isinstance(e, PositionUpdate)
                                            and e.contracts == 0])
        assert flat[0].side is None and flat[0].sequence > open_update[0].sequence  # I-1: never dropped
        assert sink.position(SYMBOL).contracts == 0
        fills = [e for e in sink.events if getattr(e, "origin", None) == "stop_loss" and e.last_fill_amount > 0]
        assert fills, "the stop's fill is attributed to stop_loss"
        # keep-alive: pings go out on the configured interval
        await emulator.wait_for_ws_ops("ping", emulator.ws_ops["ping"] + 2, timeout_s=3)
        # reconnect after a drop, with on_connected(reconnect=True)
        await emulator.disconnect_streams()
        await sink.wait_for(lambda: len(sink.connected) >= 2)
        assert sink.connected[-1] is True and sink.disconnected
        # a malformed frame is reported and the stream goes on
        await emulator.inject_private_frame("{not json")
        await sink.wait_for(lambda: sink.malformed)
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(5))
        await sink.wait_for(lambda: sink.position(SYMBOL).contracts == 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_stream_auth_failure_raises_stream_error(harness):
    config = harness.config.model_copy(update={"api_secret": SecretStr("wrong"), "options": {"ws_timeout_s": 2}})
    conn = rest.BybitConnection(config, rest.make_client(config))
    try:
        with pytest.raises(StreamError, match="authentication failed"):
            await asyncio.wait_for(stream.run_stream(conn, RecordingSink()), 5)
    finally:
        await conn.client.close()


async def test_mark_prices_from_the_public_stream(conn, venue):
    sink = RecordingSink()
    task = asyncio.create_task(stream.watch_mark_prices(conn, [SYMBOL], sink))
    try:
        await sink.wait_for(lambda: sink.events)  # the snapshot on subscribe
        venue.set_mark_price(SYMBOL, Decimal("1.0123"))
        tick = await sink.wait_for(lambda: [e for e in sink.events if e.price == Decimal("1.0123")])
        assert tick[0].symbol == SYMBOL
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("side", ["long", "short"])
async def test_sizes_the_venue_would_not_take_as_is_are_refused_nothing_filled(driver, venue, emulator, side):
    stop = "0.95" if side == "long" else "1.05"
    before = emulator.rest_calls["POST /v5/order/create"]
    for contracts in ("43.05", "0.05"):  # off the qtyStep 0.1 (ccxt would truncate it) / below minOrderQty
        with pytest.raises(OrderRejected) as error:
            await driver.create_entry(intent(side, contracts=contracts, stop_loss=stop))
        assert "nothing sent" in error.value.message
    assert emulator.rest_calls["POST /v5/order/create"] == before
    with pytest.raises(OrderRejected) as error:  # 4 XRP at mark 1 = 4 USDT < minNotionalValue 5
        await driver.create_entry(intent(side, contracts="4", stop_loss=stop))
    assert error.value.code == 110094
    assert venue.position("default", SYMBOL).contracts == 0


async def test_normalize_waits_for_an_order_the_venue_does_not_list_yet(conn, venue, emulator):
    venue.faults.order_visibility_lag_ms = 300  # order creation "is asynchronous" (create-order.mdx)
    entry = intent()
    raw = await rest.create_entry(conn, entry)
    before = emulator.rest_calls["GET /v5/order/realtime"]
    order = await rest.normalize_order(conn, raw, entry)
    assert (order.side, order.filled, order.client_order_id) == ("buy", Decimal(43), entry.client_order_id)
    assert emulator.rest_calls["GET /v5/order/realtime"] > before + 1  # asked again, not taken as unknown


@pytest.mark.parametrize("side", ["long", "short"])
async def test_zero_position_contradicting_a_fresh_fill_on_the_stream_is_asked_again(conn, venue, emulator, side):
    sink = BookSink()  # the stream evidence the driver weighs is the core's book, as under the engine
    task = asyncio.create_task(stream.run_stream(conn, sink))
    grace = conn.position_visible_grace_ms
    take = Decimal("1.2") if side == "long" else Decimal("0.8")
    try:
        await sink.wait_for(lambda: sink.connected)
        venue.faults.order_visibility_lag_ms = 300  # the venue's position view lags the fill
        await rest.create_entry(conn, intent(side, stop_loss="0.95" if side == "long" else "1.05"))
        await sink.wait_for(lambda: (p := sink.last_update(SYMBOL)) and p.contracts == 43)
        before = emulator.rest_calls["POST /v5/position/trading-stop"]
        # 10001 "zero position" while the stream just showed the fill: asked again, then set
        assert (await rest.set_trigger(conn, SYMBOL, side, take, "take_profit")).trigger_price == take
        assert emulator.rest_calls["POST /v5/position/trading-stop"] > before + 1
        assert venue.position("default", SYMBOL).take_profit == take
        venue.faults.order_visibility_lag_ms = 30_000  # longer than the evidence stays fresh
        conn.position_visible_grace_ms = 300
        with pytest.raises(PositionGone):  # then the venue's answer stands
            await rest.set_trigger(conn, SYMBOL, side, take + (1 if side == "long" else -1) * Decimal("0.1"),
                                   "take_profit")
    finally:
        conn.position_visible_grace_ms = grace
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(("side", "distance", "start"), [
    ("long", "0.25", "0.75"), ("short", "0.25", "1.25"), ("long", "1", None), ("short", "1", "2")])
def test_a_trail_reported_at_or_below_zero_is_no_price(side, distance, start):
    """A trail's distance behind the mark (1) that reaches zero is no stop price: not reported."""
    position = Position(venue="bybit", account="default", symbol=SYMBOL, side=side, contracts=Decimal(43),
                        entry_price=Decimal(1), mark_price=Decimal(1))
    assert rest._trail_start(position, Decimal(distance)) == (Decimal(start) if start else None)


@pytest.mark.parametrize("side", ["long", "short"])
async def test_the_snapshot_reports_an_attached_trailing_stop_as_a_price_not_its_distance(driver, venue, side):
    mark = venue.mark_price(SYMBOL)
    stop_loss = (mark * (Decimal("0.95") if side == "long" else Decimal("1.05"))).quantize(Decimal("0.0001"))
    entry = intent(side=side, stop_loss=str(stop_loss))
    await driver.normalize_order(await driver.create_entry(entry), entry)
    await driver.set_trailing_stop(SYMBOL, side, entry.contracts, TrailingSpec(callback_rate=Decimal(1)), mark)
    distance = venue.position("default", SYMBOL).trailing_stop
    [trail] = [s for s in (await driver.fetch_snapshot()).stops if s.kind == "trailing_stop"]
    assert trail.attached and trail.trigger_price == (mark - distance if side == "long" else mark + distance)
