"""The trailing manager's rules at their edges, longs and shorts: a trail starts at its activation price
itself, a move needs at least ``trailing_min_change_pct`` and ``trailing_min_interval_ms`` (both edges
included), a move is recorded with its side, previous and new trigger on the book's account, and a move
the venue answers "position gone" is one closure.

One manager over a real driver and emulator, the book and the database, without an engine: no mark stream
and no second manager, so every tick is the test's own, and the manager's clock is the test's
(``TrailingManager(clock=…)``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest

from framework.engine.book import BookPosition, PositionBook
from framework.engine.protection import Protector
from framework.engine.trailing import TrailingManager
from framework.errors import VenueError
from framework.models import TrailingSpec
from tests.engine.conftest import FAST, Env, venue_env
from tests.engine.intercept import SessionWrapper

SIDES = ["long", "short"]
MARK = Decimal("1.0000")  # the venue's mark all along: every stop below stays on its side of it
ACCOUNT = "second"  # not the default account: whatever is recorded must carry the book's own
RULES = FAST.model_copy(update={"trailing_min_change_pct": Decimal("1"), "trailing_min_interval_ms": 1_000})


class Clock:
    """The manager's clock (ms), set by the test."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Rig:
    env: Env
    book: PositionBook
    manager: TrailingManager
    clock: Clock

    @property
    def stop(self) -> Decimal:
        held = self.book.get(self.env.symbol)
        assert held is not None and held.stop is not None
        return held.stop.trigger_price

    async def tick(self, price: str, at: int | None = None) -> None:
        if at is not None:
            self.clock.now = at
        await self.manager.on_mark_price(self.env.symbol, Decimal(price))


@contextlib.asynccontextmanager
async def rig(store, venue_name: str, side: str, stop: str, activation: str | None = None,
              mark: Decimal = MARK) -> AsyncIterator[Rig]:
    """A ``side`` position of 43 contracts on the venue at ``mark``, in the book (account :data:`ACCOUNT`) with
    its stop at ``stop`` resting, trailed 3 % behind the best price (from ``activation`` on, if given)."""
    async with venue_env(venue_name, store) as env:
        await env.driver.connect(env.harness.config)
        try:
            env.venue.set_mark_price(env.symbol, mark)
            env.venue.place_order("default", env.symbol, "buy" if side == "long" else "sell", amount=Decimal(43))
            book = PositionBook(venue_name, ACCOUNT, env.pm, store, fill_grace_ms=0)
            protector = Protector(book, env.driver, store, env.pm, RULES)
            spec = TrailingSpec(callback_rate=Decimal("3"),
                                activation_price=Decimal(activation) if activation is not None else None)
            await book.add(BookPosition(env.symbol, side, Decimal(43), mark, Decimal(stop), trailing=spec,
                                        intent_id="fw-o-00000000trail", opened_at=1))
            assert await protector.protect(env.symbol) is not None
            clock = Clock(10_000)
            yield Rig(env, book, TrailingManager(book, env.driver, store, env.pm, protector, RULES, clock), clock)
        finally:
            await env.driver.disconnect()


def resting(env: Env) -> list[tuple[str, Decimal]]:
    """The stop-loss orders resting on the venue: (side, trigger)."""
    orders = env.venue.orders("default", env.symbol, open_only=True, conditional=True)
    return [(o.side, o.trigger_price) for o in orders]


