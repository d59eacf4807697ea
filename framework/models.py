"""Data that crosses a hook: pydantic v2 models in ccxt's unified vocabulary.

Conventions for every model here:

* prices are ``Decimal`` in the quote currency (USDT for ``XRP/USDT:USDT``);
* sizes are ``Decimal`` in contracts (ccxt ``contracts``; for linear USDT perpetuals one contract is one
  unit of the base currency);
* times are ``int`` milliseconds since the Unix epoch, UTC;
* symbols are unified ccxt symbols (``XRP/USDT:USDT``), never exchange-native ids (``XRPUSDT``);
* order ``side`` is ``buy`` / ``sell``; position ``side`` is ``long`` / ``short``.

Models are frozen and reject unknown fields, so a misspelt field fails loudly with its name in the error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal, Self, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Side = Literal["buy", "sell"]
"""Order side (ccxt ``order['side']``)."""

PositionSide = Literal["long", "short"]
"""Position side (ccxt ``position['side']``), one-way mode."""

OrderStatus = Literal["open", "closed", "canceled", "rejected", "expired"]
"""ccxt's unified order status; ``closed`` means fully filled."""

ClosureReason = Literal[
    "stop_loss",  # our stop-loss (or the attached one) triggered on the venue
    "take_profit",  # our take-profit triggered
    "trailing_stop",  # a native trailing stop triggered
    "manual",  # closed on the venue by someone else (web UI, another bot)
    "liquidation",  # the venue liquidated the position
    "adl",  # auto-deleveraging
    "reduce_only_close",  # our own reduce-only close (strategy exit, stop moved past the mark)
    "rollback",  # our rollback of a failed atomic open
    "reconcile",  # the venue had no such position when the reconciler looked
    "position_gone",  # a venue answer said "no position" (e.g. Bybit 10001 zero position)
    "unknown",  # the venue reported the position flat without telling why
]
"""Why a position left the book.  Exactly one closure is fired per position, whatever noticed it first."""

Capability = Literal[
    "attached_stop_on_entry",  # the stop-loss rides on the entry order itself (Bybit v5 create with stopLoss)
    "stop_before_entry",  # a stop may rest before the entry fills, so no naked window (not Binance: -4509)
    "amend_stop_in_place",  # an existing stop can be moved without cancel + create (Bybit trading-stop)
    "native_trailing_stop",  # the venue runs a trailing stop itself (TRAILING_STOP_MARKET, trailingStop)
]
"""Optional driver abilities.  The engine picks the safest path a venue declares; the contract suite
checks every declared one and skips, with a reason, every undeclared one."""

CAPABILITIES: tuple[str, ...] = Capability.__args__  # type: ignore[attr-defined]

# Upper bounds far above any real value: a hostile or corrupt frame ("pa": "1e999999") is a validation error
# where it is decoded, never a size the book adopts and the database cannot store (issue 14).
MAX_AMOUNT = Decimal("1e15")
MAX_SIGNAL_AT_MS = 366 * 24 * 3600 * 1000  # a signal is due within a year of the run's start
Price = Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False, description="price in quote currency")]
Contracts = Annotated[Decimal, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False, description="size in contracts")]
#: a position's or an entry's size: more than nothing, within the bounds of :data:`Contracts`
OpenContracts = Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False, description="size in contracts")]
TimestampMs = Annotated[int, Field(ge=0, lt=2**53, description="milliseconds since the Unix epoch, UTC")]


def now_ms() -> int:
    """Wall-clock time in milliseconds since the Unix epoch, UTC."""
    return time.time_ns() // 1_000_000


def close_side(position_side: PositionSide) -> Side:
    """The order side that reduces a position of ``position_side``.

    :raises ValueError: for anything but ``long`` / ``short`` (never guess a side: docs/incidents.md I-3).
    """
    if position_side == "long":
        return "sell"
    if position_side == "short":
        return "buy"
    raise ValueError(f"cannot derive a close side from position side {position_side!r}")


