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
from bybit_helpers import SYMBOL, RecordingSink, assert_same_shape, fixture_json, intent
from framework_bybit import rest, stream
from framework_bybit.rest import BybitApiError
from pydantic import SecretStr

from framework.models import PositionUpdate


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
        "orderLinkId": entry.client_order_id, "stopLoss": "0.95", "tpslMode": "Full"})
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
        {"category": "linear", "symbol": "XRPUSDT", "stopLoss": "0.9", "tpslMode": "Full", "positionIdx": 0})
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


async def test_cancel_a_resting_conditional_order(conn, venue):
    await rest.create_entry(conn, intent())
    placed = await conn.client.private_post_v5_order_create({
        "category": "linear", "symbol": "XRPUSDT", "side": "Sell", "orderType": "Market", "qty": "43",
        "triggerPrice": "0.9", "triggerDirection": 2, "reduceOnly": True})
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
            {"category": "linear", "symbol": "XRPUSDT", "takeProfit": "1.2", "tpslMode": "Full", "positionIdx": 0})
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
    """Y15: ``unsubscribe`` is answered like ``subscribe`` (``op`` ``unsubscribe``, the ``req_id``); a
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
        {"category": "linear", "symbol": "XRPUSDT", "stopLoss": moved, "tpslMode": "Full", "positionIdx": 0})
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
