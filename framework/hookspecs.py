"""Every hook of the framework, typed and documented (pluggy project name ``framework``).

There are two kinds.

**Driver hooks** (``firstresult=True``) are answered by exactly one exchange plugin.  The core calls them
through a per-venue caller (``pm.subset_hook_caller``), so an implementation never receives another
venue's call and never has to ask "is this for me?".  Driver hooks that talk to the venue are
coroutines: implement them with ``async def``; the core awaits the result.  Their first argument,
``conn``, is whatever the same plugin returned from :func:`connect`.

**Lifecycle hooks** are broadcast to every registered plugin (store, trailing manager, metrics, alerts,
user plugins).  An implementation may be a plain function or a coroutine function; exceptions in a
listener are logged and alerted, never allowed to stop the close path.

Writing a driver: implement the hooks below in a module, point an entry point of group ``framework`` at
it, and run the contract suite (``pytest --pyargs contract_tests --plugin NAME``).
"""

# A specification's body is its docstring: no hook here is ever called.
# mypy: disable-error-code="empty-body"
from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from framework.driver import EntryEvidence
    from framework.marksockets import WatchedSymbols
    from framework.models import (
        Alert,
        DriverConfig,
        DriverInfo,
        MarketLimits,
        Order,
        OrderIntent,
        PositionEvent,
        PositionSide,
        StopEvent,
        StopLoss,
        TrailingSpec,
        VenueSnapshot,
        Verification,
    )
    from framework.protocols import StreamDecoder, StreamSink, VenueHarness

PROJECT = "framework"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# Hook names by kind: the plugin manager and the documentation tests read these.
DRIVER_HOOKS = (
    "driver_info",
    "connect",
    "disconnect",
    "create_entry",
    "normalize_order",
    "set_stop_loss",
    "set_take_profit",
    "move_stop_loss",
    "set_trailing_stop",
    "cancel_stop_loss",
    "verify_position",
    "close_position",
    "fetch_order",
    "fetch_snapshot",
    "market_limits",
    "run_stream",
    "watch_mark_prices",
    "make_decoder",
    "venue_harness",
)
LIFECYCLE_HOOKS = (
    "on_order_submitted",
    "on_position_open",
    "on_position_updated",
    "on_position_closed",
    "on_stop_moved",
    "on_stream_state",
    "on_reconciled",
    "on_alert",
)


# --- driver hooks: one venue answers -----------------------------------------------------------------


@hookspec(firstresult=True)
def driver_info() -> DriverInfo:
    """Describe this driver: its venue name and the capabilities it declares.

    Capabilities are data (:data:`framework.models.Capability`): the engine chooses the safest path the
    venue supports, and the contract suite tests every declared capability and skips the others.

    :returns: a :class:`~framework.models.DriverInfo`.
    """


@hookspec(firstresult=True)
async def connect(config: DriverConfig) -> Any:
    """Create this venue's clients (ccxt REST, stream settings) and load its markets.

    :param config: endpoint and credentials; with ``rest_url`` / ``ws_url`` set, talk to that emulator.
    :returns: an opaque connection object, passed back as ``conn`` to every other driver hook.
    :raises framework.errors.VenueError: when the venue cannot be reached or rejects the credentials.
    """


@hookspec(firstresult=True)
async def disconnect(conn: Any) -> bool:
    """Close every client and socket held by ``conn``.

    :param conn: the object returned by :func:`connect`.
    :returns: ``True``.
    """


@hookspec(firstresult=True)
async def create_entry(conn: Any, intent: OrderIntent) -> dict[str, Any]:
    """Submit the market order that opens ``intent``, tagged with ``intent.client_order_id``.

    The intent is already persisted when this is called.  Where the driver declares
    ``attached_stop_on_entry``, the stop-loss (and take-profit) ride on the entry order.

    :param conn: the driver's connection.
    :param intent: venue, unified symbol, position side, contracts, stop-loss, client order id.
    :returns: the raw order as the venue / ccxt gave it, possibly minimal (Bybit v5 answers only ids);
        the core passes it to :func:`normalize_order`.
    :raises framework.errors.OrderRejected: the venue refused the order (nothing filled).
    :raises framework.errors.OutcomeUnknown: no answer; the order may exist (resolve by client order id).
    """


