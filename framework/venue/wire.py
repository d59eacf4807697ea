"""``WireEmulator``: what every venue's wire façade over :class:`~framework.venue.Venue` shares.

One aiohttp server on loopback serves a venue's REST paths and WebSocket streams.  The base keeps the
plumbing (``docs/venue-api.md``): start / stop and the URLs, REST call accounting (``rest_calls``), the fault
knobs applied on the wire (``http_error_next``, ``timeout_after_accept_next``, ``disconnect_every_ms``, the
REST lags, ``shuffle_topics``; the other stream knobs through :class:`~framework.venue.FrameShaper`), one
registry of stream sockets each with its own ordered send queue, hooks for the venue's request limits
(:meth:`WireEmulator.admit`, :meth:`WireEmulator.usage_headers`) and for what lapses on the venue's clock
(:meth:`WireEmulator.on_clock`: listen keys, connection lifetimes, silent connections), and the controls
tests and the contract suite use (``disconnect_streams``, ``inject_private_frame``, ``drain_streams``,
``wait_for_ws_ops``, ``clock_polled``).  A venue's façade adds its routes, payloads and error table
(:attr:`WireEmulator.reject_codes`, and what an error answer looks like: :meth:`WireEmulator.error_response`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from aiohttp import WSMsgType, web

from framework.venue.core import Venue
from framework.venue.faults import FrameShaper
from framework.venue.model import VenueEvent, VenueOrder, VenuePosition, VenueReject

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLOCK_POLL_S = 0.05  # how often (real time) the venue's clock is looked at for what lapsed (:meth:`on_clock`)


class WireError(Exception):
    """An error answer of the venue: its ``code``, ``message`` and HTTP ``status``."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(f"{status} {code} {message}")
        self.code, self.message, self.status = code, message, status


class StreamSocket:
    """One WebSocket client: private (its frames go through the shaper) or public, the ``account`` it speaks
    for (once authenticated), the ``key`` it was opened with (a listen key), what it asked for (``topics``,
    or ``all_topics``) and its ordered send queue."""

    def __init__(self, ws: web.WebSocketResponse, private: bool, *, account: str | None = None,
                 key: str | None = None, topics: Iterable[str] = (), all_topics: bool = False) -> None:
        self.ws, self.private, self.account, self.key = ws, private, account, key
        self.topics, self.all_topics = set(topics), all_topics
        self.conn_id = uuid.uuid4().hex[:20]
        self.queue: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        #: venue clock (ms): when the handshake completed, and the last message either way (keep-alive rules)
        self.opened_ms = self.last_active_ms = 0

    def wants(self, topic: str) -> bool:
        return self.all_topics or topic in self.topics


