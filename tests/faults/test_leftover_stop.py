"""A position closed on the venue (not through the engine), then opened again in the same direction: the
reopen must not be refused by the first position's stop. This began as a -4130 ("an existing close-position
order") from a close-position stop left resting; Binance's system now expires those when the position closes
(docs/conformance.md B7) and the engine cancels a closed position's leftover stops at once, so this guards the
outcome whichever of the two removes the stop."""

from __future__ import annotations

import pytest

from framework.app.bench import BENCH_SETTINGS, engine_rig


@pytest.mark.hooks("set_stop_loss", "create_entry", "on_position_closed")
@pytest.mark.parametrize("side", ["long", "short"])
async def test_reopen_after_a_venue_close_is_not_refused_by_the_old_stop(store, side):
    settings = BENCH_SETTINGS.model_copy(update={"orphan_grace_ms": 5_000})
    async with engine_rig("binance", store, settings) as rig:
        await rig.engine.open(rig.intent(side=side))
        closed = len(rig.probe.closed)
        rig.venue.manual_close(rig.account, rig.symbol)
        await rig.probe.wait(lambda: len(rig.probe.closed) > closed)
        await rig.engine.open(rig.intent(side=side))  # a leftover stop: -4130
        assert rig.parts.book.holds(rig.symbol)
