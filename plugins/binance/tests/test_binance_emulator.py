"""The wire façade: Binance paths, signatures, error codes, payload shapes (against the fixtures), faults."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from decimal import Decimal
from urllib.parse import urlencode

import aiohttp
import pytest
import websockets
from binance_helpers import SYMBOL, TEST_OPTIONS, Sink, below, fixture_json, intent
from pydantic import SecretStr

from framework.errors import VenueError
from framework.models import MarkPrice, PositionUpdate, now_ms
from framework.plugins import drivers, load_plugins
from framework.venue import EmulatorHarness
from framework.venue.harness import FakeClock


def same_shape(emitted, fixture, path="$", exact=True):
    """Same keys (``exact``) or a superset of them, and the same JSON value types, recursively."""
    if isinstance(fixture, dict):
        assert isinstance(emitted, dict), path
        missing = set(fixture) - set(emitted)
        assert not missing, f"{path}: missing {sorted(missing)}"
        if exact:
            assert set(emitted) == set(fixture), f"{path}: extra {sorted(set(emitted) - set(fixture))}"
        for key, value in fixture.items():
            same_shape(emitted[key], value, f"{path}.{key}", exact)
    elif isinstance(fixture, list):
        assert isinstance(emitted, list), path
        if fixture and emitted:
            same_shape(emitted[0], fixture[0], f"{path}[0]", exact)
    else:
        assert type(emitted) is type(fixture), f"{path}: {type(emitted).__name__} != {type(fixture).__name__}"


class Rest:
    """A hand-signed Binance client, to see the wire itself."""

    def __init__(self, harness):
        self.base = harness.emulator.rest_url
        self.key = harness.config.api_key.get_secret_value()
        self.secret = harness.config.api_secret.get_secret_value()

    async def call(self, method, path, params=None, *, secret=None, key=None, timestamp=None, signed=True):
        params = dict(params or {})
        headers = {"X-MBX-APIKEY": key or self.key}
        if signed:
            params.update(timestamp=timestamp or now_ms(), recvWindow=5000)
            query = urlencode(params)
            signature = hmac.new((secret or self.secret).encode(), query.encode(), hashlib.sha256).hexdigest()
            query += f"&signature={signature}"
        else:
            query = urlencode(params)
        async with aiohttp.ClientSession() as session:
            if method in ("GET", "DELETE"):
                response = await session.request(method, f"{self.base}{path}?{query}", headers=headers)
            else:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                response = await session.request(method, f"{self.base}{path}", data=query, headers=headers)
            self.headers = dict(response.headers)
            return response.status, await response.json()


@pytest.fixture
def rest(harness):
    return Rest(harness)


async def test_public_exchange_info_matches_the_fixture(rest, harness):
    status, body = await rest.call("GET", "/fapi/v1/exchangeInfo", signed=False)
    fixture = fixture_json("http_json/http_futures_market_exchange_info.json")
    assert status == 200
    same_shape(body["symbols"][0], fixture["symbols"][0])
    assert {s["symbol"] for s in body["symbols"]} == {"XRPUSDT", "BTCUSDT"}
    assert "STOP_MARKET" in body["symbols"][0]["orderTypes"]


async def test_wrong_secret_key_and_timestamp_get_binance_errors(rest):
    assert await rest.call("GET", "/fapi/v3/positionRisk", secret="wrong") == (
        400, {"code": -1022, "msg": "Signature for this request is not valid."})
    status, body = await rest.call("GET", "/fapi/v3/positionRisk", key="nobody")
    assert (status, body["code"]) == (401, -2015)
    status, body = await rest.call("GET", "/fapi/v3/positionRisk", timestamp=now_ms() - 60_000)
    assert (status, body["code"]) == (400, -1021)


async def test_wrong_secret_is_refused_at_connect(harness):
    pm = load_plugins(["binance"])
    drv = drivers(pm)["binance"]
    bad = harness.config.model_copy(update={"api_secret": SecretStr("not-the-secret"), "options": dict(TEST_OPTIONS)})
    with pytest.raises(VenueError) as error:
        await drv.connect(bad)
    assert error.value.code == -1022 and "not-the-secret" not in repr(error.value) + str(error.value)


async def test_conditional_type_on_the_order_endpoint_is_4120(rest, venue):
    status, body = await rest.call("POST", "/fapi/v1/order", {
        "symbol": "XRPUSDT", "side": "SELL", "type": "STOP_MARKET", "stopPrice": str(below(venue)),
        "closePosition": "true"})
    assert (status, body["code"]) == (400, -4120)


async def test_rest_payload_shapes_match_the_fixtures(rest, venue):
    status, order = await rest.call("POST", "/fapi/v1/order", {
        "symbol": "XRPUSDT", "side": "BUY", "type": "MARKET", "quantity": "10", "newOrderRespType": "RESULT"})
    assert status == 200
    same_shape(order, fixture_json("http_json/order_response.json"))
    assert (order["status"], order["executedQty"]) == ("FILLED", "10")
    _, positions = await rest.call("GET", "/fapi/v3/positionRisk")
    same_shape(positions, fixture_json("http_json/position_risk_v3.json"))  # v3: no leverage / marginType
    assert positions[0]["positionAmt"] == "10"
    _, positions_v2 = await rest.call("GET", "/fapi/v2/positionRisk")
    same_shape(positions_v2, fixture_json("http_json/position_risk.json"))
    status, algo = await rest.call("POST", "/fapi/v1/algoOrder", {
        "algoType": "CONDITIONAL", "symbol": "XRPUSDT", "side": "SELL", "type": "STOP_MARKET",
        "triggerPrice": str(below(venue)), "closePosition": "true", "workingType": "MARK_PRICE"})
    assert status == 200 and algo["algoStatus"] == "NEW"
    _, open_algo = await rest.call("GET", "/fapi/v1/openAlgoOrders")
    # documented Algo Order API fields beyond the fixture (closePosition, actualOrderId...) are allowed
    same_shape(open_algo, fixture_json("http_json/open_algo_orders.json"), exact=False)
    _, account = await rest.call("GET", "/fapi/v2/account")
    same_shape(account, fixture_json("http_json/account_info_v2.json"), exact=False)
    assert await rest.call("POST", "/fapi/v1/algoOrder", {
        "algoType": "CONDITIONAL", "symbol": "XRPUSDT", "side": "SELL", "type": "STOP_MARKET",
        "triggerPrice": str(below(venue, "3")), "closePosition": "true"}) == (400, {
            "code": -4130,
            "msg": "An open stop or take profit order with GTE and closePosition in the direction is existing."})
    status, cancelled = await rest.call("DELETE", "/fapi/v1/algoOrder", {"algoId": algo["algoId"]})
    assert (status, cancelled["code"], cancelled["msg"]) == (200, "200", "success")
    status, again = await rest.call("DELETE", "/fapi/v1/algoOrder", {"algoId": algo["algoId"]})
    assert (status, again["code"]) == (400, -2011)
    status, missing = await rest.call("GET", "/fapi/v1/order", {"symbol": "XRPUSDT", "orderId": 5})
    assert (status, missing["code"]) == (400, -2013)


def _algo_stop(side: str, trigger, **extra) -> dict:
    return {"algoType": "CONDITIONAL", "symbol": "XRPUSDT", "side": side, "type": "STOP_MARKET",
            "triggerPrice": str(trigger), "workingType": "MARK_PRICE", **extra}


@pytest.mark.parametrize("side", ["long", "short"])
async def test_close_position_stop_needs_an_open_position_and_expires_with_it(rest, venue, side):
    """B7: no position → -4509; when the position closes the system expires the close-position order."""
    close, trigger = ("SELL", below(venue)) if side == "long" else ("BUY", below(venue, "-2"))
    status, body = await rest.call("POST", "/fapi/v1/algoOrder", _algo_stop(close, trigger, closePosition="true"))
    assert (status, body["code"]) == (400, -4509)
    assert venue.orders("default", SYMBOL) == []
    venue.place_order("default", SYMBOL, "buy" if side == "long" else "sell", amount=Decimal(10))
    status, algo = await rest.call("POST", "/fapi/v1/algoOrder", _algo_stop(close, trigger, closePosition="true"))
    assert status == 200 and algo["algoStatus"] == "NEW"
    venue.manual_close("default", SYMBOL)
    _, fetched = await rest.call("GET", "/fapi/v1/algoOrder", {"algoId": algo["algoId"]})
    assert fetched["algoStatus"] == "EXPIRED"
    assert (await rest.call("GET", "/fapi/v1/openAlgoOrders"))[1] == []


@pytest.mark.parametrize("side", ["long", "short"])
async def test_reduce_only_stop_on_the_wrong_side_or_flat_is_2022(rest, venue, side):
    """B8 (assumed for algo orders): a reduce-only stop that could not reduce anything is refused."""
    close, trigger = ("SELL", below(venue)) if side == "long" else ("BUY", below(venue, "-2"))
    status, body = await rest.call("POST", "/fapi/v1/algoOrder",
                                   _algo_stop(close, trigger, quantity="10", reduceOnly="true"))
    assert (status, body["code"]) == (400, -2022)
    venue.place_order("default", SYMBOL, "sell" if side == "long" else "buy", amount=Decimal(10))  # the other side
    status, body = await rest.call("POST", "/fapi/v1/algoOrder",
                                   _algo_stop(close, trigger, quantity="10", reduceOnly="true"))
    assert (status, body["code"]) == (400, -2022)


async def test_client_order_id_is_unique_among_open_orders_only(rest, venue):
    """B9: -4116 for the id of an OPEN order; a filled or cancelled order's id may be reused; -4015 only
    for an id that breaks the pattern."""
    market = {"symbol": "XRPUSDT", "side": "BUY", "type": "MARKET", "quantity": "10",
              "newClientOrderId": "fw-e-reused", "newOrderRespType": "RESULT"}
    first = await rest.call("POST", "/fapi/v1/order", market)
    second = await rest.call("POST", "/fapi/v1/order", market)  # the first one filled: its id is free again
    assert (first[0], second[0]) == (200, 200) and first[1]["orderId"] != second[1]["orderId"]
    _, fetched = await rest.call("GET", "/fapi/v1/order", {"symbol": "XRPUSDT", "origClientOrderId": "fw-e-reused"})
    assert fetched["orderId"] == second[1]["orderId"]  # the id names its newest order
    stop = _algo_stop("SELL", below(venue), closePosition="true", clientAlgoId="fw-s-reused")
    status, algo = await rest.call("POST", "/fapi/v1/algoOrder", stop)
    assert status == 200
    lower = {**stop, "triggerPrice": str(below(venue, "3")), "closePosition": "false", "quantity": "10",
             "reduceOnly": "true"}
    assert await rest.call("POST", "/fapi/v1/algoOrder", lower) == (
        400, {"code": -4116, "msg": "clientOrderId is duplicated."})
    await rest.call("DELETE", "/fapi/v1/algoOrder", {"algoId": algo["algoId"]})
    assert (await rest.call("POST", "/fapi/v1/algoOrder", lower))[0] == 200  # cancelled: free again
    for bad in ("has space", "x" * 37, "star*"):
        status, body = await rest.call("POST", "/fapi/v1/order", {**market, "newClientOrderId": bad})
        assert (status, body["code"]) == (400, -4015), bad


@pytest.mark.parametrize("side", ["BUY", "SELL"])
async def test_min_notional_and_precision_follow_exchange_info(rest, venue, side):
    """B10: -4164 under MIN_NOTIONAL unless reduce-only; -1111 off the LOT_SIZE step; -4014 off the tick.
    The limits are the ones exchangeInfo publishes."""
    _, info = await rest.call("GET", "/fapi/v1/exchangeInfo", signed=False)
    filters = {f["filterType"]: f for f in next(s for s in info["symbols"] if s["symbol"] == "XRPUSDT")["filters"]}
    min_notional, step = Decimal(filters["MIN_NOTIONAL"]["notional"]), Decimal(filters["LOT_SIZE"]["stepSize"])
    tick = Decimal(filters["PRICE_FILTER"]["tickSize"])
    mark = venue.mark_price(SYMBOL)
    small = ((min_notional / mark) // step) * step  # the largest size under the minimum notional
    big = small + step
    order = {"symbol": "XRPUSDT", "side": side, "type": "MARKET", "newOrderRespType": "RESULT"}
    status, body = await rest.call("POST", "/fapi/v1/order", {**order, "quantity": str(small)})
    assert (status, body["code"]) == (400, -4164) and "unless you choose reduce only" in body["msg"]
    assert (await rest.call("POST", "/fapi/v1/order", {**order, "quantity": str(big)}))[0] == 200
    closing = {**order, "side": "SELL" if side == "BUY" else "BUY", "reduceOnly": "true", "quantity": str(small)}
    assert (await rest.call("POST", "/fapi/v1/order", closing))[0] == 200  # reduce-only is exempt
    status, body = await rest.call("POST", "/fapi/v1/order", {**order, "quantity": str(big + step / 2)})
    assert (status, body["code"]) == (400, -1111)
    off_tick = below(venue) + tick / 2 if side == "BUY" else below(venue, "-2") + tick / 2
    stop = _algo_stop("SELL" if side == "BUY" else "BUY", off_tick, quantity="10", reduceOnly="true")
    status, body = await rest.call("POST", "/fapi/v1/algoOrder", stop)
    assert (status, body["code"]) == (400, -4014)


@pytest.mark.parametrize("resp_type", ["ACK", None])
async def test_ack_answer_is_the_full_order_before_its_fill(rest, venue, resp_type):
    """B11: ``newOrderRespType=ACK`` (Binance's default) answers the full order as accepted: status NEW,
    executedQty 0, though the market order has filled."""
    params = {"symbol": "XRPUSDT", "side": "BUY", "type": "MARKET", "quantity": "10"}
    status, body = await rest.call("POST", "/fapi/v1/order", {**params, **({"newOrderRespType": resp_type}
                                                                           if resp_type else {})})
    assert status == 200
    same_shape(body, fixture_json("http_json/order_response.json"))
    assert (body["status"], body["executedQty"], body["avgPrice"], body["origQty"]) == ("NEW", "0", "0", "10")
    assert venue.get_order("default", SYMBOL, order_id=str(body["orderId"])).status == "filled"


async def test_minimal_order_response_fault_answers_the_ack_form_to_result(rest, venue):
    venue.faults.minimal_order_response = True
    status, body = await rest.call("POST", "/fapi/v1/order", {
        "symbol": "XRPUSDT", "side": "BUY", "type": "MARKET", "quantity": "10", "newOrderRespType": "RESULT"})
    assert status == 200 and (body["status"], body["executedQty"]) == ("NEW", "0")


async def test_http_error_fault_and_rate_limit(rest, venue, harness):
    venue.faults.http_error_status = 429
    venue.faults.http_error_next = 2
    assert (await rest.call("GET", "/fapi/v1/time", signed=False))[1]["code"] == -1003
    status, _ = await rest.call("GET", "/fapi/v1/time", signed=False)
    assert status == 429
    assert (await rest.call("GET", "/fapi/v1/time", signed=False))[0] == 200
    assert harness.emulator.rest_calls["GET /fapi/v1/time"] >= 3


async def test_rest_position_lag(rest, venue):
    venue.faults.rest_position_lag_ms = 30_000
    venue.place_order("default", SYMBOL, "buy", amount=Decimal(3))
    assert (await rest.call("GET", "/fapi/v3/positionRisk"))[1] == []
    venue.faults.rest_position_lag_ms = 0
    assert (await rest.call("GET", "/fapi/v3/positionRisk"))[1][0]["positionAmt"] == "3"


class Frames(list):
    """The decoded frames read so far from one socket."""

    def __init__(self, ws) -> None:
        super().__init__()
        self.ws = ws

    async def until(self, predicate, timeout_s: float = 5.0) -> None:
        """Read frames until ``predicate()`` holds (a generous bound, no sleeps)."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.append(json.loads(await self.ws.recv()))


async def test_user_stream_frames_match_the_fixtures(rest, venue, harness):
    _, answer = await rest.call("POST", "/fapi/v1/listenKey", signed=False)
    async with websockets.connect(f"{harness.emulator.ws_url}/private/ws?listenKey={answer['listenKey']}") as ws:
        frames = Frames(ws)
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(10))
        stop = venue.place_order("default", SYMBOL, "sell", "stop_market", close_position=True,
                                 trigger_price=below(venue), client_order_id="fw-s-wire")
        tp = venue.place_order("default", SYMBOL, "sell", "take_profit_market", amount=Decimal(10),
                               reduce_only=True, trigger_price=below(venue, "-5"))
        venue.cancel_order("default", SYMBOL, order_id=tp.id)
        venue.set_mark_price(SYMBOL, stop.trigger_price - Decimal("0.0001"))
        await frames.until(lambda: any(f["e"] == "ACCOUNT_UPDATE" and f["a"]["P"][0]["pa"] == "0" for f in frames))
        harness.emulator.expire_listen_keys()
        await frames.until(lambda: frames[-1]["e"] == "listenKeyExpired")
    by_kind: dict[str, list[dict]] = {}
    for f in frames:
        by_kind.setdefault(f["e"], []).append(f)
    for update in by_kind["ACCOUNT_UPDATE"]:
        same_shape(update, fixture_json("user_data_json/account_update.json"))
    for update in by_kind["ORDER_TRADE_UPDATE"]:  # B5: a bare object with the keys of a 2026 capture
        same_shape(update, fixture_json("user_data_json/order_update_new_private_ws_capture.json"))
    for update in by_kind["ALGO_UPDATE"]:
        same_shape(update, fixture_json("user_data_json/algo_update_new.json"))
    for lite in by_kind["TRADE_LITE"]:
        same_shape(lite, fixture_json("user_data_json/trade_lite.json"))
    algo = [(f["o"]["aid"], f["o"]["X"], f["o"]["ai"]) for f in by_kind["ALGO_UPDATE"]]
    stop_states = [(x, ai) for aid, x, ai in algo if aid == int(stop.id)]
    assert [x for x, _ in stop_states] == ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]
    spawned = stop_states[2][1]
    assert spawned and spawned == stop_states[3][1]
    assert [x for aid, x, _ in algo if aid == int(tp.id)] == ["NEW", "CANCELED"]
    close_fill = [
        f["o"] for f in by_kind["ORDER_TRADE_UPDATE"] if str(f["o"]["i"]) == spawned and f["o"]["X"] == "FILLED"
    ]
    assert close_fill and (close_fill[0]["ot"], close_fill[0]["S"], close_fill[0]["R"]) == ("STOP_MARKET", "SELL", True)
    times = [f["T"] for f in by_kind["ACCOUNT_UPDATE"]]
    assert times == sorted(set(times))  # T strictly increasing
    (expired,) = by_kind["listenKeyExpired"]
    assert isinstance(expired["E"], str) and expired["listenKey"] == answer["listenKey"]


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_fill_is_trade_lite_then_account_update_then_order_update_with_one_t(rest, venue, harness, side):
    """B4: on a fill Binance sends TRADE_LITE, ACCOUNT_UPDATE, ORDER_TRADE_UPDATE; the last two share T.
    Checked for an entry and for the close a stop's trigger spawns."""
    _, answer = await rest.call("POST", "/fapi/v1/listenKey", signed=False)
    async with websockets.connect(f"{harness.emulator.ws_url}/private/ws?listenKey={answer['listenKey']}") as ws:
        frames = Frames(ws)
        entry = venue.place_order("default", SYMBOL, "buy" if side == "long" else "sell", amount=Decimal(10))
        trigger = below(venue) if side == "long" else below(venue, "-2")
        stop = venue.place_order("default", SYMBOL, "sell" if side == "long" else "buy", "stop_market",
                                 close_position=True, trigger_price=trigger)
        venue.set_mark_price(SYMBOL, trigger + (Decimal("-0.0001") if side == "long" else Decimal("0.0001")))
        await frames.until(lambda: any(f["e"] == "ACCOUNT_UPDATE" and f["a"]["P"][0]["pa"] == "0" for f in frames))
        await frames.until(lambda: any(f["e"] == "ORDER_TRADE_UPDATE" and f["o"]["X"] == "FILLED"
                                  and f["o"]["ot"] == "STOP_MARKET" for f in frames))
    close_id = venue.get_order("default", SYMBOL, order_id=stop.id).triggered_order_id
    for order_id in (entry.id, close_id):
        kinds = [
            (i, f["e"]) for i, f in enumerate(frames)
            if (f["e"] == "TRADE_LITE" and str(f["i"]) == order_id)
            or (f["e"] == "ORDER_TRADE_UPDATE" and str(f["o"]["i"]) == order_id and f["o"]["X"] == "FILLED")
        ]
        (lite_at, _), (update_at, _) = kinds
        assert [k for _, k in kinds] == ["TRADE_LITE", "ORDER_TRADE_UPDATE"]
        between = [f for f in frames[lite_at + 1:update_at] if f["e"] == "ACCOUNT_UPDATE"]
        assert len(between) == 1, "exactly one ACCOUNT_UPDATE between TRADE_LITE and the order's fill"
        assert between[0]["T"] == frames[update_at]["T"] and between[0]["E"] == frames[update_at]["E"]
        lite, update = frames[lite_at], frames[update_at]["o"]
        assert (lite["l"], lite["L"]) == (update["l"], update["L"])


