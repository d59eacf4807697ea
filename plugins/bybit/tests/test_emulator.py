"""The Bybit wire emulator: payload shapes field by field against the fixtures, signatures and error codes,
and every fault knob, over loopback with the real ccxt client and a real websockets client."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
import pytest
import websockets
from bybit_helpers import SYMBOL, TEST_OPTIONS, RecordingSink, assert_same_shape, fixture_json, intent
from framework_bybit import rest, stream
from framework_bybit.rest import BybitApiError
from pydantic import SecretStr

from framework.models import PositionUpdate
from framework.venue.harness import FakeClock


async def signed_get(harness, path: str, query: str, secret: str | None = None, key: str | None = None,
                     timestamp: int | None = None) -> tuple[int, dict[str, Any]]:
    """A hand-signed Bybit v5 GET, to probe the emulator's checks independently of ccxt."""
    key = key or harness.config.api_key.get_secret_value()
    secret = secret or harness.config.api_secret.get_secret_value()
    ts = str(timestamp or int(time.time() * 1000))
    sign = hmac.new(secret.encode(), f"{ts}{key}5000{query}".encode(), hashlib.sha256).hexdigest()
    headers = {"X-BAPI-API-KEY": key, "X-BAPI-TIMESTAMP": ts, "X-BAPI-RECV-WINDOW": "5000", "X-BAPI-SIGN": sign}
    async with aiohttp.ClientSession() as session, session.get(
        f"{harness.config.rest_url}{path}?{query}", headers=headers
    ) as response:
        return response.status, await response.json()


# --- REST shapes ------------------------------------------------------------------------------------------


async def test_rest_payload_shapes_match_the_fixtures(harness, conn, venue):
    entry = intent()
    created = await conn.client.private_post_v5_order_create({
        "category": "linear", "symbol": "XRPUSDT", "side": "Buy", "orderType": "Market", "qty": "43",
        "orderLinkId": entry.client_order_id, "stopLoss": "0.95", "slTriggerBy": "MarkPrice", "tpslMode": "Full"})
    assert_same_shape(created, fixture_json("docs/rest_order_create_0.json"), "create")
    assert set(created["result"]) == {"orderId", "orderLinkId"}  # only ids, like the real venue

    realtime = await conn.client.private_get_v5_order_realtime(
        {"category": "linear", "symbol": "XRPUSDT", "orderId": created["result"]["orderId"]})
    expected_row = fixture_json("http_get_orders_realtime.json")["result"]["list"][0]
    assert_same_shape(realtime["result"]["list"][0], expected_row, "realtime")
    history = await conn.client.private_get_v5_order_history({"category": "linear", "symbol": "XRPUSDT"})
    assert_same_shape(history["result"]["list"][0], fixture_json("http_get_orders_history.json")["result"]["list"][0],
                      "history")

    positions = await conn.client.private_get_v5_position_list({"category": "linear", "symbol": "XRPUSDT"})
    row = positions["result"]["list"][0]
    assert_same_shape(row, fixture_json("docs/rest_position_list_0.json")["result"]["list"][0], "position")
    assert (row["side"], row["size"], row["stopLoss"]) == ("Buy", "43", "0.95")

    stop = await conn.client.private_post_v5_position_trading_stop(
        {"category": "linear", "symbol": "XRPUSDT", "stopLoss": "0.9", "slTriggerBy": "MarkPrice", "tpslMode": "Full",
         "positionIdx": 0})
    assert_same_shape(stop, fixture_json("docs/rest_position_trading_stop_0.json"), "trading-stop")

    wallet = await conn.client.private_get_v5_account_wallet_balance({"accountType": "UNIFIED"})
    expected_wallet = fixture_json("http_get_wallet_balance.json")["result"]["list"][0]
    got_wallet = wallet["result"]["list"][0]
    assert set(got_wallet) == set(expected_wallet)
    assert set(got_wallet["coin"][0]) == set(expected_wallet["coin"][0])

    instruments = await conn.client.public_get_v5_market_instruments_info({"category": "linear"})
    expected = fixture_json("http_get_instruments_linear.json")["result"]["list"][0]
    assert_same_shape(instruments["result"]["list"][0], expected, "instrument")


async def test_flat_position_by_symbol_is_listed_with_size_zero_and_empty_side(conn):
    positions = await conn.client.private_get_v5_position_list({"category": "linear", "symbol": "XRPUSDT"})
    row = positions["result"]["list"][0]
    assert (row["side"], row["size"]) == ("", "0")


async def test_ccxt_unified_calls_work_against_the_emulator(conn, venue):
    await rest.create_entry(conn, intent())
    [position] = await conn.client.fetch_positions([SYMBOL])
    assert (position["side"], position["contracts"]) == ("long", 43)
    assert (await conn.client.fetch_time()) > 0
    balance = await conn.client.fetch_balance()
    assert balance["USDT"]["total"] > 0


