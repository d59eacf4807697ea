"""The core's typed handle on one venue's driver plugin (the protocols a driver talks to are in
:mod:`framework.protocols`).

:class:`Driver` calls the driver hooks through ``pm.subset_hook_caller``, so only that venue's plugin
answers, and keeps the :class:`~framework.protocols.DriverSession` its ``connect`` returned.  Every session
operation is available on the driver itself (``await driver.set_stop_loss(...)``), typed from the
protocol and called through one guard: the rate-limit pause before a REST operation, the rate-limit
bookkeeping, and the check of the answer's type against the protocol's return annotation.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import typing
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from framework import protocols
from framework.errors import ConfigError, RateLimited
from framework.hookspecs import DRIVER_HOOKS
from framework.marksockets import WatchedSymbols
from framework.models import DriverConfig, DriverInfo, Order, OrderIntent, TrailingSpec, Verification
from framework.protocols import DriverSession, EntryEvidence, StreamDecoder, StreamEvidence, VenueHarness

if TYPE_CHECKING:
    import pluggy

P = ParamSpec("P")
R = TypeVar("R")

#: what the protocol's annotations name (``WatchedSymbols`` is imported there only for type checking)
PROTOCOL_NAMES = {**vars(protocols), "WatchedSymbols": WatchedSymbols}
#: the per-connection operations: every method of :class:`~framework.protocols.DriverSession`
OPERATIONS = tuple(
    name for name, value in vars(DriverSession).items() if not name.startswith("_") and inspect.isfunction(value)
)
#: each operation's parameters: a call is bound to them, defaults included, before it reaches the session
SIGNATURES = {name: inspect.signature(getattr(DriverSession, name)) for name in OPERATIONS}
#: what each operation must answer, from the protocol's return annotation (``dict[str, Any]`` → ``dict``)
ANSWERS: dict[str, type] = {
    name: typing.get_origin(answer) or answer
    for name in OPERATIONS
    for answer in [typing.get_type_hints(getattr(DriverSession, name), globalns=PROTOCOL_NAMES)["return"]]
}
#: operations (and hooks) that call the venue's REST API, and so wait out a rate-limit pause
PAUSABLE = frozenset({"create_entry", "normalize_order", "set_stop_loss", "set_take_profit", "move_stop_loss",
                      "set_trailing_stop", "cancel_stop_loss", "create_stop_loss_order", "verify_position",
                      "close_position", "fetch_order", "fetch_snapshot"})
RATE_LIMIT_CAP_S = 60.0


class Operation(Generic[P, R]):
    """A :class:`~framework.protocols.DriverSession` method as an attribute of :class:`Driver`: same
    parameters and answer (taken from the protocol, not written again), called through
    :meth:`Driver._operate`."""

    def __init__(self, method: Callable[Concatenate[DriverSession, P], Coroutine[Any, Any, R]]) -> None:
        self.name = method.__name__

    @overload
    def __get__(self, driver: None, owner: type[Driver]) -> Operation[P, R]: ...

    @overload
    def __get__(self, driver: Driver, owner: type[Driver]) -> Callable[P, Coroutine[Any, Any, R]]: ...

    def __get__(
        self, driver: Driver | None, owner: type[Driver]
    ) -> Operation[P, R] | Callable[P, Coroutine[Any, Any, R]]:
        if driver is None:
            return self
        name = self.name

        async def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return typing.cast(R, await driver._operate(name, *args, **kwargs))

        call.__name__ = call.__qualname__ = name
        return call


class SyncOperation(Generic[P, R]):
    """A plain (not coroutine) :class:`~framework.protocols.DriverSession` method as an attribute of
    :class:`Driver` (``market_limits``): the answer is checked, no rate-limit pause (no REST call)."""

    def __init__(self, method: Callable[Concatenate[DriverSession, P], R]) -> None:
        self.name = method.__name__

    @overload
    def __get__(self, driver: None, owner: type[Driver]) -> SyncOperation[P, R]: ...

    @overload
    def __get__(self, driver: Driver, owner: type[Driver]) -> Callable[P, R]: ...

    def __get__(self, driver: Driver | None, owner: type[Driver]) -> SyncOperation[P, R] | Callable[P, R]:
        if driver is None:
            return self
        name = self.name

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return typing.cast(R, driver._operate_now(name, *args, **kwargs))

        call.__name__ = call.__qualname__ = name
        return call


class Driver:
    """One venue's driver plugin, called through its own subset of the hook relay, and its session.

    :param pm: the plugin manager.
    :param plugin_name: the name the driver plugin was registered under (e.g. ``bybit``).
    :raises ConfigError: the plugin does not implement ``driver_info``.
    :ivar session: the connection ``connect`` returned (``None`` before :meth:`connect` and after
        :meth:`disconnect`).
    """

    def __init__(self, pm: pluggy.PluginManager, plugin_name: str) -> None:
        self.plugin_name = plugin_name
        plugin = pm.get_plugin(plugin_name)
        others = [
            p for name, p in pm.list_name_plugin() if name != plugin_name and p is not plugin and _is_driver(pm, p)
        ]
        self._hooks = {name: pm.subset_hook_caller(name, remove_plugins=others) for name in DRIVER_HOOKS}
        info = self._hooks["driver_info"]()
        if info is None:
            raise ConfigError(f"plugin {plugin_name!r} does not implement driver_info")
        self.info: DriverInfo = info
        self.venue: str = info.venue
        self.session: DriverSession | None = None
        self.counters: Counter[str] = Counter(rate_limited=0, rate_limit_waits=0)
        self._paused_until = 0.0  # time.monotonic() until which venue calls wait
        self._backoff_s = 0.0

    def __repr__(self) -> str:
        return f"Driver({self.plugin_name!r}, venue={self.venue!r})"

    def supports(self, capability: str) -> bool:
        """Whether the driver declares ``capability``."""
        return capability in self.info.capabilities

    def native_trailing_fits(self, trailing: TrailingSpec) -> bool:
        """Whether the venue can run ``trailing`` itself: the driver declares ``native_trailing_stop`` and
        the spec is within its :attr:`~framework.models.DriverInfo.trailing_limits`."""
        limits = self.info.trailing_limits
        return self.supports("native_trailing_stop") and limits is not None and limits.fits(trailing)

    def paused_for_ms(self) -> int:
        """How long calls to this venue still wait because it rate-limited us (0 when not paused)."""
        return max(0, int((self._paused_until - time.monotonic()) * 1000))

    async def rate_limit_pause(self) -> None:
        """Wait out the venue's rate-limit pause, if any (every venue call does this first)."""
        if wait_ms := self.paused_for_ms():
            self.counters["rate_limit_waits"] += 1
            await asyncio.sleep(wait_ms / 1000)

    def _checked(self, name: str, expected: type, result: object) -> Any:
        """``result``, when it is an ``expected``.  :raises ConfigError: naming the plugin and ``name``."""
        if not isinstance(result, expected):
            raise ConfigError(f"plugin {self.plugin_name!r} answered {name} with a {type(result).__name__}, "
                              f"not a {expected.__name__}", venue=self.venue)
        return result

    async def _guarded(self, name: str, expected: type, call: Callable[[], object]) -> Any:
        """Run ``call`` (a hook or a session operation named ``name``); its answer must be an ``expected``.

        While the venue has rate-limited us, a venue call first waits out the pause (one pause for the
        whole venue: every request would be refused anyway).

        :raises ConfigError: the plugin does not implement it, or answered something else.
        :raises RateLimited: the venue refused the call; later calls wait ``retry_after_ms`` (or a
            backoff of 0.5 s doubling to 60 s while refusals continue).
        """
        if name in PAUSABLE:
            await self.rate_limit_pause()
        result = call()
        if result is None and expected is not type(None):
            raise ConfigError(f"plugin {self.plugin_name!r} does not implement {name}", venue=self.venue)
        if inspect.isawaitable(result):
            try:
                result = await result
            except RateLimited as exc:
                self.counters["rate_limited"] += 1
                self._backoff_s = min(RATE_LIMIT_CAP_S, self._backoff_s * 2) if self._backoff_s else 0.5
                pause_s = exc.retry_after_ms / 1000 if exc.retry_after_ms is not None else self._backoff_s
                self._paused_until = max(self._paused_until, time.monotonic() + min(pause_s, RATE_LIMIT_CAP_S))
                raise
            self._backoff_s = 0.0
        return self._checked(name, expected, result)

    def _session_call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], object]:
        """Operation ``name`` of the session, its arguments bound to the protocol's parameters (defaults
        filled in), ready to call.  :raises ConfigError: not connected.  :raises TypeError: bad arguments."""
        session = self.session
        if session is None:
            raise ConfigError(f"plugin {self.plugin_name!r} is not connected", venue=self.venue)
        call = SIGNATURES[name].bind(session, *args, **kwargs)
        call.apply_defaults()
        method = getattr(session, name)
        return lambda: method(*call.args[1:], **call.kwargs)

    def _operate_now(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call plain session operation ``name`` and check its answer (see :class:`SyncOperation`)."""
        return self._checked(name, ANSWERS[name], self._session_call(name, args, kwargs)())

    async def _operate(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call session operation ``name`` (one of :data:`OPERATIONS`) through the guard, its arguments
        bound to the protocol's parameters (defaults filled in); the typed way in is the attribute of the
        same name (``driver.fetch_snapshot()``).

        :raises ConfigError: the driver is not connected, or answered something else.
        :raises TypeError: the arguments do not fit the operation's parameters.
        """
        return await self._guarded(name, ANSWERS[name], self._session_call(name, args, kwargs))

    async def connect(self, config: DriverConfig) -> DriverSession:
        """Connect (hook ``connect``) and keep the session for the operations.

        :raises ConfigError: the plugin does not implement ``connect``, or its session lacks an operation
            (named in the message).
        """
        session = await self._guarded("connect", object, lambda: self._hooks["connect"](config=config))
        if missing := [name for name in OPERATIONS if not callable(getattr(session, name, None))]:
            raise ConfigError(f"plugin {self.plugin_name!r} does not implement {', '.join(missing)} "
                              f"(its session is a {type(session).__name__})", venue=self.venue)
        self.session = typing.cast(DriverSession, session)
        return self.session

    async def disconnect(self) -> None:
        """Close the session (operation ``disconnect``); nothing happens when not connected."""
        if self.session is not None:
            await self._operate("disconnect")
            self.session = None

    create_entry = Operation(DriverSession.create_entry)
    normalize_order = Operation(DriverSession.normalize_order)
    set_stop_loss = Operation(DriverSession.set_stop_loss)
    set_take_profit = Operation(DriverSession.set_take_profit)
    set_trailing_stop = Operation(DriverSession.set_trailing_stop)
    move_stop_loss = Operation(DriverSession.move_stop_loss)
    cancel_stop_loss = Operation(DriverSession.cancel_stop_loss)
    create_stop_loss_order = Operation(DriverSession.create_stop_loss_order)
    close_position = Operation(DriverSession.close_position)
    fetch_order = Operation(DriverSession.fetch_order)
    fetch_snapshot = Operation(DriverSession.fetch_snapshot)
    market_limits = SyncOperation(DriverSession.market_limits)
    run_stream = Operation(DriverSession.run_stream)
    watch_mark_prices = Operation(DriverSession.watch_mark_prices)

    async def verify_position(
        self, intent: OrderIntent, order: Order, budget_ms: int, stream: StreamEvidence
    ) -> Verification:
        """Hook ``verify_position`` (answered by the core unless the driver adds a source)."""
        evidence = EntryEvidence(self, stream)
        result = await self._guarded("verify_position", Verification, lambda: self._hooks["verify_position"](
            session=self.session, intent=intent, order=order, budget_ms=budget_ms, evidence=evidence))
        return typing.cast(Verification, result)

    def make_decoder(self) -> StreamDecoder:
        """Hook ``make_decoder``."""
        decoder = self._hooks["make_decoder"]()
        if not isinstance(decoder, StreamDecoder):
            raise ConfigError(f"plugin {self.plugin_name!r} does not implement make_decoder", venue=self.venue)
        return decoder

    def venue_harness(self, options: dict[str, Any] | None = None) -> VenueHarness:
        """Hook ``venue_harness``."""
        harness = self._hooks["venue_harness"](options=dict(options or {}))
        if not isinstance(harness, VenueHarness):
            raise ConfigError(f"plugin {self.plugin_name!r} provides no venue harness", venue=self.venue)
        return harness


def _is_driver(pm: pluggy.PluginManager, plugin: object) -> bool:
    return any(caller.name == "driver_info" for caller in pm.get_hookcallers(plugin) or ())
