"""The Binance emulator as a paper venue for an unmodified ccxt client (issue 13 item 11): the public market
data a strategy reads, resting LIMIT orders (GTC / GTX / IOC / FOK) over REST and the user stream, and ccxt's
unified calls end to end (docs/conformance.md B-M rows)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import aiohttp
import ccxt
import ccxt.async_support as ccxt_async
import pytest
import websockets

SYMBOL = "XRP/USDT:USDT"
ACC = "default"
TICK = Decimal("0.0001")


@pytest.fixture(scope="module")
async def client(harness):
    """ccxt's binanceusdm exactly as a user builds it: only ``urls`` point at the emulator (each API's path kept,
    the spot-wallet ``sapi`` included: ccxt reads currencies from it when it has keys)."""
    exchange = ccxt_async.binanceusdm({
        "apiKey": harness.config.api_key.get_secret_value(),
        "secret": harness.config.api_secret.get_secret_value(),
        "enableRateLimit": False,
    })
    for name, url in list(exchange.urls["api"].items()):
        exchange.urls["api"][name] = harness.config.rest_url + urlparse(url).path
    yield exchange
    await exchange.close()


async def public_get(harness, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{harness.config.rest_url}{path}") as answer:
        return answer.status, await answer.json()


async def test_market_data_answers_in_the_documented_shapes(harness, venue):
    venue.set_mark_price(SYMBOL, Decimal("1.2345"))
    status, ticker = await public_get(harness, "/fapi/v1/ticker/24hr?symbol=XRPUSDT")
    assert status == 200 and set(ticker) == {  # "24hr Ticker Price Change Statistics"
        "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "lastPrice", "lastQty", "openPrice",
        "highPrice", "lowPrice", "volume", "quoteVolume", "openTime", "closeTime", "firstId", "lastId", "count"}
    assert (ticker["symbol"], ticker["lastPrice"]) == ("XRPUSDT", "1.2345")
    _, price = await public_get(harness, "/fapi/v1/ticker/price?symbol=XRPUSDT")
    assert set(price) == {"symbol", "price", "time"} and price["price"] == "1.2345"
    _, prices = await public_get(harness, "/fapi/v1/ticker/price")
    assert {p["symbol"] for p in prices} == {"XRPUSDT", "BTCUSDT"}  # no symbol: every symbol, as a list
    _, book_ticker = await public_get(harness, "/fapi/v1/ticker/bookTicker?symbol=XRPUSDT")
    assert set(book_ticker) == {"lastUpdateId", "symbol", "bidPrice", "bidQty", "askPrice", "askQty", "time"}
    assert (book_ticker["bidPrice"], book_ticker["askPrice"]) == ("1.2344", "1.2346")
    _, depth = await public_get(harness, "/fapi/v1/depth?symbol=XRPUSDT&limit=5")
    assert set(depth) == {"lastUpdateId", "E", "T", "bids", "asks"}
    assert [b[0] for b in depth["bids"]] == ["1.2344", "1.2343", "1.2342", "1.2341", "1.2340"]
    assert [a[0] for a in depth["asks"]] == ["1.2346", "1.2347", "1.2348", "1.2349", "1.2350"]
    assert (await public_get(harness, "/fapi/v1/depth?symbol=XRPUSDT&limit=7"))[1]["code"] == -1130
    for path in ("/fapi/v1/klines", "/fapi/v1/markPriceKlines"):
        _, klines = await public_get(harness, f"{path}?symbol=XRPUSDT&interval=1m&limit=2")
        last = klines[-1]
        assert len(last) == 12 and last[4] == "1.2345" and last[6] == last[0] + 59_999, path
    assert (await public_get(harness, "/fapi/v1/klines?symbol=XRPUSDT&interval=7m"))[1]["code"] == -1120
    _, premium = await public_get(harness, "/fapi/v1/premiumIndex?symbol=XRPUSDT")
    assert set(premium) == {"symbol", "markPrice", "indexPrice", "estimatedSettlePrice", "lastFundingRate",
                            "interestRate", "nextFundingTime", "time"}
    assert premium["markPrice"] == "1.2345" and premium["nextFundingTime"] % 28_800_000 == 0


@pytest.mark.parametrize("side", ["long", "short"])
async def test_an_unmodified_ccxt_client_uses_the_emulator_as_a_paper_venue(client, venue, side):
    long = side == "long"
    entry, exit_ = ("buy", "sell") if long else ("sell", "buy")
    sign = 1 if long else -1

    # market data: the ticker sits on the mark; the book a tick either side; the klines follow the mark path
    for price in ("5.0000", "0.2000", "1.0000"):  # extremes no other test of this module sets
        venue.set_mark_price(SYMBOL, Decimal(price))
    ticker = await client.fetch_ticker(SYMBOL)
    assert (ticker["symbol"], ticker["last"], ticker["high"], ticker["low"]) == (SYMBOL, 1.0, 5.0, 0.2)
    candles = await client.fetch_ohlcv(SYMBOL, "1m", limit=1500)
    assert max(c[2] for c in candles) == 5.0 and min(c[3] for c in candles) == 0.2
    assert candles[-1][4] == 1.0 and candles == sorted(candles)
    book = await client.fetch_order_book(SYMBOL, 5)
    assert book["bids"][0] == [0.9999, 100.0] and book["asks"][0] == [1.0001, 100.0]
    assert len(book["bids"]) == len(book["asks"]) == 5
    mark = await client.fetch_mark_price(SYMBOL)
    assert mark["markPrice"] == 1.0

    # orders: a market entry, a resting limit, and stop-loss / take-profit / a plain trigger, reduce-only
    market = await client.create_order(SYMBOL, "market", entry, 20)
    assert venue.get_order(ACC, SYMBOL, market["id"]).status == "filled"
    limit_price = 1 - sign * 0.05
    limit = await client.create_order(SYMBOL, "limit", entry, 10, limit_price, {"clientOrderId": f"paper-{side}"})
    assert (limit["status"], limit["price"], limit["timeInForce"], limit["clientOrderId"]) == (
        "open", limit_price, "GTC", f"paper-{side}")
    stop = await client.create_order(SYMBOL, "market", exit_, 20, None,
                                     {"stopLossPrice": 1 - sign * 0.2, "reduceOnly": True})
    take = await client.create_order(SYMBOL, "market", exit_, 20, None,
                                     {"takeProfitPrice": 1 + sign * 0.2, "reduceOnly": True})
    trigger = await client.create_order(SYMBOL, "market", exit_, 5, None,
                                        {"triggerPrice": 1 - sign * 0.1, "reduceOnly": True})
    held = {o.id: o for o in venue.orders(ACC, SYMBOL)}
    assert (held[stop["id"]].type, held[take["id"]].type, held[trigger["id"]].type) == (
        "stop_market", "take_profit_market", "stop_market")
    assert (held[stop["id"]].trigger_price, held[take["id"]].trigger_price) == (
        Decimal(str(1 - sign * 0.2)), Decimal(str(1 + sign * 0.2)))
    assert all(held[o["id"]].reduce_only for o in (stop, take, trigger))

    positions = await client.fetch_positions([SYMBOL])
    assert [(p["symbol"], p["side"], p["contracts"], p["entryPrice"]) for p in positions] == [
        (SYMBOL, side, 20.0, 1.0)]

    listed = {o["id"]: o for o in await client.fetch_open_orders(SYMBOL)}
    assert set(listed) == {limit["id"]}  # /fapi/v1/openOrders; the conditional ones are algo orders
    resting = listed[limit["id"]]
    assert (resting["type"], resting["side"], resting["price"], resting["amount"], resting["status"]) == (
        "limit", entry, limit_price, 10.0, "open")
    algo = {o["id"]: o for o in await client.fetch_open_orders(SYMBOL, params={"trigger": True})}
    assert set(algo) == {stop["id"], take["id"], trigger["id"]}
    assert algo[stop["id"]]["triggerPrice"] == 1 - sign * 0.2

    # the limit fills at its own price (maker) when the mark reaches it
    venue.set_mark_price(SYMBOL, Decimal(str(limit_price)) - sign * 2 * TICK)
    position = venue.position(ACC, SYMBOL)
    assert (position.side, position.contracts) == (side, Decimal(30))
    filled = venue.get_order(ACC, SYMBOL, limit["id"])
    assert (filled.status, filled.average, venue.truth.fills[-1].maker) == ("filled", Decimal(str(limit_price)), True)
    fetched = await client.fetch_order(limit["id"], SYMBOL)
    assert (fetched["status"], fetched["average"], fetched["filled"]) == ("closed", limit_price, 10.0)

    # cancel: a new resting limit goes, and is no longer listed
    again = await client.create_order(SYMBOL, "limit", entry, 10, float(position.mark_price) - sign * 0.05)
    cancelled = await client.cancel_order(again["id"], SYMBOL)
    assert (cancelled["id"], cancelled["status"]) == (again["id"], "canceled")
    assert again["id"] not in {o["id"] for o in await client.fetch_open_orders(SYMBOL)}


@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_gtx_that_would_take_is_5022_and_fok_that_cannot_fill_is_5021_neither_recorded(client, venue, side):
    sign = 1 if side == "buy" else -1
    venue.set_mark_price(SYMBOL, Decimal(1))
    recorded = len(venue.truth.orders)
    with pytest.raises(ccxt.ExchangeError, match="-5022"):
        await client.create_order(SYMBOL, "limit", side, 10, 1 + sign * 0.01, {"postOnly": True})
    with pytest.raises(ccxt.ExchangeError, match="-5021"):
        await client.create_order(SYMBOL, "limit", side, 10, 1 - sign * 0.01, {"timeInForce": "FOK"})
    assert len(venue.truth.orders) == recorded and venue.orders(ACC, SYMBOL) == []
    maker = await client.create_order(SYMBOL, "limit", side, 10, 1 - sign * 0.01, {"postOnly": True})
    assert (maker["status"], maker["timeInForce"], maker["postOnly"]) == ("open", "PO", True)
    ioc = await client.create_order(SYMBOL, "limit", side, 10, 1 - sign * 0.01, {"timeInForce": "IOC"})
    assert venue.get_order(ACC, SYMBOL, ioc["id"]).status == "expired"


def user_stream_url(harness, listen_key: str) -> str:
    return f"{harness.emulator.ws_url}/private/ws?listenKey={listen_key}&events=ORDER_TRADE_UPDATE/TRADE_LITE"


async def next_order_update(ws, order_id: str, seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The next ORDER_TRADE_UPDATE of ``order_id`` (other frames go to ``seen``)."""
    async with asyncio.timeout(5):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("e") == "ORDER_TRADE_UPDATE" and str(frame["o"]["i"]) == order_id:
                return dict(frame["o"])
            if seen is not None:
                seen.append(frame)


