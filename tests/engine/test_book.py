"""PositionBook against the real store: one close path, exactly one closure, stale frames ignored."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from framework.engine.book import BookListener, BookPosition, PositionBook
from framework.errors import DuplicateOpenPosition
from framework.models import Order, OrderIntent, OrderUpdate, PositionUpdate, StopLoss, close_side, now_ms
from framework.plugins import new_plugin_manager, register
from framework.store import Store
from tests.engine.recorder import Exploding, Recorder

SYMBOL = "XRP/USDT:USDT"
VENUE = "bybit"


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def pm(recorder):
    pm = new_plugin_manager()
    register(pm, recorder, "recorder")
    return pm


@pytest.fixture
async def book(pm, store):
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0)
    await book.add(BookPosition(SYMBOL, "long", Decimal("43"), Decimal("1.1"), Decimal("1.0"),
                                intent_id="fw-o-000000000001", opened_at=1_000))
    return book


class Listener(BookListener):
    """Records what the book hands to the engine."""

    def __init__(self) -> None:
        self.unknown: list[str] = []
        self.requested = 0

    def unknown_position(self, symbol: str) -> None:
        self.unknown.append(symbol)

    def reconcile_soon(self) -> None:
        self.requested += 1


def flat(seq: int, ts: int = 2_000) -> PositionUpdate:
    return PositionUpdate(venue=VENUE, symbol=SYMBOL, side=None, contracts=Decimal(0), sequence=seq, timestamp=ts)


def sized(seq: int, contracts: str, ts: int = 2_000, side="long") -> PositionUpdate:
    return PositionUpdate(venue=VENUE, symbol=SYMBOL, side=side, contracts=Decimal(contracts),
                          entry_price=Decimal("1.1"), sequence=seq, timestamp=ts)


def fill(origin: str, client_id: str | None, filled: str = "43", status="closed") -> OrderUpdate:
    order = Order(venue=VENUE, symbol=SYMBOL, id="9", client_order_id=client_id, side="sell",
                  amount=Decimal("43"), filled=Decimal(filled), average=Decimal("0.99"), status=status,
                  reduce_only=True)
    return OrderUpdate(order=order, origin=origin, last_fill_price=Decimal("0.99"),
                       last_fill_amount=Decimal(filled), realized_pnl=Decimal("-4.3"), timestamp=1_900)


async def db_status(store) -> list[str]:
    rows = await store.pool.fetch("SELECT status FROM positions WHERE symbol = $1 ORDER BY id", SYMBOL)
    return [r["status"] for r in rows]


async def test_add_persists_and_fires_open(book, store, recorder):
    assert book.holds(SYMBOL)
    assert await db_status(store) == ["open"]
    assert [e.event for e in recorder.opened()] == ["opened"]


async def test_flat_update_closes_exactly_once_and_closes_the_db_row(book, store, recorder):
    await book.on_event(flat(5))
    await book.on_event(flat(5))  # duplicated frame
    assert not book.holds(SYMBOL)
    assert len(recorder.closed()) == 1 and recorder.closed()[0].reason == "unknown"
    assert await db_status(store) == ["closed"]
    kinds = [r.kind for r in await store.events(venue=VENUE)]
    assert kinds == ["opened", "closed"]
    assert book.closures == 1


async def test_late_frames_neither_resurrect_nor_double_close(book, store, recorder):
    await book.on_event(sized(4, "43"))
    assert await book.close(SYMBOL, "reconcile", source="reconcile") is True
    await book.on_event(sized(3, "43"))  # a late open frame (older sequence)
    await book.on_event(flat(5))  # the late flat frame of the same position (I-2)
    assert not book.holds(SYMBOL)
    assert len(recorder.closed()) == 1 and recorder.closed()[0].reason == "reconcile"
    assert book.ignored_stale_updates == 1
    assert await db_status(store) == ["closed"]


async def test_update_with_a_lower_sequence_is_ignored(book, recorder):
    await book.on_event(flat(10))
    await book.on_event(sized(9, "43"))
    assert not book.holds(SYMBOL)
    assert book.ignored_stale_updates == 1
    assert len(recorder.closed()) == 1


async def test_flat_frame_older_than_the_position_is_stale(book, recorder):
    await book.on_event(flat(3, ts=500))  # from before this position opened at 1_000
    assert book.holds(SYMBOL)
    assert book.ignored_stale_updates == 1
    assert recorder.closed() == []


async def test_partial_close_is_an_update_not_a_closure(book, store, recorder):
    await book.on_event(sized(4, "20"))
    assert book.get(SYMBOL).contracts == Decimal("20")
    assert recorder.closed() == []
    [event] = recorder.seen["on_position_updated"]
    assert (event.event, event.account, event.venue, event.symbol, event.side, event.contracts) == (
        "updated", "default", VENUE, SYMBOL, "long", Decimal("20"))
    assert event.entry_price == Decimal("1.1") and event.source == "stream"
    row = (await store.open_positions("default", VENUE))[0]
    assert row.contracts == Decimal("20") and row.entry_price == Decimal("1.1")
    journal = await store.pool.fetch("SELECT kind, payload FROM events WHERE venue = $1 AND kind = 'updated'", VENUE)
    assert len(journal) == 1


async def test_a_partial_reduce_whose_position_frame_came_first_is_not_a_closure(book, recorder):
    """Binance order (B4): ACCOUNT_UPDATE (43 → 20) and then the reduce-only fill of 23, both with T 2 000."""
    await book.on_event(sized(4, "20"))
    partial = fill("order", "web_1", filled="23")
    await book.on_event(partial.model_copy(update={"timestamp": 2_000}))
    assert recorder.closed() == [] and book.get(SYMBOL).contracts == Decimal("20")


@pytest.mark.parametrize(
    ("origin", "client_id", "reason"),
    [
        ("stop_loss", None, "stop_loss"),
        ("take_profit", None, "take_profit"),
        ("trailing_stop", None, "trailing_stop"),
        ("liquidation", None, "liquidation"),
        ("adl", None, "adl"),
        ("order", "fw-c-0123456789ab", "reduce_only_close"),
        ("order", "fw-r-0123456789ab", "reduce_only_close"),
        ("order", "web-ui-42", "manual"),
    ],
)
async def test_closure_reason_comes_from_the_closing_fill(book, recorder, origin, client_id, reason):
    await book.on_event(fill(origin, client_id, filled="10", status="open"))  # partial: attributes only
    assert book.holds(SYMBOL)
    await book.on_event(flat(7))
    [closed] = recorder.closed()
    assert closed.reason == reason
    assert closed.price == Decimal("0.99")


async def test_full_closing_fill_closes_even_when_the_flat_frame_is_lost(book, store, recorder):
    await book.on_event(fill("stop_loss", None))
    assert not book.holds(SYMBOL)
    assert recorder.closed()[0].reason == "stop_loss"
    assert recorder.closed()[0].source == "order"
    await book.on_event(flat(8))  # the flat frame arrives after all: no second closure
    assert len(recorder.closed()) == 1
    assert await db_status(store) == ["closed"]


async def test_concurrent_closes_fire_once(book, recorder):
    results = await asyncio.gather(
        book.close(SYMBOL, "position_gone", source="error"),
        book.close(SYMBOL, "reconcile", source="reconcile"),
        book.on_event(flat(9)),
        book.close(SYMBOL, "stop_loss", source="order"),
    )
    assert results.count(True) == 1
    assert len(recorder.closed()) == 1
    assert book.closures == 1


async def test_a_raising_listener_never_breaks_the_close_path(pm, store, recorder):
    register(pm, Exploding(), "exploding")
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0)
    await book.add(BookPosition(SYMBOL, "short", Decimal("5"), Decimal("1.1"), Decimal("1.2"), opened_at=1))
    assert await book.close(SYMBOL, "manual") is True
    assert len(recorder.closed()) == 1
    assert await db_status(store) == ["closed"]
    messages = [a.message for a in recorder.seen["on_alert"]]
    assert any("on_position_closed" in m for m in messages)
    assert any("on_position_open" in m for m in messages)


async def test_close_of_a_db_row_the_book_does_not_hold(pm, store, recorder, book):
    fresh = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0)  # a restarted process, book not loaded yet
    assert await fresh.close(SYMBOL, "reconcile", source="reconcile") is True
    assert await fresh.close(SYMBOL, "reconcile", source="reconcile") is False
    assert await db_status(store) == ["closed"]
    assert len(recorder.closed()) == 1


async def test_updates_during_an_open_are_recorded_not_adopted(pm, store, recorder):
    listener = Listener()
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0, listener=listener)
    unknown = listener.unknown
    intent = OrderIntent(venue=VENUE, symbol=SYMBOL, side="long", contracts=Decimal("43"),
                         stop_loss=Decimal("1.0"), client_order_id="fw-o-00000000000a")
    book.begin_open(intent)
    with pytest.raises(DuplicateOpenPosition):
        book.begin_open(intent)
    await book.on_event(sized(1, "43"))
    assert not book.holds(SYMBOL) and unknown == []
    assert book.last_update(SYMBOL).contracts == Decimal("43")
    assert recorder.opened() == []
    book.end_open(SYMBOL)
    await book.on_event(sized(2, "43"))  # not ours, not opening: left to reconciliation
    assert unknown == [SYMBOL] and not book.holds(SYMBOL)


async def test_stop_hit_during_the_open_opens_then_closes_once(pm, store, recorder):
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0)
    intent = OrderIntent(venue=VENUE, symbol=SYMBOL, side="long", contracts=Decimal("43"),
                         stop_loss=Decimal("1.0"), client_order_id="fw-o-00000000000b")
    book.begin_open(intent)
    await book.on_event(sized(1, "43", ts=1_000))
    await book.on_event(flat(2, ts=1_500))
    await book.add(BookPosition(SYMBOL, "long", Decimal("43"), Decimal("1.1"), Decimal("1.0"), opened_at=1_000))
    assert not book.holds(SYMBOL)
    assert len(recorder.opened()) == 1 and len(recorder.closed()) == 1
    assert await db_status(store) == ["closed"]


async def test_wait_for_a_stream_update(pm, store):
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0)
    assert await book.wait_for(SYMBOL, lambda u: u is not None, 0.01) is False
    waiter = asyncio.create_task(book.wait_for(SYMBOL, lambda u: u is not None and u.contracts == 0, 2))
    await book.on_event(flat(1))
    assert await waiter is True


async def test_malformed_frames_are_counted_and_reported(book, recorder):
    book.on_malformed(b"{not json", ValueError("bad frame"))
    book.on_malformed("[]", ValueError("bad frame"))
    assert book.malformed_frames == 2
    await recorder.wait_for(lambda r: len(r.seen["on_stream_state"]) == 2)
    assert {s for _, s, _ in recorder.seen["on_stream_state"]} == {"malformed_frame"}
    assert book.holds(SYMBOL)


async def test_reconnect_schedules_a_reconciliation(pm, store, recorder):
    listener = Listener()
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0, listener=listener)
    await book.on_connected(reconnect=True)
    assert listener.requested == 1
    assert recorder.seen["on_stream_state"][-1][1] == "reconnected"


# --- a flat frame before the fill that explains it (docs/conformance.md B4: Binance sends ACCOUNT_UPDATE
# before ORDER_TRADE_UPDATE; Y6: Bybit orders no topics) ---------------------------------------------------


def closing_fill(side: str, origin: str = "stop_loss", ts: int = 2_000) -> OrderUpdate:
    """The closing order's fill for a ``side`` position (sell closes a long, buy a short)."""
    order = Order(venue=VENUE, symbol=SYMBOL, id="9", side="sell" if side == "long" else "buy",
                  amount=Decimal("43"), filled=Decimal("43"), average=Decimal("0.99"), status="closed",
                  reduce_only=True)
    return OrderUpdate(order=order, origin=origin, last_fill_price=Decimal("0.99"),
                       last_fill_amount=Decimal("43"), realized_pnl=Decimal("-4.3"), timestamp=ts)


