"""Ground truth: closures, unprotected intervals, wrong-side orders, orders for closed positions."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from framework.venue import VenueReject

XRP = "XRP/USDT:USDT"
BTC = "BTC/USDT:USDT"
ACC = "default"


def stop(venue, trigger="0.9000", side="sell", **kwargs):
    kwargs.setdefault("reduce_only", True)
    amount = None if kwargs.get("close_position") else D("100")
    return venue.place_order(ACC, XRP, side, "stop_market", amount, trigger_price=D(trigger), **kwargs)


def test_position_without_stop_accrues_time_until_closed(venue, clock):
    venue.place_order(ACC, XRP, "buy", amount=D("100"))
    opened = venue.now()
    clock.advance(3_000)
    so_far = venue.now() - opened
    assert so_far > 2_000
    assert venue.truth.unprotected_ms() == {"max": so_far, "total": so_far}  # an open interval ends now
    venue.manual_close(ACC, XRP)
    closed = venue.now()
    assert venue.truth.unprotected_intervals() == [(ACC, XRP, opened, closed)]
    clock.advance(10_000)
    assert venue.truth.unprotected_ms()["total"] == closed - opened  # flat time is not unprotected


def test_stop_placed_after_entry_leaves_a_gap(venue, clock):
    venue.place_order(ACC, XRP, "buy", amount=D("100"))
    opened = venue.now()
    clock.advance(500)
    stop(venue)
    protected = venue.now()
    clock.advance(10_000)
    assert venue.truth.unprotected_intervals() == [(ACC, XRP, opened, protected)]
    assert protected - opened > 0


def test_stop_attached_on_entry_is_never_unprotected(venue, clock):
    venue.place_order(ACC, XRP, "buy", amount=D("100"), stop_loss=D("0.9"))
    clock.advance(5_000)
    assert venue.truth.unprotected_intervals() == []


def test_close_position_stop_before_entry_protects_from_the_first_fill(venue, clock):
    stop(venue, close_position=True, reduce_only=False)
    venue.place_order(ACC, XRP, "buy", amount=D("100"))
    clock.advance(5_000)
    assert venue.truth.unprotected_ms() == {"max": 0, "total": 0}


def test_new_before_cancel_accrues_nothing(venue, clock):
    venue.place_order(ACC, XRP, "buy", amount=D("100"), stop_loss=D("0.9"))
    clock.advance(1_000)
    old = stop(venue, "0.9100")
    venue.set_trading_stop(ACC, XRP, stop_loss=D("0"))
    clock.advance(1_000)
    stop(venue, "0.9500")
    clock.advance(1_000)
    venue.cancel_order(ACC, XRP, order_id=old.id)
    clock.advance(1_000)
    assert venue.truth.unprotected_ms() == {"max": 0, "total": 0}


def test_cancel_then_create_accrues_the_gap(venue, clock):
    """docs/incidents.md I-5: 1,400 ms with no stop while the trailing stop moved it."""
    venue.place_order(ACC, XRP, "buy", amount=D("100"), stop_loss=D("0.9"))
    venue.set_trading_stop(ACC, XRP, stop_loss=D("0"))
    removed = venue.now()
    clock.advance(1_400)
    venue.set_trading_stop(ACC, XRP, stop_loss=D("0.95"))
    assert venue.truth.unprotected_intervals() == [(ACC, XRP, removed, venue.now())]
    assert venue.truth.unprotected_ms()["max"] > 1_000


def test_take_profit_wrong_side_or_non_reducing_orders_do_not_protect(venue, clock):
    venue.place_order(ACC, XRP, "buy", amount=D("100"), take_profit=D("1.2"))
    venue.place_order(
        ACC, XRP, "sell", "take_profit_market", D("100"), reduce_only=True, trigger_price=D("1.1")
    )
    venue.place_order(ACC, XRP, "sell", "stop_market", D("100"), trigger_price=D("0.9"))  # not reduce-only
    venue.place_order(ACC, XRP, "buy", "stop_market", D("100"), reduce_only=True, trigger_price=D("1.1"))
    assert not venue.is_protected(ACC, XRP)
    clock.advance(2_000)
    assert venue.truth.unprotected_ms()["max"] > 1_000


def test_trailing_orders_protect(venue, clock):
    venue.place_order(ACC, XRP, "sell", amount=D("100"))
    venue.place_order(
        ACC, XRP, "buy", "trailing_stop_market", D("100"), reduce_only=True, callback_rate=D("1")
    )
    assert venue.is_protected(ACC, XRP)
    venue.place_order(ACC, BTC, "buy", amount=D("0.01"))
    venue.set_trading_stop(ACC, BTC, trailing_stop=D("100"))
    assert venue.is_protected(ACC, BTC)


def test_intervals_filter_by_account_and_symbol(venue, clock):
    venue.add_account("other", api_key="k2", api_secret="s2")
    venue.place_order(ACC, XRP, "buy", amount=D("10"))
    venue.place_order("other", BTC, "buy", amount=D("0.01"))
    clock.advance(100)
    assert [i[:2] for i in venue.truth.unprotected_intervals(account="other")] == [("other", BTC)]
    assert [i[:2] for i in venue.truth.unprotected_intervals(symbol=XRP)] == [(ACC, XRP)]


def test_triggered_stop_closure_has_origin_and_pnl(venue):
    venue.place_order(ACC, XRP, "sell", amount=D("100"))
    stop(venue, "1.1000", side="buy")
    venue.set_mark_price(XRP, D("1.1000"))
    [closure] = venue.truth.closures
    assert (closure.side, closure.contracts, closure.price, closure.origin) == (
        "short",
        D("100"),
        D("1.1"),
        "stop_loss",
    )
    assert closure.realized_pnl == D("-10")


# --- wrong-side orders (docs/incidents.md I-3) ---------------------------------------------------------------


def test_close_buy_on_a_long_is_caught(venue):
    venue.place_order(ACC, XRP, "buy", amount=D("43"))
    venue.place_order(ACC, XRP, "buy", amount=D("43"), client_order_id="fw-r-rollback-1")  # doubled!
    [wrong] = venue.truth.wrong_side_orders()
    assert (wrong.client_order_id, wrong.side, wrong.position_side_at_submit) == (
        "fw-r-rollback-1",
        "buy",
        "long",
    )
    assert wrong.position_contracts_at_submit == D("43")
    assert venue.position(ACC, XRP).contracts == D("86")


def test_rejected_reduce_only_on_the_wrong_side_is_still_caught(venue):
    venue.place_order(ACC, XRP, "sell", amount=D("10"))
    with pytest.raises(VenueReject):
        venue.place_order(ACC, XRP, "sell", amount=D("10"), reduce_only=True)
    [wrong] = venue.truth.wrong_side_orders()
    assert wrong.status == "rejected"


def test_close_order_that_would_open_a_position_is_caught(venue):
    venue.place_order(ACC, XRP, "sell", amount=D("10"), client_order_id="fw-c-1")
    assert [r.client_order_id for r in venue.truth.wrong_side_orders()] == ["fw-c-1"]


def test_correct_closes_and_venue_closes_are_not_wrong_side(venue):
    venue.place_order(ACC, XRP, "buy", amount=D("10"), client_order_id="fw-o-1")
    venue.place_order(ACC, XRP, "sell", amount=D("5"), reduce_only=True, client_order_id="fw-c-1")
    stop(venue, close_position=True, reduce_only=False)
    venue.liquidate(ACC, XRP)
    assert venue.truth.wrong_side_orders() == []


# --- orders for closed positions (docs/incidents.md I-5) -----------------------------------------------------


def test_stop_placed_for_a_position_that_is_gone(venue):
    venue.place_order(ACC, XRP, "buy", amount=D("100"))
    venue.manual_close(ACC, XRP)
    late = stop(venue, "0.9500")
    with pytest.raises(VenueReject):
        stop(venue, "1.0100")  # the -2021 of I-5: rejected, but still an attempt
    stale = venue.truth.orders_for_closed_positions()
    assert [r.order_id for r in stale] == [late.id, None]


def test_close_position_stop_before_entry_is_legitimate(venue):
    stop(venue, close_position=True, reduce_only=False)
    venue.place_order(ACC, XRP, "buy", amount=D("100"))
    stop(venue, "0.9500")
    assert venue.truth.orders_for_closed_positions() == []
