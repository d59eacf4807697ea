"""Reconciliation: the backstop that converges venue, book and DB (docs/incidents.md "what fixed means" 6).

Runs at start, after every stream reconnect and every ``reconcile_interval_s``.  One
``driver.fetch_snapshot()`` per pass (one REST call per kind, whatever the number of positions):

* orders left ``intent`` / ``submitted`` / ``unknown`` are resolved by client order id;
* DB rows the book does not hold (a restart) are loaded into the book;
* orphans (book has it, venue does not) are closed — but REST lag is not absence: only when absent
  from two snapshots at least ``orphan_grace_ms`` apart (a flat stream frame closes it at once anyway);
* unknown venue positions are adopted (book + DB, source ``adopted``, ``on_position_open``) and protected;
* positions without a resting stop get one; stops left for a symbol with no position are cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pluggy

from framework.driver import Driver
from framework.engine.book import BookPosition, PositionBook
from framework.engine.broadcast import alert, broadcast
from framework.engine.closing import cancel_quietly
from framework.engine.protection import Protector
from framework.engine.settings import EngineSettings
from framework.errors import OrderNotFound, VenueError
from framework.models import OrderIntent, Position, StopLoss, now_ms
from framework.store import Store

log = logging.getLogger(__name__)

PROTECTIVE = ("stop_loss",)  # a trailing stop rests beside the fixed stop, never instead of it
T = TypeVar("T")


class Reconciler:
    """Reconciles one venue + account.

    :ivar passes: completed passes.
    """

    def __init__(
        self, book: PositionBook, driver: Driver, store: Store, pm: pluggy.PluginManager, protector: Protector,
        settings: EngineSettings | None = None, clock: Callable[[], int] = now_ms,
    ) -> None:
        self.book = book
        self.driver = driver
        self.store = store
        self.pm = pm
        self.protector = protector
        self.settings = settings or EngineSettings()
        self.clock = clock
        self.passes = 0
        self._absent_since: dict[str, int] = {}
        self._stop_orphan_since: dict[str, int] = {}
        self._requested = asyncio.Event()
        self._lock = asyncio.Lock()

    def request(self) -> None:
        """Ask for a pass as soon as possible (stream reconnect, unknown position seen)."""
        self._requested.set()

    async def run_forever(self) -> None:
        """Reconcile on request and every ``reconcile_interval_s`` until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._requested.wait(), self.settings.reconcile_interval_s)
            except TimeoutError:
                pass
            self._requested.clear()
            try:
                await self.reconcile()
            except Exception as exc:  # the backstop must survive a bad pass
                log.exception("%s: reconciliation failed", self.book.venue)
                await alert(self.pm, "warning", f"reconciliation failed: {exc!r}", venue=self.book.venue)

    async def reconcile(self) -> dict[str, Any]:
        """One pass.  :returns: the report also sent to ``on_reconciled``."""
        async with self._lock:
            started = time.monotonic()
            report: Counter[str] = Counter(closed=0, adopted=0, reprotected=0, resolved=0, rest_calls=0,
                                           stale_stops_cancelled=0, duplicate_stops_cancelled=0)
            intents = await self._database_side(self._resolve_orders(report), {}, report)
            snapshot_requested_at = now_ms()
            snapshot = await self.driver.fetch_snapshot()
            report["rest_calls"] += snapshot.rest_calls
            on_venue = {p.symbol: p for p in snapshot.positions}
            stops: dict[str, list[StopLoss]] = {}
            for stop in snapshot.stops:
                stops.setdefault(stop.symbol, []).append(stop)
            if self.passes == 0:  # a restart: the DB knows what the previous process held
                await self._database_side(self._load_from_db(), None, report)
            await self._close_orphans(on_venue, snapshot.taken_at, report)
            for symbol, venue_position in on_venue.items():
                found = stops.get(symbol, [])
                if not self._steady(venue_position, found, snapshot_requested_at):
                    await self._sync(venue_position, found, intents.get(symbol), snapshot_requested_at, report)
            await self._cancel_stale_stops(on_venue, stops, report)
            self.passes += 1
            result: dict[str, Any] = dict(report)
            result["elapsed_ms"] = int((time.monotonic() - started) * 1000)
            await broadcast(self.pm, "on_reconciled", venue=self.book.venue, report=result)
            return result

    async def _database_side(self, work: Awaitable[T], fallback: T, report: Counter[str]) -> T:
        """Run a step that reads the database; when the database is unreachable, the venue-side work
        (close orphans, adopt, protect) goes on from the book and the snapshot alone: protection never
        waits for the database (its writes are queued, ``PositionBook.writes``)."""
        try:
            return await work
        except Exception as exc:  # the database, not the venue: VenueErrors are handled inside the steps
            report["database_unavailable"] += 1
            log.warning("%s: database step skipped this pass: %s", self.book.venue, exc)
            return fallback

    async def _resolve_orders(self, report: Counter[str]) -> dict[str, OrderIntent]:
        """Resolve orders of unknown outcome by client order id; return the intents of filled entries."""
        filled_entries: dict[str, OrderIntent] = {}
        for row in await self.store.unresolved_orders(self.book.account, self.book.venue):
            symbol, cid = row.symbol, row.client_order_id
            if self.book.opening(symbol):
                continue  # the opener is still deciding
            try:
                order = await self.driver.fetch_order(symbol, row.venue_order_id, cid)
            except OrderNotFound:
                # 'intent' was never sent; otherwise give the venue time to show it.
                too_old = self.clock() - row.created_at > self.settings.unresolved_order_grace_ms
                if row.state == "intent" or too_old:
                    await self.store.update_order(self.book.account, self.book.venue, cid, state="expired")
                    report["resolved"] += 1
                continue
            except VenueError as exc:
                log.warning("%s %s: order %s not resolved: %s", self.book.venue, symbol, cid, exc)
                continue
            await self.store.update_order(self.book.account, self.book.venue, cid, state=order.status,
                                          venue_order_id=order.id, filled=order.filled, average=order.average)
            report["resolved"] += 1
            if row.purpose == "entry" and order.filled > 0:
                filled_entries[symbol] = row.intent
        return filled_entries

    async def _load_from_db(self) -> None:
        if self.book.writes.pending:  # the DB is behind the book: its rows are no news
            return
        for row in await self.store.open_positions(self.book.account, self.book.venue):
            symbol = row.symbol
            if self.book.holds(symbol) or self.book.opening(symbol):
                continue
            self.book.load(BookPosition(
                symbol=symbol, side=row.side, contracts=row.contracts, entry_price=row.entry_price,
                stop_price=row.stop_loss, trailing=row.trailing_spec, intent_id=row.entry_client_order_id,
                source=row.source, opened_at=row.opened_at,
            ))

    async def _close_orphans(self, on_venue: dict[str, Position], taken_at: int, report: Counter[str]) -> None:
        for symbol in list(self._absent_since):
            if symbol in on_venue or not self.book.holds(symbol):
                del self._absent_since[symbol]
        for symbol in self.book.positions():
            if symbol in on_venue:
                continue
            first = self._absent_since.setdefault(symbol, taken_at)
            if taken_at - first >= self.settings.orphan_grace_ms:
                if await self.book.close(symbol, "reconcile", source="reconcile"):
                    report["closed"] += 1
                del self._absent_since[symbol]

    def _steady(self, venue_position: Position, found: list[StopLoss], requested_at: int) -> bool:
        """What :meth:`_sync` does in a pass's common case, without a coroutine per position (10,000 of them):
        the book holds the position on the same side and size, not being opened, and exactly one protective stop
        rests for it — at most the book learns that stop.  ``False``: not that case, :meth:`_sync` decides."""
        symbol = venue_position.symbol
        held = self.book.get(symbol)
        if (held is None or held.side != venue_position.side or held.contracts != venue_position.contracts
                or len(found) != 1 or found[0].kind not in PROTECTIVE or self.book.opening(symbol)):
            return False
        if held.stop is None or held.stop.order_id != found[0].order_id:
            self._learn_stop(symbol, found[0], requested_at)
        return True

    def _learn_stop(self, symbol: str, stop: StopLoss, requested_at: int) -> None:
        """The book learns the stop the snapshot lists, unless it learned one since the snapshot was requested:
        a move in between replaced the listed stop (the next pass sees the new one)."""
        if not self.book.stop_set_since(symbol, requested_at):
            self.book.set_stop(symbol, stop)

    async def _sync(
        self, venue_position: Position, found: list[StopLoss], intent: OrderIntent | None, requested_at: int,
        report: Counter[str],
    ) -> None:
        symbol = venue_position.symbol
        if self.book.opening(symbol):
            return
        held = self.book.get(symbol)
        if held is not None and held.side != venue_position.side:
            # The venue holds the other side: ours is gone; adopt the new one on the next pass.
            await self.book.close(symbol, "unknown", source="reconcile")
            report["closed"] += 1
            self.request()
            return
        # The fixed stop-loss is the position's protection; a trailing stop the venue runs rests beside it
        # (BookPosition.native_trail) and is neither a duplicate nor a replacement for it.
        protective = [s for s in found if s.kind in PROTECTIVE]
        trails = [s for s in found if s.kind == "trailing_stop"]
        if held is None:
            if self.book.closed_since(symbol, requested_at):
                return  # closed while the snapshot was in flight: it predates the closure (next pass decides)
            stream_shows_it = self.book.stream_shows_open(symbol, venue_position.side)
            if self.book.recently_closed(symbol, self.settings.orphan_grace_ms) and not stream_shows_it:
                return  # a lagging snapshot of a position already closed must not resurrect it (I-2)
            if intent is not None and intent.side != venue_position.side:
                intent = None
            stop = protective[0] if protective else None
            take_profit = next((s for s in found if s.kind == "take_profit"), None)
            await self.book.add(BookPosition(
                symbol=symbol, side=venue_position.side, contracts=venue_position.contracts,
                entry_price=venue_position.entry_price,
                stop_price=stop.trigger_price if stop else (intent.stop_loss if intent else venue_position.stop_loss),
                stop=stop, take_profit=take_profit, trailing=intent.trailing if intent else None,
                intent_id=intent.client_order_id if intent else None, opened_at=venue_position.opened_at or 0,
                native_trail=trails[0] if trails else None,
            ), source="adopted")
            report["adopted"] += 1
            held = self.book.get(symbol)
            if held is None:
                return
        elif held.contracts != venue_position.contracts:
            log.info("%s %s: snapshot size %s, book %s (stream decides)", self.book.venue, symbol,
                     venue_position.contracts, held.contracts)
        if trails and held.native_trail is None:  # read back after a restart: the venue trails, not the engine
            self.book.set_stop(symbol, trails[0])
        if protective:
            if held.stop is None or all(s.order_id != held.stop.order_id for s in protective):
                self._learn_stop(symbol, protective[0], requested_at)
            elif len(protective) > 1:
                await self._cancel_duplicate_stops(symbol, protective, report)
            return
        if venue_position.stop_loss is not None:  # attached stop the driver did not list separately
            self._learn_stop(symbol, StopLoss(venue=self.book.venue, symbol=symbol, side=venue_position.side,
                                              trigger_price=venue_position.stop_loss), requested_at)
            return
        if await self.protector.protect(symbol, mark_price=venue_position.mark_price) is not None:
            report["reprotected"] += 1

    async def _cancel_duplicate_stops(self, symbol: str, found: list[StopLoss], report: Counter[str]) -> None:
        """Several protective stops rest for one position (a crash between placing a new stop and
        cancelling the old one): keep the one the book holds, cancel the others.  Under the symbol's stop
        lock, and only while the book's stop is one of those the snapshot saw, so the stop kept is resting."""
        async with self.book.stop_lock(symbol):
            held = self.book.get(symbol)
            if held is None or held.stop is None or held.stop.order_id not in {s.order_id for s in found}:
                return
            for stop in found:
                if stop.order_id != held.stop.order_id and not stop.attached:
                    await cancel_quietly(self.driver, stop)
                    report["duplicate_stops_cancelled"] += 1

    async def _cancel_stale_stops(
        self, on_venue: dict[str, Position], stops: dict[str, list[StopLoss]], report: Counter[str]
    ) -> None:
        """Order-based stops resting for a symbol with no position, not held and not being opened, in
        two snapshots ``orphan_grace_ms`` apart (a lagging snapshot may not show a fresh position yet)."""
        now = self.clock()
        for symbol in list(self._stop_orphan_since):
            if symbol not in stops:
                del self._stop_orphan_since[symbol]
        for symbol, found in stops.items():
            if symbol in on_venue or self.book.holds(symbol) or self.book.opening(symbol):
                self._stop_orphan_since.pop(symbol, None)
                continue
            if now - self._stop_orphan_since.setdefault(symbol, now) < self.settings.orphan_grace_ms:
                continue
            del self._stop_orphan_since[symbol]
            for stop in found:
                if not stop.attached:
                    await cancel_quietly(self.driver, stop)
                    report["stale_stops_cancelled"] += 1
