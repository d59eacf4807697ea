"""A process feeding a group-committing PositionBook stream frames until it is killed (``-9``): size changes
and closures of 20 symbols, one frame per event-loop turn like a websocket would.  It prints ``ready`` once
its positions are open, then one line per row announced (``on_position_updated`` / ``on_position_closed``,
which fire only after the row's batch committed): ``ack <kind> <symbol> <timestamp> <batches so far>``.

Run by ``tests/engine/test_group_commit.py``: ``python -m tests.engine.journal_writer <database url>``.
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

from framework import hookimpl
from framework.engine.book import BookPosition, PositionBook
from framework.models import PositionEvent, PositionUpdate, now_ms
from framework.plugins import new_plugin_manager, register
from framework.store import Store

VENUE = "binance"
SYMBOLS = [f"K{i:02d}/USDT:USDT" for i in range(20)]


class Acks:
    """Prints every announced row (after its commit), flushed at once: what a crash must not lose."""

    def __init__(self, book: PositionBook) -> None:
        self.book = book

    def _ack(self, event: PositionEvent) -> None:
        sys.stdout.write(f"ack {event.event} {event.symbol} {event.timestamp} {self.book.writes.batches}\n")
        sys.stdout.flush()

    @hookimpl
    def on_position_updated(self, event: PositionEvent) -> None:
        self._ack(event)

    @hookimpl
    def on_position_closed(self, event: PositionEvent) -> None:
        self._ack(event)


async def main(url: str) -> None:
    store = await Store.open(url, max_size=3)
    pm = new_plugin_manager()
    book = PositionBook(VENUE, "default", pm, store, fill_grace_ms=0, group_commit=True)
    register(pm, Acks(book), "acks")
    ts = now_ms()
    for symbol in SYMBOLS:
        await book.add(BookPosition(symbol, "long", Decimal(1), Decimal(1), None, opened_at=ts))
    print("ready", flush=True)
    seq = 0
    while True:  # until killed
        for symbol in SYMBOLS:
            seq += 1
            ts += 1
            if seq % 97 == 0:  # now and then a closure, and the symbol opens again
                await book.on_event(PositionUpdate(venue=VENUE, symbol=symbol, side=None, contracts=Decimal(0),
                                                   sequence=seq, timestamp=ts))
                await book.add(BookPosition(symbol, "long", Decimal(1), Decimal(1), None, opened_at=ts + 1))
                ts += 1
            else:
                await book.on_event(PositionUpdate(venue=VENUE, symbol=symbol, side="long", contracts=Decimal(seq),
                                                   entry_price=Decimal(1), sequence=seq, timestamp=ts))
            await asyncio.sleep(0)  # the next frame comes from the socket


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