async def test_mark_price_streams(venue, harness):
    fixture = fixture_json("market_data_json/mark_price_stream.json")
    base = f"{harness.emulator.ws_url}/market"
    async with websockets.connect(f"{base}/ws/xrpusdt@markPrice@1s") as single, \
            websockets.connect(f"{base}/stream?streams=xrpusdt@markPrice@1s") as combined:
        first = json.loads(await asyncio.wait_for(single.recv(), 5))
        same_shape(first, fixture)
        wrapped = json.loads(await asyncio.wait_for(combined.recv(), 5))
        same_shape(wrapped["data"], fixture)
        venue.set_mark_price(SYMBOL, Decimal("1.2345"))
        assert json.loads(await asyncio.wait_for(single.recv(), 5))["p"] == "1.2345"


async def test_market_socket_subscribe_unsubscribe_and_its_limits(venue, harness, monkeypatch):
    """B26: a bare ``/market/ws`` takes ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` method frames,
    each answered ``{"result": ..., "id": N}``; past the streams-per-connection limit a SUBSCRIBE is refused
    with an error naming its id; more than 10 incoming messages in a second close the connection."""
    monkeypatch.setattr(harness.emulator, "market_streams_per_connection", 1)
    async with websockets.connect(f"{harness.emulator.ws_url}/market/ws") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["xrpusdt@markPrice@1s"], "id": 1}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"result": None, "id": 1}
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["e"] == "markPriceUpdate"
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s"], "id": 2}))
        refused = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert refused["id"] == 2 and refused["code"] == 2 and "too many streams" in refused["msg"]
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"result": ["xrpusdt@markPrice@1s"], "id": 3}
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["xrpusdt@markPrice@1s"], "id": 4}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"result": None, "id": 4}
        venue.set_mark_price(SYMBOL, Decimal("1.2345"))
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 5}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"result": [], "id": 5}  # no tick came first
        for n in range(6, 12):  # 11 messages within a second in all
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": n}))
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008


