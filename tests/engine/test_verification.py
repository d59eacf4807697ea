"""Entry verification, the core's one algorithm for every venue (framework/engine/verification.py): stream
evidence from the PositionBook, then the order's status, then a snapshot's positions, within a budget; REST
lag is not absence, and what no source can tell is ``unknown`` (docs/incidents.md I-3, I-4)."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import pytest

from framework.engine.book import BookListener, PositionBook
from framework.errors import OrderRejected
from framework.models import Order

SIDES = ["long", "short"]
BOUND_S = 10.0


class Connected(BookListener, asyncio.Event):
    """Set when the stream has connected (the book asks for a reconciliation then)."""

    def reconcile_soon(self) -> None:
        self.set()


@contextlib.asynccontextmanager
async def connected(env, stream: bool):
    """The env's driver connected to its emulator, a book of its own, and (if ``stream``) the private stream
    feeding that book, connected before the test goes on."""
    await env.driver.connect(env.harness.config)
    connected_once = Connected()
    book = PositionBook(env.venue_name, env.harness.config.account, env.pm, store=None, listener=connected_once)
    task = asyncio.create_task(env.driver.run_stream(book)) if stream else None
    try:
        if task is not None:
            await asyncio.wait_for(connected_once.wait(), BOUND_S)
        yield book
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await env.driver.disconnect()


async def enter(env, book, side: str):
    intent = env.intent(side)
    book.begin_open(intent)
    order = await env.driver.normalize_order(await env.driver.create_entry(intent), intent)
    return intent, order


def unseen(env, intent) -> Order:
    """An order no source knows: an id the venue never issued, no client id."""
    return Order(venue=env.venue_name, symbol=env.symbol, id="987654321", side=intent.order_side,
                 amount=intent.contracts, status="open")


@pytest.mark.hooks("verify_position")
@pytest.mark.parametrize("side", SIDES)
async def test_the_stream_confirms_while_rest_positions_lag(env, side):
    env.venue.faults.rest_position_lag_ms = 30_000
    async with connected(env, stream=True) as book:
        intent, order = await enter(env, book, side)
        verification = await env.driver.verify_position(intent, order, 5_000, book)
    assert (verification.outcome, verification.contracts) == ("confirmed", Decimal(43))
    assert verification.source in ("stream", "order")  # the order answer may come first on a fast stream


@pytest.mark.hooks("verify_position")
@pytest.mark.parametrize("side", SIDES)
async def test_the_order_status_confirms_with_no_stream_and_rest_lagging(env, side):
    env.venue.faults.rest_position_lag_ms = 30_000
    async with connected(env, stream=False) as book:
        intent, order = await enter(env, book, side)
        verification = await env.driver.verify_position(intent, order, 5_000, book)
    assert (verification.outcome, verification.source, verification.contracts) == ("confirmed", "order", Decimal(43))


@pytest.mark.hooks("verify_position", "fetch_snapshot")
@pytest.mark.parametrize("side", SIDES)
async def test_the_snapshot_confirms_when_neither_stream_nor_order_can_tell(env, side):
    async with connected(env, stream=False) as book:
        intent, _ = await enter(env, book, side)
        verification = await env.driver.verify_position(intent, unseen(env, intent), 5_000, book)
    assert (verification.outcome, verification.source, verification.contracts) == ("confirmed", "rest", Decimal(43))


@pytest.mark.hooks("verify_position")
async def test_what_no_source_can_tell_is_unknown_not_absent(env):
    env.venue.faults.rest_position_lag_ms = 30_000  # the position exists, but no stream and REST lags
    async with connected(env, stream=False) as book:
        intent, _ = await enter(env, book, "long")
        verification = await env.driver.verify_position(intent, unseen(env, intent), 300, book)
    assert (verification.outcome, verification.source) == ("unknown", "none")


@pytest.mark.hooks("verify_position")
async def test_an_entry_the_venue_rejected_is_absent(env):
    env.venue.faults.reject_next_orders = 1
    async with connected(env, stream=False) as book:
        intent = env.intent("long")
        with pytest.raises(OrderRejected):
            await env.driver.create_entry(intent)
        rejected = Order(venue=env.venue_name, symbol=env.symbol, id=intent.client_order_id,
                         client_order_id=intent.client_order_id, side="buy", amount=intent.contracts,
                         status="rejected")
        verification = await env.driver.verify_position(intent, rejected, 1_000, book)
    assert (verification.outcome, verification.source) == ("absent", "order")
