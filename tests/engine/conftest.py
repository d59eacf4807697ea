"""Engine fixtures: real driver plugins over loopback to their emulators, real PostgreSQL (``store``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from framework.driver import Driver
from framework.engine import Engine, EngineSettings
from framework.engine.broadcast import client_order_id
from framework.models import OrderIntent, StopLoss
from framework.plugins import load_plugins, register
from tests.engine.recorder import Recorder

FAST = EngineSettings(verify_budget_ms=3_000, flat_budget_ms=1_000, reconcile_interval_s=3_600,
                      orphan_grace_ms=60_000, protect_retry_ms=10, trailing_min_interval_ms=0,
                      trailing_min_change_pct=Decimal("0.01"), native_trailing_stop=False)


async def until(predicate, timeout_s: float = 10.0) -> None:
    """Wait for ``predicate()`` to hold, polling (for state no hook announces: venue orders, sockets);
    fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def close_orders(env: Env) -> list[Any]:
    """The journal rows of the close orders of the default account on the env's venue, oldest first."""
    return await env.store.pool.fetch(
        "SELECT * FROM orders WHERE account = 'default' AND venue = $1 AND purpose = 'close' ORDER BY id",
        env.venue_name)


# For tests without REST lag whose orphan must be closed by the first snapshot that misses it.
NO_GRACE = FAST.model_copy(update={"orphan_grace_ms": 0})
NO_SETTLE = FAST.model_copy(update={"reprotect_settle_ms": 0})  # a stop removal is judged at once


async def move_stop_toward_mark(env: Env, side: str) -> StopLoss:
    """What a trailing move does, by hand: a stop 0.1 % closer to the mark replaces the book's, and is recorded."""
    old = env.parts.book.get(env.symbol).stop
    toward_mark = old.trigger_price * (Decimal("1.001") if side == "long" else Decimal("0.999"))
    moved = await env.parts.driver.move_stop_loss(old, toward_mark.quantize(Decimal("0.0001")))
    await env.parts.protector.record(env.symbol, moved, previous=old.trigger_price)
    return moved


class Env:
    """One venue emulator, its driver, a recorder and (once started) an Engine on the test's database."""

    def __init__(self, venue_name: str, store, harness, pm, driver: Driver, recorder: Recorder) -> None:
        self.venue_name = venue_name
        self.store = store
        self.harness = harness
        self.venue = harness.venue
        self.symbol = harness.symbol
        self.pm = pm
        self.driver = driver
        self.recorder = recorder
        self.engine: Engine | None = None

    async def start(self, settings: EngineSettings = FAST, extra_plugins: tuple[tuple[str, Any], ...] = (),
                    **options: Any) -> Engine:
        for name, plugin in extra_plugins:
            register(self.pm, plugin, name)
        config = self.harness.config
        config = config.model_copy(update={"options": {**config.options, **options}})
        self.engine = Engine(self.pm, self.store, {self.venue_name: self.driver}, {self.venue_name: config},
                             settings)
        await self.engine.start()
        return self.engine

    async def settled(self, bound_s: float = 10.0) -> None:
        """Wait for the start-up reconciliation and the one the stream's first connect requests, so that no
        background pass races the test's next venue action (a fault counter, a removed stop)."""
        await self.recorder.wait_for(lambda r: len(r.seen["on_reconciled"]) >= 2, bound_s)

    @property
    def stop_rests_by_the_fill(self) -> bool:
        """The driver can protect an entry from its first fill: a stop placed before it (stop_before_entry)
        or attached to it (attached_stop_on_entry).  Binance can do neither (-4509, docs/conformance.md B7)."""
        return self.driver.supports("stop_before_entry") or self.driver.supports("attached_stop_on_entry")

    def assert_protected_but_for_the_fill_to_stop_window(self, intent: OrderIntent) -> None:
        """No unprotected time on the symbol, except (when the stop cannot rest by the fill) the one window
        from the entry's fill to the first stop placed after it."""
        intervals = [(start, end) for _, _, start, end in self.venue.truth.unprotected_intervals(symbol=self.symbol)]
        if self.stop_rests_by_the_fill:
            assert intervals == [], intervals
            return
        filled_at = min(f.ts for f in self.venue.truth.fills if f.client_order_id == intent.client_order_id)
        stopped_at = min(o.ts for o in self.venue.truth.orders if o.type == "stop_market" and o.status != "rejected"
                         and o.ts >= filled_at)
        assert intervals == [(filled_at, stopped_at)], intervals

    @property
    def parts(self):
        assert self.engine is not None
        return self.engine.venue(self.venue_name)

    def intent(self, side: str = "long", contracts: str = "43", stop_pct: str = "2", tp_pct: str | None = None,
               trailing=None) -> OrderIntent:
        mark = self.venue.mark_price(self.symbol)
        sign = Decimal(-1) if side == "long" else Decimal(1)
        stop = (mark * (1 + sign * Decimal(stop_pct) / 100)).quantize(Decimal("0.0001"))
        tp = None
        if tp_pct is not None:
            tp = (mark * (1 - sign * Decimal(tp_pct) / 100)).quantize(Decimal("0.0001"))
        return OrderIntent(venue=self.venue_name, symbol=self.symbol, side=side, contracts=Decimal(contracts),
                           stop_loss=stop, take_profit=tp, trailing=trailing, client_order_id=client_order_id("o"))


@contextlib.asynccontextmanager
async def venue_env(venue_name: str, store, options: dict[str, Any] | None = None) -> AsyncIterator[Env]:
    pm = load_plugins([venue_name])
    recorder = Recorder()
    register(pm, recorder, "recorder")
    driver = Driver(pm, venue_name)
    async with driver.venue_harness({"seed": 7, **(options or {})}) as harness:
        env = Env(venue_name, store, harness, pm, driver, recorder)
        try:
            yield env
        finally:
            if env.engine is not None:
                await env.engine.stop()


@pytest.fixture(params=["bybit", "binance"])
async def env(request, store) -> AsyncIterator[Env]:
    """A started Engine on one venue (both venues, same assertions)."""
    async with venue_env(request.param, store) as env:
        yield env
