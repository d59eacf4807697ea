"""Hook implementations of the Binance USDⓈ-M driver (entry point ``binance``) and its
:class:`BinanceSession`.

The session's operations are :mod:`framework_binance.operations` (safety logic) over :mod:`.rest` (ccxt)
and :mod:`.stream` (websockets); ``venue_harness`` serves :mod:`.emulator` (the wire façade).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from framework import ccxt_market_limits, hookimpl
from framework.models import (
    DriverConfig,
    DriverInfo,
    MarketLimits,
    PositionSide,
    StopLoss,
    TrailingLimits,
    TrailingSpec,
)
from framework.protocols import StreamDecoder, VenueHarness
from framework_binance import operations, stream
from framework_binance.decoder import BinanceDecoder
from framework_binance.rest import VENUE, BinanceConnection, make_exchange


@hookimpl
def driver_info() -> DriverInfo:
    return DriverInfo(
        venue=VENUE,
        # No stop_before_entry: Binance refuses a closePosition stop with no position (-4509,
        # docs/conformance.md B7), so the stop goes on right after the entry fills.
        capabilities=frozenset({"native_trailing_stop"}),
        # TRAILING_STOP_MARKET callbackRate: min 0.1, max 10, 1 for 1 % (docs/conformance.md B25)
        trailing_limits=TrailingLimits(min_callback_rate=Decimal("0.1"), max_callback_rate=Decimal(10)),
        description="Binance USDⓈ-M futures: ccxt binanceusdm, Algo Order API stops, user data stream",
    )


class BinanceSession(BinanceConnection):
    """The Binance connection as a :class:`~framework.protocols.DriverSession`: each operation is the
    function of :mod:`.operations` / :mod:`.stream` that does it (their first argument is this
    connection)."""

    create_entry = operations.create_entry
    normalize_order = operations.normalize_order
    move_stop_loss = operations.move_stop_loss
    cancel_stop_loss = operations.cancel_stop_loss
    close_position = operations.close_position
    fetch_order = operations.fetch_order
    fetch_snapshot = operations.fetch_snapshot
    run_stream = stream.run_user_stream
    watch_mark_prices = stream.watch_marks

    async def set_stop_loss(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
    ) -> StopLoss:
        return await operations.place_trigger(self, symbol, side, "stop_loss", trigger_price)

    async def set_take_profit(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
    ) -> StopLoss:
        return await operations.place_trigger(self, symbol, side, "take_profit", trigger_price)

    async def create_stop_loss_order(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal, client_order_id: str
    ) -> StopLoss:
        return await operations.place_trigger(self, symbol, side, "stop_loss", trigger_price, contracts,
                                              client_order_id)

    def market_limits(self, symbol: str) -> MarketLimits:
        return ccxt_market_limits(self.exchange, symbol, VENUE)

    async def set_trailing_stop(
        self, symbol: str, side: PositionSide, contracts: Decimal, trailing: TrailingSpec, reference_price: Decimal
    ) -> StopLoss:
        return await operations.place_trailing_stop(self, symbol, side, contracts, trailing, reference_price)

    async def disconnect(self) -> None:
        await self.close()


@hookimpl
async def connect(config: DriverConfig) -> BinanceSession:
    session = BinanceSession(config, make_exchange(config))
    try:
        await session.open()
    except BaseException:
        await session.close()
        raise
    return session


@hookimpl
def make_decoder() -> StreamDecoder:
    return BinanceDecoder()


@hookimpl
def venue_harness(options: dict[str, Any]) -> VenueHarness:
    # imported here: a live run never loads the emulator, its test double
    from framework.venue import EmulatorHarness
    from framework_binance.emulator import BinanceEmulator

    return EmulatorHarness(VENUE, BinanceEmulator, options)


#: not a hook: the snapshot's raw answers, timed by ``framework bench`` as the floor of a reconciliation
snapshot_rows = operations.snapshot_rows
