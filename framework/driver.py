"""The core's typed handle on one venue's driver plugin, and the protocols a driver talks to.

:class:`Driver` wraps ``pm.subset_hook_caller`` for every driver hook, so the engine calls
``await driver.set_stop_loss(...)`` and only that venue's plugin answers.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from framework.errors import ConfigError
from framework.hookspecs import DRIVER_HOOKS
from framework.models import (
    DriverConfig,
    DriverInfo,
    Order,
    OrderIntent,
    OrderUpdate,
    PositionSide,
    PositionUpdate,
    StopLoss,
    StreamEvent,
    VenueSnapshot,
    Verification,
)

if TYPE_CHECKING:
    import pluggy

    from framework.venue import Venue


@runtime_checkable
class StreamSink(Protocol):
    """Where a driver's private stream delivers what it decoded (the core's PositionBook)."""

    async def on_event(self, event: StreamEvent) -> None:
        """One decoded position or order update."""

    async def on_connected(self, reconnect: bool) -> None:
        """The stream is (again) connected and authenticated; the core takes a REST snapshot now."""

    async def on_disconnected(self, detail: str) -> None:
        """The stream dropped; the driver is reconnecting with backoff."""

    def on_malformed(self, raw: str | bytes, error: Exception) -> None:
        """A frame could not be decoded: counted and logged, the stream goes on."""


class StreamEvidence(Protocol):
    """What the private stream said, as the core holds it (the venue's PositionBook)."""

    def last_update(self, symbol: str) -> PositionUpdate | None:
        """The latest position update applied for ``symbol``."""

    def opening_order(self, symbol: str, client_order_id: str) -> OrderUpdate | None:
        """The latest update of the entry order ``client_order_id`` seen while ``symbol`` is being opened."""

    async def wait_changed(self, symbol: str, timeout_s: float) -> None:
        """Return on the next stream update of ``symbol``, or after ``timeout_s`` seconds."""


@dataclass(frozen=True)
class EntryEvidence:
    """What ``verify_position`` may consult besides the venue connection: the venue's :class:`Driver`
    (order status, snapshots) and its stream state."""

    driver: Driver
    stream: StreamEvidence


@runtime_checkable
class StreamDecoder(Protocol):
    """Turns raw private-stream frames into events, without a socket."""

    def decode(self, raw: str | bytes) -> list[StreamEvent]:
        """Decode one frame exactly as the socket delivered it.

        :returns: the events it carries (empty for acks, pongs and topics of no interest).
        :raises framework.errors.StreamError: the frame is malformed.
        """


@runtime_checkable
class VenueHarness(Protocol):
    """A venue the contract suite can drive: ``async with harness: ...``.

    :ivar config: how the driver connects to it.
    :ivar venue: the simulated venue (ground truth and controls), ``None`` for a live account.
    :ivar symbol: a unified symbol the suite may trade.
    """

    config: DriverConfig
    venue: Venue | None
    symbol: str

    def rest_calls(self) -> Mapping[str, int]:
        """REST calls the venue served so far, by ``"<METHOD> <path>"`` (empty for a live account)."""
        ...

    async def __aenter__(self) -> VenueHarness: ...

    async def __aexit__(self, *exc: object) -> None: ...


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

    def __repr__(self) -> str:
        return f"Driver({self.plugin_name!r}, venue={self.venue!r})"

    def supports(self, capability: str) -> bool:
        """Whether the driver declares ``capability``."""
        return capability in self.info.capabilities

    async def _call(self, hook: str, **kwargs: Any) -> Any:
        result = self._hooks[hook](**kwargs)
        if result is None:
            raise ConfigError(f"plugin {self.plugin_name!r} does not implement {hook}", venue=self.venue)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def connect(self, config: DriverConfig) -> Any:
        """Connect (see hook ``connect``) and keep the connection for later calls."""
        self.conn = await self._call("connect", config=config)
        return self.conn

    async def disconnect(self) -> None:
        """Close the connection (hook ``disconnect``)."""
        if self.conn is not None:
            await self._call("disconnect", conn=self.conn)
            self.conn = None

    async def create_entry(self, intent: OrderIntent) -> dict[str, Any]:
        """Hook ``create_entry``."""
        return await self._call("create_entry", conn=self.conn, intent=intent)

    async def normalize_order(self, raw: dict[str, Any], intent: OrderIntent | None = None) -> Order:
        """Hook ``normalize_order``."""
        return await self._call("normalize_order", conn=self.conn, raw=raw, intent=intent)

    async def set_stop_loss(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
    ) -> StopLoss:
        """Hook ``set_stop_loss``."""
        return await self._call(
            "set_stop_loss", conn=self.conn, symbol=symbol, side=side, contracts=contracts,
            trigger_price=trigger_price,
        )

    async def set_take_profit(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
    ) -> StopLoss:
        """Hook ``set_take_profit``."""
        return await self._call(
            "set_take_profit", conn=self.conn, symbol=symbol, side=side, contracts=contracts,
            trigger_price=trigger_price,
        )

    async def move_stop_loss(self, stop: StopLoss, trigger_price: Decimal) -> StopLoss:
        """Hook ``move_stop_loss``."""
        return await self._call("move_stop_loss", conn=self.conn, stop=stop, trigger_price=trigger_price)

    async def cancel_stop_loss(self, stop: StopLoss) -> bool:
        """Hook ``cancel_stop_loss``."""
        return await self._call("cancel_stop_loss", conn=self.conn, stop=stop)

    async def verify_position(
        self, intent: OrderIntent, order: Order, budget_ms: int, stream: StreamEvidence
    ) -> Verification:
        """Hook ``verify_position`` (answered by the core unless the driver adds a source)."""
        return await self._call(
            "verify_position", conn=self.conn, intent=intent, order=order, budget_ms=budget_ms,
            evidence=EntryEvidence(self, stream),
        )

    async def close_position(
        self, symbol: str, side: PositionSide, contracts: Decimal, client_order_id: str
    ) -> Order:
        """Hook ``close_position``."""
        return await self._call(
            "close_position", conn=self.conn, symbol=symbol, side=side, contracts=contracts,
            client_order_id=client_order_id,
        )

    async def fetch_order(
        self, symbol: str, order_id: str | None = None, client_order_id: str | None = None
    ) -> Order:
        """Hook ``fetch_order``."""
        return await self._call(
            "fetch_order", conn=self.conn, symbol=symbol, order_id=order_id, client_order_id=client_order_id
        )

    async def fetch_snapshot(self) -> VenueSnapshot:
        """Hook ``fetch_snapshot``."""
        return await self._call("fetch_snapshot", conn=self.conn)

    async def run_stream(self, sink: StreamSink) -> None:
        """Hook ``run_stream``: returns only when cancelled."""
        await self._call("run_stream", conn=self.conn, sink=sink)

    async def watch_mark_prices(self, symbols: list[str], sink: StreamSink) -> None:
        """Hook ``watch_mark_prices``: returns only when cancelled."""
        await self._call("watch_mark_prices", conn=self.conn, symbols=symbols, sink=sink)

    def make_decoder(self) -> StreamDecoder:
        """Hook ``make_decoder``."""
        decoder = self._hooks["make_decoder"]()
        if decoder is None:
            raise ConfigError(f"plugin {self.plugin_name!r} does not implement make_decoder", venue=self.venue)
        return decoder

    def venue_harness(self, options: dict[str, Any] | None = None) -> VenueHarness:
        """Hook ``venue_harness``."""
        harness = self._hooks["venue_harness"](options=dict(options or {}))
        if harness is None:
            raise ConfigError(f"plugin {self.plugin_name!r} provides no venue harness", venue=self.venue)
        return harness


def _is_driver(pm: pluggy.PluginManager, plugin: object) -> bool:
    return any(caller.name == "driver_info" for caller in pm.get_hookcallers(plugin) or ())