@pytest.mark.parametrize("trigger_by", [None, "LastPrice", "IndexPrice"])
async def test_a_conditional_order_that_would_not_trigger_on_the_mark_price_is_refused(conn, venue, trigger_by):
    """Y21: the venue core triggers on the mark price only, so a conditional order on another price (or with no
    ``triggerBy``, assumed ``LastPrice``) is refused, not silently triggered on the mark price."""
    await rest.create_entry(conn, intent())
    params = {"category": "linear", "symbol": "XRPUSDT", "side": "Sell", "orderType": "Market", "qty": "43",
              "triggerPrice": "0.9", "triggerDirection": 2, "reduceOnly": True}
    if trigger_by is not None:
        params["triggerBy"] = trigger_by
    with pytest.raises(BybitApiError) as error:
        await conn.client.private_post_v5_order_create(params)
    assert error.value.ret_code == 10001 and "triggerBy=MarkPrice" in error.value.ret_msg
    assert venue.orders("default", SYMBOL, conditional=True) == []


@pytest.mark.parametrize("trigger_by", [None, "LastPrice", "markprice"])
async def test_a_position_stop_that_would_not_trigger_on_the_mark_price_is_refused(conn, venue, trigger_by):
    """As above for trading-stop's ``slTriggerBy``: the position keeps the stop it had."""
    await rest.create_entry(conn, intent())
    params = {"category": "linear", "symbol": "XRPUSDT", "stopLoss": "0.9", "tpslMode": "Full", "positionIdx": 0}
    if trigger_by is not None:
        params["slTriggerBy"] = trigger_by
    with pytest.raises(BybitApiError) as error:
        await conn.client.private_post_v5_position_trading_stop(params)
    assert error.value.ret_code == 10001 and "slTriggerBy=MarkPrice" in error.value.ret_msg
    assert venue.position("default", SYMBOL).stop_loss == Decimal("0.95")


@pytest.mark.parametrize("missing", ["tpslMode", "positionIdx"])
async def test_trading_stop_without_a_required_parameter_is_refused(conn, venue, missing):
    """trading-stop.mdx marks ``tpslMode`` and ``positionIdx`` required: without one, nothing changes."""
    await rest.create_entry(conn, intent())
    params = {"category": "linear", "symbol": "XRPUSDT", "stopLoss": "0.9", "slTriggerBy": "MarkPrice",
              "tpslMode": "Full", "positionIdx": 0}
    del params[missing]
    with pytest.raises(BybitApiError) as error:
        await conn.client.private_post_v5_position_trading_stop(params)
    assert error.value.ret_code == 10001 and missing in error.value.ret_msg
    assert venue.position("default", SYMBOL).stop_loss == Decimal("0.95")


async def test_cancel_a_resting_conditional_order(conn, venue):
    await rest.create_entry(conn, intent())
    placed = await conn.client.private_post_v5_order_create({
        "category": "linear", "symbol": "XRPUSDT", "side": "Sell", "orderType": "Market", "qty": "43",
        "triggerPrice": "0.9", "triggerDirection": 2, "triggerBy": "MarkPrice", "reduceOnly": True})
    order_id = placed["result"]["orderId"]
    assert venue.get_order("default", SYMBOL, order_id).type == "stop_market"
    canceled = await conn.client.cancel_order(order_id, SYMBOL)
    assert canceled["id"] == order_id
    assert venue.get_order("default", SYMBOL, order_id).status == "canceled"
    with pytest.raises(BybitApiError) as error:
        await conn.client.private_post_v5_order_cancel({"category": "linear", "symbol": "XRPUSDT", "orderId": order_id})
    assert error.value.ret_code == 110001


async def test_min_notional_110094_for_an_opening_order_not_for_a_reduce_only_one(conn, venue):
    order = {"category": "linear", "symbol": "XRPUSDT", "side": "Buy", "orderType": "Market", "qty": "4.9"}
    with pytest.raises(BybitApiError) as error:  # 4.9 USDT at mark 1 < minNotionalValue 5
        await conn.client.private_post_v5_order_create(order)
    assert (error.value.ret_code, error.value.ret_msg) == (110094, "Order notional value below the lower limit")
    await conn.client.private_post_v5_order_create({**order, "qty": "5"})
    await conn.client.private_post_v5_order_create({**order, "side": "Sell", "qty": "1", "reduceOnly": True})
    assert venue.position("default", SYMBOL).contracts == 4


async def test_order_visibility_lag_hides_a_new_order_and_its_position_from_trading_stop(conn, venue):
    venue.faults.order_visibility_lag_ms = 30_000
    raw = await rest.create_entry(conn, intent())
    query = {"category": "linear", "symbol": "XRPUSDT", "orderId": raw["id"]}
    for endpoint in (conn.client.private_get_v5_order_realtime, conn.client.private_get_v5_order_history):
        assert (await endpoint(query))["result"]["list"] == []  # "this request is asynchronous"
    with pytest.raises(BybitApiError) as error:
        await conn.client.private_post_v5_position_trading_stop(
            {"category": "linear", "symbol": "XRPUSDT", "takeProfit": "1.2", "tpTriggerBy": "MarkPrice",
             "tpslMode": "Full", "positionIdx": 0})
    assert (error.value.ret_code, error.value.ret_msg) == (10001, "can not set tp/sl/ts for zero position")
    venue.faults.order_visibility_lag_ms = 0
    [row] = (await conn.client.private_get_v5_order_realtime(query))["result"]["list"]
    assert row["orderId"] == raw["id"]


