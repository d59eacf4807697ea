"""Crash-restart: the process dies at each step of an open; a new Engine on the same DB and venue
reconciles to no duplicate entry, no unprotected position and no orphan."""

from __future__ import annotations

import asyncio
import functools
from decimal import Decimal

import pytest

from framework import hookimpl
from framework.engine.lease import ACTING_METHODS
from framework.models import TrailingSpec
from tests.engine.conftest import until, venue_env
from tests.engine.intercept import SessionWrapper


class Crash(BaseException):
    """The process dies here (not an Exception: no rollback, no cleanup runs)."""


class CrashAt(SessionWrapper):
    """Kills the open at one hook or operation, after the venue executed it."""

    def __init__(self, hook: str) -> None:
        self.hook = hook

    async def _then_crash(self, name, call, *args):
        answer = await call(*args)
        if name == self.hook:
            raise Crash(name)
        return answer

    async def create_entry(self, call, intent):
        return await self._then_crash("create_entry", call, intent)

    async def normalize_order(self, call, raw, intent):
        return await self._then_crash("normalize_order", call, raw, intent)

    @hookimpl(wrapper=True)
    def verify_position(self, session, intent, order, budget_ms):
        pending = yield
        if self.hook != "verify_position":
            return pending

        async def then_crash():
            await pending
            raise Crash("verify_position")

        return then_crash()

    @hookimpl
    def on_order_submitted(self, intent):
        if self.hook == "on_order_submitted":
            raise Crash("on_order_submitted")


@pytest.mark.parametrize("step", ["on_order_submitted", "create_entry", "normalize_order", "verify_position"])
async def test_restart_after_a_crash_converges(env, step):
    await env.start(extra_plugins=(("crash", CrashAt(step)),))
    intent = env.intent()
    with pytest.raises(Crash):
        await env.engine.open(intent)
    await env.engine.stop()  # tasks and sockets go; no flatten, no rollback
    env.pm.unregister(name="crash")
    await env.start()  # a new process on the same database and venue: reconciles at start

    venue_positions = env.venue.positions("default")
    entries = [o for o in env.venue.truth.orders if o.client_order_id == intent.client_order_id]
    assert len(entries) <= 1  # no duplicate entry
    open_rows = await env.store.open_positions("default", env.venue_name)
    book = env.parts.book
    if step == "on_order_submitted":
        assert venue_positions == [] and open_rows == [] and not book.positions()
    else:
        [held] = venue_positions
        assert held.contracts == intent.contracts and held.side == "long"
        assert [r.symbol for r in open_rows] == [env.symbol]  # no orphan, no duplicate row
        assert book.holds(env.symbol) and book.get(env.symbol).stop is not None
        assert env.venue.is_protected("default", env.symbol)
        env.assert_protected_but_for_the_fill_to_stop_window(intent)
    assert env.venue.truth.wrong_side_orders() == []
    unresolved = await env.store.unresolved_orders("default", env.venue_name)
    assert unresolved == []


class CrashInMove(SessionWrapper):
    """Kills the process around the first stop move, whoever starts it (the mark-price watcher, usually):
    before the driver is called, or after the venue executed it. The Crash ends only the task that makes the move;
    the process being dead, nothing of it acts on the venue afterwards (a reconciliation pass of that engine would
    otherwise act on the book the crash left, which no real crash lets happen)."""

    def __init__(self, when: str) -> None:
        self.when = when
        self.fired = asyncio.Event()

    def wrap(self, session):
        session = super().wrap(session)
        for name in ACTING_METHODS:
            setattr(session, name, functools.partial(self._unless_dead, getattr(session, name)))
        return session

    async def _unless_dead(self, call, *args):
        if self.fired.is_set():
            raise Crash("the process is dead")
        return await call(*args)

    def _crash(self, where: str) -> Crash:
        self.fired.set()
        return Crash(where)

    async def move_stop_loss(self, call, stop, trigger_price):
        if self.when == "before":
            raise self._crash("before move_stop_loss")
        await call(stop, trigger_price)
        raise self._crash("after move_stop_loss")


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.hooks("move_stop_loss", "on_stop_moved")
async def test_restart_after_a_crash_during_a_stop_move_converges(env, when):
    crash = CrashInMove(when)
    await env.start(extra_plugins=(("crash", crash),))
    intent = env.intent(trailing=TrailingSpec(callback_rate=Decimal("0.5")))
    await env.engine.open(intent)
    price = (env.venue.mark_price(env.symbol) * Decimal("1.03")).quantize(Decimal("0.0001"))
    env.venue.set_mark_price(env.symbol, price)  # the engine's mark-price watcher trails the stop
    await asyncio.wait_for(crash.fired.wait(), 5)
    await env.engine.stop()
    env.pm.unregister(name="crash")
    await env.start()

    [held] = env.venue.positions("default")
    assert held.contracts == intent.contracts
    assert env.venue.is_protected("default", env.symbol)
    env.assert_protected_but_for_the_fill_to_stop_window(intent)
    assert env.parts.book.holds(env.symbol) and env.parts.book.get(env.symbol).stop is not None
    assert [r.symbol for r in await env.store.open_positions("default", env.venue_name)] == [env.symbol]
    await env.parts.reconciler.reconcile()  # the backstop: duplicates left by the crash are cancelled
    # The restarted engine's mark socket subscribes, then its first tick may move the stop (new, then cancel
    # old): judge the resting stops once that tick was handled and with no move in flight.
    await until(lambda: env.parts.trailing.gate_price(env.symbol) is not None)
    async with env.parts.book.stop_lock(env.symbol):
        resting = env.venue.orders("default", env.symbol, open_only=True, conditional=True)
    assert len(resting) <= 1, f"duplicate stops left resting: {resting}"
    assert env.venue.is_protected("default", env.symbol)
    assert env.venue.truth.wrong_side_orders() == []


@pytest.mark.parametrize("venue_name", ["binance", "bybit"])
async def test_a_server_error_loading_markets_at_start_is_retried(store, venue_name):
    async with venue_env(venue_name, store) as env:
        env.venue.faults.http_error_status = 503
        env.venue.faults.http_error_next = 1  # the first call: loading the markets
        await env.start()
        assert env.venue.faults.http_error_next == 0, "the fault never fired: the test tested nothing"
        await env.settled()
        await env.engine.open(env.intent("long"))
        assert env.venue.is_protected("default", env.symbol)