@pytest.mark.parametrize("side", SIDES)
async def test_a_trail_starts_at_its_activation_price_itself(store, side):
    # long: activation 1.02, the trail 3 % behind it is 0.9894; short: 0.98 and 1.0094
    activation, short_of_it, stop, trailed = (
        ("1.02", "1.0199", "0.95", "0.9894") if side == "long" else ("0.98", "0.9801", "1.05", "1.0094"))
    async with rig(store, "binance", side, stop, activation) as r:
        await r.tick(short_of_it)
        assert r.manager.moves[r.env.symbol] == 0 and r.stop == Decimal(stop)
        await r.tick(activation)
        assert r.manager.moves[r.env.symbol] == 1 and r.stop == Decimal(trailed)
        assert resting(r.env) == [("sell" if side == "long" else "buy", Decimal(trailed))]
        # Once started the trail stays started: a move the interval held back is made on a later tick even
        # when the price is back short of the activation price.  The venue's mark is where the trail went.
        r.env.venue.set_mark_price(r.env.symbol, Decimal("1.03" if side == "long" else "0.97"))
        await r.tick("1.05" if side == "long" else "0.95", at=10_500)  # a new best, 500 ms after the move
        assert r.manager.moves[r.env.symbol] == 1 and r.stop == Decimal(trailed)
        await r.tick("1.01" if side == "long" else "0.99", at=11_000)
        assert r.manager.moves[r.env.symbol] == 2 and r.stop == Decimal("1.0185" if side == "long" else "0.9785")


@pytest.mark.parametrize("side", SIDES)
async def test_a_move_needs_the_minimum_change_and_interval_both_edges_included(store, side):
    # trailing_min_change_pct 1, trailing_min_interval_ms 1 000; the stop 3 % behind the best price.
    long = side == "long"
    async with rig(store, "binance", side, "0.95" if long else "1.05") as r:
        await r.tick("1.00", at=10_000)  # the first move: 0.95 → 0.97 (short: 1.05 → 1.03)
        assert r.manager.moves[r.env.symbol] == 1 and r.stop == Decimal("0.97" if long else "1.03")
        await r.tick("1.00995" if long else "0.99005", at=11_500)  # 0.9965 % tighter: not enough
        assert r.manager.moves[r.env.symbol] == 1 and r.stop == Decimal("0.97" if long else "1.03")
        await r.tick("1.01" if long else "0.99", at=11_500)  # exactly 1 % tighter: 0.9797 (short 1.0197)
        assert r.manager.moves[r.env.symbol] == 2 and r.stop == Decimal("0.9797" if long else "1.0197")
        await r.tick("1.03" if long else "0.98", at=12_499)  # enough, but 999 ms after the last move
        assert r.manager.moves[r.env.symbol] == 2 and r.stop == Decimal("0.9797" if long else "1.0197")
        await r.tick("1.03" if long else "0.98", at=12_500)  # 1 000 ms after it: 0.9991 (short 1.0094)
        assert r.manager.moves[r.env.symbol] == 3 and r.stop == Decimal("0.9991" if long else "1.0094")
        assert resting(r.env) == [("sell" if long else "buy", r.stop)]
        assert r.book.get(r.env.symbol).trailed


@pytest.mark.parametrize("side", SIDES)
async def test_a_tick_at_the_edge_of_the_mark_band_is_acted_on_and_one_beyond_it_is_held(store, side):
    # mark_jump_band_pct 5 of the last accepted price, here 2.00 (not 1: a band taken as 5 % / price differs)
    long = side == "long"
    async with rig(store, "binance", side, "1.90" if long else "2.10", mark=Decimal("2.0000")) as r:
        await r.tick("2.00")  # the position's first tick: its reference; 1.90 → 1.94 (short: 2.10 → 2.06)
        assert r.manager.moves[r.env.symbol] == 1 and r.stop == Decimal("1.94" if long else "2.06")
        edge = "2.10" if long else "1.90"  # exactly 5 % from 2.00
        r.env.venue.set_mark_price(r.env.symbol, Decimal(edge))  # the venue's mark went there too
        await r.tick(edge, at=11_000)
        assert r.manager.moves[r.env.symbol] == 2 and r.stop == Decimal("2.037" if long else "1.957")
        assert r.manager.held_ticks[r.env.symbol] == 0 and r.manager.gate_price(r.env.symbol) == Decimal(edge)
        await r.tick("2.2051" if long else "1.8049", at=12_000)  # 5.005 % from 2.10 (short: 1.90)
        assert r.manager.moves[r.env.symbol] == 2 and r.manager.held_ticks[r.env.symbol] == 1
        assert r.stop == Decimal("2.037" if long else "1.957")


