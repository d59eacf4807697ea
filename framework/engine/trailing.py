"""Trailing stops run by the engine: the stop follows the best mark price, only ever tightening.

Fed with :class:`~framework.models.MarkPrice` ticks (``driver.watch_mark_prices`` with this manager as
sink).  A move uses the driver's ``move_stop_loss`` (amend in place, or new-before-cancel: no window
without a stop, docs/incidents.md I-5), is rate-limited, and never happens for a symbol the book no longer
holds.  ``WouldTriggerImmediately`` → a reduce-only close through the one close path; ``PositionGone`` →
``book.close``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import pluggy

from framework.driver import Driver
from framework.engine.book import BookPosition, PositionBook
from framework.engine.closing import cancel_quietly, close_on_venue
from framework.engine.protection import Protector
from framework.engine.settings import EngineSettings
from framework.errors import PositionGone, VenueError, WouldTriggerImmediately
from framework.models import MarkPrice, StreamEvent, now_ms
from framework.store import Store

log = logging.getLogger(__name__)


@dataclass
class _Trail:
    position_key: tuple[str | None, int]  # a new position of the same symbol starts a new trail
    activated: bool = False
    best: Decimal | None = None
    last_move_ms: int = 0


def proposed_stop(position: BookPosition, best: Decimal) -> Decimal:
    """The stop ``callback_rate`` percent behind ``best`` (below for a long, above for a short)."""
    assert position.trailing is not None
    rate = position.trailing.callback_rate / 100
    return best * (1 - rate) if position.side == "long" else best * (1 + rate)


class TrailingManager:
    """Moves the stops of positions that carry a :class:`~framework.models.TrailingSpec`.

    :ivar moves: stop moves made, per symbol.
    """

    def __init__(
        self, book: PositionBook, driver: Driver, store: Store, pm: pluggy.PluginManager,
        protector: Protector, settings: EngineSettings | None = None, clock: Callable[[], int] = now_ms,
    ) -> None:
        self.book = book
        self.driver = driver
        self.store = store
        self.pm = pm
        self.protector = protector
        self.settings = settings or EngineSettings()
        self.clock = clock
        self._trails: dict[str, _Trail] = {}
        self.moves: Counter[str] = Counter()

    # StreamSink: mark prices arrive through on_event; the rest is the private stream's business.
    async def on_event(self, event: StreamEvent) -> None:
        if isinstance(event, MarkPrice):
            try:
                await self.on_mark(event)
            except Exception:  # a tick must never kill the mark-price stream
                log.exception("%s %s: trailing tick failed", self.book.venue, event.symbol)

    async def on_connected(self, reconnect: bool) -> None:
        return None

    async def on_disconnected(self, detail: str) -> None:
        return None

    def on_malformed(self, raw: str | bytes, error: Exception) -> None:
        log.warning("%s: malformed mark-price frame: %s", self.book.venue, error)

    async def on_mark_price(self, symbol: str, price: Decimal) -> None:
        """Feed one mark price by hand (replay, tests): same as a :class:`MarkPrice` tick."""
        await self.on_mark(MarkPrice(venue=self.book.venue, symbol=symbol, price=price, timestamp=now_ms()))

    async def on_mark(self, tick: MarkPrice) -> None:
        """Follow one mark-price tick; move the stop when it tightens enough and not too often.

        Ticks of one symbol are handled one at a time: two moves from the same resting stop would each
        place a new stop and cancel the same old one, leaving a duplicate behind.
        """
        async with self.book.stop_lock(tick.symbol):
            await self._follow(tick)

    async def _follow(self, tick: MarkPrice) -> None:
        position = self.book.get(tick.symbol)
        if position is None or position.trailing is None or position.stop is None:
            self._trails.pop(tick.symbol, None)
            return
        key = (position.intent_id, position.opened_at)
        trail = self._trails.get(tick.symbol)
        if trail is None or trail.position_key != key:
            trail = self._trails[tick.symbol] = _Trail(key)
        long = position.side == "long"
        activation = position.trailing.activation_price
        if not trail.activated:
            if activation is not None and (tick.price < activation if long else tick.price > activation):
                return
            trail.activated = True
        if trail.best is None or (tick.price > trail.best if long else tick.price < trail.best):
            trail.best = tick.price
        candidate = proposed_stop(position, trail.best)
        current = position.stop.trigger_price
        if (candidate <= current) if long else (candidate >= current):
            return  # never loosen
        if abs(candidate - current) * 100 / current < self.settings.trailing_min_change_pct:
            return
        if self.clock() - trail.last_move_ms < self.settings.trailing_min_interval_ms:
            return
        trail.last_move_ms = self.clock()
        await self._move(tick.symbol, candidate)

    async def _move(self, symbol: str, trigger_price: Decimal) -> None:
        position = self.book.get(symbol)
        if position is None or position.stop is None:  # liveness before the move
            return
        old = position.stop
        try:
            new = await self.driver.move_stop_loss(old, trigger_price)
        except PositionGone:
            await self.book.close(symbol, "position_gone", source="error")
            return
        except WouldTriggerImmediately:
            await close_on_venue(self.book, self.driver, self.store, self.pm, symbol)
            return
        except VenueError as exc:
            log.warning("%s %s: stop move to %s failed, old stop still resting: %s", self.book.venue, symbol,
                        trigger_price, exc)
            return
        if not self.book.holds(symbol):  # closed during the move: leave nothing behind (I-5)
            await cancel_quietly(self.driver, new)
            return
        self.moves[symbol] += 1
        await self.protector.record(symbol, new, previous=old.trigger_price)
