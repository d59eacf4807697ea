"""Helpers shared by the Binance tests (the pytest fixtures live in conftest.py; payload files in fixtures/)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from contract_tests.support import BookEvidence
from framework.engine.book import PositionBook
from framework.models import PositionUpdate
from framework.plugins import new_plugin_manager

FIXTURES = Path(__file__).parent / "fixtures"  # provenance: fixtures/PROVENANCE.md
SYMBOL = "XRP/USDT:USDT"
TEST_OPTIONS = {
    "timeout_ms": 3000,  # an injected lost answer costs this; far above a loaded machine's ordinary call
    "listen_key_keepalive_s": 0.2,
    "reconnect_base_s": 0.05,
    "reconnect_cap_s": 0.2,
    "seed": 1,
}


def fixture_json(relative: str) -> Any:
    return json.loads((FIXTURES / relative).read_text())


class Sink:
    """A StreamSink that records everything and lets a test wait for a condition (no sleeps)."""

    def __init__(self, book: PositionBook | None = None) -> None:
        self.book = book  # when given, every event reaches it first (as the engine's book)
        self.events: list[Any] = []
        self.connected: list[bool] = []
        self.disconnected: list[str] = []
        self.malformed: list[tuple[Any, Exception]] = []
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def on_event(self, event: Any) -> None:
        if self.book is not None:
            await self.book.on_event(event)
        self.events.append(event)
        self._notify()

    async def on_connected(self, reconnect: bool) -> None:
        self.connected.append(reconnect)
        self._notify()

    async def on_disconnected(self, detail: str) -> None:
        self.disconnected.append(detail)
        self._notify()

    def on_malformed(self, raw: Any, error: Exception) -> None:
        self.malformed.append((raw, error))
        self._notify()

    async def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        async with asyncio.timeout(timeout_s):
            while True:
                result = predicate()
                if result:
                    return result
                await self._changed.wait()

    def position(self, symbol: str) -> PositionUpdate | None:
        """The latest position update delivered for ``symbol``: the highest sequence, the later of equals
        (a late or reordered frame never wins, as in the core's book)."""
        updates = [e for e in self.events if isinstance(e, PositionUpdate) and e.symbol == symbol]
        return max(reversed(updates), key=lambda e: e.sequence, default=None)


class BookSink(BookEvidence, Sink):
    """A :class:`Sink` in front of a real PositionBook, as under the engine: the sink is also the book's
    :class:`~framework.protocols.StreamEvidence`, the stream state the driver asks."""

    def __init__(self) -> None:
        super().__init__(PositionBook("binance", "default", new_plugin_manager(), store=None))


def trading_calls(emulator) -> int:
    """REST calls made so far, less the listen key's keep-alive (a background timer: every 0.2 s here)."""
    return sum(n for endpoint, n in emulator.rest_calls.items() if "listenKey" not in endpoint)


def below(venue, pct: str = "2", symbol: str = SYMBOL, tick: str = "0.0001") -> Decimal:
    """A trigger ``pct`` % under ``symbol``'s mark, on its tick (XRP's by default)."""
    mark = venue.mark_price(symbol)
    return (mark * (1 - Decimal(pct) / 100)).quantize(Decimal(tick))


def above(venue, pct: str = "2", symbol: str = SYMBOL, tick: str = "0.0001") -> Decimal:
    """A trigger ``pct`` % over ``symbol``'s mark, on its tick (XRP's by default)."""
    mark = venue.mark_price(symbol)
    return (mark * (1 + Decimal(pct) / 100)).quantize(Decimal(tick))


def losing(venue, side: str, pct: str = "2", symbol: str = SYMBOL, tick: str = "0.0001") -> Decimal:
    """A stop trigger ``pct`` % on the losing side of the mark: below it for a long, above it for a short."""
    return (below if side == "long" else above)(venue, pct, symbol, tick)


def intent(venue, side: str = "long", contracts: str = "10", **extra: Any):
    """An entry intent with a fresh client order id and a stop 2 % on the losing side."""
    import secrets

    from framework.models import OrderIntent

    stop = losing(venue, side)
    return OrderIntent(venue="binance", symbol=SYMBOL, side=side, contracts=Decimal(contracts), stop_loss=stop,
                       client_order_id=f"fw-e-{secrets.token_hex(8)}", **extra)

