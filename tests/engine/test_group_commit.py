"""The stream's journal rows are group-committed (issue 17): nothing is announced before its batch committed,
so a process killed between batches (``kill -9``) loses no announced row; rows queued while the database is
busy are written together, in order."""

from __future__ import annotations

import asyncio
import signal
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from pluggy import PluginManager

from framework import hookimpl
from framework.engine.book import BookPosition, PositionBook
from framework.models import Order, OrderUpdate, PositionUpdate
from framework.plugins import new_plugin_manager, register
from tests.engine.recorder import Recorder

ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 60.0
SYMBOL = "XRP/USDT:USDT"


async def test_a_process_killed_between_group_commits_loses_no_announced_row(databases, store):
    url = await databases.create()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.engine.journal_writer", url, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    acks: list[tuple[str, str, int, int]] = []
    try:
        async with asyncio.timeout(BOUND_S):
            assert (await proc.stdout.readline()).strip() == b"ready"
            while len(acks) < 2_000:  # several batches committed, more rows queued behind them
                _, kind, symbol, ts, batches = (await proc.stdout.readline()).decode().split()
                acks.append((kind, symbol, int(ts), int(batches)))
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = await proc.communicate()  # what it had printed before it died was announced too
    assert proc.returncode == -signal.SIGKILL, "the writer stopped before it was killed"
    for line in rest.decode().splitlines():
        if line.count(" ") == 4:  # a line cut by the kill is not an announcement
            _, kind, symbol, ts, batches = line.split()
            acks.append((kind, symbol, int(ts), int(batches)))
    from framework.store import Store

    after = await Store.open(url, max_size=1)
    try:
        rows = await after.pool.fetch("SELECT kind, symbol, (payload->>'timestamp')::bigint AS ts FROM events "
                                      "WHERE kind IN ('updated', 'closed')")
    finally:
        await after.close()
    in_db = {(r["kind"], r["symbol"], r["ts"]) for r in rows}
    announced = {(kind, symbol, ts) for kind, symbol, ts, _ in acks}
    assert announced - in_db == set(), "rows announced as persisted are missing after the crash"
    assert any(kind == "closed" for kind, *_ in announced)
    assert max(b for *_, b in acks) < len(acks) / 2, "rows were not group-committed"


def group_commit_book(store) -> tuple[PositionBook, Recorder, PluginManager]:
    """A Bybit book that group-commits its journal, its lifecycle events recorded: (book, recorder, pm)."""
    recorder = Recorder()
    pm = new_plugin_manager()
    register(pm, recorder, "recorder")
    return PositionBook("bybit", "default", pm, store, fill_grace_ms=0, group_commit=True), recorder, pm


