"""An in-process, exchange-agnostic futures venue (one-way mode, linear USDT perpetuals).

The wire façades (``plugins/*/framework_*/emulator.py``) translate Binance / Bybit REST and WebSocket to
calls on :class:`Venue` and its events back to frames; tests drive it and read ``venue.truth``.
The contract is ``docs/venue-api.md``.

Single-threaded: every method is synchronous, called from the asyncio loop; listeners are called
synchronously, in order, once the state change is complete.  Prices are ``Decimal`` in quote currency,
sizes ``Decimal`` contracts, times ms since the Unix epoch (UTC) from ``venue.clock()``.
"""

from __future__ import annotations

import collections
import dataclasses
import decimal
import random
from collections.abc import Callable, ItemsView
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from framework.models import now_ms
from framework.venue.faults import Faults
from framework.venue.prices import PricePoint
from framework.venue.truth import Closure, GroundTruth, OrderRecord

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
class _Account:
    """An account and the running sums :meth:`Venue.balance` reads (kept by ``Venue._rebook``).

    The sums are exact (computed in :data:`_EXACT`), so adding and removing contributions in any order
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
class _Contribution:
    """What one open position adds to its account's running sums."""

    leverage: int
    entry_notional: Decimal
    signed_at_mark: Decimal
    signed_at_entry: Decimal


_EXACT = decimal.Context(prec=200)
"""Precision for the running sums: far above any product of a 28-digit price and a size, so adding
and removing contributions never rounds."""


