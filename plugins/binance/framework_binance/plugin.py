"""Hook implementations of the Binance USDⓈ-M driver (entry point ``binance``).

Each hook forwards to :mod:`framework_binance.operations` (safety logic), :mod:`.rest` (ccxt),
:mod:`.stream` (websockets) or :mod:`.emulator` (the wire façade used by ``venue_harness``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt

from framework import ccxt_market_limits, hookimpl
from framework.errors import VenueError
from framework.marksockets import WatchedSymbols
from framework.models import (
    DriverConfig,
    DriverInfo,
    MarketLimits,
    Order,
    OrderIntent,
    PositionSide,
    StopLoss,
    TrailingLimits,
    TrailingSpec,
    VenueSnapshot,
)
from framework.protocols import StreamDecoder, StreamSink, VenueHarness
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
        description="Binance USDⓈ-M futures: ccxt binanceusdm, Algo Order API stops, user data stream",
        # TRAILING_STOP_MARKET callbackRate: min 0.1, max 10, 1 for 1 % (docs/conformance.md B25)
        trailing_limits=TrailingLimits(min_callback_rate=Decimal("0.1"), max_callback_rate=Decimal(10)),
    )


@hookimpl
async def connect(config: DriverConfig) -> BinanceConnection:
    conn = BinanceConnection(config, make_exchange(config))
    try:
        await conn.open()
    except BaseException:
        await conn.close()
        raise
    return conn


@hookimpl
async def disconnect(conn: BinanceConnection) -> bool:
    await conn.close()
    return True


@hookimpl
async def create_entry(conn: BinanceConnection, intent: OrderIntent) -> dict[str, Any]:
    return await operations.create_entry(conn, intent)


@hookimpl
async def normalize_order(conn: BinanceConnection, raw: dict[str, Any], intent: OrderIntent | None) -> Order:
    return await operations.normalize_order(conn, raw, intent)


@hookimpl
async def set_stop_loss(
    conn: BinanceConnection, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
) -> StopLoss:
    return await operations.place_trigger(conn, symbol, side, "stop_loss", trigger_price)


@hookimpl
async def set_take_profit(
    conn: BinanceConnection, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
) -> StopLoss:
    return await operations.place_trigger(conn, symbol, side, "take_profit", trigger_price)


@hookimpl
async def set_trailing_stop(
    conn: BinanceConnection, symbol: str, side: PositionSide, contracts: Decimal, trailing: TrailingSpec,
    reference_price: Decimal,
) -> StopLoss:
    return await operations.place_trailing_stop(conn, symbol, side, contracts, trailing, reference_price)


@hookimpl
async def move_stop_loss(conn: BinanceConnection, stop: StopLoss, trigger_price: Decimal) -> StopLoss:
    return await operations.move_stop_loss(conn, stop, trigger_price)


@hookimpl
async def cancel_stop_loss(conn: BinanceConnection, stop: StopLoss) -> bool:
    return await operations.cancel_stop_loss(conn, stop)


@hookimpl
async def close_position(
    conn: BinanceConnection, symbol: str, side: PositionSide, contracts: Decimal, client_order_id: str
) -> Order:
    return await operations.close_position(conn, symbol, side, contracts, client_order_id)


@hookimpl
async def fetch_order(
    conn: BinanceConnection, symbol: str, order_id: str | None, client_order_id: str | None
) -> Order:
    return await operations.fetch_order(conn, symbol, order_id, client_order_id)


@hookimpl
async def fetch_snapshot(conn: BinanceConnection) -> VenueSnapshot:
    return await operations.fetch_snapshot(conn)


@hookimpl
def market_limits(conn: BinanceConnection, symbol: str) -> MarketLimits:
    try:
        market = conn.exchange.market(symbol)
    except ccxt.BadSymbol as exc:
        raise VenueError(f"unknown symbol {symbol!r}", venue=VENUE, symbol=symbol) from exc
    return ccxt_market_limits(market, symbol)


@hookimpl
async def run_stream(conn: BinanceConnection, sink: StreamSink) -> None:
    await stream.run_user_stream(conn, sink)


@hookimpl
async def watch_mark_prices(conn: BinanceConnection, symbols: list[str] | WatchedSymbols, sink: StreamSink) -> None:
    await stream.watch_marks(conn, symbols, sink)


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
