"""Every critical condition of docs/incidents.md reaches a person: one message per incident class, through
``framework.alerts`` (apprise ``json://``) to a local receiver, naming venue and symbol, what happened and
what the framework did about it.  Longs and shorts, both venues (issue 18)."""

from __future__ import annotations

import pytest

from framework.alerts import AlertDelivery
from framework.errors import RollbackFailed, VenueError
from tests.alert_receiver import receiver
from tests.engine.test_rollback import FailAfterFill, failed_open

SIDES = ["long", "short"]


def messages(bodies: list[dict], title: str, words: str) -> list[str]:
    return [b["message"] for b in bodies if b["title"] == title and words in b["message"]]


async def start_with_delivery(env, url: str) -> AlertDelivery:
    delivery = AlertDelivery([url], min_level="warning", backoff_s=0.05)
    await env.start(extra_plugins=(("framework.alerts", delivery),))
    return delivery


@pytest.mark.parametrize("side", SIDES)
async def test_each_incident_class_gives_one_message_saying_what_happened_and_what_was_done(env, side):
    async with receiver() as (rec, url):
        delivery = await start_with_delivery(env, url)
        try:
            await env.engine.open(env.intent(side))
            await env.settled()
            where = f"{env.venue_name} {env.symbol}"

            # I-5: a stop disappears from the venue -> re-protected, one warning and one resolution
            for stop in env.venue.orders("default", env.symbol, open_only=True, conditional=True):
                env.venue.cancel_order("default", env.symbol, stop.id)
            if env.venue.position("default", env.symbol).stop_loss is not None:
                env.venue.set_trading_stop("default", env.symbol, stop_loss=0)
            await rec.wait_for(lambda b: any(t["title"].startswith(f"resolved: {where}") for t in b))

            # I-1 / I-4: no stop can be placed -> one critical saying reconciliation tries again
            env.venue.faults.drop_rate = 1.0  # the stream will not tell the engine anything meanwhile
            env.venue.faults.http_error_status, env.venue.faults.http_error_next = 503, 10**6
            await env.parts.protector.protect(env.symbol)
            await env.parts.protector.protect(env.symbol)  # the same condition again: not sent twice

            # I-1: the close is refused -> one critical saying the position keeps its stop
            with pytest.raises(VenueError):
                await env.engine.close(env.venue_name, env.symbol)
            env.venue.faults.http_error_next = 0
            env.venue.faults.drop_rate = 0.0
            await delivery.drained()
        finally:
            await env.engine.stop()
            await delivery.aclose()
        bodies = rec.bodies
    assert len(messages(bodies, f"WARNING {where}", "removed on the venue; re-protecting")) == 1
    [unprotected] = messages(bodies, f"CRITICAL {where}", "position without stop-loss")
    assert "reconciliation tries again" in unprotected
    [refused] = messages(bodies, f"CRITICAL {where}", "close failed")
    assert "still open with its stop" in refused and "resolved by client order id" in refused
    assert delivery.counters["suppressed"] >= 1 and delivery.counters["failed"] == 0


@pytest.mark.parametrize("side", SIDES)
async def test_a_rollback_that_cannot_show_flat_alerts_once_and_says_whether_a_stop_rests(env, side):
    # I-3: every venue call fails after the fill and the stream is silent: nothing proves the venue flat
    async with receiver() as (rec, url):
        delivery = AlertDelivery([url], min_level="warning", backoff_s=0.05)
        await failed_open(env, side, ("fail-after-fill", FailAfterFill(env, http_error_status=503,
                                                                      http_error_next=1_000, drop_rate=1.0)),
                          ("framework.alerts", delivery), raises=RollbackFailed)
        env.venue.faults.http_error_next = 0
        await delivery.drained()
        await delivery.aclose()
        bodies = rec.bodies
    [critical] = messages(bodies, f"CRITICAL {env.venue_name} {env.symbol}", "rollback could not show the venue flat")
    expected = "its stop left resting" if env.stop_rests_by_the_fill else "no stop rests"
    assert expected in critical and "reconciliation adopts and protects" in critical
    assert env.venue.is_protected("default", env.symbol) == env.stop_rests_by_the_fill