class Venue:
    """The simulated exchange.  See ``docs/venue-api.md`` for the full contract.

    :param name: venue name (``binance`` / ``bybit``), used in logs and by the façades.
    :param instruments: tradable instruments (default :func:`default_instruments`).
    :param seed: seeds :attr:`rng` (probabilistic faults, ids stay deterministic anyway).
    :param clock: ms since the epoch; tests pass a fake one.
    """

    def __init__(
        self,
        name: str,
        instruments: list[Instrument] | None = None,
        seed: int = 0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.name = name
        self.instruments: dict[str, Instrument] = {i.symbol: i for i in instruments or default_instruments()}
        self.rng = random.Random(seed)
        self.clock = clock
        self.faults = Faults()
        self.truth = GroundTruth()
        self._last_ts = 0
        self._accounts: dict[str, _Account] = {}
        self._marks: dict[str, Decimal] = {}
        self._mark_history: dict[str, collections.deque[PricePoint]] = {}
        self._orders: dict[str, VenueOrder] = {}
        self._client_ids: dict[str, set[str]] = {}
        #: ``"all"``: a client order id is never reused; ``"open"``: it is unique among open orders only
        #: (a façade sets this for a venue that allows reuse, e.g. Binance)
        self.client_id_scope = "all"
        self._positions: dict[tuple[str, str], VenuePosition] = {}
        self._contributions: dict[tuple[str, str], _Contribution] = {}
        self._position_keys_by_symbol: dict[str, list[tuple[str, str]]] = {}
        self._orders_by_symbol: dict[str, list[VenueOrder]] = {}
        self._history: dict[tuple[str, str], list[tuple[int, VenuePosition]]] = {}
        self._listeners: list[Listener] = []
        self._outbox: list[VenueEvent] = []
        self._dispatching = False
        self._next_order_id = 1_000_000_001
        self._next_exec_id = 1
        self._seq = 0

    def __repr__(self) -> str:
        return f"Venue({self.name!r}, accounts={list(self._accounts)}, symbols={list(self.instruments)})"

    # --- time ----------------------------------------------------------------------------------------

    def tick(self) -> int:
        """A fresh timestamp: ``max(clock(), last + 1)``, strictly increasing per venue."""
        self._last_ts = max(self.clock(), self._last_ts + 1)
        return self._last_ts

    def now(self) -> int:
        """The current time without consuming a timestamp: ``max(clock(), last handed out)``."""
        return max(self.clock(), self._last_ts)

    # --- accounts, instruments, prices ---------------------------------------------------------------

    def add_account(
        self, name: str, api_key: str, api_secret: str, balance: Decimal = Decimal("10000")
    ) -> None:
        """Create an account with a USDT wallet ``balance``.

        :raises ValueError: the name or the API key is taken.
        """
        if name in self._accounts:
            raise ValueError(f"account {name!r} exists")
        if self.account_for_key(api_key) is not None:
            raise ValueError(f"API key already belongs to another account (account {name!r})")
        self._accounts[name] = _Account(name, api_key, api_secret, Decimal(balance))
        self._client_ids[name] = set()

    def account_for_key(self, api_key: str) -> str | None:
        """The account owning ``api_key``, or ``None``."""
        return next((a.name for a in self._accounts.values() if a.api_key == api_key), None)

    def account_secret(self, account: str) -> str:
        """The API secret, for façades checking request signatures.  :raises KeyError: unknown account."""
        return self._account(account).api_secret

    def instrument(self, symbol: str) -> Instrument:
        """:raises VenueReject: ``unknown_symbol``."""
        try:
            return self.instruments[symbol]
        except KeyError:
            raise VenueReject("unknown_symbol", f"unknown symbol {symbol!r}") from None

    def instrument_by_id(self, native_id: str) -> Instrument:
        """Look up by native id (``XRPUSDT``).  :raises VenueReject: ``unknown_symbol``."""
        for instrument in self.instruments.values():
            if instrument.id == native_id:
                return instrument
        raise VenueReject("unknown_symbol", f"unknown symbol {native_id!r}")

    def set_leverage(self, account: str, symbol: str, leverage: int) -> None:
        """:raises VenueReject: ``invalid_order`` outside 1 … the instrument's max leverage."""
        instrument = self.instrument(symbol)
        if not 1 <= leverage <= instrument.max_leverage:
            raise VenueReject("invalid_order", f"leverage {leverage} outside 1..{instrument.max_leverage}")
        self._account(account).leverage[symbol] = leverage
        if (account, symbol) in self._positions:
            self._rebook(self._positions[account, symbol])

    def leverage(self, account: str, symbol: str) -> int:
        return self._account(account).leverage.get(symbol, DEFAULT_LEVERAGE)

    def mark_price(self, symbol: str) -> Decimal:
        """:raises VenueReject: ``unknown_symbol``; :raises LookupError: no mark price set yet."""
        self.instrument(symbol)
        try:
            return self._marks[symbol]
        except KeyError:
            raise LookupError(f"no mark price for {symbol} yet: call set_mark_price first") from None

    def mark_history(self, symbol: str) -> list[PricePoint]:
        """Every mark price set for ``symbol`` (the last :data:`MARK_HISTORY_KEEP`), oldest first, stamped
        with venue time: the price path the façades serve as klines.

        :raises VenueReject: ``unknown_symbol``.
        """
        self.instrument(symbol)
        return list(self._mark_history.get(symbol, ()))

    def set_mark_price(self, symbol: str, price: Decimal) -> None:
        """Move the mark price; fire every conditional order and attached stop it crosses and fill every
        resting limit order it reaches (at the limit price, as maker).

        :raises ValueError: ``price`` ≤ 0.
        """
        self.instrument(symbol)
        price = Decimal(price)
        if price <= 0:
            raise ValueError(f"mark price must be > 0, got {price}")
        ts = self.tick()
        self._marks[symbol] = price
        history = self._mark_history.setdefault(symbol, collections.deque(maxlen=MARK_HISTORY_KEEP))
        history.append(PricePoint(ts, price))
        for key in self._position_keys_by_symbol.get(symbol, ()):
            self._rebook(self._positions[key])
        self._outbox.append(MarkPriceEvent(symbol, price, ts))
        try:
            resting = [o for o in self._orders_by_symbol.get(symbol, ()) if o.is_open]
            for order in [o for o in resting if o.conditional]:
                if order.is_open and self._order_fires(order, price):
                    self._trigger(order)
            for order in [o for o in resting if o.type == LIMIT]:
                if order.is_open and _marketable(order, price):
                    assert order.price is not None
                    self._execute_limit(order, order.price, maker=True, ts=self.tick())
            keys = self._position_keys_by_symbol.get(symbol, ())
            for position in [self._positions[key] for key in keys if self._positions[key].is_open]:
                origin = self._attached_fires(position, price)
                if origin is not None:
                    self._close_market(position.account, symbol, origin, None, self.tick())
        finally:
            self._after_change()

    # --- orders --------------------------------------------------------------------------------------

    def place_order(
        self,
        account: str,
        symbol: str,
        side: str,
        type: str = MARKET,
        amount: Decimal | None = None,
        client_order_id: str | None = None,
        reduce_only: bool = False,
        close_position: bool = False,
        trigger_price: Decimal | None = None,
        callback_rate: Decimal | None = None,
        activation_price: Decimal | None = None,
        stop_loss: Decimal | None = None,
        take_profit: Decimal | None = None,
        price: Decimal | None = None,
        time_in_force: str | None = None,
    ) -> VenueOrder:
        """Submit an order (see the order semantics in ``docs/venue-api.md``).

        :param type: ``market``, ``limit``, ``stop_market``, ``take_profit_market`` or ``trailing_stop_market``.
        :param amount: contracts; ``None`` with ``close_position=True``.
        :param price: a ``limit`` order's price; ``time_in_force``: one of :data:`TIME_IN_FORCE` (default
            ``gtc``).  A limit order the mark has reached fills at once at the mark (taker), except
            ``post_only``, which is ``expired`` instead; one it has not reached rests (``ioc`` / ``fok``:
            ``expired``) and fills at its price (maker) when the mark reaches it.
        :param callback_rate: trailing distance in percent (0.1 … 10).
        :param stop_loss / take_profit: on a market entry, attach to the resulting position.
        :returns: a snapshot of the accepted order (``filled`` already for a market order).
        :raises VenueReject: for every refusal; the attempt is still recorded in ``venue.truth.orders``.
        """
        self._account(account)
        instrument = self.instrument(symbol)
        ts = self.tick()
        position = self._position(account, symbol)
        submitted: dict[str, Any] = dict(
            client_order_id=client_order_id,
            account=account,
            symbol=symbol,
            side=side,
            type=type,
            amount=amount,
            reduce_only=reduce_only,
            close_position=close_position,
            position_side_at_submit=position.side,
            position_contracts_at_submit=position.contracts,
            ts=ts,
            trigger_price=trigger_price,
        )
        if type == LIMIT and time_in_force is None:
            time_in_force = "gtc"
        try:
            try:
                amount = _decimal(amount, "invalid_quantity", "amount")
                price = _decimal(price, "invalid_price", "price")
                trigger_price = _decimal(trigger_price, "invalid_price", "trigger_price")
                callback_rate = _decimal(callback_rate, "invalid_price", "callback_rate")
                activation_price = _decimal(activation_price, "invalid_price", "activation_price")
                stop_loss = _decimal(stop_loss, "invalid_price", "stop_loss")
                take_profit = _decimal(take_profit, "invalid_price", "take_profit")
                self._validate(
                    instrument,
                    account,
                    position,
                    side,
                    type,
                    amount,
                    client_order_id,
                    reduce_only,
                    close_position,
                    trigger_price,
                    callback_rate,
                    activation_price,
                    stop_loss,
                    take_profit,
                    price,
                    time_in_force,
                )
            except VenueReject as reject:
                self.truth.record_order(
                    OrderRecord(
                        order_id=None,
                        origin="order",
                        status="rejected",
                        reject_reason=reject.reason,
                        **submitted,
                    )
                )
                raise
            order = self._new_order(
                account,
                symbol,
                side,
                type,
                amount,
                ts,
                client_order_id=client_order_id,
                reduce_only=reduce_only,
                close_position=close_position,
                trigger_price=trigger_price,
                callback_rate=callback_rate,
                activation_price=activation_price,
                price=price,
                time_in_force=time_in_force,
            )
            if order.type == LIMIT:
                self._place_limit(order, ts)
            if order.type == "trailing_stop_market":
                self._update_trailing(order, self._marks[symbol])
            if type == MARKET:
                self._execute_market(order, ts)
                if stop_loss is not None or take_profit is not None:
                    self._attach(self._position(account, symbol), stop_loss, take_profit, None, None, ts)
            self.truth.record_order(
                OrderRecord(order_id=order.id, origin="order", status=order.status, **submitted)
            )
            return dataclasses.replace(order)
        finally:
            self._after_change()

    def cancel_order(
        self,
        account: str,
        symbol: str,
        order_id: str | None = None,
        client_order_id: str | None = None,
        *,
        expire: bool = False,
    ) -> VenueOrder:
        """Cancel an open order; ``expire=True``: the venue itself ends it (status ``expired``), e.g. a
        façade modelling Binance's system cancellation of close-position stops when the position closes.

        :raises VenueReject: ``order_not_found`` when unknown, of another symbol, or no longer open.
        """
        order = self._find_order(account, symbol, order_id, client_order_id)
        if not order.is_open:
            raise VenueReject("order_not_found", f"order {order.id} is {order.status}, not open")
        ts = self.tick()
        order.status = "expired" if expire else "canceled"
        order.updated_ms = ts
        self._outbox.append(OrderEvent(dataclasses.replace(order), ts))
        self._after_change()
        return dataclasses.replace(order)

    def get_order(
        self,
        account: str,
        symbol: str | None = None,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> VenueOrder:
        """One order by id or client order id.  :raises VenueReject: ``order_not_found``."""
        return dataclasses.replace(self._find_order(account, symbol, order_id, client_order_id))

    def orders(
        self, account: str, symbol: str | None = None, open_only: bool = True, conditional: bool | None = None
    ) -> list[VenueOrder]:
        """Orders of ``account`` in id order; ``conditional`` filters by kind when not ``None``."""
        self._account(account)
        return [
            dataclasses.replace(o)
            for o in self._orders.values()
            if o.account == account
            and (symbol is None or o.symbol == symbol)
            and (not open_only or o.is_open)
            and (conditional is None or o.conditional == conditional)
        ]

    # --- positions -----------------------------------------------------------------------------------

    def set_trading_stop(
        self,
        account: str,
        symbol: str,
        stop_loss: Decimal | None = None,
        take_profit: Decimal | None = None,
        trailing_stop: Decimal | None = None,
        active_price: Decimal | None = None,
    ) -> VenuePosition:
        """Set, move or remove (``Decimal(0)``) the stops attached to the position (Bybit trading-stop).

        ``None`` leaves a value unchanged.  ``trailing_stop`` is a price distance (quote currency).

        :raises VenueReject: ``zero_position`` when flat; ``not_modified`` when nothing would change;
            ``would_trigger_immediately`` for a stop / take-profit already crossed by the mark price;
            ``invalid_price`` for an off-tick price.
        """
        self._account(account)
        self.instrument(symbol)
        position = self._position(account, symbol)
        if not position.is_open:
            raise VenueReject("zero_position", "can not set tp/sl/ts for zero position")
        ts = self.tick()
        try:
            stop_loss = _decimal(stop_loss, "invalid_price", "stop_loss")
            take_profit = _decimal(take_profit, "invalid_price", "take_profit")
            trailing_stop = _decimal(trailing_stop, "invalid_price", "trailing_stop")
            active_price = _decimal(active_price, "invalid_price", "active_price")
            changed = self._attach(position, stop_loss, take_profit, trailing_stop, active_price, ts)
            if not changed:
                raise VenueReject("not_modified", "not modified: the values are already set")
            return self._snapshot(position)
        finally:
            self._after_change()

    def position(self, account: str, symbol: str) -> VenuePosition:
        """A snapshot of the position, flat (``contracts == 0``) when none is open."""
        self._account(account)
        self.instrument(symbol)
        return self._snapshot(self._position(account, symbol))

    def positions(self, account: str) -> list[VenuePosition]:
        """Open positions of ``account`` (contracts > 0)."""
        self._account(account)
        return [self._snapshot(p) for (a, _), p in self._positions.items() if a == account and p.is_open]

    def position_items(self) -> ItemsView[tuple[str, str], VenuePosition]:
        """Every position record by ``(account, symbol)``, flat ones included: the live records, not
        snapshots (for the ground-truth observer, which reads them after every change; never mutate)."""
        return self._positions.items()

    def visible_positions(self, account: str, lag_ms: int) -> list[VenuePosition]:
        """Open positions as they were at ``now() - lag_ms`` (a lagging REST endpoint, docs/incidents.md I-3/I-4).

        Lags beyond :data:`HISTORY_KEEP_MS` see the oldest state kept.
        """
        self._account(account)
        if lag_ms <= 0:
            return self.positions(account)
        cutoff = self.now() - lag_ms
        visible = []
        for (owner, _), history in self._history.items():
            if owner != account:
                continue
            seen = None
            for ts, snapshot in history:
                if ts > cutoff:
                    break
                seen = snapshot
            if seen is not None and seen.is_open:
                visible.append(dataclasses.replace(seen))
        return visible

    def balance(self, account: str) -> dict[str, Decimal]:
        """``{"total": wallet balance, "available": free margin, "unrealized_pnl"}`` in quote currency.

        Free margin is wallet + unrealized PnL − Σ contracts·entry / leverage.  O(1) in the number of
        positions: it reads running sums kept up to date on every fill, mark price and leverage change.
        """
        acc = self._account(account)
        unrealized = used = ZERO
        if acc.open_positions:
            unrealized = acc.signed_at_mark - acc.signed_at_entry
            for leverage, notional in sorted(acc.entry_notional_by_leverage.items()):
                used += notional / leverage
        return {
            "total": acc.wallet,
            "available": acc.wallet + unrealized - used,
            "unrealized_pnl": unrealized,
        }

    def wallet(self, account: str) -> Decimal:
        """The wallet balance (fees and realized PnL, no unrealized PnL) in quote currency.

        :raises KeyError: unknown account.
        """
        return self._account(account).wallet

    def manual_close(self, account: str, symbol: str, contracts: Decimal | None = None) -> VenueOrder:
        """Someone closes (part of) the position on the web UI: a market order with origin ``manual``.

        :raises VenueReject: ``zero_position`` when flat; ``invalid_quantity`` for a bad size.
        """
        return self._forced_close(account, symbol, "manual", contracts)

    def liquidate(self, account: str, symbol: str) -> VenueOrder:
        """The venue liquidates the whole position at the mark price.

        :raises VenueReject: ``zero_position``.
        """
        return self._forced_close(account, symbol, "liquidation", None)

    def adl(self, account: str, symbol: str) -> VenueOrder:
        """Auto-deleveraging closes the whole position.  :raises VenueReject: ``zero_position``."""
        return self._forced_close(account, symbol, "adl", None)

    def settle_funding(self, symbol: str, rate: Decimal) -> dict[str, Decimal]:
        """Funding at ``rate`` (0.0001 = 0.01 %) on every open ``symbol`` position, valued at the mark: a long
        pays ``contracts × mark × rate``, a short receives it (the reverse when ``rate`` < 0).  Only wallets
        change: no order, no fill, no position event; one :class:`BalanceEvent` (``reason="funding"``) per
        account charged.

        :returns: ``{account: amount credited}`` (negative when paid), quote currency.
        """
        ts = self.tick()
        mark = self._marks[symbol]
        credited: dict[str, Decimal] = {}
        for key in self._position_keys_by_symbol.get(symbol, []):
            position = self._positions[key]
            if not position.is_open:
                continue
            amount = -_signed(position) * mark * rate
            self._accounts[position.account].wallet += amount
            credited[position.account] = credited.get(position.account, ZERO) + amount
        for account, amount in credited.items():
            self._outbox.append(BalanceEvent(account, self.balance(account), ts, "funding", amount))
        self._after_change()
        return credited

    def is_protected(self, account: str, symbol: str) -> bool:
        """True when an open position has an attached stop-loss / trailing stop, or an open reduce-only /
        close-position ``stop_market`` / ``trailing_stop_market`` order on its closing side."""
        position = self._position(account, symbol)
        if not position.is_open:
            return False
        if position.stop_loss is not None or position.trailing_stop is not None:
            return True
        closing = "sell" if position.side == "long" else "buy"
        return any(
            o.account == account
            and o.symbol == symbol
            and o.is_open
            and o.side == closing
            and o.type in ("stop_market", "trailing_stop_market")
            and (o.reduce_only or o.close_position)
            for o in self._orders_by_symbol.get(symbol, ())
        )

    # --- events --------------------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event; returns a function that unsubscribes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # --- internals -----------------------------------------------------------------------------------

    def _account(self, account: str) -> _Account:
        try:
            return self._accounts[account]
        except KeyError:
            raise KeyError(f"unknown account {account!r}") from None

    def _position(self, account: str, symbol: str) -> VenuePosition:
        key = (account, symbol)
        if key not in self._positions:
            self._positions[key] = VenuePosition(account, symbol)
            self._position_keys_by_symbol.setdefault(symbol, []).append(key)
        return self._positions[key]

    def _unrealized(self, position: VenuePosition) -> Decimal:
        mark = self._marks.get(position.symbol)
        if not position.is_open or mark is None:
            return ZERO
        direction = 1 if position.side == "long" else -1
        return (mark - position.entry_price) * position.contracts * direction

    def _rebook(self, position: VenuePosition) -> None:
        """Replace ``position``'s contribution to its account's running sums by its current one.

        Call after every change to its size, side or entry price, its symbol's mark or its leverage.
        """
        key = (position.account, position.symbol)
        account = self._accounts[position.account]
        old = self._contributions.pop(key, None)
        if old is not None:
            account.open_positions -= 1
            self._add_contribution(account, old, _EXACT.minus)
        if not position.is_open:
            return
        signed = _signed(position)
        mark = self._marks.get(position.symbol)
        new = _Contribution(
            leverage=self.leverage(position.account, position.symbol),
            entry_notional=_EXACT.multiply(position.contracts, position.entry_price),
            signed_at_mark=ZERO if mark is None else _EXACT.multiply(signed, mark),
            signed_at_entry=ZERO if mark is None else _EXACT.multiply(signed, position.entry_price),
        )
        self._contributions[key] = new
        account.open_positions += 1
        self._add_contribution(account, new, _EXACT.plus)

    @staticmethod
    def _add_contribution(
        account: _Account, contribution: _Contribution, sign: Callable[[Decimal], Decimal]
    ) -> None:
        """Add (``sign`` = ``_EXACT.plus``) or remove (``_EXACT.minus``) ``contribution``, exactly."""
        by_leverage = account.entry_notional_by_leverage
        notional = _EXACT.add(by_leverage.get(contribution.leverage, ZERO), sign(contribution.entry_notional))
        if notional == 0:  # no open position left at this leverage
            by_leverage.pop(contribution.leverage, None)
        else:
            by_leverage[contribution.leverage] = notional
        account.signed_at_mark = _EXACT.add(account.signed_at_mark, sign(contribution.signed_at_mark))
        account.signed_at_entry = _EXACT.add(account.signed_at_entry, sign(contribution.signed_at_entry))

    def _snapshot(self, position: VenuePosition) -> VenuePosition:
        return dataclasses.replace(
            position,
            mark_price=self._marks.get(position.symbol, ZERO),
            unrealized_pnl=self._unrealized(position),
        )

    def _find_order(
        self, account: str, symbol: str | None, order_id: str | None, client_order_id: str | None
    ) -> VenueOrder:
        self._account(account)
        if order_id is None and client_order_id is None:
            raise VenueReject("invalid_order", "order_id or client_order_id is required")
        for order in reversed(self._orders.values()):  # a reused client id names its newest order
            if (
                order.account == account
                and (symbol is None or order.symbol == symbol)
                and (order_id is None or order.id == str(order_id))
                and (client_order_id is None or order.client_order_id == client_order_id)
            ):
                return order
        raise VenueReject("order_not_found", f"order {order_id or client_order_id} does not exist")

    def _validate(
        self,
        instrument: Instrument,
        account: str,
        position: VenuePosition,
        side: str,
        type: str,
        amount: Decimal | None,
        client_order_id: str | None,
        reduce_only: bool,
        close_position: bool,
        trigger_price: Decimal | None,
        callback_rate: Decimal | None,
        activation_price: Decimal | None,
        stop_loss: Decimal | None,
        take_profit: Decimal | None,
        price: Decimal | None = None,
        time_in_force: str | None = None,
    ) -> None:
        if self.faults.reject_next_orders > 0:
            self.faults.reject_next_orders -= 1
            raise VenueReject("rejected", "order rejected by the venue (fault injection)")
        if side not in ("buy", "sell"):
            raise VenueReject("invalid_order", f"side must be buy or sell, got {side!r}")
        if type not in ORDER_TYPES:
            raise VenueReject(
                "invalid_order", f"order type {type!r} not supported; use one of {sorted(ORDER_TYPES)}"
            )
        if client_order_id is not None and client_order_id in self._client_ids[account] and (
            self.client_id_scope == "all"
            or any(o.is_open and o.account == account and o.client_order_id == client_order_id
                   for o in self._orders.values())
        ):
            raise VenueReject(
                "duplicate_client_order_id", f"client order id {client_order_id!r} already used"
            )
        mark = self._marks.get(instrument.symbol)
        if mark is None:
            raise VenueReject("invalid_order", f"{instrument.symbol} has no mark price yet")
        if close_position:
            if type not in ("stop_market", "take_profit_market"):
                raise VenueReject(
                    "invalid_order", "close_position is only for stop_market / take_profit_market"
                )
            if amount is not None:
                raise VenueReject("invalid_order", "a close_position order carries no amount")
        else:
            instrument.check_amount(amount)
        if (price is not None or time_in_force is not None) and type != LIMIT:
            raise VenueReject("invalid_order", "price / time_in_force are for a limit order")
        if type in (MARKET, LIMIT):
            if trigger_price is not None or callback_rate is not None or activation_price is not None:
                raise VenueReject("invalid_order", f"a {type} order takes no trigger_price / callback_rate")
            if type == LIMIT:
                if price is None:
                    raise VenueReject("invalid_price", "a limit order needs a price")
                instrument.check_price(price)
                if time_in_force not in TIME_IN_FORCE:
                    raise VenueReject(
                        "invalid_order", f"time_in_force {time_in_force!r} not one of {sorted(TIME_IN_FORCE)}"
                    )
        elif type == "trailing_stop_market":
            if callback_rate is None or not Decimal("0.1") <= callback_rate <= 10:
                raise VenueReject(
                    "invalid_price", f"callback_rate {callback_rate} must be within 0.1 … 10 (%)"
                )
            if activation_price is not None:
                instrument.check_price(activation_price, "activation_price")
                if (side == "sell" and activation_price <= mark) or (
                    side == "buy" and activation_price >= mark
                ):
                    raise VenueReject(
                        "would_trigger_immediately",
                        f"activation_price {activation_price} already reached by mark {mark}",
                    )
        else:
            if trigger_price is None:
                raise VenueReject("invalid_price", f"{type} needs a trigger_price")
            instrument.check_price(trigger_price, "trigger_price")
            if _crossed(type, side, trigger_price, mark):
                raise VenueReject(
                    "would_trigger_immediately",
                    f"order would immediately trigger: {side} {type} at {trigger_price}, mark {mark}",
                )
        if stop_loss is not None or take_profit is not None:
            if type != MARKET or reduce_only:
                raise VenueReject("invalid_order", "stop_loss / take_profit attach only to a market entry")
            new_side = "long" if side == "buy" else "short"
            if position.is_open and position.side != new_side:
                raise VenueReject(
                    "invalid_order", "stop_loss / take_profit attach only to an entry, not a reduce"
                )
            self._check_attached(instrument, new_side, mark, stop_loss, take_profit)
        if type in (MARKET, LIMIT):
            opposite = position.is_open and position.side != ("long" if side == "buy" else "short")
            if reduce_only and not opposite:
                raise VenueReject("reduce_only_rejected", "reduce-only order rejected: no position to reduce")
            if not reduce_only:  # a limit order's margin at its own price (assumed: not reserved while it rests)
                cost = mark if type == MARKET or price is None else price
                self._check_margin(account, instrument.symbol, position, side, amount, cost)

    def _check_attached(
        self,
        instrument: Instrument,
        position_side: str,
        mark: Decimal,
        stop_loss: Decimal | None,
        take_profit: Decimal | None,
    ) -> None:
        long = position_side == "long"
        if stop_loss:
            instrument.check_price(stop_loss, "stop_loss")
            if (long and stop_loss >= mark) or (not long and stop_loss <= mark):
                raise VenueReject(
                    "would_trigger_immediately",
                    f"stop_loss {stop_loss} for a {position_side} must be "
                    f"{'below' if long else 'above'} mark {mark}",
                )
        if take_profit:
            instrument.check_price(take_profit, "take_profit")
            if (long and take_profit <= mark) or (not long and take_profit >= mark):
                raise VenueReject(
                    "would_trigger_immediately",
                    f"take_profit {take_profit} for a {position_side} must be "
                    f"{'above' if long else 'below'} mark {mark}",
                )

    def _check_margin(
        self,
        account: str,
        symbol: str,
        position: VenuePosition,
        side: str,
        amount: Decimal | None,
        mark: Decimal,
    ) -> None:
        assert amount is not None
        current = _signed(position)
        new = current + (amount if side == "buy" else -amount)
        flipped = current != 0 and new != 0 and (new > 0) != (current > 0)
        added = abs(new) if flipped else max(ZERO, abs(new) - abs(current))
        required = added * mark / self.leverage(account, symbol) + amount * mark * TAKER_FEE_RATE
        available = self.balance(account)["available"]
        if added > 0 and required > available:
            raise VenueReject(
                "insufficient_margin",
                f"margin is insufficient: needs {required:.4f}, available {available:.4f}",
            )

    def _new_order(
        self,
        account: str,
        symbol: str,
        side: str,
        type: str,
        amount: Decimal | None,
        ts: int,
        client_order_id: str | None = None,
        **fields: object,
    ) -> VenueOrder:
        order = VenueOrder(
            id=str(self._next_order_id),
            client_order_id=client_order_id,
            account=account,
            symbol=symbol,
            side=side,
            type=type,
            amount=amount,
            created_ms=ts,
            updated_ms=ts,
            **fields,  # type: ignore[arg-type]
        )
        self._next_order_id += 1
        self._orders[order.id] = order
        self._orders_by_symbol.setdefault(symbol, []).append(order)
        if order.client_order_id is not None:
            self._client_ids[account].add(order.client_order_id)
        self._outbox.append(OrderEvent(dataclasses.replace(order), ts))
        return order

    def _execute_market(self, order: VenueOrder, ts: int) -> None:
        """Fill a market order at the mark price (capped at the position for reduce-only).

        A client's market order (origin ``order``) meets the book the fault knobs describe: it fills in
        ``faults.market_fill_parts`` executions, and only ``faults.market_fill_ratio`` of it fills, the rest
        ``expired`` (Binance price protection / thin book; Bybit's IOC remainder cancelled).
        """
        position = self._position(order.account, order.symbol)
        amount = order.amount
        assert amount is not None
        if order.reduce_only:
            amount = min(amount, position.contracts)
        parts = [amount]
        if order.origin == "order" and amount > 0:
            step = self.instruments[order.symbol].step_size
            fillable = amount if self.faults.market_fill_ratio >= 1 else (
                amount * Decimal(str(self.faults.market_fill_ratio)) // step * step)
            count = self.faults.market_fill_parts
            share = fillable / count // step * step
            parts = [p for p in [share] * (count - 1) + [fillable - share * (count - 1)] if p > 0]
        for i, part in enumerate(parts):
            self._fill(order, part, self._marks[order.symbol], ts, final=i == len(parts) - 1 and sum(parts) == amount)
        if sum(parts) < amount:
            self._end(order, "expired", ts)

    def _place_limit(self, order: VenueOrder, ts: int) -> None:
        """A new limit order: take at the mark when it is marketable (post-only: expire instead), else rest
        (IOC / FOK: expire)."""
        if _marketable(order, self._marks[order.symbol]):
            if order.time_in_force == "post_only":
                self._end(order, "expired", ts)  # it would take liquidity
            else:
                self._execute_limit(order, self._marks[order.symbol], maker=False, ts=ts)
        elif order.time_in_force in ("ioc", "fok"):
            self._end(order, "expired", ts)

    def _execute_limit(self, order: VenueOrder, price: Decimal, maker: bool, ts: int) -> None:
        """Fill a limit order whole at ``price``; a reduce-only one is capped at the position and expires
        when there is nothing (left) on its closing side to reduce."""
        position = self._position(order.account, order.symbol)
        amount = order.amount
        assert amount is not None
        if order.reduce_only:
            closing_side = {"long": "sell", "short": "buy"}.get(position.side or "")
            if order.side != closing_side:
                self._end(order, "expired", ts)
                return
            amount = min(amount, position.contracts)
        self._fill(order, amount, price, ts, maker=maker)

    def _end(self, order: VenueOrder, status: str, ts: int) -> None:
        order.status = status
        order.updated_ms = ts
        self._outbox.append(OrderEvent(dataclasses.replace(order), ts))

    def _fill(
        self, order: VenueOrder, amount: Decimal, price: Decimal, ts: int, maker: bool = False, final: bool = True
    ) -> None:
        """One execution of ``order``; ``final``: the order is filled by it (else ``partially_filled``)."""
        account = self._accounts[order.account]
        position = self._position(order.account, order.symbol)
        before_side, before_contracts = position.side, position.contracts
        current = _signed(position)
        signed = amount if order.side == "buy" else -amount
        new = current + signed
        fee = amount * price * (MAKER_FEE_RATE if maker else TAKER_FEE_RATE)
        realized = ZERO
        if current == 0 or (current > 0) == (signed > 0):
            position.entry_price = (abs(current) * position.entry_price + amount * price) / abs(new)
            if current == 0:
                position.opened_ms = ts
                position.realized_pnl = ZERO
        else:
            closing = min(amount, abs(current))
            realized = (price - position.entry_price) * closing * (1 if current > 0 else -1)
            position.realized_pnl += realized
        position.contracts = abs(new)
        position.side = None if new == 0 else ("long" if new > 0 else "short")
        account.wallet += realized - fee
        self._rebook(position)

        if before_contracts > 0 and position.side != before_side:  # went flat or flipped
            assert before_side is not None
            self.truth.record_closure(
                Closure(
                    order.account,
                    order.symbol,
                    before_side,
                    before_contracts,
                    price,
                    order.origin,
                    position.realized_pnl,
                    ts,
                )
            )
            position.stop_loss = position.take_profit = position.trailing_stop = None
            position.trailing_active_price = position.trailing_best = None
            if position.side is None:
                position.entry_price = ZERO
                position.opened_ms = None
            else:  # flipped: the remainder opened a new position at this price
                position.entry_price = price
                position.opened_ms = ts
                position.realized_pnl = ZERO
            self._rebook(position)

        order.average = (
            price
            if order.filled == 0 or order.average is None
            else (order.average * order.filled + price * amount) / (order.filled + amount)
        )
        order.filled += amount
        order.realized_pnl += realized
        order.fee += fee
        order.status = "filled" if final else "partially_filled"
        order.updated_ms = ts
        fill = FillEvent(
            order.account,
            order.symbol,
            order.id,
            order.client_order_id,
            order.side,
            amount,
            price,
            fee,
            realized,
            order.origin,
            str(self._next_exec_id),
            ts,
            maker,
        )
        self._next_exec_id += 1
        self.truth.record_fill(fill)
        self._outbox.append(fill)
        self._outbox.append(OrderEvent(dataclasses.replace(order), ts))
        self._position_changed(position, ts)
        self._outbox.append(BalanceEvent(order.account, self.balance(order.account), ts))

    def _position_changed(self, position: VenuePosition, ts: int) -> None:
        self._seq += 1
        position.seq = self._seq
        position.updated_ms = ts
        snapshot = self._snapshot(position)
        history = self._history.setdefault((position.account, position.symbol), [])
        history.append((ts, snapshot))
        while len(history) > 1 and history[1][0] <= ts - HISTORY_KEEP_MS:
            history.pop(0)
        self._outbox.append(PositionEvent(dataclasses.replace(snapshot), ts))

    def _attach(
        self,
        position: VenuePosition,
        stop_loss: Decimal | None,
        take_profit: Decimal | None,
        trailing_stop: Decimal | None,
        active_price: Decimal | None,
        ts: int,
    ) -> bool:
        """Apply attached-stop changes (``0`` removes); returns whether anything changed."""
        instrument = self.instrument(position.symbol)
        mark = self._marks[position.symbol]
        assert position.side is not None
        self._check_attached(instrument, position.side, mark, stop_loss, take_profit)
        if trailing_stop:
            if trailing_stop < 0 or trailing_stop % instrument.tick_size != 0:
                raise VenueReject(
                    "invalid_price", f"trailing_stop {trailing_stop} must be a multiple of the tick"
                )
            if active_price:
                instrument.check_price(active_price, "active_price")

        def value(given: Decimal | None, current: Decimal | None) -> Decimal | None:
            if given is None:
                return current
            return None if given == 0 else Decimal(given)

        new_sl = value(stop_loss, position.stop_loss)
        new_tp = value(take_profit, position.take_profit)
        new_ts = value(trailing_stop, position.trailing_stop)
        new_active = value(active_price, position.trailing_active_price) if new_ts is not None else None
        if (new_sl, new_tp, new_ts, new_active) == (
            position.stop_loss,
            position.take_profit,
            position.trailing_stop,
            position.trailing_active_price,
        ):
            return False
        if (new_ts, new_active) != (position.trailing_stop, position.trailing_active_price):
            position.trailing_best = None
        position.stop_loss, position.take_profit = new_sl, new_tp
        position.trailing_stop, position.trailing_active_price = new_ts, new_active
        if new_ts is not None:
            self._update_trailing_attached(position, mark)
        self._position_changed(position, ts)
        return True

    def _order_fires(self, order: VenueOrder, mark: Decimal) -> bool:
        if order.type == "trailing_stop_market":
            self._update_trailing(order, mark)
            stop = order.trailing_stop_price
            return stop is not None and (mark <= stop if order.side == "sell" else mark >= stop)
        assert order.trigger_price is not None
        return _crossed(order.type, order.side, order.trigger_price, mark)

    @staticmethod
    def _update_trailing(order: VenueOrder, mark: Decimal) -> None:
        if order.trailing_best is None:
            active = order.activation_price
            if active is None or (mark >= active if order.side == "sell" else mark <= active):
                order.trailing_best = mark
        else:
            order.trailing_best = (
                max(order.trailing_best, mark) if order.side == "sell" else min(order.trailing_best, mark)
            )

    @staticmethod
    def _update_trailing_attached(position: VenuePosition, mark: Decimal) -> None:
        long = position.side == "long"
        if position.trailing_best is None:
            active = position.trailing_active_price
            if active is None or (mark >= active if long else mark <= active):
                position.trailing_best = mark
        else:
            position.trailing_best = (
                max(position.trailing_best, mark) if long else min(position.trailing_best, mark)
            )

    def _attached_fires(self, position: VenuePosition, mark: Decimal) -> str | None:
        long = position.side == "long"
        if position.stop_loss is not None and (
            mark <= position.stop_loss if long else mark >= position.stop_loss
        ):
            return "stop_loss"
        if position.take_profit is not None and (
            mark >= position.take_profit if long else mark <= position.take_profit
        ):
            return "take_profit"
        if position.trailing_stop is not None:
            self._update_trailing_attached(position, mark)
            best = position.trailing_best
            if best is not None and (
                mark <= best - position.trailing_stop if long else mark >= best + position.trailing_stop
            ):
                return "trailing_stop"
        return None

    def _trigger(self, order: VenueOrder) -> None:
        """A conditional order's trigger was crossed: spawn and fill its market order, or expire it."""
        ts = self.tick()
        position = self._position(order.account, order.symbol)
        reducing = order.reduce_only or order.close_position
        closing_side = {"long": "sell", "short": "buy"}.get(position.side or "")
        order.updated_ms = ts
        if reducing and order.side != closing_side:
            order.status = "expired"  # nothing (left) to reduce
            self._outbox.append(OrderEvent(dataclasses.replace(order), ts))
            return
        amount = position.contracts if order.close_position else order.amount
        assert amount is not None
        if reducing:
            amount = min(amount, position.contracts)
        else:
            try:
                self._check_margin(
                    order.account, order.symbol, position, order.side, amount, self._marks[order.symbol]
                )
            except VenueReject:
                order.status = "expired"
                self._outbox.append(OrderEvent(dataclasses.replace(order), ts))
                return
        order.status = "triggered"
        parent_event_at = len(self._outbox)
        child = self._new_order(
            order.account,
            order.symbol,
            order.side,
            MARKET,
            amount,
            ts,
            reduce_only=reducing,
            origin=ORIGIN_BY_TYPE[order.type],
        )
        order.triggered_order_id = child.id
        self._outbox.insert(parent_event_at, OrderEvent(dataclasses.replace(order), ts))
        at_submit = position.side, position.contracts
        self._execute_market(child, ts)
        self.truth.record_order(_record(child, *at_submit, ts))

    def _close_market(
        self, account: str, symbol: str, origin: str, contracts: Decimal | None, ts: int
    ) -> VenueOrder:
        position = self._position(account, symbol)
        assert position.side is not None
        amount = position.contracts if contracts is None else min(contracts, position.contracts)
        side = "sell" if position.side == "long" else "buy"
        order = self._new_order(account, symbol, side, MARKET, amount, ts, reduce_only=True, origin=origin)
        at_submit = position.side, position.contracts
        self._execute_market(order, ts)
        self.truth.record_order(_record(order, *at_submit, ts))
        return order

    def _forced_close(self, account: str, symbol: str, origin: str, contracts: Decimal | None) -> VenueOrder:
        self._account(account)
        instrument = self.instrument(symbol)
        position = self._position(account, symbol)
        if not position.is_open:
            raise VenueReject("zero_position", f"no {symbol} position to close")
        contracts = _decimal(contracts, "invalid_quantity", "contracts")
        if contracts is not None:
            instrument.check_amount(contracts)
        try:
            return dataclasses.replace(self._close_market(account, symbol, origin, contracts, self.tick()))
        finally:
            self._after_change()

    def _after_change(self) -> None:
        """Update the ground truth, then deliver queued events (re-entrant calls queue behind)."""
        self.truth.observe(self, self._last_ts)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._outbox:
                event = self._outbox.pop(0)
                for listener in list(self._listeners):
                    listener(event)
        finally:
            self._dispatching = False


def _decimal(value: object, reason: RejectReason, name: str) -> Decimal | None:
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


def _signed(position: VenuePosition) -> Decimal:
    return position.contracts if position.side == "long" else -position.contracts


def _marketable(order: VenueOrder, mark: Decimal) -> bool:
    """Whether a limit order meets the mark: a buy at or above it, a sell at or below it."""
    assert order.price is not None
    return mark <= order.price if order.side == "buy" else mark >= order.price


def _crossed(type: str, side: str, trigger: Decimal, mark: Decimal) -> bool:
    """Whether a stop / take-profit of ``side`` at ``trigger`` fires at ``mark``.

    A sell stop fires at or below its trigger, a sell take-profit at or above; buys are mirrored.
    """
    fires_below = (type == "stop_market") == (side == "sell")
    return mark <= trigger if fires_below else mark >= trigger


def _record(
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
