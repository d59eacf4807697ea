"""The core's typed handle on one venue's driver plugin (the protocols a driver talks to are in
:mod:`framework.protocols`).

:class:`Driver` wraps ``pm.subset_hook_caller`` for every driver hook, so the engine calls
``await driver.set_stop_loss(...)`` and only that venue's plugin answers.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from framework.errors import ConfigError, RateLimited
from framework.hookspecs import DRIVER_HOOKS
from framework.marksockets import WatchedSymbols
from framework.models import (
    DriverConfig,
    DriverInfo,
    MarketLimits,
    Order,
    OrderIntent,
    PositionSide,
    StopLoss,
    TrailingSpec,
    VenueSnapshot,
    Verification,
)
from framework.protocols import StreamDecoder, StreamEvidence, StreamSink, VenueHarness

if TYPE_CHECKING:
    import pluggy

T = TypeVar("T")

#: hooks that call the venue's REST API, and so wait out a rate-limit pause
PAUSABLE = frozenset({"create_entry", "normalize_order", "set_stop_loss", "set_take_profit", "move_stop_loss",
                      "set_trailing_stop", "cancel_stop_loss", "verify_position", "close_position", "fetch_order",
                      "fetch_snapshot"})
RATE_LIMIT_CAP_S = 60.0


@dataclass(frozen=True)
class EntryEvidence:
    """What ``verify_position`` may consult besides the venue connection: the venue's :class:`Driver`
    (order status, snapshots) and its stream state."""

    driver: Driver
    stream: StreamEvidence


class Driver:
    """One venue's driver plugin, called through its own subset of the hook relay.

    :param pm: the plugin manager.
    :param plugin_name: the name the driver plugin was registered under (e.g. ``bybit``).
    :raises ConfigError: the plugin does not implement ``driver_info``.
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
        self.conn: Any = None
        self.counters: Counter[str] = Counter(rate_limited=0, rate_limit_waits=0)
        self._paused_until = 0.0  # time.monotonic() until which venue calls wait
        self._backoff_s = 0.0

    def __repr__(self) -> str:
        return f"Driver({self.plugin_name!r}, venue={self.venue!r})"

    def supports(self, capability: str) -> bool:
        """Whether the driver declares ``capability``."""
        return capability in self.info.capabilities

    def paused_for_ms(self) -> int:
        """How long calls to this venue still wait because it rate-limited us (0 when not paused)."""
        return max(0, int((self._paused_until - time.monotonic()) * 1000))

    async def rate_limit_pause(self) -> None:
        """Wait out the venue's rate-limit pause, if any (every venue call does this first)."""
        if wait_ms := self.paused_for_ms():
            self.counters["rate_limit_waits"] += 1
            await asyncio.sleep(wait_ms / 1000)

    async def _call(self, hook: str, expected: type[T], **kwargs: Any) -> T:
        """Call ``hook`` on this venue's plugin; the answer must be an ``expected``.

        While the venue has rate-limited us, a venue call first waits out the pause (one pause for the
        whole venue: every request would be refused anyway).

        :raises ConfigError: the plugin does not implement the hook, or answered something else.
        :raises RateLimited: the venue refused the call; later calls wait ``retry_after_ms`` (or a
            backoff of 0.5 s doubling to 60 s while refusals continue).
        """
        if hook in PAUSABLE:
            await self.rate_limit_pause()
        result = self._hooks[hook](**kwargs)
        if result is None:
            raise ConfigError(f"plugin {self.plugin_name!r} does not implement {hook}", venue=self.venue)
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
        if not isinstance(result, expected):
            raise ConfigError(f"plugin {self.plugin_name!r} answered {hook} with a {type(result).__name__}, "
                              f"not a {expected.__name__}", venue=self.venue)
        return result

    async def connect(self, config: DriverConfig) -> Any:
        """Connect (see hook ``connect``) and keep the connection for later calls."""
        self.conn = await self._call("connect", object, config=config)
        return self.conn

    async def disconnect(self) -> None:
        """Close the connection (hook ``disconnect``)."""
        if self.conn is not None:
            await self._call("disconnect", bool, conn=self.conn)
            self.conn = None

    async def create_entry(self, intent: OrderIntent) -> dict[str, Any]:
        """Hook ``create_entry``."""
        return await self._call("create_entry", dict, conn=self.conn, intent=intent)

    async def normalize_order(self, raw: dict[str, Any], intent: OrderIntent | None = None) -> Order:
        """Hook ``normalize_order``."""
        return await self._call("normalize_order", Order, conn=self.conn, raw=raw, intent=intent)

    async def set_stop_loss(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
    ) -> StopLoss:
        """Hook ``set_stop_loss``."""
        return await self._call(
            "set_stop_loss", StopLoss, conn=self.conn, symbol=symbol, side=side, contracts=contracts,
            trigger_price=trigger_price,
        )

    async def set_take_profit(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
    ) -> StopLoss:
        """Hook ``set_take_profit``."""
        return await self._call(
            "set_take_profit", StopLoss, conn=self.conn, symbol=symbol, side=side, contracts=contracts,
            trigger_price=trigger_price,
        )

    async def move_stop_loss(self, stop: StopLoss, trigger_price: Decimal) -> StopLoss:
        """Hook ``move_stop_loss``."""
        return await self._call("move_stop_loss", StopLoss, conn=self.conn, stop=stop, trigger_price=trigger_price)

    async def set_trailing_stop(
        self, symbol: str, side: PositionSide, contracts: Decimal, trailing: TrailingSpec, reference_price: Decimal
    ) -> StopLoss:
        """Hook ``set_trailing_stop`` (capability ``native_trailing_stop``)."""
        return await self._call(
            "set_trailing_stop", StopLoss, conn=self.conn, symbol=symbol, side=side, contracts=contracts,
            trailing=trailing, reference_price=reference_price,
        )

    def native_trailing_fits(self, trailing: TrailingSpec) -> bool:
        """Whether the venue can run ``trailing`` itself: the driver declares ``native_trailing_stop`` and
        the spec is within its :attr:`~framework.models.DriverInfo.trailing_limits`."""
        limits = self.info.trailing_limits
        return self.supports("native_trailing_stop") and limits is not None and limits.fits(trailing)

    async def cancel_stop_loss(self, stop: StopLoss) -> bool:
        """Hook ``cancel_stop_loss``."""
        return await self._call("cancel_stop_loss", bool, conn=self.conn, stop=stop)

    async def verify_position(
        self, intent: OrderIntent, order: Order, budget_ms: int, stream: StreamEvidence
    ) -> Verification:
        """Hook ``verify_position`` (answered by the core unless the driver adds a source)."""
        return await self._call(
            "verify_position", Verification, conn=self.conn, intent=intent, order=order, budget_ms=budget_ms,
            evidence=EntryEvidence(self, stream),
        )

    async def close_position(
        self, symbol: str, side: PositionSide, contracts: Decimal, client_order_id: str
    ) -> Order:
        """Hook ``close_position``."""
        return await self._call(
            "close_position", Order, conn=self.conn, symbol=symbol, side=side, contracts=contracts,
            client_order_id=client_order_id,
        )

    async def fetch_order(
        self, symbol: str, order_id: str | None = None, client_order_id: str | None = None
    ) -> Order:
        """Hook ``fetch_order``."""
        return await self._call(
            "fetch_order", Order, conn=self.conn, symbol=symbol, order_id=order_id, client_order_id=client_order_id
        )

    async def fetch_snapshot(self) -> VenueSnapshot:
        """Hook ``fetch_snapshot``."""
        return await self._call("fetch_snapshot", VenueSnapshot, conn=self.conn)

    def market_limits(self, symbol: str) -> MarketLimits:
        """Hook ``market_limits``."""
        limits = self._hooks["market_limits"](conn=self.conn, symbol=symbol)
        if not isinstance(limits, MarketLimits):
            raise ConfigError(f"plugin {self.plugin_name!r} does not implement market_limits", venue=self.venue)
        return limits

    async def run_stream(self, sink: StreamSink) -> None:
        """Hook ``run_stream``: returns only when cancelled."""
        await self._call("run_stream", type(None), conn=self.conn, sink=sink)

    async def watch_mark_prices(self, symbols: list[str] | WatchedSymbols, sink: StreamSink) -> None:
        """Hook ``watch_mark_prices``: returns only when cancelled."""
        await self._call("watch_mark_prices", type(None), conn=self.conn, symbols=symbols, sink=sink)

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