@hookspec(firstresult=True)
async def normalize_order(conn: Any, raw: dict[str, Any], intent: OrderIntent | None) -> Order:
    """Turn a ccxt order (or a raw venue payload) into a complete :class:`~framework.models.Order`.

    A response missing side, amount, filled or status is completed from the venue by order id (Bybit
    ``/v5/order/realtime``, Binance ``GET /fapi/v1/order``).  ``intent`` may be used to check the
    answer, never to fill in what the venue did not say.

    :param conn: the driver's connection.
    :param raw: ccxt's order dict (``info`` holds the venue payload) or the venue payload itself.
    :param intent: the persisted intent this order was created for, if any.
    :returns: an order whose ``side`` is ``buy`` or ``sell``, with amount, filled and status known.
    :raises framework.errors.OrderIncomplete: when side, amount or status cannot be established —
        never a guessed value such as ``'unknown'`` (docs/incidents.md I-3).
    """


@hookspec(firstresult=True)
async def set_stop_loss(
    conn: Any, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
) -> StopLoss:
    """Place the stop-loss protecting a position, without looking the position up over REST.

    Bybit: ``POST /v5/position/trading-stop``; Binance: ``POST /fapi/v1/algoOrder`` STOP_MARKET with
    ``closePosition=true``.  Must succeed right after a fill even while REST positions lag (I-4).

    :param conn: the driver's connection.
    :param symbol: unified symbol.
    :param side: side of the position to protect.
    :param contracts: position size in contracts (for drivers that need a quantity).
    :param trigger_price: mark price that triggers the stop (quote currency).
    :returns: the resting :class:`~framework.models.StopLoss`.
    :raises framework.errors.PositionGone: the venue says there is no position (closed, do not retry).
    :raises framework.errors.WouldTriggerImmediately: the mark price is already past ``trigger_price``.
    """


@hookspec(firstresult=True)
async def set_take_profit(
    conn: Any, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal
) -> StopLoss:
    """Place a take-profit that closes the whole position when the mark price reaches ``trigger_price``.

    :param conn: the driver's connection.
    :param symbol: unified symbol.
    :param side: side of the position.
    :param contracts: position size in contracts.
    :param trigger_price: mark price that triggers the take-profit (quote currency).
    :returns: the resting trigger, ``kind='take_profit'``.
    :raises framework.errors.PositionGone: the venue says there is no position.
    :raises framework.errors.WouldTriggerImmediately: the mark price is already past ``trigger_price``.
    """


@hookspec(firstresult=True)
async def move_stop_loss(conn: Any, stop: StopLoss, trigger_price: Decimal) -> StopLoss:
    """Move a resting stop to ``trigger_price`` leaving no moment without a stop on the venue.

    Amend in place where the venue allows it (Bybit trading-stop); otherwise place the new stop first,
    then cancel the old one, checking the position is still open before and after (docs/incidents.md I-5).

    :param conn: the driver's connection.
    :param stop: the stop currently resting.
    :param trigger_price: the new trigger price (quote currency).
    :returns: the stop now resting.
    :raises framework.errors.PositionGone: the position is gone; no new stop was left behind.
    :raises framework.errors.WouldTriggerImmediately: the new trigger is already crossed; the old
        stop is still resting.
    """


