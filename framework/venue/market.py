"""Public market data derived from the simulated venue's mark-price path, shared by the wire façades.

The venue simulates no other traders: the last price is the mark, the book is synthetic (levels one tick
apart either side of the mark, :data:`BOOK_LEVEL_LOTS` minimum sizes each) and volumes are 0.  What a
façade serves from here is marked as assumed in ``docs/conformance.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from framework.venue.core import Venue

BOOK_LEVEL_LOTS = 1000
"""Size of every synthetic book level, in multiples of the instrument's minimum order size."""


@dataclass(frozen=True)
class WindowStats:
    """Mark prices over a window ending now: ``open`` (the first in the window, else the current mark),
    ``high`` / ``low`` / ``last`` (quote currency), ``count`` prices seen, ``start_ms`` the window's start."""

    open: Decimal
    high: Decimal
    low: Decimal
    last: Decimal
    count: int
    start_ms: int


def window_stats(venue: Venue, symbol: str, window_ms: int) -> WindowStats:
    """Statistics of ``symbol``'s mark path over the last ``window_ms`` (e.g. 24 h for a ticker).

    :raises LookupError: no mark price yet; :raises VenueReject: ``unknown_symbol``.
    """
    last = venue.mark_price(symbol)
    start = venue.now() - window_ms
    prices = [p.price for p in venue.mark_history(symbol) if p.ts > start]
    return WindowStats(prices[0] if prices else last, max(prices, default=last), min(prices, default=last), last,
                       len(prices), start)


def synthetic_book(venue: Venue, symbol: str, levels: int) -> tuple[list[tuple[Decimal, Decimal]],
                                                                    list[tuple[Decimal, Decimal]]]:
    """``(bids, asks)`` of ``levels`` ``(price, size)`` each: bids from one tick below the mark down (best
    first), asks from one tick above up.  Bids stop above 0.

    :raises LookupError: no mark price yet; :raises VenueReject: ``unknown_symbol``.
    """
    instrument = venue.instrument(symbol)
    mark, tick = venue.mark_price(symbol), instrument.tick_size
    size = instrument.min_amount * BOOK_LEVEL_LOTS
    bids = [(mark - tick * k, size) for k in range(1, levels + 1) if mark - tick * k > 0]
    asks = [(mark + tick * k, size) for k in range(1, levels + 1)]
    return bids, asks
