"""The Engine: one PositionBook, opener, protector, trailing manager and reconciler per venue.

``start()`` connects the drivers, reconciles once, then runs the private streams, the mark-price
watchers and the reconciliation loop as tasks; ``stop()`` ends them and leaves every position protected
(or flat with ``flatten=True``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pluggy

from framework.driver import Driver
from framework.driverkit import Backoff
from framework.engine.book import BookListener, BookPosition, PositionBook
from framework.engine.broadcast import alert
from framework.engine.closing import cancel_leftovers, close_on_venue
from framework.engine.opener import Opener
from framework.engine.protection import Protector
from framework.engine.reconcile import Reconciler
from framework.engine.settings import EngineSettings
from framework.engine.trailing import TrailingManager
from framework.errors import ConfigError, VenueError
from framework.marksockets import WatchedSymbols
from framework.models import DriverConfig, MarkPrice, OrderIntent, VenueSnapshot
from framework.store import Store

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
CONNECT_ATTEMPTS = 4  # start-up: a transient venue error (5xx loading markets) is retried
CONNECT_BACKOFF_S = 0.5
STOP_TIMEOUT_S = 5.0


@dataclass
class VenueEngine:
    """Everything the engine runs for one venue."""

    driver: Driver
    book: PositionBook
    opener: Opener
    protector: Protector
    trailing: TrailingManager
    reconciler: Reconciler
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    watched_marks: WatchedSymbols | None = None  # the symbols the mark-price stream follows


class VenueWiring(BookListener):
    """How one venue's book hands work to the other parts: a reconciliation when the stream (re)connects
    or shows an unknown position, mark prices to the trailing manager, a closed position's leftover stops
    to the engine's clean-up."""

    def __init__(self, engine: Engine, venue: str, driver: Driver) -> None:
        self.engine = engine
        self.venue = venue
        self.driver = driver
        self.reconciler: Reconciler | None = None
        self.trailing: TrailingManager | None = None
        self.protector: Protector | None = None

    def reconcile_soon(self) -> None:
        if self.reconciler is not None:
            self.reconciler.request()

    def unknown_position(self, symbol: str) -> None:
        self.reconcile_soon()

    async def on_mark(self, mark: MarkPrice) -> None:
        if self.trailing is not None:
            await self.trailing.on_mark(mark)

    def on_closed(self, position: BookPosition) -> None:
        self.engine._clean_up_after(self.venue, self.driver, position)

    def stop_removed(self, symbol: str, order_id: str | None) -> None:
        if self.protector is not None:
            self.engine._spawn(self.protector.reprotect(symbol, order_id))