@pytest.mark.parametrize("side", SIDES)
async def test_a_move_is_recorded_with_its_side_previous_and_new_trigger_on_the_book_s_account(store, side):
    long = side == "long"
    async with rig(store, "binance", side, "0.95" if long else "1.05") as r:
        await r.tick("1.00")
        held = r.book.get(r.env.symbol).stop
        assert held.trigger_price == Decimal("0.97" if long else "1.03") and held.side == side
        event = r.env.recorder.seen["on_stop_moved"][-1]
        assert (event.account, event.venue, event.symbol, event.side) == (ACCOUNT, "binance", r.env.symbol, side)
        assert (event.previous, event.current, event.order_id, event.unprotected_ms) == (
            Decimal("0.95" if long else "1.05"), held.trigger_price, held.order_id, 0)
        assert held.order_id is not None
        await r.book.writes.wait_drained(10)
        rows = await store.pool.fetch("SELECT account, trigger_price, venue_order_id, status FROM stops ORDER BY id")
        assert [tuple(row) for row in rows] == [
            (ACCOUNT, Decimal("0.95" if long else "1.05"), rows[0]["venue_order_id"], "replaced"),
            (ACCOUNT, held.trigger_price, held.order_id, "resting"),
        ]
        position = await store.pool.fetchrow("SELECT account, stop_loss FROM positions")
        assert tuple(position) == (ACCOUNT, held.trigger_price)


@pytest.mark.parametrize("side", SIDES)
async def test_a_move_the_venue_answers_position_gone_is_one_closure(store, side):
    # Bybit's trading-stop answers "can not set tp/sl/ts for zero position" (docs/conformance.md): the position
    # closed on the venue and the book has not heard (no stream here).
    async with rig(store, "bybit", side, "0.95" if side == "long" else "1.05") as r:
        r.env.venue.manual_close("default", r.env.symbol)
        await r.tick("1.00")
        assert not r.book.holds(r.env.symbol) and r.manager.moves[r.env.symbol] == 0
        assert [(e.side, e.reason, e.source) for e in r.env.recorder.closed()] == [(side, "position_gone", "error")]
        await r.tick("1.01", at=20_000)  # nothing left to trail
        assert len(r.env.recorder.closed()) == 1


class CloseRefused(SessionWrapper):
    """The venue refuses the close at market (a 503): the position stays, with its stop."""

    async def close_position(self, call, *args):
        raise VenueError("503 Service Unavailable (test)", venue="test")


@pytest.mark.parametrize("side", SIDES)
async def test_a_refused_move_alerts_on_its_venue_and_symbol_and_a_refused_close_after_it_too(store, side):
    long = side == "long"
    through = "1.01" if long else "0.99"  # a stop on the wrong side of the venue's mark (1.00): refused
    async with rig(store, "binance", side, "0.95" if long else "1.05") as r:
        old = r.book.get(r.env.symbol).stop
        await r.manager._move(r.env.symbol, Decimal(through), Decimal("1.2" if long else "0.8"))  # mark not near
        [warning] = [a for a in r.env.recorder.seen["on_alert"] if "does not confirm" in a.message]
        assert (warning.level, warning.venue, warning.symbol) == ("warning", "binance", r.env.symbol)
        CloseRefused().wrap(r.env.driver.session)
        with pytest.raises(VenueError):  # confirmed by the venue's mark: closed at market, which is refused
            await r.manager._move(r.env.symbol, Decimal(through), Decimal("1.02" if long else "0.98"))
        [critical] = [a for a in r.env.recorder.seen["on_alert"] if a.level == "critical"]
        assert (critical.venue, critical.symbol) == ("binance", r.env.symbol) and "still open" in critical.message
        assert r.book.get(r.env.symbol).stop == old and r.env.venue.is_protected("default", r.env.symbol)
        assert r.env.recorder.closed() == [] and r.manager.moves[r.env.symbol] == 0