async def held_book(pm, store, side: str, fill_grace_ms: int) -> PositionBook:
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=fill_grace_ms)
    await book.add(BookPosition(SYMBOL, side, Decimal("43"), Decimal("1.1"), Decimal("1.0"), opened_at=1_000))
    return book


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_flat_frame_waits_for_its_fill_and_closes_once_with_its_reason_and_price(pm, store, recorder, side):
    book = await held_book(pm, store, side, fill_grace_ms=600_000)  # only the fill can decide here
    await book.on_event(flat(5, ts=2_000))
    assert book.holds(SYMBOL) and recorder.closed() == [], "closed before the fill that explains it arrived"
    await book.on_event(closing_fill(side))
    await book.on_event(closing_fill(side))  # the venue may repeat a fill frame
    [event] = recorder.closed()
    assert (event.reason, event.price, event.source, event.timestamp) == ("stop_loss", Decimal("0.99"), "stream", 2_000)
    assert not book.holds(SYMBOL) and await db_status(store) == ["closed"]


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_flat_frame_whose_fill_never_comes_closes_after_the_grace(pm, store, recorder, side):
    book = await held_book(pm, store, side, fill_grace_ms=20)
    await book.on_event(flat(5))
    await recorder.wait_for(lambda r: len(r.closed()) == 1)
    assert recorder.closed()[0].reason == "unknown" and not book.holds(SYMBOL)
    await book.on_event(closing_fill(side))  # the late fill finds nothing to close
    assert len(recorder.closed()) == 1