async def assert_silent(ws) -> None:
    """Nothing was sent on ``ws``: a pong comes after every frame sent before it, and none is queued."""
    await asyncio.wait_for(await ws.ping(), 5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.05)


async def test_private_stream_url_forms_and_the_events_allow_list(rest, venue, harness):
    """B1/B3: ``/private/ws?listenKey=K`` (every event), ``&events=`` (only those named), and the
    ``/private/ws/<K>`` path form (assumed to work, modelled as working)."""
    _, answer = await rest.call("POST", "/fapi/v1/listenKey", signed=False)
    key, base = answer["listenKey"], f"{harness.emulator.ws_url}/private/ws"
    async with websockets.connect(f"{base}?listenKey={key}") as everything, \
            websockets.connect(f"{base}/{key}") as path_form, \
            websockets.connect(f"{base}?listenKey={key}&events=ORDER_TRADE_UPDATE") as orders_only:
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(10))
        for ws in (everything, path_form):
            kinds = []
            async with asyncio.timeout(5):
                while "ACCOUNT_UPDATE" not in kinds:
                    kinds.append(json.loads(await ws.recv())["e"])
        kinds = []
        async with asyncio.timeout(5):
            while kinds.count("ORDER_TRADE_UPDATE") < 2:  # NEW, then the fill
                kinds.append(json.loads(await orders_only.recv())["e"])
        assert set(kinds) == {"ORDER_TRADE_UPDATE"}
        harness.emulator.expire_listen_keys()
        async with asyncio.timeout(5):
            while json.loads(await everything.recv())["e"] != "listenKeyExpired":
                pass
        await assert_silent(orders_only)  # listenKeyExpired was not named: not delivered (B1 source)


