"""The Bybit emulator as a paper venue for an unmodified ccxt client (issue 13 item 11): public market data in
the documented shapes, resting Limit orders (GTC / PostOnly / IOC) over REST and the private stream, and
ccxt's unified calls end to end (docs/conformance.md Y11-Y13)."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.async_support as ccxt_async
import pytest
import websockets
from bybit_helpers import SYMBOL, assert_same_shape, fixture_json
from framework_bybit import stream

ACC = "default"
TICK = Decimal("0.0001")


@pytest.fixture(scope="module")
async def client(harness):
    """ccxt's bybit exactly as a user builds it: only ``urls`` point at the emulator."""
    exchange = ccxt_async.bybit({
        "apiKey": harness.config.api_key.get_secret_value(),
        "secret": harness.config.api_secret.get_secret_value(),
        "enableRateLimit": False,
    })
    exchange.urls["api"] = {name: harness.config.rest_url for name in ("spot", "futures", "v2", "public", "private")}
    yield exchange
    await exchange.close()


async def public_get(harness, path: str, query: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{harness.config.rest_url}{path}?{query}") as answer:
        assert answer.status == 200
        return dict(await answer.json())


async def test_market_data_shapes_match_the_docs(harness, venue):
    venue.set_mark_price(SYMBOL, Decimal("1.2345"))
    for path, query, fixture in [
        ("/v5/market/tickers", "category=linear&symbol=XRPUSDT", "rest_market_tickers_0.json"),
        ("/v5/market/kline", "category=linear&symbol=XRPUSDT&interval=1", "rest_market_kline_0.json"),
        ("/v5/market/mark-price-kline", "category=linear&symbol=XRPUSDT&interval=1",
         "rest_market_mark_price_kline_0.json"),
        ("/v5/market/orderbook", "category=linear&symbol=XRPUSDT&limit=3", "rest_market_orderbook_0.json"),
    ]:
        got, expected = await public_get(harness, path, query), fixture_json(f"docs/{fixture}")
        assert_same_shape({k: v for k, v in got.items() if k != "time"}, {k: v for k, v in expected.items()
                                                                          if k != "time"}, path)
        result, expected_result = got["result"], expected["result"]
        if "list" in expected_result:
            assert_same_shape({**result, "list": None}, {**expected_result, "list": None}, path)
            first, expected_first = result["list"][0], expected_result["list"][0]
            if isinstance(expected_first, dict):
                assert_same_shape(first, expected_first, f"{path}.list[0]")
            else:
                assert len(first) == len(expected_first) and all(isinstance(v, str) for v in first), path
        else:
            assert_same_shape(result, expected_result, path)
    ticker = (await public_get(harness, "/v5/market/tickers", "category=linear&symbol=XRPUSDT"))["result"]["list"][0]
    assert (ticker["symbol"], ticker["markPrice"], ticker["lastPrice"]) == ("XRPUSDT", "1.2345", "1.2345")
    book = (await public_get(harness, "/v5/market/orderbook", "category=linear&symbol=XRPUSDT&limit=3"))["result"]
    assert [level[0] for level in book["b"]] == ["1.2344", "1.2343", "1.2342"]  # price desc
    assert [level[0] for level in book["a"]] == ["1.2346", "1.2347", "1.2348"]  # price asc
    bad = await public_get(harness, "/v5/market/kline", "category=linear&symbol=XRPUSDT&interval=7")
    assert bad["retCode"] == 10001


@pytest.mark.parametrize("side", ["long", "short"])
async def test_an_unmodified_ccxt_client_uses_the_emulator_as_a_paper_venue(client, venue, side):
    long = side == "long"
    entry, exit_ = ("buy", "sell") if long else ("sell", "buy")
    sign = 1 if long else -1

    # market data: the ticker and book sit on the mark; the klines follow the mark path
    for price in ("5.0000", "0.2000", "1.0000"):  # extremes no other test of this module sets
        venue.set_mark_price(SYMBOL, Decimal(price))
    ticker = await client.fetch_ticker(SYMBOL)
    assert (ticker["symbol"], ticker["last"], ticker["bid"], ticker["ask"]) == (SYMBOL, 1.0, 0.9999, 1.0001)
    candles = await client.fetch_ohlcv(SYMBOL, "1m", limit=1000)
    assert max(c[2] for c in candles) == 5.0 and min(c[3] for c in candles) == 0.2
    assert candles[-1][4] == 1.0 and candles == sorted(candles)  # ccxt puts them oldest first
    book = await client.fetch_order_book(SYMBOL, 5)
    assert book["bids"][0] == [0.9999, 100.0] and book["asks"][0] == [1.0001, 100.0]
    assert len(book["bids"]) == len(book["asks"]) == 5

    # orders: market entry, a resting limit, stop-loss / take-profit / a plain trigger, all reduce-only
    market = await client.create_order(SYMBOL, "market", entry, 20)
    assert venue.get_order(ACC, SYMBOL, market["id"]).status == "filled"
    limit_price = 1 - sign * 0.05
    limit = await client.create_order(SYMBOL, "limit", entry, 10, limit_price, {"clientOrderId": f"paper-{side}"})
    stop = await client.create_order(SYMBOL, "market", exit_, 20, None, {"stopLossPrice": 1 - sign * 0.2,
                                                                         "triggerBy": "MarkPrice"})
    take = await client.create_order(SYMBOL, "market", exit_, 20, None, {"takeProfitPrice": 1 + sign * 0.2,
                                                                         "triggerBy": "MarkPrice"})
    trigger = await client.create_order(SYMBOL, "market", exit_, 5, None, {
        "triggerPrice": 1 - sign * 0.1, "triggerDirection": "descending" if long else "ascending",
        "triggerBy": "MarkPrice", "reduceOnly": True})
    held = {o.id: o for o in venue.orders(ACC, SYMBOL)}
    assert (held[stop["id"]].type, held[take["id"]].type, held[trigger["id"]].type) == (
        "stop_market", "take_profit_market", "stop_market")
    assert all(held[o["id"]].reduce_only for o in (stop, take, trigger))

    positions = await client.fetch_positions([SYMBOL])
    assert [(p["symbol"], p["side"], p["contracts"], p["entryPrice"]) for p in positions] == [
        (SYMBOL, side, 20.0, 1.0)]

    listed = {o["id"]: o for o in await client.fetch_open_orders(SYMBOL)}
    assert set(listed) == {limit["id"], stop["id"], take["id"], trigger["id"]}
    resting = listed[limit["id"]]
    assert (resting["type"], resting["side"], resting["price"], resting["amount"], resting["status"],
            resting["timeInForce"], resting["clientOrderId"]) == (
        "limit", entry, limit_price, 10.0, "open", "GTC", f"paper-{side}")
    assert (listed[stop["id"]]["triggerPrice"], listed[stop["id"]]["reduceOnly"]) == (1 - sign * 0.2, True)
    assert listed[take["id"]]["triggerPrice"] == 1 + sign * 0.2

    # the limit fills at its own price (maker) when the mark reaches it
    venue.set_mark_price(SYMBOL, Decimal(str(limit_price)) - sign * 2 * TICK)
    position = venue.position(ACC, SYMBOL)
    assert (position.side, position.contracts) == (side, Decimal(30))
    filled = venue.get_order(ACC, SYMBOL, limit["id"])
    assert (filled.status, filled.average, venue.truth.fills[-1].maker) == (
        "filled", Decimal(str(limit_price)), True)

    # cancel: a new resting limit goes, and is no longer listed
    again = await client.create_order(SYMBOL, "limit", entry, 10, float(position.mark_price) - sign * 0.05)
    cancelled = await client.cancel_order(again["id"], SYMBOL)
    assert cancelled["id"] == again["id"] and venue.get_order(ACC, SYMBOL, again["id"]).status == "canceled"
    assert again["id"] not in {o["id"] for o in await client.fetch_open_orders(SYMBOL)}


async def private_socket(harness):
    ws = await websockets.connect(f"{harness.config.ws_url}/v5/private")
    expires = int(time.time() * 1000) + 10_000
    await ws.send(stream.auth_message(harness.config.api_key.get_secret_value(),
                                      harness.config.api_secret.get_secret_value(), expires))
    assert json.loads(await ws.recv())["success"] is True
    await ws.send(json.dumps({"op": "subscribe", "args": ["order", "execution"]}))
    assert json.loads(await ws.recv())["success"] is True
    return ws


async def next_item(ws, topic: str, order_id: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            frame = json.loads(await ws.recv())
            items = [i for i in frame.get("data", []) if frame.get("topic") == topic and i["orderId"] == order_id]
            if items:
                return dict(items[0])


@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_limit_orders_on_the_order_and_execution_topics(harness, client, venue, side):
    sign = 1 if side == "buy" else -1
    ws = await private_socket(harness)
    try:
        rest = await client.create_order(SYMBOL, "limit", side, 10, 1 - sign * 0.02)
        new = await next_item(ws, "order", rest["id"])
        assert (new["orderType"], new["orderStatus"], new["price"], new["timeInForce"], new["leavesQty"]) == (
            "Limit", "New", str(1 - sign * 0.02), "GTC", "10")
        venue.set_mark_price(SYMBOL, Decimal(1) - sign * Decimal("0.03"))
        execution = await next_item(ws, "execution", rest["id"])
        assert (execution["execPrice"], execution["isMaker"], execution["orderType"], execution["feeRate"]) == (
            str(1 - sign * 0.02), True, "Limit", "0.0002")
        filled = await next_item(ws, "order", rest["id"])
        assert (filled["orderStatus"], filled["cumExecQty"], filled["avgPrice"]) == (
            "Filled", "10", str(1 - sign * 0.02))

        mark = venue.mark_price(SYMBOL)
        crossing = float(mark + sign * Decimal("0.01"))  # would take liquidity
        post = await client.create_order(SYMBOL, "limit", side, 10, crossing, {"postOnly": True})
        assert (await next_item(ws, "order", post["id"]))["orderStatus"] == "New"
        ended = await next_item(ws, "order", post["id"])
        assert (ended["orderStatus"], ended["rejectReason"], ended["cumExecQty"], ended["timeInForce"]) == (
            "Cancelled", "EC_PostOnlyWillTakeLiquidity", "0", "PostOnly")
        ioc = await client.create_order(SYMBOL, "limit", side, 10, float(mark - sign * Decimal("0.01")),
                                        {"timeInForce": "IOC"})
        await next_item(ws, "order", ioc["id"])
        assert (await next_item(ws, "order", ioc["id"]))["rejectReason"] == "EC_NoImmediateQtyToFill"
        assert venue.get_order(ACC, SYMBOL, ioc["id"]).filled == 0

        resting = await client.create_order(SYMBOL, "limit", side, 10, float(mark - sign * Decimal("0.01")))
        await next_item(ws, "order", resting["id"])
        await client.cancel_order(resting["id"], SYMBOL)
        cancelled = await next_item(ws, "order", resting["id"])
        assert (cancelled["orderStatus"], cancelled["cancelType"]) == ("Cancelled", "CancelByUser")
    finally:
        await ws.close()


async def test_a_duplicate_order_link_id_of_an_open_limit_order_is_110072(client, venue):
    """error.mdx 110072 "OrderLinkedID is duplicate", testable now that an order can stay open."""
    first = await client.create_order(SYMBOL, "limit", "buy", 10, 0.9, {"clientOrderId": "dup-1"})
    with pytest.raises(Exception) as raised:
        await client.create_order(SYMBOL, "limit", "buy", 10, 0.9, {"clientOrderId": "dup-1"})
    assert "110072" in str(raised.value)
    assert [o.id for o in venue.orders(ACC, SYMBOL)] == [first["id"]]
    assert venue.truth.orders[-1].reject_reason == "duplicate_client_order_id"