async def test_a_newer_frame_ends_the_wait_and_a_flush_closes_what_still_waits(pm, store, recorder):
    book = await held_book(pm, store, "long", fill_grace_ms=600_000)
    await book.on_event(flat(5))
    await book.on_event(sized(6, "10", ts=2_100))  # a new position after the flat one: the old one closed
    assert [e.reason for e in recorder.closed()] == ["unknown"] and not book.holds(SYMBOL)
    again = await held_book(pm, store, "short", fill_grace_ms=600_000)
    await again.on_event(flat(5))
    await again.flush()
    assert len(recorder.closed()) == 2 and not again.holds(SYMBOL)


@pytest.mark.parametrize("side", ["long", "short"])
async def test_an_entry_filled_in_parts_takes_the_stream_s_newest_size_at_add(pm, store, recorder, side):
    # A market entry filled in several parts (docs/conformance.md B20 / Y14): the open may be verified on the
    # first part's frame while the later ones arrive before the position is added.
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0)
    intent = OrderIntent(venue=VENUE, symbol=SYMBOL, side=side, contracts=Decimal("43"),
                         stop_loss=Decimal("1.0") if side == "long" else Decimal("1.2"),
                         client_order_id="fw-o-00000000000c")
    book.begin_open(intent)
    for seq, contracts in enumerate(("10", "30", "40"), start=1):
        await book.on_event(sized(seq, contracts, ts=1_000 + seq, side=side))
    await book.add(BookPosition(SYMBOL, side, Decimal("10"), Decimal("1.1"), intent.stop_loss, opened_at=1_000))
    assert book.get(SYMBOL).contracts == Decimal("40")
    assert [e.contracts for e in recorder.opened()] == [Decimal("10")]
    assert [e.contracts for e in recorder.seen["on_position_updated"]] == [Decimal("40")]
    assert recorder.closed() == []
    await book.on_event(sized(4, "40", ts=1_010, side=side))  # the same size again: nothing
    assert len(recorder.seen["on_position_updated"]) == 1