def entry_side(position_side: PositionSide) -> Side:
    """The order side that opens (or increases) a position of ``position_side``.

    :raises ValueError: for anything but ``long`` / ``short``.
    """
    if position_side == "long":
        return "buy"
    if position_side == "short":
        return "sell"
    raise ValueError(f"cannot derive an entry side from position side {position_side!r}")


def in_range(value: Decimal, low: Decimal = Decimal(0), high: Decimal = MAX_AMOUNT) -> bool:
    """``low < value <= high`` and finite (the defaults: the bounds of :data:`Price`).  A hot path checks
    decoded values with it before :meth:`Model.trusted`; a value it refuses goes to the validating
    constructor instead, which raises the field's own error."""
    return value.is_finite() and low < value <= high


class Model(BaseModel):
    """Base: frozen, unknown fields rejected, Decimal kept exact in JSON (as strings)."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    @classmethod
    def trusted(cls, values: dict[str, Any]) -> Self:
        """An instance from ``values`` (field name → value) that are already of their fields' types and within
        their constraints (fields of another validated model, constants, or decoded values the caller has
        checked against the same bounds, :func:`in_range`), built without validating them again: the hot path
        of a snapshot of 10,000 positions.  Absent fields take their defaults; model validators do not run
        (the caller establishes what they check).  Anything unchecked goes through the validating constructor.
        Not pydantic's ``model_construct``: it does the same without the checks below and, measured here, costs
        about twice a full validation (17.8 against 8.8 µs for a :class:`Position`).

        :raises TypeError: a required field is absent, or a name is not a field (a misspelt name still fails
            loudly).
        """
        template, checked = _TRUSTED.get(cls) or _trusted_spec(cls)
        # The names given are checked once per tuple of names (a decoder gives the same ones every row); the
        # check also yields the field-name set pydantic keeps (model_fields_set): for a frozen model one set
        # shared by every instance built from the same names, not ~700 bytes each (at 10,000 positions the
        # allocations, not the checks, are the cost).  Pydantic changes the set in place only on assignment,
        # which a frozen model refuses, and model_copy copies it first.
        names = tuple(values)
        known = checked.get(names) or _check_names(cls, names)
        fields_set, factories = known
        data = template.copy()  # field order, as the validating constructor leaves it
        data.update(values)
        if factories:
            for name, factory in factories:
                data[name] = factory()
        instance = _new(cls)
        _set(instance, "__dict__", data)
        _set(instance, "__pydantic_fields_set__", fields_set if fields_set is not None else set(names))
        _set(instance, "__pydantic_extra__", None)
        _set(instance, "__pydantic_private__", None)
        return instance


_set, _new = object.__setattr__, object.__new__
#: per model class: every field with its static default (``None`` for a required one or a factory's), and the
#: tuples of names :meth:`Model.trusted` has accepted, each with its shared field-name set (``None``: not
#: frozen, a set each) and the default factories of the fields it leaves out
_Known = tuple[set[str] | None, tuple[tuple[str, Callable[[], Any]], ...]]
_Spec = tuple[dict[str, Any], dict[tuple[str, ...], _Known]]
_TRUSTED: dict[type, _Spec] = {}


def _trusted_spec(cls: type[Model]) -> _Spec:
    fields = cls.model_fields
    template = {name: None if f.is_required() or f.default_factory else f.default for name, f in fields.items()}
    spec: _Spec = (template, {})
    _TRUSTED[cls] = spec
    return spec


def _check_names(cls: type[Model], names: tuple[str, ...]) -> _Known:
    """What :meth:`Model.trusted` needs of ``names`` once they are known to be fields, all the required
    ones among them.  :raises TypeError: otherwise."""
    fields, given = cls.model_fields, set(names)
    unknown = sorted(given - fields.keys())
    missing = sorted(name for name, f in fields.items() if f.is_required() and name not in given)
    if unknown or missing:
        raise TypeError(f"{cls.__name__}.trusted: unknown {unknown}, missing {missing}")
    factories = tuple((name, cast(Callable[[], Any], f.default_factory))
                      for name, f in fields.items() if f.default_factory and name not in given)
    known: _Known = (given if cls.model_config.get("frozen") else None, factories)
    _TRUSTED[cls][1][names] = known
    return known


class TrailingSpec(Model):
    """How a position's stop trails the mark price.

    :ivar activation_price: the stop starts trailing once the mark price reaches this price (quote
        currency); ``None`` trails from the start.
    :ivar callback_rate: distance kept between the best mark price seen and the stop, in percent
        (``Decimal("0.5")`` = 0.5 %), Binance's ``callbackRate`` convention.
    """

    activation_price: Price | None = None
    callback_rate: Annotated[Decimal, Field(gt=0, le=10)]


class TrailingLimits(Model):
    """The trailing stops a venue runs itself (capability ``native_trailing_stop``), as its docs bound them.

    :ivar min_callback_rate / max_callback_rate: the callback rates it accepts, in percent (Binance
        ``callbackRate`` 0.1 … 10, docs/conformance.md B25; Bybit documents no bound on its price distance
        but one tick, which the driver checks when placing).
    """

    min_callback_rate: Annotated[Decimal, Field(ge=0)]
    max_callback_rate: Annotated[Decimal, Field(gt=0)]

    def fits(self, trailing: TrailingSpec) -> bool:
        """Whether the venue can run ``trailing`` as it is."""
        return self.min_callback_rate <= trailing.callback_rate <= self.max_callback_rate


class OrderIntent(Model):
    """What we mean to do, persisted *before* the order is submitted (docs/incidents.md I-3).

    The rollback of a failed open is computed from this record plus observed fills, never from a
    venue response field.

    :ivar side: the *position* side to open (``long`` / ``short``); :attr:`order_side` derives ``buy``/``sell``.
    :ivar contracts: requested size in contracts (> 0).
    :ivar stop_loss: stop-loss trigger price; required, a position is never opened unprotected.
    :ivar client_order_id: our id for the entry order, used to resolve an unknown outcome.
    """

    account: str = "default"
    venue: str
    symbol: str
    side: PositionSide
    contracts: OpenContracts
    stop_loss: Price
    take_profit: Price | None = None
    trailing: TrailingSpec | None = None
    client_order_id: Annotated[str, Field(min_length=1, max_length=36)]
    created_at: TimestampMs = Field(default_factory=now_ms)

    @property
    def order_side(self) -> Side:
        """The entry order's side."""
        return entry_side(self.side)

    @model_validator(mode="after")
    def _stop_on_the_losing_side(self) -> OrderIntent:
        if self.take_profit is not None:
            if self.side == "long" and self.take_profit <= self.stop_loss:
                raise ValueError("take_profit must be above stop_loss for a long")
            if self.side == "short" and self.take_profit >= self.stop_loss:
                raise ValueError("take_profit must be below stop_loss for a short")
        return self


