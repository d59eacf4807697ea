"""What every contract test stands on: one driver plugin connected to its venue harness, its private
stream running into a real :class:`~framework.engine.book.PositionBook` on a real store, and a journal
of every lifecycle hook fired and every stream event delivered.

Nothing here is mocked: the plugin is loaded through its entry point, the venue is the plugin's own
emulator (``venue_harness``), the book and store are the engine's.  Waiting is always on an
:class:`asyncio.Event` with a timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

import pytest

from framework import hookimpl
from framework.driver import Driver
from framework.engine.book import BookPosition, PositionBook
from framework.errors import PositionGone
from framework.models import (
    OrderIntent,
    OrderUpdate,
    PositionSide,
    PositionUpdate,
    StopLoss,
    StreamEvent,
    Verification,
    now_ms,
)
from framework.plugins import load_plugins
from framework.store import Store

log = logging.getLogger(__name__)

#: how long a closure / stream event may take to reach the book (seconds).  An upper bound for "delivered
#: by the stream, not by a later sweep" (I-1 took 140 s); a loaded CI machine must never reach it, so it is
#: generous.  A passing run never waits for it.
CLOSE_BOUND_S = 5.0
#: how long the private stream may take to connect (or reconnect) and authenticate (seconds)
CONNECT_BOUND_S = 10.0
#: verification budget used when a position must be confirmed (ms)
VERIFY_BUDGET_MS = 5_000


# --- observation -------------------------------------------------------------------------------------


class Journal:
    """Every lifecycle hook fired and every stream callback received, with one change event to wait on."""

    def __init__(self) -> None:
        self.hooks: dict[str, list[Any]] = defaultdict(list)
        self.events: list[StreamEvent] = []
        self.connects: list[bool] = []
        self.disconnects: list[str] = []
        self.malformed: list[tuple[str | bytes, Exception]] = []
        self._changed = asyncio.Event()

    def note(self) -> None:
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate()`` holds; ``False`` after ``timeout_s`` seconds."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return predicate()
        return True

    # --- queries --------------------------------------------------------------------------------------

    def closed(self, symbol: str) -> list[Any]:
        return [e for e in self.hooks["on_position_closed"] if e.symbol == symbol]

    def opened(self, symbol: str) -> list[Any]:
        return [e for e in self.hooks["on_position_open"] if e.symbol == symbol]

    def updated(self, symbol: str) -> list[Any]:
        return [e for e in self.hooks["on_position_updated"] if e.symbol == symbol]

    def stream_states(self, state: str | None = None) -> list[tuple[str, str, str]]:
        return [s for s in self.hooks["on_stream_state"] if state in (None, s[1])]

    def position_updates(self, symbol: str) -> list[PositionUpdate]:
        return [e for e in self.events if isinstance(e, PositionUpdate) and e.symbol == symbol]

    def flat_updates(self, symbol: str) -> list[PositionUpdate]:
        return [e for e in self.position_updates(symbol) if e.contracts == 0]


class Recorder:
    """A lifecycle listener registered on the plugin's own manager; writes into a :class:`Journal`."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def _add(self, hook: str, value: Any) -> None:
        self.journal.hooks[hook].append(value)
        self.journal.note()

    @hookimpl
    def on_order_submitted(self, intent):
        self._add("on_order_submitted", intent)

    @hookimpl
    def on_position_open(self, event):
        self._add("on_position_open", event)

    @hookimpl
    def on_position_updated(self, event):
        self._add("on_position_updated", event)

    @hookimpl
    def on_position_closed(self, event):
        self._add("on_position_closed", event)

    @hookimpl
    def on_stop_moved(self, event):
        self._add("on_stop_moved", event)

    @hookimpl
    def on_stream_state(self, venue, state, detail):
        self._add("on_stream_state", (venue, state, detail))

    @hookimpl
    def on_reconciled(self, venue, report):
        self._add("on_reconciled", (venue, report))

    @hookimpl
    def on_alert(self, alert):
        self._add("on_alert", alert)


