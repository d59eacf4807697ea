"""Hostile and corrupt frames (issue 14 item 5): whatever a private stream delivers, decoding is a counted
malformed frame or valid events, never an exception that restarts the stream; a frame stamped far in the
future or with an absurd sequence is never adopted.  Real captured frames (each plugin's fixtures) are
mutated by hypothesis; the stream-level test sends hostile frames through each emulator's injection
control to a running engine."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.driver import Driver
from framework.driverkit import decode_frame
from framework.engine.book import MAX_FUTURE_MS, PositionBook
from framework.models import MAX_AMOUNT, MarkPrice, OrderUpdate, PositionUpdate, now_ms
from framework.plugins import load_plugins
from tests.engine.conftest import FAST, venue_env

ROOT = Path(__file__).resolve().parents[2]
FRAMES = {
    "binance": sorted((ROOT / "plugins/binance/tests/fixtures/user_data_json").glob("*.json"))
    + [ROOT / "plugins/binance/tests/fixtures/market_data_json/mark_price_stream.json"],
    "bybit": sorted((ROOT / "plugins/bybit/tests/fixtures").glob("ws_*.json")),
}
HOSTILE = ["Infinity", "-Infinity", "NaN", "1e999999", "-1", "0", "", "9" * 400, None, True, [], {}, "💥",
           2**64, -(2**63), 1e308, "1e-999999"]
FUZZED_FRAMES = 10_000  # per venue (issue 14's figure)


class Sink:
    """Counts what the decoder hands on: events and malformed frames."""

    def __init__(self) -> None:
        self.malformed = 0
        self.events: list[Any] = []

    def on_malformed(self, raw: str | bytes, error: Exception) -> None:
        self.malformed += 1

    async def on_event(self, event: Any) -> None: ...
    async def on_connected(self, reconnect: bool) -> None: ...
    async def on_disconnected(self, detail: str) -> None: ...


def leaves(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaves(v, (*path, k))] or [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaves(v, (*path, i))] or [path]
    return [path]


def replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    return [replaced(v, rest, new) if i == head else v for i, v in enumerate(value)]


@st.composite
def hostile_frames(draw: st.DrawFn, venue: str) -> str:
    frame = json.loads(draw(st.sampled_from(FRAMES[venue])).read_text())
    kind = draw(st.sampled_from(["leaf", "leaf", "leaf", "nest", "bytes", "truncate"]))
    if kind == "nest":
        depth = draw(st.sampled_from([10, 1_000, 100_000]))
        return "[" * depth + json.dumps(frame) + "]" * depth
    text = json.dumps(frame)
    if kind == "bytes":
        return draw(st.binary(max_size=64)).decode("latin-1")
    if kind == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(leaves(frame)))
        frame = replaced(frame, path, draw(st.sampled_from(HOSTILE)))
    return json.dumps(frame).replace('"Infinity"', "Infinity") if draw(st.booleans()) else json.dumps(frame)


def sane(event: Any) -> bool:
    if isinstance(event, PositionUpdate):
        return event.contracts <= MAX_AMOUNT and event.contracts.is_finite()
    if isinstance(event, OrderUpdate):
        return event.order.amount.is_finite() and event.order.filled <= MAX_AMOUNT
    return isinstance(event, MarkPrice) and event.price.is_finite()


@pytest.mark.parametrize("venue", ["binance", "bybit"])
def test_fuzzed_frames_decode_or_are_counted_never_raise(venue):
    decoder = Driver(load_plugins([venue]), venue).make_decoder()
    sink = Sink()
    seen = {"frames": 0}

    @settings(max_examples=FUZZED_FRAMES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(hostile_frames(venue))
    def one(raw: str) -> None:
        seen["frames"] += 1
        events = decode_frame(decoder, raw, sink)  # raising here would be a stream restart
        assert all(sane(e) for e in events)

    one()
    assert seen["frames"] >= FUZZED_FRAMES * 0.9 and sink.malformed > 0


async def test_a_frame_stamped_in_the_future_or_with_an_absurd_sequence_is_not_adopted(pm_and_store):
    pm, store = pm_and_store
    book = PositionBook("bybit", "default", pm, store, fill_grace_ms=0)
    symbol = "XRP/USDT:USDT"

    def update(seq: int, ts: int, contracts: str) -> PositionUpdate:
        return PositionUpdate(venue="bybit", symbol=symbol, side="long" if Decimal(contracts) else None,
                              contracts=Decimal(contracts), entry_price=Decimal("1.1"), sequence=seq, timestamp=ts)

    now = now_ms()
    await book.on_event(update(10, now + 10**10, "5"))  # far in the future
    assert book.malformed_frames == 1 and book.last_update(symbol) is None
    await book.on_event(update(10**15, now, "5"))  # an absurd sequence, with the clock of now
    await book.on_event(update(11, now + 1, "7"))  # the next real frame: lower sequence, newer clock
    assert book.last_update(symbol).contracts == 7, "one absurd sequence made every real frame stale"


async def test_a_frame_stamped_up_to_a_day_ahead_is_applied_and_one_millisecond_more_is_not(pm_and_store, monkeypatch):
    # The edge of the sanity bound (MAX_FUTURE_MS, a day), with the wall clock frozen so that it is exact.
    pm, store = pm_and_store
    book = PositionBook("bybit", "default", pm, store, fill_grace_ms=0)
    symbol, now = "XRP/USDT:USDT", now_ms()
    monkeypatch.setattr(time, "time_ns", lambda: now * 1_000_000)
    for seq, ts in ((1, now + MAX_FUTURE_MS + 1), (2, now + MAX_FUTURE_MS)):
        await book.on_event(PositionUpdate(venue="bybit", symbol=symbol, side="long", contracts=Decimal(seq),
                                           entry_price=Decimal("1.1"), sequence=seq, timestamp=ts))
    assert book.malformed_frames == 1 and book.last_update(symbol).contracts == 2


@pytest.fixture
async def pm_and_store(store):
    return load_plugins([]), store


HOSTILE_ON_THE_WIRE = {
    "binance": ['{"e":"ACCOUNT_UPDATE","E":1,"T":Infinity,"a":{"m":"ORDER","B":[],"P":[]}}',
                '{"e":"ACCOUNT_UPDATE","E":1,"T":1,"a":{"m":"ORDER","B":[],"P":[{"s":"XRPUSDT","pa":"1e999999",'
                '"ep":"1.1","ps":"BOTH"}]}}',
                "[" * 100_000 + "]" * 100_000, "\x00\xff not json"],
    "bybit": ['{"topic":"position","data":[{"symbol":"XRPUSDT","side":"Buy","size":"NaN","seq":Infinity}]}',
              '{"topic":"position","data":[{"symbol":"XRPUSDT","side":"Buy","size":"1e999999","seq":1}]}',
              "[" * 100_000 + "]" * 100_000, "\x00\xff not json"],
}


@pytest.mark.parametrize("venue_name", ["binance", "bybit"])
async def test_hostile_frames_on_a_live_stream_are_counted_and_the_stream_goes_on(store, venue_name):
    async with venue_env(venue_name, store) as env:
        await env.start(FAST)
        await env.settled()
        book = env.parts.book
        states = list(env.recorder.seen["on_stream_state"])
        for frame in HOSTILE_ON_THE_WIRE[venue_name]:
            await env.harness.emulator.inject_private_frame(frame)
        await env.recorder.wait_for(lambda r: book.malformed_frames >= len(HOSTILE_ON_THE_WIRE[venue_name]), 10)
        await env.engine.open(env.intent("long"))  # the same stream still delivers
        assert env.venue.is_protected("default", env.symbol) and env.parts.book.holds(env.symbol)
        after = [s for s in env.recorder.seen["on_stream_state"][len(states):] if s[1] != "malformed_frame"]
        assert after == [], f"the stream restarted: {after}"
