"""The trailing manager never acts on one absurd mark tick: a jump beyond ``mark_jump_band_pct`` is held and
alerted until confirmed, and a stop move the venue refuses as crossed closes the position only when the
venue's own fresh mark price confirms it (docs/incidents.md I-5); longs and shorts, both venues."""

from __future__ import annotations

from decimal import Decimal

import pytest

from framework.errors import VenueError
from framework.models import TrailingSpec
from tests.engine.conftest import FAST
from tests.engine.intercept import SessionWrapper

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


class SnapshotFails(SessionWrapper):
    """The fresh snapshot a refused move asks for cannot be had (a 503, a timeout)."""

    async def fetch_snapshot(self, call, *args):
        raise VenueError("503 Service Unavailable (test)", venue="test")


def on_grid(side: str, mark: Decimal) -> Decimal:
    """A best price 3 % in the position's favour from ``mark``, on a 0.01 grid: 1 % and 5 % from it are then
    exact on the 0.0001 tick grid (the trail's stop and the edge of the mark band)."""
    return favourable(side, mark, "3").quantize(Decimal("0.01"))


def toward_loss(side: str, best: Decimal, pct: str) -> Decimal:
    step = Decimal(pct) / 100
    return best * (1 - step if side == "long" else 1 + step)


async def trail_never_activated(env, side: str):
    """An engine-trailed position whose trail activates only 50 % away (the mark stream's ticks move
    nothing) and whose fixed stop rests 20 % away (the marks set below never fire it)."""
    await env.start(FAST)
    mark = env.venue.mark_price(env.symbol)
    trailing = TrailingSpec(callback_rate=Decimal("1"), activation_price=favourable(side, mark, "50"))
    intent = env.intent(side, stop_pct="20", trailing=trailing)
    await env.engine.open(intent)
    await env.settled()
    return on_grid(side, mark)


@pytest.mark.parametrize("edge", ["at_the_trigger", "at_the_band_edge"])
@pytest.mark.parametrize("side", SIDES)
async def test_a_refused_move_closes_when_the_venue_mark_is_at_the_trigger_or_the_band_edge(env, side, edge):
    # A stop fires at its trigger (the venue refuses a move to it), and a venue mark exactly
    # mark_jump_band_pct from the best price the trail followed is still within the band.
    best = await trail_never_activated(env, side)
    trigger = toward_loss(side, best, "1")  # callback_rate 1 % behind the best
    env.venue.set_mark_price(env.symbol, trigger if edge == "at_the_trigger"
                             else toward_loss(side, best, str(FAST.mark_jump_band_pct)))
    await env.parts.trailing._move(env.symbol, trigger, best)
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1)
    assert not env.venue.position("default", env.symbol).is_open and not env.parts.book.holds(env.symbol)
    assert env.venue.truth.wrong_side_orders() == []
    assert not any("does not confirm" in a.message for a in env.recorder.seen["on_alert"])


@pytest.mark.parametrize("side", SIDES)
async def test_a_refused_move_keeps_the_old_stop_when_the_venue_mark_is_beyond_the_band_or_unknown(env, side):
    best = await trail_never_activated(env, side)
    trigger = toward_loss(side, best, "1")
    beyond = toward_loss(side, best, str(FAST.mark_jump_band_pct + Decimal("0.01")))
    env.venue.set_mark_price(env.symbol, beyond.quantize(TICK))
    old = env.parts.book.get(env.symbol).stop
    await env.parts.trailing._move(env.symbol, trigger, best)  # refused: the venue's mark is through it
    SnapshotFails().wrap(env.driver.session)
    env.venue.set_mark_price(env.symbol, trigger)  # through, and near the best: only the snapshot is missing
    await env.parts.trailing._move(env.symbol, trigger, best)
    assert env.recorder.closed() == [] and env.venue.position("default", env.symbol).is_open
    assert env.parts.book.get(env.symbol).stop == old and env.venue.is_protected("default", env.symbol)
    assert len([a for a in env.recorder.seen["on_alert"] if "does not confirm" in a.message]) == 2


@pytest.mark.parametrize("side", SIDES)
async def test_the_trailing_stop_rests_exactly_the_callback_rate_behind_the_best_price(env, side):
    _, trailing, mark = await opened(env, side)  # callback_rate 1 %, no activation price
    best = on_grid(side, mark)
    env.venue.set_mark_price(env.symbol, best)
    await trailing.on_mark_price(env.symbol, best)
    expected = toward_loss(side, best, "1")  # on the tick grid: no rounding to hide a wrong distance
    held = env.parts.book.get(env.symbol).stop
    assert held.trigger_price == expected and held.side == side
    stops = [o.trigger_price for o in env.venue.orders("default", env.symbol, open_only=True, conditional=True)]
    attached = env.venue.position("default", env.symbol).stop_loss
    assert attached == expected if attached is not None else stops == [expected]
