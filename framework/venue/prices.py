"""Real price paths for the simulated venue, and a replayer that drives its mark prices.

The default paths ship in ``framework/venue/data/`` (provenance and licences in ``PROVENANCE.md`` there):
5-minute Binance XRPUSDT candles and a tick path of Binance BTCUSDT trades.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from framework.venue.core import Venue

# Real paths shipped in framework/venue/data/ (see PROVENANCE.md there), so the demo works wherever the
# package is installed.
DEFAULT_FILES = {
    "XRP/USDT:USDT": ("candles", "binance-futures-XRPUSDT-5m.csv"),
    "BTC/USDT:USDT": ("trades", "binance-BTCUSDT-trades.csv"),
}


@dataclass(frozen=True)
class PricePoint:
    """A price (quote currency) at ``ts`` (ms since the epoch, UTC, of the original data)."""

    ts: int
    price: Decimal


@dataclass(frozen=True)
class Candle:
    """One interval of prices: ``open_ms`` (ms since the epoch, UTC, a multiple of the interval), open /
    high / low / close in quote currency and the number of prices it saw (``count``)."""

    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    count: int


def candles(
    points: Iterable[PricePoint],
    interval_ms: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int = 500,
) -> list[Candle]:
    """Aggregate ``points`` (time-ordered) into candles of ``interval_ms``, oldest first.

    Only candles opening within ``start_ms`` … ``end_ms`` (inclusive, each optional) are kept; of those
    the oldest ``limit`` when ``start_ms`` is given, else the newest ``limit`` (how Binance and Bybit
    answer a kline request).  Intervals without a price are absent (no flat candle is invented).

    :raises ValueError: ``interval_ms`` or ``limit`` < 1.
    """
    if interval_ms < 1 or limit < 1:
        raise ValueError(f"interval_ms and limit must be >= 1, got {interval_ms}, {limit}")
    result: list[Candle] = []
    for point in points:
        open_ms = point.ts - point.ts % interval_ms
        if (start_ms is not None and open_ms < start_ms) or (end_ms is not None and open_ms > end_ms):
            continue
        last = result[-1] if result else None
        if last is not None and last.open_ms == open_ms:
            result[-1] = Candle(open_ms, last.open, max(last.high, point.price), min(last.low, point.price),
                                point.price, last.count + 1)
        else:
            result.append(Candle(open_ms, point.price, point.price, point.price, point.price, 1))
    return result[:limit] if start_ms is not None else result[-limit:]


class PricePath:
    """An ordered sequence of :class:`PricePoint` with strictly non-decreasing timestamps.

    :raises ValueError: empty, or timestamps going backwards.
    """

    def __init__(self, points: list[PricePoint], source: str = "") -> None:
        if not points:
            raise ValueError(f"price path {source or '(unnamed)'} has no points")
        for before, after in zip(points, points[1:], strict=False):
            if after.ts < before.ts:
                raise ValueError(f"price path {source}: time goes backwards at {after.ts}")
        self.points = points
        self.source = source

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[PricePoint]:
        return iter(self.points)

    def __repr__(self) -> str:
        return f"PricePath({self.source!r}, {len(self.points)} points)"

    @property
    def first_price(self) -> Decimal:
        return self.points[0].price

    @property
    def duration_ms(self) -> int:
        return self.points[-1].ts - self.points[0].ts

    @classmethod
    def from_candles_csv(cls, path: str | Path) -> PricePath:
        """Candles ``open_time_ms,open,high,low,close[,volume]``, each becoming 4 points a quarter candle
        apart: O→L→H→C when close ≥ open, O→H→L→C otherwise.

        The candle length is the gap between the first two open times (one candle: 1 minute).

        :raises ValueError: a malformed row (with its line number).
        """
        rows = []
        with open(path, newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    rows.append(
                        (
                            int(row["open_time_ms"]),
                            Decimal(row["open"]),
                            Decimal(row["high"]),
                            Decimal(row["low"]),
                            Decimal(row["close"]),
                        )
                    )
                except (KeyError, TypeError, ArithmeticError, ValueError) as error:
                    raise ValueError(f"{path}:{line}: bad candle row {row!r}: {error}") from None
        length = rows[1][0] - rows[0][0] if len(rows) > 1 else 60_000
        quarter = length // 4
        points = []
        for open_ms, open_, high, low, close in rows:
            middle = (low, high) if close >= open_ else (high, low)
            for i, price in enumerate((open_, *middle, close)):
                points.append(PricePoint(open_ms + i * quarter, price))
        return cls(points, str(path))

    @classmethod
    def from_trades_csv(cls, path: str | Path) -> PricePath:
        """Trades ``time_ms,trade_id,price,quantity,buyer_maker``: every trade is a point.

        :raises ValueError: a malformed row (with its line number).
        """
        points = []
        with open(path, newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    points.append(PricePoint(int(row["time_ms"]), Decimal(row["price"])))
                except (KeyError, TypeError, ArithmeticError, ValueError) as error:
                    raise ValueError(f"{path}:{line}: bad trade row {row!r}: {error}") from None
        return cls(points, str(path))

    @classmethod
    def default(cls, symbol: str) -> PricePath:
        """The real path for ``symbol``: XRP from the 5-minute candles, BTC from the trades file.

        :raises KeyError: no data for ``symbol``.
        """
        try:
            kind, relative = DEFAULT_FILES[symbol]
        except KeyError:
            raise KeyError(f"no default price path for {symbol!r}; known: {sorted(DEFAULT_FILES)}") from None
        with resources.as_file(resources.files("framework.venue") / "data" / relative) as file:
            return cls.from_candles_csv(file) if kind == "candles" else cls.from_trades_csv(file)


class Replayer:
    """Drives ``venue`` mark prices along price paths, ``speed`` × real time, looping at the end.

    The sequence of prices is deterministic; :meth:`step` applies the next one without waiting (tests),
    :meth:`run` paces them with the event loop.

    :param paths: ``{symbol: PricePath}`` (a path or a CSV file path; a file is read as candles when its
        header has ``open_time_ms``, else as trades).
    :param speed: 1 … 1000 times real time.
    :raises ValueError: ``speed`` out of range.
    """

    #: path time between the last point and the first one when a path loops, ms
    LOOP_PAUSE_MS = 1_000
    #: real time between two prices of one symbol at least, ms; denser points are skipped (never the last)
    MIN_STEP_MS = 10

    def __init__(
        self, venue: Venue, paths: Mapping[str, PricePath | str | Path], speed: float = 100.0
    ) -> None:
        if not 1 <= speed <= 1000:
            raise ValueError(f"speed must be within 1 … 1000, got {speed}")
        self.venue = venue
        self.speed = speed
        self.paths = {symbol: _as_path(path) for symbol, path in paths.items()}
        self._index = {symbol: 0 for symbol in self.paths}
        self._elapsed = {symbol: 0 for symbol in self.paths}  # path time played so far, ms, loops included
        self.steps = 0

    def _next_symbol(self) -> str:
        return min(self.paths, key=lambda s: (self._elapsed[s], s))

    def step(self) -> tuple[str, Decimal, float]:
        """Apply the next point of whichever path is due first.

        :returns: ``(symbol, price, wait_ms)``: the real time (path time divided by the speed) until the
            next point of any path is due.
        """
        symbol = self._next_symbol()
        path, i = self.paths[symbol], self._index[symbol]
        point = path.points[i]
        self.venue.set_mark_price(symbol, point.price)
        now = self._elapsed[symbol]
        nxt = i + 1
        while nxt < len(path) - 1 and (path.points[nxt].ts - point.ts) / self.speed < self.MIN_STEP_MS:
            nxt += 1  # too dense to matter at this speed: sample the path instead of burning the CPU
        gap = path.points[nxt].ts - point.ts if nxt < len(path) else self.LOOP_PAUSE_MS
        self._index[symbol] = nxt % len(path)
        self._elapsed[symbol] = now + gap
        self.steps += 1
        return symbol, point.price, (min(self._elapsed.values()) - now) / self.speed

    async def run(self) -> None:
        """Step forever at ``speed``; cancel the task to stop.

        Paced against the loop clock (deadlines, not fixed sleeps), so per-step overhead does not slow
        dense paths such as the BTC trades down.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        played_ms = 0.0
        while True:
            _, _, wait_ms = self.step()
            played_ms += wait_ms
            await asyncio.sleep(max(0.0, started + played_ms / 1000 - loop.time()))


def _as_path(path: PricePath | str | Path) -> PricePath:
    if isinstance(path, PricePath):
        return path
    with open(path) as handle:
        header = handle.readline()
    return PricePath.from_candles_csv(path) if "open_time_ms" in header else PricePath.from_trades_csv(path)
