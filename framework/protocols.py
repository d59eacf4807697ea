"""The protocols between the core and a driver plugin: one venue connection's operations
(:class:`DriverSession`, what hook ``connect`` returns), where a private stream delivers
(:class:`StreamSink`), how frames are decoded without a socket (:class:`StreamDecoder`), a venue the
contract suite can drive (:class:`VenueHarness`), and what the stream said as the core holds it
(:class:`StreamEvidence`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from framework.models import (
    DriverConfig,
    MarketLimits,
    Order,
    OrderIntent,
    OrderUpdate,
    PositionSide,
    PositionUpdate,
    StopLoss,
    StreamEvent,
    TrailingSpec,
    VenueSnapshot,
)

if TYPE_CHECKING:
    from framework.marksockets import WatchedSymbols
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


@runtime_checkable
class StreamEvidence(Protocol):
    """What the private stream said, as the core holds it (the venue's PositionBook).  A driver whose
    ``run_stream`` sink also implements it asks it its liveness questions (``framework.driverkit``)."""

    def last_update(self, symbol: str) -> PositionUpdate | None:
        """The latest position update applied for ``symbol``."""

    def opening_order(self, symbol: str, client_order_id: str) -> OrderUpdate | None:
        """The latest update of the entry order ``client_order_id`` seen while ``symbol`` is being opened."""

    async def wait_changed(self, symbol: str, timeout_s: float) -> None:
        """Return on the next stream update of ``symbol``, or after ``timeout_s`` seconds."""


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


@runtime_checkable
class DriverSession(Protocol):
    """One connection to a venue: what a driver's hook ``connect`` returns, and every operation the core
    asks of that connection.

    The core calls these through :class:`framework.driver.Driver`, which waits out a rate-limit pause
    before every REST operation and checks each answer's type against the return annotation here.  All
    are coroutines but :meth:`market_limits`, which reads what ``connect`` loaded.  A
    driver implements them as methods of its connection class (checked at ``connect``: a missing one is a
    :class:`~framework.errors.ConfigError` naming it).  Prices in quote currency, sizes in contracts,
    symbols unified (``XRP/USDT:USDT``).
    """

    async def create_entry(self, intent: OrderIntent) -> dict[str, Any]:
        """Submit the market order that opens ``intent``, tagged with ``intent.client_order_id``.

        The intent is already persisted when this is called.  Where the driver declares
        ``attached_stop_on_entry``, the stop-loss (and take-profit) ride on the entry order.

        :param intent: venue, unified symbol, position side, contracts, stop-loss, client order id.
        :returns: the raw order as the venue / ccxt gave it, possibly minimal (Bybit v5 answers only ids);
            the core passes it to :meth:`normalize_order`.
        :raises framework.errors.OrderRejected: the venue refused the order (nothing filled).
        :raises framework.errors.OutcomeUnknown: no answer; the order may exist (resolve by client order
            id).
        """
        ...

    async def normalize_order(self, raw: dict[str, Any], intent: OrderIntent | None = None) -> Order:
        """Turn a ccxt order (or a raw venue payload) into a complete :class:`~framework.models.Order`.

        A response missing side, amount, filled or status is completed from the venue by order id (Bybit
        ``/v5/order/realtime``, Binance ``GET /fapi/v1/order``).  ``intent`` may be used to check the
        answer, never to fill in what the venue did not say.

        :param raw: ccxt's order dict (``info`` holds the venue payload) or the venue payload itself.
        :param intent: the persisted intent this order was created for, if any.
        :returns: an order whose ``side`` is ``buy`` or ``sell``, with amount, filled and status known.
        :raises framework.errors.OrderIncomplete: when side, amount or status cannot be established —
            never a guessed value such as ``'unknown'`` (docs/incidents.md I-3).
        """
        ...

    async def set_stop_loss(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
    ) -> StopLoss:
        """Place the stop-loss protecting a position, without looking the position up over REST.

        Bybit: ``POST /v5/position/trading-stop``; Binance: ``POST /fapi/v1/algoOrder`` STOP_MARKET with
        ``closePosition=true``.  Must succeed right after a fill even while REST positions lag (I-4).

        :param symbol: unified symbol.
        :param side: side of the position to protect.
        :param contracts: position size in contracts (for drivers that need a quantity).
        :param trigger_price: mark price that triggers the stop (quote currency).
        :returns: the resting :class:`~framework.models.StopLoss`.
        :raises framework.errors.PositionGone: the venue says there is no position (closed, do not retry).
        :raises framework.errors.WouldTriggerImmediately: the mark price is already past
            ``trigger_price``.
        """
        ...

    async def set_take_profit(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
    ) -> StopLoss:
        """Place a take-profit that closes the whole position when the mark price reaches ``trigger_price``.

        :param symbol: unified symbol.
        :param side: side of the position.
        :param contracts: position size in contracts.
        :param trigger_price: mark price that triggers the take-profit (quote currency).
        :returns: the resting trigger, ``kind='take_profit'``.
        :raises framework.errors.PositionGone: the venue says there is no position.
        :raises framework.errors.WouldTriggerImmediately: the mark price is already past
            ``trigger_price``.
        """
        ...

    async def set_trailing_stop(
        self, symbol: str, side: PositionSide, contracts: Decimal, trailing: TrailingSpec, reference_price: Decimal
    ) -> StopLoss:
        """Have the venue trail a stop behind the best mark price itself (capability
        ``native_trailing_stop``), *beside* the position's fixed stop-loss, which stays as the floor: the
        position is never without a stop.

        Binance: ``POST /fapi/v1/algoOrder`` ``TRAILING_STOP_MARKET`` (``callbackRate`` in percent,
        ``activatePrice``, reduce-only for ``contracts``, on the mark price).  Bybit: ``trailingStop`` (a
        price distance: ``callback_rate`` percent of ``activation_price``, else of ``reference_price``) and
        ``activePrice`` on ``/v5/position/trading-stop``, which leaves ``stopLoss`` in place.  The engine
        calls it only when ``trailing`` fits :attr:`~framework.models.DriverInfo.trailing_limits`.

        :param symbol: unified symbol.
        :param side: side of the position.
        :param contracts: position size in contracts.
        :param trailing: callback rate (percent) and optional activation price (quote currency).
        :param reference_price: the mark price now (quote currency): where the trail starts without an
            activation price.
        :returns: the resting trailing stop, ``kind='trailing_stop'``, ``trigger_price`` where it would fire
            from the start (``callback_rate`` behind the activation / reference price).
        :raises framework.errors.PositionGone: the venue says there is no position.
        :raises framework.errors.WouldTriggerImmediately: the activation price is already passed.
        :raises framework.errors.OrderRejected: the venue refused the trail (its limits): nothing rests.
        """
        ...

    async def move_stop_loss(self, stop: StopLoss, trigger_price: Decimal) -> StopLoss:
        """Move a resting stop to ``trigger_price`` leaving no moment without a stop on the venue.

        Amend in place where the venue allows it (Bybit trading-stop); otherwise place the new stop first,
        then cancel the old one, checking the position is still open before and after
        (docs/incidents.md I-5).

        :param stop: the stop currently resting.
        :param trigger_price: the new trigger price (quote currency).
        :returns: the stop now resting.
        :raises framework.errors.PositionGone: the position is gone; no new stop was left behind.
        :raises framework.errors.WouldTriggerImmediately: the new trigger is already crossed; the old
            stop is still resting.
        """
        ...

    async def cancel_stop_loss(self, stop: StopLoss) -> bool:
        """Remove a resting stop (after a close, or when replacing a leftover one).

        :param stop: the stop to remove.
        :returns: ``True`` when it was removed, ``False`` when the venue no longer had it.
        """
        ...

    async def create_stop_loss_order(
        self, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal, client_order_id: str
    ) -> StopLoss:
        """Place one reduce-only stop-market order of its own (ccxt ``createStopLossOrder``), tagged with the
        caller's ``client_order_id`` exactly once: an answer that the id is taken is raised, never resolved
        to the order that exists (as :meth:`create_entry` and the stops do for a retry after a lost answer).

        It rests beside the position's stop-loss, closes at most ``contracts`` of the ``side`` position when
        the mark price reaches ``trigger_price``, and can never open or grow a position.  ``framework check``
        asks the venue's answer to a duplicate client order id with it, on an order that cannot trade while
        it rests.  Binance: ``POST /fapi/v1/algoOrder`` STOP_MARKET, ``reduceOnly``, ``workingType=MARK_PRICE``,
        ``clientAlgoId``; Bybit: ``POST /v5/order/create`` Market with ``triggerPrice``, ``triggerDirection``,
        ``triggerBy=MarkPrice``, ``reduceOnly``, ``orderLinkId``.

        :param symbol: unified symbol.
        :param side: side of the position it would reduce (the order side is its opposite).
        :param contracts: contracts it closes when triggered.
        :param trigger_price: mark price that triggers it (quote currency), on the protective side.
        :param client_order_id: the caller's id for it.
        :returns: the resting order as a :class:`~framework.models.StopLoss` with its ``order_id`` and
            ``contracts`` (remove it with :meth:`cancel_stop_loss`).
        :raises framework.errors.DuplicateOrderId: the venue refused it: an order already carries
            ``client_order_id`` (Binance -4116, Bybit 110072); nothing was placed.
        :raises framework.errors.PositionGone: the venue says there is no position to reduce.
        :raises framework.errors.WouldTriggerImmediately: the mark price is already past ``trigger_price``.
        :raises framework.errors.OutcomeUnknown: no answer; it may rest (look for ``client_order_id``).
        """
        ...

    async def close_position(
        self, symbol: str, side: PositionSide, contracts: Decimal, client_order_id: str
    ) -> Order:
        """Close ``contracts`` of a ``side`` position with a reduce-only market order.

        The caller derives ``side`` from the persisted intent and the observed position, never from an
        unvalidated response field (docs/incidents.md I-3).

        :param symbol: unified symbol.
        :param side: side of the position being closed (the order side is its opposite).
        :param contracts: contracts to close.
        :param client_order_id: our id for the closing order.
        :returns: the complete closing order.
        :raises framework.errors.PositionGone: the venue has nothing to reduce (already flat).
        """
        ...

    async def fetch_order(
        self, symbol: str, order_id: str | None = None, client_order_id: str | None = None
    ) -> Order:
        """Fetch one order by venue id or by our client order id, to resolve an unknown outcome.

        :param symbol: unified symbol.
        :param order_id: the venue's id, if known.
        :param client_order_id: our id, if the venue id is not known.
        :returns: the complete order.
        :raises framework.errors.OrderNotFound: the venue has no such order.
        """
        ...

    async def fetch_snapshot(self) -> VenueSnapshot:
        """Take one snapshot of open positions and resting orders: one REST call per kind, whatever the
        number of positions (reconciliation backstop).

        :returns: a :class:`~framework.models.VenueSnapshot`.
        """
        ...

    def market_limits(self, symbol: str) -> MarketLimits:
        """The smallest order the venue takes on ``symbol``, from the markets loaded by ``connect`` (no
        REST call): ``framework check`` trades exactly that size.

        :param symbol: unified symbol.
        :returns: a :class:`~framework.models.MarketLimits`.
        :raises framework.errors.VenueError: the venue lists no such market.
        """
        ...

    async def run_stream(self, sink: StreamSink) -> None:
        """Run the private stream until cancelled: connect, authenticate, keep alive, reconnect with
        backoff.

        Every decoded :data:`~framework.models.StreamEvent` goes to ``sink.on_event``; after every
        (re)connect ``sink.on_connected(reconnect)`` is awaited so the core can take a snapshot; a
        malformed frame goes to ``sink.on_malformed`` and the stream goes on.  A closed position (Binance
        ``"pa":"0"``, Bybit ``"size":"0"``) is always delivered as a flat ``PositionUpdate``.

        The driver keeps no copy of the stream state: when ``sink`` also implements
        :class:`StreamEvidence` (the core's PositionBook does), the connection holds it while the stream
        runs (:func:`framework.driverkit.attach_stream_state`) and every liveness question (is the
        position known flat? did the stream show it open?) asks it.  Without it (another sink, or no
        stream running) nothing is "known flat": the driver asks the venue.

        :param sink: where events go (the core's PositionBook), and the stream evidence the driver asks.
        :returns: only when cancelled.
        """
        ...

    async def watch_mark_prices(self, symbols: list[str] | WatchedSymbols, sink: StreamSink) -> None:
        """Stream mark prices of ``symbols`` to ``sink.on_event`` as :class:`~framework.models.MarkPrice`
        until cancelled (Binance ``<symbol>@markPrice@1s``, Bybit public ``tickers.<symbol>``).

        ``symbols`` may change while it runs (a :class:`~framework.marksockets.WatchedSymbols`: the engine
        adds and removes symbols as trailing positions come and go): follow it with the venue's subscribe /
        unsubscribe frames on the sockets already open, opening another socket only past the venue's
        per-connection limits (:class:`~framework.marksockets.MarkSocketPool`), never reconnecting for a
        change.

        :param symbols: unified symbols to watch, fixed (a list) or changing.
        :param sink: where ticks go.
        :returns: only when cancelled.
        """
        ...

    async def disconnect(self) -> None:
        """Close every client and socket of this connection.

        :returns: ``None``; the session is not used afterwards.
        """
        ...


@dataclass(frozen=True)
class EntryEvidence:
    """What hook ``verify_position`` may consult besides the venue connection.

    :ivar driver: the venue's operations as the core calls them (:class:`framework.driver.Driver`:
        rate-limit pause and answer checks included), for order status and snapshots.
    :ivar stream: the venue's stream state (the PositionBook).
    """

    driver: DriverSession
    stream: StreamEvidence