class Engine:
    """The position lifecycle over several venues.

    :param pm: plugin manager with the drivers and lifecycle listeners registered.
    :param store: persistence.
    :param drivers: driver per venue name.
    :param configs: connection settings per venue name.
    :param settings: budgets and rate limits.
    """

    def __init__(
        self, pm: pluggy.PluginManager, store: Store, drivers: dict[str, Driver], configs: dict[str, DriverConfig],
        settings: EngineSettings | None = None,
    ) -> None:
        missing = sorted(set(drivers) - set(configs))
        if missing:
            raise ConfigError(f"no driver config for venue(s) {', '.join(missing)}")
        self.pm = pm
        self.store = store
        self.drivers = drivers
        self.configs = configs
        self.settings = settings or EngineSettings()
        self.venues: dict[str, VenueEngine] = {}
        self._cleanups: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.restarts: Counter[str] = Counter()  # by "<venue> <task>": what _supervise restarted

    def venue(self, name: str) -> VenueEngine:
        """The per-venue parts.  :raises ConfigError: unknown venue."""
        try:
            return self.venues[name]
        except KeyError:
            raise ConfigError(f"venue {name!r} is not running; running: {sorted(self.venues)}") from None

    async def start(self) -> None:
        """Connect every driver, reconcile once, then start the streams, watchers and reconcile loop."""
        for name, driver in self.drivers.items():
            config = self.configs[name]
            await self._connect(name, driver, config)
            wiring = VenueWiring(self, name, driver)
            book = PositionBook(name, config.account, self.pm, self.store, self.settings.fill_grace_ms, wiring)
            protector = Protector(book, driver, self.store, self.pm, self.settings)
            trailing = TrailingManager(book, driver, self.store, self.pm, protector, self.settings)
            reconciler = Reconciler(book, driver, self.store, self.pm, protector, self.settings)
            wiring.reconciler, wiring.trailing, wiring.protector = reconciler, trailing, protector
            self.venues[name] = VenueEngine(driver, book, Opener(book, driver, self.store, self.pm, self.settings),
                                            protector, trailing, reconciler)
        for name, parts in self.venues.items():
            try:
                await parts.reconciler.reconcile()
            except VenueError as exc:  # a transient venue error: the reconcile loop tries again at once
                await alert(self.pm, "warning", f"start-up reconciliation failed, retrying: {exc}", venue=name)
                parts.reconciler.request()
            parts.tasks = [
                asyncio.create_task(self._supervise(name, "stream", partial(parts.driver.run_stream, parts.book))),
                asyncio.create_task(self._supervise(name, "reconcile", parts.reconciler.run_forever)),
                asyncio.create_task(self._supervise(name, "marks", partial(self._watch_marks, parts))),
            ]

    async def _connect(self, name: str, driver: Driver, config: DriverConfig) -> None:
        """Connect, retrying a venue error (a 5xx loading markets) ``CONNECT_ATTEMPTS`` times with backoff.

        :raises VenueError: the last attempt's error.
        """
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                await driver.connect(config)
                return
            except VenueError as exc:
                if attempt == CONNECT_ATTEMPTS:
                    raise
                delay_s = CONNECT_BACKOFF_S * 2 ** (attempt - 1)
                log.warning("%s: connect attempt %d failed (%s); again in %.1f s", name, attempt, exc, delay_s)
                await asyncio.sleep(delay_s)

    def positions(self, venue: str | None = None) -> dict[str, dict[str, BookPosition]]:
        """Open positions by venue, then by symbol (copies; ``venue`` narrows to one).

        :raises ConfigError: unknown venue.
        """
        names = [venue] if venue is not None else list(self.venues)
        return {name: self.venue(name).book.positions() for name in names}

    def holds(self, venue: str, symbol: str) -> bool:
        """Whether ``venue`` has an open position on ``symbol`` (the book's view).

        :raises ConfigError: unknown venue.
        """
        return self.venue(venue).book.holds(symbol)

    def opening(self, venue: str, symbol: str) -> bool:
        """Whether an atomic open of ``symbol`` is in progress on ``venue``."""
        return self.venue(venue).book.opening(symbol)

    def account(self, venue: str) -> str:
        """The account the engine manages on ``venue``."""
        return self.venue(venue).book.account

    async def snapshot(self, venue: str) -> VenueSnapshot:
        """A fresh venue snapshot (positions, open orders, resting stops) through the venue's driver.

        :raises VenueError: the venue did not answer.
        """
        return await self.venue(venue).driver.fetch_snapshot()

    async def reconcile_all(self) -> dict[str, dict[str, Any]]:
        """One reconciliation pass per venue now (see :class:`Reconciler`); the reports by venue."""
        return {name: await parts.reconciler.reconcile() for name, parts in self.venues.items()}

    async def open(self, intent: OrderIntent) -> BookPosition:
        """Open ``intent`` atomically on its venue (see :meth:`Opener.open`)."""
        parts = self.venue(intent.venue)
        cleanup = self._cleanups.get((intent.venue, intent.symbol))
        if cleanup is not None:  # the previous position's stops must be gone before new ones are placed
            await asyncio.wait({cleanup}, timeout=STOP_TIMEOUT_S)
        return await parts.opener.open(intent)

    async def close(self, venue: str, symbol: str) -> bool:
        """Close ``symbol``'s position on ``venue`` with a reduce-only order (reason ``reduce_only_close``).

        :returns: ``True`` when it left the book (or was already gone on the venue).
        """
        parts = self.venue(venue)
        return await close_on_venue(parts.book, parts.driver, self.store, self.pm, symbol)

    def _spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background (the stream's caller must not wait for it); a failure is logged
        and alerted, and :meth:`stop` waits for what is still running."""

        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("background work failed")
                await alert(self.pm, "critical", f"background work failed: {exc!r}")

        task = asyncio.ensure_future(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _clean_up_after(self, venue: str, driver: Driver, position: BookPosition) -> None:
        """Cancel a closed position's leftover stops in the background (the close path does not wait);
        the next open of that symbol waits for it (:meth:`open`)."""
        key = (venue, position.symbol)
        task = asyncio.ensure_future(cancel_leftovers(driver, position))
        self._cleanups[key] = task
        task.add_done_callback(lambda done: self._cleanups.pop(key, None) if self._cleanups.get(key) is done else None)

    async def stop(self, flatten: bool = False) -> None:
        """Stop every task and disconnect; positions stay open and protected unless ``flatten``."""
        pending = set(self._cleanups.values()) | self._background
        if pending:
            await asyncio.wait(pending, timeout=STOP_TIMEOUT_S)
        for name, parts in self.venues.items():
            if flatten:
                for symbol in parts.book.positions():
                    try:
                        await close_on_venue(parts.book, parts.driver, self.store, self.pm, symbol)
                    except Exception as exc:
                        await alert(self.pm, "critical", f"flatten failed: {exc}", venue=name, symbol=symbol)
            for task in parts.tasks:
                task.cancel()
            if parts.tasks:
                _, stuck = await asyncio.wait(parts.tasks, timeout=STOP_TIMEOUT_S)
                if stuck:  # a driver that swallows cancellation must not hang the shutdown
                    await alert(self.pm, "warning", f"{len(stuck)} task(s) ignored cancellation", venue=name)
            parts.tasks.clear()
            await parts.book.flush()  # a flat frame seen before its fill is a closure all the same
            await parts.book.writes.wait_drained(STOP_TIMEOUT_S)
            await parts.book.writes.stop()
            try:
                await asyncio.wait_for(parts.driver.disconnect(), STOP_TIMEOUT_S)
            except TimeoutError:
                await alert(self.pm, "warning", "driver disconnect timed out", venue=name)

    async def _supervise(self, venue: str, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run`` until cancelled; after an unexpected error: log, alert, count (``restarts``) and
        restart it with backoff (1 s doubling to 30 s; a run that lasted a minute starts the backoff over)."""
        backoff = Backoff(base_s=RESTART_DELAY_S, cap_s=30.0, floor_s=RESTART_DELAY_S)
        while True:
            started = time.monotonic()
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.restarts[f"{venue} {what}"] += 1
                if time.monotonic() - started > 60:
                    backoff.reset()
                delay_s = backoff.next_delay()
                log.exception("%s: %s task failed, restarting in %.1f s", venue, what, delay_s)
                await alert(self.pm, "warning", f"{what} task failed, restarting: {exc!r}", venue=venue)
                await asyncio.sleep(delay_s)

    async def _watch_marks(self, parts: VenueEngine) -> None:
        """Keep one ``watch_mark_prices`` running for the symbols whose stops the engine trails: the set
        changes as positions come and go, and the driver follows it on the sockets it has open (subscribe /
        unsubscribe), never reconnecting for it (issue 17 item 5).  Positions whose trailing stop the venue
        runs need no mark price."""
        watched = WatchedSymbols()
        parts.watched_marks = watched
        watcher = asyncio.create_task(parts.driver.watch_mark_prices(watched, parts.trailing))
        try:
            while True:
                parts.book.positions_changed.clear()
                watched.set(s for s, p in parts.book.positions().items() if p.engine_trails)
                waiter = asyncio.ensure_future(parts.book.positions_changed.wait())
                await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if watcher.done():
                    waiter.cancel()
                    watcher.result()  # raises what ended it, for the supervisor to restart
                    return
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