@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_limit_orders_on_the_user_stream(harness, client, venue, side):
    sign = 1 if side == "buy" else -1
    venue.set_mark_price(SYMBOL, Decimal(1))
    key = (await client.fapiPrivatePostListenKey())["listenKey"]
    async with websockets.connect(user_stream_url(harness, key)) as ws:
        price = 1 - sign * 0.02
        rest = await client.create_order(SYMBOL, "limit", side, 10, price)
        new = await next_order_update(ws, rest["id"])
        assert (new["o"], new["f"], new["x"], new["X"], new["p"], new["q"]) == (
            "LIMIT", "GTC", "NEW", "NEW", str(price), "10")
        venue.set_mark_price(SYMBOL, Decimal(1) - sign * Decimal("0.03"))
        before: list[dict[str, Any]] = []
        trade = await next_order_update(ws, rest["id"], before)
        (lite,) = [f for f in before if f["e"] == "TRADE_LITE"]  # TRADE_LITE comes first (B4)
        assert (trade["x"], trade["X"], trade["L"], trade["l"], trade["m"], trade["ot"]) == (
            "TRADE", "FILLED", str(price), "10", True, "LIMIT")
        assert (lite["p"], lite["L"], lite["m"]) == (str(price), str(price), True)

        ioc = await client.create_order(SYMBOL, "limit", side, 10, float(venue.mark_price(SYMBOL)) - sign * 0.01,
                                        {"timeInForce": "IOC"})
        assert (await next_order_update(ws, ioc["id"]))["X"] == "NEW"
        expired = await next_order_update(ws, ioc["id"])
        assert (expired["x"], expired["X"], expired["f"], expired["z"]) == ("EXPIRED", "EXPIRED", "IOC", "0")

        resting = await client.create_order(SYMBOL, "limit", side, 10, float(venue.mark_price(SYMBOL)) - sign * 0.01)
        await next_order_update(ws, resting["id"])
        await client.cancel_order(resting["id"], SYMBOL)
        cancelled = await next_order_update(ws, resting["id"])
        assert (cancelled["x"], cancelled["X"]) == ("CANCELED", "CANCELED")


async def test_a_duplicate_client_order_id_among_open_orders_is_4116_and_free_again_once_closed(client, venue):
    """-4116 "clientOrderId is duplicated" (B9), testable now that an order can stay open."""
    venue.set_mark_price(SYMBOL, Decimal(1))
    first = await client.create_order(SYMBOL, "limit", "buy", 10, 0.9, {"clientOrderId": "paper-dup"})
    with pytest.raises(ccxt.ExchangeError, match="-4116"):
        await client.create_order(SYMBOL, "limit", "sell", 10, 1.1, {"clientOrderId": "paper-dup"})
    assert [o.id for o in venue.orders(ACC, SYMBOL)] == [first["id"]]
    await client.cancel_order(first["id"], SYMBOL)
    again = await client.create_order(SYMBOL, "limit", "sell", 10, 1.1, {"clientOrderId": "paper-dup"})
    assert again["id"] != first["id"] and again["clientOrderId"] == "paper-dup"