async def test_paging_takes_the_listing_once_and_each_page_costs_its_rows(conn, venue):
    venue.place_order("default", SYMBOL, "buy", amount=Decimal(100))
    placed = [venue.place_order("default", SYMBOL, "sell", type="stop_market", amount=Decimal(1), reduce_only=True,
                                trigger_price=Decimal("0.5") + Decimal(i) / 1000).id for i in range(60)]
    query = {"category": "linear", "settleCoin": "USDT", "limit": 50}
    first = (await conn.client.private_get_v5_order_realtime(query))["result"]
    late = venue.place_order("default", SYMBOL, "sell", type="stop_market", amount=Decimal(1), reduce_only=True,
                             trigger_price=Decimal("0.4")).id
    second = (await conn.client.private_get_v5_order_realtime({**query, "cursor": first["nextPageCursor"]}))["result"]
    again = (await conn.client.private_get_v5_order_realtime({**query, "cursor": first["nextPageCursor"]}))["result"]
    ids = [row["orderId"] for row in first["list"] + second["list"]]
    assert ids == placed[::-1] and late not in ids  # newest first, the listing of the first page
    assert second["nextPageCursor"] == "" and again["list"] == second["list"]


async def test_position_pages_take_the_listing_once(conn, venue, monkeypatch):
    """O(page): the open positions are listed for the first page only; later pages come from its cursor."""
    symbols = [s for s in venue.instruments if s != SYMBOL][:2] + [SYMBOL]
    for symbol in symbols:
        venue.place_order("default", symbol, "buy", amount=venue.instrument(symbol).min_amount)
    listings = 0
    real = venue.visible_positions

    def counting(account: str, lag_ms: int) -> Any:
        nonlocal listings
        listings += 1
        return real(account, lag_ms)

    monkeypatch.setattr(venue, "visible_positions", counting)
    query = {"category": "linear", "settleCoin": "USDT", "limit": 1}
    rows, cursor = [], None
    while cursor != "":
        page = (await conn.client.private_get_v5_position_list({**query, **({"cursor": cursor} if cursor else {})}))
        rows += page["result"]["list"]
        cursor = page["result"]["nextPageCursor"]
    assert listings == 1 and len(rows) == len(symbols)


# --- signatures ---------------------------------------------------------------------------------------------


async def test_wrong_secret_is_rejected_with_10004(harness):
    config = harness.config.model_copy(update={"api_secret": SecretStr("not-the-secret")})
    client = rest.make_client(config)
    try:
        with pytest.raises(BybitApiError) as error:
            await client.private_get_v5_position_list({"category": "linear", "settleCoin": "USDT"})
        assert error.value.ret_code == 10004
        await client.public_get_v5_market_time()  # public endpoints need no signature
    finally:
        await client.close()


async def test_unknown_key_10003_and_stale_timestamp_10002(harness):
    status, body = await signed_get(harness, "/v5/position/list", "category=linear&settleCoin=USDT", key="nobody")
    assert (status, body["retCode"]) == (401, 10003)
    status, body = await signed_get(harness, "/v5/position/list", "category=linear&settleCoin=USDT",
                                    timestamp=int(time.time() * 1000) - 60_000)
    assert (status, body["retCode"]) == (200, 10002)
    status, body = await signed_get(harness, "/v5/position/list", "category=linear&settleCoin=USDT")
    assert (status, body["retCode"]) == (200, 0)


async def test_driver_connect_with_wrong_secret_fails_on_first_private_call(harness):
    config = harness.config.model_copy(update={"api_secret": SecretStr("nope")})
    with pytest.raises(Exception) as error:
        await rest.connect(config)
    assert "10004" in str(error.value)
    assert "nope" not in str(error.value)  # the secret never reaches an error


# --- WebSocket shapes ---------------------------------------------------------------------------------------


async def private_socket(harness, topics=("position", "order", "execution", "wallet"), secret=None):
    ws = await websockets.connect(f"{harness.config.ws_url}/v5/private")
    expires = int(time.time() * 1000) + 10_000
    await ws.send(stream.auth_message(harness.config.api_key.get_secret_value(),
                                      secret or harness.config.api_secret.get_secret_value(), expires))
    auth = json.loads(await ws.recv())
    if auth.get("success"):
        await ws.send(json.dumps({"op": "subscribe", "args": list(topics)}))
        assert json.loads(await ws.recv())["success"] is True
    return ws, auth


