"""Fault knobs: parse_faults and the FrameShaper applied to private-stream frames."""

from __future__ import annotations

import asyncio

import pydantic
import pytest

from framework.venue import Faults, FrameShaper, Venue, parse_faults


def test_parse_faults_string_and_dict():
    faults = parse_faults("rest_position_lag_ms=5000, drop_closing_frames=1,minimal_order_response=true")
    assert (faults.rest_position_lag_ms, faults.drop_closing_frames, faults.minimal_order_response) == (
        5000,
        1,
        True,
    )
    assert faults.drop_rate == 0
    assert parse_faults({"drop_rate": 0.25}).drop_rate == 0.25
    assert parse_faults("") == Faults()
    assert parse_faults(None) == Faults()


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("rest_lag=5", "rest_lag"),
        ("drop_rate=2", "drop_rate"),
        ("rest_position_lag_ms=99999", "rest_position_lag_ms"),
        ("reject_next_orders=many", "reject_next_orders"),
        ("drop_closing_frames", "drop_closing_frames"),
    ],
)
def test_parse_faults_errors_name_the_bad_knob(spec, named):
    with pytest.raises(ValueError, match=named):
        parse_faults(spec)


def test_unknown_knob_error_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: rest_position_lag_ms"):
        parse_faults({"nope": 1})


def test_faults_assignment_is_validated():
    faults = Faults()
    with pytest.raises(pydantic.ValidationError):
        faults.drop_rate = 1.5


class Socket:
    """A socket stand-in collecting what the shaper writes (the shaper is what is under test)."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send(self, frame: str) -> None:
        self.frames.append(frame)


def shaper_with(seed: int = 7, **knobs) -> tuple[FrameShaper, Socket]:
    venue = Venue("binance", seed=seed)
    venue.faults = parse_faults(knobs)
    return FrameShaper(venue), Socket()


async def test_no_faults_sends_every_frame_in_order():
    shaper, socket = shaper_with()
    for i in range(5):
        await shaper.send(socket.send, f"f{i}", closing=i == 2)
    assert socket.frames == ["f0", "f1", "f2", "f3", "f4"]
    assert shaper.stats == {"sent": 5}


async def test_drop_rate_is_seeded():
    results = []
    for _ in range(2):
        shaper, socket = shaper_with(seed=11, drop_rate=0.3)
        for i in range(200):
            await shaper.send(socket.send, f"f{i}")
        results.append(socket.frames)
        assert shaper.stats["sent"] + shaper.stats["dropped"] == 200
        assert 30 < shaper.stats["dropped"] < 90
    assert results[0] == results[1]


async def test_duplicate_rate_sends_twice():
    shaper, socket = shaper_with(duplicate_rate=1.0)
    await shaper.send(socket.send, "a")
    await shaper.send(socket.send, "b")
    assert socket.frames == ["a", "a", "b", "b"]
    assert (shaper.stats["duplicated"], shaper.stats["sent"]) == (2, 4)


async def test_reorder_holds_a_frame_behind_the_next():
    shaper, socket = shaper_with(reorder_rate=1.0)
    for frame in ("a", "b", "c"):
        await shaper.send(socket.send, frame)
    assert socket.frames == ["b", "a"]  # c is held, waiting for a successor
    await shaper.flush()
    assert socket.frames == ["b", "a", "c"]
    assert shaper.stats["reordered"] == 2


async def test_held_frame_is_released_without_a_successor():
    shaper, socket = shaper_with(reorder_rate=1.0)
    shaper.REORDER_HOLD_MS = 10
    delivered = asyncio.Event()

    async def send(frame: str) -> None:
        await socket.send(frame)
        delivered.set()

    await shaper.send(send, "only")
    assert socket.frames == []
    await asyncio.wait_for(delivered.wait(), timeout=2)
    assert socket.frames == ["only"]


async def test_drop_closing_frames_targets_only_the_next_n_closing_frames():
    shaper, socket = shaper_with(drop_closing_frames=1)
    await shaper.send(socket.send, "open")
    await shaper.send(socket.send, "flat-1", closing=True)
    await shaper.send(socket.send, "flat-2", closing=True)
    assert socket.frames == ["open", "flat-2"]
    assert shaper.venue.faults.drop_closing_frames == 0
    assert shaper.stats["dropped"] == 1


async def test_duplicate_closing_frames():
    shaper, socket = shaper_with(duplicate_closing_frames=1)
    await shaper.send(socket.send, "open")
    await shaper.send(socket.send, "flat-1", closing=True)
    await shaper.send(socket.send, "flat-2", closing=True)
    assert socket.frames == ["open", "flat-1", "flat-1", "flat-2"]


async def test_delayed_closing_frame_is_overtaken_by_later_frames():
    """docs/incidents.md I-2: the flat frame arrives long after everything else."""
    shaper, socket = shaper_with(delay_closing_frames_ms=30)
    await shaper.send(socket.send, "flat", closing=True)
    await shaper.send(socket.send, "order-update")
    assert socket.frames == ["order-update"]
    await shaper.flush()
    assert socket.frames == ["order-update", "flat"]
    assert shaper.stats["delayed"] == 1


async def test_stream_delay_keeps_order():
    shaper, socket = shaper_with(stream_delay_ms=20)
    for frame in ("a", "b", "c"):
        await shaper.send(socket.send, frame)
    assert socket.frames == []
    await shaper.flush()
    assert socket.frames == ["a", "b", "c"]
    assert shaper.stats["delayed"] == 3


async def test_failed_background_send_is_counted_and_close_cancels_pending():
    shaper, socket = shaper_with(stream_delay_ms=10)

    async def broken(frame: str) -> None:
        raise ConnectionResetError("socket closed")

    await shaper.send(broken, "lost")
    await shaper.flush()
    assert shaper.stats["failed"] == 1
    shaper.venue.faults.stream_delay_ms = 60_000
    await shaper.send(socket.send, "never")
    shaper.close()
    await shaper.flush()
    assert socket.frames == []
