"""Fault matrix: every knob of :class:`framework.venue.Faults`, and a few meaningful pairs, against both
driver plugins, under a seeded random schedule of opens, trailing stop moves and closes through the
Engine.  After convergence: zero unprotected > 1 s, zero orphans, zero wrong-side orders, each venue
closure ↔ exactly one ``on_position_closed``, each closure journalled (``tests/faults/invariants.py``).
"""

from __future__ import annotations

import contextlib
import random
from decimal import Decimal
from typing import Any

import pytest

from framework.app.bench import cross_stop_price, engine_rig
from framework.engine import EngineSettings
from framework.errors import FrameworkError
from framework.models import TrailingSpec
from framework.venue import Faults
from tests.faults.invariants import assert_invariants, converge, quick_reconciler

PLUGINS = ["binance", "bybit"]
STEPS = 8

#: REST lag stays under the orphan grace: "not visible yet" must never be taken for "absent"
SETTINGS = EngineSettings(verify_budget_ms=1_500, flat_budget_ms=1_000, reconcile_interval_s=3_600,
                          orphan_grace_ms=600, protect_retry_ms=10, trailing_min_interval_ms=0,
                          trailing_min_change_pct=Decimal("0.01"), native_trailing_stop=False)
# ccxt timeout: timeout_after_accept costs this, not 10 s; above what a loaded 2-core machine takes to answer
# an ordinary loopback call, so only the injected timeouts time out.
CLIENT_TIMEOUT_MS = 1_500

# Each fault: steady knobs (set once) and counters re-armed before every action of the schedule.
SINGLE: dict[str, tuple[dict[str, Any], dict[str, int]]] = {
    "rest_position_lag_ms": ({"rest_position_lag_ms": 250}, {}),
    "stream_delay_ms": ({"stream_delay_ms": 150}, {}),
    "drop_rate": ({"drop_rate": 0.3}, {}),
    "duplicate_rate": ({"duplicate_rate": 0.3}, {}),
    "reorder_rate": ({"reorder_rate": 0.3}, {}),
    "drop_closing_frames": ({}, {"drop_closing_frames": 1}),
    "duplicate_closing_frames": ({}, {"duplicate_closing_frames": 1}),
    "delay_closing_frames_ms": ({"delay_closing_frames_ms": 300}, {}),
    "minimal_order_response": ({"minimal_order_response": True}, {}),
    "http_error_503": ({"http_error_status": 503}, {"http_error_next": 1}),
    "http_error_429": ({"http_error_status": 429}, {"http_error_next": 1}),
    "timeout_after_accept_next": ({}, {"timeout_after_accept_next": 1}),
    "reject_next_orders": ({}, {"reject_next_orders": 1}),
    "disconnect_every_ms": ({"disconnect_every_ms": 300}, {}),
    "shuffle_topics": ({"shuffle_topics": True}, {}),
    "order_visibility_lag_ms": ({"order_visibility_lag_ms": 200}, {}),
    "market_fill_parts": ({"market_fill_parts": 3}, {}),
    "market_fill_ratio": ({"market_fill_ratio": 0.5}, {}),
    "rate_limits": ({"rate_limits": True}, {}),
    "reject_triggered_stops": ({}, {"reject_triggered_stops": 1}),  # B27: a stop denied when it triggers
}
PAIRS: dict[str, tuple[str, str]] = {
    "lag_x_drop_closing": ("rest_position_lag_ms", "drop_closing_frames"),  # I-1 + I-4
    "lag_x_minimal_response": ("rest_position_lag_ms", "minimal_order_response"),  # I-3
    "lag_x_timeout_after_accept": ("rest_position_lag_ms", "timeout_after_accept_next"),
    "delay_closing_x_disconnect": ("delay_closing_frames_ms", "disconnect_every_ms"),  # I-2
    "http_error_x_drop_rate": ("http_error_503", "drop_rate"),
    "partial_fill_x_timeout_after_accept": ("market_fill_ratio", "timeout_after_accept_next"),  # B20 + I-3
}
CASES = {**{name: (name,) for name in SINGLE}, **PAIRS}
#: knobs that break a venue guarantee on purpose, tested where that guarantee is checked, not here
OUTSIDE_THE_MATRIX = {
    "list_no_stops": "a venue that lists no stop it holds: framework check's row fails "
                     "(tests/app/test_check.py::test_a_venue_that_lists_no_stop_fails_that_row_with_evidence)",
    "accept_duplicate_client_ids": "a venue that takes a second order with a client order id already resting: "
                                   "framework check's duplicate row fails (tests/app/test_check.py::"
                                   "test_a_venue_that_accepts_a_duplicate_client_id_fails_that_row_and_cancels_both)",
    "http_error_path": "narrows http_error_next (in the matrix) to one path: a test's one-shot fault "
                       "(plugins/binance/tests/test_binance_driver.py::test_http_errors_on_order_creation)",
    "answer_without_order_id_next": "an order answered without its id: each driver's OrderIncomplete "
                                    "(plugins/binance/tests/test_binance_driver.py::"
                                    "test_a_stop_answered_without_its_algo_id_is_incomplete_not_placed, "
                                    "plugins/bybit/tests/test_driver.py::"
                                    "test_a_stop_loss_order_answered_without_its_order_id_is_incomplete_not_placed)",
}


