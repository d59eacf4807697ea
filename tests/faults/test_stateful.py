"""Property-based schedules: hypothesis generates interleavings of entries, outside fills (adds and
partial closes), venue closures, private-frame faults (delay / drop / duplicate / reorder) and stream
disconnects against a plugin + the Engine's PositionBook; after convergence the invariants of
``tests/faults/invariants.py`` hold.  Bounded (``max_examples``, short schedules), ``deadline=None``,
derandomized so CI sees the same examples every run."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.app.bench import engine_rig
from framework.errors import FrameworkError
from framework.venue import VenueReject
from tests.faults.invariants import assert_invariants, converge, quick_reconciler
from tests.faults.test_fault_matrix import CLIENT_TIMEOUT_MS, SETTINGS

FRAME_FAULTS = {"drop_rate": 0.5, "duplicate_rate": 0.5, "reorder_rate": 0.5, "stream_delay_ms": 150}

steps = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.sampled_from(["long", "short"])),
        st.tuples(st.just("add"), st.sampled_from(["5", "10"])),
        st.tuples(st.just("reduce"), st.sampled_from(["5"])),
        st.tuples(st.just("venue_close"), st.sampled_from(["manual", "liquidate", "adl"])),
        st.tuples(st.just("disconnect"), st.just("")),
        st.tuples(st.just("frames"), st.sampled_from(sorted(FRAME_FAULTS))),
        st.tuples(st.just("frames_off"), st.just("")),
    ),
    min_size=2, max_size=8,
)


async def play(databases, plugin: str, schedule: list[tuple[str, str]]) -> None:
    store = await databases.store()
    try:
        async with engine_rig(plugin, store, SETTINGS, driver_options={"timeout_ms": CLIENT_TIMEOUT_MS}) as rig:
            venue, symbol, account = rig.venue, rig.symbol, rig.account
            for action, arg in schedule:
                held = rig.parts.book.get(symbol)
                if action == "open" and held is None and venue.position(account, symbol).contracts == 0:
                    try:
                        await rig.engine.open(rig.intent(side=arg))
                    except FrameworkError:
                        await quick_reconciler(rig).reconcile()
                elif action in ("add", "reduce") and held is not None:
                    position = venue.position(account, symbol)
                    if position.contracts > 0:
                        adds = (position.side == "long") == (action == "add")
                        with contextlib.suppress(VenueReject):
                            venue.place_order(account, symbol, side="buy" if adds else "sell", type="market",
                                              amount=Decimal(arg), reduce_only=action == "reduce")
                elif action == "venue_close" and venue.position(account, symbol).contracts > 0:
                    {"manual": venue.manual_close, "liquidate": venue.liquidate, "adl": venue.adl}[arg](
                        account, symbol)
                elif action == "disconnect":
                    await rig.harness.emulator.disconnect_streams()
                elif action == "frames":
                    setattr(venue.faults, arg, FRAME_FAULTS[arg])
                elif action == "frames_off":
                    for knob in FRAME_FAULTS:
                        setattr(venue.faults, knob, 0)
                await asyncio.sleep(0)  # let the stream task run between actions (an interleaving point)
            await converge(rig)
            await assert_invariants(rig)
    finally:
        await store.close()


@pytest.mark.hooks("run_stream", "make_decoder", "fetch_snapshot", "on_position_open", "on_position_updated",
                   "on_position_closed")
@pytest.mark.parametrize("plugin", ["binance", "bybit"])
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(schedule=steps)
def test_generated_interleavings_keep_every_invariant(databases, plugin, schedule):
    asyncio.run(play(databases, plugin, schedule))
