"""The PositionBook: the one owner of "is this position open" for one venue + account.

Every source that learns a position is gone — a flat stream update, a stop / take-profit fill, the
reconciler, a ``PositionGone`` answer to any driver call — calls the same idempotent :meth:`close`,
which fires ``on_position_closed`` exactly once (docs/incidents.md I-1, I-2).  The book is the driver's
:class:`~framework.driver.StreamSink`, so the private stream feeds it directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pluggy

from framework.engine.broadcast import alert, broadcast
from framework.engine.persistence import WriteBehind
from framework.errors import DuplicateOpenPosition
from framework.models import (
    MarkPrice,
    OrderIntent,
    OrderUpdate,
    PositionEvent,
    PositionSide,
    PositionUpdate,
    StopLoss,
    StreamEvent,
    TrailingSpec,
    close_side,
    now_ms,
)
from framework.store import Store

log = logging.getLogger(__name__)

OWN_CLOSE_PREFIXES = ("fw-c-", "fw-r-")
MAX_FUTURE_MS = 24 * 3600 * 1000  # a frame stamped further ahead of our clock is malformed, not news


@dataclass(slots=True)
class BookPosition:
    """An open position as the book holds it.

    :ivar opened_at: venue time (ms) of the fill that opened it; a flat update older than this is stale.
    :ivar intent_id: client order id of the entry, ``None`` for an adopted position.
    :ivar trailed: the trailing manager has moved its stop, so a stop-loss fill closes it as ``trailing_stop``.
    :ivar native_trail: the trailing stop the venue runs itself, beside :attr:`stop` (which stays as the
        floor); while it rests the engine does not trail this position.
    """

    symbol: str
    side: PositionSide
    contracts: Decimal
    entry_price: Decimal | None
    stop_price: Decimal | None
    stop: StopLoss | None = None
    take_profit: StopLoss | None = None
    trailing: TrailingSpec | None = None
    intent_id: str | None = None
    source: str = "engine"
    opened_at: int = 0
    trailed: bool = False  # the trailing manager moved its stop: a stop-loss fill is a trailing_stop exit
    native_trail: StopLoss | None = None

    @property
    def engine_trails(self) -> bool:
        """Whether the engine's trailing manager moves this position's stop (a trail spec, and no trailing
        stop run by the venue)."""
        return self.trailing is not None and self.native_trail is None


@dataclass(slots=True)
class _ClosingFill:
    origin: str
    client_order_id: str | None
    price: Decimal | None
    realized_pnl: Decimal | None


@dataclass(slots=True)
class _SymbolState:
    """Per symbol; slotted and without an event of its own until someone waits on it (issue 17: the memory
    of 1,000 book positions)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    position: BookPosition | None = None
    last_sequence: int | None = None
    last_update: PositionUpdate | None = None
    last_update_at: int | None = None  # local ms when last_update arrived
    closing_fill: _ClosingFill | None = None
    opening: OrderIntent | None = None
    opening_seen_open: int | None = None  # sequence of the last non-flat update seen during the open
    changed: asyncio.Event | None = None  # made by the first waiter (wait_changed / wait_for)
    closed_at: int | None = None  # local ms of the last closure
    stop_set_at: int | None = None  # local ms the book last learned the position's protective stop
    # A flat frame that came before the closing fill that explains it (Binance sends ACCOUNT_UPDATE before
    # ORDER_TRADE_UPDATE; Bybit orders no topics): the closure waits up to fill_grace_ms for the fill.
    pending_flat: PositionUpdate | None = None
    pending_timer: asyncio.TimerHandle | None = None
    opening_orders: dict[str, OrderUpdate] = field(default_factory=dict)  # by client id, during an open


def _changed(state: _SymbolState) -> asyncio.Event:
    """``state``'s change event, made on first use."""
    if state.changed is None:
        state.changed = asyncio.Event()
    return state.changed


def _removes_stop(position: BookPosition, update: OrderUpdate) -> bool:
    """Whether ``update`` reports the position's resting stop gone unfilled (cancelled, expired, or rejected
    when it triggered: Binance ALGO_UPDATE ``REJECTED``, docs/conformance.md B27): its own
    order, or, for a stop attached to the position (Bybit), the venue's own stop-loss order on the closing
    side (docs/conformance.md Y1: the system order that carries an attached stop)."""
    stop, order = position.stop, update.order
    if stop is None or order.status not in ("canceled", "expired", "rejected") or order.filled != 0:
        return False
    if stop.order_id is not None:
        return order.id == stop.order_id
    if update.origin == "trailing_stop" and position.native_trail is not None:
        return False  # the venue's own trailing stop, not the fixed stop beside it
    return update.origin in ("stop_loss", "trailing_stop") and order.side == close_side(position.side)


