"""The money-safety logic behind the Binance session's operations (``plugin.BinanceSession`` binds these).

docs/incidents.md is the specification: never guess a side / size / fill (I-3), never depend on REST position
visibility for a stop (I-4), never leave a position without a resting stop while moving it and never
place a stop for a position the venue reports gone (I-5), REST lag is not absence (I-3).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from framework.driverkit import stream_flat_since, trailing_start
from framework.errors import OrderIncomplete, OrderNotFound, PositionGone, VenueError
from framework.models import (
    Order,
    OrderIntent,
    PositionSide,
    StopLoss,
    TrailingSpec,
    VenueSnapshot,
    close_side,
    now_ms,
)
from framework_binance.rest import (
    VENUE,
    BinanceConnection,
    new_client_id,
    order_from_row,
    position_from_row,
    to_order,
)

log = logging.getLogger(__name__)

#: Binance conditional order type → StopLoss kind
STOP_KINDS = {"STOP_MARKET": "stop_loss", "TAKE_PROFIT_MARKET": "take_profit", "TRAILING_STOP_MARKET": "trailing_stop"}


async def create_entry(conn: BinanceConnection, intent: OrderIntent) -> dict[str, Any]:
    """Market order ``POST /fapi/v1/order`` with ``newClientOrderId = intent.client_order_id``."""
    return await conn.create_market_order(intent.symbol, intent.order_side, intent.contracts, intent.client_order_id)


def _is_conditional(raw: dict[str, Any]) -> bool:
    info = raw.get("info") if isinstance(raw.get("info"), dict) else raw
    return "algoId" in info


async def normalize_order(
    conn: BinanceConnection, raw: dict[str, Any], intent: OrderIntent | None = None
) -> Order:
    """Complete ``raw`` (ccxt order or Binance payload) into an :class:`Order`, fetching it by id
    (``GET /fapi/v1/order`` / ``/fapi/v1/algoOrder``) when side, amount, filled or status is missing, or
    when a market order was answered before its fill (status NEW, nothing executed: the ACK form).

    :raises OrderIncomplete: still incomplete after asking the venue, or the venue's answer contradicts
        the intent (wrong symbol or side) — never a value taken from the intent.
    """
    if "info" not in raw and ("orderId" in raw or "algoId" in raw):
        raw = conn.exchange.parse_order(raw)
    symbol = raw.get("symbol") or (intent.symbol if intent is not None else None)
    try:
        order = to_order(raw)
        if order.type == "market" and order.status == "open" and order.filled == 0:
            # Binance answers a market order as accepted, before its fill (ACK: status NEW, executedQty 0):
            # what it became is only known by asking.
            raise OrderIncomplete("order lacks its fill (answered NEW, nothing executed)", venue=VENUE,
                                  symbol=order.symbol, order_id=order.id)
    except OrderIncomplete as incomplete:
        order_id = raw.get("id")
        client_id = raw.get("clientOrderId") or (intent.client_order_id if intent is not None else None)
        if symbol is None or (order_id is None and client_id is None):
            raise
        log.info("order %s answered incompletely (%s): fetching it", order_id or client_id, incomplete.message)
        try:
            fetched = await conn.fetch_raw_order(
                symbol, None if order_id is None else str(order_id), client_id, conditional=_is_conditional(raw)
            )
        except OrderNotFound as exc:
            raise OrderIncomplete(
                f"order answered without {incomplete.message.removeprefix('order lacks ')} and the venue "
                "does not know it", venue=VENUE, symbol=symbol, order_id=order_id or client_id,
            ) from exc
        order = to_order(fetched)
    if order.filled > 0 and not order.reduce_only:
        conn.note_open(order.symbol, order.timestamp)
    if intent is not None and order.client_order_id == intent.client_order_id and (
        order.symbol != intent.symbol or order.side != intent.order_side
    ):
        raise OrderIncomplete(
            f"venue reports {order.side} {order.symbol}, intent is {intent.order_side} {intent.symbol}",
            venue=VENUE, symbol=order.symbol, order_id=order.id,
        )
    return order


async def place_trigger(
    conn: BinanceConnection, symbol: str, side: PositionSide, kind: str, trigger_price: Decimal,
    contracts: Decimal | None = None, client_order_id: str | None = None,
) -> StopLoss:
    """One ``POST /fapi/v1/algoOrder`` on the mark price, closing side of ``side``: ``closePosition=true``
    when ``contracts`` is ``None``, else reduce-only for ``contracts``.  No position lookup (I-4).

    ``clientAlgoId`` is a new id of the driver's, where a -4116 "clientOrderId is duplicated" answer can
    only be this order already placed (resolved to it); or the caller's ``client_order_id``, placed exactly
    once: -4116 is then raised as :class:`DuplicateOrderId` (session operation ``create_stop_loss_order``).

    When the stream has reported the symbol flat after every open the driver knows of, nothing is
    placed.  Binance refuses a closePosition stop with no open position (-4509) and a reduce-only one on
    the wrong side (-2022); both mean the position is gone.

    :raises PositionGone: the stream says the position is closed (no venue call made), or the venue
        refused the stop for want of a position (-4509 / -2022).
    :raises DuplicateOrderId: -4116 for the caller's ``client_order_id``; nothing was placed.
    """
    if conn.known_flat(symbol):
        raise PositionGone("the stream reports the position closed: no stop placed", venue=VENUE, symbol=symbol)
    # What ccxt sends (rounded to the tick) is what rests, and what the returned StopLoss reports.
    trigger_price = Decimal(conn.exchange.price_to_precision(symbol, str(trigger_price)))
    placed_at = now_ms()
    raw = await conn.create_conditional(
        symbol, close_side(side), kind, trigger_price, amount=contracts,
        client_order_id=client_order_id or new_client_id(kind[0]), resolve_duplicate=client_order_id is None,
    )
    if raw.get("id") is None:
        raise OrderIncomplete("algo order answered without an algoId", venue=VENUE, symbol=symbol)
    return StopLoss(
        venue=VENUE, symbol=symbol, side=side, kind=kind, trigger_price=trigger_price, order_id=str(raw["id"]),
        contracts=contracts, placed_at=placed_at,
    )


async def place_trailing_stop(
    conn: BinanceConnection, symbol: str, side: PositionSide, contracts: Decimal, trailing: TrailingSpec,
    reference_price: Decimal,
) -> StopLoss:
    """One ``POST /fapi/v1/algoOrder`` TRAILING_STOP_MARKET, reduce-only for ``contracts`` on the closing side
    of ``side``; the position's closePosition stop-loss stays beside it (Binance cancels it when the trail
    closes the position, docs/conformance.md B7).  No position lookup (I-4).

    :raises PositionGone: the stream says the position is closed (no venue call), or -2022 / -4509.
    :raises WouldTriggerImmediately: the activation price is already passed (-2021).
    """
    if conn.known_flat(symbol):
        raise PositionGone("the stream reports the position closed: no trailing stop placed", venue=VENUE,
                           symbol=symbol)
    activation = None
    if trailing.activation_price is not None:
        activation = Decimal(conn.exchange.price_to_precision(symbol, str(trailing.activation_price)))
    placed_at = now_ms()
    raw = await conn.create_trailing(symbol, close_side(side), contracts, trailing.callback_rate, activation,
                                     client_order_id=new_client_id("t"))
    if raw.get("id") is None:
        raise OrderIncomplete("algo order answered without an algoId", venue=VENUE, symbol=symbol)
    start = trailing_start(side, trailing, reference_price)
    return StopLoss(
        venue=VENUE, symbol=symbol, side=side, kind="trailing_stop",
        trigger_price=Decimal(conn.exchange.price_to_precision(symbol, str(start))), order_id=str(raw["id"]),
        contracts=contracts, placed_at=placed_at,
    )


async def _confirm_open(conn: BinanceConnection, stop: StopLoss) -> Decimal:
    """Contracts of the position ``stop`` protects, right before a new stop is placed: the stream's latest
    update (the core's book) when it shows the position open on the stop's side — no venue call — else REST
    ``positionRisk?symbol=`` (that symbol only).  A position the stream still shows open but the venue has
    closed is caught by the venue itself: it refuses the new stop for want of a position (-4509 / -2022,
    :func:`place_trigger` raises :class:`PositionGone`), and the old stop's fate is checked after cancelling.

    :raises PositionGone: REST shows no position and the stream reported it flat.
    :raises VenueError: REST shows no position but the stream did not say flat — REST lag is not absence,
        so nothing is placed and the old stop stays.
    """
    update = conn.stream_state.last_update(stop.symbol) if conn.stream_state is not None else None
    if update is not None and update.contracts > 0 and update.side == stop.side:
        return update.contracts
    for row in await conn.position_rows(stop.symbol):
        position = position_from_row(row, conn.config.account, conn.symbols)
        if position is not None and position.symbol == stop.symbol and position.side == stop.side:
            return position.contracts
    if conn.known_flat(stop.symbol):
        raise PositionGone("neither REST nor the stream shows the position: stop not moved", venue=VENUE,
                           symbol=stop.symbol, order_id=stop.order_id)
    raise VenueError("REST does not show the position (lag or closed): stop not moved, the old one stays",
                     venue=VENUE, symbol=stop.symbol, order_id=stop.order_id)


async def move_stop_loss(conn: BinanceConnection, stop: StopLoss, trigger_price: Decimal) -> StopLoss:
    """Place the new stop, then cancel the old one: never a moment without a stop (docs/incidents.md I-5).

    Binance refuses a second closePosition stop in one direction (-4130), so a closePosition stop is
    replaced by a reduce-only one and a reduce-only stop by a closePosition one.  Liveness: the stream
    state (the core's book) first (no venue call when it says flat), then :func:`_confirm_open` right before
    placing (its size sizes a reduce-only replacement), then the stream state and the old stop's fate after
    cancelling.
    A move costs two REST calls (place, cancel) while the stream shows the position, three otherwise.

    :returns: the new stop, also when the old one's cancel failed (then it may rest beside it, a duplicate).
    :raises PositionGone: the position closed; whatever this call placed was cancelled again.
    :raises WouldTriggerImmediately: -2021; the old stop is untouched.
    """
    if stop.order_id is None:
        raise VenueError("a Binance stop is always an order; this one has no id", venue=VENUE, symbol=stop.symbol)
    if stream_flat_since(conn.stream_state, stop.symbol, stop.placed_at):
        raise PositionGone("the stream reports the position flat: stop not moved", venue=VENUE,
                           symbol=stop.symbol, order_id=stop.order_id)
    open_contracts = await _confirm_open(conn, stop)
    contracts = open_contracts if stop.contracts is None else None
    new = await place_trigger(conn, stop.symbol, stop.side, stop.kind, trigger_price, contracts)
    old_gone_by_trigger = False
    try:
        await conn.cancel_conditional(stop.symbol, stop.order_id)
    except OrderNotFound:
        old = to_order(await conn.fetch_raw_order(stop.symbol, stop.order_id, conditional=True))
        old_gone_by_trigger = old.status == "closed"  # TRIGGERED / FINISHED: it closed the position
    except VenueError as exc:
        # The cancel's outcome is unknown (a timeout, a 5xx) but the new stop rests: report it, so that the
        # book does not keep a stop that may be gone; if the old one still rests, it is a duplicate for the
        # reconciler to cancel (it keeps the book's).
        log.warning("binance %s: cancel of the replaced stop %s failed, the new stop %s rests: %s", stop.symbol,
                    stop.order_id, new.order_id, exc)
    if old_gone_by_trigger or stream_flat_since(conn.stream_state, stop.symbol, stop.placed_at):
        await cancel_stop_loss(conn, new)
        raise PositionGone("the position closed while the stop was moved; the new stop was cancelled",
                           venue=VENUE, symbol=stop.symbol, order_id=stop.order_id)
    return new


async def cancel_stop_loss(conn: BinanceConnection, stop: StopLoss) -> bool:
    """``DELETE /fapi/v1/algoOrder``.  :returns: ``False`` when the venue no longer had it open (-2011)."""
    if stop.order_id is None:
        return False
    try:
        await conn.cancel_conditional(stop.symbol, stop.order_id)
    except OrderNotFound:
        return False
    return True


async def close_position(
    conn: BinanceConnection, symbol: str, side: PositionSide, contracts: Decimal, client_order_id: str
) -> Order:
    """Reduce-only market order on ``close_side(side)``.  :raises PositionGone: -2022, nothing to reduce."""
    raw = await conn.create_market_order(symbol, close_side(side), contracts, client_order_id, reduce_only=True)
    return await normalize_order(conn, raw, None)


async def fetch_order(
    conn: BinanceConnection, symbol: str, order_id: str | None = None, client_order_id: str | None = None
) -> Order:
    """``GET /fapi/v1/order``, then the Algo Order API.  :raises OrderNotFound: neither knows it."""
    try:
        return to_order(await conn.fetch_raw_order(symbol, order_id, client_order_id))
    except OrderNotFound:
        return to_order(await conn.fetch_raw_order(symbol, order_id, client_order_id, conditional=True))


Rows = list[dict[str, Any]]


async def snapshot_rows(conn: BinanceConnection) -> tuple[Rows, Rows, Rows]:
    """The snapshot's three answers as Binance's raw rows: ``positionRisk``, ``openOrders``,
    ``openAlgoOrders`` (what :func:`fetch_snapshot` decodes; ``framework bench`` times it as the floor)."""
    return (await conn.position_rows(), await conn.open_order_rows(conditional=False),
            await conn.open_order_rows(conditional=True))


def _trailing_trigger(row: dict[str, Any], side: PositionSide, mark: Decimal | None) -> Decimal | None:
    """Where a TRAILING_STOP_MARKET row's trail starts: ``callbackRate`` behind ``activatePrice``, else behind
    ``mark``; ``None`` when the row gives no rate or neither price."""
    try:
        rate = Decimal(str(row.get("callbackRate") or ""))
        activation = Decimal(str(row.get("activatePrice") or 0))
    except (ArithmeticError, ValueError):
        return None
    reference = activation if activation > 0 else mark
    if not 0 < rate <= 10 or reference is None:
        return None
    return trailing_start(side, TrailingSpec(callback_rate=rate), reference)


async def fetch_snapshot(conn: BinanceConnection) -> VenueSnapshot:
    """One ``positionRisk``, one ``openOrders`` and one ``openAlgoOrders`` call, each answer decoded from
    Binance's own rows (:func:`position_from_row`, :func:`order_from_row`; ccxt's implicit API for the
    request only).  Stops: resting STOP_MARKET / TAKE_PROFIT_MARKET algo orders with a trigger price
    (``closePosition``: ``contracts None``), and TRAILING_STOP_MARKET ones, which carry no trigger price: theirs
    is reported ``callbackRate`` behind their ``activatePrice``, else behind the position's mark price now (where
    the trail starts, :func:`~framework.driverkit.trailing_start`; the venue's own best price is not given)."""
    taken_at = now_ms()
    position_rows, order_rows, algo_rows = await snapshot_rows(conn)
    account, symbols = conn.config.account, conn.symbols
    positions = []
    for row in position_rows:
        position = position_from_row(row, account, symbols, taken_at)
        if position is not None:
            positions.append(position)
            conn.note_open(position.symbol, row.get("updateTime"))
    open_orders = [order_from_row(row, symbols) for row in order_rows]
    stops = []
    marks: dict[str, Decimal | None] | None = None  # by symbol, for a trailing stop's start (made once, if needed)
    for row in algo_rows:
        order = order_from_row(row, symbols)
        open_orders.append(order)
        kind = STOP_KINDS.get(str(row.get("orderType") or row.get("type")))
        side: PositionSide = "long" if order.side == "sell" else "short"
        trigger, computed = order.trigger_price, False
        if kind == "trailing_stop" and trigger is None:
            if marks is None:
                marks = {p.symbol: p.mark_price for p in positions}
            trigger, computed = _trailing_trigger(row, side, marks.get(order.symbol)), True
        if kind is None or trigger is None:
            continue
        stop = {"venue": VENUE, "symbol": order.symbol, "side": side, "kind": kind, "trigger_price": trigger,
                "order_id": order.id, "contracts": None if row.get("closePosition") else order.amount,
                "placed_at": taken_at}
        # the order's own (validated) fields make the stop as they are; a trailing stop's start, computed
        # here, is validated
        stops.append(StopLoss(**stop) if computed else StopLoss.trusted(stop))
    return VenueSnapshot.trusted({  # of the models just built
        "venue": VENUE, "account": account, "positions": positions, "open_orders": open_orders, "stops": stops,
        "taken_at": taken_at, "rest_calls": 3,
    })
