"""Bybit v5 WebSocket clients (``websockets``): the private stream and public mark prices.

Private (``<ws_url>/v5/private``, Bybit v5 docs "WebSocket > Connect"): authenticate with
``{"op":"auth","args":[key, expires_ms, hex(HMAC_SHA256(secret, "GET/realtime" + expires))]}``, subscribe to
``position`` / ``order`` / ``execution``, ``{"op":"ping"}`` every ``ping_interval_s`` (20 s; Bybit drops
silent sockets), reconnect with capped jittered backoff, and after every (re)connect await
``sink.on_connected(reconnect)``.  Public (``<ws_url>/v5/public/linear``): ``tickers.<SYMBOL>`` mark prices.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
from typing import Any

import websockets

from framework import ws_connect
from framework.driverkit import Backoff, attach_stream_state, decode_frame
from framework.errors import StreamError
from framework.models import now_ms
from framework.protocols import StreamSink
from framework_bybit.decoder import VENUE
from framework_bybit.rest import BybitConnection

log = logging.getLogger(__name__)

PRIVATE_TOPICS = ["position", "order", "execution"]
AUTH_VALID_MS = 10_000


def auth_message(api_key: str, api_secret: str, expires_ms: int) -> str:
    """The private stream's auth request (the signature is over ``"GET/realtime" + expires``)."""
    signature = hmac.new(api_secret.encode(), f"GET/realtime{expires_ms}".encode(), hashlib.sha256).hexdigest()
    return json.dumps({"op": "auth", "args": [api_key, expires_ms, signature]})


def _backoff(conn: BybitConnection) -> Backoff:
    options = conn.config.options
    return Backoff(
        base_s=float(options.get("reconnect_base_s", 0.5)),
        cap_s=float(options.get("reconnect_cap_s", 30.0)),
        floor_s=float(options.get("reconnect_floor_s", 0.05)),
        rng=random.Random(options.get("seed")),
    )


async def _expect_op(ws: Any, op: str, timeout_s: float) -> dict[str, Any]:
    """Read frames until the answer to ``op`` (data frames before it are not expected at this point)."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = json.loads(await ws.recv())
            if isinstance(message, dict) and message.get("op") == op:
                return message


async def _keepalive(ws: Any, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await ws.send(json.dumps({"op": "ping", "req_id": str(now_ms())}))


async def run_stream(conn: BybitConnection, sink: StreamSink) -> None:
    """Run the private stream until cancelled (see the module docstring).

    Decoded events go to ``sink.on_event``; a malformed frame goes to ``sink.on_malformed`` and the stream
    goes on.  While it runs, a sink that is also :class:`~framework.protocols.StreamEvidence` (the core's
    PositionBook) is ``conn.stream_state``, what the REST side's stream-evidence checks ask.

    :raises StreamError: the venue refused the credentials (retrying cannot help).
    """
    with attach_stream_state(conn, sink):
        await _private_stream(conn, sink)


async def _private_stream(conn: BybitConnection, sink: StreamSink) -> None:
    backoff = _backoff(conn)
    url = f"{conn.ws_url}/v5/private"
    timeout_s = float(conn.config.options.get("ws_timeout_s", 10.0))
    connected_before = False
    while True:
        try:
            async with ws_connect(url, VENUE, ping_interval=None, open_timeout=timeout_s) as ws:
                expires = now_ms() + AUTH_VALID_MS
                await ws.send(auth_message(conn.config.api_key.get_secret_value(),
                                           conn.config.api_secret.get_secret_value(), expires))
                answer = await _expect_op(ws, "auth", timeout_s)
                if not answer.get("success"):
                    code = answer.get("retCode")
                    reason = answer.get("retMsg") or answer.get("ret_msg") or "refused"
                    raise StreamError(f"private stream authentication failed: {reason}", code=code, venue=VENUE)
                await ws.send(json.dumps({"op": "subscribe", "args": PRIVATE_TOPICS}))
                answer = await _expect_op(ws, "subscribe", timeout_s)
                if not answer.get("success"):
                    raise StreamError(f"subscription refused: {answer.get('ret_msg')}", venue=VENUE)
                backoff.reset()
                await sink.on_connected(connected_before)
                connected_before = True
                pinger = asyncio.create_task(_keepalive(ws, conn.ping_interval_s), name="bybit-ping")
                try:
                    async for raw in ws:
                        await _deliver(conn, sink, raw)
                finally:
                    pinger.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pinger
                detail = f"closed by the venue (code {ws.close_code})"
        except StreamError:
            raise
        except (OSError, websockets.WebSocketException, TimeoutError, ValueError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        if connected_before:
            await sink.on_disconnected(detail)
        delay = backoff.next_delay()
        log.info("bybit private stream: %s; reconnecting in %.2f s", detail, delay)
        await asyncio.sleep(delay)


async def _deliver(conn: BybitConnection, sink: StreamSink, raw: str | bytes) -> None:
    for event in decode_frame(conn.decoder, raw, sink):
        await sink.on_event(event)


async def watch_mark_prices(conn: BybitConnection, symbols: list[str], sink: StreamSink) -> None:
    """Stream :class:`~framework.models.MarkPrice` ticks of ``symbols`` until cancelled
    (public ``tickers.<SYMBOL>``; deltas without ``markPrice`` yield nothing)."""
    topics = [f"tickers.{conn.market_id(symbol)}" for symbol in symbols]
    backoff = _backoff(conn)
    url = f"{conn.ws_url}/v5/public/linear"
    while True:
        try:
            async with ws_connect(url, VENUE, ping_interval=None) as ws:
                await ws.send(json.dumps({"op": "subscribe", "args": topics}))
                backoff.reset()
                pinger = asyncio.create_task(_keepalive(ws, conn.ping_interval_s), name="bybit-public-ping")
                try:
                    async for raw in ws:
                        for event in decode_frame(conn.decoder, raw, sink):
                            await sink.on_event(event)
                finally:
                    pinger.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pinger
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            log.info("bybit public stream: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(backoff.next_delay())
