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
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

import pluggy

from framework.driver import Driver
from framework.driverkit import Backoff
from framework.engine.book import BookListener, BookPosition, PositionBook
from framework.engine.broadcast import alert
from framework.engine.closing import cancel_leftovers, close_on_venue
from framework.engine.lease import LeaseKeeper, guarded
from framework.engine.opener import Opener
from framework.engine.protection import Protector
from framework.engine.reconcile import Reconciler
from framework.engine.settings import EngineSettings
from framework.engine.trailing import TrailingManager
from framework.errors import ConfigError, LeaseLost, VenueError
from framework.marksockets import WatchedSymbols
from framework.models import DriverConfig, MarkPrice, OrderIntent, PositionEvent, VenueSnapshot
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
    :param owner: this instance's id in lease rows; with ``lease_s`` each venue account is managed only while
        this instance holds its lease (:mod:`framework.engine.lease`), else as a standby that takes over.
    :param lease_s: lease length in seconds; ``None``: no leases (a single instance, tests).
    :param empty_at_start: venues known to start empty (an emulator this process just started): an open
        row the database holds for their account is a previous run's, whose venue is gone; it is closed
        (reason ``reconcile``) when the venue is first activated instead of after ``orphan_grace_ms``.
    """

    def __init__(
        self, pm: pluggy.PluginManager, store: Store, drivers: dict[str, Driver], configs: dict[str, DriverConfig],
        settings: EngineSettings | None = None, *, owner: str | None = None, lease_s: float | None = None,
        empty_at_start: Collection[str] = (),
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
        self.leases: dict[str, LeaseKeeper] = {}
        if lease_s is not None:
            from framework.engine.lease import instance_id

            self.owner = owner or instance_id()
            self.leases = {name: LeaseKeeper(store, name, configs[name].account, self.owner, lease_s)
                           for name in drivers}
            # each driver's transport fences its signed requests by the lease (framework.driverkit.fence_requests)
            self.configs = {name: config.model_copy(update={"fence": self.leases.get(name)})
                            for name, config in configs.items()}
        self.takeovers: Counter[str] = Counter()  # by venue: accounts this instance took over as a standby
        self.takeover_ms: dict[str, int] = {}  # by venue: the last takeover's reconcile time
        self._holders: dict[str, asyncio.Task[None]] = {}
        self._empty_at_start = set(empty_at_start)

    def venue(self, name: str) -> VenueEngine:
        """The per-venue parts.  :raises ConfigError: unknown venue; :raises LeaseLost: this instance is a
        standby for that venue's account."""
        try:
            return self.venues[name]
        except KeyError:
            lease = self.leases.get(name)
            if lease is not None:
                raise LeaseLost(f"standby: account {lease.account!r} is managed by another instance",
                                venue=name) from None
            raise ConfigError(f"venue {name!r} is not running; running: {sorted(self.venues)}") from None

    def lease_state(self, name: str) -> dict[str, Any] | None:
        """The lease of ``name``'s account as this instance sees it (``None``: no leases)."""
        lease = self.leases.get(name)
        if lease is None:
            return None
        return {**lease.describe(), "takeovers": self.takeovers[name], "last_takeover_ms": self.takeover_ms.get(name)}

    async def start(self) -> None:
        """Connect every driver; for each venue account whose lease this instance gets (or without leases):
        reconcile once, then start the streams, watchers and reconcile loop.  The other accounts wait as a
        standby and are taken over when their lease expires."""
        for name, driver in self.drivers.items():
            await self._connect(name, driver, self.configs[name])
        for name in self.drivers:
            lease = self.leases.get(name)
            if lease is None:
                await self._activate(name)
                continue
            if await lease.try_acquire():
                log.info("%s: owner of account %s (epoch %s)", name, lease.account, lease.epoch,
                         extra={"event": "lease_owner", "venue": name})
                await self._activate(name)
            else:
                await self._announce_standby(name, lease)
            self._holders[name] = asyncio.create_task(self._hold(name, lease), name=f"lease-{name}")

    def _build(self, name: str) -> VenueEngine:
        """Fresh parts for one venue, acting through a driver that checks the lease before any venue action."""
        driver, config = self.drivers[name], self.configs[name]
        acting = guarded(driver, self.leases.get(name))
        wiring = VenueWiring(self, name, acting)
        book = PositionBook(name, config.account, self.pm, self.store, self.settings.fill_grace_ms, wiring,
                            group_commit=True)
        protector = Protector(book, acting, self.store, self.pm, self.settings)
        trailing = TrailingManager(book, acting, self.store, self.pm, protector, self.settings)
        reconciler = Reconciler(book, acting, self.store, self.pm, protector, self.settings)
        wiring.reconciler, wiring.trailing, wiring.protector = reconciler, trailing, protector
        return VenueEngine(acting, book, Opener(book, acting, self.store, self.pm, self.settings), protector,
                           trailing, reconciler)

    async def _activate(self, name: str) -> None:
        """Build the venue's parts, reconcile once (a restart or takeover: the DB rows are loaded, the venue
        decides), then start its tasks."""
        parts = self.venues[name] = self._build(name)
        if name in self._empty_at_start:
            self._empty_at_start.discard(name)  # once: later activations find this process's own positions
            await self._close_rows_of_a_gone_venue(name)
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

    async def _close_rows_of_a_gone_venue(self, name: str) -> None:
        account = self.configs[name].account
        try:
            for row in await self.store.open_positions(account, name):
                await self.store.close_position(PositionEvent(
                    event="closed", account=account, venue=name, symbol=row.symbol, side=row.side,
                    contracts=Decimal(0), entry_price=row.entry_price, reason="reconcile", source="reconcile"))
                log.info("%s %s: open row of a previous run on a venue that is gone, closed", name, row.symbol)
        except Exception as exc:  # the database is away: reconciliation closes them after orphan_grace_ms
            log.warning("%s: previous runs' rows not closed at start: %s", name, exc)

    async def _announce_standby(self, name: str, lease: LeaseKeeper) -> None:
        from framework.store.leases import holder

        row = await holder(self.store.pool, name, lease.account)
        by = f" (owner {row['owner']}, epoch {row['epoch']})" if row is not None else ""
        log.warning("%s: standby for account %s%s: taking over when its lease expires", name, lease.account, by,
                    extra={"event": "lease_standby", "venue": name})
        await alert(self.pm, "info", f"standby for account {lease.account}{by}", venue=name)

    async def _hold(self, name: str, lease: LeaseKeeper) -> None:
        """Keep the lease of ``name``'s account: renew it while owner; when it is lost, stop acting at once and
        wait as a standby; when it is acquired again, take over."""
        while True:
            try:
                if lease.state != "owner":
                    await lease.wait_acquired()
                    await self._take_over(name, lease)
                reason = await lease.keep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the holder must outlive any failure: without it nobody renews or stops
                log.exception("%s: lease holder failed", name)
                reason = f"lease holder failed: {exc!r}"
                lease.state, lease.lost_reason = "lost", reason
            await self._deactivate(name, reason)
            await asyncio.sleep(lease.poll_s)  # a failing takeover is not retried in a tight loop

    async def _take_over(self, name: str, lease: LeaseKeeper) -> None:
        """Act on an account whose lease this instance just acquired: reconcile at once (adopt, protect,
        resolve unknown orders by client id, resume trailing from the persisted spec and stop), announce it."""
        started = time.monotonic()
        await self._activate(name)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        self.takeovers[name] += 1
        self.takeover_ms[name] = elapsed_ms
        held = len(self.venues[name].book.positions())
        log.warning("%s: took over account %s at epoch %s; reconciled in %d ms, %d position(s) held", name,
                    lease.account, lease.epoch, elapsed_ms, held, extra={"event": "lease_takeover", "venue": name})
        await alert(self.pm, "warning", f"took over account {lease.account} (epoch {lease.epoch}): reconciled in "
                    f"{elapsed_ms} ms, {held} position(s) held", venue=name)

    async def _deactivate(self, name: str, reason: str) -> None:
        """Stop acting on ``name`` at once (the lease is lost): its tasks end, queued writes are dropped (the
        database would refuse their epoch), positions keep their venue-side stops."""
        parts = self.venues.pop(name, None)
        if parts is not None:
            for task in parts.tasks:
                task.cancel()
            await asyncio.gather(*parts.tasks, return_exceptions=True)
            await parts.book.writes.stop()
        lease = self.leases[name]
        log.error("%s: lease of account %s lost (%s): stopped acting; standby", name, lease.account, reason,
                  extra={"event": "lease_lost", "venue": name})
        await alert(self.pm, "critical", f"lease of account {lease.account} lost ({reason}): this instance stopped "
                    "acting on it; positions keep their venue-side stops", venue=name)
        lease.state = "standby"  # from now on: waiting to acquire it again

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
        """Stop every task and disconnect; positions stay open and protected unless ``flatten``; leases held
        are released (a standby takes over at once)."""
        await self._stop_holders(lambda name: self.leases[name].state != "owner")  # no takeover from here on
        pending = set(self._cleanups.values()) | self._background
        if pending:
            await asyncio.wait(pending, timeout=STOP_TIMEOUT_S)
        for name, parts in list(self.venues.items()):
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
        await self._stop_holders(lambda name: True)  # the owners' heartbeats ran until their work was done
        for name, driver in self.drivers.items():
            lease = self.leases.get(name)
            if lease is not None:
                await lease.release()
            try:
                await asyncio.wait_for(driver.disconnect(), STOP_TIMEOUT_S)
            except TimeoutError:
                await alert(self.pm, "warning", "driver disconnect timed out", venue=name)

    async def _stop_holders(self, which: Callable[[str], bool]) -> None:
        stopping = {name: task for name, task in self._holders.items() if which(name)}
        for task in stopping.values():
            task.cancel()
        await asyncio.gather(*stopping.values(), return_exceptions=True)
        for name in stopping:
            del self._holders[name]

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
        waiter: asyncio.Future[Any] | None = None
        try:
            while True:
                parts.book.positions_changed.clear()
                watched.set(s for s, p in parts.book.positions().items() if p.engine_trails)
                waiter = asyncio.ensure_future(parts.book.positions_changed.wait())
                await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if watcher.done():
                    watcher.result()  # raises what ended it, for the supervisor to restart
                    return
        finally:
            for task in (waiter, watcher):  # a waiter left pending is destroyed pending (and logged) at collection
                if task is not None:
                    task.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

