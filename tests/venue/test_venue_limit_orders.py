"""Resting limit orders of the simulated venue (docs/venue-api.md "Order semantics"), and its klines."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from framework.venue import FillEvent, OrderEvent, VenueReject, candles
from framework.venue.model import MAKER_FEE_RATE, TAKER_FEE_RATE

XRP = "XRP/USDT:USDT"
ACC = "default"
# (side, limit price away from the mark of 1.0000 on the side where it rests, a mark that reaches it)
RESTING = [("buy", D("0.9800"), D("0.9750")), ("sell", D("1.0200"), D("1.0250"))]


@pytest.mark.parametrize(("side", "price", "reached"), RESTING)
def test_a_gtc_limit_rests_then_fills_at_its_price_as_maker(venue, events, side, price, reached):
    order = venue.place_order(ACC, XRP, side, "limit", D("100"), client_order_id="l1", price=price)
    assert (order.status, order.filled, order.price, order.time_in_force) == ("new", 0, price, "gtc")
    assert [o.id for o in venue.orders(ACC, XRP)] == [order.id]
    assert venue.truth.orders[-1].status == "new"
    venue.set_mark_price(XRP, (price + D(1)) / 2)  # halfway: not reached
    assert venue.get_order(ACC, XRP, order.id).status == "new"
    events.clear()
    venue.set_mark_price(XRP, reached)
    filled = venue.get_order(ACC, XRP, order.id)
    assert (filled.status, filled.filled, filled.average) == ("filled", D("100"), price)
    fill = next(e for e in events if isinstance(e, FillEvent))
    assert (fill.price, fill.maker, fill.fee) == (price, True, D("100") * price * MAKER_FEE_RATE)
    assert venue.truth.fills[-1] == fill
    position = venue.position(ACC, XRP)
    assert (position.side, position.contracts, position.entry_price) == (
        "long" if side == "buy" else "short", D("100"), price)
    assert venue.orders(ACC, XRP) == []


@pytest.mark.parametrize(("side", "price", "reached"), RESTING)
def test_a_marketable_limit_takes_at_the_mark_and_post_only_expires_instead(venue, events, side, price, reached):
    crossing = D("1.0500") if side == "buy" else D("0.9500")
    taken = venue.place_order(ACC, XRP, side, "limit", D("10"), price=crossing)
    assert (taken.status, taken.average) == ("filled", D("1.0000"))
    assert venue.truth.fills[-1].fee == D("10") * D("1.0000") * TAKER_FEE_RATE
    events.clear()
    post = venue.place_order(ACC, XRP, side, "limit", D("10"), price=crossing, time_in_force="post_only")
    assert (post.status, post.filled) == ("expired", 0)
    assert [e.order.status for e in events if isinstance(e, OrderEvent)] == ["new", "expired"]
    assert not any(isinstance(e, FillEvent) for e in events)
    assert venue.truth.orders[-1].status == "expired"
    resting = venue.place_order(ACC, XRP, side, "limit", D("10"), price=price, time_in_force="post_only")
    assert resting.status == "new"


@pytest.mark.parametrize("tif", ["ioc", "fok"])
@pytest.mark.parametrize(("side", "price", "reached"), RESTING)
def test_ioc_and_fok_never_rest(venue, side, price, reached, tif):
    order = venue.place_order(ACC, XRP, side, "limit", D("10"), price=price, time_in_force=tif)
    assert order.status == "expired"
    assert venue.orders(ACC, XRP) == []


@pytest.mark.parametrize(("side", "price", "reached"), RESTING)
def test_a_resting_limit_is_cancellable_and_does_not_fill_afterwards(venue, side, price, reached):
    order = venue.place_order(ACC, XRP, side, "limit", D("10"), client_order_id="c1", price=price)
    assert venue.cancel_order(ACC, XRP, client_order_id="c1").status == "canceled"
    venue.set_mark_price(XRP, reached)
    assert venue.get_order(ACC, XRP, order.id).status == "canceled"
    assert not venue.position(ACC, XRP).is_open


@pytest.mark.parametrize("position_side", ["long", "short"])
def test_a_reduce_only_limit_reduces_is_capped_and_expires_when_nothing_is_left(venue, position_side):
    opening, closing = ("buy", "sell") if position_side == "long" else ("sell", "buy")
    with pytest.raises(VenueReject) as rejected:
        venue.place_order(ACC, XRP, closing, "limit", D("10"), price=D("1.0100"), reduce_only=True)
    assert rejected.value.reason == "reduce_only_rejected"
    venue.place_order(ACC, XRP, opening, amount=D("30"))
    target = D("1.0200") if position_side == "long" else D("0.9800")
    take = venue.place_order(ACC, XRP, closing, "limit", D("50"), price=target, reduce_only=True)
    later = venue.place_order(ACC, XRP, closing, "limit", D("5"), price=target, reduce_only=True)
    venue.set_mark_price(XRP, target)
    assert venue.get_order(ACC, XRP, take.id).filled == D("30")  # capped at the position
    assert venue.get_order(ACC, XRP, later.id).status == "expired"  # nothing left to reduce
    assert not venue.position(ACC, XRP).is_open
    closure = venue.truth.closures[-1]
    assert (closure.side, closure.price, closure.origin) == (position_side, target, "order")


def test_limit_validation(venue):
    for kwargs, reason in [
        ({}, "invalid_price"),
        ({"price": D("1.00001")}, "invalid_price"),
        ({"price": D("0.9"), "time_in_force": "day"}, "invalid_order"),
        ({"price": D("0.9"), "trigger_price": D("0.8")}, "invalid_order"),
    ]:
        with pytest.raises(VenueReject) as rejected:
            venue.place_order(ACC, XRP, "buy", "limit", D("10"), **kwargs)
        assert rejected.value.reason == reason, kwargs
    with pytest.raises(VenueReject) as rejected:
        venue.place_order(ACC, XRP, "buy", "market", D("10"), price=D("0.9"))
    assert rejected.value.reason == "invalid_order"


def test_mark_history_makes_candles_with_the_path_high_low(venue, clock):
    start = clock.ms - clock.ms % 60_000 + 60_000
    clock.ms = start
    for step, price in enumerate(["1.0100", "1.0300", "0.9900", "1.0000"]):
        clock.ms = start + step * 10_000
        venue.set_mark_price(XRP, D(price))
    clock.ms = start + 60_000
    venue.set_mark_price(XRP, D("1.0500"))
    history = venue.mark_history(XRP)
    assert [p.price for p in history][-5:] == [D("1.0100"), D("1.0300"), D("0.9900"), D("1.0000"), D("1.0500")]
    minute = candles(history, 60_000, start_ms=start)
    assert [(c.open_ms, c.open, c.high, c.low, c.close, c.count) for c in minute] == [
        (start, D("1.0100"), D("1.0300"), D("0.9900"), D("1.0000"), 4),
        (start + 60_000, D("1.0500"), D("1.0500"), D("1.0500"), D("1.0500"), 1),
    ]
    assert [c.open_ms for c in candles(history, 60_000, limit=1)] == [start + 60_000]
    assert [c.open_ms for c in candles(history, 60_000, start_ms=start, limit=1)] == [start]
