"""A database outage during a run (issue 14): protection goes on from the book and the venue, closures fire
once with their real reason while the database is down, the journal catches up when it returns, and the
next position of the symbol is unaffected.  A real PostgreSQL database is made unreachable (connections
refused and cut), not a mock."""

from __future__ import annotations

import asyncio

import pytest

from framework.errors import StoreError
from framework.store import Store
from framework.store.testing import TestDatabases
from tests.engine.conftest import FAST, venue_env

SIDES = ["long", "short"]
BOUND_S = 10.0


async def closed_rows(store: Store, venue: str) -> list[tuple[str, str]]:
    rows = await store.pool.fetch("SELECT symbol, close_reason FROM positions WHERE venue = $1 AND status = 'closed'",
                                  venue)
    return [(r["symbol"], r["close_reason"]) for r in rows]


@pytest.mark.parametrize("venue_name", ["binance", "bybit"])
@pytest.mark.parametrize("side", SIDES)
async def test_a_closure_during_an_outage_fires_once_and_is_persisted_once_when_it_returns(databases, venue_name,
                                                                                         side):
    url = await databases.create()
    store = await Store.open(url, max_size=5)
    try:
        async with venue_env(venue_name, store) as env:
            await env.start(FAST)
            await env.engine.open(env.intent(side))
            await env.settled()
            async with databases.unreachable(url):
                env.venue.manual_close("default", env.symbol)
                await env.recorder.wait_for(lambda r: len(r.closed()) == 1, BOUND_S)
                [closed] = env.recorder.closed()
                assert closed.reason == "manual" and closed.price is not None
                assert env.parts.book.writes.pending >= 1, "the close was written through a database that is down"
                report = await env.parts.reconciler.reconcile()  # the backstop still runs, venue side only
                assert report["database_unavailable"] >= 1
            assert await env.parts.book.writes.wait_drained(BOUND_S)
            assert await closed_rows(store, venue_name) == [(env.symbol, "manual")]
            journal = await store.pool.fetch("SELECT kind FROM events WHERE venue = $1 ORDER BY id", venue_name)
            assert [r["kind"] for r in journal].count("closed") == 1
            # the next position of the symbol opens, closes and is journalled as usual
            await env.engine.open(env.intent(side))
            env.venue.manual_close("default", env.symbol)
            await env.recorder.wait_for(lambda r: len(r.closed()) == 2, BOUND_S)
            assert await env.parts.book.writes.wait_drained(BOUND_S)
            assert await closed_rows(store, venue_name) == [(env.symbol, "manual")] * 2
    finally:
        await store.close()


@pytest.mark.parametrize("side", SIDES)
async def test_a_stop_cancelled_during_an_outage_is_replaced_at_once(databases, side):
    url = await databases.create()
    store = await Store.open(url, max_size=5)
    try:
        async with venue_env("binance", store) as env:
            await env.start(FAST)
            intent = env.intent(side)
            await env.engine.open(intent)
            await env.settled()
            async with databases.unreachable(url):
                moves = len(env.recorder.seen["on_stop_moved"])
                for stop in env.venue.orders("default", env.symbol, open_only=True, conditional=True):
                    env.venue.cancel_order("default", env.symbol, stop.id)
                await env.recorder.wait_for(lambda r: len(r.seen["on_stop_moved"]) > moves, BOUND_S)
                assert env.venue.is_protected("default", env.symbol)
                assert env.parts.book.get(env.symbol).stop.trigger_price == intent.stop_loss
            assert await env.parts.book.writes.wait_drained(BOUND_S)
            rows = await store.pool.fetch("SELECT status FROM stops WHERE venue = 'binance' ORDER BY id")
            assert [r["status"] for r in rows][-1] == "resting"
    finally:
        await store.close()


async def test_an_open_during_an_outage_sends_nothing_and_says_why(databases):
    url = await databases.create()
    store = await Store.open(url, max_size=5)
    try:
        async with venue_env("binance", store) as env:
            await env.start(FAST)
            await env.settled()
            async with databases.unreachable(url):
                with pytest.raises(StoreError, match="nothing sent"):
                    await env.engine.open(env.intent("long"))
            assert env.venue.truth.orders == [] and env.venue.truth.fills == []
            await env.engine.open(env.intent("long"))  # the database is back: signals are accepted again
            assert env.venue.is_protected("default", env.symbol)
    finally:
        await store.close()


@pytest.mark.parametrize("venue_name", ["binance", "bybit"])
async def test_the_database_server_stopped_and_restarted_during_a_run(venue_name):
    # The server process itself goes away (connections refused) and comes back on the same data directory:
    # the closure during the outage fires once with its reason, is persisted once after the restart, and a
    # stop removed meanwhile is re-protected without the database.
    server = await asyncio.to_thread(lambda: TestDatabases(embedded=True))  # its own server, to stop
    try:
        store = await server.store()
        try:
            async with venue_env(venue_name, store) as env:
                await env.start(FAST)
                await env.engine.open(env.intent("short"))
                await env.settled()
                async with server.server_stopped():
                    env.venue.manual_close("default", env.symbol)
                    await env.recorder.wait_for(lambda r: len(r.closed()) == 1, BOUND_S)
                    assert env.recorder.closed()[0].reason == "manual" and env.parts.book.writes.pending >= 1
                assert await env.parts.book.writes.wait_drained(BOUND_S * 3)
                assert await closed_rows(store, venue_name) == [(env.symbol, "manual")]
        finally:
            await store.close()
    finally:
        await server.release()
