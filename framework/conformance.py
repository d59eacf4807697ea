"""Conformance: hold a plugin's emulator and decoder to recorded reality (cassettes, :mod:`framework.cassette`).

A plugin ships cassettes — recorded on the venue (``framework check --record``) or assembled from the
venue's documented examples, each with its provenance — in a ``cassettes/`` folder beside its plugin
module, or names them as ``harness.cassettes`` (paths).  For each cassette:

(a) :func:`check_lifecycle` replays the frames the venue sent through the plugin's decoder and a
    PositionBook (``framework replay``) and checks the lifecycle the cassette implies: each position
    opened once and closed once, with the reason and price its ``meta`` line's ``lifecycle`` states
    (``[{"symbol", "side", "reason", "price"}]``, read by the cassette's author off its own responses).
(b) :func:`check_requests` sends the cassette's REST requests, in order, to the plugin's emulator through
    the plugin's own connection (its ccxt client signs them with the harness's keys) and compares each
    answer with the recorded one — status, error code (``code`` / ``retCode``), key set and value types —
    and the order, kinds and shapes of the private frames that follow.  Ids, prices and times are compared
    by type, not value.  A cassette assembled from separate documented examples (``"assembled": true`` in
    its meta line) says nothing of the order or number of frames: each of its frames must then find one of
    its kind, and shape, among the emulator's.  A request marked ``"frames_unrecorded": true`` (its source
    shows no frames) has its frames not compared; one marked ``"response_unrecorded": true`` (no source shows
    its answer: it is sent to bring the venue to the recorded state) has only its status compared.  Public
    mark-price frames are not compared: they move the emulated market (the harness's ground truth) to the
    recorded price before the next request.

A plugin with no cassette is ``conformance: unverified`` (:func:`conformance_status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pluggy

from framework.cassette import read_cassette, recording
from framework.driver import Driver
from framework.errors import FrameworkError
from framework.models import MarkPrice
from framework.protocols import StreamDecoder, VenueHarness

#: fields whose values are compared exactly: the venue's error codes (Binance ``code``, Bybit ``retCode``)
ERROR_CODE_FIELDS = ("code", "retCode")
#: request fields the client signs anew (never replayed as recorded)
AUTH_FIELDS = frozenset({"timestamp", "recvWindow", "signature", "sign", "apiKey", "api_key"})
FRAME_BOUND_S = 10.0


@dataclass(frozen=True)
class Mismatch:
    """One difference between the recorded venue and the emulator."""

    endpoint: str
    field: str
    recorded: Any
    emulated: Any

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.field}: recorded {self.recorded!r}, emulator {self.emulated!r}"


# --- where cassettes are --------------------------------------------------------------------------------


def cassette_paths(pm: pluggy.PluginManager, plugin_name: str, harness: object | None = None) -> list[Path]:
    """The cassettes a plugin ships: ``harness.cassettes`` if its harness names them, else every
    ``*.jsonl`` in the ``cassettes/`` folder beside the plugin's module (sorted)."""
    declared = getattr(harness, "cassettes", None)
    if declared:
        return [Path(p) for p in declared]
    module_file = getattr(pm.get_plugin(plugin_name), "__file__", None)
    if not module_file:
        return []
    return sorted((Path(module_file).parent / "cassettes").glob("*.jsonl"))


def conformance_status(pm: pluggy.PluginManager, plugin_name: str) -> str:
    """``verified by N cassette(s)`` or ``unverified`` (no cassette: nothing holds its emulator to the venue).
    The harness is built, never entered, to read its ``cassettes``."""
    try:
        harness: object | None = Driver(pm, plugin_name).venue_harness({})
    except Exception:  # no harness: the folder alone says
        harness = None
    paths = cassette_paths(pm, plugin_name, harness)
    return f"verified by {len(paths)} cassette(s)" if paths else "unverified"


def load(path: Path) -> list[dict[str, Any]]:
    """A cassette's entries.  :raises ValueError: not a cassette (the message names the file and line)."""
    try:
        return read_cassette(path.read_text(encoding="utf-8").splitlines())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# --- (a) the lifecycle the frames imply ---------------------------------------------------------------------


