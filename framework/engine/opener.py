"""Atomic open: an :class:`~framework.models.OrderIntent` becomes a protected position, or nothing.

Order of steps (docs/incidents.md I-3, I-4)::

    persist intent → on_order_submitted → [stop first: stop_before_entry]
    → entry (stop attached: attached_stop_on_entry) → normalize_order → [set_stop_loss]
    → verify_position (time budget) → take-profit → book.add (DB row) → on_position_open

Any failure before the position is protected rolls back from the intent plus observed fills: a
reduce-only close (client id ``fw-r-…``) whose side comes from the intent's position side, then proof
that the venue is flat; without proof, :class:`~framework.errors.RollbackFailed` and a critical alert.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import pluggy

from framework.driver import Driver
from framework.engine.book import BookPosition, PositionBook
from framework.engine.broadcast import alert, broadcast, client_order_id
from framework.engine.closing import cancel_quietly
from framework.engine.settings import EngineSettings
from framework.engine.trailing import place_native_trail
from framework.errors import (
    ConfigError,
    OrderNotFound,
    OrderRejected,
    OutcomeUnknown,
    PositionGone,
    RateLimited,
    RollbackFailed,
    StoreError,
    VenueError,
)
from framework.models import Order, OrderIntent, PositionUpdate, StopLoss, close_side
from framework.store import Store

log = logging.getLogger(__name__)

NOTHING_FILLED = ("rejected", "canceled", "expired")
STREAM_POLL_S = 0.25  # an entry awaiting its answer re-checks the stream at least this often


class OpenNotVerified(OutcomeUnknown):
    """The entry's outcome could not be established within the budget.

    Not a rejection: any stop already placed stays, and the reconciler resolves the order by client
    order id and adopts (and protects) the position if the venue shows one.
    """


class Opener:
    """Opens positions on one venue.

    :param book: the venue's PositionBook.
    :param driver: the venue's driver (connected).
    :param store: persistence.
    :param pm: plugin manager (lifecycle hooks).
    :param settings: time budgets.
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

    async def open(self, intent: OrderIntent) -> BookPosition:
        """Open ``intent`` atomically.

        :returns: the open, protected position as the book holds it.
        :raises DuplicateOpenPosition: the symbol already has a position (or an open in progress).
        :raises OrderRejected: the venue refused the entry (a rate-limit refusal too: its cause is the
            :class:`RateLimited`, and the venue's calls are paused) or reports nothing filled; nothing left open.
        :raises OpenNotVerified: the outcome is unknown; the stop is kept, reconciliation takes over.
        :raises RollbackFailed: a failed open was rolled back but the venue could not be shown flat.
        :raises VenueError: the open failed and was rolled back (the venue was shown flat).
        """
        if intent.venue != self.book.venue or intent.account != self.book.account:
            raise ConfigError(f"intent for {intent.account}/{intent.venue} given to the {self.book.venue} engine")
        self.book.begin_open(intent)
        try:
            return await self._open(intent)
        finally:
            self.book.end_open(intent.symbol)

    async def _open(self, intent: OrderIntent) -> BookPosition:
        account, venue, cid = intent.account, intent.venue, intent.client_order_id
        await self._persist_before_submit(intent, self.store.record_order(intent))
        await broadcast(self.pm, "on_order_submitted", intent=intent)
        stop: StopLoss | None = None
        if self.driver.supports("stop_before_entry"):
            try:  # a closePosition stop may rest before the entry: no naked window at all
                stop = await self.driver.set_stop_loss(intent.symbol, intent.side, intent.contracts, intent.stop_loss)
            except VenueError:
                await self._journal(cid, state="rejected")
                raise
        attached = stop is None and self.driver.supports("attached_stop_on_entry")
        await self._persist_before_submit(intent, self.store.update_order(account, venue, cid, state="submitted"))
        order: Order | None = None
        entry = asyncio.ensure_future(self.driver.create_entry(intent))
        try:
            if stop is None and not attached:
                stop = await self._protect_on_stream_fill(intent, entry)
            try:
                raw = await entry
            except OrderRejected:
                await self._journal(cid, state="rejected")
                await cancel_quietly(self.driver, stop)
                raise
            except RateLimited as exc:  # refused before matching, not executed: nothing to roll back
                await self._journal(cid, state="rejected")
                await cancel_quietly(self.driver, stop)
                raise OrderRejected(f"entry refused, rate limited: {exc.message}", venue=venue, symbol=intent.symbol,
                                    order_id=cid) from exc
            except OutcomeUnknown:
                await self._journal(cid, state="unknown")
                order = await self._resolve_by_client_id(intent)
                if order is None:
                    await self._protect_unknown(intent, stop, attached)
                    raise OpenNotVerified(
                        "entry outcome unknown; left to reconciliation", venue=venue, symbol=intent.symbol,
                        order_id=cid,
                    ) from None
            else:
                order = await self.driver.normalize_order(raw, intent)
            await self._journal(cid, state=order.status, venue_order_id=order.id,
                                          filled=order.filled, average=order.average)
            if order.status in NOTHING_FILLED and order.filled == 0:
                await cancel_quietly(self.driver, stop)
                raise OrderRejected(f"entry {order.status}, nothing filled", venue=venue, symbol=intent.symbol,
                                    order_id=cid)
            if attached:
                stop = StopLoss(venue=venue, symbol=intent.symbol, side=intent.side, trigger_price=intent.stop_loss)
            elif stop is None:
                stop = await self.driver.set_stop_loss(
                    intent.symbol, intent.side, order.filled or order.amount, intent.stop_loss
                )
            verification = await self.driver.verify_position(intent, order, self.settings.verify_budget_ms,
                                                               self.book)
        except OpenNotVerified:
            raise
        except Exception as exc:  # failed before the position is protected: roll back
            refused = order is None or order.status in NOTHING_FILLED and order.filled == 0
            if isinstance(exc, OrderRejected) and refused:
                raise  # the entry itself was refused: nothing to roll back
            # anything else, a refusal of the stop after the fill included, leaves a fill to close
            await self._rollback(intent, order, stop, exc, stop_rests=stop is not None or attached)
            raise
        if verification.outcome == "absent":
            await cancel_quietly(self.driver, stop)
            raise OrderRejected(f"venue reports no position: {verification.detail}", venue=venue,
                                symbol=intent.symbol, order_id=cid)
        if verification.outcome == "unknown":  # not absent: keep the stop, reconciliation keeps looking
            await alert(self.pm, "warning", f"entry not verified within budget ({verification.detail}); stop kept",
                        venue=venue, symbol=intent.symbol)
            raise OpenNotVerified("position not verified within the budget", venue=venue, symbol=intent.symbol,
                                  order_id=cid)
        take_profit, gone = await self._take_profit(intent, verification.contracts, attached)
        position = BookPosition(
            symbol=intent.symbol, side=intent.side, contracts=verification.contracts,
            entry_price=verification.entry_price or order.average, stop_price=stop.trigger_price, stop=stop,
            take_profit=take_profit, trailing=intent.trailing, intent_id=cid, opened_at=order.timestamp or 0,
        )
        reference = position.entry_price or intent.stop_loss
        if not gone and intent.trailing is not None:
            try:  # beside the fixed stop, which stays: a failure here leaves the trailing to the engine
                await place_native_trail(self.driver, self.pm, self.settings, position, reference)
            except PositionGone:
                gone = True
        await self.book.add(position)
        if gone:
            await self.book.close(intent.symbol, "position_gone", source="error")
        return position

    async def _persist_before_submit(self, intent: OrderIntent, write: Awaitable[Any]) -> None:
        """An intent is persisted before anything is sent; when the database cannot take it, nothing is sent.

        :raises StoreError: the database refused or is unreachable (the open did nothing).
        """
        try:
            await write
        except Exception as exc:
            raise StoreError(f"intent not persisted, nothing sent: {type(exc).__name__}: {exc}", venue=intent.venue,
                             symbol=intent.symbol, order_id=intent.client_order_id) from exc

    async def _journal(self, client_order_id: str, **fields: Any) -> None:
        """Journal what became of an order already sent, through the book's write-behind queue: a database
        outage must not stop an open (or its rollback) once the venue has it."""
        book = self.book
        await book.writes.write(f"order {client_order_id}", lambda: self.store.update_order(
            book.account, book.venue, client_order_id, **fields))

    async def _protect_on_stream_fill(self, intent: OrderIntent, entry: asyncio.Future[Any]) -> StopLoss | None:
        """While the entry's answer is outstanding, place the stop as soon as the stream shows the entry
        filled: a lost or slow answer (a client timeout) must not leave the fill naked until it comes.

        :returns: the stop placed, or ``None`` when the answer came first (or placing failed: the normal
            path places it after the answer).
        """
        cid = intent.client_order_id
        while not entry.done():
            seen = self.book.opening_order(intent.symbol, cid)
            if seen is not None and seen.order.filled > 0:
                try:
                    return await self.driver.set_stop_loss(intent.symbol, intent.side, seen.order.filled,
                                                           intent.stop_loss)
                except VenueError as exc:
                    log.warning("%s %s: stop on the stream's fill failed (placed after the answer): %s",
                                intent.venue, intent.symbol, exc)
                    return None
            waiter: asyncio.Future[Any] = asyncio.ensure_future(self.book.wait_changed(intent.symbol, STREAM_POLL_S))
            try:
                await asyncio.wait({entry, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()  # also when the open itself is cancelled
        return None

    async def _take_profit(
        self, intent: OrderIntent, contracts: Decimal, attached: bool
    ) -> tuple[StopLoss | None, bool]:
        """Place the take-profit; the position is already protected, so a failure only alerts."""
        if intent.take_profit is None:
            return None, False
        if attached:
            return StopLoss(venue=intent.venue, symbol=intent.symbol, side=intent.side, kind="take_profit",
                            trigger_price=intent.take_profit), False
        try:
            tp = await self.driver.set_take_profit(intent.symbol, intent.side, contracts, intent.take_profit)
            return tp, False
        except PositionGone:
            return None, True
        except VenueError as exc:
            await alert(self.pm, "warning", f"take-profit not placed: {exc}", venue=intent.venue, symbol=intent.symbol)
            return None, False

    async def _resolve_by_client_id(self, intent: OrderIntent) -> Order | None:
        """After ``OutcomeUnknown``: ask the venue for the order by client id within the verify budget.

        ``OrderNotFound`` may be lag, so it is retried, waking early on stream evidence.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.verify_budget_ms / 1000
        while True:
            try:
                return await self.driver.fetch_order(intent.symbol, None, intent.client_order_id)
            except (OrderNotFound, VenueError) as exc:
                log.info("%s %s: order %s not resolved yet: %s", intent.venue, intent.symbol,
                         intent.client_order_id, exc)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await self.book.wait_for(intent.symbol, lambda u: _shows(u, intent), min(remaining, 0.25))

    async def _protect_unknown(self, intent: OrderIntent, stop: StopLoss | None, attached: bool) -> None:
        """The entry may have filled: make sure a stop rests before handing over to reconciliation."""
        if stop is not None or attached:
            return
        try:
            await self.driver.set_stop_loss(intent.symbol, intent.side, intent.contracts, intent.stop_loss)
        except PositionGone:
            pass  # no position right now; reconciliation resolves the order
        except VenueError as exc:
            await alert(self.pm, "critical", "entry outcome unknown and no stop placed; reconciliation resolves the "
                        f"order by client order id and protects what it finds: {exc}",
                        venue=intent.venue, symbol=intent.symbol)

    # --- rollback -------------------------------------------------------------------------------------

    async def _observed_fill(self, intent: OrderIntent, order: Order | None) -> Decimal | None:
        """What the entry filled, from what the venue told us: the order, the stream, the order by id."""
        if order is not None:
            return order.filled
        update = self.book.last_update(intent.symbol)
        if update is not None and update.contracts > 0 and update.side == intent.side:
            return update.contracts
        try:
            return (await self.driver.fetch_order(intent.symbol, None, intent.client_order_id)).filled
        except VenueError:
            return None

    async def _rollback(self, intent: OrderIntent, order: Order | None, stop: StopLoss | None,
                        cause: BaseException, stop_rests: bool) -> None:
        """Undo a failed open: reduce-only close from intent + observed fills, then prove the venue flat.

        :raises RollbackFailed: the venue could not be shown flat (the stop, if any, is left resting).
        """
        symbol = intent.symbol
        await alert(self.pm, "warning", f"open failed before protection ({cause!r}); rolling back",
                    venue=intent.venue, symbol=symbol)
        # An entry answered with nothing filled and done (NOTHING_FILLED) never gets here: _open refuses it first.
        observed = await self._observed_fill(intent, order)
        # Unknown fill: close the most the entry can have opened; reduce-only never opens or grows.
        contracts = observed if observed else intent.contracts
        before = self.book.last_update(symbol)
        start_seq = before.sequence if before is not None else -1
        flat = await self._close_for_rollback(intent, contracts)
        for _ in range(2):
            if flat:
                break
            flat, remaining = await self._proven_flat(intent, start_seq)
            if remaining:
                flat = await self._close_for_rollback(intent, remaining)
        if not flat:
            kept = "its stop left resting" if stop_rests else "no stop rests: the position may be open and unprotected"
            await alert(self.pm, "critical", f"rollback could not show the venue flat; {kept}; reconciliation "
                        "adopts and protects what it finds", venue=intent.venue, symbol=symbol)
            raise RollbackFailed("venue not shown flat after rollback", venue=intent.venue, symbol=symbol,
                                 order_id=intent.client_order_id) from cause
        await cancel_quietly(self.driver, stop)

    async def _close_for_rollback(self, intent: OrderIntent, contracts: Decimal) -> bool:
        """One reduce-only close on ``close_side(intent.side)``.  :returns: ``True`` when it proves flat."""
        rid = client_order_id("r")
        # Queued like the entry's journal: the rollback of an order the venue has must not wait for the database
        # (the entry's own intent, already persisted, is what this one derives from).
        await self.book.writes.write(f"rollback {rid}", lambda: self.store.record_order(
            intent, purpose="rollback", client_order_id=rid, side=close_side(intent.side), contracts=contracts,
            reduce_only=True))
        try:
            close = await self.driver.close_position(intent.symbol, intent.side, contracts, rid)
        except PositionGone:  # the matching engine says there is nothing to reduce
            await self._journal(rid, state="rejected")
            return True
        except VenueError as exc:
            await self._journal(rid, state="unknown")
            log.warning("%s %s: rollback close failed: %s", intent.venue, intent.symbol, exc)
            return False
        await self._journal(rid, state=close.status,
                                      venue_order_id=close.id, filled=close.filled, average=close.average)
        # Closing at least everything the entry can have opened leaves nothing (no other position
        # existed: the book refuses an open on a symbol it holds).
        return close.filled >= intent.contracts

    async def _proven_flat(self, intent: OrderIntent, start_seq: int) -> tuple[bool, Decimal]:
        """Look for proof of flat: a flat stream update newer than ``start_seq`` (the rollback's start).
        Else the snapshot, or the stream when REST lags, says what is still to close; a snapshot that lists
        nothing while the stream has said nothing since the start is no proof (REST lags, docs/incidents.md
        I-4): what the entry can have opened is to be closed again, reduce-only, and the matching engine's
        "nothing to reduce" is the proof.

        :returns: ``(flat, contracts still to close)``.
        """
        symbol = intent.symbol
        if await self.book.wait_for(symbol, lambda u: u is not None and u.contracts == 0 and u.sequence > start_seq,
                                    self.settings.flat_budget_ms / 1000):
            return True, Decimal(0)
        update = self.book.last_update(symbol)
        try:
            snapshot = await self.driver.fetch_snapshot()
        except VenueError as exc:
            log.warning("%s %s: snapshot for rollback failed: %s", intent.venue, symbol, exc)
            return False, Decimal(0)
        held = [p for p in snapshot.positions if p.symbol == symbol]
        if held:
            if held[0].side != intent.side:  # not what our entry could have opened: a human must look
                return False, Decimal(0)
            return False, held[0].contracts
        if update is not None and update.contracts > 0:  # the stream saw it; REST lag is not absence
            return False, update.contracts if update.side == intent.side else Decimal(0)
        return False, intent.contracts


def _shows(update: PositionUpdate | None, intent: OrderIntent) -> bool:
    return update is not None and update.contracts > 0 and update.side == intent.side