def closure_reason(origin: str, client_order_id: str | None, trailed: bool = False) -> str:
    """Map a closing fill's origin to a :data:`~framework.models.ClosureReason`; a stop-loss the trailing
    manager had moved (``trailed``) is a ``trailing_stop`` exit."""
    if origin == "stop_loss" and trailed:
        return "trailing_stop"
    if origin in ("stop_loss", "take_profit", "trailing_stop", "liquidation", "adl"):
        return origin
    if client_order_id and client_order_id.startswith(OWN_CLOSE_PREFIXES):
        return "reduce_only_close"
    return "manual"


class BookListener:
    """What the book hands to the rest of the engine, as one explicit object (the engine's is
    ``framework.engine.runtime.VenueWiring``).  The base class does nothing, for a book on its own
    (``framework replay``, tests)."""

    def reconcile_soon(self) -> None:
        """The stream (re)connected: a venue snapshot is due."""

    def unknown_position(self, symbol: str) -> None:
        """The stream shows ``symbol`` open and the book does not hold it: reconciliation decides."""

    async def on_mark(self, mark: MarkPrice) -> None:
        """A mark-price tick (the trailing manager)."""

    def on_closed(self, position: BookPosition) -> None:
        """``position`` left the book: its leftover order-based stops are to be cancelled (a Binance
        close-position stop can outlive its position)."""

    def stop_removed(self, symbol: str, order_id: str | None) -> None:
        """The stream reports the open position's stop (its order ``order_id``; ``None``: the stop attached
        to the position) cancelled or expired with nothing filled (a person, the venue, a bug): it is to be
        re-protected at once (the protector)."""