class BookEvidence:
    """:class:`~framework.protocols.StreamEvidence` answered by ``self.book``: a test sink in front of a
    PositionBook is then the driver's stream state, as the book itself is under the engine (the driver's
    liveness questions go to the book)."""

    book: PositionBook

    def last_update(self, symbol: str) -> PositionUpdate | None:
        return self.book.last_update(symbol)

    def opening_order(self, symbol: str, client_order_id: str) -> OrderUpdate | None:
        return self.book.opening_order(symbol, client_order_id)

    async def wait_changed(self, symbol: str, timeout_s: float) -> None:
        await self.book.wait_changed(symbol, timeout_s)


class RecordingSink(BookEvidence):
    """The driver's :class:`~framework.driver.StreamSink`: forwards to the book, then records.  It is also
    the book's :class:`~framework.protocols.StreamEvidence` (:class:`BookEvidence`).

    After every *re*connect it runs the core's reconnect snapshot (one ``fetch_snapshot``; book
    positions the venue no longer lists are closed, reason ``reconcile``), as the engine does.
    """

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.book = contract.book
        self.journal = contract.journal

    async def on_event(self, event: StreamEvent) -> None:
        await self.book.on_event(event)
        self.journal.events.append(event)
        self.journal.note()

    async def on_connected(self, reconnect: bool) -> None:
        await self.book.on_connected(reconnect)
        self.journal.connects.append(reconnect)
        self.journal.note()
        if reconnect:
            self.contract.spawn(self.contract.reconcile_after_reconnect())

    async def on_disconnected(self, detail: str) -> None:
        await self.book.on_disconnected(detail)
        self.journal.disconnects.append(detail)
        self.journal.note()

    def on_malformed(self, raw: str | bytes, error: Exception) -> None:
        self.book.on_malformed(raw, error)
        self.journal.malformed.append((raw, error))
        self.journal.note()


# --- the contract fixture's object ---------------------------------------------------------------------


@dataclass
class Opened:
    """A position the suite opened through the driver and put in the book."""

    intent: OrderIntent
    order: Any  # framework.models.Order
    stop: StopLoss
    verification: Verification
    raw: dict[str, Any]


