"""The simulated venue's records and rules: instruments, orders, positions, events, the reject reasons and the
pure price rules (when a stop fires, when a limit order meets the mark, how a trailing stop follows it).

Prices are ``Decimal`` in quote currency, sizes ``Decimal`` contracts, times ms since the Unix epoch (UTC).
The venue itself is :class:`framework.venue.Venue` (``core.py``: ledger, orders and triggers, each its own
module); ``docs/venue-api.md`` is the contract.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from framework.venue.truth import OrderRecord

ZERO = Decimal(0)
TAKER_FEE_RATE = Decimal("0.0005")
"""Taker fee, 0.05 % of notional, charged on every fill that takes liquidity."""
MAKER_FEE_RATE = Decimal("0.0002")
"""Maker fee, 0.02 % of notional, charged on a resting limit order's fill (both venues' base tier)."""
DEFAULT_LEVERAGE = 10
HISTORY_KEEP_MS = 60_000
"""How far back :meth:`Venue.visible_positions` can look (the REST lag knob is at most 30 s)."""
MARK_HISTORY_KEEP = 100_000
"""Mark prices kept per symbol for :meth:`Venue.mark_history` (the façades' klines)."""

MARKET = "market"
LIMIT = "limit"
CONDITIONAL_TYPES = frozenset({"stop_market", "take_profit_market", "trailing_stop_market"})
ORDER_TYPES = CONDITIONAL_TYPES | {MARKET, LIMIT}
TIME_IN_FORCE = frozenset({"gtc", "post_only", "ioc", "fok"})
"""A limit order's time in force: rests until filled or cancelled (``gtc``), rests but never takes
liquidity (``post_only``: expired instead when it would cross), or takes what it can at once and expires
(``ioc`` / ``fok``; the venue's book is the mark price, so both fill whole or not at all)."""
OPEN_STATUSES = frozenset({"new", "partially_filled"})
ORIGIN_BY_TYPE = {
    "stop_market": "stop_loss",
    "take_profit_market": "take_profit",
    "trailing_stop_market": "trailing_stop",
}

RejectReason = Literal[
    "would_trigger_immediately",
    "reduce_only_rejected",
    "zero_position",
    "not_modified",
    "order_not_found",
    "duplicate_client_order_id",
    "invalid_quantity",
    "invalid_price",
    "insufficient_margin",
    "rejected",
    "invalid_order",
    "unknown_symbol",
]


class VenueReject(Exception):
    """The venue refused a request; façades map :attr:`reason` to the venue's error code.

    :ivar reason: one of :data:`RejectReason`.
    :ivar message: human-readable detail (never contains secrets).
    """

    def __init__(self, reason: RejectReason, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


@dataclass(frozen=True)
class Instrument:
    """A linear USDT perpetual.

    :ivar symbol: unified symbol (``XRP/USDT:USDT``); ``id``: the native id façades use (``XRPUSDT``).
    :ivar tick_size: price increment (quote currency); ``step_size``: size increment (contracts);
        ``min_amount``: smallest order size (contracts).
    """

    symbol: str
    id: str
    tick_size: Decimal
    step_size: Decimal
    min_amount: Decimal
    max_leverage: int = 50

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1].split(":")[0]

    def check_price(self, price: Decimal, name: str = "price") -> None:
        """:raises VenueReject: ``invalid_price`` when ``price`` ≤ 0 or not a multiple of the tick."""
        if price <= 0 or price % self.tick_size != 0:
            raise VenueReject(
                "invalid_price", f"{name} {price} must be > 0 and a multiple of {self.tick_size}"
            )

    def check_amount(self, amount: Decimal | None) -> None:
        """:raises VenueReject: ``invalid_quantity`` for a missing, too small or off-step size."""
        if amount is None or amount < self.min_amount or amount % self.step_size != 0:
            raise VenueReject(
                "invalid_quantity",
                f"amount {amount} must be >= {self.min_amount} and a multiple of {self.step_size}",
            )


def default_instruments() -> list[Instrument]:
    """XRP/USDT:USDT (tick 0.0001, step 0.1) and BTC/USDT:USDT (tick 0.1, step 0.001)."""
    return [
        Instrument("XRP/USDT:USDT", "XRPUSDT", Decimal("0.0001"), Decimal("0.1"), Decimal("0.1"), 75),
        Instrument("BTC/USDT:USDT", "BTCUSDT", Decimal("0.1"), Decimal("0.001"), Decimal("0.001"), 125),
    ]


@dataclass
class VenueOrder:
    """An order as the venue holds it; the venue hands out snapshot copies.

    :ivar amount: contracts, ``None`` for a ``close_position`` order.
    :ivar status: ``new``, ``partially_filled``, ``filled``, ``canceled``, ``rejected``, ``expired``,
        ``triggered`` (a conditional order that spawned the market order ``triggered_order_id``).
    :ivar origin: ``order`` for anything a client placed; ``stop_loss`` / ``take_profit`` /
        ``trailing_stop`` for the market order a trigger spawned; ``manual``, ``liquidation``, ``adl``.
    :ivar realized_pnl: gross realized PnL of this order's fills; ``fee``: fees paid, quote currency.
    :ivar trailing_best: for an activated trailing stop, the best mark price since activation.
    :ivar price: a ``limit`` order's limit price (quote currency); ``time_in_force``: one of
        :data:`TIME_IN_FORCE` for a limit order, else ``None``.
    """

    id: str
    client_order_id: str | None
    account: str
    symbol: str
    side: str
    type: str
    amount: Decimal | None
    filled: Decimal = ZERO
    average: Decimal | None = None
    status: str = "new"
    reduce_only: bool = False
    close_position: bool = False
    trigger_price: Decimal | None = None
    callback_rate: Decimal | None = None
    activation_price: Decimal | None = None
    origin: str = "order"
    triggered_order_id: str | None = None
    created_ms: int = 0
    updated_ms: int = 0
    realized_pnl: Decimal = ZERO
    fee: Decimal = ZERO
    trailing_best: Decimal | None = None
    price: Decimal | None = None
    time_in_force: str | None = None

    @property
    def conditional(self) -> bool:
        """True for stop / take-profit / trailing-stop orders (they wait for the mark price)."""
        return self.type in CONDITIONAL_TYPES

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def trailing_stop_price(self) -> Decimal | None:
        """Where an activated trailing stop would trigger now (quote currency), else ``None``."""
        if self.trailing_best is None or self.callback_rate is None:
            return None
        offset = self.trailing_best * self.callback_rate / 100
        return self.trailing_best - offset if self.side == "sell" else self.trailing_best + offset


@dataclass
class VenuePosition:
    """One account's one-way position in one symbol (``contracts == 0`` and ``side None`` when flat).

    :ivar entry_price: average entry price (0 when flat); ``realized_pnl``: gross, cumulative for this
        position (fees are separate, in the balance).
    :ivar stop_loss / take_profit: attached trigger prices (Bybit trading-stop), ``None`` when unset.
    :ivar trailing_stop: attached trailing distance in quote currency (Bybit ``trailingStop``);
        ``trailing_active_price``: its activation price; ``trailing_best``: best mark since activation.
    :ivar seq: venue-wide sequence number, +1 on every change of any position.
    """

    account: str
    symbol: str
    side: str | None = None
    contracts: Decimal = ZERO
    entry_price: Decimal = ZERO
    mark_price: Decimal = ZERO
    unrealized_pnl: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    trailing_stop: Decimal | None = None
    trailing_active_price: Decimal | None = None
    trailing_best: Decimal | None = None
    seq: int = 0
    opened_ms: int | None = None
    updated_ms: int = 0

    @property
    def is_open(self) -> bool:
        return self.contracts > 0


@dataclass(frozen=True)
class FillEvent:
    """A trade: ``amount`` contracts at ``price``; ``fee`` and gross ``realized_pnl`` in quote currency;
    ``maker``: a resting limit order's fill (maker fee), else taker."""

    account: str
    symbol: str
    order_id: str
    client_order_id: str | None
    side: str
    amount: Decimal
    price: Decimal
    fee: Decimal
    realized_pnl: Decimal
    origin: str
    exec_id: str
    ts: int
    maker: bool = False


@dataclass(frozen=True)
class OrderEvent:
    """An order changed (placed, filled, cancelled, triggered, expired); ``order`` is a snapshot."""

    order: VenueOrder
    ts: int


@dataclass(frozen=True)
class PositionEvent:
    """A position changed (fill, attached stop set / removed); ``position`` is a snapshot."""

    position: VenuePosition
    ts: int


@dataclass(frozen=True)
class BalanceEvent:
    """An account's balance after a fill (``reason`` ``order``) or a funding settlement (``funding``, ``change``
    the amount credited, negative when paid): ``{"total", "available", "unrealized_pnl"}``."""

    account: str
    balance: dict[str, Decimal]
    ts: int
    reason: str = "order"
    change: Decimal = Decimal(0)


@dataclass(frozen=True)
class MarkPriceEvent:
    symbol: str
    price: Decimal
    ts: int


VenueEvent = FillEvent | OrderEvent | PositionEvent | BalanceEvent | MarkPriceEvent
Listener = Callable[[VenueEvent], None]


@dataclass
class Account:
    """An account and the running sums :meth:`Venue.balance` reads (kept by ``Venue._rebook``).

    The sums are exact (computed in :data:`EXACT`), so adding and removing contributions in any order
    gives the same value a from-scratch sum would.
    """

    name: str
    api_key: str
    api_secret: str = field(repr=False)
    wallet: Decimal
    leverage: dict[str, int] = field(default_factory=dict)
    open_positions: int = 0
    entry_notional_by_leverage: dict[int, Decimal] = field(default_factory=dict)
    """Σ contracts·entry of the open positions, per leverage (used margin = Σ notional / leverage)."""
    signed_at_mark: Decimal = ZERO
    """Σ sign·contracts·mark of the open positions on symbols with a mark price."""
    signed_at_entry: Decimal = ZERO
    """Σ sign·contracts·entry of the same positions (unrealized PnL = at_mark − at_entry)."""


@dataclass(frozen=True)
class Contribution:
    """What one open position adds to its account's running sums."""

    leverage: int
    entry_notional: Decimal
    signed_at_mark: Decimal
    signed_at_entry: Decimal


EXACT = decimal.Context(prec=200)
"""Precision for the running sums: far above any product of a 28-digit price and a size, so adding
and removing contributions never rounds."""


def as_decimal(value: object, reason: RejectReason, name: str) -> Decimal | None:
    """``value`` as a Decimal (``str``, ``int`` and ``Decimal`` accepted), ``None`` kept.

    :raises VenueReject: ``reason`` when it is not a finite number.
    """
    if value is None or isinstance(value, Decimal) and value.is_finite():
        return value
    try:
        number = Decimal(str(value)) if isinstance(value, (str, int)) else None
    except ArithmeticError:
        number = None
    if number is None or not number.is_finite():
        raise VenueReject(reason, f"{name} {value!r} is not a number")
    return number


def signed_contracts(position: VenuePosition) -> Decimal:
    return position.contracts if position.side == "long" else -position.contracts


def marketable(order: VenueOrder, mark: Decimal) -> bool:
    """Whether a limit order meets the mark: a buy at or above it, a sell at or below it."""
    assert order.price is not None
    return mark <= order.price if order.side == "buy" else mark >= order.price


def crossed(type: str, side: str, trigger: Decimal, mark: Decimal) -> bool:
    """Whether a stop / take-profit of ``side`` at ``trigger`` fires at ``mark``.

    A sell stop fires at or below its trigger, a sell take-profit at or above; buys are mirrored.
    """
    fires_below = (type == "stop_market") == (side == "sell")
    return mark <= trigger if fires_below else mark >= trigger


def venue_record(
    order: VenueOrder, side_at_submit: str | None, contracts_at_submit: Decimal, ts: int
) -> OrderRecord:
    """Truth record of an order the venue itself submitted (trigger, manual close, liquidation, ADL)."""
    return OrderRecord(
        order_id=order.id,
        client_order_id=order.client_order_id,
        account=order.account,
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        amount=order.amount,
        reduce_only=order.reduce_only,
        close_position=order.close_position,
        origin=order.origin,
        status=order.status,
        position_side_at_submit=side_at_submit,
        position_contracts_at_submit=contracts_at_submit,
        ts=ts,
    )


def update_trailing(order: VenueOrder, mark: Decimal) -> None:
    if order.trailing_best is None:
        active = order.activation_price
        if active is None or (mark >= active if order.side == "sell" else mark <= active):
            order.trailing_best = mark
    else:
        order.trailing_best = (
            max(order.trailing_best, mark) if order.side == "sell" else min(order.trailing_best, mark)
        )


def update_trailing_attached(position: VenuePosition, mark: Decimal) -> None:
    long = position.side == "long"
    if position.trailing_best is None:
        active = position.trailing_active_price
        if active is None or (mark >= active if long else mark <= active):
            position.trailing_best = mark
    else:
        position.trailing_best = (
            max(position.trailing_best, mark) if long else min(position.trailing_best, mark)
        )