class Order(Model):
    """A complete order: every field the engine relies on is established, none is guessed.

    Produced by the session operation ``normalize_order`` (:class:`~framework.protocols.DriverSession`); a
    response lacking side, amount or status is completed from the venue or rejected with
    :class:`~framework.errors.OrderIncomplete`.

    :ivar id: the venue's order id.
    :ivar amount: ordered size in contracts.
    :ivar filled: filled size in contracts (``0 <= filled <= amount``).
    :ivar average: average fill price, ``None`` when nothing filled.
    :ivar trigger_price: trigger of a conditional order, compared with the mark price.
    :ivar timestamp: when the venue created the order (ms, UTC).
    """

    venue: str
    symbol: str
    id: str
    client_order_id: str | None = None
    side: Side
    type: str = "market"
    amount: Contracts
    filled: Contracts = Decimal(0)
    average: Price | None = None
    status: OrderStatus
    reduce_only: bool = False
    trigger_price: Price | None = None
    timestamp: TimestampMs | None = None

    @model_validator(mode="after")
    def _filled_within_amount(self) -> Order:
        if self.filled > self.amount:
            raise ValueError(f"filled {self.filled} exceeds amount {self.amount}")
        return self

    @property
    def remaining(self) -> Decimal:
        """Contracts not yet filled."""
        return self.amount - self.filled