async def test_private_stream_frames_match_the_fixtures(harness, venue):
    ws, auth = await private_socket(harness)
    try:
        assert_same_shape(auth, fixture_json("docs/ws_auth_0.json"), "auth")
        await ws.send(json.dumps({"op": "ping", "req_id": "test"}))
        assert_same_shape(json.loads(await ws.recv()), fixture_json("docs/ws_auth_4.json"), "pong")
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(43), stop_loss=Decimal("0.95"))
        venue.manual_close("default", SYMBOL)
        frames: dict[str, list[dict[str, Any]]] = {}
        async with asyncio.timeout(5):
            while len(frames.get("position", [])) < 3 or "wallet" not in frames or "execution" not in frames:
                frame = json.loads(await ws.recv())
                frames.setdefault(frame["topic"], []).append(frame)
        for topic, fixture in (("position", "docs/ws_position_1.json"), ("order", "docs/ws_order_1.json"),
                               ("execution", "docs/ws_execution_1.json"), ("wallet", "docs/ws_wallet_1.json")):
            expected = fixture_json(fixture)
            got = frames[topic][-1]
            assert_same_shape({k: v for k, v in got.items() if k != "data"},
                              {k: v for k, v in expected.items() if k != "data"}, topic)
            data = dict(got["data"][0])
            expected_data = dict(expected["data"][0])
            if topic == "order":  # the docs example is an option order; linear orders add createType
                data.pop("createType")
            if topic == "execution":
                data.pop("extraFees"), expected_data.pop("extraFees")
            assert_same_shape(data, expected_data, f"{topic}.data")
        closing = frames["position"][-1]["data"][0]
        assert (closing["size"], closing["side"]) == ("0", "")  # like ws_position_1.json
        assert closing["seq"] > frames["position"][0]["data"][0]["seq"]
    finally:
        await ws.close()


async def test_private_auth_failure_is_answered_like_the_fixture(harness):
    ws, auth = await private_socket(harness, secret="wrong")
    try:
        assert_same_shape(auth, fixture_json("ws_auth_failure.json"), "auth failure")
        assert auth["success"] is False and auth["retCode"] == 10004
    finally:
        await ws.close()


async def test_public_ticker_snapshot_matches_the_fixture(harness):
    async with websockets.connect(f"{harness.config.ws_url}/v5/public/linear") as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": ["tickers.XRPUSDT"]}))
        assert json.loads(await ws.recv())["success"] is True
        snapshot = json.loads(await ws.recv())
        assert_same_shape(snapshot, json.loads(json.dumps(fixture_json("ws_ticker_linear.json"))), "ticker")
        await ws.send(json.dumps({"op": "ping"}))
        assert_same_shape(json.loads(await ws.recv()), fixture_json("docs/ws_auth_2.json"), "public pong")


async def test_public_unsubscribe_and_the_args_limit_per_connection(harness, monkeypatch):
    """Y20: ``unsubscribe`` is answered like ``subscribe`` (``op`` ``unsubscribe``, the ``req_id``); a
    connection whose topics would pass the args-length limit is refused the subscription; unsubscribing a
    topic not held is refused."""
    monkeypatch.setattr(harness.emulator, "public_args_chars", len('["tickers.XRPUSDT"]'))
    opened = harness.emulator.ws_connections["public"]
    async with websockets.connect(f"{harness.config.ws_url}/v5/public/linear") as ws:
        await ws.send(json.dumps({"req_id": "1", "op": "subscribe", "args": ["tickers.XRPUSDT"]}))
        ack = json.loads(await ws.recv())
        assert ack["success"] is True and ack["req_id"] == "1" and ack["op"] == "subscribe"
        assert json.loads(await ws.recv())["topic"] == "tickers.XRPUSDT"
        await ws.send(json.dumps({"req_id": "2", "op": "subscribe", "args": ["tickers.BTCUSDT"]}))
        refused = json.loads(await ws.recv())
        assert refused["success"] is False and refused["req_id"] == "2" and "args length" in refused["ret_msg"]
        await ws.send(json.dumps({"req_id": "3", "op": "unsubscribe", "args": ["tickers.XRPUSDT"]}))
        assert json.loads(await ws.recv()) == {"success": True, "ret_msg": "", "conn_id": ack["conn_id"],
                                               "req_id": "3", "op": "unsubscribe"}
        await ws.send(json.dumps({"req_id": "4", "op": "unsubscribe", "args": ["tickers.XRPUSDT"]}))
        assert json.loads(await ws.recv())["success"] is False
    assert harness.emulator.ws_connections["public"] == opened + 1


# --- fault knobs --------------------------------------------------------------------------------------------


async def test_rest_position_lag_hides_a_fresh_position(conn, venue):
    venue.faults.rest_position_lag_ms = 30_000
    await rest.create_entry(conn, intent())
    snapshot = await rest.fetch_snapshot(conn)
    assert snapshot.positions == []  # REST lags ...
    assert venue.position("default", SYMBOL).contracts == 43  # ... the venue does not
    venue.faults.rest_position_lag_ms = 0
    assert [p.contracts for p in (await rest.fetch_snapshot(conn)).positions] == [43]


async def test_http_error_next_applies_to_the_next_n_calls_only(conn, venue, emulator):
    venue.faults.http_error_status, venue.faults.http_error_next = 500, 2
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await conn.client.private_get_v5_position_list({"category": "linear", "settleCoin": "USDT"})
    assert venue.faults.http_error_next == 0
    await conn.client.private_get_v5_position_list({"category": "linear", "settleCoin": "USDT"})