async def test_a_thousand_book_positions_hold_under_0_7_mb():
    # issue 17: slotted records and no asyncio.Event per symbol until something waits on it (tracemalloc bytes)
    from framework.app.bench import memory_per_positions

    assert await memory_per_positions(1_000) <= 700_000


@pytest.mark.parametrize("other", ["venue", "account"])
async def test_a_book_never_closes_another_venue_s_or_account_s_db_row(pm, store, recorder, book, other):
    # One database serves every venue and account: a fresh book closes only its own rows.
    fresh = PositionBook("binance" if other == "venue" else VENUE, "other" if other == "account" else "default", pm,
                         store, fill_grace_ms=0)
    assert await fresh.close(SYMBOL, "reconcile", source="reconcile") is False
    assert await db_status(store) == ["open"] and recorder.closed() == []
    assert book.holds(SYMBOL)


async def test_a_book_without_a_store_closes_once(pm, recorder):
    book = PositionBook(VENUE, "default", pm, None, fill_grace_ms=0)
    await book.add(BookPosition(SYMBOL, "short", Decimal("5"), Decimal("1.1"), Decimal("1.2"), opened_at=1))
    assert await book.close(SYMBOL, "manual") is True
    assert await book.close(SYMBOL, "manual") is False  # nothing left: never a success for nothing done
    assert len(recorder.closed()) == 1


# --- exactly once, also when the database is down, and what a closure carries (issue 11, mutation gaps) ----


