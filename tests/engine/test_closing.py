"""Closing on purpose (``Engine.close``): a reduce-only market order on the closing side, journalled before
it is sent and resolved after; one ``on_position_closed`` with reason and price; a venue that says the
position is gone means closed; any other refusal keeps the position, protected, and raises an alert."""

from __future__ import annotations

from decimal import Decimal

import pytest

from framework.engine.book import BookPosition, PositionBook
from framework.engine.closing import close_on_venue
from framework.errors import VenueError
from framework.models import close_side
from tests.engine.conftest import close_orders, venue_env
from tests.engine.intercept import SessionWrapper

BOUND_S = 5.0
SIDES = ["long", "short"]


@pytest.mark.parametrize("stream", ["live", "silent"])
@pytest.mark.parametrize("side", SIDES)
async def test_close_sends_a_reduce_only_order_on_the_closing_side_and_journals_it(env, side, stream):
    await env.start()
    intent = env.intent(side)
    await env.engine.open(intent)
    await env.settled()
    if stream == "silent":  # the order's own answer must then close the book, with reason and price
        env.venue.faults.drop_rate = 1.0
    assert await env.engine.close(env.venue_name, env.symbol) is True
    env.venue.faults.drop_rate = 0.0
    [event] = env.recorder.closed()
    assert event.reason == "reduce_only_close" and event.side == side and event.price is not None
    if stream == "silent":
        assert event.source == "engine" and event.price == (await close_orders(env))[0]["average"]
    assert not env.parts.book.holds(env.symbol)
    assert not env.venue.position("default", env.symbol).is_open
    closing = close_side(side)
    [row] = await close_orders(env)
    assert row["client_order_id"].startswith("fw-c-")
    assert (row["side"], row["contracts"], row["reduce_only"], row["state"]) == (closing, intent.contracts, True,
                                                                                 "closed")
    assert row["filled"] == intent.contracts and row["venue_order_id"] and row["average"] == event.price
    [fill] = [f for f in env.venue.truth.fills if f.client_order_id == row["client_order_id"]]
    assert (fill.side, fill.amount) == (closing, intent.contracts)
    assert env.venue.truth.wrong_side_orders() == []
    assert await env.engine.close(env.venue_name, env.symbol) is False  # nothing left to close


@pytest.mark.parametrize("side", SIDES)
async def test_a_refused_close_keeps_the_position_protected_and_alerts(env, side):
    await env.start()
    await env.engine.open(env.intent(side))
    await env.settled()
    env.venue.faults.http_error_status = 503
    env.venue.faults.http_error_next = 1
    with pytest.raises(VenueError):
        await env.engine.close(env.venue_name, env.symbol)
    assert env.parts.book.holds(env.symbol) and env.recorder.closed() == []
    assert env.venue.is_protected("default", env.symbol)
    [row] = await close_orders(env)
    assert row["state"] == "unknown"  # resolved later by client order id, never assumed rejected
    [alert] = [a for a in env.recorder.seen["on_alert"] if a.level == "critical"]
    assert (alert.venue, alert.symbol) == (env.venue_name, env.symbol) and "still open" in alert.message


async def test_a_close_the_venue_answers_position_gone_is_a_closure(env):
    await env.start()
    await env.engine.open(env.intent("long"))
    await env.settled()
    env.venue.faults.drop_rate = 1.0  # the book hears nothing of the venue's close (frames go out later)
    env.venue.manual_close("default", env.symbol)
    assert env.parts.book.holds(env.symbol)
    assert await env.engine.close(env.venue_name, env.symbol) is True
    env.venue.faults.drop_rate = 0.0
    assert [(e.reason, e.source) for e in env.recorder.closed()] == [("position_gone", "error")]
    [row] = await close_orders(env)
    assert row["state"] == "rejected"
    assert [f.client_order_id for f in env.venue.truth.fills if f.client_order_id == row["client_order_id"]] == []
    assert sum(1 for f in env.venue.truth.fills if f.side == "sell") == 1  # only the venue's own close


def test_close_side_is_the_opposite_of_the_position_side():
    assert (close_side("long"), close_side("short")) == ("sell", "buy")
    with pytest.raises(ValueError):
        close_side("buy")


def position_before_execution(topics: list[str]) -> bool:
    return "position" in topics and "execution" in topics and topics.index("position") < topics.index("execution")


