"""Contract 10: the plugin's emulator and decoder agree with recorded reality (``framework.conformance``).

For each cassette the plugin ships (``harness.cassettes`` or its ``cassettes/`` folder): (a) the recorded
frames, through the plugin's decoder and a PositionBook, give the lifecycle the cassette states; (b) the
plugin's emulator answers the recorded requests as the venue did (status, error code, key set, value types,
and the kinds of frames that follow).  A plugin without cassettes passes the other contracts and is listed
``conformance: unverified`` (this test skips saying so, and the suite's summary names it).
"""

from __future__ import annotations

import pytest

from framework.conformance import cassette_paths, verify_cassette
from framework.driver import Driver
from framework.errors import VenueError
from framework.plugins import load_plugins

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.hooks("make_decoder", "venue_harness", "run_stream")
async def test_conformance_the_emulator_and_decoder_agree_with_the_recorded_venue(contract_plugin):
    pm = load_plugins([contract_plugin])
    paths = cassette_paths(pm, contract_plugin, Driver(pm, contract_plugin).venue_harness({}))
    if not paths:
        pytest.skip(f"{contract_plugin}: conformance: unverified (the plugin ships no cassette)")
    problems = [p for path in paths for p in await verify_cassette(pm, contract_plugin, path)]
    if problems:
        pytest.fail(f"{contract_plugin}: conformance: " + "\n".join(problems), pytrace=False)


@pytest.mark.hooks("market_limits")
async def test_market_limits_give_the_smallest_order_the_venue_takes(contract):
    limits = contract.driver.market_limits(contract.symbol)
    if limits.symbol != contract.symbol or limits.contract_step > limits.min_contracts:
        contract.fail(f"market_limits gave {limits!r}")
    if contract.venue is not None:
        instrument = contract.venue.instrument(contract.symbol)
        listed = (instrument.min_amount, instrument.step_size, instrument.tick_size)
        if (limits.min_contracts, limits.contract_step, limits.price_tick) != listed:
            contract.fail(f"market_limits gave min/step/tick {limits.min_contracts}/{limits.contract_step}/"
                          f"{limits.price_tick}; the venue lists {'/'.join(map(str, listed))}")
    try:
        contract.driver.market_limits("NOPE/USDT:USDT")
    except VenueError:
        pass
    else:
        contract.fail("market_limits of an unlisted symbol raised nothing")


