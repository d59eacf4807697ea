"""An in-process, exchange-agnostic futures venue (one-way mode, linear USDT perpetuals).

The wire façades (``plugins/*/framework_*/emulator.py``, on :class:`framework.venue.wire.WireEmulator`)
translate Binance / Bybit REST and WebSocket to calls on :class:`Venue` and its events back to frames;
tests drive it and read ``venue.truth``.  The contract is ``docs/venue-api.md``.

:class:`Venue` is built in three layers, each its own module: the ledger (``ledger.py``: accounts, marks,
positions, balances, fills, events), orders (``orders.py``) and triggers (``triggers.py``); the records and
pure rules are in ``model.py``.

Single-threaded: every method is synchronous, called from the asyncio loop; listeners are called
synchronously, in order, once the state change is complete.  Prices are ``Decimal`` in quote currency,
sizes ``Decimal`` contracts, times ms since the Unix epoch (UTC) from ``venue.clock()``.
"""

from __future__ import annotations

from framework.venue.triggers import Triggers

__all__ = ["Venue"]


class Venue(Triggers):
    """The simulated exchange.  See ``docs/venue-api.md`` for the full contract.

    :param name: venue name (``binance`` / ``bybit``), used in logs and by the façades.
    :param instruments: tradable instruments (default :func:`default_instruments`).
    :param seed: seeds :attr:`rng` (probabilistic faults, ids stay deterministic anyway).
    :param clock: ms since the epoch; tests pass a fake one.
    """

