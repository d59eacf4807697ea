"""The trailing manager never acts on one absurd mark tick: a jump beyond ``mark_jump_band_pct`` is held and
alerted until confirmed, and a stop move the venue refuses as crossed closes the position only when the
venue's own fresh mark price confirms it (docs/incidents.md I-5); longs and shorts, both venues."""

from __future__ import annotations

from decimal import Decimal

import pytest

from framework.models import TrailingSpec
from tests.engine.conftest import FAST

SIDES = ["long", "short"]
TICK = Decimal("0.0001")


def favourable(side: str, mark: Decimal, pct: str) -> Decimal:
    step = Decimal(pct) / 100
    return (mark * (1 + step if side == "long" else 1 - step)).quantize(TICK)


async def opened(env, side: str):
    await env.start(FAST)
    intent = env.intent(side, trailing=TrailingSpec(callback_rate=Decimal("1")))
    await env.engine.open(intent)
    return intent, env.parts.trailing, env.venue.mark_price(env.symbol)


@pytest.mark.parametrize("side", SIDES)
async def test_one_absurd_mark_tick_is_held_and_alerted_not_acted_on(env, side):
    _, trailing, mark = await opened(env, side)
    await trailing.on_mark_price(env.symbol, mark)
    stop = env.parts.book.get(env.symbol).stop.trigger_price
    absurd = Decimal(1_000_000) if side == "long" else (mark / 1000).quantize(TICK)
    await trailing.on_mark_price(env.symbol, absurd)
    assert trailing.moves[env.symbol] == 1 and trailing.held_ticks[env.symbol] == 1
    assert env.recorder.closed() == [] and env.parts.book.get(env.symbol).stop.trigger_price == stop
    assert any("held until confirmed" in a.message for a in env.recorder.seen["on_alert"])
    back = favourable(side, mark, "2")
    env.venue.set_mark_price(env.symbol, back)
    await trailing.on_mark_price(env.symbol, back)  # back in the band: trailing resumes
    assert trailing.moves[env.symbol] == 2 and env.venue.is_protected("default", env.symbol)


@pytest.mark.parametrize("side", SIDES)
async def test_a_new_level_confirmed_by_consecutive_ticks_is_accepted(env, side):
    _, trailing, mark = await opened(env, side)
    await trailing.on_mark_price(env.symbol, mark)
    level = favourable(side, mark, "8")  # beyond the 5 % band
    env.venue.set_mark_price(env.symbol, level)  # a real move: the venue's mark is there too
    for _ in range(FAST.mark_confirm_ticks):
        await trailing.on_mark_price(env.symbol, level)
    assert trailing.held_ticks[env.symbol] == FAST.mark_confirm_ticks - 1
    assert trailing.moves[env.symbol] == 2 and env.recorder.closed() == []  # the first tick's move, then this


@pytest.mark.parametrize("side", SIDES)
async def test_a_refused_move_that_the_venue_mark_does_not_confirm_keeps_the_old_stop(env, side):
    _, trailing, mark = await opened(env, side)
    await trailing.on_mark_price(env.symbol, mark)
    stop = env.parts.book.get(env.symbol).stop.trigger_price
    for _ in range(FAST.mark_confirm_ticks):  # a confirmed level the venue's own mark never reached
        await trailing.on_mark_price(env.symbol, favourable(side, mark, "8"))
    assert env.recorder.closed() == [] and env.venue.position("default", env.symbol).is_open
    assert env.parts.book.get(env.symbol).stop.trigger_price == stop
    assert env.venue.is_protected("default", env.symbol)
    assert any("does not confirm" in a.message for a in env.recorder.seen["on_alert"])


@pytest.mark.parametrize("side", SIDES)
async def test_a_refused_move_confirmed_by_the_venue_mark_exits_at_market(env, side):
    _, trailing, mark = await opened(env, side)
    await trailing.on_mark_price(env.symbol, mark)
    best = favourable(side, mark, "3")
    env.venue.set_mark_price(env.symbol, favourable(side, mark, "1.5"))  # it came back past the trail
    await trailing.on_mark_price(env.symbol, best)  # the best tick arrives late: the move is refused
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1)
    assert not env.venue.position("default", env.symbol).is_open
    assert env.venue.truth.wrong_side_orders() == []


@pytest.mark.parametrize("side", SIDES)
async def test_a_stop_the_trailing_manager_moved_closes_as_trailing_stop(env, side):
    _, trailing, mark = await opened(env, side)
    best = favourable(side, mark, "2")
    env.venue.set_mark_price(env.symbol, best)
    await trailing.on_mark_price(env.symbol, best)
    assert trailing.moves[env.symbol] >= 1
    stop = env.parts.book.get(env.symbol).stop.trigger_price
    through = stop * (Decimal("0.995") if side == "long" else Decimal("1.005"))
    env.venue.set_mark_price(env.symbol, through.quantize(TICK))  # the moved stop fires on the venue
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1)
    assert env.recorder.closed()[0].reason == "trailing_stop"


@pytest.mark.parametrize("side", SIDES)
async def test_a_trailing_position_whose_stop_never_moved_closes_as_stop_loss(env, side):
    await env.start(FAST)
    mark = env.venue.mark_price(env.symbol)
    never = favourable(side, mark, "50")  # the trail activates only there
    intent = env.intent(side, trailing=TrailingSpec(callback_rate=Decimal("1"), activation_price=never))
    await env.engine.open(intent)
    through = intent.stop_loss * (Decimal("0.995") if side == "long" else Decimal("1.005"))
    env.venue.set_mark_price(env.symbol, through.quantize(TICK))
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1)
    assert env.recorder.closed()[0].reason == "stop_loss"


@pytest.mark.parametrize("side", SIDES)
async def test_a_new_position_takes_its_first_tick_as_reference_not_the_closed_one_s_last(env, side):
    intent, trailing, mark = await opened(env, side)
    await trailing.on_mark_price(env.symbol, mark)
    assert await env.engine.close(env.venue_name, env.symbol) is True
    level = favourable(side, mark, "8")  # beyond the 5 % band from the closed position's last tick
    env.venue.set_mark_price(env.symbol, level)
    await env.engine.open(env.intent(side, trailing=TrailingSpec(callback_rate=Decimal("1"))))
    await trailing.on_mark_price(env.symbol, level)
    assert trailing.held_ticks[env.symbol] == 0  # not held as a jump: nothing was accepted for this position
    assert not any("held until confirmed" in a.message for a in env.recorder.seen["on_alert"])
    assert trailing.gate_price(env.symbol) == level and env.venue.is_protected("default", env.symbol)
