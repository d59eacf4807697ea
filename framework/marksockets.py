"""Mark-price sockets that follow a changing set of symbols without reconnecting (issue 17 item 5).

* :class:`WatchedSymbols` — the symbols whose mark price is wanted.  The engine changes it as positions
  come and go; a driver's ``watch_mark_prices`` follows it.
* :class:`MarkSocketPool` — as few public sockets as the venue's per-connection limits allow, each kept
  in step with its share of the topics by subscribe / unsubscribe frames (:class:`SubscriptionRules`
  says how the venue spells them and what it allows).  A topic that does not fit an open socket opens
  another one; a set of symbols that changes never reconnects anything.

Times are seconds (``*_s``); nothing here knows an exchange.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import websockets

from framework.cassette import ws_connect
from framework.driverkit import Backoff

log = logging.getLogger(__name__)


class WatchedSymbols:
    """A set of unified symbols that changes over time, and a way to wait for the next change.

    :param symbols: the initial symbols.
    """

    def __init__(self, symbols: Iterable[str] = ()) -> None:
        self._symbols = frozenset(symbols)
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"WatchedSymbols({len(self._symbols)} symbols)"

    def current(self) -> frozenset[str]:
        """The symbols wanted now."""
        return self._symbols

    def set(self, symbols: Iterable[str]) -> None:
        """Replace the wanted symbols (a no-op when they are the same)."""
        new = frozenset(symbols)
        if new != self._symbols:
            self._symbols = new
            self._changed.set()

    async def wait_changed(self) -> None:
        """Return after the next :meth:`set` that changed something (at once if one happened since the
        last call)."""
        await self._changed.wait()
        self._changed.clear()


def watched(symbols: list[str] | WatchedSymbols) -> WatchedSymbols:
    """``symbols`` as a :class:`WatchedSymbols` (a fixed list becomes one that never changes)."""
    return symbols if isinstance(symbols, WatchedSymbols) else WatchedSymbols(symbols)


@dataclass(frozen=True)
class Ack:
    """The venue's answer to a subscribe / unsubscribe frame."""

    request_id: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class SubscriptionRules:
    """How one venue's public socket is asked for topics, and its documented limits.

    :ivar url: the socket to open.
    :ivar subscribe / unsubscribe: the frame asking for (dropping) ``topics``, tagged ``request_id``.
    :ivar ack: the answer to a request, or ``None`` for any other message (parsed JSON).
    :ivar max_topics: topics one connection may hold (``None``: no such limit).
    :ivar max_args_chars: length of the JSON array of one connection's topics (``None``: no such limit).
    :ivar max_per_request: topics in one frame (``None``: no such limit).
    :ivar max_messages_per_s: frames the client may send a connection per second (``None``: no limit).
    :ivar ping / ping_interval_s: the application-level keep-alive frame, if the venue needs one.
    """

    url: str
    subscribe: Callable[[list[str], str], str]
    unsubscribe: Callable[[list[str], str], str]
    ack: Callable[[Any], Ack | None]
    max_topics: int | None = None
    max_args_chars: int | None = None
    max_per_request: int | None = None
    max_messages_per_s: int | None = None
    ping: Callable[[], str] | None = None
    ping_interval_s: float = 20.0

    def fits(self, topics: set[str], topic: str) -> bool:
        """Whether ``topic`` may join a connection holding ``topics``."""
        if self.max_topics is not None and len(topics) + 1 > self.max_topics:
            return False
        return self.max_args_chars is None or args_chars([*topics, topic]) <= self.max_args_chars


def args_chars(topics: Iterable[str]) -> int:
    """Length of ``topics`` as a JSON array (Bybit's per-connection "args" limit is counted on it)."""
    return len(json.dumps(sorted(topics), separators=(",", ":")))


