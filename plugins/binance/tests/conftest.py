"""Shared fixtures: one emulated venue + one connected driver per test module, over loopback."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

# pytest runs with --import-mode=importlib: make this directory's helper module importable by name.
sys.path.insert(0, str(Path(__file__).parent))
from binance_helpers import TEST_OPTIONS, BookSink
from framework_binance.emulator import BinanceEmulator

from framework.plugins import drivers, load_plugins
from framework.venue import EmulatorHarness, Faults


@pytest.fixture(scope="module")
async def harness():
    async with EmulatorHarness("binance", BinanceEmulator, {"seed": 7}) as h:
        yield h


@pytest.fixture(scope="module")
async def driver(harness):
    pm = load_plugins(["binance"])
    drv = drivers(pm)["binance"]
    config = harness.config.model_copy(update={"options": dict(TEST_OPTIONS)})
    await drv.connect(config)
    yield drv
    await drv.disconnect()


@pytest.fixture(scope="module")
async def stream(driver):
    """The driver's private stream, running for the whole module into a PositionBook (the driver's stream
    state, as under the engine)."""
    sink = BookSink()
    task = asyncio.create_task(driver.run_stream(sink))
    await sink.wait_for(lambda: sink.connected)
    yield sink
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
def venue(harness):
    """The venue, flat and with default faults at the start of each test."""
    v = harness.venue
    v.faults = Faults()
    for order in v.orders("default"):
        v.cancel_order("default", order.symbol, order_id=order.id)
    for position in v.positions("default"):
        v.manual_close("default", position.symbol)
    return v
