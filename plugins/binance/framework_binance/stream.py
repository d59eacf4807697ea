"""Binance USDⓈ-M streams over ``websockets``: the user data stream and the mark-price stream.

User data (source: Binance "User Data Streams" and the 2026 "Base URL Split" notice):
``POST /fapi/v1/listenKey`` gives a key, the socket is ``<ws>/private/ws?listenKey=K&events=...``
(:meth:`BinanceConnection.user_stream_url`; mark prices: ``<ws>/market/ws`` and subscribe frames).
The key is kept alive
with ``PUT /fapi/v1/listenKey`` (Binance: at least every 60 min; default here every 30 min,
``DriverConfig.options['listen_key_keepalive_s']``), and a ``listenKeyExpired`` event means: get a new
key and reconnect.  Every (re)connect awaits ``sink.on_connected(reconnect)``; reconnects back off
exponentially with jitter (``options['reconnect_base_s']`` 0.5, ``options['reconnect_cap_s']`` 30,
``options['seed']``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from typing import Any

import websockets

from framework import ws_connect
from framework.driverkit import Backoff, attach_stream_state, decode_frame
from framework.errors import StreamError, VenueError
from framework.marksockets import Ack, MarkSocketPool, SubscriptionRules, WatchedSymbols, watched
from framework.protocols import StreamSink
from framework_binance import decoder as decoding
from framework_binance.decoder import VENUE, BinanceDecoder
from framework_binance.rest import BinanceConnection

log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE_S = 30 * 60


def _backoff(conn: BinanceConnection) -> Backoff:
    options = conn.config.options
    seed = options.get("seed")
    return Backoff(
        base_s=float(options.get("reconnect_base_s", 0.5)),
        cap_s=float(options.get("reconnect_cap_s", 30.0)),
        floor_s=float(options.get("reconnect_floor_s", 0.05)),
        rng=random.Random(seed) if seed is not None else None,
    )


class _KeyExpired(Exception):
    """``listenKeyExpired`` arrived, or the keep-alive was refused: get a new key."""


async def run_user_stream(conn: BinanceConnection, sink: StreamSink) -> None:
    """Run the user data stream until cancelled (see the module docstring).

    Decoded events go to ``sink.on_event``; malformed frames to ``sink.on_malformed`` (the stream goes
    on).  While it runs, a sink that is also :class:`~framework.protocols.StreamEvidence` (the core's
    PositionBook) is ``conn.stream_state``, what the liveness checks ask.
    """
    with attach_stream_state(conn, sink):
        await _user_stream(conn, sink)


async def _user_stream(conn: BinanceConnection, sink: StreamSink) -> None:
    decoder = BinanceDecoder(conn.symbols)
    backoff = _backoff(conn)
    keepalive_s = float(conn.config.options.get("listen_key_keepalive_s", DEFAULT_KEEPALIVE_S))
    reconnect = False
    while True:
        detail = ""
        try:
            key = await conn.listen_key()
            async with ws_connect(conn.user_stream_url(key), VENUE, max_size=2**22) as ws:
                backoff.reset()
                await sink.on_connected(reconnect)
                keepalive = asyncio.create_task(_keep_alive(conn, ws, keepalive_s), name="binance-listenkey")
                try:
                    async for raw in ws:
                        await _handle_frame(conn, decoder, sink, raw)
                    detail = f"socket closed ({ws.close_code})"
                finally:
                    keepalive.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await keepalive
        except asyncio.CancelledError:
            raise
        except _KeyExpired:
            detail = "listen key expired"
        except (OSError, websockets.WebSocketException, VenueError) as error:
            detail = f"{type(error).__name__}: {error}"
        reconnect = True
        await sink.on_disconnected(detail or "disconnected")
        delay = 0.0 if detail == "listen key expired" else backoff.next_delay()
        log.info("binance user stream down (%s); reconnecting in %.2f s", detail, delay)
        if delay:
            await asyncio.sleep(delay)


async def _handle_frame(conn: BinanceConnection, decoder: BinanceDecoder, sink: StreamSink, raw: str | bytes) -> None:
    try:
        message = decoding.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:  # RecursionError: absurd nesting
        sink.on_malformed(raw, StreamError(f"frame is not JSON: {type(error).__name__}", venue="binance"))
        return
    if isinstance(message, dict) and message.get("e") == "listenKeyExpired":
        raise _KeyExpired()
    try:
        events = decoder.decode_message(message)
    except StreamError as error:
        sink.on_malformed(raw, error)
        return
    except Exception as error:  # a hostile frame ("T": Infinity): counted, the stream goes on (issue 14)
        sink.on_malformed(raw, StreamError(f"undecodable frame: {type(error).__name__}", venue="binance"))
        return
    for event in events:
        await sink.on_event(event)


async def _keep_alive(conn: BinanceConnection, ws: Any, interval_s: float) -> None:
    """``PUT /fapi/v1/listenKey`` every ``interval_s``; a refused keep-alive closes the socket (new key)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await conn.keep_alive()
        except VenueError as error:
            log.info("listen key keep-alive refused (%s): reconnecting with a new key", error)
            await ws.close()
            return


