"""Lean snapshots: Binance's raw rows decoded without ccxt's unified parsers, to what those parsers gave;
the liveness check of a stop move asks the book, else one symbol."""

from __future__ import annotations

from decimal import Decimal

import pytest
from binance_helpers import SYMBOL, below, trading_calls
from framework_binance.rest import order_from_row, position_from_row, to_order, to_position

from framework.errors import OrderIncomplete

OTHER = "BTC/USDT:USDT"


def _seed(venue) -> None:
    """A long on SYMBOL with a closePosition stop and a reduce-only take-profit, a short on OTHER with a
    reduce-only stop and a resting limit order."""
    mark = venue.mark_price(SYMBOL)
    venue.place_order("default", SYMBOL, "buy", amount=Decimal(10))
    venue.place_order("default", SYMBOL, "sell", "stop_market", close_position=True, trigger_price=below(venue))
    venue.place_order("default", SYMBOL, "sell", "take_profit_market", amount=Decimal(4), reduce_only=True,
                      trigger_price=(mark * Decimal("1.05")).quantize(Decimal("0.0001")))
    other_mark = venue.mark_price(OTHER)
    venue.place_order("default", OTHER, "sell", amount=Decimal("0.02"))
    venue.place_order("default", OTHER, "buy", "stop_market", amount=Decimal("0.02"), reduce_only=True,
                      trigger_price=(other_mark * Decimal("1.03")).quantize(Decimal("0.1")))
    venue.place_order("default", OTHER, "buy", "limit", amount=Decimal("0.01"),
                      price=(other_mark * Decimal("0.9")).quantize(Decimal("0.1")))


async def test_raw_rows_decode_as_ccxts_unified_parsers_did(driver, venue):
    _seed(venue)
    conn, exchange = driver.session, driver.session.exchange
    rows = await conn.position_rows()
    assert len(rows) == 2
    for row in rows:
        lean, unified = position_from_row(row, "default", conn.symbols), to_position(
            exchange.parse_position_risk(row), "default")
        assert lean is not None and unified is not None
        assert lean.model_dump(exclude={"updated_at"}) == unified.model_dump(exclude={"updated_at"})
    sides = {p.symbol: p.side for r in rows if (p := position_from_row(r, "default", conn.symbols))}
    assert sides == {SYMBOL: "long", OTHER: "short"}
    for conditional in (False, True):
        order_rows = await conn.open_order_rows(conditional)
        assert order_rows
        for row in order_rows:
            assert order_from_row(row, conn.symbols) == to_order(exchange.parse_order(row))


async def test_snapshot_reports_both_sides_stops_and_orders(driver, venue):
    _seed(venue)
    snapshot = await driver.fetch_snapshot()
    assert {(p.symbol, p.side, p.contracts) for p in snapshot.positions} == {
        (SYMBOL, "long", Decimal(10)), (OTHER, "short", Decimal("0.02"))}
    stops = {(s.symbol, s.side, s.kind, s.contracts) for s in snapshot.stops}
    assert stops == {(SYMBOL, "long", "stop_loss", None), (SYMBOL, "long", "take_profit", Decimal(4)),
                     (OTHER, "short", "stop_loss", Decimal("0.02"))}
    assert {(o.symbol, o.type, o.reduce_only) for o in snapshot.open_orders} == {
        (SYMBOL, "market", True), (OTHER, "market", True), (OTHER, "limit", False)}


def test_a_row_without_side_or_with_an_unknown_status_is_incomplete():
    row = {"orderId": 1, "symbol": "XRPUSDT", "status": "NEW", "origQty": "1", "executedQty": "0", "type": "LIMIT"}
    with pytest.raises(OrderIncomplete):
        order_from_row(row, {})
    with pytest.raises(OrderIncomplete):
        order_from_row({**row, "side": "BUY", "status": "SOMETHING"}, {})
    assert order_from_row({**row, "side": "BUY"}, {}).symbol == "XRP/USDT:USDT"


@pytest.mark.parametrize("side", ["long", "short"])
async def test_stop_move_costs_two_calls_while_the_stream_shows_the_position(driver, venue, stream, harness, side):
    closing, contracts = ("sell", Decimal(10)) if side == "long" else ("buy", Decimal(10))
    venue.place_order("default", SYMBOL, "buy" if side == "long" else "sell", amount=contracts)
    await stream.wait_for(lambda: (p := stream.last_update(SYMBOL)) and p.contracts == contracts and p.side == side)
    pct = "2" if side == "long" else "-2"
    stop = await driver.set_stop_loss(SYMBOL, side, contracts, below(venue, pct))
    before = trading_calls(harness.emulator)
    moved = await driver.move_stop_loss(stop, below(venue, "1.5" if side == "long" else "-1.5"))
    assert trading_calls(harness.emulator) - before == 2  # place + cancel, no positionRisk
    assert moved.contracts == contracts  # the reduce-only replacement, sized from the stream
    assert [o.side for o in venue.orders("default", SYMBOL, open_only=True, conditional=True)] == [closing]


async def test_without_stream_evidence_the_liveness_check_asks_one_symbol(driver, venue, monkeypatch):
    venue.place_order("default", SYMBOL, "buy", amount=Decimal(10))
    venue.place_order("default", OTHER, "buy", amount=Decimal("0.01"))
    stop = await driver.set_stop_loss(SYMBOL, "long", Decimal(10), below(venue))
    asked: list[dict] = []
    real = driver.session.exchange.fapiPrivateV3GetPositionRisk

    async def recording(params=None):
        asked.append(dict(params or {}))
        return await real(params or {})

    monkeypatch.setattr(driver.session, "stream_state", None)
    monkeypatch.setattr(driver.session.exchange, "fapiPrivateV3GetPositionRisk", recording)
    moved = await driver.move_stop_loss(stop, below(venue, "1"))
    assert asked == [{"symbol": "XRPUSDT"}] and moved.contracts == Decimal(10)

