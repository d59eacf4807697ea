"""An in-process, exchange-agnostic futures venue (one-way mode, linear USDT perpetuals).

The wire façades (``plugins/*/framework_*/emulator.py``, on :class:`framework.venue.wire.WireEmulator`)
translate Binance / Bybit REST and WebSocket to calls on :class:`Venue` and its events back to frames;
tests drive it and read ``venue.truth``.  The contract is ``docs/venue-api.md``.

:class:`Venue` is built in three layers, each its own module: the ledger (``ledger.py``: accounts, marks,
positions, balances, fills, events), orders (``orders.py``) and triggers (``triggers.py``); the records and
pure rules are in ``model.py`` (re-exported here).

Single-threaded: every method is synchronous, called from the asyncio loop; listeners are called
synchronously, in order, once the state change is complete.  Prices are ``Decimal`` in quote currency,
sizes ``Decimal`` contracts, times ms since the Unix epoch (UTC) from ``venue.clock()``.
"""

from __future__ import annotations

from framework.venue.model import (
    CONDITIONAL_TYPES,
    DEFAULT_LEVERAGE,
    HISTORY_KEEP_MS,
    LIMIT,
    MAKER_FEE_RATE,
    MARK_HISTORY_KEEP,
    MARKET,
    OPEN_STATUSES,
    ORDER_TYPES,
    ORIGIN_BY_TYPE,
    TAKER_FEE_RATE,
    TIME_IN_FORCE,
    ZERO,
    BalanceEvent,
    FillEvent,
    Instrument,
    Listener,
    MarkPriceEvent,
    OrderEvent,
    PositionEvent,
    RejectReason,
    VenueEvent,
    VenueOrder,
    VenuePosition,
    VenueReject,
    default_instruments,
)
from framework.venue.triggers import Triggers

__all__ = [
    "CONDITIONAL_TYPES", "DEFAULT_LEVERAGE", "HISTORY_KEEP_MS", "LIMIT", "MAKER_FEE_RATE", "MARKET",
    "MARK_HISTORY_KEEP", "OPEN_STATUSES", "ORDER_TYPES", "ORIGIN_BY_TYPE", "TAKER_FEE_RATE", "TIME_IN_FORCE", "ZERO",
    "BalanceEvent", "FillEvent", "Instrument", "Listener", "MarkPriceEvent", "OrderEvent", "PositionEvent",
    "RejectReason", "Venue", "VenueEvent", "VenueOrder", "VenuePosition", "VenueReject", "default_instruments",
]


class Venue(Triggers):
    """The simulated exchange.  See ``docs/venue-api.md`` for the full contract.

    :param name: venue name (``binance`` / ``bybit``), used in logs and by the façades.
    :param instruments: tradable instruments (default :func:`default_instruments`).
    :param seed: seeds :attr:`rng` (probabilistic faults, ids stay deterministic anyway).
    :param clock: ms since the epoch; tests pass a fake one.
    """

