"""A position closed on the venue (not through the engine) leaves its close-position stop resting on
Binance; the next open of the same direction is then refused (-4130) until the reconciler's stale-stop
sweep (two snapshots ``orphan_grace_ms`` apart; ``reconcile_interval_s`` = 30 s in production)."""

from __future__ import annotations

import pytest

from framework.app.bench import BENCH_SETTINGS, engine_rig


@pytest.mark.hooks("set_stop_loss", "create_entry", "on_position_closed")
async def test_reopen_after_a_venue_close_is_not_refused_by_the_old_stop(store):
    settings = BENCH_SETTINGS.model_copy(update={"orphan_grace_ms": 5_000})
    async with engine_rig("binance", store, settings) as rig:
        await rig.engine.open(rig.intent(side="long"))
        closed = len(rig.probe.closed)
        rig.venue.manual_close(rig.account, rig.symbol)
        await rig.probe.wait(lambda: len(rig.probe.closed) > closed)
        await rig.engine.open(rig.intent(side="long"))  # today: OrderRejected -4130
        assert rig.parts.book.holds(rig.symbol)