async def test_legacy_paths_complete_the_handshake_and_stay_silent(rest, venue, harness):
    """B2: since 2026-04-23 ``/ws/...`` and ``/stream?...`` open but carry no user or market data."""
    _, answer = await rest.call("POST", "/fapi/v1/listenKey", signed=False)
    key, base = answer["listenKey"], harness.emulator.ws_url
    async with websockets.connect(f"{base}/ws/{key}") as old_user, \
            websockets.connect(f"{base}/ws/xrpusdt@markPrice@1s") as old_single, \
            websockets.connect(f"{base}/stream?streams=xrpusdt@markPrice@1s") as old_combined, \
            websockets.connect(f"{base}/private/ws?listenKey={key}") as user, \
            websockets.connect(f"{base}/market/ws/xrpusdt@markPrice@1s") as marks:
        await asyncio.wait_for(marks.recv(), 5)  # the first tick on connect
        venue.place_order("default", SYMBOL, "buy", amount=Decimal(10))
        venue.set_mark_price(SYMBOL, Decimal("1.2001"))
        async with asyncio.timeout(5):
            while json.loads(await user.recv())["e"] != "ACCOUNT_UPDATE":
                pass
            while json.loads(await marks.recv())["p"] != "1.2001":
                pass
        for ws in (old_user, old_single, old_combined):
            await assert_silent(ws)


