"""The wire-emulator base (framework.venue.wire) under a toy third venue that writes only its routes, its
payloads and its error table: REST accounting, the wire fault knobs, the error table, stream sockets and
the controls."""

from __future__ import annotations

import json
from decimal import Decimal as D

import aiohttp
import pytest
from aiohttp import web

from framework.venue import FillEvent, StreamSocket, Venue, VenueEvent, WireEmulator, WireError

SYMBOL = "XRP/USDT:USDT"


class ToyEmulator(WireEmulator):
    """``GET /mark/{id}``, ``POST /order?side=&qty=`` (API key in ``X-KEY``), ``/ws?key=`` (fills)."""

    reject_codes = {"insufficient_margin": (7, "no money"), "invalid_quantity": (8, None)}
    unknown_reject = (9, "refused")

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/mark/{id}", self.mark)
        router.add_post("/order", self.order)
        router.add_get("/ws", self.stream)

    def on_venue_event(self, event: VenueEvent) -> None:
        if isinstance(event, FillEvent):
            self.publish(event.account, "fill", json.dumps({"fill": str(event.amount)}))

    def error_response(self, error: WireError) -> web.StreamResponse:
        return web.json_response({"err": error.code, "text": error.message}, status=error.status)

    def http_fault_response(self, status: int) -> web.StreamResponse:
        return web.json_response({"err": -status}, status=status)

    async def mark(self, request: web.Request) -> web.Response:
        symbol = self.venue.instrument_by_id(request.match_info["id"]).symbol  # unknown: VenueReject
        return web.json_response({"mark": str(self.venue.mark_price(symbol))})

    async def order(self, request: web.Request) -> web.Response:
        account = self.venue.account_for_key(request.headers.get("X-KEY", ""))
        if account is None:
            raise WireError(1, "bad key", 401)
        order = self.venue.place_order(account, SYMBOL, request.query["side"], amount=D(request.query["qty"]))
        await self.hold_if_unanswered(request)
        return web.json_response({"id": order.id})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        account = self.venue.account_for_key(request.query.get("key", ""))
        sock = StreamSocket(web.WebSocketResponse(), True, account=account, topics={"fill"})
        return await self.serve_socket(request, sock, on_text=self.pong)

    async def pong(self, sock: StreamSocket, text: str) -> None:
        self.note_ws_op(text)
        await self.reply(sock, {"pong": text})


@pytest.fixture
async def toy():
    venue = Venue("toy")
    venue.add_account("a", "k", "s")
    venue.set_mark_price(SYMBOL, D(1))
    emulator = ToyEmulator(venue, accept_timeout_hold_s=0.2)
    await emulator.start()
    async with aiohttp.ClientSession() as http:
        yield emulator, venue, http
    await emulator.stop()


async def test_rest_calls_are_counted_and_rejects_answer_from_the_error_table(toy):
    emulator, venue, http = toy
    async with http.get(f"{emulator.rest_url}/mark/XRPUSDT") as answer:
        assert (answer.status, await answer.json()) == (200, {"mark": "1"})
    async with http.get(f"{emulator.rest_url}/mark/NOPE") as answer:  # unknown_symbol is not in the table
        assert (answer.status, await answer.json()) == (400, {"err": 9, "text": "refused"})
    async with http.post(f"{emulator.rest_url}/order?side=buy&qty=0.05", headers={"X-KEY": "k"}) as answer:
        body = await answer.json()  # invalid_quantity: the table's code, the venue's own text
        assert answer.status == 400 and body["err"] == 8 and "amount 0.05" in body["text"]
    async with http.post(f"{emulator.rest_url}/order?side=buy&qty=1", headers={"X-KEY": "x"}) as answer:
        assert (answer.status, await answer.json()) == (401, {"err": 1, "text": "bad key"})
    assert emulator.rest_calls == {"GET /mark/XRPUSDT": 1, "GET /mark/NOPE": 1, "POST /order": 2}


async def test_http_error_next_answers_the_venue_s_fault_and_counts_down(toy):
    emulator, venue, http = toy
    venue.faults.http_error_status, venue.faults.http_error_next = 503, 1
    async with http.get(f"{emulator.rest_url}/mark/XRPUSDT") as answer:
        assert (answer.status, await answer.json()) == (503, {"err": -503})
    async with http.get(f"{emulator.rest_url}/mark/XRPUSDT") as answer:
        assert answer.status == 200
    assert venue.faults.http_error_next == 0 and emulator.rest_calls["GET /mark/XRPUSDT"] == 2


async def test_an_accepted_order_whose_answer_never_comes_is_executed_and_the_connection_dropped(toy):
    emulator, venue, http = toy
    venue.faults.timeout_after_accept_next = 1
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(f"{emulator.rest_url}/order?side=sell&qty=10", headers={"X-KEY": "k"}):
            pass
    assert venue.position("a", SYMBOL).side == "short" and venue.faults.timeout_after_accept_next == 0


async def test_private_frames_reach_the_account_s_socket_and_the_controls_work(toy):
    emulator, venue, http = toy
    async with http.ws_connect(f"{emulator.ws_url}/ws?key=k") as ws:
        await ws.send_str("ping")  # answered once the socket is registered
        assert json.loads((await ws.receive(timeout=5)).data) == {"pong": "ping"}
        await emulator.wait_for_ws_ops("ping", 1)
        venue.place_order("a", SYMBOL, "buy", amount=D(10))
        await emulator.drain_streams()
        assert D(json.loads((await ws.receive(timeout=5)).data)["fill"]) == 10
        await emulator.inject_private_frame("{not json")
        assert (await ws.receive(timeout=5)).data == "{not json"
        await emulator.disconnect_streams()
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
    assert emulator.shaper.stats["sent"] == 1 and not emulator.rest_calls  # a handshake is no REST call