class PositionBook:
    """Open positions of one venue + account.

    :param venue: venue name (``binance``…).
    :param account: account name.
    :param pm: plugin manager, for lifecycle hooks.
    :param store: persistence; every open / close is written with its journal entry.  ``None`` keeps
        the book in memory only (``framework replay``, benchmarks without the journal).
    :param fill_grace_ms: how long a flat position frame waits for the closing order's fill frame, so the
        closure carries its reason and price whatever order the venue sends them in (docs/conformance.md
        B4, Y6); past it the closure fires with reason ``unknown``.  A fill that arrives first closes at once.
    :param listener: the engine parts the book hands work to (:class:`BookListener`); none by default.
    :param group_commit: the stream does not wait for its journal rows: :meth:`on_event` returns once the
        book changed, its rows are written in group commits and ``on_position_updated`` /
        ``on_position_closed`` fire after their batch committed (the engine's book).  ``False``: every
        write is awaited before :meth:`on_event` returns (replay, tests that read hooks right after).
    """

    def __init__(self, venue: str, account: str, pm: pluggy.PluginManager, store: Store | None,
                 fill_grace_ms: int = 500, listener: BookListener | None = None, group_commit: bool = False) -> None:
        self.venue = venue
        self.account = account
        self.pm = pm
        self.store = store
        self.fill_grace_ms = fill_grace_ms
        self._timer_tasks: set[asyncio.Task[None]] = set()
        self._symbols: dict[str, _SymbolState] = {}
        self.counters: Counter[str] = Counter(closures=0, ignored_stale_updates=0, malformed_frames=0)
        self._stop_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.listener: BookListener = listener or BookListener()
        self.group_commit = group_commit
        # journal writes survive a database outage, in order; the stream's are group-committed
        self.writes = WriteBehind(pm, venue, write_rows=store.write_rows if store is not None else None)
        self.positions_changed = asyncio.Event()  # set on every add / close (mark-price watcher restarts)

    # --- reading --------------------------------------------------------------------------------------

    def _state(self, symbol: str) -> _SymbolState:
        state = self._symbols.get(symbol)
        if state is None:
            state = self._symbols[symbol] = _SymbolState()
        return state

    @property
    def closures(self) -> int:
        return self.counters["closures"]

    @property
    def ignored_stale_updates(self) -> int:
        return self.counters["ignored_stale_updates"]

    @property
    def malformed_frames(self) -> int:
        return self.counters["malformed_frames"]

    def get(self, symbol: str) -> BookPosition | None:
        """The open position of ``symbol``, or ``None``."""
        state = self._symbols.get(symbol)
        return state.position if state else None

    def holds(self, symbol: str) -> bool:
        """Whether ``symbol`` has an open position (the liveness check before any venue action)."""
        return self.get(symbol) is not None

    def positions(self) -> dict[str, BookPosition]:
        """A copy of every open position by symbol."""
        return {s: st.position for s, st in self._symbols.items() if st.position is not None}

    def opening(self, symbol: str) -> bool:
        """Whether an atomic open of ``symbol`` is in progress."""
        state = self._symbols.get(symbol)
        return bool(state and state.opening)

    def last_update(self, symbol: str) -> PositionUpdate | None:
        """The latest stream :class:`PositionUpdate` applied (or recorded) for ``symbol``."""
        state = self._symbols.get(symbol)
        return state.last_update if state else None

    def opening_order(self, symbol: str, client_order_id: str) -> OrderUpdate | None:
        """The latest stream update of the order ``client_order_id`` seen while ``symbol`` is being opened
        (entry verification's stream evidence), or ``None``."""
        state = self._symbols.get(symbol)
        return state.opening_orders.get(client_order_id) if state else None

    async def wait_changed(self, symbol: str, timeout_s: float) -> None:
        """Return when a stream update for ``symbol`` is applied or recorded, or after ``timeout_s``."""
        changed = _changed(self._state(symbol))
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), timeout_s)
        except TimeoutError:
            pass

    def closed_since(self, symbol: str, since_ms: int) -> bool:
        """Whether ``symbol`` left the book at or after ``since_ms`` (local ms since the epoch): a venue
        snapshot requested before then may still list it."""
        state = self._symbols.get(symbol)
        return bool(state and state.closed_at is not None and state.closed_at >= since_ms)

    def stream_shows_open(self, symbol: str, side: str) -> bool:
        """Whether the latest stream update shows ``symbol`` open on ``side`` *and* arrived after the book's
        last closure of it (an open frame from before a closure is no evidence of a new position)."""
        state = self._symbols.get(symbol)
        if state is None or state.last_update is None or state.last_update_at is None:
            return False
        last = state.last_update
        after_close = state.closed_at is None or state.last_update_at > state.closed_at
        return last.contracts > 0 and last.side == side and after_close

    def recently_closed(self, symbol: str, within_ms: int) -> bool:
        """Whether ``symbol`` left the book less than ``within_ms`` ago."""
        state = self._symbols.get(symbol)
        return bool(state and state.closed_at is not None and now_ms() - state.closed_at < within_ms)

    async def wait_for(self, symbol: str, predicate: Callable[[PositionUpdate | None], bool],
                       timeout_s: float) -> bool:
        """Wait until ``predicate(last stream update of symbol)`` holds, at most ``timeout_s`` seconds.

        :returns: ``False`` on timeout.
        """
        state = self._state(symbol)
        changed = _changed(state)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate(state.last_update):
            changed.clear()
            if predicate(state.last_update):
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return predicate(state.last_update)
        return True

    # --- StreamSink -----------------------------------------------------------------------------------

    async def on_event(self, event: StreamEvent) -> None:
        """Apply one decoded stream event (never raises: a failure is logged and alerted)."""
        try:
            if isinstance(event, PositionUpdate):
                await self._apply_position_update(event)
            elif isinstance(event, OrderUpdate):
                await self._apply_order_update(event)
            elif isinstance(event, MarkPrice):
                await self.listener.on_mark(event)
        except Exception as exc:  # the stream must go on
            log.exception("applying %r failed", event)
            await alert(self.pm, "warning", f"stream event could not be applied: {exc!r}", venue=self.venue)

    async def on_connected(self, reconnect: bool) -> None:
        """The stream is (re)connected: schedule a reconciliation (REST snapshot)."""
        await broadcast(
            self.pm, "on_stream_state", venue=self.venue, state="reconnected" if reconnect else "connected",
            detail="private stream authenticated",
        )
        self.listener.reconcile_soon()

    async def on_disconnected(self, detail: str) -> None:
        """The stream dropped; the driver reconnects."""
        await broadcast(self.pm, "on_stream_state", venue=self.venue, state="disconnected", detail=detail)

    def on_malformed(self, raw: str | bytes, error: Exception) -> None:
        """Count and log a frame that could not be decoded; the stream goes on."""
        self.counters["malformed_frames"] += 1
        log.warning("%s: malformed stream frame (%s): %.200r", self.venue, error, raw)
        try:
            asyncio.get_running_loop().create_task(
                broadcast(self.pm, "on_stream_state", venue=self.venue, state="malformed_frame", detail=str(error))
            )
        except RuntimeError:  # no loop (replay from sync code): counted and logged is enough
            pass

    async def _apply_position_update(self, update: PositionUpdate) -> None:
        state = self._state(update.symbol)
        async with state.lock:
            if update.timestamp > now_ms() + MAX_FUTURE_MS:  # adopted, it would make every real frame stale
                self.on_malformed(update.model_dump_json(), ValueError(f"timestamp {update.timestamp} in the future"))
                return
            if state.last_sequence is not None and update.sequence < state.last_sequence:
                held = state.last_update
                if held is None or update.timestamp <= held.timestamp:
                    self.counters["ignored_stale_updates"] += 1
                    log.info("%s %s: stale update seq %s < %s ignored", self.venue, update.symbol,
                             update.sequence, state.last_sequence)
                    return
                # Older by sequence, newer by the venue's clock: the sequence held was not a real one (a
                # hostile or corrupt frame); real frames never disagree so.  Follow the clock.
                log.warning("%s %s: sequence %s held is ahead of a newer frame (seq %s); resetting", self.venue,
                            update.symbol, state.last_sequence, update.sequence)
            position = state.position
            if (
                position is not None and update.contracts == 0 and update.timestamp < position.opened_at
            ):  # a flat frame from before this position opened (late frame of the previous one)
                self.counters["ignored_stale_updates"] += 1
                return
            state.last_sequence = update.sequence
            state.last_update = update
            state.last_update_at = now_ms()
            if state.changed is not None:
                state.changed.set()
            if state.opening is not None:
                if update.contracts > 0:
                    state.opening_seen_open = update.sequence
                return  # recorded for the opener (verification / rollback evidence)
            wait = not self.group_commit
            if state.pending_flat is not None:  # a newer frame: the flat one waited long enough
                await self._close_pending_locked(state, wait=wait)
                position = state.position
            if position is None:
                if update.contracts > 0:
                    self.listener.unknown_position(update.symbol)  # reconciliation decides, never the stream
                return
            if update.contracts == 0:
                if state.closing_fill is None and self.fill_grace_ms > 0:
                    self._hold_flat(state, update)
                    return
                await self._close_on_flat_locked(state, update, wait=wait)
                return
            if update.side != position.side:
                # flipped through zero without a flat frame: the old position is closed.
                await self._close_locked(state, update.symbol, "unknown", source="stream",
                                         timestamp=update.timestamp, wait=wait)
                self.listener.unknown_position(update.symbol)
                return
            if update.contracts != position.contracts or (
                update.entry_price is not None and update.entry_price != position.entry_price
            ):
                await self._update_locked(state, update.symbol, update.contracts, update.entry_price,
                                          update.mark_price, "size_changed", update.timestamp, wait=wait)

    def _hold_flat(self, state: _SymbolState, update: PositionUpdate) -> None:
        """Keep a flat frame until its closing fill arrives or ``fill_grace_ms`` passes."""
        state.pending_flat = update
        if state.pending_timer is None:
            loop = asyncio.get_running_loop()

            def expire() -> None:
                task = loop.create_task(self._pending_expired(update.symbol))
                self._timer_tasks.add(task)  # a task nobody references may be collected mid-flight
                task.add_done_callback(self._timer_tasks.discard)

            state.pending_timer = loop.call_later(self.fill_grace_ms / 1000, expire)

    async def _pending_expired(self, symbol: str) -> None:
        state = self._state(symbol)
        try:
            async with state.lock:
                state.pending_timer = None
                await self._close_pending_locked(state, wait=True)
        except Exception as exc:  # a timer callback has no caller to tell
            log.exception("%s %s: closing on a flat frame failed", self.venue, symbol)
            await alert(self.pm, "critical", f"closure on a flat frame failed: {exc!r}", venue=self.venue,
                        symbol=symbol)

    async def flush(self) -> None:
        """Close every position whose flat frame is still waiting for its fill (end of a replay, shutdown)."""
        for state in list(self._symbols.values()):
            if state.pending_flat is not None:
                async with state.lock:
                    await self._close_pending_locked(state, wait=True)

    async def _close_pending_locked(self, state: _SymbolState, *, wait: bool) -> None:
        if state.pending_flat is not None and state.position is not None:
            await self._close_on_flat_locked(state, state.pending_flat, wait=wait)
        self._clear_pending(state)

    @staticmethod
    def _clear_pending(state: _SymbolState) -> None:
        state.pending_flat = None
        if state.pending_timer is not None:
            state.pending_timer.cancel()
            state.pending_timer = None

    async def _close_on_flat_locked(self, state: _SymbolState, update: PositionUpdate, *, wait: bool) -> None:
        """Close on a flat frame, with the reason and price of the closing fill the book holds (if any)."""
        fill = state.closing_fill
        trailed = state.position is not None and state.position.trailed
        await self._close_locked(
            state, update.symbol, closure_reason(fill.origin, fill.client_order_id, trailed) if fill else "unknown",
            price=fill.price if fill else None,
            realized_pnl=update.realized_pnl if update.realized_pnl is not None
            else (fill.realized_pnl if fill else None),
            source="stream", timestamp=update.timestamp, wait=wait,
        )

    async def _apply_order_update(self, update: OrderUpdate) -> None:
        order = update.order
        state = self._state(order.symbol)
        async with state.lock:
            opening = state.opening
            if opening is not None and order.client_order_id == opening.client_order_id:
                state.opening_orders[order.client_order_id] = update
                if state.changed is not None:
                    state.changed.set()
            position = state.position
            if position is not None and _removes_stop(position, update) and state.pending_flat is None:
                # not while a flat frame says it closed; the protector lets the closing frames settle first
                self.listener.stop_removed(order.symbol, position.stop.order_id if position.stop else None)
                return
            if position is None or order.filled <= 0 or order.side != close_side(position.side):
                return
            state.closing_fill = _ClosingFill(
                origin=update.origin, client_order_id=order.client_order_id,
                price=update.last_fill_price or order.average, realized_pnl=update.realized_pnl,
            )
            wait = not self.group_commit
            if state.pending_flat is not None:  # the fill that explains the flat frame already held
                await self._close_on_flat_locked(state, state.pending_flat, wait=wait)
                return
            # A fully filled closing order closes the position even if the flat frame is lost (I-1), unless
            # the position frame of the same fill came first and shows it still open (Binance sends
            # ACCOUNT_UPDATE before ORDER_TRADE_UPDATE with one T: a partial reduce has shrunk the book's size).
            fully_filled = order.status == "closed" and order.filled >= position.contracts
            last = state.last_update
            shown_open = last is not None and last.contracts > 0 and last.timestamp >= update.timestamp
            if fully_filled and not shown_open and update.timestamp >= position.opened_at:
                await self._close_locked(
                    state, order.symbol, closure_reason(update.origin, order.client_order_id, position.trailed),
                    price=state.closing_fill.price, realized_pnl=update.realized_pnl, source="order",
                    timestamp=update.timestamp, wait=wait,
                )

    # --- opening (used by the opener and the reconciler) ----------------------------------------------

    def begin_open(self, intent: OrderIntent) -> None:
        """Mark an atomic open of ``intent.symbol`` in progress.

        :raises DuplicateOpenPosition: a position is open or being opened for that symbol.
        """
        state = self._state(intent.symbol)
        if state.position is not None or state.opening is not None:
            raise DuplicateOpenPosition("a position is already open or opening", venue=self.venue,
                                        symbol=intent.symbol)
        state.opening = intent
        state.opening_seen_open = None
        state.opening_orders.clear()
        if state.changed is not None:
            state.changed.clear()

    def end_open(self, symbol: str) -> None:
        """Clear the in-progress mark (after a failed or abandoned open)."""
        state = self._state(symbol)
        state.opening = None
        state.opening_orders.clear()

    async def add(self, position: BookPosition, *, source: str = "engine", trailing_json: Any = None) -> bool:
        """Put an open, protected position in the book, persist it and fire ``on_position_open``.

        If the stream recorded the position flat after it opened (stop hit during the open), the
        position is opened and closed at once, so both events fire exactly once.  If the stream's newest
        frame of the open shows another size (an entry filled in several parts, verified on an early one),
        the position is opened as measured and updated to the stream's size at once.

        :returns: ``False`` when the symbol already holds a position (nothing done).
        """
        state = self._state(position.symbol)
        async with state.lock:
            seen_open, state.opening, state.opening_seen_open = state.opening_seen_open, None, None
            if state.position is not None:
                return False
            position = replace(position, source=source)
            state.position = position
            self.positions_changed.set()
            state.closing_fill = None
            event = PositionEvent(
                event="opened", account=self.account, venue=self.venue, symbol=position.symbol,
                side=position.side, contracts=position.contracts, entry_price=position.entry_price,
                price=position.entry_price, reason=source, timestamp=position.opened_at or now_ms(),
                source=source,
            )
            await self._persist_open(position, event, trailing_json)
            await broadcast(self.pm, "on_position_open", event=event)
            last = state.last_update
            if (  # the stream showed this position open, then flat, while it was being opened
                last is not None and last.contracts == 0 and seen_open is not None and last.sequence > seen_open
                and last.timestamp >= position.opened_at
            ):
                await self._close_locked(state, position.symbol, "unknown", source="stream",
                                         timestamp=last.timestamp, wait=True)
            elif (  # an entry filled in parts: the stream's newest frame shows more than the open measured
                last is not None and last.contracts > 0 and last.side == position.side
                and seen_open is not None and last.timestamp >= position.opened_at
                and (last.contracts != position.contracts
                     or last.entry_price is not None and last.entry_price != position.entry_price)
            ):
                await self._update_locked(state, position.symbol, last.contracts, last.entry_price,
                                          last.mark_price, "size_changed", last.timestamp, wait=True)
        return True

    async def _persist_open(self, position: BookPosition, event: PositionEvent, trailing_json: Any) -> None:
        store = self.store
        if store is None:
            return

        async def write() -> None:
            try:
                await store.open_position(
                    event, stop_loss=position.stop_price,
                    take_profit=position.take_profit.trigger_price if position.take_profit else None,
                    trailing=trailing_json if trailing_json is not None
                    else (position.trailing.model_dump(mode="json") if position.trailing else None),
                    entry_client_order_id=position.intent_id,
                )
            except DuplicateOpenPosition:
                log.info("%s %s: already open in the DB (restart), keeping that row", self.venue, position.symbol)
                return
            for stop in (position.stop, position.take_profit, position.native_trail):
                if stop is not None:
                    await store.record_stop(self.account, stop)

        await self.writes.write(f"open {position.symbol}", write)

    def load(self, position: BookPosition) -> bool:
        """Put a position read back from the DB (restart) in the book without firing anything.

        :returns: ``False`` (nothing done) when the symbol is held, being opened, or was closed by this
            book already: its DB row may be a close still being written, never a position to restore.
        """
        state = self._state(position.symbol)
        if state.position is not None or state.opening is not None or state.closed_at is not None:
            return False
        state.position = position
        self.positions_changed.set()
        return True

    # --- updates and the one close path ---------------------------------------------------------------

    def stop_lock(self, symbol: str) -> asyncio.Lock:
        """Held while ``symbol``'s resting stops change (a trailing move, the reconciler's duplicate
        clean-up), so two of them never start from the same resting stop."""
        return self._stop_locks[symbol]

    def set_stop(self, symbol: str, stop: StopLoss | None) -> None:
        """Record the stop (or take-profit, or the venue's trailing stop, by ``stop.kind``) now resting for
        ``symbol``."""
        position = self.get(symbol)
        if position is None or stop is None:
            return
        if stop.kind == "take_profit":
            position.take_profit = stop
        elif stop.kind == "trailing_stop":
            position.native_trail = stop
        else:
            position.stop = stop
            position.stop_price = stop.trigger_price
            self._symbols[symbol].stop_set_at = now_ms()

    def stop_set_since(self, symbol: str, since_ms: int) -> bool:
        """Whether the book learned ``symbol``'s protective stop at or after ``since_ms`` (local ms since the
        epoch): a venue snapshot requested before then may still list the stop it replaced."""
        state = self._symbols.get(symbol)
        return bool(state and state.stop_set_at is not None and state.stop_set_at >= since_ms)

    async def _update_locked(
        self, state: _SymbolState, symbol: str, contracts: Decimal, entry_price: Decimal | None,
        mark_price: Decimal | None, reason: str, timestamp: int, *, wait: bool,
    ) -> None:
        position = state.position
        assert position is not None
        position.contracts = contracts
        if entry_price is not None:
            position.entry_price = entry_price
        event = PositionEvent(
            event="updated", account=self.account, venue=self.venue, symbol=symbol, side=position.side,
            contracts=contracts, entry_price=position.entry_price, price=mark_price, reason=reason,
            timestamp=timestamp, source="stream",
        )

        async def announce(persisted: bool) -> None:
            await broadcast(self.pm, "on_position_updated", event=event)

        if self.store is None:
            await announce(True)
            return
        await self.writes.journal(f"update {symbol}", self.store.update_row(
            self.account, self.venue, symbol, event=event, contracts=contracts, entry_price=entry_price), announce,
            wait=wait)

    async def close(
        self, symbol: str, reason: str, price: Decimal | None = None, realized_pnl: Decimal | None = None,
        source: str = "engine", timestamp: int | None = None,
    ) -> bool:
        """Close ``symbol``'s position: remove it, close the DB row with its journal entry, fire
        ``on_position_closed`` exactly once.  Idempotent and safe to call from any task.

        :param reason: a :data:`~framework.models.ClosureReason`.
        :param price: close price (quote currency), when known.
        :param realized_pnl: realized PnL (quote currency), when the venue told us.
        :param source: what noticed it: ``stream``, ``order``, ``reconcile``, ``error``, ``engine``.
        :param timestamp: when it happened, venue ms; now by default.
        :returns: ``True`` when this call closed it, ``False`` when it was already closed.
        """
        state = self._state(symbol)
        async with state.lock:
            return await self._close_locked(state, symbol, reason, price=price, realized_pnl=realized_pnl,
                                            source=source, timestamp=timestamp, wait=True)

    async def _close_locked(
        self, state: _SymbolState, symbol: str, reason: str, *, price: Decimal | None = None,
        realized_pnl: Decimal | None = None, source: str, timestamp: int | None, wait: bool,
    ) -> bool:
        """The one close path, under ``state.lock``.  ``wait=False`` (the stream, group commit): return once
        the book changed; the DB row and ``on_position_closed`` follow when its batch commits."""
        position = state.position
        if position is None:
            if self.store is None:
                return False
            if self.writes.pending:  # queued writes first: the DB is behind the book
                if wait:  # a closure of it the stream queued is announced before this call says "already closed"
                    await self.writes.announced()
                return False
            # Not in the book: a DB row may still be open (restart before the book was loaded).
            try:
                rows = [r for r in await self.store.open_positions(self.account, self.venue) if r.symbol == symbol]
            except Exception as exc:  # the database is unreachable: nothing this book holds to close
                log.warning("%s %s: DB not readable for a close of a position the book does not hold: %s",
                            self.venue, symbol, exc)
                return False
            if not rows:
                return False
            side, contracts, entry = rows[0].side, rows[0].contracts, rows[0].entry_price
        else:
            side, contracts, entry = position.side, position.contracts, position.entry_price
        state.position = None
        state.closing_fill = None
        self._clear_pending(state)
        state.closed_at = now_ms()
        self.positions_changed.set()
        event = PositionEvent(
            event="closed", account=self.account, venue=self.venue, symbol=symbol, side=side, contracts=Decimal(0),
            entry_price=entry, price=price, reason=reason, realized_pnl=realized_pnl,
            timestamp=timestamp or now_ms(), source=source,
        )
        self.counters["closures"] += 1
        log.info("%s %s: %s position of %s closed (%s, via %s)", self.venue, symbol, side, contracts, reason, source)

        async def announce(persisted: bool) -> None:  # durable first (unless the database is down)
            await broadcast(self.pm, "on_position_closed", event=event)
            if position is not None:
                self.listener.on_closed(position)

        if self.store is None:
            await announce(True)
            return True
        await self.writes.journal(f"close {symbol} ({reason})", self.store.close_row(event), announce, wait=wait)
        return True