@pytest.mark.parametrize("side", ["long", "short"])
async def test_rows_queued_while_the_database_is_busy_commit_together_and_announce_in_order(store, side):
    book, recorder, _ = group_commit_book(store)
    await book.add(BookPosition(SYMBOL, side, Decimal(1), Decimal("1.1"), None, opened_at=1_000))
    async with store.hot():  # the journal's connection is busy: the stream goes on, nothing is announced
        for seq in range(1, 50):
            await book.on_event(PositionUpdate(venue="bybit", symbol=SYMBOL, side=side, contracts=Decimal(seq + 1),
                                               sequence=seq, timestamp=1_000 + seq))
        await book.on_event(PositionUpdate(venue="bybit", symbol=SYMBOL, side=None, contracts=Decimal(0),
                                           sequence=50, timestamp=1_050))
        assert not book.holds(SYMBOL), "the book changes at once"
        assert recorder.seen["on_position_updated"] == [] and recorder.closed() == []
        assert book.writes.pending == 50
    assert await book.writes.wait_drained(BOUND_S)
    assert [e.contracts for e in recorder.seen["on_position_updated"]] == [Decimal(n + 1) for n in range(1, 50)]
    assert [e.reason for e in recorder.closed()] == ["unknown"]
    assert book.writes.batches <= 2 and book.writes.batched_rows == 50
    rows = await store.pool.fetch("SELECT kind FROM events ORDER BY id")
    assert [r["kind"] for r in rows] == ["opened"] + ["updated"] * 49 + ["closed"]
    status = await store.pool.fetchval("SELECT status FROM positions WHERE symbol = $1", SYMBOL)
    assert status == "closed"


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_closing_fill_without_its_flat_frame_closes_without_holding_up_the_stream(store, side):
    # I-1 on a group-commit book: a fully filled stop closes the position although its flat frame is lost; the
    # closure's rows are queued like the flat frame's (the stream does not wait for the journal's connection)
    # and announced once committed
    book, recorder, _ = group_commit_book(store)
    await book.add(BookPosition(SYMBOL, side, Decimal(2), Decimal("1.1"), None, opened_at=1_000))
    stop = Order(venue="bybit", symbol=SYMBOL, id="9", client_order_id=None, side="sell" if side == "long" else "buy",
                 amount=Decimal(2), filled=Decimal(2), average=Decimal("1.05"), status="closed", reduce_only=True)
    async with store.hot():  # the journal's connection is busy
        async with asyncio.timeout(BOUND_S):  # a stream that waited for it would wait here until the bound
            await book.on_event(OrderUpdate(order=stop, origin="stop_loss", last_fill_price=Decimal("1.05"),
                                            last_fill_amount=Decimal(2), timestamp=1_100))
        assert not book.holds(SYMBOL) and recorder.closed() == [] and book.writes.pending >= 1
    assert await book.writes.wait_drained(BOUND_S)
    assert [(e.reason, e.price) for e in recorder.closed()] == [("stop_loss", Decimal("1.05"))]
    status = await store.pool.fetchval("SELECT status FROM positions WHERE symbol = $1", SYMBOL)
    assert status == "closed"


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_listener_may_close_another_position_when_the_stream_closes_one(store, side):
    # the stream's announcements run apart from the drainer: a listener awaiting a write of its own (the
    # other position's closure) must not wait on the announcement it is running
    other = "BTC/USDT:USDT"
    book, recorder, pm = group_commit_book(store)

    class CloseTheOther:
        @hookimpl
        async def on_position_closed(self, event):
            if event.symbol == SYMBOL:
                assert await book.close(other, "manual") is True

    register(pm, CloseTheOther(), "close-the-other")
    for symbol in (SYMBOL, other):
        await book.add(BookPosition(symbol, side, Decimal(1), Decimal("1.1"), None, opened_at=1_000))
    await book.on_event(PositionUpdate(venue="bybit", symbol=SYMBOL, side=None, contracts=Decimal(0), sequence=1,
                                       timestamp=1_100))
    await recorder.wait_for(lambda r: len(r.closed()) == 2, BOUND_S)
    assert [e.symbol for e in recorder.closed()] == [other, SYMBOL]  # the nested closure is announced within
    assert await book.writes.wait_drained(BOUND_S)
    rows = await store.pool.fetch("SELECT symbol, status FROM positions ORDER BY symbol")
    assert [(r["symbol"], r["status"]) for r in rows] == [(other, "closed"), (SYMBOL, "closed")]


async def test_a_row_after_a_pause_is_written_at_once_and_a_burst_gathers_into_one_commit():
    # issue 17: at most one group commit per commit_interval_s while rows keep coming (rows were queued while the
    # last commit was in flight; each commit costs the process a socket round trip whatever its size); any other
    # row (a lone closure, the first after a pause, one right after a lone commit) waits for none
    from framework.engine.persistence import WriteBehind

    loop = asyncio.get_running_loop()
    batches: list[tuple[float, list[str]]] = []
    written = asyncio.Event()
    in_flight = asyncio.Event()
    release = asyncio.Event()
    release.set()

    async def write_rows(rows):
        batches.append((loop.time(), [row[0] for row in rows]))
        in_flight.set()
        await release.wait()
        written.set()

    async def announce(persisted: bool) -> None: ...

    async def queue_alone(name: str) -> float:
        written.clear()
        queued = loop.time()
        await writes.journal(name, (name,), announce, wait=False)
        async with asyncio.timeout(BOUND_S):
            await written.wait()
        return queued

    interval = 2.0  # far beyond a loop turn even on a machine loaded by CPU burners ("at once" = sooner)
    writes = WriteBehind(new_plugin_manager(), "v", write_rows=write_rows, commit_interval_s=interval)
    queued = await queue_alone("r1")
    assert batches == [(batches[0][0], ["r1"])] and batches[0][0] - queued < interval  # not held back
    assert await writes.wait_drained(BOUND_S)
    queued = await queue_alone("r2")  # right behind a lone commit: nothing kept coming, at once too
    assert batches[-1][1] == ["r2"] and batches[-1][0] - queued < interval
    assert await writes.wait_drained(BOUND_S)
    release.clear()
    in_flight.clear()
    await writes.journal("r3", ("r3",), announce, wait=False)
    async with asyncio.timeout(BOUND_S):
        await in_flight.wait()
    for name in ("r4", "r5", "r6"):  # a burst while r3's commit is in flight
        await writes.journal(name, (name,), announce, wait=False)
    release.set()
    assert await writes.wait_drained(BOUND_S)
    assert [rows for _, rows in batches] == [["r1"], ["r2"], ["r3"], ["r4", "r5", "r6"]]
    assert batches[3][0] - batches[2][0] >= interval * 0.9  # the loop's timer may fire a hair early
    await asyncio.sleep(2 * interval)  # the scenario, not a wait for something: the stream goes quiet
    queued = await queue_alone("after a pause")
    assert batches[-1][1] == ["after a pause"] and batches[-1][0] - queued < interval