async def test_a_close_during_a_database_outage_is_reported_once_and_written_when_it_returns(databases, pm, recorder):
    url = await databases.create()
    store = await Store.open(url, max_size=5)
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0)
    try:
        await book.add(BookPosition(SYMBOL, "short", Decimal("5"), Decimal("1.1"), Decimal("1.2"), opened_at=1))
        restarted = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0)  # its book not loaded yet
        async with databases.unreachable(url):
            assert await book.close(SYMBOL, "manual") is True
            assert book.writes.pending == 1, "the close's row is queued for replay"
            # the position is gone from the book, its row still open in the database: not a second closure
            assert await book.close(SYMBOL, "reconcile", source="reconcile") is False
            # a book that cannot read the database has closed nothing
            assert await restarted.close(SYMBOL, "reconcile", source="reconcile") is False
            assert [e.reason for e in recorder.closed()] == ["manual"]
        assert await book.writes.wait_drained(10)
        assert await db_status(store) == ["closed"]
        assert await restarted.close(SYMBOL, "reconcile", source="reconcile") is False
        assert len(recorder.closed()) == 1 and book.closures == 1 and restarted.closures == 0
    finally:
        await book.writes.stop()
        await store.close()


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_closure_carries_its_account_entry_price_pnl_and_venue_time_to_the_event_and_the_row(
    pm, store, recorder, side
):
    book = PositionBook(VENUE, "second", pm, store, fill_grace_ms=0)  # not the default account
    stop, exit_price = (Decimal("1.0"), Decimal("1.25")) if side == "long" else (Decimal("1.2"), Decimal("0.95"))
    await book.add(BookPosition(SYMBOL, side, Decimal("43"), Decimal("1.1"), stop, opened_at=1_000))
    assert await book.close(SYMBOL, "take_profit", price=exit_price, realized_pnl=Decimal("6.45"), source="order",
                            timestamp=5_000) is True
    [event] = recorder.closed()
    assert (event.account, event.venue, event.symbol, event.side, event.contracts, event.entry_price) == (
        "second", VENUE, SYMBOL, side, Decimal(0), Decimal("1.1"))
    assert (event.price, event.reason, event.realized_pnl, event.timestamp, event.source) == (
        exit_price, "take_profit", Decimal("6.45"), 5_000, "order")
    row = await store.pool.fetchrow(
        "SELECT account, side, status, contracts, close_reason, close_price, realized_pnl, closed_at FROM positions "
        "WHERE symbol = $1", SYMBOL)
    assert dict(row) == {"account": "second", "side": side, "status": "closed", "contracts": Decimal(0),
                         "close_reason": "take_profit", "close_price": exit_price, "realized_pnl": Decimal("6.45"),
                         "closed_at": 5_000}


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_db_row_closed_by_a_book_that_does_not_hold_it_carries_the_row_s_side_and_entry(
    pm, store, recorder, side
):
    book = PositionBook(VENUE, "second", pm, store, fill_grace_ms=0)
    stop = Decimal("1.0") if side == "long" else Decimal("1.2")
    await book.add(BookPosition(SYMBOL, side, Decimal("43"), Decimal("1.1"), stop, opened_at=1_000))
    restarted = PositionBook(VENUE, "second", pm, store, fill_grace_ms=0)  # a restart, its book not loaded yet
    assert await restarted.close(SYMBOL, "reconcile", source="reconcile", timestamp=6_000) is True
    [event] = recorder.closed()
    assert (event.account, event.side, event.contracts, event.entry_price, event.reason, event.timestamp) == (
        "second", side, Decimal(0), Decimal("1.1"), "reconcile", 6_000)
    assert await db_status(store) == ["closed"]


@pytest.mark.parametrize("first", ["long", "short"])
async def test_positions_in_a_row_each_close_once_and_the_next_flat_frame_waits_for_its_own_fill(
    pm, store, recorder, first
):
    # The first position closes by its fill (the flat frame lost); the next one's flat frame comes before its
    # fill and must wait for it, not close as "unknown" with the first one's leftovers.
    second = "short" if first == "long" else "long"
    book = await held_book(pm, store, first, fill_grace_ms=600_000)
    await book.on_event(closing_fill(first, origin="stop_loss", ts=2_000))
    stop = Decimal("1.0") if second == "long" else Decimal("1.2")
    await book.add(BookPosition(SYMBOL, second, Decimal("43"), Decimal("1.1"), stop, opened_at=3_000))
    await book.on_event(flat(5, ts=4_000))
    assert book.holds(SYMBOL), "the second position closed before the fill that explains it"
    await book.on_event(closing_fill(second, origin="take_profit", ts=4_000))
    assert [(e.side, e.reason, e.source) for e in recorder.closed()] == [
        (first, "stop_loss", "order"), (second, "take_profit", "stream")]
    assert book.closures == 2
    assert await db_status(store) == ["closed", "closed"]


