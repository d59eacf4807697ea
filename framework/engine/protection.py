"""Every open position has a resting stop (docs/incidents.md I-1, I-4).

A position found without one is protected with a bounded number of attempts; ``PositionGone`` closes
the position through the book instead of being retried; a stop that would trigger at once is answered
with a reduce-only close.  Stop attempts are counted per symbol so tests can assert that a closed
position never gets one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from decimal import Decimal

import pluggy

from framework.driver import Driver
from framework.engine.book import BookPosition, PositionBook
from framework.engine.broadcast import alert, broadcast
from framework.engine.closing import cancel_quietly, close_on_venue
from framework.engine.settings import EngineSettings
from framework.errors import PositionGone, VenueError, WouldTriggerImmediately
from framework.models import StopEvent, StopLoss
from framework.store import Store

log = logging.getLogger(__name__)


def default_stop_price(position: BookPosition, pct: Decimal, mark_price: Decimal | None) -> Decimal:
    """A stop ``pct`` percent on the losing side of the mark price (else the entry price)."""
    reference = mark_price or position.entry_price
    if reference is None:
        raise ValueError(f"no price to derive a stop for {position.symbol}")
    factor = (Decimal(100) - pct) / 100 if position.side == "long" else (Decimal(100) + pct) / 100
    return reference * factor


class Protector:
    """Places the stops the book's positions lack.

    :ivar stop_attempts: ``set_stop_loss`` calls made, per symbol.
    """

    def __init__(
        self, book: PositionBook, driver: Driver, store: Store, pm: pluggy.PluginManager,
        settings: EngineSettings | None = None,
    ) -> None:
        self.book = book
        self.driver = driver
        self.store = store
        self.pm = pm
        self.settings = settings or EngineSettings()
        self.stop_attempts: Counter[str] = Counter()

    async def protect(
        self, symbol: str, trigger_price: Decimal | None = None, mark_price: Decimal | None = None
    ) -> StopLoss | None:
        """Place a stop-loss for the book's position of ``symbol``.

        :param trigger_price: the stop wanted; default: the position's intended stop, else
            ``adopt_stop_pct`` from ``mark_price`` / the entry price.
        :returns: the resting stop, or ``None`` when the position is gone / was closed instead.
        """
        last_error: Exception | None = None
        for attempt in range(self.settings.protect_attempts):
            position = self.book.get(symbol)
            if position is None:  # liveness: never a stop for a position the book no longer holds
                return None
            price = trigger_price or position.stop_price or default_stop_price(
                position, self.settings.adopt_stop_pct, mark_price
            )
            self.stop_attempts[symbol] += 1
            try:
                stop = await self.driver.set_stop_loss(symbol, position.side, position.contracts, price)
            except PositionGone:  # "closed", not "retry" (I-1)
                await self.book.close(symbol, "position_gone", source="error")
                return None
            except WouldTriggerImmediately:
                await close_on_venue(self.book, self.driver, self.store, self.pm, symbol)
                return None
            except VenueError as exc:
                last_error = exc
                log.warning("%s %s: stop attempt %d failed: %s", self.book.venue, symbol, attempt + 1, exc)
                await asyncio.sleep(self.settings.protect_retry_ms / 1000 * (attempt + 1))  # backoff
                continue
            if not self.book.holds(symbol):  # closed while we placed it
                await cancel_quietly(self.driver, stop)
                return None
            await self.record(symbol, stop, previous=None)
            return stop
        await alert(self.pm, "critical", f"position without stop-loss after {self.settings.protect_attempts} "
                    f"attempts; reconciliation tries again: {last_error}", venue=self.book.venue, symbol=symbol)
        return None

    async def reprotect(self, symbol: str, removed_order_id: str | None) -> StopLoss | None:
        """The stream says the stop of ``symbol``'s position is gone (its order ``removed_order_id``, or
        ``None`` for a stop attached to the position): place a new one at the position's intended stop.

        It first lets the frames of a closure settle (``reprotect_settle_ms``: a venue cancels a closed
        position's stops, and the topics are not ordered), then does nothing if the position closed or its stop moved
        meanwhile (a trailing move cancels the stop it replaced).  Under the symbol's stop lock, so a move
        in flight finishes first.

        :returns: the new stop, or ``None`` when nothing was to be done or the position is gone.
        """
        await asyncio.sleep(self.settings.reprotect_settle_ms / 1000)
        async with self.book.stop_lock(symbol):
            position = self.book.get(symbol)
            last = self.book.last_update(symbol)
            if position is None or position.stop is None or position.stop.order_id != removed_order_id:
                return None
            if last is not None and last.contracts == 0 and last.timestamp >= position.opened_at:
                return None  # the stream says flat: the closure is the book's to record, not a stop to place
            await alert(self.pm, "warning", f"stop {removed_order_id} removed on the venue; re-protecting",
                        venue=self.book.venue, symbol=symbol)
            return await self.protect(symbol)

    async def record(self, symbol: str, stop: StopLoss, previous: Decimal | None, unprotected_ms: int = 0) -> None:
        """Book + DB + ``on_stop_moved`` for a stop now resting."""
        self.book.set_stop(symbol, stop)
        await self.book.writes.write(f"stop {symbol}", lambda: self.store.record_stop(self.book.account, stop))
        await broadcast(self.pm, "on_stop_moved", event=StopEvent(
            account=self.book.account, venue=self.book.venue, symbol=symbol, side=stop.side, previous=previous,
            current=stop.trigger_price, order_id=stop.order_id, unprotected_ms=unprotected_ms,
        ))