async def check_lifecycle(pm: pluggy.PluginManager, plugin_name: str, entries: list[dict[str, Any]]) -> list[str]:
    """Problems found replaying the cassette's received frames (empty: it holds).

    Every position the frames show must open once and close once; with a ``lifecycle`` in the meta line,
    each closure must have the stated symbol, side, reason and price.
    """
    from framework.replay import replay

    lines = [json.dumps(e) for e in entries]
    result = await replay(pm, plugin_name, lines)
    problems = [f"malformed frame at line {n}: {error}" for n, error in result.malformed]
    opened = [e for e in result.events if e.event == "opened"]
    closed = [e for e in result.events if e.event == "closed"]
    for symbol in sorted({e.symbol for e in opened + closed}):
        opens = sum(1 for e in opened if e.symbol == symbol)
        closes = sum(1 for e in closed if e.symbol == symbol)
        if opens != closes:
            problems.append(f"{symbol}: opened {opens} time(s), closed {closes} time(s)")
    expected = entries[0].get("lifecycle") if entries and entries[0]["kind"] == "meta" else None
    if expected is not None:
        got = [{"symbol": c.symbol, "side": c.side, "reason": c.reason,
                "price": None if c.price is None else str(c.price)} for c in closed]
        want = [{**e, "price": None if e.get("price") is None else str(Decimal(str(e["price"])))} for e in expected]
        got = [{**g, "price": None if g["price"] is None else str(Decimal(g["price"]))} for g in got]
        if got != want:
            problems.append(f"closures: recorded lifecycle {want}, replay gave {got}")
    if not opened:
        problems.append("the frames show no position opening")
    return problems


# --- (b) the emulator against the recorded answers -----------------------------------------------------------


def frame_kind(text: str) -> str | None:
    """What kind of frame this is, from its own fields (Binance ``e`` plus an order's execution type ``o.x``,
    Bybit ``topic``); ``None`` for a control frame (``op`` answers, pings, subscription results)."""
    try:
        frame = json.loads(text)
    except ValueError:
        return "text"
    if not isinstance(frame, dict) or "op" in frame or ("id" in frame and "result" in frame):
        return None
    if "e" in frame:
        order = frame.get("o")
        return f"{frame['e']}:{order.get('x')}" if isinstance(order, dict) and "x" in order else str(frame["e"])
    if "topic" in frame:
        return str(frame["topic"]).split(".")[0]
    return "object"


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def compare_shapes(endpoint: str, recorded: Any, emulated: Any, where: str = "") -> list[Mismatch]:
    """Differences of key sets and value types (error codes by value), recursively; a list compares its
    first elements."""
    name = where or "(body)"
    if _type(recorded) != _type(emulated):
        return [Mismatch(endpoint, f"{name} type", _type(recorded), _type(emulated))]
    if isinstance(recorded, dict):
        if set(recorded) != set(emulated):  # each side's keys the other lacks
            return [Mismatch(endpoint, f"{name} keys", sorted(set(recorded) - set(emulated)),
                             sorted(set(emulated) - set(recorded)))]
        found: list[Mismatch] = []
        for key in recorded:
            path = f"{where}.{key}" if where else key
            if key in ERROR_CODE_FIELDS and recorded[key] != emulated[key]:
                found.append(Mismatch(endpoint, path, recorded[key], emulated[key]))
            else:
                found += compare_shapes(endpoint, recorded[key], emulated[key], path)
        return found
    if isinstance(recorded, list):
        if recorded and not emulated:
            return [Mismatch(endpoint, f"{name} length", len(recorded), 0)]
        if recorded and emulated:
            return compare_shapes(endpoint, recorded[0], emulated[0], f"{where}[0]")
    return []


def _ccxt_client(conn: object) -> Any:
    import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]

    for value in vars(conn).values():
        if isinstance(value, ccxt_async.Exchange):
            return value
    raise FrameworkError(f"conformance needs the connection's ccxt client; {type(conn).__name__} holds none")


