"""The pure decoder on every Bybit fixture frame (no socket)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from bybit_helpers import FIXTURES, fixture_json, fixture_text
from framework_bybit import decoder as decoder_module
from framework_bybit.decoder import BybitDecoder, unified_symbol

from framework.errors import StreamError
from framework.models import MarkPrice, OrderUpdate, PositionUpdate

decoder = BybitDecoder()

# Frames that carry nothing for the position book: acks, pongs, wallet, public trades, fast executions,
# non-linear orders (option / spot category).
SILENT = [
    "docs/ws_auth_0.json", "docs/ws_auth_1.json", "docs/ws_auth_2.json", "docs/ws_auth_3.json",
    "docs/ws_auth_4.json", "docs/ws_auth_5.json", "docs/ws_auth_6.json", "docs/ws_auth_7.json",
    "docs/ws_auth_8.json", "docs/ws_auth_9.json", "docs/ws_execution_0.json", "docs/ws_order_0.json",
    "docs/ws_position_0.json", "docs/ws_wallet_0.json", "docs/ws_wallet_1.json", "docs/ws_order_1.json",
    "ws_account_execution_fast.json", "ws_account_execution_fast_envelope_id.json", "ws_account_wallet.json",
    "ws_account_wallet_locked_exceeds_total.json", "ws_account_wallet_small_order.json", "ws_auth_failure.json",
    "ws_auth_success.json", "ws_order_response.json", "ws_public_trade.json", "ws_subscription_ack.json",
    "ws_subscription_failure.json", "ws_account_order_partially_filled_rejected.json",
]


def test_every_fixture_frame_is_covered_by_a_test():
    covered = set(SILENT) | {
        "docs/ws_position_1.json", "docs/ws_execution_1.json", "ws_account_execution_adl.json",
        "ws_ticker_linear.json", "ws_account_position_with_open_time.json", *ORDER_ORIGINS,
    }
    frames = {str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("ws_*.json")}
    assert frames - covered == set()


@pytest.mark.parametrize("name", SILENT)
def test_frames_without_position_or_order_events_decode_to_nothing(name):
    assert decoder.decode(fixture_text(name)) == []


def test_closed_position_frame_becomes_a_flat_update():
    [update] = decoder.decode(fixture_text("docs/ws_position_1.json"))
    assert isinstance(update, PositionUpdate)
    assert (update.symbol, update.side, update.contracts) == ("BTC/USDT:USDT", None, Decimal(0))
    assert update.sequence == 8327597863
    assert update.timestamp == 1697682317038
    assert update.realized_pnl == Decimal("1.26")
    assert update.entry_price is None  # "entryPrice": "0" is "not set", not a price


def test_open_position_item_with_open_time():
    item = fixture_json("ws_account_position_with_open_time.json")
    item["seq"] = 42
    frame = json.dumps({"topic": "position", "creationTime": 1, "data": [item]})
    [update] = decoder.decode(frame)
    assert (update.side, update.contracts, update.entry_price) == ("long", Decimal("0.1"), Decimal(50000))
    assert update.mark_price == Decimal(50100) and update.sequence == 42


def test_bare_position_item_is_not_a_frame():
    with pytest.raises(StreamError, match="neither 'op' nor 'topic'"):
        decoder.decode(fixture_text("ws_account_position_with_open_time.json"))


def test_open_position_without_side_is_malformed_not_guessed():
    frame = fixture_json("docs/ws_position_1.json")
    frame["data"][0]["size"] = "5"  # open, but "side": ""
    with pytest.raises(StreamError, match="side ''"):
        decoder.decode(json.dumps(frame))


def test_position_without_seq_is_malformed():
    frame = fixture_json("docs/ws_position_1.json")
    del frame["data"][0]["seq"]
    with pytest.raises(StreamError, match="seq"):
        decoder.decode(json.dumps(frame))


ORDER_ORIGINS = {
    "ws_account_order.json": ("stop_loss", "canceled", "buy"),
    "ws_account_order_buy_stop_market.json": ("order", "open", "buy"),
    "ws_account_order_filled.json": ("order", "closed", "buy"),
    "ws_account_order_limit_if_touched.json": ("order", "open", "buy"),
    "ws_account_order_market_if_touched.json": ("order", "open", "buy"),
    "ws_account_order_sell_market_if_touched.json": ("order", "open", "sell"),
    "ws_account_order_stop_limit.json": ("order", "open", "sell"),
    "ws_account_order_stop_loss.json": ("stop_loss", "open", "sell"),
    "ws_account_order_stop_market.json": ("order", "open", "sell"),
    "ws_account_order_take_profit.json": ("take_profit", "open", "sell"),
}


@pytest.mark.parametrize("name", sorted(ORDER_ORIGINS))
def test_order_frames(name):
    raw = fixture_json(name)["data"][0]
    [update] = decoder.decode(fixture_text(name))
    origin, status, side = ORDER_ORIGINS[name]
    assert isinstance(update, OrderUpdate)
    assert (update.origin, update.order.status, update.order.side) == (origin, status, side)
    assert update.order.id == raw["orderId"] and update.order.client_order_id == raw["orderLinkId"]
    assert update.order.amount == Decimal(raw["qty"]) and update.order.filled == Decimal(raw["cumExecQty"])
    assert update.timestamp == int(raw["updatedTime"])


def test_filled_order_carries_average_and_trigger():
    [update] = decoder.decode(fixture_text("ws_account_order_filled.json"))
    assert update.order.average == Decimal("30000.50")
    assert update.order.trigger_price == Decimal("29500.00")


def test_execution_frame_is_a_fill():
    [update] = decoder.decode(fixture_text("docs/ws_execution_1.json"))
    assert update.origin == "order"
    assert (update.order.side, update.order.amount, update.order.filled, update.order.status) == (
        "sell", Decimal("0.5"), Decimal("0.5"), "closed")
    assert update.last_fill_price == Decimal("95900.1") and update.last_fill_amount == Decimal("0.5")
    assert update.realized_pnl == Decimal("0.05")


def test_adl_execution_is_attributed_to_adl():
    [update] = decoder.decode(fixture_text("ws_account_execution_adl.json"))
    assert update.origin == "adl"


def test_liquidation_execution_is_attributed_to_liquidation():
    frame = fixture_json("ws_account_execution_adl.json")
    frame["data"][0]["execType"] = "BustTrade"
    [update] = decoder.decode(json.dumps(frame))
    assert update.origin == "liquidation"


def test_funding_execution_is_not_a_fill():
    frame = fixture_json("docs/ws_execution_1.json")
    frame["data"][0]["execType"] = "Funding"
    assert decoder.decode(json.dumps(frame)) == []


def test_ticker_gives_the_mark_price():
    [tick] = decoder.decode(fixture_text("ws_ticker_linear.json"))
    assert isinstance(tick, MarkPrice)
    assert (tick.symbol, tick.price, tick.timestamp) == ("BTC/USDT:USDT", Decimal("17217.33"), 1673272861686)


def test_ticker_delta_without_mark_price_gives_nothing():
    frame = {"topic": "tickers.BTCUSDT", "type": "delta", "ts": 1, "data": {"symbol": "BTCUSDT", "bid1Price": "1"}}
    assert decoder.decode(json.dumps(frame)) == []


@pytest.mark.parametrize("raw", [b"\xff\xfe", "not json", "[1, 2]", '{"topic": "order", "data": {}}',
                                 '{"topic": "order", "data": [{"orderStatus": "Weird"}]}'])
def test_malformed_frames_raise_stream_error(raw):
    with pytest.raises(StreamError):
        decoder.decode(raw)


def test_order_with_an_unknown_side_is_malformed():
    frame = fixture_json("ws_account_order_filled.json")
    frame["data"][0]["side"] = ""
    with pytest.raises(StreamError, match="order side '' is neither Buy nor Sell") as error:
        decoder.decode(json.dumps(frame))
    assert error.value.venue == "bybit"


def test_symbol_mapping():
    assert unified_symbol("XRPUSDT") == "XRP/USDT:USDT"
    assert unified_symbol("BTCPERP") == "BTC/USDC:USDC"
    assert unified_symbol("1000PEPEUSDT", {"1000PEPEUSDT": "1000PEPE/USDT:USDT"}) == "1000PEPE/USDT:USDT"
    with pytest.raises(StreamError):
        unified_symbol("ETH-30DEC22-1400-C")


HOSTILE_FRAMES = [
    b"not json", b"\xff\xfe", "[1, 2]", "",
    '{"topic":"position","data":[{"symbol":"XRPUSDT","side":"Buy","size":"NaN","seq":Infinity}]}',
    '{"topic":"position","data":[{"symbol":"XRPUSDT","side":"Buy","size":"1","seq":NaN}]}',
    '{"topic":"position","data":[{"symbol":"XRPUSDT","side":"Buy","size":"1","seq":' + "9" * 30 + "}]}",
    '{"topic":"position","creationTime":1,"data":[{"symbol":"XRPUSDT","side":"Buy","size":1.1,"seq":3,'
    '"entryPrice":0.5,"markPrice":"0.5","updatedTime":"1"}]}',
    "[" * 5000 + "]" * 5000,
]


def _decoded(raw: str | bytes) -> list | type[Exception]:
    try:
        return BybitDecoder().decode(raw)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return type(exc)


@pytest.mark.parametrize("path", sorted([*FIXTURES.glob("ws_*.json"), *(FIXTURES / "docs").glob("ws_*.json")]),
                         ids=lambda p: p.name)
def test_orjson_decodes_every_fixture_as_the_standard_library_did(path, monkeypatch):
    """Issue 17 item 6: the frame parser changed (orjson); every fixture gives the same events, Decimal values
    exact, as with ``json.loads``."""
    raw = path.read_bytes()
    fast = _decoded(raw)
    monkeypatch.setattr(decoder_module, "loads", json.loads)
    assert fast == _decoded(raw)


@pytest.mark.parametrize("raw", HOSTILE_FRAMES, ids=range(len(HOSTILE_FRAMES)))
def test_orjson_keeps_malformed_frames_malformed(raw, monkeypatch):
    fast = _decoded(raw)
    monkeypatch.setattr(decoder_module, "loads", json.loads)
    slow = _decoded(raw)
    # same result, or a frame the standard library let through to a crash (Infinity, deep nesting: OverflowError,
    # RecursionError; the stream counted those as malformed too) now refused as malformed by the parser itself
    assert fast == slow or (fast is StreamError and not isinstance(slow, list))


# --- issue 13 item 10 (docs/conformance.md Y14-Y16) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("create_type", "origin"),
    [("CreateByLiq", "liquidation"), ("CreateByTakeOver_PassThrough", "liquidation"),
     ("CreateByAdl_PassThrough", "adl")],
)
def test_forced_close_orders_are_attributed_by_create_type(create_type, origin):
    # enum.mdx createType: "CreateByLiq" laddered liquidation, "CreateByTakeOver_PassThrough" takeover,
    # "CreateByAdl_PassThrough" auto-deleveraging
    frame = fixture_json("ws_account_order_filled.json")
    frame["data"][0].update({"createType": create_type, "orderLinkId": "", "stopOrderType": "", "reduceOnly": True})
    [update] = decoder.decode(json.dumps(frame))
    assert (update.origin, update.order.status) == (origin, "closed")


def test_a_market_order_cancelled_after_a_partial_fill_reports_what_filled():
    # enum.mdx orderStatus "Cancelled": "In derivatives, orders with this status may have an executed qty";
    # create-order.mdx: a market order is an IOC limit order, "If there is insufficient liquidity, the order
    # will be cancelled"
    frame = fixture_json("ws_account_order_filled.json")
    frame["data"][0].update({"orderType": "Market", "timeInForce": "IOC", "qty": "3", "cumExecQty": "2",
                             "leavesQty": "0", "orderStatus": "Cancelled"})
    [update] = decoder.decode(json.dumps(frame))
    assert (update.order.status, update.order.filled, update.order.amount) == ("canceled", 2, 3)
