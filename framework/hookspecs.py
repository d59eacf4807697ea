"""Every hook of the framework, typed and documented (pluggy project name ``framework``).

There are two kinds.

**Driver hooks** (``firstresult=True``) are answered by exactly one exchange plugin.  The core calls them
through a per-venue caller (``pm.subset_hook_caller``), so an implementation never receives another
venue's call and never has to ask "is this for me?".  They are the questions that are not about one
connection (:func:`driver_info`, :func:`make_decoder`, :func:`venue_harness`), :func:`connect`, and
:func:`verify_position` (answered by the core unless a driver adds a source).  :func:`connect` is a
coroutine returning a :class:`~framework.protocols.DriverSession`: the connection's operations (create an
entry, place / move / cancel a stop, close, fetch, stream, disconnect) are that object's methods, typed
once in the protocol (docs/architecture.md says why).

**Lifecycle hooks** are broadcast to every registered plugin (store, trailing manager, metrics, alerts,
user plugins).  An implementation may be a plain function or a coroutine function; exceptions in a
listener are logged and alerted, never allowed to stop the close path.

Writing a driver: implement the hooks below in a module (``connect`` returning a class that implements
:class:`~framework.protocols.DriverSession`), point an entry point of group ``framework`` at it, and run
the contract suite (``pytest --pyargs contract_tests --plugin NAME``).
"""

# A specification's body is its docstring: no hook here is ever called.
# mypy: disable-error-code="empty-body"
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from framework.models import (
        Alert,
        DriverConfig,
        DriverInfo,
        Order,
        OrderIntent,
        PositionEvent,
        StopEvent,
        Verification,
    )
    from framework.protocols import DriverSession, EntryEvidence, StreamDecoder, VenueHarness

PROJECT = "framework"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# Hook names by kind: the plugin manager and the documentation tests read these.
DRIVER_HOOKS = (
    "driver_info",
    "connect",
    "verify_position",
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
async def connect(config: DriverConfig) -> DriverSession:
    """Create this venue's clients (ccxt REST, stream settings), load its markets, return the connection.

    :param config: endpoint and credentials; with ``rest_url`` / ``ws_url`` set, talk to that emulator.
    :returns: the connection, whose methods are the per-connection operations
        (:class:`~framework.protocols.DriverSession`); it is passed back as ``session`` to
        :func:`verify_position`.
    :raises framework.errors.VenueError: when the venue cannot be reached or rejects the credentials.
    """


@hookspec(firstresult=True)
async def verify_position(
    session: DriverSession, intent: OrderIntent, order: Order, budget_ms: int, evidence: EntryEvidence
) -> Verification:
    """Decide whether the entry ``order`` produced a position, from several sources, within a budget.

    **The core answers this hook** (``framework.engine.verification``, a built-in plugin called last):
    the stream as the PositionBook recorded it, the order's status by id, then a venue snapshot's
    positions.  REST lag is not absence: ``absent`` needs the venue to say the order was rejected or
    cancelled with nothing filled; otherwise, at the end of the budget, the answer is ``unknown``.  A
    driver implements it only to add a source its venue has (it may call
    :func:`framework.engine.verification.verify_entry` for the rest), or returns ``None`` to defer.

    :param session: the venue connection :func:`connect` returned.
    :param intent: the persisted intent.
    :param order: the normalised entry order.
    :param budget_ms: how long the sources may be asked, in milliseconds.
    :param evidence: the venue's driver handle and its stream state (the PositionBook).
    :returns: a :class:`~framework.models.Verification`.
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