def _route(client: Any, method: str, path: str) -> Any:
    """ccxt's implicit-API endpoint (``ccxt.base.types.Entry``) for a recorded request, e.g. ``order`` of
    ``fapiPrivate`` for ``POST /fapi/v1/order``.  :raises FrameworkError: ccxt defines no such endpoint."""
    from urllib.parse import urlsplit

    from ccxt.base.types import Entry  # type: ignore[import-untyped]

    entries = [e for klass in type(client).__mro__ for e in vars(klass).values()
               if isinstance(e, Entry) and e.method == method.upper()]
    for entry in entries:
        api = entry.api[0] if isinstance(entry.api, list) else entry.api
        base = client.urls["api"].get(api)
        if isinstance(base, str) and urlsplit(client.implode_hostname(base)).path.rstrip("/") + "/" + entry.path \
                == path:
            return entry
    raise FrameworkError(f"{method} {path}: ccxt defines no such endpoint")


def _params(entry: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = dict(entry.get("query") or {})
    if isinstance(entry.get("body"), dict):
        params.update(entry["body"])
    return {k: v for k, v in params.items() if k not in AUTH_FIELDS}


class _Sink:
    def __init__(self) -> None:
        self.connected = asyncio.Event()

    async def on_event(self, event: Any) -> None: ...

    async def on_connected(self, reconnect: bool) -> None:
        self.connected.set()

    async def on_disconnected(self, detail: str) -> None: ...

    def on_malformed(self, raw: str | bytes, error: Exception) -> None: ...


def _segments(entries: Iterable[dict[str, Any]], decoder: StreamDecoder) -> list[dict[str, Any]]:
    """The cassette cut where something acts on the venue: each REST request, and each move of the mark
    price (a public frame the decoder reads as :class:`MarkPrice`), with the private frames that follow it
    until the next act."""
    segments: list[dict[str, Any]] = []
    for entry in entries:
        if entry["kind"] == "rest":
            segments.append({"request": entry, "marks": [], "frames": []})
        elif entry["kind"] == "ws" and entry.get("dir") == "recv":
            with contextlib.suppress(Exception):
                ticks = [e for e in decoder.decode(entry["frame"]) if isinstance(e, MarkPrice)]
                if ticks:
                    segments.append({"request": None, "marks": ticks, "frames": []})
                    continue
            if frame_kind(entry["frame"]) is not None and segments:
                segments[-1]["frames"].append(entry["frame"])
    return segments


async def check_requests(driver: Driver, harness: VenueHarness, entries: list[dict[str, Any]],
                         frame_bound_s: float = FRAME_BOUND_S) -> list[Mismatch]:
    """Send the cassette's requests to the emulator behind ``harness`` (already entered) and compare.

    :returns: every difference (empty: the emulator answered as the venue did).
    """
    buffer = io.StringIO()
    found: list[Mismatch] = []
    segments = _segments(entries, driver.make_decoder())
    venue = getattr(harness, "venue", None)
    assembled = bool(entries and entries[0]["kind"] == "meta" and entries[0].get("assembled"))
    with recording(buffer, source="conformance"):
        await driver.connect(harness.config)
        sink = _Sink()
        stream = asyncio.create_task(driver.run_stream(sink))
        try:
            await asyncio.wait_for(sink.connected.wait(), frame_bound_s)
            client = _ccxt_client(driver.session)
            for segment in segments:
                request = segment["request"]
                start = len(buffer.getvalue().splitlines())
                if request is None:  # the market moved: the emulated one moves with it (ground truth)
                    if venue is None:
                        continue
                    for tick in segment["marks"]:
                        venue.set_mark_price(tick.symbol, tick.price)
                    endpoint = f"mark price {segment['marks'][-1].symbol} {segment['marks'][-1].price}"
                    _, frames = await _answer(buffer, start, len(segment["frames"]), frame_bound_s, rest=False)
                    found += _compare_frames(endpoint, segment["frames"], frames, assembled)
                    continue
                endpoint = f"{request['method']} {request['path']}"
                route = _route(client, request["method"], request["path"])
                with contextlib.suppress(Exception):  # an error answer is an answer: compared below
                    await client.request(route.path, route.api, route.method, _params(request), config=route.config)
                answer, frames = await _answer(buffer, start, len(segment["frames"]), frame_bound_s)
                found += _compare(endpoint, request, answer)
                if not request.get("frames_unrecorded"):
                    found += _compare_frames(endpoint, segment["frames"], frames, assembled)
        finally:
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)
            await driver.disconnect()
    return found