class Contract:
    """One driver plugin, its harness, a book on a fresh database, and the journal.

    :ivar plugin: the plugin's entry-point name (``bybit``); every failure message starts with it.
    """

    def __init__(self, plugin: str, pm: Any, driver: Driver, harness: Any, store: Store) -> None:
        self.plugin = plugin
        self.pm = pm
        self.driver = driver
        self.harness = harness
        self.store = store
        self.venue = harness.venue
        self.symbol: str = harness.symbol
        self.account: str = harness.config.account
        self.journal = Journal()
        self.book = PositionBook(driver.venue, self.account, pm, store)
        self.sink = RecordingSink(self)
        self.t0 = self.venue.now() if self.venue is not None else now_ms()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stream_task: asyncio.Task[Any] | None = None
        self._barrier_contracts = Decimal(0)

    # --- plumbing -------------------------------------------------------------------------------------

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in [*self._tasks, *([self.stream_task] if self.stream_task else [])]:
            task.cancel()
        for task in [*self._tasks, *([self.stream_task] if self.stream_task else [])]:
            with contextlib.suppress(BaseException):
                await task

    def fail(self, message: str, symbol: str | None = None) -> None:
        """Fail the test with ``<plugin>: <symbol> <message>``."""
        where = f"{self.plugin}: {symbol or self.symbol}"
        pytest.fail(f"{where} {message}", pytrace=False)

    def t(self, venue_ms: int | None = None) -> str:
        """A venue time as seconds since the test started (``t=12.004 s``)."""
        if venue_ms is None:
            venue_ms = self.venue.now() if self.venue is not None else now_ms()
        return f"t={(venue_ms - self.t0) / 1000:.3f} s"

    def require_venue(self, what: str = "venue controls") -> Any:
        """The simulated venue, or skip: a live harness has no ground truth or fault knobs."""
        if self.venue is None:
            pytest.skip(f"{self.plugin}: live venue harness; this contract needs {what}")
        return self.venue

    def require_emulator(self, attribute: str) -> Any:
        emulator = getattr(self.harness, "emulator", None)
        control = getattr(emulator, attribute, None)
        if control is None:
            pytest.skip(f"{self.plugin}: the venue harness has no emulator control {attribute}()")
        return control

    @property
    def faults(self) -> Any:
        return self.require_venue("fault knobs").faults

    # --- stream ---------------------------------------------------------------------------------------

    async def start_stream(self) -> None:
        """Run the driver's private stream into the book; wait until it is connected."""
        self.stream_task = self.spawn(self.driver.run_stream(self.sink))
        connected = await self.journal.wait_for(
            lambda: bool(self.journal.connects) or self.stream_task.done(), CONNECT_BOUND_S
        )
        if self.stream_task.done() and not self.stream_task.cancelled() and self.stream_task.exception():
            self.fail(f"run_stream ended with {self.stream_task.exception()!r} before connecting")
        if not connected or not self.journal.connects:
            self.fail(f"private stream did not call sink.on_connected within {CONNECT_BOUND_S} s of run_stream")

    async def reconcile_after_reconnect(self) -> None:
        """The core's reconnect snapshot: close book positions the venue no longer lists."""
        try:
            snapshot = await self.driver.fetch_snapshot()
        except Exception as exc:  # recorded for the test to see; the stream goes on
            log.warning("%s: reconnect snapshot failed: %r", self.plugin, exc)
            self.journal.hooks["reconnect_snapshot_failed"].append(exc)
            self.journal.note()
            return
        listed = {p.symbol for p in snapshot.positions}
        for symbol in list(self.book.positions()):
            if symbol not in listed:
                await self.book.close(symbol, "reconcile", source="reconcile")
        self.journal.hooks["reconnect_snapshot"].append(snapshot)
        self.journal.note()

    @property
    def barrier_symbol(self) -> str:
        venue = self.require_venue()
        return next(s for s in venue.instruments if s != self.symbol)

    async def barrier(self) -> None:
        """Make sure every frame the venue sent so far has reached the book.

        The venue increases a position on another symbol; once the stream delivered that update, every
        frame sent before it (duplicates included) has been applied.  Never a closing frame, so the
        closing-frame faults leave it alone.
        """
        venue = self.require_venue()
        symbol = self.barrier_symbol
        step = venue.instruments[symbol].min_amount
        venue.place_order(self.account, symbol, "buy", amount=step)
        self._barrier_contracts += step
        expected = self._barrier_contracts
        delivered = await self.journal.wait_for(
            lambda: any(u.contracts == expected for u in self.journal.position_updates(symbol)), CLOSE_BOUND_S
        )
        if not delivered:
            self.fail(
                f"position went to {expected} contracts on the venue at {self.t()}; the private stream did "
                f"not deliver that PositionUpdate within {CLOSE_BOUND_S} s", symbol=symbol,
            )

    # --- prices ---------------------------------------------------------------------------------------

    def mark(self, symbol: str | None = None) -> Decimal:
        return self.require_venue().mark_price(symbol or self.symbol)

    def price_at(self, pct: Decimal | str | int, symbol: str | None = None, *, up: bool) -> Decimal:
        """The mark price moved ``pct`` percent up (``up=True``) or down, on the instrument's tick."""
        venue = self.require_venue()
        symbol = symbol or self.symbol
        tick = venue.instruments[symbol].tick_size
        factor = 1 + Decimal(pct) / 100 if up else 1 - Decimal(pct) / 100
        raw = self.mark(symbol) * factor
        return raw.quantize(tick, rounding=ROUND_UP if up else ROUND_DOWN)

    def stop_price(self, side: PositionSide, pct: Decimal | str | int = 2) -> Decimal:
        """A stop ``pct`` percent on the losing side of the mark price."""
        return self.price_at(pct, up=(side == "short"))

    def profit_price(self, side: PositionSide, pct: Decimal | str | int = 2) -> Decimal:
        """A take-profit ``pct`` percent on the winning side of the mark price."""
        return self.price_at(pct, up=(side == "long"))

    def move_mark(self, price: Decimal, symbol: str | None = None) -> None:
        self.require_venue().set_mark_price(symbol or self.symbol, price)

    # --- opening --------------------------------------------------------------------------------------

    def intent(
        self, side: PositionSide = "long", contracts: Decimal | str = "20", stop_pct: Decimal | str = "2",
        take_profit_pct: Decimal | str | None = None, **extra: Any,
    ) -> OrderIntent:
        return OrderIntent(
            account=self.account, venue=self.driver.venue, symbol=self.symbol, side=side,
            contracts=Decimal(contracts), stop_loss=self.stop_price(side, stop_pct),
            take_profit=self.profit_price(side, take_profit_pct) if take_profit_pct is not None else None,
            client_order_id=f"fw-o-{secrets.token_hex(6)}", **extra,
        )

    async def open(self, side: PositionSide = "long", contracts: Decimal | str = "20",
                   stop_pct: Decimal | str = "2", **intent_extra: Any) -> Opened:
        """Open a protected position the way the engine does and put it in the book.

        create_entry → normalize_order → set_stop_loss (unless the stop rides on the entry) →
        verify_position → ``book.add`` (fires ``on_position_open``).  Any step failing fails the test
        with the plugin's name.
        """
        intent = self.intent(side, contracts, stop_pct, **intent_extra)
        self.book.begin_open(intent)
        try:
            step = "create_entry"
            raw = await self.driver.create_entry(intent)
            step = "normalize_order"
            order = await self.driver.normalize_order(raw, intent)
            step = "set_stop_loss"
            if self.driver.supports("attached_stop_on_entry"):
                stop = StopLoss(venue=self.driver.venue, symbol=self.symbol, side=side,
                                trigger_price=intent.stop_loss)
            else:
                stop = await self.driver.set_stop_loss(self.symbol, side, order.filled, intent.stop_loss)
            step = "verify_position"
            verification = await self.driver.verify_position(intent, order, VERIFY_BUDGET_MS, self.book)
        except Exception as exc:
            self.book.end_open(self.symbol)
            self.fail(f"opening a {side} of {contracts} contracts failed in {step}: {exc!r}")
            raise  # unreachable: fail() raises
        if verification.outcome != "confirmed":
            self.book.end_open(self.symbol)
            self.fail(f"filled {side} entry {order.id} not confirmed by verify_position: {verification!r}")
        await self.book.add(BookPosition(
            symbol=self.symbol, side=side, contracts=verification.contracts,
            entry_price=verification.entry_price or order.average, stop_price=stop.trigger_price, stop=stop,
            intent_id=intent.client_order_id, opened_at=order.timestamp or self.require_venue().now(),
        ))
        return Opened(intent, order, stop, verification, raw)

    async def wait_stream_position(self, contracts: Decimal, symbol: str | None = None) -> bool:
        """Wait until the stream delivered a PositionUpdate of ``contracts`` for ``symbol``."""
        symbol = symbol or self.symbol
        return await self.journal.wait_for(
            lambda: any(u.contracts == contracts for u in self.journal.position_updates(symbol)), CLOSE_BOUND_S
        )

    # --- closure expectations -------------------------------------------------------------------------

    def last_venue_closure(self, symbol: str | None = None) -> Any:
        closures = self.require_venue().truth.closures_for(self.account, symbol or self.symbol)
        return closures[-1] if closures else None

    async def expect_one_closure(self, cause: str, *, reason: str | None = None,
                                 require_flat_frame: bool = True) -> Any:
        """After the venue closed ``self.symbol``: exactly one ``on_position_closed`` within the bound,
        a flat PositionUpdate on the stream, nothing more after a barrier, nothing resurrected."""
        closure = self.last_venue_closure()
        if closure is None:
            self.fail(f"{cause}: the venue did not close the position (test set-up problem)")
        when = f"closed on the venue ({cause}) at {self.t(closure.ts)}"
        fired = await self.journal.wait_for(lambda: len(self.journal.closed(self.symbol)) >= 1, CLOSE_BOUND_S)
        if not fired:
            self.fail(f"{when}; on_position_closed not fired within {CLOSE_BOUND_S} s")
        if require_flat_frame:
            delivered = await self.journal.wait_for(lambda: bool(self.journal.flat_updates(self.symbol)),
                                                    CLOSE_BOUND_S)
            if not delivered:
                self.fail(f"{when}; the private stream delivered no flat PositionUpdate (contracts=0) within "
                          f"{CLOSE_BOUND_S} s: a closure dropped silently (docs/incidents.md I-1)")
        await self.barrier()
        closed = self.journal.closed(self.symbol)
        if len(closed) != 1:
            self.fail(f"{when}; on_position_closed fired {len(closed)} times, expected exactly once: {closed!r}")
        if self.book.holds(self.symbol) or len(self.journal.opened(self.symbol)) > 1:
            self.fail(f"{when}; the position came back into the book after its closure (resurrected)")
        if reason is not None and closed[0].reason != reason:
            self.fail(f"{when}; on_position_closed reason {closed[0].reason!r}, expected {reason!r} "
                      f"(the closing fill's origin was not attributed)")
        return closed[0]

    async def expect_position_gone(self, action: str, call: Callable[[], Any]) -> int:
        """``call()`` must raise PositionGone after at most one venue call; returns the calls made."""
        calls = self.rest_call_count()
        try:
            result = await call()
        except PositionGone:
            pass
        except Exception as exc:
            self.fail(f"is closed on the venue; {action} raised {exc!r} instead of PositionGone")
        else:
            self.fail(f"is closed on the venue; {action} reported success ({result!r}) instead of raising "
                      f"PositionGone")
        made = self.rest_call_count() - calls if calls is not None else 0
        if made > 1:
            self.fail(f"is closed on the venue; {action} raised PositionGone only after {made} venue calls "
                      f"(at most one allowed): {self.rest_call_delta_text(calls)}")
        return made

    # --- REST call accounting ---------------------------------------------------------------------------

    def rest_calls(self) -> Any:
        emulator = getattr(self.harness, "emulator", None)
        return getattr(emulator, "rest_calls", None)

    def rest_call_count(self) -> int | None:
        counter = self.rest_calls()
        return None if counter is None else sum(counter.values())

    def rest_call_snapshot(self) -> dict[str, int]:
        counter = self.rest_calls()
        return dict(counter) if counter is not None else {}

    def rest_call_delta_text(self, _before: Any = None) -> str:
        counter = self.rest_calls()
        return ", ".join(f"{k} x{v}" for k, v in sorted((counter or {}).items()))

    # --- ground truth helpers ---------------------------------------------------------------------------

    def venue_position(self, symbol: str | None = None) -> Any:
        return self.require_venue().position(self.account, symbol or self.symbol)

    def unprotected_total_ms(self) -> int:
        return self.require_venue().truth.unprotected_ms(self.account, self.symbol)["total"]

    def open_stops_on_venue(self, symbol: str | None = None) -> list[Any]:
        venue = self.require_venue()
        return [o for o in venue.orders(self.account, symbol or self.symbol, open_only=True, conditional=True)]