class Position(Model):
    """An open one-way position.

    :ivar contracts: absolute size in contracts (> 0); a flat position is not a ``Position``.
    :ivar entry_price: average entry price.
    :ivar stop_loss: trigger price of the resting stop, ``None`` when unprotected.
    """

    account: str = "default"
    venue: str
    symbol: str
    side: PositionSide
    contracts: OpenContracts
    entry_price: Price
    mark_price: Price | None = None
    unrealized_pnl: Decimal | None = None
    realized_pnl: Decimal | None = None
    stop_loss: Price | None = None
    take_profit: Price | None = None
    opened_at: TimestampMs | None = None
    updated_at: TimestampMs = Field(default_factory=now_ms)


class StopLoss(Model):
    """A resting protective trigger on the venue (stop-loss, take-profit or trailing stop).

    :ivar side: side of the *position* it protects.
    :ivar trigger_price: mark price at which it fires (quote currency).
    :ivar order_id: the venue's order id; ``None`` for a position-attached stop (Bybit trading-stop).
    :ivar contracts: size it closes; ``None`` means "the whole position" (closePosition / attached).
    """

    venue: str
    symbol: str
    side: PositionSide
    kind: Literal["stop_loss", "take_profit", "trailing_stop"] = "stop_loss"
    trigger_price: Price
    order_id: str | None = None
    contracts: Contracts | None = None
    placed_at: TimestampMs = Field(default_factory=now_ms)

    @property
    def attached(self) -> bool:
        """True when the stop lives on the position rather than as a separate order."""
        return self.order_id is None


class Verification(Model):
    """The answer to "did this entry produce a position?" (driver hook ``verify_position``).

    :ivar outcome: ``confirmed`` (a position exists, with ``contracts`` filled), ``absent`` (the venue
        says the order was rejected / cancelled with nothing filled), ``unknown`` (no source could tell
        within the budget: *not* the same as absent, docs/incidents.md I-3).
    :ivar source: which source decided: ``stream``, ``order``, ``rest`` or ``none``.
    :ivar elapsed_ms: time spent deciding.
    """

    outcome: Literal["confirmed", "absent", "unknown"]
    source: Literal["stream", "order", "rest", "none"]
    contracts: Contracts = Decimal(0)
    entry_price: Price | None = None
    elapsed_ms: int = 0
    detail: str = ""

    @model_validator(mode="after")
    def _confirmed_has_size(self) -> Verification:
        if self.outcome == "confirmed" and self.contracts <= 0:
            raise ValueError("a confirmed verification needs contracts > 0")
        return self


class PositionEvent(Model):
    """A lifecycle event about one position, as broadcast to ``on_position_*`` listeners.

    :ivar event: ``opened``, ``updated`` or ``closed``.
    :ivar contracts: size after the event (0 for ``closed``).
    :ivar price: close price for ``closed``; the latest fill or mark price otherwise.
    :ivar reason: for ``closed``, why (:data:`ClosureReason`); for others, what changed.
    :ivar realized_pnl: realized PnL of the closure, quote currency, when the venue told us.
    :ivar timestamp: when the venue says it happened (ms, UTC); ``observed_at``: when we learned it.
    :ivar source: what noticed it: ``stream``, ``order``, ``reconcile``, ``error``, ``engine``, ``replay``.
    """

    event: Literal["opened", "updated", "closed"]
    account: str = "default"
    venue: str
    symbol: str
    side: PositionSide
    contracts: Contracts
    entry_price: Price | None = None
    price: Price | None = None
    reason: str = ""
    realized_pnl: Decimal | None = None
    timestamp: TimestampMs = Field(default_factory=now_ms)
    observed_at: TimestampMs = Field(default_factory=now_ms)
    source: str = "engine"


