"""``framework.Session``: the public facade for a strategy that lives in the same process.

::

    from framework import Session

    async with Session(plugins=["binance"]) as session:          # emulated unless BINANCE_API_KEY is set
        position = await session.open("binance", "XRP/USDT:USDT", "long", contracts=100,
                                      stop_loss_pct=0.5, take_profit_pct=1, trailing_callback_rate=0.3)
        event = await session.wait_for(lambda e: isinstance(e, PositionEvent) and e.event == "closed")
        async for event in session.events(): ...                  # PositionEvent, StopEvent, Alert, StreamState

A Session loads the plugins (drivers chosen by ``plugins``; every other installed lifecycle plugin too,
unless disabled), connects each driver to its live endpoint (keys in :mod:`framework.settings`) or to its
emulator, opens the store and starts the engine; leaving the ``async with`` stops the engine with every
position left open and protected (closed with ``flatten_on_exit``).  Sizes are in contracts, prices in the
quote currency, times in ms since the epoch (UTC).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import pluggy
from pydantic import BaseModel

from framework.alerts import AlertDelivery
from framework.driver import Driver
from framework.engine import Engine, EngineSettings
from framework.engine.broadcast import client_order_id
from framework.errors import ConfigError, FrameworkError, LeaseLost
from framework.hookspecs import hookimpl
from framework.models import Alert, DriverConfig, MarkPrice, OrderIntent, PositionEvent, Signal, StopEvent, TrailingSpec
from framework.plugins import driver_names, installed_plugins, load_plugins, register
from framework.plugins import drivers as load_drivers
from framework.protocols import VenueHarness
from framework.settings import Limits, Settings, load_settings
from framework.store import Store
from framework.store.leases import is_fenced

log = logging.getLogger(__name__)

MARK_TIMEOUT_S = 5.0
EMULATED_ACCOUNT = "emulated"  # the account label of the emulated venues' rows, before the instance suffix


class SignalRejected(FrameworkError):
    """A signal refused before anything reached the venue (a client-side limit, one-way mode, a bad venue)."""


class PositionAlreadyOpen(SignalRejected):
    """An ``open`` for a symbol that already holds (or is opening) a position: one-way mode adds nothing."""


class StreamState(BaseModel):
    """A private stream changed state (``on_stream_state``): ``connected``, ``reconnected``,
    ``disconnected`` or ``malformed_frame``."""

    venue: str
    state: str
    detail: str = ""
    timestamp: int


class PositionInfo(BaseModel):
    """An open position as the framework holds it.

    :ivar stop_loss / take_profit: trigger prices resting on the venue (``None`` when none is known).
    :ivar protected: a stop-loss is known to rest for it.
    """

    venue: str
    account: str
    symbol: str
    side: str
    contracts: Decimal
    entry_price: Decimal | None
    stop_loss: Decimal | None
    take_profit: Decimal | None
    trailing_callback_rate: Decimal | None
    protected: bool
    source: str


Event = PositionEvent | StopEvent | Alert | StreamState


# --- plugins ------------------------------------------------------------------------------------------


def load_run_plugins(drivers: Iterable[str] | None = None, disabled: Iterable[str] = ()) -> pluggy.PluginManager:
    """Load the selected driver plugins plus every other installed plugin that is not a driver.

    ``drivers`` (``--plugins``) selects the exchange drivers only (``None``: every installed one); lifecycle
    plugins (alerts, journals…) load unless named in ``disabled`` (``--disable-plugin``), as pytest's
    ``-p no:NAME``.

    :raises PluginNotFound: a selected or disabled name is not installed.
    :raises ConfigError: a plugin fails to import or to validate (the message names it).
    """
    available = installed_plugins()
    disabled = {name.strip() for name in disabled if name.strip()}
    unknown = sorted(disabled - set(available))
    if unknown:
        from framework.errors import PluginNotFound

        raise PluginNotFound(f"--disable-plugin: not installed: {', '.join(unknown)}; "
                             f"installed: {', '.join(sorted(available)) or 'none'}")
    selected = None if drivers is None else [n.strip() for n in drivers if n.strip()]
    if selected is not None:
        load_plugins(selected)  # raises PluginNotFound for a name that is not installed
        clash = sorted(set(selected) & disabled)
        if clash:
            raise ConfigError(f"plugin(s) both selected and disabled: {', '.join(clash)}")
    try:
        pm = load_plugins([name for name in available if name not in disabled])
    except ConfigError as exc:  # an installed plugin this run did not ask for must not be a dead end
        raise ConfigError(f"{exc} (--disable-plugin NAME leaves an installed plugin out)") from exc
    if selected is not None:
        for name in driver_names(pm):
            if name not in selected and name in available:
                pm.unregister(name=name)
    return pm


# --- the event tap ---------------------------------------------------------------------------------------


class _EventTap:
    """Lifecycle listener feeding :meth:`Session.events` subscribers and the health figures."""

    def __init__(self) -> None:
        self.subscribers: list[asyncio.Queue[Event]] = []
        self.stream_states: dict[str, StreamState] = {}
        self.last_reconciliation: dict[str, dict[str, Any]] = {}

    def _publish(self, event: Event) -> None:
        for queue in self.subscribers:
            queue.put_nowait(event)

    @hookimpl
    def on_position_open(self, event: PositionEvent) -> None:
        self._publish(event)

    @hookimpl
    def on_position_updated(self, event: PositionEvent) -> None:
        self._publish(event)

    @hookimpl
    def on_position_closed(self, event: PositionEvent) -> None:
        self._publish(event)

    @hookimpl
    def on_stop_moved(self, event: StopEvent) -> None:
        self._publish(event)

    @hookimpl
    def on_alert(self, alert: Alert) -> None:
        self._publish(alert)

    @hookimpl
    def on_stream_state(self, venue: str, state: str, detail: str) -> None:
        event = StreamState(venue=venue, state=state, detail=detail, timestamp=int(time.time() * 1000))
        if state != "malformed_frame":
            self.stream_states[venue] = event
        self._publish(event)

    @hookimpl
    def on_reconciled(self, venue: str, report: dict[str, Any]) -> None:
        self.last_reconciliation[venue] = {"at_ms": int(time.time() * 1000), **report}


# --- helpers ------------------------------------------------------------------------------------------


def _pct(price: Decimal, pct: Decimal, up: bool) -> Decimal:
    factor = 1 + pct / 100 if up else 1 - pct / 100
    return (price * factor).quantize(Decimal(1).scaleb(price.adjusted() - 5))


def intent_from_signal(sig: Signal, mark: Decimal, account: str, client_order_id: str) -> OrderIntent:
    """Turn an ``open`` signal into an :class:`OrderIntent`, resolving ``*_pct`` from ``mark``."""
    assert sig.side is not None and sig.contracts is not None
    long = sig.side == "long"
    stop = sig.stop_loss or _pct(mark, sig.stop_loss_pct, up=not long)  # type: ignore[arg-type]
    take = sig.take_profit or (_pct(mark, sig.take_profit_pct, up=long) if sig.take_profit_pct else None)
    trailing = None
    if sig.trailing_callback_rate is not None:
        activation = _pct(mark, sig.trailing_activation_pct, up=long) if sig.trailing_activation_pct else None
        trailing = TrailingSpec(activation_price=activation, callback_rate=sig.trailing_callback_rate)
    return OrderIntent(
        account=account, venue=sig.venue, symbol=sig.symbol, side=sig.side, contracts=sig.contracts,
        stop_loss=stop, take_profit=take, trailing=trailing, client_order_id=client_order_id,
    )


def quote_currency(symbol: str) -> str:
    """``XRP/USDT:USDT`` → ``USDT`` (ccxt's unified symbol: BASE/QUOTE:SETTLE)."""
    return symbol.split("/", 1)[-1].split(":", 1)[0]


def check_limits(limits: Limits, sig: Signal, open_positions: int, mark: Decimal | None) -> None:
    """Refuse an ``open`` over a client-side limit.  Notional = contracts × mark price: linear contracts
    of Binance USDⓈ-M and Bybit are one unit of the base currency each.

    :param open_positions: positions open or opening on the signal's venue account.
    :param mark: the current mark price; ``None`` checks the size limits only.
    :raises SignalRejected: naming the limit, the value and the bound.
    """
    assert sig.contracts is not None
    if limits.max_contracts is not None and sig.contracts > limits.max_contracts:
        raise SignalRejected(f"{sig.contracts} contracts is over max_contracts {limits.max_contracts}",
                             venue=sig.venue, symbol=sig.symbol)
    if limits.max_open_positions is not None and open_positions >= limits.max_open_positions:
        raise SignalRejected(f"{open_positions} positions already open: max_open_positions is "
                             f"{limits.max_open_positions}", venue=sig.venue, symbol=sig.symbol)
    if mark is not None and limits.max_notional is not None:
        notional = sig.contracts * mark
        if notional > limits.max_notional:
            quote = quote_currency(sig.symbol)
            raise SignalRejected(f"notional {notional.normalize():f} {quote} is over max_notional "
                                 f"{limits.max_notional} {quote}", venue=sig.venue, symbol=sig.symbol)


class _FirstMark:
    """A one-shot StreamSink for ``watch_mark_prices``: keeps the first tick."""

    def __init__(self) -> None:
        self.tick: MarkPrice | None = None
        self.arrived = asyncio.Event()

    async def on_event(self, event: Any) -> None:
        if isinstance(event, MarkPrice) and self.tick is None:
            self.tick = event
            self.arrived.set()

    async def on_connected(self, reconnect: bool) -> None: ...

    async def on_disconnected(self, detail: str) -> None: ...

    def on_malformed(self, raw: str | bytes, error: Exception) -> None: ...


async def current_mark(driver: Driver, symbol: str, timeout_s: float = MARK_TIMEOUT_S) -> Decimal:
    """The venue's current mark price of ``symbol``, from the driver's mark-price stream.

    :raises FrameworkError: no tick within ``timeout_s``.
    """
    sink = _FirstMark()
    task = asyncio.create_task(driver.watch_mark_prices([symbol], sink))
    try:
        await asyncio.wait_for(sink.arrived.wait(), timeout_s)
    except TimeoutError:
        raise FrameworkError("no mark price", venue=driver.venue, symbol=symbol) from None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sink.tick is not None
    return sink.tick.price


# --- the session ----------------------------------------------------------------------------------------


class Session:
    """The framework running over some venues, for a strategy in the same process.

    :param plugins: driver plugins to run (``None``: every installed one).
    :param settings: keys, endpoints, limits (default: from the environment / ``.env``).
    :param live: confirm that plugins with keys may trade on a real account; without it a Session with a
        live plugin refuses to start (``FRAMEWORK_LIVE=true`` confirms too).
    :param testnet: live plugins use their venue's test network.
    :param speed / seed / faults: the emulated venues' price replay speed, fault seed and fault knobs.
    :param disabled_plugins: installed lifecycle plugins not to load.
    :param listeners: extra lifecycle plugin objects, registered as ``(name, plugin)``.
    :param flatten_on_exit: close every position when the session ends.
    :param pool_size: the most database connections the session opens (one pool per session; an accounts
        file runs one session per account: ``framework.app.accounts.ACCOUNT_POOL_SIZE`` each).
    :raises ConfigError: from ``__aenter__``: bad settings, no driver, live without confirmation.
    """

    def __init__(
        self, plugins: Iterable[str] | None = None, *, settings: Settings | None = None, live: bool = False,
        testnet: bool = False, speed: float = 100.0, seed: int = 0, faults: str | None = None,
        disabled_plugins: Iterable[str] = (), listeners: Iterable[tuple[str, object]] = (),
        flatten_on_exit: bool = False, engine_settings: EngineSettings | None = None, pool_size: int = 10,
    ) -> None:
        self.pool_size = pool_size
        self.plugins = None if plugins is None else list(plugins)
        self.settings = settings
        self.confirm_live = live
        self.testnet = testnet
        self.speed, self.seed, self.faults = speed, seed, faults
        self.disabled_plugins = list(disabled_plugins)
        self.listeners = list(listeners)
        self.flatten_on_exit = flatten_on_exit
        self.engine_settings = engine_settings or EngineSettings()
        self.pm: pluggy.PluginManager | None = None
        self.engine: Engine | None = None
        self.store: Store | None = None
        self.harnesses: dict[str, VenueHarness] = {}
        self.live_venues: dict[str, DriverConfig] = {}
        self.limits = Limits()
        self._tap = _EventTap()
        self.alerts: AlertDelivery | None = None
        self.signals: Counter[str] = Counter(accepted=0, rejected=0, failed=0)  # submit() outcomes (metrics)
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._opening: set[tuple[str, str]] = set()
        self._stack: contextlib.AsyncExitStack | None = None
        # A real account's label is stable (a restart finds its rows). An in-process emulated venue is a new,
        # empty account in every run: rows an earlier emulator left open are not this account's positions
        # (loading them made the second `framework run` close them as orphans and exit 1).
        self.emulated_account = f"{EMULATED_ACCOUNT}-{secrets.token_hex(4)}"

    # --- lifecycle ---

    def prepare(self) -> Session:
        """Load settings and plugins and decide, per venue, live or emulated (nothing connects yet).

        :raises ConfigError: see the class.
        """
        self.settings = self.settings or load_settings()
        self.limits = self.settings.limits()
        pm = load_run_plugins(self.plugins, self.disabled_plugins)
        register(pm, self._tap, "framework.session")
        for name, listener in self.listeners:
            register(pm, listener, name)
        self.alerts = self._alert_delivery(self.settings)
        if self.alerts is not None:
            register(pm, self.alerts, "framework.alerts")
        drivers = load_drivers(pm)
        if not drivers:
            raise ConfigError("no driver plugin loaded")
        self.settings.warn_unused_keys(list(installed_plugins()), [d.plugin_name for d in drivers.values()])
        for venue, driver in drivers.items():
            config = self.settings.live_config(driver.plugin_name)
            if config is not None:
                self.live_venues[venue] = config.model_copy(update={"testnet": config.testnet or self.testnet})
        if self.live_venues and not (self.confirm_live or self.settings.live):
            raise ConfigError(f"keys are set for {', '.join(sorted(self.live_venues))}: this would trade on a real "
                              "account; pass --live (or set FRAMEWORK_LIVE=true) to confirm")
        self.pm = pm
        return self

    @staticmethod
    def _alert_delivery(settings: Settings) -> AlertDelivery | None:
        """The ``framework.alerts`` plugin when ``FRAMEWORK_ALERT_URLS`` is set.

        :raises ConfigError: an entry apprise does not understand (named by position, never echoed).
        """
        urls = settings.alert_url_list()
        if not urls:
            return None
        try:
            return AlertDelivery(urls, min_level=settings.alert_min_level, positions=settings.alert_positions,
                                 window_s=settings.alert_window_s)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    async def __aenter__(self) -> Session:
        if self.pm is None:
            self.prepare()
        assert self.settings is not None and self.pm is not None
        drivers = load_drivers(self.pm)
        self._stack = stack = contextlib.AsyncExitStack()
        try:
            configs = dict(self.live_venues)
            for venue, driver in drivers.items():
                if venue in configs:
                    continue
                harness = driver.venue_harness({"speed": self.speed, "seed": self.seed, "faults": self.faults})
                await stack.enter_async_context(harness)
                self.harnesses[venue] = harness
                # An emulated venue's rows never mix with a real account's.  Under a label that outlives the
                # run (an accounts file's emulated-<label>) an earlier emulator's open rows are closed at the
                # first activation: that venue is gone (Engine empty_at_start).
                configs[venue] = harness.config.model_copy(update={"account": self.emulated_account})
            if self.alerts is not None:  # closed last: the engine's stop may still alert
                stack.push_async_callback(self.alerts.aclose)
                await self.alerts.start()
            self.store = store = await Store.open(self.settings.database_url, max_size=self.pool_size)
            stack.push_async_callback(store.close)
            self.engine = Engine(self.pm, store, drivers, configs, self.engine_settings,
                                 lease_s=self.settings.lease_s, empty_at_start=set(self.harnesses))
            stack.push_async_callback(self._stop_engine)
            await self.engine.start()
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def _stop_engine(self) -> None:
        assert self.engine is not None
        await self.engine.stop(flatten=self.flatten_on_exit)

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()

    # --- acting ---

    def _engine(self) -> Engine:
        if self.engine is None:
            raise ConfigError("the session is not running (use `async with Session(...)`)")
        return self.engine

    async def open(
        self, venue: str, symbol: str, side: str, contracts: Decimal | float | str, *,
        stop_loss: Decimal | float | str | None = None, stop_loss_pct: Decimal | float | str | None = None,
        take_profit: Decimal | float | str | None = None, take_profit_pct: Decimal | float | str | None = None,
        trailing_activation_pct: Decimal | float | str | None = None,
        trailing_callback_rate: Decimal | float | str | None = None,
    ) -> PositionInfo:
        """Open a protected position: entry, stop-loss (absolute or percent from the mark price), optional
        take-profit and trailing stop, verified on the venue (:meth:`framework.engine.Engine.open`).

        :raises pydantic.ValidationError: a malformed request (names the field).
        :raises SignalRejected: over a client-side limit, or the symbol already holds a position.
        :raises FrameworkError: the venue refused or the open was rolled back (subclasses name which).
        """
        values = {"stop_loss": stop_loss, "stop_loss_pct": stop_loss_pct, "take_profit": take_profit,
                  "take_profit_pct": take_profit_pct, "trailing_activation_pct": trailing_activation_pct,
                  "trailing_callback_rate": trailing_callback_rate}
        sig = Signal.model_validate({
            "venue": venue, "symbol": symbol, "action": "open", "side": side, "contracts": str(contracts),
            **{k: str(v) for k, v in values.items() if v is not None},
        })
        position = await self.submit(sig)
        assert position is not None
        return position

    async def close(self, venue: str, symbol: str) -> bool:
        """Close ``symbol``'s position on ``venue`` with a reduce-only order (reason ``reduce_only_close``).

        :returns: ``False`` when no position was held.
        :raises FrameworkError: the close failed (the position stays in the book).
        """
        engine = self._engine()
        if not engine.holds(venue, symbol):
            return False
        return await engine.close(venue, symbol)

    async def submit(self, sig: Signal) -> PositionInfo | None:
        """Carry out ``sig`` now (its ``at_ms`` is the caller's business).

        :returns: the opened position for ``open``; ``None`` otherwise.
        :raises SignalRejected / FrameworkError: as :meth:`open` and :meth:`close`.
        """
        if self.draining:
            self.signals["rejected"] += 1
            raise SignalRejected("shutting down: no new signals are taken", venue=sig.venue, symbol=sig.symbol)
        self._in_flight += 1
        self._idle.clear()
        try:
            result = await self._submit(sig)
        except SignalRejected:
            self.signals["rejected"] += 1
            raise
        except Exception as exc:  # a venue error, or an unexpected one: failed either way
            self.signals["failed"] += 1
            fenced = exc if is_fenced(exc) else exc.__cause__ if is_fenced(exc.__cause__) else None
            if fenced is not None:  # the database refused our epoch: another instance owns the account
                raise LeaseLost(f"refused by the database, stale lease epoch: {fenced}", venue=sig.venue,
                                symbol=sig.symbol) from exc
            raise
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        self.signals["accepted"] += 1
        return result

    @property
    def in_flight(self) -> int:
        """Signals being carried out now (:meth:`submit` calls under way)."""
        return self._in_flight

    async def drain(self, timeout_s: float) -> bool:
        """Stop taking signals (:meth:`submit` raises :class:`SignalRejected`) and wait up to ``timeout_s``
        for the ones under way (an open finishes protected, or rolls back).

        :returns: whether nothing is under way any more.
        """
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning("%d signal(s) still under way after %.0f s", self._in_flight, timeout_s)
            return False
        return True

    async def _submit(self, sig: Signal) -> PositionInfo | None:
        engine = self._engine()
        label = self.settings.account if self.settings is not None else None
        if sig.account is not None and sig.account != label:
            raise SignalRejected(f"signal for account {sig.account!r}; this session manages {label!r}",
                                 venue=sig.venue, symbol=sig.symbol)
        if sig.venue not in engine.venues:
            if sig.venue in engine.leases:  # another instance manages this account now
                raise SignalRejected(f"standby: account {engine.configs[sig.venue].account!r} on {sig.venue} is "
                                     "managed by another instance", venue=sig.venue, symbol=sig.symbol)
            raise SignalRejected(f"venue {sig.venue!r} is not running; running: {sorted(engine.venues)}",
                                 venue=sig.venue, symbol=sig.symbol)
        if sig.action == "close":
            await self.close(sig.venue, sig.symbol)
            return None
        if sig.action == "manual_close":
            harness = self.harnesses.get(sig.venue)
            if harness is None or harness.venue is None:
                raise SignalRejected("manual_close is a demo action for emulated venues only", venue=sig.venue)
            account = harness.config.account
            if harness.venue.position(account, sig.symbol).contracts > 0:
                harness.venue.manual_close(account, sig.symbol)
            return None
        key = (sig.venue, sig.symbol)
        if engine.holds(sig.venue, sig.symbol) or engine.opening(sig.venue, sig.symbol) or key in self._opening:
            raise PositionAlreadyOpen("a position is already open (one-way mode)", venue=sig.venue, symbol=sig.symbol)
        busy = len(engine.positions(sig.venue)[sig.venue]) + sum(1 for v, _ in self._opening if v == sig.venue)
        check_limits(self.limits, sig, busy, None)
        self._opening.add(key)
        try:
            mark = await current_mark(engine.drivers[sig.venue], sig.symbol)
            check_limits(self.limits, sig, busy, mark)
            intent = intent_from_signal(sig, mark, engine.account(sig.venue), client_order_id("o"))
            position = await engine.open(intent)
        finally:
            self._opening.discard(key)
        return self._info(sig.venue, engine.account(sig.venue), position)

    # --- looking ---

    @staticmethod
    def _info(venue: str, account: str, position: Any) -> PositionInfo:
        return PositionInfo(
            venue=venue, account=account, symbol=position.symbol, side=position.side, contracts=position.contracts,
            entry_price=position.entry_price, stop_loss=position.stop_price,
            take_profit=position.take_profit.trigger_price if position.take_profit is not None else None,
            trailing_callback_rate=position.trailing.callback_rate if position.trailing is not None else None,
            protected=position.stop_price is not None, source=position.source,
        )

    def positions(self, venue: str | None = None) -> list[PositionInfo]:
        """Open positions (of ``venue``, or every venue), sorted by venue and symbol."""
        engine = self._engine()
        return [
            self._info(name, engine.configs[name].account, position)
            for name, held in sorted(engine.positions(venue).items())
            for _, position in sorted(held.items())
        ]

    def health(self) -> dict[str, Any]:
        """``{"venues": {venue: {"mode", "account", "stream", "last_reconciliation", "open", "unprotected"}}}``:
        stream state, the last reconciliation's report (with ``at_ms``), open and unprotected positions."""
        engine = self._engine()
        venues = {}
        for name, held in sorted(engine.positions().items()):
            positions = [self._info(name, engine.account(name), p) for p in held.values()]
            stream = self._tap.stream_states.get(name)
            venues[name] = {
                "mode": "live" if name in self.live_venues else "emulated",
                "account": engine.account(name),
                "stream": stream.state if stream else "connecting",
                "last_reconciliation": self._tap.last_reconciliation.get(name),
                "open": len(positions),
                "unprotected": [p.symbol for p in positions if not p.protected],
                "lease": engine.lease_state(name),
            }
        for name in sorted(set(engine.drivers) - set(venues)):  # standby: another instance holds the lease
            venues[name] = {"mode": "live" if name in self.live_venues else "emulated",
                            "account": engine.configs[name].account, "stream": "standby",
                            "last_reconciliation": None, "open": 0, "unprotected": [],
                            "lease": engine.lease_state(name)}
        return {"venues": dict(sorted(venues.items()))}

    def stream_states(self) -> dict[str, str]:
        """The latest state of each venue's private stream."""
        return {venue: state.state for venue, state in self._tap.stream_states.items()}

    # --- events ---

    def events(self) -> EventStream:
        """Every lifecycle event from this call on, in order: :class:`PositionEvent`, :class:`StopEvent`,
        :class:`Alert`, :class:`StreamState`.  ``async for event in session.events()``; subscribe before
        acting to see the action's events; ``break`` (or ``close()``) ends the subscription."""
        return EventStream(self._tap.subscribers)

    async def wait_for(self, predicate: Callable[[Event], bool], timeout_s: float | None = None,
                       events: EventStream | None = None) -> Event:
        """The first event for which ``predicate`` is true, from ``events`` (a subscription taken before
        acting) or from now on.

        :raises TimeoutError: none within ``timeout_s``.
        """
        stream = events or self.events()

        async def first() -> Event:
            async for event in stream:
                if predicate(event):
                    return event
            raise AssertionError("unreachable: the stream never ends")

        try:
            return await asyncio.wait_for(first(), timeout_s)
        finally:
            if events is None:
                stream.close()


class EventStream:
    """A subscription to a Session's lifecycle events (see :meth:`Session.events`)."""

    def __init__(self, subscribers: list[asyncio.Queue[Event]]) -> None:
        self._subscribers = subscribers
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        subscribers.append(self._queue)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        if self._queue in self._subscribers:
            self._subscribers.remove(self._queue)