@pytest.fixture
async def private_stream(harness, venue):
    """A fresh driver and its private stream (this module's faults must not leak into other modules)."""
    pm = load_plugins(["binance"])
    drv = drivers(pm)["binance"]
    await drv.connect(harness.config.model_copy(update={"options": dict(TEST_OPTIONS)}))
    sink = Sink()
    task = asyncio.create_task(drv.run_stream(sink))
    await sink.wait_for(lambda: sink.connected == [False])
    yield drv, sink
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await drv.disconnect()


async def test_stream_reconnects_after_expiry_disconnect_and_refused_keepalive(private_stream, harness):
    _, sink = private_stream
    harness.emulator.expire_listen_keys()
    await sink.wait_for(lambda: sink.connected[-1:] == [True] and len(sink.connected) == 2)
    await harness.emulator.disconnect_streams()
    await sink.wait_for(lambda: len(sink.connected) == 3)
    harness.emulator._listen_keys.clear()  # the key silently vanished: the keep-alive PUT gets -1125
    await sink.wait_for(lambda: len(sink.connected) == 4)
    assert harness.emulator.rest_calls["PUT /fapi/v1/listenKey"] >= 1
    assert len(sink.disconnected) == 3 and "listen key expired" in sink.disconnected[0]


async def test_disconnect_every_ms_fault(private_stream, venue):
    _, sink = private_stream
    venue.faults.disconnect_every_ms = 500  # longer than a loaded machine takes to reconnect and log in
    await sink.wait_for(lambda: len(sink.connected) >= 3)
    venue.faults.disconnect_every_ms = 0


