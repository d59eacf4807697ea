"""Lean snapshots: Binance's raw rows decoded without ccxt's unified parsers, to what those parsers gave;
the liveness check of a stop move asks the book, else one symbol."""

from __future__ import annotations

from decimal import Decimal

import pytest
from binance_helpers import SYMBOL, below, trading_calls
from framework_binance import rest
from framework_binance.operations import _trailing_trigger
from framework_binance.rest import order_from_row, position_from_row, to_order, to_position
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

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


@pytest.mark.parametrize("activated", [True, False], ids=["activation", "mark"])
@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_trailing_stop_is_reported_where_its_trail_starts(driver, venue, side, activated):
    """B25: a TRAILING_STOP_MARKET row has no trigger price; the snapshot reports its stop ``callbackRate``
    behind the ``activatePrice`` (below for a long, above for a short), else behind the mark price."""
    mark = venue.mark_price(SYMBOL)
    venue.place_order("default", SYMBOL, "buy" if side == "long" else "sell", amount=Decimal(10))
    activation = (mark * (Decimal("1.02") if side == "long" else Decimal("0.98"))).quantize(Decimal("0.0001"))
    venue.place_order("default", SYMBOL, "sell" if side == "long" else "buy", "trailing_stop_market",
                      amount=Decimal(10), reduce_only=True, callback_rate=Decimal(2),
                      activation_price=activation if activated else None)
    snapshot = await driver.fetch_snapshot()
    [trail] = [s for s in snapshot.stops if s.kind == "trailing_stop"]
    start = activation if activated else venue.mark_price(SYMBOL)
    assert (trail.side, trail.contracts) == (side, Decimal(10))
    assert trail.trigger_price == start * (Decimal("0.98") if side == "long" else Decimal("1.02"))


@pytest.mark.parametrize(("row", "mark", "start"), [
    ({"callbackRate": "10", "activatePrice": "0.5"}, Decimal("0.6"), Decimal("0.45")),  # the top of 0.1 … 10
    ({"callbackRate": "1", "activatePrice": "0"}, Decimal("0.6"), Decimal("0.594")),  # "0": not set, the mark
    ({"callbackRate": "1"}, Decimal("0.6"), Decimal("0.594")),
    ({"callbackRate": "10.5", "activatePrice": "0.5"}, Decimal("0.6"), None),  # out of Binance's range
    ({"callbackRate": "0", "activatePrice": "0.5"}, Decimal("0.6"), None),
    ({"activatePrice": "0.5"}, Decimal("0.6"), None),  # no rate
    ({"callbackRate": "1"}, None, None),  # neither price
])
def test_a_trailing_row_s_start_is_where_binance_starts_the_trail_or_none(row, mark, start):
    """B25 (``callbackRate`` 0.1 … 10 percent): a long's trail starts below its reference; outside the range,
    or with no rate or no price, there is no start to report (the stop is left out of the snapshot)."""
    assert _trailing_trigger(row, "long", mark) == start


def test_a_row_without_side_or_with_an_unknown_status_is_incomplete():
    row = {"orderId": 1, "symbol": "XRPUSDT", "status": "NEW", "origQty": "1", "executedQty": "0", "type": "LIMIT"}
    with pytest.raises(OrderIncomplete):
        order_from_row(row, {})
    with pytest.raises(OrderIncomplete):
        order_from_row({**row, "side": "BUY", "status": "SOMETHING"}, {})
    assert order_from_row({**row, "side": "BUY"}, {}).symbol == "XRP/USDT:USDT"


POSITION_ROW = {"symbol": "XRPUSDT", "positionAmt": "-5", "notional": "-2.5", "entryPrice": "0.5", "markPrice": "0.5",
                "unRealizedProfit": "0"}
ALGO_ROW = {"algoId": 7, "clientAlgoId": "x", "type": "STOP_MARKET", "symbol": "XRPUSDT", "side": "BUY",
            "quantity": "5", "algoStatus": "NEW", "triggerPrice": "0.6", "reduceOnly": True, "createTime": 1}


