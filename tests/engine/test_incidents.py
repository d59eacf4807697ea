"""The five incidents, reproduced with the emulators' fault knobs; outcomes read from ``venue.truth``."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from framework.errors import OrderIncomplete
from framework.models import TrailingSpec, close_side
from tests.engine.conftest import FAST, NO_GRACE, move_stop_toward_mark, venue_env
from tests.engine.intercept import SessionWrapper

BOUND_S = 5.0  # a closure must reach the DB within this bound (I-1: it took 140 s)


async def db_statuses(env) -> list[str]:
    rows = await env.store.pool.fetch("SELECT status FROM positions WHERE venue = $1 ORDER BY id", env.venue_name)
    return [r["status"] for r in rows]


def cross_stop(env, intent) -> None:
    """Move the mark price through the stop so the venue triggers it."""
    step = Decimal("0.995") if intent.side == "long" else Decimal("1.005")
    env.venue.set_mark_price(env.symbol, intent.stop_loss * step)


async def test_i1_stop_fill_with_lost_flat_frame_closes_once_with_no_stop_attempt(env):
    await env.start()
    intent = env.intent()
    await env.engine.open(intent)
    env.venue.faults.drop_closing_frames = 1
    cross_stop(env, intent)
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1, BOUND_S)
    assert await db_statuses(env) == ["closed"]
    assert env.recorder.closed()[0].reason == "stop_loss"
    report = await env.parts.reconciler.reconcile()  # the periodic sweep finds nothing to protect
    assert report["reprotected"] == 0 and report["adopted"] == 0
    assert env.parts.protector.stop_attempts[env.symbol] == 0
    assert env.venue.truth.orders_for_closed_positions() == []
    assert len(env.recorder.closed()) == 1


async def test_i1_closure_without_any_stream_evidence_is_closed_by_reconciliation(env):
    await env.start(NO_GRACE)
    await env.engine.open(env.intent())
    env.venue.faults.drop_rate = 1.0  # the private stream says nothing at all
    env.venue.manual_close("default", env.symbol)
    report = await asyncio.wait_for(env.parts.reconciler.reconcile(), BOUND_S)  # (or a pass already running)
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1, BOUND_S)
    assert report["reprotected"] == 0
    assert await db_statuses(env) == ["closed"]
    assert env.parts.protector.stop_attempts[env.symbol] == 0
    assert [(e.reason, e.source) for e in env.recorder.closed()] == [("reconcile", "reconcile")]
    # whichever pass closed it (the one the stream's connect requested may have), it counted the closure once
    assert sum(r["closed"] for _, r in env.recorder.seen["on_reconciled"]) == 1


async def test_i2_late_flat_frame_neither_resurrects_nor_double_closes(env):
    await env.start()
    await env.engine.open(env.intent())
    env.venue.faults.delay_closing_frames_ms = 300
    env.venue.faults.rest_position_lag_ms = 0
    env.venue.manual_close("default", env.symbol)
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1, BOUND_S)
    book = env.parts.book
    assert await book.wait_for(env.symbol, lambda u: u is not None and u.contracts == 0, BOUND_S)
    await env.parts.reconciler.reconcile()
    assert not book.holds(env.symbol)
    assert len(env.recorder.closed()) == 1 and env.recorder.closed()[0].reason == "manual"
    assert await db_statuses(env) == ["closed"]


class IncompleteNormalize(SessionWrapper):
    """A driver answer that cannot be completed (I-3): normalize_order fails after the entry filled."""

    async def normalize_order(self, call, raw, intent):
        raise OrderIncomplete("side unknown", venue="test")  # the driver is never asked: "incomplete"


async def test_i3_rollback_from_intent_leaves_the_venue_flat_with_no_wrong_side_order(env):
    env.venue.faults.minimal_order_response = True
    env.venue.faults.rest_position_lag_ms = 30_000
    await env.start(extra_plugins=(("incomplete", IncompleteNormalize()),))
    intent = env.intent(contracts="43")
    with pytest.raises(OrderIncomplete):
        await env.engine.open(intent)
    assert env.venue.position("default", env.symbol).contracts == 0
    assert env.venue.truth.wrong_side_orders() == []
    assert await env.store.open_positions("default", env.venue_name) == []
    assert env.recorder.opened() == [] and env.recorder.closed() == []
    assert not env.parts.book.holds(env.symbol) and not env.parts.book.opening(env.symbol)
    rows = await env.store.pool.fetch("SELECT purpose, side FROM orders WHERE purpose = 'rollback'")
    assert rows and {r["side"] for r in rows} == {"sell"}


async def test_i4_stop_placed_while_rest_positions_lag_30s(env):
    env.venue.faults.rest_position_lag_ms = 30_000
    await env.start()
    intent = env.intent(side="short")
    position = await env.engine.open(intent)
    assert position.contracts == Decimal("43")
    env.assert_protected_but_for_the_fill_to_stop_window(intent)
    cross_stop(env, intent)  # the stop really rests on the venue: it fires
    await env.recorder.wait_for(lambda r: len(r.closed()) == 1, BOUND_S)
    assert env.venue.position("default", env.symbol).contracts == 0
    assert env.recorder.closed()[0].reason == "stop_loss"


@pytest.mark.parametrize("side", ["long", "short"])
async def test_i5_trailing_moves_leave_no_unprotected_time_and_only_tighten(env, side):
    await env.start(NO_GRACE)
    intent = env.intent(side, trailing=TrailingSpec(callback_rate=Decimal("1")))
    await env.engine.open(intent)
    trailing = env.parts.trailing
    mark = env.venue.mark_price(env.symbol)
    # favourable, more favourable, a retrace, the most favourable: for a short, "favourable" is down
    factors = ("1.01", "1.02", "1.015", "1.03") if side == "long" else ("0.99", "0.98", "0.985", "0.97")
    stops = []
    for factor in factors:
        price = (mark * Decimal(factor)).quantize(Decimal("0.0001"))
        env.venue.set_mark_price(env.symbol, price)
        await trailing.on_mark_price(env.symbol, price)
        stops.append(env.parts.book.get(env.symbol).stop.trigger_price)
    tightening = 1 if side == "long" else -1  # a long's stop only rises, a short's only falls
    assert stops == sorted(stops, reverse=side == "short")
    assert (stops[0] - intent.stop_loss) * tightening > 0  # tightened, never loosened
    assert stops[1] == stops[2]  # the retrace did not move it
    assert stops[3] != stops[2]
    moved = env.recorder.seen["on_stop_moved"]
    assert moved and all((e.current - e.previous) * tightening > 0 and e.unprotected_ms == 0 for e in moved)
    env.assert_protected_but_for_the_fill_to_stop_window(intent)
    assert env.venue.is_protected("default", env.symbol)
    # The position closes on the venue with no frame at all; the next tick must not touch it.
    env.venue.faults.drop_rate = 1.0
    env.venue.manual_close("default", env.symbol)
    await env.parts.reconciler.reconcile()
    assert not env.parts.book.holds(env.symbol)
    moves = trailing.moves[env.symbol]
    farther = Decimal("1.05") if side == "long" else Decimal("0.95")
    await trailing.on_mark_price(env.symbol, (mark * farther).quantize(Decimal("0.0001")))
    assert trailing.moves[env.symbol] == moves
    assert env.venue.truth.orders_for_closed_positions() == []


@pytest.mark.hooks("on_reconciled", "fetch_snapshot")
async def test_rest_lag_is_not_absence_for_the_reconciler(env):
    await env.start()  # orphan grace 60 s > the 30 s REST lag
    env.venue.faults.rest_position_lag_ms = 30_000
    await env.engine.open(env.intent())
    for _ in range(2):
        report = await env.parts.reconciler.reconcile()
        assert report["closed"] == 0 and report["adopted"] == 0
        assert env.recorder.seen["on_reconciled"][-1] == (env.venue_name, report)
    assert env.parts.book.holds(env.symbol) and env.recorder.closed() == []
    assert env.parts.protector.stop_attempts[env.symbol] == 0


@pytest.mark.hooks("cancel_stop_loss", "on_reconciled")
async def test_reconciliation_cancels_duplicate_stops_keeping_the_one_the_book_holds(env):
    await env.start()
    intent = env.intent()
    await env.engine.open(intent)
    kept = env.parts.book.get(env.symbol).stop
    # What crashes between "place the new stop" and "cancel the old one" leave: more resting stops.
    for offset in ("0.0100", "0.0200"):
        env.venue.place_order("default", env.symbol, side="sell", type="stop_market", amount=intent.contracts,
                              reduce_only=True, trigger_price=intent.stop_loss - Decimal(offset))
    await env.parts.reconciler.reconcile()
    # Whichever pass saw them first (the one the stream's connect requested may still be running): once each.
    assert sum(r["duplicate_stops_cancelled"] for _, r in env.recorder.seen["on_reconciled"]) == 2
    resting = env.venue.orders("default", env.symbol, open_only=True, conditional=True)
    assert [o.id for o in resting] == ([kept.order_id] if kept.order_id else [])
    assert env.venue.is_protected("default", env.symbol)
    env.assert_protected_but_for_the_fill_to_stop_window(intent)


class UnderTheStopLockAfterTheSnapshot(SessionWrapper):
    """Once the venue has answered the snapshot, take the symbol's stop lock and run ``meanwhile`` in another task,
    releasing the lock after it: the pass meets a stop lock held by a move (or a closure) that began after its
    snapshot, as a trailing move can."""

    def __init__(self, env, meanwhile) -> None:
        self.env, self.meanwhile = env, meanwhile
        self.task: asyncio.Task | None = None

    async def fetch_snapshot(self, call):
        answer = await call()
        if self.task is None:
            lock = self.env.parts.book.stop_lock(self.env.symbol)
            await lock.acquire()

            async def meanwhile_then_release():
                try:
                    await self.meanwhile()
                finally:
                    lock.release()

            self.task = asyncio.create_task(meanwhile_then_release())
        return answer


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize("meanwhile", ["stop_moved", "position_closed"])
async def test_duplicate_stops_are_cancelled_only_while_the_book_s_stop_is_one_the_snapshot_listed(
        store, side, meanwhile):
    """The snapshot lists the book's stop and a duplicate; before the pass gets the stop lock, the stop is moved
    (a new order replaces the listed one) or the position closes. The pass cancels nothing: the stop the book
    now holds is not one it saw resting. The next pass cancels the duplicate and keeps the moved stop."""
    async with venue_env("binance", store) as env:  # a Binance move replaces the stop order, new id
        await env.start()
        intent = env.intent(side)
        await env.engine.open(intent)
        await env.settled()
        old = env.parts.book.get(env.symbol).stop
        further = Decimal("-0.0100") if side == "long" else Decimal("0.0100")
        duplicate = env.venue.place_order("default", env.symbol, side=close_side(side), type="stop_market",
                                          amount=intent.contracts, reduce_only=True,
                                          trigger_price=intent.stop_loss + further)

        async def move():
            await move_stop_toward_mark(env, side)

        async def close():
            env.venue.manual_close("default", env.symbol)
            await env.recorder.wait_for(lambda r: len(r.closed()) == 1, BOUND_S)

        race = UnderTheStopLockAfterTheSnapshot(env, move if meanwhile == "stop_moved" else close)
        race.wrap(env.driver.session)
        report = await env.parts.reconciler.reconcile()
        await race.task
        assert report["duplicate_stops_cancelled"] == 0
        if meanwhile == "position_closed":
            assert not env.parts.book.holds(env.symbol)
            return
        moved = env.parts.book.get(env.symbol).stop
        assert moved.order_id not in (old.order_id, duplicate.id)

        def resting():
            return sorted(o.id for o in env.venue.orders("default", env.symbol, open_only=True, conditional=True))

        assert resting() == sorted([moved.order_id, duplicate.id])
        assert (await env.parts.reconciler.reconcile())["duplicate_stops_cancelled"] == 1
        assert resting() == [moved.order_id]
        assert env.venue.is_protected("default", env.symbol)


OTHER = "BTC/USDT:USDT"


def place_stale_stop(env, symbol: str, side: str):
    """A close-position stop for ``symbol`` with no position (Binance takes one before an entry)."""
    losing = Decimal("0.99") if side == "long" else Decimal("1.01")
    trigger = (env.venue.mark_price(symbol) * losing).quantize(env.venue.instrument(symbol).tick_size)
    return env.venue.place_order("default", symbol, side=close_side(side), type="stop_market", close_position=True,
                                 trigger_price=trigger)


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_stop_resting_with_no_position_is_cancelled_once_two_passes_a_grace_apart_saw_it(store, side):
    """A stop order resting for a symbol with no position, not held and not being opened (a crash between a
    closure and its clean-up leaves one) is cancelled when two snapshots ``orphan_grace_ms`` apart list it; not
    sooner, since a lagging snapshot may not show a fresh position yet. A stop that went away in between starts
    the wait again. Each symbol is judged on its own."""
    async with venue_env("binance", store) as env:
        await env.start()  # orphan_grace_ms: 60 s
        await env.settled()
        now = [10_000_000]
        env.parts.reconciler.clock = lambda: now[0]
        grace = FAST.orphan_grace_ms

        def place_stop(symbol=env.symbol):
            return place_stale_stop(env, symbol, side)

        def resting():
            return [o.id for o in env.venue.orders("default", None, open_only=True, conditional=True)]

        async def stale_cancelled_after(ms: int) -> int:
            now[0] += ms
            return (await env.parts.reconciler.reconcile())["stale_stops_cancelled"]

        first = place_stop()
        assert await stale_cancelled_after(0) == 0  # first seen
        env.venue.cancel_order("default", env.symbol, first.id)
        assert await stale_cancelled_after(1) == 0  # gone: forgotten
        stops = [place_stop().id, place_stop().id, place_stop(OTHER).id]
        assert await stale_cancelled_after(grace - 1) == 0  # seen again: the wait starts over
        assert await stale_cancelled_after(grace - 1) == 0 and resting() == stops
        assert await stale_cancelled_after(1) == 3
        assert resting() == []
        assert env.venue.truth.wrong_side_orders() == []


@pytest.mark.parametrize("side", ["long", "short"])
async def test_the_stop_of_a_held_position_a_lagging_snapshot_omits_is_not_stale(store, side):
    """The venue's REST lags (30 s, less than the orphan grace) and its snapshots omit the position the book
    holds, yet list its stop: that stop is the position's protection, however long the passes go on listing it
    alone. A stale stop of another symbol in the same snapshots is still cancelled."""
    async with venue_env("binance", store) as env:
        await env.start()
        now = [10_000_000]
        env.parts.reconciler.clock = lambda: now[0]
        await env.engine.open(env.intent(side))
        await env.settled()
        stop = env.parts.book.get(env.symbol).stop
        env.venue.faults.rest_position_lag_ms = 30_000
        place_stale_stop(env, OTHER, side)
        cancelled = []
        for _ in range(3):
            report = await env.parts.reconciler.reconcile()
            assert report["closed"] == 0
            cancelled.append(report["stale_stops_cancelled"])
            now[0] += FAST.orphan_grace_ms
        assert cancelled == [0, 1, 0]
        resting = env.venue.orders("default", None, open_only=True, conditional=True)
        assert [o.id for o in resting] == [stop.order_id] and env.parts.book.holds(env.symbol)


class CloseWhileSnapshotInFlight(SessionWrapper):
    """The venue closes the position after it answered the snapshot's positions call: the snapshot the
    reconciler then holds still lists a position the book has just closed from the closing fill."""

    def __init__(self, env) -> None:
        self.env = env
        self.armed = True

    async def fetch_snapshot(self, call):
        answer = await call()
        if not self.armed:
            return answer
        self.armed = False
        env = self.env
        env.venue.faults.drop_closing_frames = 1  # only the closing fill tells the book
        env.venue.manual_close("default", env.symbol)
        await env.recorder.wait_for(lambda r: len(r.closed()) == 1, BOUND_S)
        return answer


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize("grace", ["default", "none"])  # none: the snapshot's request time alone must decide
async def test_a_snapshot_taken_before_a_closure_does_not_adopt_the_closed_position(env, side, grace):
    await env.start(NO_GRACE if grace == "none" else FAST)
    await env.engine.open(env.intent(side))
    await env.settled()
    race = CloseWhileSnapshotInFlight(env)
    race.wrap(env.driver.session)
    report = await env.parts.reconciler.reconcile()
    assert not race.armed, "the closure did not happen inside the pass"
    assert report["adopted"] == 0
    assert not env.parts.book.holds(env.symbol)
    assert [e.reason for e in env.recorder.closed()] == ["manual"]
    assert await db_statuses(env) == ["closed"]


class MoveWhileSnapshotInFlight(SessionWrapper):
    """The trailing manager moves the stop after the venue answered the snapshot: the snapshot the reconciler
    then holds lists the stop the move replaced."""

    def __init__(self, env, mark, *, on_the_position: bool = False) -> None:
        self.env, self.mark, self.on_the_position = env, mark, on_the_position
        self.moved = None

    async def fetch_snapshot(self, call):
        answer = await call()
        if self.moved is not None:
            return answer
        replaced = self.env.parts.book.get(self.env.symbol).stop
        await self.env.parts.trailing.on_mark_price(self.env.symbol, self.mark)
        self.moved = self.env.parts.book.get(self.env.symbol).stop
        if self.on_the_position:  # a driver that reports the stop on the position row only, not as a stop
            positions = [p.model_copy(update={"stop_loss": replaced.trigger_price}) for p in answer.positions]
            answer = answer.model_copy(update={"stops": [], "positions": positions})
        return answer


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize("listed", ["as_a_stop", "on_the_position"])
async def test_a_snapshot_taken_before_a_stop_move_does_not_teach_the_book_the_replaced_stop(env, side, listed):
    """A pass must not hand the book a stop that was replaced after its snapshot was requested: the book would
    then move (and cancel) a stop that is gone while the one resting goes unmanaged until the next pass."""
    await env.start()
    intent = env.intent(side, trailing=TrailingSpec(callback_rate=Decimal("1")))
    await env.engine.open(intent)
    await env.settled()
    placed, moves = env.parts.book.get(env.symbol).stop, env.parts.trailing.moves[env.symbol]
    mark, step = env.venue.mark_price(env.symbol), Decimal("1.005") if side == "long" else Decimal("0.995")
    race = MoveWhileSnapshotInFlight(env, (mark * step).quantize(Decimal("0.0001")),  # the trail tightens
                                     on_the_position=listed == "on_the_position")
    race.wrap(env.driver.session)
    report = await env.parts.reconciler.reconcile()
    assert env.parts.trailing.moves[env.symbol] == moves + 1 and race.moved.trigger_price != placed.trigger_price
    held = env.parts.book.get(env.symbol).stop
    assert (held.order_id, held.trigger_price) == (race.moved.order_id, race.moved.trigger_price)
    assert (report["reprotected"], report["duplicate_stops_cancelled"]) == (0, 0)
    if placed.order_id is not None:  # Binance: a new order replaced the old one; Bybit amends the position's
        resting = env.venue.orders("default", env.symbol, open_only=True, conditional=True)
        assert [o.id for o in resting] == [race.moved.order_id]
    assert env.venue.is_protected("default", env.symbol)


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_steady_pass_teaches_the_book_the_one_stop_resting_and_touches_nothing(env, side):
    """The reconciler's common case (held, same side and size, one protective stop resting): the book learns
    that stop when it holds another or none, and nothing is placed, cancelled, closed or adopted."""
    await env.start()
    await env.engine.open(env.intent(side))
    held = env.parts.book.get(env.symbol)
    resting = held.stop
    assert resting is not None  # an order on Binance, the position's attached stop on Bybit (order_id None)
    before = env.venue.orders("default", env.symbol, open_only=True, conditional=True)
    held.stop = None  # what the book knows after a restart (BookPosition.stop_price only)
    for _ in range(2):
        report = await env.parts.reconciler.reconcile()
        assert (report["closed"], report["adopted"], report["reprotected"], report["duplicate_stops_cancelled"],
                report["stale_stops_cancelled"]) == (0, 0, 0, 0, 0)
        learned = env.parts.book.get(env.symbol).stop
        assert learned is not None and (learned.order_id, learned.side, learned.trigger_price) == (
            resting.order_id, side, resting.trigger_price)
    assert env.parts.protector.stop_attempts[env.symbol] == 0
    assert env.venue.orders("default", env.symbol, open_only=True, conditional=True) == before
    assert env.venue.is_protected("default", env.symbol)