def test_every_fault_knob_is_in_the_matrix():
    covered = {knob for steady, rearm in SINGLE.values() for knob in (*steady, *rearm)}
    assert covered | set(OUTSIDE_THE_MATRIX) == set(Faults.model_fields)
    assert not covered & set(OUTSIDE_THE_MATRIX)


def arm(rig: Any, faults: tuple[str, ...], steady: bool) -> None:
    for name in faults:
        knobs = SINGLE[name][0] if steady else SINGLE[name][1]
        for knob, value in knobs.items():
            setattr(rig.venue.faults, knob, value)


REARM_PROBABILITY = 0.4  # a counter knob re-armed before every action would refuse every open


async def run_schedule(rig: Any, faults: tuple[str, ...], seed: int, steps: int = STEPS) -> None:
    """Seeded random actions; an action the engine refuses (a FrameworkError) is part of the game."""
    rng = random.Random(seed)
    venue, symbol, book = rig.venue, rig.symbol, rig.parts.book
    base_mark = venue.mark_price(symbol)
    tick = venue.instrument(symbol).tick_size
    arm(rig, faults, steady=True)
    for _ in range(steps):
        if rng.random() < REARM_PROBABILITY:
            arm(rig, faults, steady=False)
        held = book.get(symbol)
        on_venue = venue.position(rig.account, symbol).contracts > 0
        if held is None and not on_venue:
            trailing = TrailingSpec(callback_rate=Decimal(1)) if rng.random() < 0.5 else None
            intent = rig.intent(side=rng.choice(["long", "short"]), trailing=trailing)
            try:
                await rig.engine.open(intent)
            except FrameworkError:  # handed over to the backstop; its grace is taken as passed
                with contextlib.suppress(FrameworkError):
                    await quick_reconciler(rig).reconcile()
            continue
        if held is None:  # on the venue, not (yet) in the book: the backstop's turn
            with contextlib.suppress(FrameworkError):
                await rig.parts.reconciler.reconcile()
            continue
        action = rng.choice(["trail", "trail", "engine_close", "manual", "stop", "liquidate"])
        if not on_venue and action != "trail":  # closed on the venue already; the book will hear of it
            action = "trail"
        if action == "trail":
            favourable = Decimal("1.004") if held.side == "long" else Decimal("0.996")
            moved = len(rig.probe.moved)
            venue.set_mark_price(symbol, (venue.mark_price(symbol) * favourable).quantize(tick))
            if held.trailing is not None:
                with contextlib.suppress(TimeoutError):
                    await rig.probe.wait(lambda m=moved: len(rig.probe.moved) > m, 1.0)
            continue
        closed = len(rig.probe.closed)
        if action == "engine_close":
            with contextlib.suppress(FrameworkError):
                await rig.engine.close(rig.name, symbol)
        elif action == "stop" and held.stop_price is not None:
            venue.set_mark_price(symbol, cross_stop_price(rig.intent(side=held.side).model_copy(
                update={"stop_loss": held.stop_price})))
        elif action == "liquidate":
            venue.liquidate(rig.account, symbol)
        else:
            venue.manual_close(rig.account, symbol)
        with contextlib.suppress(TimeoutError):  # lost frames: the reconciler's job, below
            await rig.probe.wait(lambda c=closed: len(rig.probe.closed) > c, 1.0)
        venue.set_mark_price(symbol, base_mark)


@pytest.mark.hooks("create_entry", "normalize_order", "set_stop_loss", "move_stop_loss", "verify_position",
                   "close_position", "fetch_snapshot", "run_stream", "on_position_open", "on_position_closed")
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("plugin", PLUGINS)
async def test_fault_schedule_keeps_every_invariant(plugin, case, store):
    seed = sum(map(ord, plugin + case))
    async with engine_rig(plugin, store, SETTINGS, options={"seed": seed},
                          driver_options={"timeout_ms": CLIENT_TIMEOUT_MS, "seed": seed}) as rig:
        await run_schedule(rig, CASES[case], seed)
        await converge(rig)
        await assert_invariants(rig)
        assert rig.probe.opened, "the schedule opened nothing: the case tested nothing"