async def test_minimal_order_response_is_always_minimal(conn, venue):
    venue.faults.minimal_order_response = False  # Bybit answers only ids whatever the knob says
    raw = await rest.create_entry(conn, intent())
    assert set(raw["info"]) == {"orderId", "orderLinkId"}


async def run_private(conn):
    sink = RecordingSink()
    task = asyncio.create_task(stream.run_stream(conn, sink))
    await sink.wait_for(lambda: sink.connected)
    return sink, task


def flats(sink):
    return [e for e in sink.events if isinstance(e, PositionUpdate) and e.contracts == 0]


async def stop_task(task):
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_drop_closing_frames_drops_only_the_flat_position_frame(conn, venue, emulator):
    sink, task = await run_private(conn)
    try:
        venue.faults.drop_closing_frames = 1
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(10))
        venue.manual_close("default", SYMBOL)
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(7))
        await sink.wait_for(lambda: (p := sink.position(SYMBOL)) and p.contracts == 7)
        assert flats(sink) == [] and emulator.shaper.stats["dropped"] >= 1
    finally:
        await stop_task(task)


async def test_duplicate_and_delayed_closing_frames(conn, venue, emulator):
    sink, task = await run_private(conn)
    try:
        venue.faults.duplicate_closing_frames = 1
        venue.faults.delay_closing_frames_ms = 100
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(10))
        venue.manual_close("default", SYMBOL)
        await sink.wait_for(lambda: len(flats(sink)) == 2)
        assert flats(sink)[0].sequence == flats(sink)[1].sequence
        assert emulator.shaper.stats["duplicated"] >= 1 and emulator.shaper.stats["delayed"] >= 1
    finally:
        await stop_task(task)


async def test_stream_delay_drop_duplicate_and_reorder_rates(conn, venue, emulator):
    sink, task = await run_private(conn)
    try:
        before = dict(emulator.shaper.stats)
        venue.faults.stream_delay_ms = 20
        venue.faults.duplicate_rate = 1.0
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(3))
        await sink.wait_for(lambda: (p := sink.position(SYMBOL)) and p.contracts == 3)
        venue.faults.stream_delay_ms, venue.faults.duplicate_rate = 0, 0.0
        venue.faults.reorder_rate = 1.0
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(2))
        await sink.wait_for(lambda: sink.position(SYMBOL).contracts == 5)
        venue.faults.reorder_rate, venue.faults.drop_rate = 0.0, 1.0
        dropped_before = emulator.shaper.stats["dropped"]
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(1))  # 6 contracts: every frame dropped
        await emulator.drain_streams()
        venue.faults.drop_rate = 0.0
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(1))  # 7: delivered after the dropped ones
        await sink.wait_for(lambda: sink.position(SYMBOL).contracts == 7)
        assert emulator.shaper.stats["dropped"] > dropped_before
        assert not [e for e in sink.events if isinstance(e, PositionUpdate) and e.contracts == 6]
        for stat in ("delayed", "duplicated", "reordered"):
            assert emulator.shaper.stats[stat] > before.get(stat, 0), (stat, before, emulator.shaper.stats)
    finally:
        await stop_task(task)


async def test_disconnect_every_ms_drops_private_streams(conn, venue):
    sink, task = await run_private(conn)
    try:
        venue.faults.disconnect_every_ms = 500  # longer than a loaded machine takes to reconnect and log in
        await sink.wait_for(lambda: len(sink.connected) >= 2)
        venue.faults.disconnect_every_ms = 0
        assert sink.connected[1] is True and sink.disconnected
    finally:
        await stop_task(task)


# --- the position's TP / SL as system conditional orders (docs/conformance.md Y1-Y5) -------------------------


async def realtime_rows(conn, **params) -> list[dict[str, Any]]:
    result = await conn.client.private_get_v5_order_realtime({"category": "linear", "settleCoin": "USDT", **params})
    return result["result"]["list"]


async def history_row(conn, order_id: str) -> dict[str, Any]:
    result = await conn.client.private_get_v5_order_history({"category": "linear", "orderId": order_id})
    [row] = result["result"]["list"]
    return row