async def test_a_closure_in_the_millisecond_a_snapshot_was_requested_is_one_since_then(pm, recorder, monkeypatch):
    # The reconciler skips a snapshot requested at or before a closure (it may still list the position): the
    # same millisecond counts.  The wall clock is frozen for the closure so that it lands in that millisecond.
    book = PositionBook(VENUE, "default", pm, None, fill_grace_ms=0)
    await book.add(BookPosition(SYMBOL, "long", Decimal("5"), Decimal("1.1"), Decimal("1.0"), opened_at=1))
    requested_at = now_ms()
    with monkeypatch.context() as frozen:
        frozen.setattr(time, "time_ns", lambda: requested_at * 1_000_000 + 999_999)
        assert await book.close(SYMBOL, "manual") is True
    assert book.closed_since(SYMBOL, requested_at) and book.closed_since(SYMBOL, requested_at - 1)
    assert not book.closed_since(SYMBOL, requested_at + 1)


async def test_a_stop_learned_in_the_millisecond_a_snapshot_was_requested_is_one_since_then(pm, monkeypatch):
    # The reconciler does not teach the book a snapshot's stop when the book learned one at or after the
    # snapshot's request (a move in between): the same millisecond counts; a take-profit is not the stop.
    book = PositionBook(VENUE, "default", pm, None)
    await book.add(BookPosition(SYMBOL, "short", Decimal("5"), Decimal("1.1"), Decimal("1.2"), opened_at=1))
    requested_at = now_ms()
    take_profit = StopLoss(venue=VENUE, symbol=SYMBOL, side="short", trigger_price=Decimal("1.0"), order_id="7",
                           kind="take_profit")
    book.set_stop(SYMBOL, take_profit)
    assert not book.stop_set_since(SYMBOL, requested_at - 1)
    with monkeypatch.context() as frozen:
        frozen.setattr(time, "time_ns", lambda: requested_at * 1_000_000 + 999_999)
        book.set_stop(SYMBOL, StopLoss(venue=VENUE, symbol=SYMBOL, side="short", trigger_price=Decimal("1.15"),
                                       order_id="8"))
    assert book.stop_set_since(SYMBOL, requested_at) and book.stop_set_since(SYMBOL, requested_at - 1)
    assert not book.stop_set_since(SYMBOL, requested_at + 1)
    assert not book.stop_set_since("ETH/USDT:USDT", 0)


# --- the closing fill: what it carries, and the edges of "fully filled" (issue 11, mutation gaps) -----------


def own_fill(side: str, filled: str, *, origin: str = "stop_loss", client_id: str | None = None, ts: int = 1_900,
             status: str = "closed") -> OrderUpdate:
    """A fill of the order closing a ``side`` position: last fill at 0.98, the order's average 0.985 (with
    ``filled`` 0: an order on the closing side that ended with nothing filled)."""
    order = Order(venue=VENUE, symbol=SYMBOL, id="9", client_order_id=client_id, side=close_side(side),
                  amount=Decimal(filled if filled != "0" else "43"), filled=Decimal(filled),
                  average=Decimal("0.985"), status=status, reduce_only=True)
    return OrderUpdate(order=order, origin=origin, last_fill_price=Decimal("0.98"), last_fill_amount=Decimal(filled),
                       realized_pnl=Decimal("-5.16"), timestamp=ts)


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize(("origin", "client_id", "trailed", "reason"), [
    ("stop_loss", None, False, "stop_loss"),
    ("stop_loss", None, True, "trailing_stop"),  # a stop the trailing manager moved
    ("order", "fw-c-0123456789ab", False, "reduce_only_close"),  # our own close
])
async def test_a_fill_that_closes_the_position_alone_carries_its_reason_last_price_pnl_and_time(
    pm, store, recorder, side, origin, client_id, trailed, reason
):
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=600_000)  # the flat frame is lost
    stop = Decimal("1.0") if side == "long" else Decimal("1.2")
    await book.add(BookPosition(SYMBOL, side, Decimal("43"), Decimal("1.1"), stop, opened_at=1_000, trailed=trailed))
    await book.on_event(own_fill(side, "43", origin=origin, client_id=client_id))
    [event] = recorder.closed()
    assert (event.side, event.reason, event.price, event.realized_pnl, event.timestamp, event.source) == (
        side, reason, Decimal("0.98"), Decimal("-5.16"), 1_900, "order")
    row = await store.pool.fetchrow("SELECT status, close_reason, close_price, realized_pnl, closed_at FROM positions")
    assert tuple(row) == ("closed", reason, Decimal("0.98"), Decimal("-5.16"), 1_900)


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_flat_frame_without_pnl_takes_the_pnl_of_the_fill_that_explains_it(pm, store, recorder, side):
    book = await held_book(pm, store, side, fill_grace_ms=600_000)
    await book.on_event(flat(5, ts=2_000))  # no realized PnL in the frame
    await book.on_event(own_fill(side, "43", ts=2_000))
    [event] = recorder.closed()
    assert (event.reason, event.price, event.realized_pnl) == ("stop_loss", Decimal("0.98"), Decimal("-5.16"))