def fresh_client_order_id(kind: str = "c") -> str:
    return f"fw-{kind}-{secrets.token_hex(6)}"


def other_side(side: PositionSide) -> PositionSide:
    return "short" if side == "long" else "long"


def stream_saw_order(journal: Journal, order_id: str) -> bool:
    return any(isinstance(e, OrderUpdate) and e.order.id == order_id for e in journal.events)


async def open_contract(plugin: str, databases: Any, options: dict[str, Any] | None = None) -> tuple[Contract, Any]:
    """Load ``plugin``, enter its venue harness, connect, start the stream into a book on a fresh DB.

    :returns: the contract and an async exit function.
    """
    pm = load_plugins([plugin])
    driver = Driver(pm, plugin)
    harness = driver.venue_harness({"seed": 7, **(options or {})})
    stack = contextlib.AsyncExitStack()
    try:
        await stack.enter_async_context(harness)
        store = await Store.open(await databases.create(), max_size=4)
        stack.push_async_callback(store.close)
        contract = Contract(plugin, pm, driver, harness, store)
        pm.register(Recorder(contract.journal), name="contract-recorder")
        await driver.connect(harness.config)
        stack.push_async_callback(driver.disconnect)
        stack.push_async_callback(contract.close)
    except BaseException:
        await stack.aclose()
        raise
    return contract, stack.aclose
