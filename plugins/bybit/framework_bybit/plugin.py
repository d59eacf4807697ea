"""Hook implementations of the Bybit v5 (linear) driver and its :class:`BybitSession`; the work is done in
``rest``, ``stream``, ``decoder`` and ``emulator``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from framework import VenueHarness, ccxt_market_limits, hookimpl
from framework.models import (
    DriverConfig,
    DriverInfo,
    MarketLimits,
    PositionSide,
    StopLoss,
    TrailingLimits,
    TrailingSpec,
)
from framework_bybit import rest, stream
from framework_bybit.decoder import VENUE, BybitDecoder
from framework_bybit.rest import BybitConnection

CAPABILITIES = frozenset({"attached_stop_on_entry", "amend_stop_in_place", "native_trailing_stop"})


@hookimpl
def driver_info() -> DriverInfo:
    return DriverInfo(
        venue=VENUE,
        capabilities=CAPABILITIES,
        # trailingStop is a price distance with no documented bound but the tick (checked when placing);
        # 10 % is the TrailingSpec's own bound (docs/conformance.md Y19)
        trailing_limits=TrailingLimits(min_callback_rate=Decimal(0), max_callback_rate=Decimal(10)),
        description="Bybit v5 linear perpetuals: ccxt REST, /v5/position/trading-stop stops, private WebSocket",
    )


class BybitSession(BybitConnection):
    """The Bybit connection as a :class:`~framework.protocols.DriverSession`: each operation is the
    function of :mod:`.rest` / :mod:`.stream` that does it (their first argument is this connection)."""

    create_entry = rest.create_entry
    normalize_order = rest.normalize_order
    cancel_stop_loss = rest.cancel_trigger
    create_stop_loss_order = rest.create_stop_loss_order
    close_position = rest.close_position
    fetch_order = rest.fetch_order
    fetch_snapshot = rest.fetch_snapshot
    run_stream = stream.run_stream
    watch_mark_prices = stream.watch_mark_prices

    async def set_stop_loss(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
    ) -> StopLoss:
        return await rest.set_trigger(self, symbol, side, trigger_price, "stop_loss")

    async def set_take_profit(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
    ) -> StopLoss:
        return await rest.set_trigger(self, symbol, side, trigger_price, "take_profit")

    async def move_stop_loss(self, stop: StopLoss, trigger_price: Decimal) -> StopLoss:
        # trading-stop amends the attached stop in place: no moment without a stop, and the venue itself
        # refuses a flat position (10001 -> PositionGone), so no stop is ever placed for a closed one.
        return await rest.set_trigger(self, stop.symbol, stop.side, trigger_price, stop.kind)

    def market_limits(self, symbol: str) -> MarketLimits:
        return ccxt_market_limits(self.client, symbol, VENUE)

    async def set_trailing_stop(
        self, symbol: str, side: PositionSide, contracts: Decimal, trailing: TrailingSpec, reference_price: Decimal
    ) -> StopLoss:
        return await rest.set_trailing(self, symbol, side, trailing, reference_price)

    async def disconnect(self) -> None:
        await rest.disconnect(self)


@hookimpl
async def connect(config: DriverConfig) -> BybitSession:
    session = BybitSession(config, rest.make_client(config))
    await rest.load_markets(session)
    return session


@hookimpl
def make_decoder() -> BybitDecoder:
    return BybitDecoder()


@hookimpl
def venue_harness(options: dict[str, Any]) -> VenueHarness:
    # imported here: a live run never loads the emulator, its test double
    from framework_bybit.emulator import BybitHarness

    return BybitHarness(options)


#: not a hook: the snapshot's raw answers, timed by ``framework bench`` as the floor of a reconciliation
snapshot_rows = rest.snapshot_rows