@pytest.mark.parametrize("side", ["long", "short"])
async def test_position_tpsl_are_listed_as_untriggered_system_orders(conn, venue, side):
    stop, take = ("0.95", "1.1") if side == "long" else ("1.05", "0.9")
    await rest.create_entry(conn, intent(side, stop_loss=stop, take_profit=Decimal(take)))
    rows = {row["stopOrderType"]: row for row in await realtime_rows(conn)}  # the default call: no filter
    assert set(rows) == {"StopLoss", "TakeProfit"}
    closing = "Sell" if side == "long" else "Buy"
    for kind, price in (("StopLoss", stop), ("TakeProfit", take)):
        row = rows[kind]
        assert (row["orderStatus"], row["orderType"], row["side"], row["triggerPrice"], row["qty"]) == (
            "Untriggered", "Market", closing, price, "43")
        assert (row["reduceOnly"], row["closeOnTrigger"], row["orderLinkId"], row["tpslMode"]) == (
            True, True, "", "Full")
    assert (await realtime_rows(conn, orderFilter="StopOrder")) != []

    stop_id = rows["StopLoss"]["orderId"]
    moved = "0.96" if side == "long" else "1.04"
    await conn.client.private_post_v5_position_trading_stop(
        {"category": "linear", "symbol": "XRPUSDT", "stopLoss": moved, "slTriggerBy": "MarkPrice", "tpslMode": "Full",
         "positionIdx": 0})
    venue.manual_close("default", SYMBOL, Decimal(20))
    rows = {row["stopOrderType"]: row for row in await realtime_rows(conn)}
    assert (rows["StopLoss"]["orderId"], rows["StopLoss"]["triggerPrice"]) == (stop_id, moved)  # amended in place
    assert rows["StopLoss"]["qty"] == rows["TakeProfit"]["qty"] == "23"  # follows the position's size

    cancel = await conn.client.private_post_v5_order_cancel(
        {"category": "linear", "symbol": "XRPUSDT", "orderId": stop_id})
    assert_same_shape(cancel, fixture_json("docs/rest_order_cancel_0.json"), "cancel")
    assert cancel["result"] == {"orderId": stop_id, "orderLinkId": ""}
    assert venue.position("default", SYMBOL).stop_loss is None  # cancelling the order removes the position's SL
    cancelled = await history_row(conn, stop_id)
    assert (cancelled["orderStatus"], cancelled["cancelType"]) == ("Deactivated", "CancelByUser")
    with pytest.raises(BybitApiError) as error:
        await conn.client.private_post_v5_order_cancel({"category": "linear", "symbol": "XRPUSDT", "orderId": stop_id})
    assert error.value.ret_code == 110001

    take_id = rows["TakeProfit"]["orderId"]
    venue.manual_close("default", SYMBOL)
    assert await realtime_rows(conn) == []
    cleared = await history_row(conn, take_id)
    assert (cleared["orderStatus"], cleared["cancelType"]) == ("Deactivated", "CancelByTpSlTsClear")


async def test_position_tpsl_orders_are_pushed_on_the_order_topic_and_a_fired_stop_fills_under_its_id(
        harness, conn, venue):
    ws, _ = await private_socket(harness, topics=("order", "execution"))
    executions: list[dict[str, Any]] = []
    try:
        await rest.create_entry(conn, intent(take_profit=Decimal("1.2")))
        row = next(r for r in await realtime_rows(conn) if r["stopOrderType"] == "StopLoss")
        take_id = next(r["orderId"] for r in await realtime_rows(conn) if r["stopOrderType"] == "TakeProfit")

        async def next_tpsl_frame() -> dict[str, Any]:
            async with asyncio.timeout(5):
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["topic"] == "execution":
                        executions.extend(frame["data"])
                        continue
                    for item in frame["data"]:
                        if item["orderId"] == row["orderId"]:
                            return item

        pushed = await next_tpsl_frame()
        assert (pushed["orderStatus"], pushed["stopOrderType"], pushed["createType"], pushed["triggerPrice"]) == (
            "Untriggered", "StopLoss", "CreateByStopLoss", "0.95")
        venue.set_mark_price(SYMBOL, Decimal("0.94"))
        assert (await next_tpsl_frame())["orderStatus"] == "Triggered"
        filled = await next_tpsl_frame()  # the fill is under the system order's own id
        assert (filled["orderStatus"], filled["cumExecQty"], filled["createType"]) == (
            "Filled", "43", "CreateByStopLoss")
        closure = venue.truth.closures[-1]
        assert closure.origin == "stop_loss" and filled["avgPrice"] == str(closure.price)
        [execution] = [e for e in executions if e["createType"] == "CreateByStopLoss"]
        assert (execution["orderId"], execution["execPrice"]) == (row["orderId"], str(closure.price))
        history = await history_row(conn, row["orderId"])
        assert (history["orderStatus"], history["cumExecQty"], history["orderLinkId"]) == ("Filled", "43", "")
        assert await realtime_rows(conn) == []
        other = await history_row(conn, take_id)
        assert (other["orderStatus"], other["cancelType"]) == ("Deactivated", "CancelByOCOTpCanceledBySlTriggered")
    finally:
        await ws.close()


async def test_shuffle_topics_interleaves_a_burst_across_topics_keeping_each_topic_in_order(harness, venue, emulator):
    ws, _ = await private_socket(harness)
    try:
        emulator.burst_topics.clear()
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(10))
        await emulator.drain_streams()
        assert list(emulator.burst_topics) == []  # default: the venue's event order, nothing held
        venue.faults.shuffle_topics = True
        for _ in range(6):
            venue.place_order("default", SYMBOL, "buy", amount=Decimal(10))
            await emulator.drain_streams()
        default = ["order", "execution", "order", "position", "wallet"]  # a market order's burst, unshuffled
        bursts = list(emulator.burst_topics)
        assert len(bursts) == 6 and all(sorted(b) == sorted(default) for b in bursts)
        assert any(b != default for b in bursts)
        sizes = []
        async with asyncio.timeout(5):
            while len(sizes) < 7:
                frame = json.loads(await ws.recv())
                if frame["topic"] == "position":
                    sizes.append(int(frame["data"][0]["size"]))
        assert sizes == [10, 20, 30, 40, 50, 60, 70]  # one topic's frames keep their order
    finally:
        await ws.close()