@pytest.mark.parametrize(("row", "bad"), [
    (POSITION_ROW, {"entryPrice": "0"}), (POSITION_ROW, {"entryPrice": None}), (POSITION_ROW, {"markPrice": "1e16"}),
    (POSITION_ROW, {"unRealizedProfit": "NaN"}), (POSITION_ROW, {"positionAmt": "-Infinity", "notional": "-1"}),
    (ALGO_ROW, {"filledQty": "-1"}), (ALGO_ROW, {"triggerPrice": "1e16"}), (ALGO_ROW, {"createTime": -1}),
    (ALGO_ROW, {"createTime": 2**53}), (ALGO_ROW, {"clientAlgoId": 5}), (ALGO_ROW, {"quantity": "Infinity"}),
    (ALGO_ROW, {"quantity": "-1"}),  # a negative size is refused, not read as 0
])
def test_a_snapshot_row_out_of_the_models_bounds_is_refused_as_the_model_refuses_it(row, bad):
    """The lean decode builds its models without a second validation only from values it checked itself;
    anything else meets the validating constructor and its error, never a model."""
    decode = position_from_row if row is POSITION_ROW else order_from_row
    assert decode(row, "default", {}) if row is POSITION_ROW else decode(row, {})  # the row as it is: fine
    with pytest.raises(ValidationError):
        decode({**row, **bad}, "default", {}) if row is POSITION_ROW else decode({**row, **bad}, {})


def test_the_snapshot_time_a_position_is_given_is_checked_as_the_model_checks_it():
    assert position_from_row(POSITION_ROW, "default", {}, 1_700_000_000_000).updated_at == 1_700_000_000_000
    for bad in (-1, 2**53):
        with pytest.raises(ValidationError):
            position_from_row(POSITION_ROW, "default", {}, bad)


NUMBERS = st.one_of(
    st.none(), st.sampled_from(["", "0", "-0", "0.5", "-5", "NaN", "-Infinity", "1e15", "1e16", "1e-40", "0E-8"]),
    st.decimals(allow_nan=True, allow_infinity=True).map(str), st.decimals(min_value=0, max_value=10**16).map(str),
)


def _outcome(decode, *args):
    try:
        decoded = decode(*args)
    except Exception as exc:  # the same failure, whichever path raised it
        return type(exc), str(exc)
    return decoded and (type(decoded), repr(decoded.model_copy(update={"updated_at": 0}) if "updated_at" in
                                             type(decoded).model_fields else decoded))


def _validated_only(decode, *args):
    """What the decode gives when every row meets the validating constructor (the decode before the lean path)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rest, "in_range", lambda *_: False)
        return _outcome(decode, *args)


@settings(max_examples=400)
@given(st.fixed_dictionaries({"symbol": st.sampled_from(["XRPUSDT", "???"]), "positionAmt": NUMBERS,
                              "notional": NUMBERS, "entryPrice": NUMBERS, "markPrice": NUMBERS,
                              "unRealizedProfit": NUMBERS}))
def test_lean_position_decode_is_the_validated_one(row):
    assert _outcome(position_from_row, row, "default", {}) == _validated_only(position_from_row, row, "default", {})


@settings(max_examples=400)
@given(st.fixed_dictionaries({
    "algoId": st.integers(), "clientAlgoId": st.one_of(st.none(), st.text(max_size=3), st.integers()),
    "type": st.sampled_from(["STOP_MARKET", "LIMIT"]), "symbol": st.just("XRPUSDT"),
    "side": st.sampled_from(["BUY", "SELL"]),
    "quantity": NUMBERS, "filledQty": NUMBERS, "avgFilledPrice": NUMBERS, "triggerPrice": NUMBERS,
    "algoStatus": st.sampled_from(["NEW", "CANCELED"]), "reduceOnly": st.one_of(st.booleans(), st.none()),
    "closePosition": st.booleans(),
    "createTime": st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=2)),
}))
def test_lean_order_decode_is_the_validated_one(row):
    assert _outcome(order_from_row, row, {}) == _validated_only(order_from_row, row, {})


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