#: Binance USDⓈ-M "Websocket Market Streams": "A single connection can listen to a maximum of 200 streams",
#: "WebSocket connections have a limit of 10 incoming messages per second" (docs/conformance.md B26)
MAX_STREAMS_PER_CONNECTION = 200
MAX_MESSAGES_PER_S = 10


def _method_frame(method: str) -> Callable[[list[str], str], str]:
    def frame(streams: list[str], request_id: str) -> str:
        return json.dumps({"method": method, "params": streams, "id": int(request_id)})
    return frame


def _ack(message: Any) -> Ack | None:
    """``{"result": null, "id": N}`` accepts a request; ``{"code": C, "msg": M, "id": N}`` (or an ``error``
    object) refuses it ("Live Subscribing/Unsubscribing to streams", "Error Messages")."""
    if not isinstance(message, dict) or "id" not in message or "e" in message or "stream" in message:
        return None
    if "result" in message and "code" not in message and "error" not in message:
        return Ack(str(message["id"]), True)
    error = message.get("error") if isinstance(message.get("error"), dict) else message
    return Ack(str(message["id"]), False, f"{error.get('code')} {error.get('msg')}")


def mark_rules(conn: BinanceConnection) -> SubscriptionRules:
    """Mark-price sockets at ``<ws>/market/ws`` with ``SUBSCRIBE`` / ``UNSUBSCRIBE`` method frames, at most
    200 streams each and 10 frames per second (options ``mark_streams_per_connection``,
    ``mark_messages_per_s`` lower them, for tests)."""
    options = conn.config.options
    return SubscriptionRules(
        url=conn.market_socket_url(), subscribe=_method_frame("SUBSCRIBE"), unsubscribe=_method_frame("UNSUBSCRIBE"),
        ack=_ack, max_topics=int(options.get("mark_streams_per_connection", MAX_STREAMS_PER_CONNECTION)),
        max_messages_per_s=int(options.get("mark_messages_per_s", MAX_MESSAGES_PER_S)),
    )


async def watch_marks(conn: BinanceConnection, symbols: list[str] | WatchedSymbols, sink: StreamSink) -> None:
    """Stream ``<symbol>@markPrice@1s`` of ``symbols`` to ``sink.on_event`` until cancelled: one socket per
    200 streams, kept in step with ``symbols`` (a :class:`~framework.marksockets.WatchedSymbols` that may
    change) by ``SUBSCRIBE`` / ``UNSUBSCRIBE``, never reconnected because the set changed."""
    decoder = BinanceDecoder(conn.symbols)

    async def deliver(raw: str | bytes) -> None:
        for event in decode_frame(decoder, raw, sink):
            await sink.on_event(event)

    pool = MarkSocketPool(VENUE, mark_rules(conn), deliver, lambda: _backoff(conn))
    conn.mark_pool = pool
    await pool.follow(watched(symbols), lambda symbol: f"{conn.market_id(symbol).lower()}@markPrice@1s")