async def test_dropped_closing_frame_and_malformed_frames(private_stream, venue, harness):
    drv, sink = private_stream
    venue.place_order("default", SYMBOL, "buy", amount=Decimal(4))
    await sink.wait_for(lambda: (p := sink.position(SYMBOL)) and p.contracts == 4)
    venue.faults.drop_closing_frames = 1
    dropped_before = harness.emulator.shaper.stats["dropped"]
    venue.manual_close("default", SYMBOL)
    venue.place_order("default", SYMBOL, "sell", amount=Decimal(2))  # the next frame still arrives
    await sink.wait_for(lambda: (p := sink.position(SYMBOL)) and p.side == "short")
    assert harness.emulator.shaper.stats["dropped"] == dropped_before + 1
    assert not any(isinstance(e, PositionUpdate) and e.contracts == 0 and e.symbol == SYMBOL
                   for e in sink.events)
    await harness.emulator.inject_private_frame("{broken")
    await sink.wait_for(lambda: sink.malformed)
    venue.manual_close("default", SYMBOL)
    await sink.wait_for(lambda: (p := sink.position(SYMBOL)) and p.contracts == 0)


async def test_watch_mark_prices(driver, venue):
    sink = Sink()
    task = asyncio.create_task(driver.watch_mark_prices([SYMBOL], sink))
    await sink.wait_for(lambda: sink.events)
    venue.set_mark_price(SYMBOL, Decimal("1.3001"))
    await sink.wait_for(lambda: any(isinstance(e, MarkPrice) and e.price == Decimal("1.3001") for e in sink.events))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_venue_harness_hook(harness):
    pm = load_plugins(["binance"])
    async with drivers(pm)["binance"].venue_harness({"seed": 1, "faults": "rest_position_lag_ms=100"}) as h:
        assert h.venue.faults.rest_position_lag_ms == 100 and h.config.rest_url.startswith("http://127.0.0.1:")
        assert intent(h.venue).symbol == h.symbol


# --- issue 13 item 10 (docs/conformance.md B20-B24) -------------------------------------------------------------


async def _user_frames(rest, harness):
    _, answer = await rest.call("POST", "/fapi/v1/listenKey", signed=False)
    return websockets.connect(f"{harness.emulator.ws_url}/private/ws?listenKey={answer['listenKey']}")


@pytest.mark.parametrize("side", ["BUY", "SELL"])
async def test_a_market_order_fills_in_parts_then_expires_on_the_wire(rest, venue, harness, side):
    """B20: several executions (TRADE_LITE, ACCOUNT_UPDATE, ORDER_TRADE_UPDATE PARTIALLY_FILLED each), then
    EXPIRED with expire reason 9 for what the book could not take; the answer says what filled."""
    venue.faults.market_fill_parts = 3
    venue.faults.market_fill_ratio = 0.5
    async with await _user_frames(rest, harness) as ws:
        frames = Frames(ws)
        status, order = await rest.call("POST", "/fapi/v1/order", {
            "symbol": "XRPUSDT", "side": side, "type": "MARKET", "quantity": "100", "newOrderRespType": "RESULT"})
        assert status == 200 and (order["status"], order["executedQty"]) == ("EXPIRED", "50")
        mine = lambda f: f["e"] == "ORDER_TRADE_UPDATE" and f["o"]["i"] == order["orderId"]  # noqa: E731
        await frames.until(lambda: any(mine(f) and f["o"]["X"] == "EXPIRED" for f in frames))
    updates = [f["o"] for f in frames if mine(f)]
    assert [(u["x"], u["X"], u["l"], u["z"]) for u in updates] == [
        ("NEW", "NEW", "0", "0"), ("TRADE", "PARTIALLY_FILLED", "16.6", "16.6"),
        ("TRADE", "PARTIALLY_FILLED", "16.6", "33.2"), ("TRADE", "PARTIALLY_FILLED", "16.8", "50"),
        ("EXPIRED", "EXPIRED", "0", "50")]
    assert updates[-1]["er"] == "9" and all(u["er"] == "0" for u in updates[:-1])
    assert len([f for f in frames if f["e"] == "TRADE_LITE" and f["i"] == order["orderId"]]) == 3
    sizes = [f["a"]["P"][0]["pa"] for f in frames if f["e"] == "ACCOUNT_UPDATE"]
    sign = "" if side == "BUY" else "-"
    assert sizes == [f"{sign}16.6", f"{sign}33.2", f"{sign}50"]
    for i, f in enumerate(frames):  # each part: the position first, its order update next, one T (B4)
        if mine(f) and f["o"]["x"] == "TRADE":
            assert frames[i - 1]["e"] == "ACCOUNT_UPDATE" and frames[i - 1]["T"] == f["T"]