async def _answer(buffer: io.StringIO, start: int, frames_expected: int, bound_s: float,
                  rest: bool = True) -> tuple[dict[str, Any] | None, list[str]]:
    """The emulator's answer recorded after line ``start``, and the private frames that followed (waiting,
    within ``bound_s``, until as many arrived as the venue sent)."""
    deadline = time.monotonic() + bound_s
    while True:
        entries = [json.loads(line) for line in buffer.getvalue().splitlines()[start:]]
        answer = next((e for e in entries if e["kind"] == "rest"), None)
        frames = [e["frame"] for e in entries if e["kind"] == "ws" and e["dir"] == "recv"
                  and frame_kind(e["frame"]) is not None]
        if ((answer is not None or not rest) and len(frames) >= frames_expected) or time.monotonic() >= deadline:
            return answer, frames
        await asyncio.sleep(0.05)


def _compare(endpoint: str, recorded: dict[str, Any], answer: dict[str, Any] | None) -> list[Mismatch]:
    if answer is None:
        return [Mismatch(endpoint, "answer", recorded["status"], "none")]
    if answer["status"] != recorded["status"]:
        return [Mismatch(endpoint, "status", recorded["status"], answer["status"])]
    if recorded.get("response_unrecorded"):  # sent to bring the venue to the recorded state; no source shows it
        return []
    return compare_shapes(endpoint, recorded["response"], answer["response"])


def _compare_frames(endpoint: str, recorded: list[str], frames: list[str], assembled: bool = False) -> list[Mismatch]:
    kinds = [frame_kind(f) for f in recorded]
    got = [frame_kind(f) for f in frames]
    if assembled:  # the frames come from separate examples: their order and number are not the venue's
        found: list[Mismatch] = []
        for index, mine in enumerate(recorded):
            theirs = next((f for f in frames if frame_kind(f) == kinds[index]), None)
            if theirs is None:
                found.append(Mismatch(endpoint, f"a frame of kind {kinds[index]}", "present", got))
            else:
                found += compare_shapes(f"{endpoint} → {kinds[index]} frame", json.loads(mine), json.loads(theirs))
        return found
    if kinds != got:
        return [Mismatch(endpoint, "frames that follow", kinds, got)]
    found = []
    for index, (mine, theirs) in enumerate(zip(recorded, frames, strict=True)):
        found += compare_shapes(f"{endpoint} → frame {index + 1} ({kinds[index]})", json.loads(mine),
                                json.loads(theirs))
    return found


async def verify_cassette(pm: pluggy.PluginManager, plugin_name: str, path: Path,
                          harness: VenueHarness | None = None) -> list[str]:
    """Every problem (a) and (b) find with one cassette, each naming the cassette (empty: it holds).

    :param harness: the emulator to hold to the cassette, entered (default: the plugin's own
        ``venue_harness``, prices still unless the cassette moves them).
    """
    entries = load(path)
    driver = Driver(pm, plugin_name)
    problems = []
    venues = {str(e["venue"]) for e in entries if e.get("venue")}
    if venues - {driver.venue}:
        problems.append(f"{path.name}: recorded on {', '.join(sorted(venues))}; the plugin's venue is "
                        f"{driver.venue!r}")
    problems += [f"{path.name}: (a) {p}" for p in await check_lifecycle(pm, plugin_name, entries)]
    if harness is None:
        async with driver.venue_harness({"seed": 0}) as own:
            mismatches = await check_requests(driver, own, entries)
    else:
        mismatches = await check_requests(driver, harness, entries)
    return problems + [f"{path.name}: (b) {m}" for m in mismatches]