class StopEvent(Model):
    """A stop was placed, moved or removed (``on_stop_moved``).

    :ivar previous: trigger price before the move, ``None`` when newly placed.
    :ivar current: trigger price now resting, ``None`` when removed.
    :ivar unprotected_ms: how long, as seen by the client, no stop rested (0 for amend / new-before-cancel).
    """

    account: str = "default"
    venue: str
    symbol: str
    side: PositionSide
    previous: Price | None
    current: Price | None
    order_id: str | None = None
    unprotected_ms: int = 0
    timestamp: TimestampMs = Field(default_factory=now_ms)


class Alert(Model):
    """Something a human should know about (``on_alert``)."""

    level: Literal["info", "warning", "critical"]
    message: str
    venue: str | None = None
    symbol: str | None = None
    timestamp: TimestampMs = Field(default_factory=now_ms)


class Signal(Model):
    """A request from a strategy: open a position, or close one.

    One JSON object per line in a signal file (see README "Signal format")::

        {"at_ms": 60000, "venue": "binance", "symbol": "XRP/USDT:USDT", "action": "open", "side": "long",
         "contracts": "20", "stop_loss_pct": "1.5", "take_profit_pct": "3",
         "trailing": {"activation_pct": "0.5", "callback_rate": "0.5"}}

    :ivar at_ms: when to act, in ms since the start of the run (wall clock).
    :ivar account: the account label it is for (``FRAMEWORK_ACCOUNT``, or a ``label`` of an accounts file);
        ``None``: the one account the run manages on ``venue`` (an accounts file with several on that venue
        needs it).
    :ivar action: ``open``; ``close`` (our reduce-only close, reason ``reduce_only_close``); or
        ``manual_close`` — demo only, emulated venues only: someone closes the position on the venue's
        web UI, which the framework must notice (reason ``manual``).
    :ivar stop_loss / take_profit: absolute trigger prices; or ``*_pct``: percent from the entry mark price.
    :ivar trailing_activation_pct / trailing_callback_rate: trail the stop once the mark price moved this
        percent in our favour, keeping ``callback_rate`` percent behind the best mark price.
    """

    at_ms: Annotated[int, Field(ge=0, le=MAX_SIGNAL_AT_MS)] = 0
    venue: Annotated[str, Field(min_length=1, max_length=64)]
    account: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    symbol: Annotated[str, Field(min_length=1, max_length=64)]
    action: Literal["open", "close", "manual_close"] = "open"
    side: PositionSide | None = None
    contracts: Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT, decimal_places=18, allow_inf_nan=False)] | None = None
    stop_loss: Price | None = None
    stop_loss_pct: Annotated[Decimal, Field(gt=0, lt=100)] | None = None
    take_profit: Price | None = None
    take_profit_pct: Annotated[Decimal, Field(gt=0, le=10_000)] | None = None
    trailing_activation_pct: Annotated[Decimal, Field(ge=0)] | None = None
    trailing_callback_rate: Annotated[Decimal, Field(gt=0, le=10)] | None = None

    @model_validator(mode="after")
    def _open_is_complete(self) -> Signal:
        if self.action == "open":
            missing = [name for name in ("side", "contracts") if getattr(self, name) is None]
            if self.stop_loss is None and self.stop_loss_pct is None:
                missing.append("stop_loss or stop_loss_pct")
            if missing:
                raise ValueError(f"an open signal needs {', '.join(missing)}")
        return self


# --- what a private-stream decoder emits -------------------------------------------------------------


class PositionUpdate(Model):
    """The venue's view of one symbol's position, decoded from a stream frame or a REST snapshot.

    ``contracts == 0`` (with ``side=None``) means flat: Binance ``"pa":"0"``, Bybit ``"size":"0"`` with
    ``"side":""``.  ``sequence`` orders updates of one symbol (Bybit ``seq``; Binance transaction time
    ``T``); the PositionBook ignores an update older than the last one it applied.
    """

    kind: Literal["position"] = "position"
    venue: str
    symbol: str
    side: PositionSide | None
    contracts: Contracts
    entry_price: Price | None = None
    mark_price: Price | None = None
    realized_pnl: Decimal | None = None
    sequence: int
    timestamp: TimestampMs

    @model_validator(mode="after")
    def _flat_has_no_side(self) -> PositionUpdate:
        if self.contracts > 0 and self.side is None:
            raise ValueError("side is required when contracts > 0")
        return self


