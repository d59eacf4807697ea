"""Hook implementations of the Bybit v5 (linear) driver; the work is done in ``rest``, ``stream``,
``decoder`` and ``emulator``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt

from framework import VenueHarness, ccxt_market_limits, hookimpl
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
from framework_bybit import rest, stream
from framework_bybit.decoder import VENUE, BybitDecoder
from framework_bybit.rest import BybitConnection

CAPABILITIES = frozenset({"attached_stop_on_entry", "amend_stop_in_place", "native_trailing_stop"})


@hookimpl
def driver_info() -> DriverInfo:
    return DriverInfo(
        venue=VENUE,
        capabilities=CAPABILITIES,
        description="Bybit v5 linear perpetuals: ccxt REST, /v5/position/trading-stop stops, private WebSocket",
        # trailingStop is a price distance with no documented bound but the tick (checked when placing);
        # 10 % is the TrailingSpec's own bound (docs/conformance.md Y19)
        trailing_limits=TrailingLimits(min_callback_rate=Decimal(0), max_callback_rate=Decimal(10)),
    )


@hookimpl
async def connect(config: DriverConfig) -> BybitConnection:
    return await rest.connect(config)


@hookimpl
async def disconnect(conn: BybitConnection) -> bool:
    return await rest.disconnect(conn)


@hookimpl
async def create_entry(conn: BybitConnection, intent: OrderIntent) -> dict[str, Any]:
    return await rest.create_entry(conn, intent)


@hookimpl
async def normalize_order(conn: BybitConnection, raw: dict[str, Any], intent: OrderIntent | None) -> Order:
    return await rest.normalize_order(conn, raw, intent)


@hookimpl
async def set_stop_loss(
    conn: BybitConnection, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
) -> StopLoss:
    return await rest.set_trigger(conn, symbol, side, trigger_price, "stop_loss")


@hookimpl
async def set_take_profit(
    conn: BybitConnection, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
) -> StopLoss:
    return await rest.set_trigger(conn, symbol, side, trigger_price, "take_profit")


@hookimpl
async def set_trailing_stop(
    conn: BybitConnection, symbol: str, side: PositionSide, contracts: Decimal, trailing: TrailingSpec,
    reference_price: Decimal,
) -> StopLoss:
    return await rest.set_trailing(conn, symbol, side, trailing, reference_price)


@hookimpl
async def move_stop_loss(conn: BybitConnection, stop: StopLoss, trigger_price: Decimal) -> StopLoss:
    # trading-stop amends the attached stop in place: no moment without a stop, and the venue itself
    # refuses a flat position (10001 -> PositionGone), so no stop is ever placed for a closed one.
    return await rest.set_trigger(conn, stop.symbol, stop.side, trigger_price, stop.kind)


@hookimpl
async def cancel_stop_loss(conn: BybitConnection, stop: StopLoss) -> bool:
    return await rest.cancel_trigger(conn, stop)


@hookimpl
async def close_position(
    conn: BybitConnection, symbol: str, side: PositionSide, contracts: Decimal, client_order_id: str
) -> Order:
    return await rest.close_position(conn, symbol, side, contracts, client_order_id)


@hookimpl
async def fetch_order(
    conn: BybitConnection, symbol: str, order_id: str | None, client_order_id: str | None
) -> Order:
    return await rest.fetch_order(conn, symbol, order_id, client_order_id)


@hookimpl
async def fetch_snapshot(conn: BybitConnection) -> VenueSnapshot:
    return await rest.fetch_snapshot(conn)


@hookimpl
def market_limits(conn: BybitConnection, symbol: str) -> MarketLimits:
    try:
        market = conn.client.market(symbol)
    except ccxt.BadSymbol as exc:
        raise VenueError(f"unknown symbol {symbol!r}", venue=VENUE, symbol=symbol) from exc
    return ccxt_market_limits(market, symbol)


@hookimpl
async def run_stream(conn: BybitConnection, sink: Any) -> None:
    await stream.run_stream(conn, sink)


@hookimpl
async def watch_mark_prices(conn: BybitConnection, symbols: list[str] | WatchedSymbols, sink: Any) -> None:
    await stream.watch_mark_prices(conn, symbols, sink)


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
