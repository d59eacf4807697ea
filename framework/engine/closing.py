"""Closing a position on purpose (strategy exit, a stop that would trigger immediately), through the
book's one close path."""

from __future__ import annotations

import logging
from decimal import Decimal

import pluggy

from framework.driver import Driver
from framework.engine.book import BookPosition, PositionBook
from framework.engine.broadcast import alert, client_order_id
from framework.errors import LeaseLost, OrderNotFound, PositionGone, RateLimited, RequestExpired, VenueError
from framework.models import OrderIntent, StopLoss, close_side
from framework.store import Store

log = logging.getLogger(__name__)

CLOSE_ATTEMPTS = 3  # a rate-limited close is tried again after the venue's pause, this many orders in all


def intent_of(venue: str, account: str, position: BookPosition, cid: str) -> OrderIntent:
    """The record a close / protective order of ``position`` is journalled under (``orders.intent``)."""
    return OrderIntent(
        account=account, venue=venue, symbol=position.symbol, side=position.side, contracts=position.contracts,
        stop_loss=position.stop_price or position.entry_price or Decimal(1), client_order_id=cid,
    )


async def cancel_quietly(driver: Driver, stop: StopLoss | None) -> None:
    """Cancel a leftover order-based stop / take-profit; a venue that no longer has it is fine."""
    if stop is None or stop.attached:
        return
    try:
        await driver.cancel_stop_loss(stop)
    except (OrderNotFound, PositionGone):
        pass
    except (VenueError, LeaseLost) as exc:  # not the owner any more: the owner's reconciliation cancels it
        log.warning("%s %s: leftover %s not cancelled: %s", stop.venue, stop.symbol, stop.kind, exc)


async def cancel_leftovers(driver: Driver, position: BookPosition) -> None:
    """After ``position`` closed, cancel its order-based stop, take-profit and trailing stop still resting on
    the venue (a Binance close-position order outlives its position and would refuse the next stop with -4130)."""
    for stop in (position.stop, position.take_profit, position.native_trail):
        await cancel_quietly(driver, stop)


async def close_on_venue(
    book: PositionBook, driver: Driver, store: Store, pm: pluggy.PluginManager, symbol: str,
    reason: str = "reduce_only_close", attempts: int = CLOSE_ATTEMPTS,
) -> bool:
    """Close ``symbol``'s whole position with a reduce-only market order (client id ``fw-c-…``).

    The order side comes from the book's position side (:func:`framework.models.close_side`).  A
    ``PositionGone`` answer closes the book's position (reason ``position_gone``).  A rate-limit refusal
    (not executed) is tried again, up to ``attempts`` orders in all, each after the venue's pause
    (:meth:`Driver.rate_limit_pause`); so is a close that filled only part of the position (its rest
    expired): the book keeps the position at the size the stream shows until the rest is closed.

    :returns: ``True`` when the position left the book during this call: closed by its order, answered
        ``PositionGone``, or closed meanwhile (the stream's closure between two attempts); ``False`` when
        ``symbol`` was not held when the call began, or is still held after ``attempts`` orders (partly
        filled each time).
    :raises RequestExpired: the close was refused as outside its receive window, or not sent (fenced: the
        lease may have passed on); it did nothing, the position stays in the book, never "gone".
    :raises VenueError: the venue refused the close for another reason, or kept rate-limiting it (the
        position stays in the book, still protected by its stop; a critical alert says so).
    """
    for attempt in range(1, attempts + 1):
        try:
            if await _close_once(book, driver, store, pm, symbol, reason):
                return True
            if not book.holds(symbol):  # not held at the first attempt; gone meanwhile after a partial close
                return attempt > 1
            if attempt == attempts:
                return False
            # the market order filled part of the position (the book took the rest: price protection, a thin
            # book; docs/conformance.md B20 / Y14): close what is left, reduce-only, never more than is held
            log.warning("%s %s: close filled part of the position (attempt %d of %d); closing the rest",
                        book.venue, symbol, attempt, attempts)
        except RateLimited as exc:
            if attempt == attempts:
                await alert(pm, "critical", f"close refused {attempts} times (rate limited), position still open with "
                            f"its stop: {exc}", venue=book.venue, symbol=symbol)
                raise
            log.warning("%s %s: close rate limited (attempt %d of %d): %s", book.venue, symbol, attempt, attempts,
                        exc)
    return False  # attempts < 1: nothing tried


async def _close_once(
    book: PositionBook, driver: Driver, store: Store, pm: pluggy.PluginManager, symbol: str, reason: str,
) -> bool:
    position = book.get(symbol)
    if position is None:
        return False
    contracts = position.contracts  # as sent: the book's record may shrink under us while the close executes
    cid = client_order_id("c")
    await store.record_order(
        intent_of(book.venue, book.account, position, cid), purpose="close", client_order_id=cid,
        side=close_side(position.side), contracts=contracts, reduce_only=True,
    )
    await store.update_order(book.account, book.venue, cid, state="submitted")
    try:
        order = await driver.close_position(symbol, position.side, contracts, cid)
    except PositionGone:
        await store.update_order(book.account, book.venue, cid, state="rejected")
        await book.close(symbol, "position_gone", source="error")
        return True
    except (RateLimited, RequestExpired):  # refused before matching (or never sent: fenced): not executed
        await store.update_order(book.account, book.venue, cid, state="rejected")
        raise
    except VenueError as exc:
        await store.update_order(book.account, book.venue, cid, state="unknown")
        await alert(pm, "critical", f"close failed, position still open with its stop; the close order is resolved by "
                    f"client order id: {exc}", venue=book.venue, symbol=symbol)
        raise
    await store.update_order(book.account, book.venue, cid, state=order.status, venue_order_id=order.id,
                             filled=order.filled, average=order.average)
    if order.filled >= contracts:  # leftover stops are cancelled by the book's on_closed
        await book.close(symbol, reason, price=order.average, source="engine", timestamp=order.timestamp)
    return not book.holds(symbol)