class OrderUpdate(Model):
    """An order's new state, decoded from a stream frame (Binance ``ORDER_TRADE_UPDATE`` /
    ``ALGO_UPDATE``, Bybit ``order`` / ``execution``).

    :ivar origin: what kind of order it is, so a closing fill can be attributed: ``stop_loss``,
        ``take_profit``, ``trailing_stop``, ``liquidation``, ``adl`` or ``order``.
    :ivar last_fill_price / last_fill_amount: the fill this update reports, if any.
    """

    kind: Literal["order"] = "order"
    order: Order
    origin: Literal["stop_loss", "take_profit", "trailing_stop", "liquidation", "adl", "order"] = "order"
    last_fill_price: Price | None = None
    last_fill_amount: Contracts = Decimal(0)
    realized_pnl: Decimal | None = None
    timestamp: TimestampMs


class MarkPrice(Model):
    """A mark-price tick (Binance ``markPriceUpdate``, Bybit ``tickers`` ``markPrice``)."""

    kind: Literal["mark"] = "mark"
    venue: str
    symbol: str
    price: Price
    timestamp: TimestampMs


StreamEvent = Annotated[PositionUpdate | OrderUpdate | MarkPrice, Field(discriminator="kind")]
"""Anything a decoder yields."""


class VenueSnapshot(Model):
    """One consistent look at a venue: open positions and resting orders (one REST call per kind).

    :ivar stops: protective triggers found, conditional orders and position-attached stops alike.
    :ivar rest_calls: how many REST calls taking this snapshot cost.
    """

    venue: str
    account: str = "default"
    positions: list[Position]
    open_orders: list[Order] = Field(default_factory=list)
    stops: list[StopLoss] = Field(default_factory=list)
    taken_at: TimestampMs = Field(default_factory=now_ms)
    rest_calls: int = 0


class MarketLimits(Model):
    """The smallest order a venue takes on one symbol (session operation ``market_limits``), from its market
    listing (Binance ``GET /fapi/v1/exchangeInfo`` LOT_SIZE / MIN_NOTIONAL, Bybit
    ``GET /v5/market/instruments-info`` ``lotSizeFilter``), as ccxt loaded it.

    :ivar min_contracts: minimum order size in contracts; ``contract_step``: sizes are multiples of it.
    :ivar min_notional: minimum contracts × price in the quote currency (``None`` when the venue sets none).
    :ivar price_tick: prices are multiples of it (quote currency).
    """

    symbol: str
    min_contracts: Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT)]
    contract_step: Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT)]
    price_tick: Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT)]
    min_notional: Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT)] | None = None


class DriverInfo(Model):
    """What a driver plugin says about itself (driver hook ``driver_info``)."""

    venue: str
    capabilities: frozenset[Capability] = frozenset()
    description: str = ""
    trailing_limits: TrailingLimits | None = None  # with ``native_trailing_stop``: what the venue's trail accepts

    @field_validator("capabilities", mode="before")
    @classmethod
    def _known_capabilities(cls, value: Any) -> Any:
        unknown = set(value or ()) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {list(CAPABILITIES)}")
        return value


class DriverConfig(Model):
    """Where and how a driver connects.

    With ``rest_url`` / ``ws_url`` set the driver talks to that endpoint (the emulator over loopback);
    otherwise to the real venue (``testnet`` selects its test network).  Secrets are ``SecretStr``:
    they never appear in a repr, a log or an error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    account: str = "default"
    api_key: SecretStr
    api_secret: SecretStr
    rest_url: str | None = None
    ws_url: str | None = None
    testnet: bool = False
    verify_budget_ms: int = 10_000
    options: dict[str, Any] = Field(default_factory=dict)
    #: set by the engine when it runs the account under a lease: the
    #: :class:`~framework.driverkit.RequestFence` a driver hands to :func:`~framework.driverkit.fence_requests`
    #: with its ccxt client (``None``: no lease).  Never serialized.
    fence: Any = Field(default=None, exclude=True, repr=False)