class _Throttle:
    """At most 80 % of ``per_s`` sends in any one-second window (``None``: no limit): the venue counts what it
    receives, and frames sent a second apart can arrive closer together."""

    def __init__(self, per_s: int | None) -> None:
        self.per_s = None if per_s is None else max(1, per_s * 8 // 10)
        self._sent: collections.deque[float] = collections.deque()

    async def wait(self) -> None:
        if self.per_s is None:
            return
        while len(self._sent) >= self.per_s:
            age = time.monotonic() - self._sent[0]
            if age >= 1.0:
                self._sent.popleft()
                continue
            await asyncio.sleep(1.0 - age)
        self._sent.append(time.monotonic())


class _Connection:
    """One socket and the topics it should hold (``wanted``) versus holds (``live``)."""

    def __init__(self, pool: MarkSocketPool, number: int) -> None:
        self.pool = pool
        self.number = number
        self.wanted: set[str] = set()
        self.live: set[str] = set()
        self.dirty = asyncio.Event()
        self.pending: dict[str, tuple[str, list[str]]] = {}
        self.task = asyncio.create_task(self._run(), name=f"{pool.name}-marks-{number}")

    async def _run(self) -> None:
        backoff = self.pool.backoff()
        rules = self.pool.rules
        while True:
            try:
                async with ws_connect(rules.url, self.pool.name, ping_interval=None, max_size=2**22) as ws:
                    self.pool.counters["connects"] += 1
                    backoff.reset()
                    self.live, self.pending = set(), {}
                    throttle = _Throttle(rules.max_messages_per_s)
                    self.dirty.set()
                    helpers = [asyncio.create_task(self._send_loop(ws, throttle))]
                    if rules.ping is not None:
                        helpers.append(asyncio.create_task(self._ping_loop(ws, throttle)))
                    try:
                        async for raw in ws:
                            await self._receive(raw)
                    finally:
                        for helper in helpers:
                            helper.cancel()
                        for helper in helpers:
                            with contextlib.suppress(asyncio.CancelledError, Exception):
                                await helper
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                log.info("%s mark socket %d: %s: %s", self.pool.name, self.number, type(exc).__name__, exc)
            self.pool.counters["disconnects"] += 1
            await asyncio.sleep(backoff.next_delay())

    async def _receive(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            message = None
        ack = self.pool.rules.ack(message) if message is not None else None
        if ack is None:
            await self.pool.on_frame(raw)
            return
        op, topics = self.pending.pop(ack.request_id, ("", []))
        if not ack.ok:
            self.pool.counters["refused"] += 1
            log.warning("%s mark socket %d: %s of %d topic(s) refused: %s", self.pool.name, self.number,
                        op or "request", len(topics), ack.detail)
            if op == "subscribe":
                self.live -= set(topics)

    async def _send_loop(self, ws: Any, throttle: _Throttle) -> None:
        rules = self.pool.rules
        per = rules.max_per_request or 10**9
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            while True:  # drops first, so a connection never holds more than its share
                drop, add = sorted(self.live - self.wanted), sorted(self.wanted - self.live)
                if drop:
                    op, batch, build = "unsubscribe", drop[:per], rules.unsubscribe
                    self.live -= set(batch)
                elif add:
                    op, batch, build = "subscribe", add[:per], rules.subscribe
                    self.live |= set(batch)
                else:
                    break
                request_id = str(next(self.pool.request_ids))
                self.pending[request_id] = (op, batch)
                await throttle.wait()
                await ws.send(build(batch, request_id))
                self.pool.counters[f"{op}_frames"] += 1

    async def _ping_loop(self, ws: Any, throttle: _Throttle) -> None:
        assert self.pool.rules.ping is not None
        while True:
            await asyncio.sleep(self.pool.rules.ping_interval_s)
            await throttle.wait()
            await ws.send(self.pool.rules.ping())

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


class MarkSocketPool:
    """The public sockets of one venue's mark prices, following a :class:`WatchedSymbols`.

    :param name: venue name (logs, task names).
    :param rules: the venue's subscription protocol and limits.
    :param on_frame: called with every message that is not an answer to a request (data frames).
    :param backoff: a fresh reconnect backoff per connection.
    :ivar counters: ``connects`` (sockets opened, reconnects included), ``disconnects`` (sockets lost),
        ``subscribe_frames``, ``unsubscribe_frames``, ``refused`` (requests the venue answered with an error).
    """

    def __init__(
        self, name: str, rules: SubscriptionRules, on_frame: Callable[[str | bytes], Awaitable[None]],
        backoff: Callable[[], Backoff],
    ) -> None:
        self.name = name
        self.rules = rules
        self.on_frame = on_frame
        self.backoff = backoff
        self.connections: list[_Connection] = []
        self.counters: collections.Counter[str] = collections.Counter()
        self.request_ids = itertools.count(1)
        self._numbers = itertools.count(1)

    def apply(self, topics: Iterable[str]) -> None:
        """Hold exactly ``topics``: drop the others where they are, add the new ones to the first connection
        with room (opening a connection when none has any), close connections left empty but the first."""
        wanted = set(topics)
        for connection in self.connections:
            if connection.wanted - wanted:
                connection.wanted &= wanted
                connection.dirty.set()
        held = set().union(*(c.wanted for c in self.connections))
        for topic in sorted(wanted - held):
            home = next((c for c in self.connections if self.rules.fits(c.wanted, topic)), None)
            if home is None:
                home = _Connection(self, next(self._numbers))
                self.connections.append(home)
            home.wanted.add(topic)
            home.dirty.set()
        for connection in self.connections[1:]:
            if not connection.wanted:
                self.connections.remove(connection)
                asyncio.ensure_future(connection.close())

    async def follow(self, symbols: WatchedSymbols, topic_of: Callable[[str], str]) -> None:
        """Keep the sockets in step with ``symbols`` until cancelled."""
        try:
            while True:
                self.apply(topic_of(symbol) for symbol in symbols.current())
                await symbols.wait_changed()
        finally:
            await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)
            self.connections.clear()
