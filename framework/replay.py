"""``framework replay``: a captured private-stream log through a plugin's decoder and a PositionBook.

The post-mortem tool the incidents lacked: feed the frames exactly as the socket delivered them (one raw
frame per line), or a cassette (``framework run|check --record``: its received frames of the plugin's venue),
and see which lifecycle events the framework derives — an opened position, its updates,
and exactly one closure — without a socket, a venue or a database.

Positions the log shows open are adopted as they appear (``reason='replay'``); a malformed line is
counted and reported, and the replay goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy

from framework.cassette import is_cassette_line
from framework.driver import Driver
from framework.engine.book import BookListener, BookPosition, PositionBook
from framework.errors import StreamError
from framework.hookspecs import hookimpl
from framework.models import PositionEvent


@dataclass
class ReplayResult:
    """What a replay produced: the lifecycle events in order, and the lines that could not be decoded."""

    events: list[PositionEvent] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line number, error)
    frames: int = 0


class _Recorder:
    def __init__(self, result: ReplayResult) -> None:
        self.result = result

    @hookimpl
    def on_position_open(self, event: PositionEvent) -> None:
        self.result.events.append(event)

    @hookimpl
    def on_position_updated(self, event: PositionEvent) -> None:
        self.result.events.append(event)

    @hookimpl
    def on_position_closed(self, event: PositionEvent) -> None:
        self.result.events.append(event)


async def replay(pm: pluggy.PluginManager, plugin_name: str, lines: Iterable[str]) -> ReplayResult:
    """Decode ``lines`` with ``plugin_name``'s decoder and apply them to a fresh PositionBook.

    :param pm: a plugin manager with the plugin loaded.
    :param plugin_name: the driver plugin whose decoder to use.
    :param lines: raw frames, one per line, or a cassette's lines (told apart by the first line);
        blank lines are skipped.
    :returns: the lifecycle events and the malformed lines (numbered as lines of the file).
    """
    result = ReplayResult()
    driver = Driver(pm, plugin_name)
    decoder = driver.make_decoder()
    recorder = _Recorder(result)
    pm.register(recorder, name=f"replay-recorder-{id(recorder)}")
    try:
        unknown = _Unknown()
        book = PositionBook(driver.venue, "replay", pm, store=None, listener=unknown)
        for number, line in _frames(lines, driver.venue):
            result.frames += 1
            try:
                stream_events = decoder.decode(line)
            except StreamError as exc:
                book.on_malformed(line, exc)
                result.malformed.append((number, str(exc)))
                continue
            for stream_event in stream_events:
                await book.on_event(stream_event)
                while unknown.symbols:
                    await _adopt(book, unknown.symbols.pop(0))
        await book.flush()  # a last flat frame whose fill never came: closed now, reason unknown
    finally:
        pm.unregister(recorder)
    return result


def _frames(lines: Iterable[str], venue: str) -> Iterator[tuple[int, str]]:
    """``(line number, frame)``: every non-blank line of a raw log, or a cassette's frames received from
    ``venue``."""
    numbered = ((n, line.strip()) for n, line in enumerate(lines, start=1))
    numbered = ((n, line) for n, line in numbered if line)
    first = next(numbered, None)
    if first is None:
        return
    if not is_cassette_line(first[1]):
        yield first
        yield from numbered
        return
    for number, line in (first, *numbered):
        entry = json.loads(line) if is_cassette_line(line) else None
        if entry is None:
            yield number, line  # not an entry: the decoder reports it as malformed
        elif entry["kind"] == "ws" and entry.get("dir") == "recv" and entry.get("venue") in (None, venue):
            yield number, str(entry["frame"])


class _Unknown(BookListener):
    """Collects the symbols the stream shows open that the book does not hold: a replay adopts them."""

    def __init__(self) -> None:
        self.symbols: list[str] = []

    def unknown_position(self, symbol: str) -> None:
        self.symbols.append(symbol)


async def _adopt(book: PositionBook, symbol: str) -> None:
    update = book.last_update(symbol)
    if update is None or update.contracts <= 0 or update.side is None or book.holds(symbol):
        return
    await book.add(
        BookPosition(symbol=symbol, side=update.side, contracts=update.contracts,
                     entry_price=update.entry_price, stop_price=None, opened_at=update.timestamp),
        source="replay",
    )


def event_json(event: PositionEvent) -> dict[str, Any]:
    """One ``--json`` line: ``event``, ``venue``, ``symbol``, ``side``, ``contracts``, ``reason`` and more."""
    data = event.model_dump(mode="json", exclude={"account", "observed_at"})
    return {key: data[key] for key in ("event", "venue", "symbol", "side", "contracts", "reason")} | data