@pytest.mark.parametrize("side", SIDES)
async def test_a_bybit_stop_loss_closure_is_reported_once_whatever_the_order_of_topics(store, side):
    """Bybit documents no order between its position, execution and order topics (docs/conformance.md
    Y6): with the frames of each burst shuffled across topics, every stop-loss closure is still reported
    once, as ``stop_loss``, at the stop's fill price — including when the flat position frame comes first."""
    async with venue_env("bybit", store, {"faults": {"shuffle_topics": True}}) as env:
        await env.start()
        emulator, tick = env.harness.emulator, env.venue.instrument(env.symbol).tick_size
        rounds, flat_first = 0, 0
        while rounds < 3 or not flat_first:
            assert rounds < 12, "the seeded shuffle never sent the flat position frame first"
            rounds += 1
            start_mark = env.venue.mark_price(env.symbol)
            intent = env.intent(side)
            await env.engine.open(intent)
            beyond = intent.stop_loss - tick if side == "long" else intent.stop_loss + tick
            await emulator.drain_streams()
            emulator.burst_topics.clear()
            env.venue.set_mark_price(env.symbol, beyond)
            await env.recorder.wait_for(lambda r, n=rounds: len(r.closed()) >= n, BOUND_S)
            flat_first += any(position_before_execution(t) for t in emulator.burst_topics)
            fill = env.venue.truth.fills[-1]
            assert fill.origin == "stop_loss"
            event = env.recorder.closed()[-1]
            assert (event.reason, event.side, event.price) == ("stop_loss", side, fill.price)
            assert not env.parts.book.holds(env.symbol)
            env.venue.set_mark_price(env.symbol, start_mark)
        await emulator.drain_streams()
        assert len(env.recorder.closed()) == rounds  # once each, never twice


class SeesTheJournal(SessionWrapper):
    """Reads the close's journal row at the moment the close order goes to the venue."""

    def __init__(self, store) -> None:
        self.store = store
        self.rows: list[tuple] = []

    async def close_position(self, call, *args):
        rows = await self.store.pool.fetch("SELECT account, side, contracts, reduce_only, state FROM orders "
                                           "WHERE purpose = 'close'")
        self.rows += [tuple(r) for r in rows]
        return await call(*args)


@pytest.mark.parametrize("side", SIDES)
async def test_a_close_is_journalled_as_submitted_before_it_is_sent_and_closes_at_the_venue_s_time(store, side):
    async with venue_env("binance", store) as env:
        await env.start()
        intent = env.intent(side)
        await env.engine.open(intent)
        await env.settled()
        journal = SeesTheJournal(store)
        journal.wrap(env.driver.session)
        env.venue.faults.drop_rate = 1.0  # the order's own answer closes the book
        assert await env.engine.close(env.venue_name, env.symbol) is True
        assert journal.rows == [("default", close_side(side), intent.contracts, True, "submitted")]
        [event] = env.recorder.closed()
        [row] = await close_orders(env)
        [fill] = [f for f in env.venue.truth.fills if f.client_order_id == row["client_order_id"]]
        assert (event.reason, event.source, event.timestamp) == ("reduce_only_close", "engine", fill.ts)


async def test_a_close_of_nothing_held_or_with_no_attempt_left_sends_nothing_and_says_so(store):
    async with venue_env("bybit", store) as env:
        await env.start()
        await env.engine.open(env.intent("long"))
        await env.settled()
        parts = env.parts
        orders = len(env.venue.truth.orders)
        assert await close_on_venue(parts.book, parts.driver, store, env.pm, env.symbol, attempts=0) is False
        assert await close_on_venue(parts.book, parts.driver, store, env.pm, "BTC/USDT:USDT") is False
        assert len(env.venue.truth.orders) == orders and parts.book.holds(env.symbol)
        assert env.venue.position("default", env.symbol).is_open and env.recorder.closed() == []


@pytest.mark.parametrize("known", ["stop", "entry", "neither"])
@pytest.mark.parametrize("side", SIDES)
async def test_a_close_is_journalled_on_the_book_s_account_under_the_position_it_closes(store, side, known):
    # The close's row carries the book's own account (not the default one), and as its intent the position it
    # closes: the stop price, else the entry price. A position the book knows neither price of (adopted from a
    # snapshot without one) is closed all the same.
    async with venue_env("binance", store) as env:
        await env.driver.connect(env.harness.config)
        try:
            mark = env.venue.mark_price(env.symbol)
            env.venue.place_order("default", env.symbol, "buy" if side == "long" else "sell", amount=Decimal(43))
            stop = mark * (Decimal("0.9") if side == "long" else Decimal("1.1"))
            book = PositionBook("binance", "second", env.pm, store, fill_grace_ms=0)
            await book.add(BookPosition(env.symbol, side, Decimal(43), None if known == "neither" else mark,
                                        stop if known == "stop" else None, opened_at=1))
            assert await close_on_venue(book, env.driver, store, env.pm, env.symbol) is True
            assert not env.venue.position("default", env.symbol).is_open and not book.holds(env.symbol)
            [row] = await store.pool.fetch("SELECT account, side, state, intent FROM orders WHERE purpose = 'close'")
            assert (row["account"], row["side"], row["state"]) == ("second", close_side(side), "closed")
            recorded = {"stop": stop, "entry": mark, "neither": Decimal(1)}[known]  # 1: the model needs a price
            assert (row["intent"]["account"], Decimal(row["intent"]["stop_loss"])) == ("second", recorded)
        finally:
            await env.driver.disconnect()
