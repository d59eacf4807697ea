"""Fault knobs of the simulated venue, their parser, and the stream shaper both façades share.

The venue itself only reads :attr:`Faults.reject_next_orders`, ``reject_triggered_stops``,
``accept_duplicate_client_ids`` and the ``market_fill_*`` knobs; every other knob is applied by the wire
façades (REST lag, HTTP errors, timeouts) or by :class:`FrameShaper` (private-stream frames).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from framework.venue.core import Venue

log = logging.getLogger(__name__)


class Faults(BaseModel):
    """Mutable fault knobs (``venue.faults``); assignments are validated.

    Counters named ``*_next*`` / ``*_frames`` are decremented by whoever applies them.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    rest_position_lag_ms: int = Field(default=0, ge=0, le=30_000, description="REST positions lag behind, ms")
    stream_delay_ms: int = Field(
        default=0, ge=0, le=120_000, description="every private frame arrives this late, ms"
    )
    drop_rate: float = Field(default=0.0, ge=0, le=1, description="probability a private frame is dropped")
    duplicate_rate: float = Field(
        default=0.0, ge=0, le=1, description="probability a private frame is sent twice"
    )
    reorder_rate: float = Field(
        default=0.0, ge=0, le=1, description="probability a frame is held behind the next one"
    )
    drop_closing_frames: int = Field(
        default=0, ge=0, description="drop the next N position frames reporting flat"
    )
    duplicate_closing_frames: int = Field(default=0, ge=0, description="send the next N closing frames twice")
    delay_closing_frames_ms: int = Field(
        default=0, ge=0, le=300_000, description="closing frames arrive this late, ms"
    )
    minimal_order_response: bool = Field(
        default=False,
        description="order creation answers as little as the venue may: only ids (Bybit), the order as "
        "accepted before its fill, status NEW, executedQty 0 (Binance's ACK)",
    )
    http_error_status: int = Field(
        default=503, ge=400, le=599, description="status served by http_error_next"
    )
    http_error_next: int = Field(
        default=0, ge=0, description="the next N REST calls answer http_error_status"
    )
    http_error_path: str | None = Field(
        default=None, description="only calls to this path count for http_error_next (a background call of the "
        "driver's, a keep-alive or a snapshot, must not take a test's one-shot fault)"
    )
    timeout_after_accept_next: int = Field(
        default=0, ge=0, description="next N order creations execute, never answer"
    )
    reject_next_orders: int = Field(default=0, ge=0, description="the next N order creations are rejected")
    answer_without_order_id_next: int = Field(
        default=0, ge=0, description="the next N accepted orders are answered without their id (a malformed "
        "answer no venue documents: the order rests, the answer cannot say which it is)"
    )
    disconnect_every_ms: int = Field(
        default=0, ge=0, description="drop private streams this often (0 = never)"
    )
    order_visibility_lag_ms: int = Field(
        default=0, ge=0, le=30_000,
        description="a new order (and the position it opens) is invisible to order queries / trading-stop, ms",
    )
    list_no_stops: bool = Field(
        default=False,
        description="REST listings omit resting stops and take-profits (Binance open algo orders, Bybit a "
        "position's stopLoss / takeProfit): a venue that lists no stop after placing it",
    )
    market_fill_parts: int = Field(
        default=1, ge=1, le=20, description="a client's market order fills in this many executions (one tick)"
    )
    market_fill_ratio: float = Field(
        default=1.0, ge=0, le=1,
        description="share of a client's market order the book can fill; the rest expires (price protection)",
    )
    reject_triggered_stops: int = Field(
        default=0, ge=0,
        description="the next N reduce-only conditional orders (stops, trails) to trigger are denied by the matching "
        "engine when they trigger (Binance ALGO_UPDATE REJECTED): the order is gone, nothing fills",
    )
    accept_duplicate_client_ids: bool = Field(
        default=False,
        description="an order whose client order id an open order already carries is accepted as a second order "
        "(no -4116 / 110072): a venue that does not keep client order ids unique",
    )
    rate_limits: bool = Field(
        default=False,
        description="refuse what the venue's documented request limits refuse (Binance 429 / 418 on the IP's "
        "weight, Bybit 10006 per endpoint and 403 per IP); the usage headers are sent either way",
    )
    shuffle_topics: bool = Field(
        default=False, description="interleave one burst's private frames across topics at random (venue.rng)"
    )


FAULT_NAMES: tuple[str, ...] = tuple(Faults.model_fields)


