"""A venue that rate-limits us (issue 14 item 6): every call to it waits out the pause, a rate-limited close
is tried again after it and closes once, a rate-limited entry is refused without a rollback
(tests/engine/test_rollback.py), and none of it raises a critical alert; longs and shorts, both venues."""

from __future__ import annotations

import pytest

from framework.engine.closing import CLOSE_ATTEMPTS
from framework.errors import RateLimited
from framework.models import close_side
from tests.engine.conftest import close_orders
from tests.engine.intercept import SessionWrapper

SIDES = ["long", "short"]


async def close_states(env) -> list[str]:
    """The journal states of the close orders, oldest first."""
    return [row["state"] for row in await close_orders(env)]


@pytest.mark.parametrize("side", SIDES)
async def test_a_rate_limited_close_is_tried_again_after_the_pause_and_closes_once(env, side):
    await env.start()
    await env.engine.open(env.intent(side))
    await env.settled()
    env.venue.faults.http_error_status = 429
    env.venue.faults.http_error_next = CLOSE_ATTEMPTS - 1  # every attempt but the last is refused
    assert await env.engine.close(env.venue_name, env.symbol)
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1)
    assert [e.reason for e in env.recorder.closed()] == ["reduce_only_close"]
    assert not env.venue.position("default", env.symbol).is_open
    assert env.parts.driver.counters["rate_limited"] == CLOSE_ATTEMPTS - 1
    assert env.parts.driver.counters["rate_limit_waits"] >= CLOSE_ATTEMPTS - 1
    assert not [a for a in env.recorder.seen["on_alert"] if a.level == "critical"]
    assert env.venue.truth.wrong_side_orders() == []
    assert await close_states(env) == ["rejected"] * (CLOSE_ATTEMPTS - 1) + ["closed"]  # refused: not executed


async def test_a_close_rate_limited_every_time_alerts_and_leaves_the_position_protected(env):
    await env.start()
    await env.engine.open(env.intent("long"))
    await env.settled()
    env.venue.faults.http_error_status = 429
    env.venue.faults.http_error_next = CLOSE_ATTEMPTS
    with pytest.raises(RateLimited):
        await env.engine.close(env.venue_name, env.symbol)
    assert env.parts.book.holds(env.symbol) and env.venue.is_protected("default", env.symbol)
    [critical] = [a for a in env.recorder.seen["on_alert"] if a.level == "critical"]
    assert "rate limited" in critical.message and (critical.venue, critical.symbol) == (env.venue_name, env.symbol)
    assert await close_states(env) == ["rejected"] * CLOSE_ATTEMPTS


class ClosedOnTheVenueWhileRateLimited(SessionWrapper):
    """The first close is refused as rate limited; meanwhile the position is closed on the venue (by hand) and
    the book hears of it through the stream before the close would be tried again."""

    def __init__(self, env) -> None:
        self.env = env
        self.calls = 0

    async def close_position(self, call, *args):
        self.calls += 1
        if self.calls > 1:
            return await call(*args)
        self.env.venue.manual_close("default", self.env.symbol)
        await self.env.recorder.wait_for(lambda r: len(r.closed()) == 1)
        raise RateLimited("too many requests (test)", venue=self.env.venue_name)


@pytest.mark.parametrize("side", SIDES)
async def test_a_position_closed_on_the_venue_while_its_close_was_rate_limited_is_reported_closed(env, side):
    await env.start()
    await env.engine.open(env.intent(side))
    await env.settled()
    venue = ClosedOnTheVenueWhileRateLimited(env)
    venue.wrap(env.driver.session)
    assert await env.engine.close(env.venue_name, env.symbol) is True  # it left the book during the call
    assert venue.calls == 1  # nothing more was sent for a position no longer held
    assert [e.side for e in env.recorder.closed()] == [side] and not env.parts.book.holds(env.symbol)
    assert [f.origin for f in env.venue.truth.fills if f.side == close_side(side)] == ["manual"]


async def test_the_venue_s_own_wait_is_honoured(env):
    # Binance: Retry-After on a 418/429; Bybit: X-Bapi-Limit-Reset-Timestamp (docs/conformance.md)
    await env.start()
    await env.settled()
    await env.parts.driver.rate_limit_pause()
    env.venue.faults.http_error_status = 429
    env.venue.faults.http_error_next = 1
    with pytest.raises(RateLimited) as refused:
        await env.parts.driver.fetch_snapshot()
    assert refused.value.retry_after_ms is not None and 0 < refused.value.retry_after_ms <= 1_000
    assert 0 < env.parts.driver.paused_for_ms() <= refused.value.retry_after_ms
