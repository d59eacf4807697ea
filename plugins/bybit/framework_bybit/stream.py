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
from collections.abc import Callable
from typing import Any

import websockets

from framework import ws_connect
from framework.driverkit import Backoff, attach_stream_state, decode_frame
from framework.errors import StreamError
from framework.marksockets import Ack, MarkSocketPool, SubscriptionRules, WatchedSymbols, watched
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


#: Bybit "WebSocket > Connect", "Public channel - Args limits": "for one public connection, you cannot have
#: length of "args" array over 21,000 characters"; "No args limit for Futures" per request (conformance Y20)
MAX_ARGS_CHARS = 21_000


def _op_frame(op: str) -> Callable[[list[str], str], str]:
    def frame(topics: list[str], request_id: str) -> str:
        return json.dumps({"req_id": request_id, "op": op, "args": topics})
    return frame


def _ack(message: Any) -> Ack | None:
    """``{"success": true, "ret_msg": "", "conn_id": …, "req_id": …, "op": "subscribe"}`` answers a request;
    a pong (``op`` ``ping`` / ``pong``) and data frames are not answers."""
    if not isinstance(message, dict) or message.get("op") not in ("subscribe", "unsubscribe"):
        return None
    return Ack(str(message.get("req_id")), bool(message.get("success")), str(message.get("ret_msg") or ""))


def mark_rules(conn: BybitConnection) -> SubscriptionRules:
    """Public sockets at ``<ws>/v5/public/linear`` with ``subscribe`` / ``unsubscribe`` ops, at most 21,000
    characters of topics each (option ``mark_args_chars_per_connection`` lowers it, for tests), an
    application ``ping`` every ``ping_interval_s``."""
    return SubscriptionRules(
        url=f"{conn.ws_url}/v5/public/linear", subscribe=_op_frame("subscribe"), unsubscribe=_op_frame("unsubscribe"),
        ack=_ack, max_args_chars=int(conn.config.options.get("mark_args_chars_per_connection", MAX_ARGS_CHARS)),
        ping=lambda: json.dumps({"op": "ping", "req_id": str(now_ms())}), ping_interval_s=conn.ping_interval_s,
    )


async def watch_mark_prices(conn: BybitConnection, symbols: list[str] | WatchedSymbols, sink: StreamSink) -> None:
    """Stream :class:`~framework.models.MarkPrice` ticks of ``symbols`` until cancelled (public
    ``tickers.<SYMBOL>``; deltas without ``markPrice`` yield nothing): as few public sockets as the
    per-connection args limit allows, kept in step with ``symbols`` (a
    :class:`~framework.marksockets.WatchedSymbols` that may change) by ``subscribe`` / ``unsubscribe``."""

    async def deliver(raw: str | bytes) -> None:
        for event in decode_frame(conn.decoder, raw, sink):
            await sink.on_event(event)

    pool = MarkSocketPool(VENUE, mark_rules(conn), deliver, lambda: _backoff(conn))
    conn.mark_pool = pool
    await pool.follow(watched(symbols), lambda symbol: f"tickers.{conn.market_id(symbol)}")