# --- issue 13 item 10 (docs/conformance.md Y14-Y18) ----------------------------------------------------------


async def read_topics(ws, done, timeout_s: float = 5.0) -> dict[str, list[dict[str, Any]]]:
    """Items by topic until ``done(items)`` holds."""
    items: dict[str, list[dict[str, Any]]] = {}
    async with asyncio.timeout(timeout_s):
        while not done(items):
            frame = json.loads(await ws.recv())
            if "topic" in frame:
                items.setdefault(frame["topic"], []).extend(frame["data"])
    return items


@pytest.mark.parametrize("side", ["Buy", "Sell"])
async def test_a_market_order_fills_in_several_executions_and_its_ioc_rest_is_cancelled(harness, conn, venue,
                                                                                       side):
    """Y14: create-order.mdx (a market order is an IOC limit order, "If there is insufficient liquidity, the
    order will be cancelled"); enum.mdx ("Cancelled: In derivatives, orders with this status may have an
    executed qty"); each execution's leavesQty as of that execution."""
    venue.faults.market_fill_parts = 3
    venue.faults.market_fill_ratio = 0.5
    ws, _ = await private_socket(harness, topics=("order", "execution"))
    try:
        venue.place_order("default", SYMBOL, side.lower(), amount=Decimal(100), client_order_id=f"parts-{side}")
        items = await read_topics(ws, lambda i: any(o["orderStatus"] == "Cancelled" for o in i.get("order", []))
                                  and len(i.get("execution", [])) == 3)
    finally:
        await ws.close()
    orders = [(o["orderStatus"], o["cumExecQty"], o["leavesQty"]) for o in items["order"]]
    assert orders == [("New", "0", "100"), ("PartiallyFilled", "16.6", "83.4"), ("PartiallyFilled", "33.2", "66.8"),
                      ("PartiallyFilled", "50", "50"), ("Cancelled", "50", "0")]
    assert items["order"][-1]["rejectReason"] == "EC_NoEnoughQtyToFill"
    executions = [(e["execQty"], e["leavesQty"], e["execType"]) for e in items["execution"]]
    assert executions == [("16.6", "83.4", "Trade"), ("16.6", "66.8", "Trade"), ("16.8", "50", "Trade")]
    decoded = [conn.decoder.decode(json.dumps({"topic": "execution", "data": [e]}))[0] for e in items["execution"]]
    assert [(u.order.filled, u.order.status) for u in decoded] == [
        (Decimal("16.6"), "open"), (Decimal("33.2"), "open"), (Decimal("50"), "open")]  # never more than filled


async def test_funding_is_a_wallet_message_only(harness, venue, emulator):
    """Y15: funding moves the wallet; no position, order or execution message (a ``Funding`` execution is
    listed by /v5/execution/list per enum.mdx ``execType``, not modelled)."""
    venue.place_order("default", SYMBOL, "sell", amount=Decimal(10))
    ws, _ = await private_socket(harness)
    try:
        await emulator.drain_streams()
        [received] = venue.settle_funding(SYMBOL, Decimal("0.0001")).values()
        items = await read_topics(ws, lambda i: "wallet" in i)
    finally:
        await ws.close()
    assert set(items) == {"wallet"} and received > 0
    assert Decimal(items["wallet"][0]["coin"][0]["walletBalance"]) == venue.wallet("default")


@pytest.fixture
async def clocked():
    """A venue of its own on a fake clock (its seconds, bans and connection timeouts pass when the test says)."""
    from framework_bybit.emulator import BybitHarness

    clock = FakeClock()
    async with BybitHarness({"seed": 5, "clock": clock}) as h:
        h.clock = clock
        yield h


async def test_private_answers_carry_the_endpoint_s_limit_headers_and_10006_over_it(clocked):
    """Y16: "Every request to the API returns" ``X-Bapi-Limit``, ``X-Bapi-Limit-Status`` (remaining) and
    ``X-Bapi-Limit-Reset-Timestamp`` (now, or when the limit resets once exceeded); the linear limits of the
    table (``/v5/position/list`` 50/s); over it retCode 10006 "Too many visits!"."""
    clocked.venue.faults.rate_limits = True
    now = clocked.venue.now()

    async def positions() -> tuple[int, dict[str, Any], dict[str, str]]:
        query = "category=linear&settleCoin=USDT"
        key, secret = clocked.config.api_key.get_secret_value(), clocked.config.api_secret.get_secret_value()
        ts = str(int(time.time() * 1000))
        sign = hmac.new(secret.encode(), f"{ts}{key}5000{query}".encode(), hashlib.sha256).hexdigest()
        headers = {"X-BAPI-API-KEY": key, "X-BAPI-TIMESTAMP": ts, "X-BAPI-RECV-WINDOW": "5000", "X-BAPI-SIGN": sign}
        async with aiohttp.ClientSession() as session, session.get(
                f"{clocked.config.rest_url}/v5/position/list?{query}", headers=headers) as response:
            return response.status, await response.json(), dict(response.headers)

    status, body, headers = await positions()
    assert (status, body["retCode"]) == (200, 0)
    assert (headers["X-Bapi-Limit"], headers["X-Bapi-Limit-Status"]) == ("50", "49")
    assert abs(int(headers["X-Bapi-Limit-Reset-Timestamp"]) - now) < 100
    for _ in range(49):
        await positions()
    status, body, headers = await positions()
    assert (body["retCode"], body["retMsg"], headers["X-Bapi-Limit-Status"]) == (10006, "Too many visits!", "0")
    assert int(headers["X-Bapi-Limit-Reset-Timestamp"]) == now - now % 1000 + 1000
    clocked.clock.advance(1_000)
    assert (await positions())[1]["retCode"] == 0