def signature_ok(secret: str, payload: str, signature: str) -> bool:
    """``signature`` is hex(HMAC-SHA256(secret, payload)): how both venues sign a request."""
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def decimal_param(params: Mapping[str, Any], name: str, bad: Callable[[str], Exception]) -> Decimal | None:
    """``params[name]`` as a Decimal, ``None`` when absent or empty; ``bad(name)`` is raised for garbage."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return Decimal(str(raw))
    except (InvalidOperation, ValueError):
        raise bad(name) from None


class WireEmulator(ABC):
    """Base of a venue's wire façade: serves ``venue`` on ``host:port`` (0 = a free port).

    :param accept_timeout_hold_s: how long an order hit by ``timeout_after_accept_next`` is held before its
        connection is dropped (longer than the client's timeout).
    :ivar rest_calls: every REST call by ``"METHOD /path"``; ``ws_ops``: WebSocket requests by op.
    :ivar shaper: the :class:`FrameShaper` applied to private frames (``shaper.stats``).
    :ivar burst_topics: with ``faults.shuffle_topics``, the topic order each shuffled burst was sent in.
    """

    #: venue reject reason → (code, message; ``None``: the venue's own text), and the answer to any other
    reject_codes: ClassVar[Mapping[str, tuple[int, str | None]]] = {}
    unknown_reject: ClassVar[tuple[int, str | None]] = (0, None)
    reject_status: ClassVar[int] = 400
    #: the venue documents no order between topics: ``faults.shuffle_topics`` may interleave a burst
    topics_unordered: ClassVar[bool] = False

    def __init__(self, venue: Venue, host: str = "127.0.0.1", port: int = 0, *,
                 accept_timeout_hold_s: float = 30.0) -> None:
        self.venue, self.host, self.port = venue, host, port
        self.accept_timeout_hold_s = accept_timeout_hold_s
        self.rest_calls: collections.Counter[str] = collections.Counter()
        self.ws_ops: collections.Counter[str] = collections.Counter()
        self.shaper = FrameShaper(venue)
        self.sockets: set[StreamSocket] = set()
        self.burst_topics: collections.deque[list[str]] = collections.deque(maxlen=100)
        self._burst: list[tuple[StreamSocket, str, str, bool]] = []
        self._ws_op_seen = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.clock_polls = 0  # looks taken at the venue's clock (:meth:`on_clock`)
        self._polled = asyncio.Event()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self.port}, sockets={len(self.sockets)})"

    # --- what a venue writes -------------------------------------------------------------------------

    @abstractmethod
    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the venue's REST and WebSocket handlers."""

    @abstractmethod
    def on_venue_event(self, event: VenueEvent) -> None:
        """Turn one venue event into frames (:meth:`send`, :meth:`publish`)."""

    @abstractmethod
    def error_response(self, error: WireError) -> web.StreamResponse:
        """The venue's answer carrying ``error``."""

    @abstractmethod
    def http_fault_response(self, status: int) -> web.StreamResponse:
        """The venue's (or its gateway's) answer of HTTP ``status`` (the ``http_error_next`` knob)."""

    def admit(self, request: web.Request) -> web.StreamResponse | None:
        """The venue's request limits, before the handler: its refusal, or ``None`` to serve the request."""
        return None

    def usage_headers(self, request: web.Request) -> Mapping[str, str]:
        """Headers every answer to ``request`` carries (the venue's request-limit usage)."""
        return {}

    async def on_clock(self, now_ms: int) -> None:
        """Called every :data:`CLOCK_POLL_S` with the venue's time: end what lapsed (keys, connections)."""
        return None

    def wire_error(self, reject: VenueReject) -> WireError:
        code, message = self.reject_codes.get(reject.reason, self.unknown_reject)
        return WireError(code, message or reject.message, self.reject_status)

    # --- lifecycle -----------------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._rest_middleware])
        self.add_routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._unsubscribe = self.venue.subscribe(self.on_venue_event)
        self.spawn(self._disconnect_loop())
        self.spawn(self._clock_loop())

    async def stop(self) -> None:
        self._stopping.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.shaper.close()
        for sock in list(self.sockets):
            with contextlib.suppress(Exception):
                await sock.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``coro`` until :meth:`stop`."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- controls ------------------------------------------------------------------------------------

    async def disconnect_streams(self) -> None:
        """Drop every private stream socket now (the client must reconnect)."""
        for sock in [s for s in self.sockets if s.private]:
            with contextlib.suppress(Exception):
                await sock.ws.close(code=1001, message=b"server going away")

    async def inject_private_frame(self, frame: str) -> None:
        """Send ``frame`` as is on every authenticated private socket (tests: malformed frames)."""
        for sock in [s for s in self.sockets if s.private and s.account is not None]:
            with contextlib.suppress(Exception):
                await sock.ws.send_str(frame)

    async def drain_streams(self) -> None:
        """Wait until every frame queued so far went through the shaper (sent, dropped, held or delayed)."""
        self._flush_burst()
        await asyncio.gather(*(sock.queue.join() for sock in list(self.sockets)))

    async def wait_for_ws_ops(self, op: str, count: int, timeout_s: float = 5.0) -> None:
        """Wait until ``count`` WebSocket requests ``op`` were received.  :raises TimeoutError:"""
        async with asyncio.timeout(timeout_s):
            while self.ws_ops[op] < count:
                await self._ws_op_seen.wait()

    async def clock_polled(self) -> None:
        """Wait for the next look at the venue's clock (tests: whatever had lapsed has ended by then)."""
        await self._polled.wait()

    async def _clock_loop(self) -> None:
        while True:
            await asyncio.sleep(CLOCK_POLL_S)
            await self.on_clock(self.venue.now())
            self.clock_polls += 1
            self._polled.set()
            self._polled = asyncio.Event()

    def note_ws_op(self, op: str) -> None:
        self.ws_ops[op] += 1
        self._ws_op_seen.set()
        self._ws_op_seen = asyncio.Event()

    async def _disconnect_loop(self) -> None:
        """``faults.disconnect_every_ms``: drop private sockets periodically."""
        while True:
            interval = self.venue.faults.disconnect_every_ms
            if interval <= 0:
                await asyncio.sleep(0.05)
                continue
            await asyncio.sleep(interval / 1000)
            if self.venue.faults.disconnect_every_ms > 0:  # cleared while we slept: no late disconnect
                await self.disconnect_streams()

    # --- REST ----------------------------------------------------------------------------------------

    @web.middleware
    async def _rest_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Counts REST calls, serves ``http_error_next`` and turns errors into the venue's answers."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)
        self.rest_calls[f"{request.method} {request.path}"] += 1
        response = await self._answer(request, handler)
        if not response.prepared:
            response.headers.update(self.usage_headers(request))
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        faults = self.venue.faults
        try:
            refused = self.admit(request)
        except WireError as error:
            return self.error_response(error)
        if refused is not None:
            return refused
        if faults.http_error_next > 0 and faults.http_error_path in (None, request.path):
            faults.http_error_next -= 1
            return self.http_fault_response(faults.http_error_status)
        try:
            return await handler(request)
        except WireError as error:
            return self.error_response(error)
        except VenueReject as reject:
            return self.error_response(self.wire_error(reject))

    async def hold_if_unanswered(self, request: web.Request) -> None:
        """``timeout_after_accept_next``: the order was accepted, but the answer never comes: hold it
        ``accept_timeout_hold_s`` (or until :meth:`stop`), then drop the connection."""
        faults = self.venue.faults
        if faults.timeout_after_accept_next <= 0:
            return
        faults.timeout_after_accept_next -= 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.accept_timeout_hold_s)
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError

    def answer_without_order_id(self) -> bool:
        """``answer_without_order_id_next``: answer this accepted order without its id (counts it down)."""
        faults = self.venue.faults
        if faults.answer_without_order_id_next <= 0:
            return False
        faults.answer_without_order_id_next -= 1
        return True

    def visible_positions(self, account: str) -> list[VenuePosition]:
        """The positions REST shows (``faults.rest_position_lag_ms`` behind)."""
        return self.venue.visible_positions(account, self.venue.faults.rest_position_lag_ms)

    def visible_orders(self, orders: list[VenueOrder]) -> list[VenueOrder]:
        """Orders created at least ``faults.order_visibility_lag_ms`` ago."""
        lag = self.venue.faults.order_visibility_lag_ms
        return orders if lag <= 0 else [o for o in orders if o.created_ms <= self.venue.now() - lag]

    # --- streams -------------------------------------------------------------------------------------

    async def serve_socket(self, request: web.Request, sock: StreamSocket | None = None, *,
                           on_text: Callable[[StreamSocket, str], Awaitable[None]] | None = None,
                           ) -> web.WebSocketResponse:
        """Complete the handshake and serve ``sock`` (a silent public one when ``None``) until the client
        closes: its queue is written in order, what it sends goes to ``on_text``."""
        sock = sock or StreamSocket(web.WebSocketResponse(), private=False)
        await sock.ws.prepare(request)
        sock.opened_ms = sock.last_active_ms = self.venue.now()
        self.sockets.add(sock)
        writer = self.spawn(self._write_loop(sock))
        try:
            async for message in sock.ws:
                if message.type == WSMsgType.ERROR:
                    break
                sock.last_active_ms = self.venue.now()
                if message.type == WSMsgType.TEXT and on_text is not None:
                    await on_text(sock, message.data)
        finally:
            self.sockets.discard(sock)
            writer.cancel()
        return sock.ws

    async def reply(self, sock: StreamSocket, payload: dict[str, Any]) -> None:
        """Answer a request on ``sock`` at once (not queued, not shaped)."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await sock.ws.send_str(json.dumps(payload))

    def send(self, sock: StreamSocket, frame: str, closing: bool = False) -> None:
        """Queue ``frame`` for ``sock`` (``closing``: it reports a position flat, for the shaper)."""
        sock.queue.put_nowait((frame, closing))

    def publish(self, account: str, topic: str, frame: str, closing: bool = False) -> None:
        """Queue ``frame`` for every private socket of ``account`` that wants ``topic``.  With
        ``faults.shuffle_topics`` (and :attr:`topics_unordered`) the frames of one burst (sent in the same
        loop iteration) are interleaved across topics at random, each topic's own frames kept in order."""
        for sock in self.sockets:
            if not (sock.private and sock.account == account and sock.wants(topic)):
                continue
            if self.topics_unordered and (self.venue.faults.shuffle_topics or self._burst):
                if not self._burst:
                    asyncio.get_running_loop().call_soon(self._flush_burst)
                self._burst.append((sock, topic, frame, closing))
            else:
                self.send(sock, frame, closing)

    def _flush_burst(self) -> None:
        burst, self._burst = self._burst, []
        for sock in dict.fromkeys(s for s, *_ in burst):
            by_topic: dict[str, list[tuple[str, bool]]] = {}
            for s, topic, frame, closing in burst:
                if s is sock:
                    by_topic.setdefault(topic, []).append((frame, closing))
            order: list[str] = []
            while by_topic:
                topic = self.venue.rng.choice(sorted(by_topic))
                order.append(topic)
                self.send(sock, *by_topic[topic].pop(0))
                if not by_topic[topic]:
                    del by_topic[topic]
            self.burst_topics.append(order)

    async def _write_loop(self, sock: StreamSocket) -> None:
        while True:
            frame, closing = await sock.queue.get()
            sock.last_active_ms = self.venue.now()
            try:
                if sock.private:
                    await self.shaper.send(sock.ws.send_str, frame, closing=closing)
                else:
                    await sock.ws.send_str(frame)
            except Exception as error:  # noqa: BLE001 - the client went away; it reconnects
                log.info("frame not delivered: %s", error)
            finally:
                sock.queue.task_done()
