"""The decoder on every Binance fixture frame, exactly as Binance documents them."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from binance_helpers import FIXTURES
from framework_binance import decoder as decoder_module
from framework_binance.decoder import BinanceDecoder, unified_symbol

from framework.errors import StreamError
from framework.models import MarkPrice, OrderUpdate, PositionUpdate


def frame(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_account_update_closed_entry_is_a_flat_position_update():
    """I-1: a one-way close (``BOTH`` at 0) is a flat update, never dropped."""
    message = json.loads(frame("user_data_json/account_update.json"))
    message["a"]["P"] = message["a"]["P"][:1]
    (flat,) = BinanceDecoder().decode(json.dumps(message))
    assert (flat.symbol, flat.contracts, flat.side, flat.entry_price) == ("BTC/USDT:USDT", 0, None, None)
    assert flat.sequence == 1564745798939 and flat.timestamp == 1564745798939


def test_hedge_entries_of_the_documented_frame_and_no_flat_for_an_open_symbol():
    """The documented frame (hedge mode) lists BOTH at 0 beside LONG 20 and SHORT -10: the symbol is open."""
    events = BinanceDecoder().decode(frame("user_data_json/account_update.json"))
    assert all(isinstance(e, PositionUpdate) for e in events)
    long, short = events
    assert (long.side, long.contracts, long.entry_price) == ("long", Decimal(20), Decimal("6563.6"))
    assert (short.side, short.contracts) == ("short", Decimal(10))


def test_real_fill_frames_zero_hedge_entries_do_not_close_a_one_way_position():
    """B4 capture (JKorf/Binance.Net #546): ACCOUNT_UPDATE with BOTH 5 and zero LONG / SHORT entries, then the
    ORDER_TRADE_UPDATE of the fill, same T: one open position update, then the fill, never a flat update."""
    decoder = BinanceDecoder()
    events = [*decoder.decode(frame("user_data_json/fill_capture_account_update.json")),
              *decoder.decode(frame("user_data_json/fill_capture_order_trade_update.json"))]
    position, fill = events
    assert isinstance(position, PositionUpdate) and isinstance(fill, OrderUpdate)
    assert (position.symbol, position.side, position.contracts) == ("BTC/USDT:USDT", "long", Decimal(5))
    assert (fill.order.status, fill.order.filled, fill.last_fill_price) == ("closed", Decimal(1), Decimal("39849.93"))
    assert position.timestamp == fill.timestamp == 1610638208309


def test_all_zero_entries_of_one_symbol_are_one_flat_update():
    message = json.loads(frame("user_data_json/fill_capture_account_update.json"))
    message["a"]["P"][0]["pa"] = "0"
    (flat,) = BinanceDecoder().decode(json.dumps(message))
    assert (flat.contracts, flat.side) == (0, None)


def test_account_update_one_way_sign_gives_the_side():
    message = json.loads(frame("user_data_json/account_update.json"))
    message["a"]["P"] = [dict(message["a"]["P"][2], ps="BOTH")]
    (update,) = BinanceDecoder().decode(json.dumps(message))
    assert (update.side, update.contracts) == ("short", Decimal(10))


def test_balance_only_account_update_has_no_position_event():
    assert BinanceDecoder().decode(frame("user_data_json/account_update_bnfcr.json")) == []


@pytest.mark.parametrize(
    ("name", "origin", "status", "filled"),
    [
        ("order_update_new.json", "trailing_stop", "open", "0"),
        ("order_update_trade.json", "order", "open", "0.001"),
        ("order_update_trade_partial.json", "order", "open", "0.001"),
        ("order_update_calculated.json", "liquidation", "closed", "0.014"),
        ("order_update_calculated_pending.json", "liquidation", "open", "0"),
        ("order_update_insurance.json", "liquidation", "closed", "0.020"),
        ("order_update_adl.json", "adl", "closed", "0.005"),
        ("order_update_settlement.json", "order", "closed", "0.010"),
        ("order_update_delivery.json", "order", "closed", "1"),
        ("order_update_new_private_ws_capture.json", "order", "open", "0"),  # real, 2026-05-21 (B5)
    ],
)
def test_order_trade_update(name, origin, status, filled):
    (update,) = BinanceDecoder().decode(frame(f"user_data_json/{name}"))
    assert isinstance(update, OrderUpdate)
    assert (update.origin, update.order.status, update.order.filled) == (origin, status, Decimal(filled))
    assert update.order.side in ("buy", "sell")


def test_the_real_private_ws_frame_arriving_twice_decodes_to_the_same_update():
    """B5: a bare ORDER_TRADE_UPDATE from /private/ws, delivered twice, identical (a 2026 capture)."""
    decoder = BinanceDecoder()
    raw = frame("user_data_json/order_update_new_private_ws_capture.json")
    first, second = decoder.decode(raw), decoder.decode(raw)
    assert first == second
    (update,) = first
    assert (update.order.id, update.order.symbol, update.order.side, update.order.reduce_only) == (
        "215456450616", "SOL/USDT:USDT", "buy", True)
    assert (update.order.amount, update.timestamp) == (Decimal("21.26"), 1779367929401)


def test_order_trade_update_fields():
    (update,) = BinanceDecoder().decode(frame("user_data_json/order_update_calculated.json"))
    order = update.order
    assert (order.id, order.client_order_id, order.side, order.symbol) == (
        "8886999", "autoclose-1234567890", "sell", "BTC/USDT:USDT")
    assert (order.amount, order.average, order.reduce_only) == (Decimal("0.014"), Decimal("9910.12"), True)
    assert (update.last_fill_price, update.last_fill_amount, update.realized_pnl) == (
        Decimal("9910.12"), Decimal("0.014"), Decimal("-5.67"))


@pytest.mark.parametrize(
    ("name", "status"), [("algo_update_new.json", "open"), ("algo_update_canceled.json", "canceled")]
)
def test_algo_update(name, status):
    (update,) = BinanceDecoder().decode(frame(f"user_data_json/{name}"))
    assert (update.origin, update.order.status, update.order.id) == ("take_profit", status, "2148719")
    assert (update.order.symbol, update.order.trigger_price) == ("BNB/USDT:USDT", Decimal(750))
    assert update.order.client_order_id == "Q5xaq5EGKgXXa0fD7fs0Ip"


def test_triggered_algo_order_attributes_the_spawned_fill():
    decoder = BinanceDecoder()
    algo = json.loads(frame("user_data_json/algo_update_new.json"))
    algo["o"].update(o="STOP_MARKET", X="TRIGGERED", ai="8886774")
    decoder.decode(json.dumps(algo))
    fill = json.loads(frame("user_data_json/order_update_trade.json"))
    fill["o"].update(o="MARKET", ot="MARKET", X="FILLED")
    (update,) = decoder.decode(json.dumps(fill))
    assert update.origin == "stop_loss"


def test_mark_price_and_combined_stream_wrapper():
    raw = frame("market_data_json/mark_price_stream.json")
    (tick,) = BinanceDecoder().decode(raw)
    assert tick == MarkPrice(venue="binance", symbol="BTC/USDT:USDT", price=Decimal("11794.15"),
                             timestamp=1562305380000)
    wrapped = json.dumps({"stream": "btcusdt@markPrice@1s", "data": json.loads(raw)})
    assert BinanceDecoder().decode(wrapped) == [tick]


@pytest.mark.parametrize("name", ["user_data_json/trade_lite.json", "market_data_json/agg_trade_stream.json"])
def test_events_of_no_interest_yield_nothing(name):
    assert BinanceDecoder().decode(frame(name)) == []


def test_listen_key_expired_yields_nothing():
    assert BinanceDecoder().decode('{"e":"listenKeyExpired","E":"1736996475556","listenKey":"k"}') == []


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '{"no": "event type"}',
        '{"e":"ACCOUNT_UPDATE","T":1,"E":1,"a":{"m":"ORDER","B":[],"P":[{"s":"XRPUSDT","pa":"abc"}]}}',
        '{"e":"ACCOUNT_UPDATE","T":1,"E":1}',
        '{"e":"ORDER_TRADE_UPDATE","T":1,"E":1,"o":{"s":"XRPUSDT","S":"SIDEWAYS","X":"NEW","i":1,"q":"1","z":"0"}}',
        '{"e":"markPriceUpdate","E":1,"s":"XRPUSDT","p":"0"}',
    ],
)
def test_malformed_frames_raise_stream_error(raw):
    with pytest.raises(StreamError):
        BinanceDecoder().decode(raw)


def test_an_order_with_an_unknown_side_is_malformed_and_says_which():
    raw = '{"e":"ORDER_TRADE_UPDATE","T":1,"E":1,"o":{"s":"XRPUSDT","S":"SIDEWAYS","X":"NEW","i":1,"q":"1","z":"0"}}'
    with pytest.raises(StreamError, match="unknown order side 'SIDEWAYS'") as error:
        BinanceDecoder().decode(raw)
    assert error.value.venue == "binance"


def test_unified_symbols():
    assert unified_symbol("XRPUSDT") == "XRP/USDT:USDT"
    assert unified_symbol("1000PEPEUSDC") == "1000PEPE/USDC:USDC"
    assert unified_symbol("BTCUSDT_240329") == "BTC/USDT:USDT-240329"
    assert unified_symbol("XRPUSDT", {"XRPUSDT": "X/Y:Y"}) == "X/Y:Y"
    with pytest.raises(StreamError):
        unified_symbol("???")


HOSTILE_FRAMES = [
    b"not json", b"\xff\xfe", "[1, 2]", "", '{"e":"ACCOUNT_UPDATE","E":1,"T":Infinity,"a":{"m":"ORDER","B":[],"P":[]}}',
    '{"e":"ACCOUNT_UPDATE","E":1,"T":NaN,"a":{"m":"ORDER","B":[],"P":[]}}',
    '{"e":"ACCOUNT_UPDATE","E":1,"T":' + "9" * 30 + ',"a":{"m":"ORDER","B":[],"P":[]}}',
    '{"e":"ACCOUNT_UPDATE","E":1,"T":2,"a":{"m":"ORDER","B":[],"P":[{"s":"XRPUSDT","pa":1.1,"ep":0.1,'
    '"cr":"0","up":"0","mt":"cross","iw":"0","ps":"BOTH"}]}}',
    "[" * 5000 + "]" * 5000,
]


def _decoded(raw: str | bytes) -> list | type[Exception]:
    try:
        return BinanceDecoder().decode(raw)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return type(exc)


@pytest.mark.parametrize("path", sorted(p for d in ("user_data_json", "market_data_json")
                                        for p in (FIXTURES / d).glob("*.json")), ids=lambda p: p.name)
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


# --- issue 13 item 10: what the venue sends that is not a fill of ours (docs/conformance.md B19-B21) -------------

FUNDING_CROSS = {  # "Event: Balance and Position Update": a cross position's funding carries B only, no P
    "e": "ACCOUNT_UPDATE", "E": 1776787203246, "T": 1776787203246,
    "a": {"m": "FUNDING_FEE", "B": [{"a": "USDT", "wb": "38.17806885", "cw": "38.17806885", "bc": "-0.00085067"}]},
}


@pytest.mark.parametrize("positions", [None, []], ids=["no P (the docs)", "empty P (a real capture)"])
def test_a_cross_funding_fee_update_is_no_position_event_and_not_malformed(positions):
    message = json.loads(json.dumps(FUNDING_CROSS))
    if positions is not None:
        message["a"]["P"] = positions
    assert BinanceDecoder().decode(json.dumps(message)) == []


@pytest.mark.parametrize(("amount", "side"), [("20", "long"), ("-20", "short")])
def test_an_isolated_funding_fee_update_repeats_the_position_as_it_is(amount, side):
    # isolated: B and the one position the fee was charged on, unchanged in size
    message = json.loads(json.dumps(FUNDING_CROSS))
    message["a"]["P"] = [{"s": "BTCUSDT", "pa": amount, "ep": "6563.6", "bep": "6563.559", "cr": "0", "up": "1.5",
                          "mt": "isolated", "iw": "13200.7", "ps": "BOTH"}]
    (update,) = BinanceDecoder().decode(json.dumps(message))
    assert (update.side, update.contracts) == (side, Decimal(20))


def _documented_forced_close(client_id: str, execution: str, status: str, filled: str) -> str:
    """A liquidation / ADL order as "Event: Order Update" documents it: order type LIQUIDATION, execution
    CALCULATED ("Liquidation Execution"), client id ``autoclose-…`` / ``adl_autoclose``, status NEW first."""
    message = json.loads(frame("user_data_json/order_update_trade.json"))
    message["o"].update({"c": client_id, "o": "LIQUIDATION", "ot": "LIQUIDATION", "f": "IOC", "q": "0.014",
                         "x": execution, "X": status, "l": filled, "z": filled, "R": False})
    return json.dumps(message)


@pytest.mark.parametrize(
    ("client_id", "origin"), [("autoclose-1609457999000", "liquidation"), ("adl_autoclose", "adl")]
)
def test_documented_liquidation_and_adl_orders_are_attributed_new_then_filled(client_id, origin):
    decoder = BinanceDecoder()
    (new,) = decoder.decode(_documented_forced_close(client_id, "NEW", "NEW", "0"))
    (filled,) = decoder.decode(_documented_forced_close(client_id, "CALCULATED", "FILLED", "0.014"))
    assert (new.origin, new.order.status, new.order.filled) == (origin, "open", 0)
    assert (filled.origin, filled.order.status, filled.order.filled) == (origin, "closed", Decimal("0.014"))
    assert filled.order.type == "liquidation"


def test_a_market_order_expired_after_a_partial_fill_reports_what_filled():
    # "Expire Reason" 9: "Market order could not be filled completely, remaining quantity is canceled"
    message = json.loads(frame("user_data_json/order_update_trade.json"))
    message["o"].update({"o": "MARKET", "ot": "MARKET", "f": "GTC", "q": "0.003", "x": "EXPIRED", "X": "EXPIRED",
                         "l": "0", "z": "0.002", "er": "9"})
    (update,) = BinanceDecoder().decode(json.dumps(message))
    assert (update.order.status, update.order.filled, update.order.amount) == ("expired", Decimal("0.002"),
                                                                               Decimal("0.003"))