@pytest.mark.parametrize(("how", "client_id"), [("liquidate", "autoclose-"), ("adl", "adl_autoclose")])
async def test_liquidation_and_adl_orders_look_as_documented(rest, venue, harness, how, client_id):
    """B21: "Event: Order Update": client id ``autoclose-…`` / ``adl_autoclose``, order type LIQUIDATION, NEW
    then execution CALCULATED ("Liquidation Execution"); TRADE_LITE carries trades only."""
    venue.place_order("default", SYMBOL, "sell", amount=Decimal(10))
    async with await _user_frames(rest, harness) as ws:
        frames = Frames(ws)
        getattr(venue, how)("default", SYMBOL)
        await frames.until(lambda: any(f["e"] == "ORDER_TRADE_UPDATE" and f["o"]["X"] == "FILLED" for f in frames))
    updates = [f["o"] for f in frames if f["e"] == "ORDER_TRADE_UPDATE"]
    assert [(u["x"], u["X"]) for u in updates] == [("NEW", "NEW"), ("CALCULATED", "FILLED")]
    for update in updates:
        assert update["c"].startswith(client_id) and (update["o"], update["ot"], update["f"]) == (
            "LIQUIDATION", "LIQUIDATION", "IOC")
    assert updates[0]["c"] == updates[1]["c"] and (client_id != "adl_autoclose" or updates[0]["c"] == client_id)
    assert not [f for f in frames if f["e"] == "TRADE_LITE"]


async def test_funding_is_an_account_update_with_the_balance_only(rest, venue, harness):
    """B19: "When FUNDING FEE occurs in a crossed position, ACCOUNT_UPDATE will be pushed with only the balance
    B … without any position P message" (a real 2026 capture shows ``"P": []``)."""
    venue.place_order("default", SYMBOL, "buy", amount=Decimal(10))
    async with await _user_frames(rest, harness) as ws:
        frames = Frames(ws)
        [paid] = venue.settle_funding(SYMBOL, Decimal("0.0001")).values()
        await frames.until(lambda: any(f["e"] == "ACCOUNT_UPDATE" for f in frames))
    [update] = [f for f in frames if f["e"] == "ACCOUNT_UPDATE"]
    assert (update["a"]["m"], update["a"]["P"]) == ("FUNDING_FEE", [])
    assert Decimal(update["a"]["B"][0]["bc"]) == paid < 0
    assert Decimal(update["a"]["B"][0]["wb"]) == venue.wallet("default")
    assert [f["e"] for f in frames] == ["ACCOUNT_UPDATE"]


@pytest.fixture
async def clocked():
    """A venue of its own on a fake clock (its minutes, bans and lifetimes pass when the test says)."""
    from framework_binance.emulator import BinanceEmulator

    clock = FakeClock()
    clock.advance(50_000)  # 10 s before a minute ends
    async with EmulatorHarness("binance", BinanceEmulator, {"seed": 3, "clock": clock}) as h:
        h.clock = clock
        yield h


async def test_every_answer_carries_the_ip_s_used_weight_of_the_minute(clocked):
    """B22: "Every request will contain X-MBX-USED-WEIGHT-(intervalNum)(intervalLetter)"; weights as the
    endpoints document them (positionRisk 5, New Order 0 on the IP limit)."""
    rest = Rest(clocked)
    await rest.call("GET", "/fapi/v1/exchangeInfo", signed=False)
    assert rest.headers["X-MBX-USED-WEIGHT-1M"] == "1"
    await rest.call("GET", "/fapi/v3/positionRisk")
    assert rest.headers["X-MBX-USED-WEIGHT-1M"] == "6"
    status, _ = await rest.call("POST", "/fapi/v1/order", {"symbol": "XRPUSDT", "side": "BUY", "type": "MARKET",
                                                          "quantity": "10"})
    assert status == 200 and rest.headers["X-MBX-USED-WEIGHT-1M"] == "6"
    await rest.call("GET", "/fapi/v1/openOrders")  # every symbol: 40
    assert rest.headers["X-MBX-USED-WEIGHT-1M"] == "46"
    clocked.clock.advance(10_000)  # a new minute
    await rest.call("GET", "/fapi/v1/time", signed=False)
    assert rest.headers["X-MBX-USED-WEIGHT-1M"] == "1"


async def test_over_the_weight_429_with_retry_after_then_418_banned_for_not_backing_off(clocked):
    """B22: 429 -1003 with Retry-After (seconds to wait "to prevent a ban"); a client that keeps going in that
    minute gets 418 and Retry-After "until the ban is over" (2 minutes, the documented minimum)."""
    clocked.venue.faults.rate_limits = True
    clocked.emulator.request_weight.limit = 12
    rest = Rest(clocked)
    for _ in range(2):
        assert (await rest.call("GET", "/fapi/v3/positionRisk"))[0] == 200
    status, body = await rest.call("GET", "/fapi/v3/positionRisk")
    assert (status, body["code"], rest.headers["Retry-After"]) == (429, -1003, "10")
    assert rest.headers["X-MBX-USED-WEIGHT-1M"] == "15"
    status, body = await rest.call("GET", "/fapi/v1/time", signed=False)
    assert (status, body["code"], rest.headers["Retry-After"]) == (418, -1003, "120") and "banned" in body["msg"]
    clocked.clock.advance(119_500)
    assert (await rest.call("GET", "/fapi/v1/time", signed=False))[0] == 418
    assert rest.headers["Retry-After"] == "1"
    clocked.clock.advance(1_000)
    assert (await rest.call("GET", "/fapi/v1/time", signed=False))[0] == 200