@pytest.mark.parametrize("side", ["long", "short"])
async def test_one_contract_edges_of_a_closing_fill(pm, store, recorder, side):
    stop = Decimal("1.0") if side == "long" else Decimal("1.2")
    # a position of one contract closed by its fill of one, the flat frame lost, in the millisecond it opened
    one = PositionBook(VENUE, "default", pm, store, fill_grace_ms=600_000)
    await one.add(BookPosition(SYMBOL, side, Decimal("1"), Decimal("1.1"), stop, opened_at=1_900))
    await one.on_event(own_fill(side, "1", ts=1_900))
    assert not one.holds(SYMBOL) and [e.reason for e in recorder.closed()] == ["stop_loss"]
    # a reduce that leaves one contract, its position frame first (B4): not a closure
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=600_000)
    await book.add(BookPosition(SYMBOL, side, Decimal("43"), Decimal("1.1"), stop, opened_at=3_000))
    await book.on_event(sized(4, "1", ts=4_000, side=side))
    await book.on_event(own_fill(side, "42", origin="order", client_id="web_1", ts=4_000))
    assert book.holds(SYMBOL) and book.get(SYMBOL).contracts == Decimal("1") and len(recorder.closed()) == 1


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_completed_reduce_smaller_than_the_position_closes_nothing_whichever_frame_comes_first(
        pm, store, recorder, side):
    # A reduce-only order of 20 on a 43-contract position, completed ("closed", 20 filled), its order frame before
    # the position frame (Bybit's topics are not ordered; the flat frame of a real closure can be lost alike):
    # the fill does not cover the position, so it closes nothing; the position frame then gives the new size.
    book = await held_book(pm, store, side, fill_grace_ms=600_000)
    await book.on_event(own_fill(side, "20", origin="order", client_id="web_3", ts=2_000))
    assert book.holds(SYMBOL) and book.get(SYMBOL).contracts == Decimal("43") and recorder.closed() == []
    await book.on_event(sized(5, "23", ts=2_000, side=side))
    assert book.holds(SYMBOL) and book.get(SYMBOL).contracts == Decimal("23") and recorder.closed() == []


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_closing_side_order_cancelled_unfilled_explains_no_flat_frame(pm, store, recorder, side):
    # A reduce-only order of a person's, cancelled with nothing filled, is no closing fill: the flat frame after
    # it still waits for the fill that explains it.
    book = await held_book(pm, store, side, fill_grace_ms=600_000)
    await book.on_event(own_fill(side, "0", origin="order", client_id="web_2", status="canceled"))
    await book.on_event(flat(5, ts=2_000))
    assert book.holds(SYMBOL) and recorder.closed() == []
    await book.on_event(own_fill(side, "43", origin="take_profit", ts=2_000))
    assert [(e.reason, e.price) for e in recorder.closed()] == [("take_profit", Decimal("0.98"))]


# --- stream frames at their edges (issue 11, mutation gaps) -------------------------------------------------


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_flat_frame_stamped_in_the_millisecond_the_position_opened_closes_it(pm, store, recorder, side):
    book = await held_book(pm, store, side, fill_grace_ms=0)  # opened at 1 000
    await book.on_event(flat(5, ts=1_000))
    assert not book.holds(SYMBOL) and [(e.reason, e.timestamp) for e in recorder.closed()] == [("unknown", 1_000)]
    assert book.ignored_stale_updates == 0


