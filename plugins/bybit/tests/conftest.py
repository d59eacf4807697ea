"""Fixtures for the Bybit driver tests: the emulator over loopback, the real ccxt client and plugin."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import pytest

# pytest runs with --import-mode=importlib: make this directory's helper module importable by name.
sys.path.insert(0, str(Path(__file__).parent))
import framework_bybit.plugin
from bybit_helpers import SYMBOL, TEST_OPTIONS
from framework_bybit import rest
from framework_bybit.emulator import BybitEmulator
from framework_bybit.plugin import venue_harness

from framework.plugins import drivers, load_plugins
from framework.venue import Faults


@pytest.fixture(scope="module")
async def harness():
    async with venue_harness({"seed": 3}) as h:
        yield h


@pytest.fixture(scope="module")
async def conn(harness):
    config = harness.config.model_copy(update={"options": dict(TEST_OPTIONS)})
    connection = await rest.connect(config)
    yield connection
    await rest.disconnect(connection)


@pytest.fixture(scope="module")
async def driver(harness):
    """The plugin through the core's plugin manager and Driver handle (hooks as the engine calls them)."""
    pm = load_plugins([], builtins=[("bybit", framework_bybit.plugin)])
    handle = drivers(pm)["bybit"]
    await handle.connect(harness.config.model_copy(update={"options": dict(TEST_OPTIONS)}))
    yield handle
    await handle.disconnect()


@pytest.fixture
def venue(harness):
    return harness.venue


@pytest.fixture
def emulator(harness) -> BybitEmulator:
    return harness.emulator


@pytest.fixture(autouse=True)
async def clean_venue(request):
    """Every test starts flat, with no resting orders, default faults and the starting mark price."""
    if "harness" not in request.fixturenames:
        yield
        return
    h = request.getfixturevalue("harness")
    v = h.venue
    v.faults = Faults()
    h.emulator.realtime_open_only = False
    v.set_mark_price(SYMBOL, Decimal("1.0"))
    for position in v.positions("default"):
        v.manual_close("default", position.symbol)
    for order in v.orders("default"):
        v.cancel_order("default", order.symbol, order.id)
    yield
    v.faults = Faults()