def parse_faults(spec: str | dict[str, Any] | None) -> Faults:
    """Build :class:`Faults` from ``"rest_position_lag_ms=5000,drop_closing_frames=1"`` or a dict.

    Booleans accept ``true/false/1/0/yes/no``; an empty string or ``None`` gives the defaults.

    :raises ValueError: an unknown knob, a missing ``=``, or a value out of range / of the wrong type;
        the message names the offending knob and lists the known ones.
    """
    if spec is None:
        return Faults()
    if isinstance(spec, str):
        values: dict[str, Any] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep:
                raise ValueError(f"fault {name!r} has no value: write {name}=VALUE")
            values[name] = value.strip()
    else:
        values = dict(spec)
    unknown = sorted(set(values) - set(FAULT_NAMES))
    if unknown:
        raise ValueError(f"unknown fault knob(s) {', '.join(unknown)}; known: {', '.join(FAULT_NAMES)}")
    try:
        return Faults(**values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}={e.get('input')!r}: {e['msg']}" for e in error.errors()
        )
        raise ValueError(f"bad fault value: {problems}") from None


SendFn = Callable[[str], Awaitable[Any]]


class FrameShaper:
    """Applies the stream knobs of ``venue.faults`` to private frames, once for both façades.

    ``await shaper.send(ws.send_str, text, closing=True)`` sends now, later, twice, out of order or not at
    all.  Random decisions draw from ``venue.rng`` (only for knobs that are non-zero, so a seeded run is
    reproducible).  Delayed and held frames are sent from background tasks; :meth:`close` cancels them.

    :ivar stats: ``sent`` (frames actually written, duplicates included), ``dropped``, ``duplicated``,
        ``reordered``, ``delayed``, ``failed`` (a background send raised, e.g. the socket closed).
    """

    #: a frame held back for reordering goes out after the next frame, or after this long at the latest
    REORDER_HOLD_MS = 200

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.stats: Counter[str] = Counter()
        self._held: tuple[SendFn, str] | None = None
        self._held_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, send: SendFn, frame: str, closing: bool = False) -> None:
        """Deliver ``frame`` through ``send`` as the fault knobs say.

        :param send: coroutine function writing one text frame (e.g. ``ws.send_str``).
        :param closing: the frame reports a position as flat (targets the ``*_closing_frames`` knobs).
        :raises Exception: whatever ``send`` raises for a frame sent inline.
        """
        faults, rng = self.venue.faults, self.venue.rng
        copies = 1
        delay_ms = faults.stream_delay_ms
        if closing and faults.drop_closing_frames > 0:
            faults.drop_closing_frames -= 1
            self.stats["dropped"] += 1
            return
        if faults.drop_rate > 0 and rng.random() < faults.drop_rate:
            self.stats["dropped"] += 1
            return
        if closing and faults.duplicate_closing_frames > 0:
            faults.duplicate_closing_frames -= 1
            copies = 2
        elif faults.duplicate_rate > 0 and rng.random() < faults.duplicate_rate:
            copies = 2
        if closing and faults.delay_closing_frames_ms > delay_ms:
            delay_ms = faults.delay_closing_frames_ms
        if copies == 2:
            self.stats["duplicated"] += 1
        if delay_ms > 0:
            self.stats["delayed"] += 1
            self._spawn(self._send_later(send, frame, copies, delay_ms))
            return
        if self._held is None and faults.reorder_rate > 0 and rng.random() < faults.reorder_rate:
            self.stats["reordered"] += 1
            self._hold(send, frame)
            return
        for _ in range(copies):
            await self._write(send, frame)
        await self._release_held()

    async def flush(self) -> None:
        """Send a frame held for reordering now, and wait for every delayed frame."""
        await self._release_held()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        """Forget held and delayed frames (the connection is gone)."""
        if self._held_timer is not None:
            self._held_timer.cancel()
        self._held = None
        for task in list(self._tasks):
            task.cancel()

    async def _write(self, send: SendFn, frame: str) -> None:
        await send(frame)
        self.stats["sent"] += 1

    def _hold(self, send: SendFn, frame: str) -> None:
        self._held = (send, frame)
        loop = asyncio.get_running_loop()
        self._held_timer = loop.call_later(
            self.REORDER_HOLD_MS / 1000, lambda: self._spawn(self._release_held())
        )

    async def _release_held(self) -> None:
        if self._held is None:
            return
        send, frame = self._held
        self._held = None
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        await self._write(send, frame)

    async def _send_later(self, send: SendFn, frame: str, copies: int, delay_ms: int) -> None:
        await asyncio.sleep(delay_ms / 1000)
        for _ in range(copies):
            await self._write(send, frame)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(self._guard(coro))
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            coro.close()  # a task cancelled before it started never ran its coroutine

        task.add_done_callback(done)

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the socket went away: count it, the stream's owner reconnects
            self.stats["failed"] += 1
            log.info("delayed frame not delivered: %s", error)