@pytest.mark.parametrize("side", ["long", "short"])
async def test_one_contract_frames_are_a_position_not_flat(pm, store, recorder, side):
    listener = Listener()
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0, listener=listener)
    await book.on_event(sized(1, "1", side=side))  # a position of one contract the book does not hold
    assert listener.unknown == [SYMBOL] and not book.holds(SYMBOL)
    stop = Decimal("1.0") if side == "long" else Decimal("1.2")
    await book.add(BookPosition(SYMBOL, side, Decimal("43"), Decimal("1.1"), stop, opened_at=1_000))
    await book.on_event(sized(2, "1", ts=2_100, side=side))  # reduced to one contract
    assert book.get(SYMBOL).contracts == Decimal("1") and recorder.closed() == []
    # the stop of a one-contract position hit while it was being opened: opened, then closed, once each
    await book.on_event(flat(3, ts=2_200))
    again = PositionBook(VENUE, "second", pm, store, fill_grace_ms=0)
    intent = OrderIntent(venue=VENUE, symbol=SYMBOL, side=side, contracts=Decimal("1"), stop_loss=stop,
                         client_order_id="fw-o-00000000000d")
    again.begin_open(intent)
    await again.on_event(sized(1, "1", ts=3_000, side=side))
    await again.on_event(flat(2, ts=3_500))
    await again.add(BookPosition(SYMBOL, side, Decimal("1"), Decimal("1.1"), stop, opened_at=3_000))
    assert not again.holds(SYMBOL)
    assert [(e.account, e.reason) for e in recorder.closed()] == [("default", "unknown"), ("second", "unknown")]


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_position_flipped_through_zero_without_a_flat_frame_is_closed_once_and_the_new_one_reported(
    pm, store, recorder, side
):
    listener = Listener()
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0, listener=listener)
    stop = Decimal("1.0") if side == "long" else Decimal("1.2")
    await book.add(BookPosition(SYMBOL, side, Decimal("43"), Decimal("1.1"), stop, opened_at=1_000))
    other = "short" if side == "long" else "long"
    await book.on_event(sized(4, "10", ts=2_500, side=other))
    await book.on_event(sized(4, "10", ts=2_500, side=other))  # repeated
    assert not book.holds(SYMBOL) and listener.unknown == [SYMBOL, SYMBOL]
    [event] = recorder.closed()
    assert (event.side, event.reason, event.source, event.timestamp) == (side, "unknown", "stream", 2_500)
    assert await db_status(store) == ["closed"]


async def test_a_size_frame_with_a_new_entry_price_updates_book_event_and_row(book, store, recorder):
    frame = PositionUpdate(venue=VENUE, symbol=SYMBOL, side="long", contracts=Decimal("50"),
                           entry_price=Decimal("1.12"), mark_price=Decimal("1.15"), sequence=4, timestamp=2_500)
    await book.on_event(frame)
    held = book.get(SYMBOL)
    assert (held.contracts, held.entry_price) == (Decimal("50"), Decimal("1.12"))
    [event] = recorder.seen["on_position_updated"]
    assert (event.contracts, event.entry_price, event.price, event.reason, event.timestamp) == (
        Decimal("50"), Decimal("1.12"), Decimal("1.15"), "size_changed", 2_500)
    row = (await store.open_positions("default", VENUE))[0]
    assert (row.contracts, row.entry_price) == (Decimal("50"), Decimal("1.12"))
    await book.on_event(frame.model_copy(update={"sequence": 5, "entry_price": Decimal("1.13")}))  # price only
    assert book.get(SYMBOL).entry_price == Decimal("1.13") and len(recorder.seen["on_position_updated"]) == 2


async def test_a_flat_frame_waits_even_for_a_grace_of_one_millisecond(pm, store, recorder):
    book = await held_book(pm, store, "short", fill_grace_ms=1)
    await book.on_event(flat(5))
    assert book.holds(SYMBOL), "closed without waiting for the fill"  # no await since: the timer cannot have run
    await recorder.wait_for(lambda r: len(r.closed()) == 1)
    assert recorder.closed()[0].reason == "unknown" and not book.holds(SYMBOL)


async def test_every_stale_frame_is_counted(book, recorder):
    await book.on_event(sized(10, "43", ts=2_000))
    await book.on_event(sized(9, "43", ts=1_900))  # older by sequence and by time
    await book.on_event(sized(8, "43", ts=1_800))
    assert book.ignored_stale_updates == 2
    await book.on_event(flat(11, ts=500))  # a flat frame from before the position opened (at 1 000)
    await book.on_event(flat(12, ts=600))
    assert book.ignored_stale_updates == 4 and book.holds(SYMBOL) and recorder.closed() == []