async def test_a_client_that_backs_off_after_a_429_is_never_banned(clocked):
    clocked.venue.faults.rate_limits = True
    clocked.emulator.request_weight.limit = 5
    rest = Rest(clocked)
    assert (await rest.call("GET", "/fapi/v3/positionRisk"))[0] == 200
    assert (await rest.call("GET", "/fapi/v3/positionRisk"))[0] == 429
    clocked.clock.advance(int(rest.headers["Retry-After"]) * 1000)  # waited as told
    assert (await rest.call("GET", "/fapi/v3/positionRisk"))[0] == 200


async def test_the_driver_reads_the_used_weight_and_waits_out_a_429_without_being_banned(clocked):
    """B22, driver side: the weight of every answer is read (``used_weight_1m``); a 429's Retry-After pauses the
    venue's calls, after which the next call succeeds (no 418)."""
    from framework.errors import RateLimited

    pm = load_plugins(["binance"])
    drv = drivers(pm)["binance"]
    await drv.connect(clocked.config.model_copy(update={"options": dict(TEST_OPTIONS)}))
    try:
        await drv.fetch_snapshot()
        emulator = clocked.emulator
        assert drv.session.exchange.used_weight_1m == emulator.request_weight.used > 0
        clocked.clock.advance(9_000)  # 1 s before the minute ends
        clocked.venue.faults.rate_limits = True
        emulator.request_weight.limit = emulator.request_weight.used + 1
        with pytest.raises(RateLimited) as refused:
            await drv.fetch_snapshot()
        assert refused.value.retry_after_ms == 1_000 and 0 < drv.paused_for_ms() <= 1_000
        clocked.clock.advance(1_000)  # the venue's minute passes while the driver waits
        await drv.fetch_snapshot()
        assert drv.counters["rate_limit_waits"] == 1 and not emulator.ip_ban.active(clocked.venue.now())
    finally:
        await drv.disconnect()


async def until(emulator, predicate, timeout_s: float = 10.0) -> None:
    """Wait for a condition nothing signals (the emulator's counters), checked at each look the emulator takes at
    the venue's clock, with a generous bound."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await emulator.clock_polled()


async def _clocked_stream(clocked, **options):
    pm = load_plugins(["binance"])
    drv = drivers(pm)["binance"]
    await drv.connect(clocked.config.model_copy(update={"options": {**TEST_OPTIONS, **options}}))
    sink = Sink()
    task = asyncio.create_task(drv.run_stream(sink))
    await sink.wait_for(lambda: sink.connected == [False])
    return drv, sink, task


async def _stop(drv, task):
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await drv.disconnect()


async def test_a_listen_key_lapses_after_60_minutes_without_keepalive_and_the_driver_gets_a_new_one(clocked):
    """B23: "A User Data Stream listenKey is valid for 60 minutes after creation"; when it lapses the stream
    says ``listenKeyExpired``; the driver takes a new key and reconnects (and its sink resnapshots)."""
    drv, sink, task = await _clocked_stream(clocked, listen_key_keepalive_s=3600)  # never keeps it alive
    try:
        emulator = clocked.emulator
        [first] = emulator._listen_keys
        clocked.clock.advance(3_599_000)
        polls = emulator.clock_polls
        await until(emulator, lambda: emulator.clock_polls >= polls + 2)  # it looked: nothing lapses before the hour
        assert sink.connected == [False] and first in emulator._listen_keys
        clocked.clock.advance(2_000)
        await sink.wait_for(lambda: sink.connected == [False, True])
        assert "listen key expired" in sink.disconnected[0] and first not in emulator._listen_keys
        assert emulator.rest_calls["POST /fapi/v1/listenKey"] == 2
    finally:
        await _stop(drv, task)


async def test_keepalive_puts_keep_the_key_past_its_hour(clocked):
    """B23: "Doing a PUT on a listenKey will extend its validity for 60 minutes" — the driver's keep-alive
    (every ``listen_key_keepalive_s``; 30 min by default) keeps one key and one connection for 5 hours."""
    drv, sink, task = await _clocked_stream(clocked, listen_key_keepalive_s=0.05)
    try:
        emulator = clocked.emulator
        for _ in range(10):  # 10 × 30 min of venue time, a keep-alive PUT seen after each step
            seen = emulator.rest_calls["PUT /fapi/v1/listenKey"]
            clocked.clock.advance(1_800_000)
            await until(emulator, lambda seen=seen: emulator.rest_calls["PUT /fapi/v1/listenKey"] > seen)
        assert sink.connected == [False] and emulator.rest_calls["POST /fapi/v1/listenKey"] == 1
    finally:
        await _stop(drv, task)


async def test_a_connection_is_cut_at_24_hours_and_the_driver_reconnects(clocked):
    """B24: "A single connection is only valid for 24 hours; expect to be disconnected at the 24 hour mark";
    the driver reconnects at once with its (still valid) key and tells its sink (which resnapshots)."""
    clocked.emulator.listen_key_ttl_ms = 48 * 3_600_000  # this test is about the connection, not the key
    drv, sink, task = await _clocked_stream(clocked, listen_key_keepalive_s=3600)
    try:
        clocked.clock.advance(86_400_000 - 1_000)
        polls = clocked.emulator.clock_polls
        await until(clocked.emulator, lambda: clocked.emulator.clock_polls >= polls + 2)  # it looked: not cut early
        assert sink.connected == [False]
        clocked.clock.advance(2_000)
        await sink.wait_for(lambda: sink.connected == [False, True])
        assert "socket closed (1000)" in sink.disconnected[0]
    finally:
        await _stop(drv, task)
