"""Orders, positions and events of the simulated venue (docs/venue-api.md)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from framework.venue import (
    BalanceEvent,
    FillEvent,
    MarkPriceEvent,
    OrderEvent,
    PositionEvent,
    Venue,
    VenueReject,
    default_instruments,
)

XRP = "XRP/USDT:USDT"
BTC = "BTC/USDT:USDT"

ACC = "default"


def open_long(venue: Venue, amount: str = "100", **kwargs) -> None:
    venue.place_order(ACC, XRP, "buy", amount=D(amount), **kwargs)


def test_default_instruments():
    by_symbol = {i.symbol: i for i in default_instruments()}
    assert by_symbol[XRP].id == "XRPUSDT"
    assert (by_symbol[XRP].tick_size, by_symbol[XRP].step_size, by_symbol[XRP].min_amount) == (
        D("0.0001"),
        D("0.1"),
        D("0.1"),
    )
    assert by_symbol[BTC].id == "BTCUSDT"
    assert (by_symbol[BTC].tick_size, by_symbol[BTC].step_size) == (D("0.1"), D("0.001"))


def test_accounts_by_key_and_secret_not_in_repr(venue):
    assert venue.account_for_key("k") == ACC
    assert venue.account_for_key("nope") is None
    assert venue.account_secret(ACC) == "s"
    assert "'s'" not in repr(venue._accounts[ACC])
    with pytest.raises(ValueError, match="API key"):
        venue.add_account("other", api_key="k", api_secret="x")


def test_tick_is_strictly_increasing_on_a_frozen_clock(venue):
    first = venue.tick()
    assert venue.tick() == first + 1
    assert venue.now() == first + 1


def test_market_buy_opens_long_with_entry_fee_and_events(venue, events):
    order = venue.place_order(ACC, XRP, "buy", amount=D("100"), client_order_id="c1")
    assert (order.status, order.filled, order.average, order.origin) == (
        "filled",
        D("100"),
        D("1.0000"),
        "order",
    )
    assert order.fee == D("100") * D("1.0000") * D("0.0005")
    position = venue.position(ACC, XRP)
    assert (position.side, position.contracts, position.entry_price) == ("long", D("100"), D("1.0000"))
    assert venue.balance(ACC)["total"] == D("10000") - order.fee
    kinds = [type(e) for e in events]
    assert kinds == [OrderEvent, FillEvent, OrderEvent, PositionEvent, BalanceEvent]
    assert events[0].order.status == "new" and events[2].order.status == "filled"
    assert events[1].client_order_id == "c1"
    assert len({e.ts for e in events}) == 1


def test_adding_averages_entry_and_closing_realizes_pnl(venue, clock):
    open_long(venue)
    venue.set_mark_price(XRP, D("1.2000"))
    open_long(venue)
    assert venue.position(ACC, XRP).entry_price == D("1.1")
    assert venue.position(ACC, XRP).unrealized_pnl == D("20")
    venue.set_mark_price(XRP, D("1.3000"))
    close = venue.place_order(ACC, XRP, "sell", amount=D("50"), reduce_only=True)
    assert close.realized_pnl == D("10")  # 50 × (1.3 − 1.1)
    position = venue.position(ACC, XRP)
    assert (position.contracts, position.realized_pnl) == (D("150"), D("10"))


def test_short_pnl_and_flip(venue):
    venue.place_order(ACC, XRP, "sell", amount=D("100"))
    venue.set_mark_price(XRP, D("0.9000"))
    flip = venue.place_order(ACC, XRP, "buy", amount=D("150"))
    assert flip.realized_pnl == D("10")
    position = venue.position(ACC, XRP)
    assert (position.side, position.contracts, position.entry_price) == ("long", D("50"), D("0.9000"))
    [closure] = venue.truth.closures
    assert (closure.side, closure.contracts, closure.origin, closure.realized_pnl) == (
        "short",
        D("100"),
        "order",
        D("10"),
    )


def test_reduce_only_market_caps_at_position_size(venue):
    open_long(venue, "10")
    order = venue.place_order(ACC, XRP, "sell", amount=D("25"), reduce_only=True)
    assert order.filled == D("10")
    assert venue.position(ACC, XRP).contracts == 0
    assert venue.positions(ACC) == []


@pytest.mark.parametrize("existing", [None, "buy"])
def test_reduce_only_without_opposite_position_is_rejected(venue, existing):
    if existing:
        open_long(venue)
    with pytest.raises(VenueReject) as raised:
        venue.place_order(ACC, XRP, "buy", amount=D("10"), reduce_only=True)
    assert raised.value.reason == "reduce_only_rejected"
    assert venue.truth.orders[-1].status == "rejected"
    assert venue.truth.orders[-1].reject_reason == "reduce_only_rejected"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"amount": D("0")}, "invalid_quantity"),
        ({"amount": D("-1")}, "invalid_quantity"),
        ({"amount": D("1.05")}, "invalid_quantity"),
        ({"amount": None}, "invalid_quantity"),
        ({"amount": D("10"), "type": "stop_market", "trigger_price": D("0.95001")}, "invalid_price"),
        ({"amount": D("10"), "type": "stop_market", "trigger_price": D("0")}, "invalid_price"),
        ({"amount": D("10"), "type": "stop_market"}, "invalid_price"),
        ({"amount": D("10"), "type": "trailing_stop_market", "callback_rate": D("20")}, "invalid_price"),
        ({"amount": D("10"), "type": "stop_limit"}, "invalid_order"),
        ({"amount": D("10"), "type": "limit"}, "invalid_price"),
        ({"amount": D("10"), "type": "market", "close_position": True}, "invalid_order"),
        (
            {"amount": D("10"), "type": "stop_market", "trigger_price": D("0.9"), "close_position": True},
            "invalid_order",
        ),
        ({"amount": D("100000000")}, "insufficient_margin"),
        ({"amount": "ten"}, "invalid_quantity"),
        ({"amount": D("NaN")}, "invalid_quantity"),
        ({"amount": D("10"), "type": "stop_market", "trigger_price": "x"}, "invalid_price"),
    ],
)
def test_invalid_orders_are_rejected_and_recorded(venue, kwargs, reason):
    kwargs = {"type": "market", **kwargs}
    with pytest.raises(VenueReject) as raised:
        venue.place_order(ACC, XRP, "sell", **kwargs)
    assert raised.value.reason == reason
    record = venue.truth.orders[-1]
    assert (record.status, record.reject_reason, record.order_id) == ("rejected", reason, None)
    assert venue.orders(ACC, open_only=False) == []


def test_unknown_symbol_and_side(venue):
    with pytest.raises(VenueReject) as raised:
        venue.place_order(ACC, "DOGE/USDT:USDT", "buy", amount=D("1"))
    assert raised.value.reason == "unknown_symbol"
    with pytest.raises(VenueReject) as raised:
        venue.place_order(ACC, XRP, "long", amount=D("1"))
    assert raised.value.reason == "invalid_order"


def test_duplicate_client_order_id(venue):
    open_long(venue, client_order_id="fw-o-1")
    with pytest.raises(VenueReject) as raised:
        open_long(venue, client_order_id="fw-o-1")
    assert raised.value.reason == "duplicate_client_order_id"
    assert venue.position(ACC, XRP).contracts == D("100")


def test_reject_next_orders_fault_is_decremented(venue):
    venue.faults.reject_next_orders = 2
    for _ in range(2):
        with pytest.raises(VenueReject) as raised:
            open_long(venue)
        assert raised.value.reason == "rejected"
    open_long(venue)
    assert venue.faults.reject_next_orders == 0
    assert venue.position(ACC, XRP).contracts == D("100")


def test_get_cancel_and_list_orders(venue, events):
    open_long(venue)
    stop = venue.place_order(
        ACC,
        XRP,
        "sell",
        "stop_market",
        D("100"),
        client_order_id="fw-s-1",
        reduce_only=True,
        trigger_price=D("0.9000"),
    )
    assert venue.get_order(ACC, XRP, client_order_id="fw-s-1").id == stop.id
    assert [o.id for o in venue.orders(ACC, XRP)] == [stop.id]
    assert venue.orders(ACC, conditional=False) == []
    assert len(venue.orders(ACC, open_only=False)) == 2
    canceled = venue.cancel_order(ACC, XRP, order_id=stop.id)
    assert canceled.status == "canceled"
    assert events[-1].order.status == "canceled"
    with pytest.raises(VenueReject) as raised:
        venue.cancel_order(ACC, XRP, order_id=stop.id)
    assert raised.value.reason == "order_not_found"
    with pytest.raises(VenueReject) as raised:
        venue.get_order(ACC, order_id="42")
    assert raised.value.reason == "order_not_found"
    with pytest.raises(VenueReject) as raised:
        venue.get_order(ACC, BTC, order_id=stop.id)  # wrong symbol
    assert raised.value.reason == "order_not_found"


def test_numbers_given_as_strings_are_accepted(venue):
    order = venue.place_order(ACC, XRP, "buy", amount="10.5")
    assert order.amount == D("10.5") and venue.position(ACC, XRP).contracts == D("10.5")


def test_snapshots_are_copies(venue):
    order = venue.place_order(ACC, XRP, "buy", amount=D("10"))
    order.status = "canceled"
    assert venue.get_order(ACC, order_id=order.id).status == "filled"


# --- conditional orders -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("position", "side", "type", "trigger", "crossing_mark", "origin"),
    [
        ("buy", "sell", "stop_market", "0.9500", "0.9500", "stop_loss"),
        ("buy", "sell", "take_profit_market", "1.0500", "1.0600", "take_profit"),
        ("sell", "buy", "stop_market", "1.0500", "1.0700", "stop_loss"),
        ("sell", "buy", "take_profit_market", "0.9500", "0.9400", "take_profit"),
    ],
)
def test_conditional_triggers_on_mark_price_in_its_direction(
    venue, position, side, type, trigger, crossing_mark, origin
):
    venue.place_order(ACC, XRP, position, amount=D("100"))
    order = venue.place_order(ACC, XRP, side, type, D("100"), reduce_only=True, trigger_price=D(trigger))
    away = D("1.0100") if (type == "stop_market") == (side == "sell") else D("0.9900")
    venue.set_mark_price(XRP, away)  # moving away does nothing
    assert venue.get_order(ACC, order_id=order.id).status == "new"
    venue.set_mark_price(XRP, D(crossing_mark))
    parent = venue.get_order(ACC, order_id=order.id)
    assert parent.status == "triggered"
    child = venue.get_order(ACC, order_id=parent.triggered_order_id)
    assert (child.type, child.status, child.origin, child.filled) == ("market", "filled", origin, D("100"))
    assert child.average == D(crossing_mark)
    assert venue.position(ACC, XRP).contracts == 0
    assert venue.truth.closures[-1].origin == origin


@pytest.mark.parametrize(
    ("side", "type", "trigger"),
    [
        ("sell", "stop_market", "1.0000"),  # sell stop must be below the mark
        ("sell", "take_profit_market", "0.9900"),  # sell TP must be above
        ("buy", "stop_market", "0.9900"),
        ("buy", "take_profit_market", "1.0100"),
    ],
)
def test_would_trigger_immediately(venue, side, type, trigger):
    with pytest.raises(VenueReject) as raised:
        venue.place_order(ACC, XRP, side, type, D("10"), reduce_only=True, trigger_price=D(trigger))
    assert raised.value.reason == "would_trigger_immediately"


def test_close_position_order_closes_whatever_is_open_and_may_precede_the_entry(venue):
    stop = venue.place_order(
        ACC, XRP, "sell", "stop_market", None, close_position=True, trigger_price=D("0.9000")
    )
    open_long(venue, "30")
    open_long(venue, "20")
    venue.set_mark_price(XRP, D("0.8900"))
    child = venue.get_order(ACC, order_id=venue.get_order(ACC, order_id=stop.id).triggered_order_id)
    assert child.filled == D("50") and child.average == D("0.8900")
    assert venue.position(ACC, XRP).contracts == 0


def test_reducing_conditionals_stay_after_flat_and_expire_on_trigger(venue):
    open_long(venue)
    stop = venue.place_order(
        ACC, XRP, "sell", "stop_market", D("100"), reduce_only=True, trigger_price=D("0.9")
    )
    close_all = venue.place_order(
        ACC, XRP, "sell", "stop_market", None, close_position=True, trigger_price=D("0.9")
    )
    venue.manual_close(ACC, XRP)
    assert {o.id for o in venue.orders(ACC, XRP)} == {stop.id, close_all.id}  # not cancelled when flat
    venue.set_mark_price(XRP, D("0.8"))
    assert venue.get_order(ACC, order_id=stop.id).status == "expired"
    assert venue.get_order(ACC, order_id=close_all.id).status == "expired"
    assert venue.positions(ACC) == []


def test_non_reducing_stop_opens_a_position(venue):
    venue.place_order(ACC, XRP, "buy", "stop_market", D("10"), trigger_price=D("1.1000"))
    venue.set_mark_price(XRP, D("1.1000"))
    assert (venue.position(ACC, XRP).side, venue.position(ACC, XRP).contracts) == ("long", D("10"))


def test_trigger_emits_parent_then_child_events(venue, events):
    open_long(venue)
    stop = venue.place_order(
        ACC, XRP, "sell", "stop_market", D("100"), reduce_only=True, trigger_price=D("0.9")
    )
    events.clear()
    venue.set_mark_price(XRP, D("0.9"))
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "MarkPriceEvent",
        "OrderEvent",
        "OrderEvent",
        "FillEvent",
        "OrderEvent",
        "PositionEvent",
        "BalanceEvent",
    ]
    assert events[1].order.id == stop.id and events[1].order.status == "triggered"
    assert events[3].origin == "stop_loss"
    assert events[0].ts < events[1].ts


# --- trailing stops ---------------------------------------------------------------------------------


def test_trailing_stop_for_a_long_tracks_the_high_and_triggers_on_retrace(venue):
    open_long(venue)
    order = venue.place_order(
        ACC, XRP, "sell", "trailing_stop_market", D("100"), reduce_only=True, callback_rate=D("1")
    )
    assert venue.get_order(ACC, order_id=order.id).trailing_stop_price == D("0.99")
    venue.set_mark_price(XRP, D("1.2000"))
    venue.set_mark_price(XRP, D("1.1900"))  # 0.83 % below the best: holds
    assert venue.get_order(ACC, order_id=order.id).trailing_stop_price == D("1.188")
    assert venue.position(ACC, XRP).contracts == D("100")
    venue.set_mark_price(XRP, D("1.1880"))  # exactly 1 % below 1.2: fires
    parent = venue.get_order(ACC, order_id=order.id)
    assert parent.status == "triggered"
    assert venue.get_order(ACC, order_id=parent.triggered_order_id).origin == "trailing_stop"
    assert venue.truth.closures[-1].origin == "trailing_stop"


def test_trailing_stop_for_a_short_with_activation_price(venue):
    venue.place_order(ACC, XRP, "sell", amount=D("100"))
    order = venue.place_order(
        ACC,
        XRP,
        "buy",
        "trailing_stop_market",
        D("100"),
        reduce_only=True,
        callback_rate=D("2"),
        activation_price=D("0.9000"),
    )
    venue.set_mark_price(XRP, D("1.0500"))  # not activated: a 5 % rise does nothing
    assert venue.get_order(ACC, order_id=order.id).trailing_best is None
    venue.set_mark_price(XRP, D("0.9000"))  # activates
    venue.set_mark_price(XRP, D("0.8000"))
    venue.set_mark_price(XRP, D("0.8150"))  # +1.875 %: holds
    assert venue.get_order(ACC, order_id=order.id).status == "new"
    venue.set_mark_price(XRP, D("0.8160"))  # +2 % from 0.8: fires
    assert venue.get_order(ACC, order_id=order.id).status == "triggered"
    assert venue.position(ACC, XRP).contracts == 0


def test_trailing_activation_price_already_reached_is_rejected(venue):
    open_long(venue)
    with pytest.raises(VenueReject) as raised:
        venue.place_order(
            ACC,
            XRP,
            "sell",
            "trailing_stop_market",
            D("100"),
            reduce_only=True,
            callback_rate=D("1"),
            activation_price=D("0.9900"),
        )
    assert raised.value.reason == "would_trigger_immediately"


# --- attached stops ---------------------------------------------------------------------------------


def test_stop_loss_on_market_entry_attaches_and_fires(venue):
    open_long(venue, stop_loss=D("0.9500"), take_profit=D("1.1000"))
    position = venue.position(ACC, XRP)
    assert (position.stop_loss, position.take_profit) == (D("0.9500"), D("1.1000"))
    venue.set_mark_price(XRP, D("0.9400"))
    assert venue.position(ACC, XRP).contracts == 0
    closure = venue.truth.closures[-1]
    assert (closure.origin, closure.price, closure.realized_pnl) == ("stop_loss", D("0.9400"), D("-6"))
    fills = [f for f in venue.truth.fills if f.origin == "stop_loss"]
    assert len(fills) == 1


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_an_entry_with_an_attached_stop_that_fills_nothing_leaves_no_position_and_no_stop(venue, side):
    # the book takes none of it (EXPIRED / Cancelled): the venue answers the order, nothing is attached
    venue.faults.market_fill_ratio = 0.0
    stop, take = (D("0.9500"), D("1.1000")) if side == "buy" else (D("1.0500"), D("0.9000"))
    order = venue.place_order(ACC, XRP, side, amount=D("100"), stop_loss=stop, take_profit=take)
    assert order.filled == 0 and order.status in ("expired", "canceled")
    assert venue.positions(ACC) == [] and venue.orders(ACC, open_only=True) == []
    venue.faults.market_fill_ratio = 0.5  # half fills: the stop and take-profit rest on what filled
    venue.place_order(ACC, XRP, side, amount=D("100"), stop_loss=stop, take_profit=take)
    position = venue.position(ACC, XRP)
    assert (position.side, position.contracts) == ("long" if side == "buy" else "short", D("50"))
    assert (position.stop_loss, position.take_profit) == (stop, take)


def test_attached_stop_on_entry_already_crossed_is_rejected_and_nothing_fills(venue):
    with pytest.raises(VenueReject) as raised:
        open_long(venue, stop_loss=D("1.0100"))
    assert raised.value.reason == "would_trigger_immediately"
    assert venue.positions(ACC) == []


def test_set_trading_stop_move_remove_and_errors(venue, events):
    with pytest.raises(VenueReject) as raised:
        venue.set_trading_stop(ACC, XRP, stop_loss=D("0.9"))
    assert raised.value.reason == "zero_position"
    assert "zero position" in raised.value.message
    venue.place_order(ACC, XRP, "sell", amount=D("100"))
    events.clear()
    position = venue.set_trading_stop(ACC, XRP, stop_loss=D("1.0500"), take_profit=D("0.9000"))
    assert (position.stop_loss, position.take_profit) == (D("1.0500"), D("0.9000"))
    assert [type(e) for e in events] == [PositionEvent]
    with pytest.raises(VenueReject) as raised:
        venue.set_trading_stop(ACC, XRP, stop_loss=D("1.0500"))
    assert raised.value.reason == "not_modified"
    with pytest.raises(VenueReject) as raised:
        venue.set_trading_stop(ACC, XRP, stop_loss=D("0.9900"))  # below the mark for a short
    assert raised.value.reason == "would_trigger_immediately"
    moved = venue.set_trading_stop(ACC, XRP, stop_loss="1.0300")  # Bybit sends strings
    assert (moved.stop_loss, moved.take_profit) == (D("1.0300"), D("0.9000"))
    removed = venue.set_trading_stop(ACC, XRP, take_profit=D("0"))
    assert removed.take_profit is None and removed.stop_loss == D("1.0300")
    venue.set_mark_price(XRP, D("1.0300"))
    assert venue.truth.closures[-1].origin == "stop_loss"
    assert venue.position(ACC, XRP).stop_loss is None  # vanished with the position


def test_attached_trailing_stop_is_a_price_distance(venue):
    open_long(venue)
    venue.set_trading_stop(ACC, XRP, trailing_stop=D("0.0500"), active_price=D("1.1000"))
    venue.set_mark_price(XRP, D("0.9600"))  # not active yet: no trigger at −4 %
    assert venue.position(ACC, XRP).contracts == D("100")
    venue.set_mark_price(XRP, D("1.1000"))
    venue.set_mark_price(XRP, D("1.2000"))
    assert venue.position(ACC, XRP).trailing_best == D("1.2000")
    venue.set_mark_price(XRP, D("1.1501"))
    assert venue.position(ACC, XRP).contracts == D("100")
    venue.set_mark_price(XRP, D("1.1500"))
    assert venue.position(ACC, XRP).contracts == 0
    assert venue.truth.closures[-1].origin == "trailing_stop"


# --- forced closes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "origin"), [("manual_close", "manual"), ("liquidate", "liquidation"), ("adl", "adl")]
)
def test_forced_closes_record_their_origin(venue, method, origin):
    open_long(venue)
    order = getattr(venue, method)(ACC, XRP)
    assert (order.origin, order.side, order.filled) == (origin, "sell", D("100"))
    assert venue.truth.closures[-1].origin == origin
    with pytest.raises(VenueReject) as raised:
        getattr(venue, method)(ACC, XRP)
    assert raised.value.reason == "zero_position"


def test_partial_manual_close(venue):
    open_long(venue)
    venue.manual_close(ACC, XRP, D("40"))
    assert venue.position(ACC, XRP).contracts == D("60")
    assert venue.truth.closures == []


# --- REST lag, seq, leverage -------------------------------------------------------------------------


def test_visible_positions_lag_behind(venue, clock):
    clock.advance(1_000)
    open_long(venue)
    assert venue.visible_positions(ACC, 5_000) == []
    assert [p.contracts for p in venue.visible_positions(ACC, 0)] == [D("100")]
    clock.advance(4_999)
    assert venue.visible_positions(ACC, 5_000) == []
    clock.advance(1)
    assert [p.contracts for p in venue.visible_positions(ACC, 5_000)] == [D("100")]
    venue.manual_close(ACC, XRP)
    assert [p.contracts for p in venue.visible_positions(ACC, 5_000)] == [D("100")]  # REST still shows it
    assert venue.positions(ACC) == []
    clock.advance(5_000)
    assert venue.visible_positions(ACC, 5_000) == []


def test_seq_increases_on_every_position_change(venue):
    open_long(venue)
    first = venue.position(ACC, XRP).seq
    venue.set_trading_stop(ACC, XRP, stop_loss=D("0.9"))
    venue.place_order(ACC, BTC, "buy", amount=D("0.01"))
    venue.manual_close(ACC, XRP)
    assert venue.position(ACC, XRP).seq == first + 3


def test_leverage_limits_margin(venue):
    venue.set_leverage(ACC, XRP, 1)
    with pytest.raises(VenueReject) as raised:
        venue.place_order(ACC, XRP, "buy", amount=D("10000"))
    assert raised.value.reason == "insufficient_margin"
    venue.set_leverage(ACC, XRP, 2)
    venue.place_order(ACC, XRP, "buy", amount=D("10000"))
    with pytest.raises(VenueReject):
        venue.set_leverage(ACC, XRP, 1000)


def test_mark_price_events_and_unsubscribe(venue):
    seen = []
    unsubscribe = venue.subscribe(seen.append)
    venue.set_mark_price(XRP, D("1.0100"))
    unsubscribe()
    venue.set_mark_price(XRP, D("1.0200"))
    assert len(seen) == 1 and isinstance(seen[0], MarkPriceEvent) and seen[0].price == D("1.0100")
    with pytest.raises(ValueError):
        venue.set_mark_price(XRP, D("0"))


def test_listener_may_call_back_into_the_venue(venue):
    """A façade listener that reads state or places orders sees a consistent venue; events stay ordered."""
    seen = []

    def listener(event):
        seen.append(type(event).__name__)
        if isinstance(event, PositionEvent) and event.position.contracts > 0 and not venue.orders(ACC, XRP):
            venue.place_order(
                ACC, XRP, "sell", "stop_market", None, close_position=True, trigger_price=D("0.9")
            )

    venue.subscribe(listener)
    open_long(venue)
    assert seen == ["OrderEvent", "FillEvent", "OrderEvent", "PositionEvent", "BalanceEvent", "OrderEvent"]
    assert venue.is_protected(ACC, XRP)


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_a_market_order_fills_in_parts_and_its_unfilled_rest_expires(venue, events, side):
    # issue 13 item 10 (docs/conformance.md B20 / Y14): several executions, then EXPIRED for what the book
    # could not take; the position holds exactly what filled
    venue.faults.market_fill_parts = 3
    venue.faults.market_fill_ratio = 0.5
    order = venue.place_order(ACC, XRP, side, amount=D("100"), client_order_id="p1")
    assert (order.status, order.filled) == ("expired", D("50"))
    fills = [e.amount for e in events if isinstance(e, FillEvent)]
    assert fills == [D("16.6"), D("16.6"), D("16.8")]
    statuses = [e.order.status for e in events if isinstance(e, OrderEvent)]
    assert statuses == ["new", "partially_filled", "partially_filled", "partially_filled", "expired"]
    assert [e.position.contracts for e in events if isinstance(e, PositionEvent)] == [D("16.6"), D("33.2"), D("50")]
    position = venue.position(ACC, XRP)
    assert (position.side, position.contracts) == ("long" if side == "buy" else "short", D("50"))


def test_a_market_order_the_book_cannot_take_at_all_expires_with_nothing_filled(venue, events):
    venue.faults.market_fill_ratio = 0.0
    order = venue.place_order(ACC, XRP, "buy", amount=D("100"))
    assert (order.status, order.filled) == ("expired", 0)
    assert not [e for e in events if isinstance(e, FillEvent)] and not venue.position(ACC, XRP).is_open


def test_fill_knobs_leave_closes_by_the_venue_whole(venue, events):
    open_long(venue)
    venue.faults.market_fill_ratio = 0.1
    venue.faults.market_fill_parts = 4
    close = venue.liquidate(ACC, XRP)
    assert (close.status, close.filled) == ("filled", D("100"))


def test_funding_moves_wallets_only_a_long_pays_a_short_receives(venue, events):
    # issue 13 item 10 (docs/conformance.md B19 / Y15): funding is a balance change, never a position change
    open_long(venue, "100")
    venue.add_account("other", api_key="k2", api_secret="s2", balance=D("1000"))
    venue.place_order("other", XRP, "sell", amount=D("50"))
    wallets = {a: venue.wallet(a) for a in (ACC, "other")}
    events.clear()
    credited = venue.settle_funding(XRP, D("0.0001"))
    assert credited == {ACC: D("-0.01"), "other": D("0.005")}  # 100 × 1.0000 × 0.01 %, 50 × …
    assert {a: venue.wallet(a) - wallets[a] for a in wallets} == credited
    assert [(type(e).__name__, e.reason, e.change) for e in events] == [
        ("BalanceEvent", "funding", D("-0.01")), ("BalanceEvent", "funding", D("0.005"))]
    assert venue.position(ACC, XRP).contracts == D("100")
    assert venue.settle_funding(BTC, D("0.0001")) == {}  # nobody holds BTC
