"""Helpers of the Bybit driver tests (constants, fixture files, a recording sink, intents)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from contract_tests.support import BookEvidence
from framework.engine.book import PositionBook
from framework.models import OrderIntent, OrderUpdate, PositionUpdate
from framework.plugins import new_plugin_manager

SYMBOL = "XRP/USDT:USDT"
FIXTURES = Path(__file__).parent / "fixtures"  # provenance: fixtures/PROVENANCE.md

# Fast, deterministic client settings for loopback tests (no ccxt throttling, short timeouts).
TEST_OPTIONS = {
    "enable_rate_limit": False,
    "timeout_ms": 3000,  # an injected lost answer costs this; far above a loaded machine's ordinary call
    "ping_interval_s": 0.1,
    "reconnect_base_s": 0.02,
    "reconnect_cap_s": 0.1,
    "reconnect_floor_s": 0.01,
    "seed": 1,
}


def assert_same_shape(actual: dict[str, Any], expected: dict[str, Any], where: str = "") -> None:
    """Same keys, and the same JSON value types (``null`` in either matches anything)."""
    extra, missing = set(actual) - set(expected), set(expected) - set(actual)
    assert set(actual) == set(expected), f"{where}: extra {extra}, missing {missing}"
    for key, value in expected.items():
        got = actual[key]
        if value is None or got is None:
            continue
        assert type(got) is type(value), f"{where}.{key}: {type(got).__name__} != {type(value).__name__}"
        if isinstance(value, dict) and key not in ("cumFeeDetail",):
            assert_same_shape(got, value, f"{where}.{key}")
        if isinstance(value, list) and value and isinstance(value[0], dict) and got:
            assert_same_shape(got[0], value[0], f"{where}.{key}[0]")


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


class RecordingSink:
    """A StreamSink recording everything, with a waiter on a condition (no sleeps)."""

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
            while not (result := predicate()):
                await self._changed.wait()
        return result

    def position(self, symbol: str) -> PositionUpdate | None:
        """The latest position update delivered for ``symbol``: the highest sequence, the later of equals
        (a late or reordered frame never wins, as in the core's book)."""
        updates = [e for e in self.events if isinstance(e, PositionUpdate) and e.symbol == symbol]
        return max(reversed(updates), key=lambda e: e.sequence, default=None)

    def order(self, client_order_id: str) -> OrderUpdate | None:
        """The latest update delivered for the order ``client_order_id``."""
        return next((e for e in reversed(self.events)
                     if isinstance(e, OrderUpdate) and e.order.client_order_id == client_order_id), None)


class BookSink(BookEvidence, RecordingSink):
    """A :class:`RecordingSink` in front of a real PositionBook, as under the engine: the sink is also the book's
    :class:`~framework.protocols.StreamEvidence`, the stream state the driver asks."""

    def __init__(self) -> None:
        super().__init__(PositionBook("bybit", "default", new_plugin_manager(), store=None))



_ids = iter(range(1, 1_000_000))


def intent(side: str = "long", contracts: str = "43", stop_loss: str = "0.95", **extra: Any) -> OrderIntent:
    return OrderIntent(
        venue="bybit", symbol=SYMBOL, side=side, contracts=Decimal(contracts), stop_loss=Decimal(stop_loss),
        client_order_id=f"fw-e-{next(_ids)}", **extra,
    )