@hookspec(firstresult=True)
async def set_trailing_stop(
    conn: Any, symbol: str, side: PositionSide, contracts: Decimal, trailing: TrailingSpec, reference_price: Decimal
) -> StopLoss:
    """Have the venue trail a stop behind the best mark price itself (capability ``native_trailing_stop``),
    *beside* the position's fixed stop-loss, which stays as the floor: the position is never without a stop.

    Binance: ``POST /fapi/v1/algoOrder`` ``TRAILING_STOP_MARKET`` (``callbackRate`` in percent,
    ``activatePrice``, reduce-only for ``contracts``, on the mark price).  Bybit: ``trailingStop`` (a price
    distance: ``callback_rate`` percent of ``activation_price``, else of ``reference_price``) and
    ``activePrice`` on ``/v5/position/trading-stop``, which leaves ``stopLoss`` in place.  The engine calls it
    only when ``trailing`` fits :attr:`~framework.models.DriverInfo.trailing_limits`.

    :param conn: the driver's connection.
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


@hookspec(firstresult=True)
async def cancel_stop_loss(conn: Any, stop: StopLoss) -> bool:
    """Remove a resting stop (after a close, or when replacing a leftover one).

    :param conn: the driver's connection.
    :param stop: the stop to remove.
    :returns: ``True`` when it was removed, ``False`` when the venue no longer had it.
    """


@hookspec(firstresult=True)
async def verify_position(
    conn: Any, intent: OrderIntent, order: Order, budget_ms: int, evidence: EntryEvidence
) -> Verification:
    """Decide whether the entry ``order`` produced a position, from several sources, within a budget.

    **The core answers this hook** (``framework.engine.verification``, a built-in plugin called last):
    the stream as the PositionBook recorded it, the order's status by id, then a venue snapshot's
    positions.  REST lag is not absence: ``absent`` needs the venue to say the order was rejected or
    cancelled with nothing filled; otherwise, at the end of the budget, the answer is ``unknown``.  A
    driver implements it only to add a source its venue has (it may call
    :func:`framework.engine.verification.verify_entry` for the rest), or returns ``None`` to defer.

    :param conn: the driver's connection.
    :param intent: the persisted intent.
    :param order: the normalised entry order.
    :param budget_ms: how long the sources may be asked, in milliseconds.
    :param evidence: the venue's driver handle and its stream state (the PositionBook).
    :returns: a :class:`~framework.models.Verification`.
    """


@hookspec(firstresult=True)
async def close_position(
    conn: Any, symbol: str, side: PositionSide, contracts: Decimal, client_order_id: str
) -> Order:
    """Close ``contracts`` of a ``side`` position with a reduce-only market order.

    The caller derives ``side`` from the persisted intent and the observed position, never from an
    unvalidated response field (docs/incidents.md I-3).

    :param conn: the driver's connection.
    :param symbol: unified symbol.
    :param side: side of the position being closed (the order side is its opposite).
    :param contracts: contracts to close.
    :param client_order_id: our id for the closing order.
    :returns: the complete closing order.
    :raises framework.errors.PositionGone: the venue has nothing to reduce (already flat).
    """


@hookspec(firstresult=True)
async def fetch_order(
    conn: Any, symbol: str, order_id: str | None, client_order_id: str | None
) -> Order:
    """Fetch one order by venue id or by our client order id, to resolve an unknown outcome.

    :param conn: the driver's connection.
    :param symbol: unified symbol.
    :param order_id: the venue's id, if known.
    :param client_order_id: our id, if the venue id is not known.
    :returns: the complete order.
    :raises framework.errors.OrderNotFound: the venue has no such order.
    """


@hookspec(firstresult=True)
async def fetch_snapshot(conn: Any) -> VenueSnapshot:
    """Take one snapshot of open positions and resting orders: one REST call per kind, whatever the
    number of positions (reconciliation backstop).

    :param conn: the driver's connection.
    :returns: a :class:`~framework.models.VenueSnapshot`.
    """


@hookspec(firstresult=True)
def market_limits(conn: Any, symbol: str) -> MarketLimits:
    """The smallest order the venue takes on ``symbol``, from the markets loaded by :func:`connect`
    (no REST call): ``framework check`` trades exactly that size.

    :param conn: the driver's connection.
    :param symbol: unified symbol.
    :returns: a :class:`~framework.models.MarketLimits`.
    :raises framework.errors.VenueError: the venue lists no such market.
    """


@hookspec(firstresult=True)
async def run_stream(conn: Any, sink: StreamSink) -> None:
    """Run the private stream until cancelled: connect, authenticate, keep alive, reconnect with backoff.

    Every decoded :data:`~framework.models.StreamEvent` goes to ``sink.on_event``; after every
    (re)connect ``sink.on_connected(reconnect)`` is awaited so the core can take a snapshot; a malformed
    frame goes to ``sink.on_malformed`` and the stream goes on.  A closed position (Binance
    ``"pa":"0"``, Bybit ``"size":"0"``) is always delivered as a flat ``PositionUpdate``.

    The driver keeps no copy of the stream state: when ``sink`` also implements
    :class:`~framework.protocols.StreamEvidence` (the core's PositionBook does), the connection holds it
    while the stream runs (:func:`framework.driverkit.attach_stream_state`) and every liveness question
    (is the position known flat? did the stream show it open?) asks it.  Without it (another sink, or no
    stream running) nothing is "known flat": the driver asks the venue.

    :param conn: the driver's connection.
    :param sink: where events go (the core's PositionBook), and the stream evidence the driver asks.
    :returns: only when cancelled.
    """


@hookspec(firstresult=True)
async def watch_mark_prices(conn: Any, symbols: list[str] | WatchedSymbols, sink: StreamSink) -> None:
    """Stream mark prices of ``symbols`` to ``sink.on_event`` as :class:`~framework.models.MarkPrice`
    until cancelled (Binance ``<symbol>@markPrice@1s``, Bybit public ``tickers.<symbol>``).

    ``symbols`` may change while it runs (a :class:`~framework.marksockets.WatchedSymbols`: the engine adds
    and removes symbols as trailing positions come and go): follow it with the venue's subscribe /
    unsubscribe frames on the sockets already open, opening another socket only past the venue's
    per-connection limits (:class:`~framework.marksockets.MarkSocketPool`), never reconnecting for a change.

    :param conn: the driver's connection.
    :param symbols: unified symbols to watch, fixed (a list) or changing.
    :param sink: where ticks go.
    :returns: only when cancelled.
    """


@hookspec(firstresult=True)
def make_decoder() -> StreamDecoder:
    """Return a fresh private-stream decoder that works without a socket (replay, tests).

    :returns: an object with ``decode(raw: str | bytes) -> list[StreamEvent]``.
    """


@hookspec(firstresult=True)
def venue_harness(options: dict[str, Any]) -> VenueHarness:
    """Provide a venue for the contract suite: the plugin's emulator, or a live test account.

    :param options: suite options (``seed``, ``faults``; ``live=True`` for a testnet run).
    :returns: an async context manager (:class:`~framework.driver.VenueHarness`).
    """


# --- lifecycle hooks: broadcast ----------------------------------------------------------------------


@hookspec
def on_order_submitted(intent: OrderIntent) -> None:
    """An entry order is about to be submitted; its intent has been persisted.

    Broadcast before anything reaches the venue — before a ``stop_before_entry`` stop too — so a driver
    may listen for its own venue (``intent.venue``) to know that an entry is pending: the Binance driver
    uses it to tell a pre-entry close-position stop from a stop for a position that is gone.

    :param intent: the persisted intent.
    """


@hookspec
def on_position_open(event: PositionEvent) -> None:
    """A position is open and protected (atomic open succeeded) or was adopted by reconciliation.

    :param event: ``event == 'opened'``; ``source`` says how it was found.
    """


@hookspec
def on_position_updated(event: PositionEvent) -> None:
    """An open position changed size or entry price (partial close, added size).

    :param event: ``event == 'updated'`` with the new size.
    """


@hookspec
def on_position_closed(event: PositionEvent) -> None:
    """A position left the book.  Fired exactly once per position, whatever noticed it first.

    :param event: ``event == 'closed'`` with ``reason``, close ``price`` and ``realized_pnl`` when known.
    """


@hookspec
def on_stop_moved(event: StopEvent) -> None:
    """A stop was placed, moved or removed.

    :param event: previous and current trigger prices and the unprotected time seen by the client.
    """


@hookspec
def on_stream_state(venue: str, state: str, detail: str) -> None:
    """The private stream changed state.

    :param venue: venue name.
    :param state: ``connected``, ``reconnected``, ``disconnected`` or ``malformed_frame``.
    :param detail: human-readable detail (never a secret).
    """


@hookspec
def on_reconciled(venue: str, report: dict[str, Any]) -> None:
    """A reconciliation pass finished.

    :param venue: venue name.
    :param report: counts: ``closed``, ``adopted``, ``reprotected``, ``rest_calls``, ``elapsed_ms``.
    """


@hookspec
def on_alert(alert: Alert) -> None:
    """Something needs a human: an unprotected position, a failed rollback, a listener that raised.

    :param alert: level, message, venue and symbol.
    """