async def test_too_many_requests_from_the_ip_is_403_and_a_ten_minute_ban(clocked):
    """Y16: "If you encounter the error "403, access too frequent" … wait for at least 10 minutes. The ban will
    be lifted automatically"; the driver takes it as RateLimited with that wait (the core caps its pause)."""
    from framework.errors import RateLimited
    from framework.plugins import drivers, load_plugins

    pm = load_plugins(["bybit"])
    drv = drivers(pm)["bybit"]
    await drv.connect(clocked.config)
    try:
        clocked.venue.faults.rate_limits = True
        clocked.emulator.ip_requests.limit = clocked.emulator.ip_requests.used  # the next request is one too many
        with pytest.raises(RateLimited) as refused:
            await drv.fetch_snapshot()
        assert (refused.value.code, refused.value.retry_after_ms) == (403, 600_000)
        assert "HTTP 403: 403, access too frequent" in str(refused.value)  # what the venue said, for the alert
        assert 0 < drv.paused_for_ms() <= 60_000  # the core's cap
        clocked.clock.advance(598_000)
        assert clocked.emulator.ip_ban.active(clocked.venue.now())
        clocked.clock.advance(3_000)
        assert not clocked.emulator.ip_ban.active(clocked.venue.now())
    finally:
        await drv.disconnect()


async def _silent_private_socket(clocked, query: str = ""):
    ws = await websockets.connect(f"{clocked.config.ws_url}/v5/private{query}")
    await ws.send(stream.auth_message(clocked.config.api_key.get_secret_value(),
                                      clocked.config.api_secret.get_secret_value(), int(time.time() * 1000) + 10_000))
    assert json.loads(await ws.recv())["success"] is True
    return ws


async def _looks(emulator, count: int = 2) -> None:
    """Let the emulator look at the venue's clock ``count`` times."""
    async with asyncio.timeout(5):
        for _ in range(count):
            await emulator.clock_polled()


@pytest.mark.parametrize(("query", "alive_ms"), [("", 600_000), ("?max_active_time=30s", 30_000),
                                                 ("?max_active_time=1m", 60_000)])
async def test_a_silent_private_connection_is_cut_after_its_active_time(clocked, query, alive_ms):
    """Y17: "if there is no "ping-pong" and no stream data sent from server end, the connection will be cut off
    after 10 minutes"; ``max_active_time`` (30 s … 600 s) sets it."""
    ws = await _silent_private_socket(clocked, query)
    try:
        clocked.clock.advance(alive_ms - 1_000)
        await _looks(clocked.emulator)
        assert ws.state is websockets.protocol.State.OPEN
        await ws.send(json.dumps({"op": "ping"}))  # ping-pong: the time starts again
        assert json.loads(await ws.recv())["op"] == "pong"
        clocked.clock.advance(alive_ms - 1_000)
        await _looks(clocked.emulator)
        assert ws.state is websockets.protocol.State.OPEN
        clocked.clock.advance(2_000)
        async with asyncio.timeout(5):
            await ws.wait_closed()
        assert ws.close_code == 1000
    finally:
        await ws.close()


async def test_the_driver_s_pings_keep_its_private_stream_for_an_hour(clocked):
    """Y17, driver side: ``{"op":"ping"}`` every ``ping_interval_s`` (20 s by default, "we recommend that you
    send the ping heartbeat packet every 20 seconds") keeps the one connection alive."""
    config = clocked.config.model_copy(update={"options": {**clocked.config.options, **TEST_OPTIONS}})
    conn = await rest.connect(config)
    sink = RecordingSink()
    task = asyncio.create_task(stream.run_stream(conn, sink))
    try:
        await sink.wait_for(lambda: sink.connected == [False])
        for _ in range(6):  # 6 × 9.5 minutes of venue time, a ping received after each step
            pings = clocked.emulator.ws_ops["ping"]
            clocked.clock.advance(570_000)
            await clocked.emulator.wait_for_ws_ops("ping", pings + 1)
            await _looks(clocked.emulator)
        assert sink.connected == [False] and sink.disconnected == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await rest.disconnect(conn)
