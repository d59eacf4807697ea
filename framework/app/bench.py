"""``framework bench``: one measured run of the whole stack on the emulators (loopback, real prices).

Every figure comes from ONE run; percentiles by nearest rank (:func:`framework.app.report.latency_summary`).
What each figure means and how it is measured: ``docs/benchmarks.md``.  Keys of the JSON (``--json``),
per venue where they differ::

    closure_latency_ms        {venue: {"p50", "p99", "max", "n"}}   venue close -> on_position_closed (DB row closed)
    closure_floor_ms          {venue: {"p50", "p99", "max", "n", "ws_frame", "db_transaction", "closure_ratio"}}
                              loopback ws frame + one UPDATE+INSERT transaction on a held connection, same run
    fill_to_stop_ms           {venue: {"p50", "p99", "max", "min", "n"}} entry fill -> stop resting (<= 0: stop first)
    unprotected_ms            {venue: {"p50", "p99", "max", "total", "moves"}} per trailing stop move
    reprotect_ms              {venue: {"p50", "p99", "max", "n"}} stop removed on the venue -> a new one resting
    rest_calls_per_lifecycle  {venue: {"<METHOD> <path>": n, "total": n}} open, protect, 10 moves, close
    rest_calls_per_lifecycle_native  {venue: {...}} the same with the venue's own trailing stop
    stream_events_per_s       {venue: {"with_journal", "without_journal", "decoder_only", "frames", "events",
                                        "journal_rows", "journal_commits", "with_journal_cpu_ms",
                                        "without_journal_cpu_ms"}}
    memory_per_1000_positions {"bytes"}
    reconcile                 {venue: {"<n positions>": {"venue_calls", "cpu_ms", "wall_ms", "raw_cpu_ms"}}}
    floor                     {"insert_rows_per_s": {"executemany", "copy", "rows_per_transaction"}} same run
    ratios                    {venue: {"closure_p50_x_floor", ..., "reconcile_<n>_x_raw"}}  figure / floor
    scale                     {venue: {"<n symbols>": {"moves_per_s", "cpu_ms_per_move", "mark_frames_per_s",
                                                      "moves", "expected", "alerts", "rss_mb", ...}}}
    cold_start_ms             {"first_run": {...}, "restart": {...}}
    machine                   {"cpu", "cores", "python", "platform"}

``run_soak(seconds, speed)`` runs ``framework run`` (both emulated venues, the demo signals) and samples
memory and the asyncio task count; not wired in the CLI (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import websockets

from framework.app.report import latency_summary, percentile
from framework.app.soak import rss_mib
from framework.driver import Driver
from framework.engine import Engine, EngineSettings
from framework.engine.book import BookPosition, PositionBook
from framework.engine.broadcast import client_order_id
from framework.engine.protection import Protector
from framework.engine.reconcile import Reconciler
from framework.engine.runtime import VenueEngine
from framework.errors import ConfigError, StreamError
from framework.hookspecs import hookimpl
from framework.models import (
    DriverConfig,
    OrderIntent,
    OrderUpdate,
    PositionEvent,
    PositionSide,
    PositionUpdate,
    StopEvent,
    StreamEvent,
    TrailingSpec,
)
from framework.plugins import load_plugins, register
from framework.store import Store
from framework.venue import FrameShaper, Instrument, Venue
from framework.venue.harness import EmulatorHarness

log = logging.getLogger(__name__)
REPROTECTS = 20  # stop removals per venue for reprotect_ms (issue 14's figure)

DEFAULT_PLUGINS = ["binance", "bybit"]
ACCOUNT = "default"
WAIT_S = 10.0  # a bound on any single wait: a stuck run fails instead of hanging
RECONCILE_REPEATS = 9  # passes (and floors) per reconcile size; the figures are their medians

#: engine settings of the bench: no rate limit on trailing moves, no periodic reconcile during a figure; the
#: engine trails (the stop-move figures measure its moves), the native lifecycle turns the venue's trail on
BENCH_SETTINGS = EngineSettings(
    verify_budget_ms=5_000, flat_budget_ms=2_000, reconcile_interval_s=3_600, orphan_grace_ms=0,
    protect_retry_ms=10, trailing_min_interval_ms=0, trailing_min_change_pct=Decimal("0.01"),
    native_trailing_stop=False,
)


@dataclass(frozen=True)
class Sizes:
    """How much of each figure one run measures."""

    closures: int
    moves: int
    reconcile: tuple[int, ...]
    stream_rounds: int
    memory_positions: int = 1_000
    cold_start_positions: int = 10
    scale: tuple[int, ...] = (10, 100, 1_000)
    scale_rounds: int = 3
    floor_samples: int = 1_000


FULL = Sizes(closures=1_000, moves=1_000, reconcile=(10, 100, 1_000, 10_000), stream_rounds=300)
QUICK = Sizes(closures=100, moves=100, reconcile=(10, 100, 1_000), stream_rounds=100, scale=(10, 100),
              floor_samples=300)


# --- a lifecycle listener that timestamps what it hears ------------------------------------------------


class Probe:
    """Records ``on_position_open`` / ``on_position_closed`` / ``on_stop_moved`` with ``perf_counter``
    times; :meth:`wait` waits on a condition without sleeping."""

    def __init__(self) -> None:
        self.opened: list[PositionEvent] = []
        self.closed: list[tuple[float, PositionEvent]] = []
        self.moved: list[StopEvent] = []
        self.alerts: list[Any] = []
        self._changed = asyncio.Event()

    def _touch(self) -> None:
        self._changed.set()

    async def wait(self, predicate: Any, timeout_s: float = WAIT_S) -> None:
        """Wait until ``predicate()`` holds.  :raises TimeoutError: not within ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    @hookimpl
    def on_position_open(self, event: PositionEvent) -> None:
        self.opened.append(event)
        self._touch()

    @hookimpl
    def on_position_closed(self, event: PositionEvent) -> None:
        self.closed.append((time.perf_counter(), event))
        self._touch()

    @hookimpl
    def on_stop_moved(self, event: StopEvent) -> None:
        self.moved.append(event)
        self._touch()

    @hookimpl
    def on_alert(self, alert: Any) -> None:
        self.alerts.append(alert)
        self._touch()


# --- one venue: emulator + driver + engine ---------------------------------------------------------------


def emulated(driver: Driver, options: dict[str, Any]) -> EmulatorHarness:
    """The driver's venue harness, which the bench needs emulated (ground truth, fault knobs).

    :raises ConfigError: the plugin's harness is not an emulator.
    """
    harness = driver.venue_harness(options)
    if not isinstance(harness, EmulatorHarness):
        raise ConfigError(f"plugin {driver.plugin_name!r}: the bench needs an emulated venue harness")
    return harness


def venue_of(harness: EmulatorHarness) -> Venue:
    """The running harness's simulated venue."""
    assert harness.venue is not None, "only inside `async with harness`"
    return harness.venue


def config_of(harness: EmulatorHarness) -> DriverConfig:
    """How a driver connects to the running harness."""
    assert harness.config is not None, "only inside `async with harness`"
    return harness.config


@dataclass
class Rig:
    """One emulated venue with its driver and a started :class:`Engine` on ``store``."""

    name: str
    harness: EmulatorHarness
    driver: Driver
    engine: Engine
    probe: Probe
    store: Store

    @property
    def venue(self) -> Venue:
        return venue_of(self.harness)

    @property
    def symbol(self) -> str:
        return self.harness.symbol

    @property
    def parts(self) -> VenueEngine:
        return self.engine.venue(self.name)

    @property
    def account(self) -> str:
        return config_of(self.harness).account

    def intent(self, side: PositionSide = "long", contracts: str = "10", stop_pct: str = "2",
               trailing: TrailingSpec | None = None, symbol: str | None = None) -> OrderIntent:
        """An entry ``stop_pct`` percent from the current mark price, fresh client order id."""
        symbol = symbol or self.symbol
        mark = self.venue.mark_price(symbol)
        tick = self.venue.instrument(symbol).tick_size
        sign = Decimal(-1) if side == "long" else Decimal(1)
        stop = (mark * (1 + sign * Decimal(stop_pct) / 100)).quantize(tick)
        return OrderIntent(account=self.account, venue=self.name, symbol=symbol, side=side,
                           contracts=Decimal(contracts), stop_loss=stop, trailing=trailing,
                           client_order_id=client_order_id("o"))


@contextlib.asynccontextmanager
async def engine_rig(
    name: str, store: Store, settings: EngineSettings = BENCH_SETTINGS, options: dict[str, Any] | None = None,
    start: bool = True, driver_options: dict[str, Any] | None = None,
) -> AsyncIterator[Rig]:
    """An emulator for plugin ``name`` (``venue_harness`` options: seed 7 unless given), its driver, a
    :class:`Probe` and an :class:`Engine` on ``store`` (started unless ``start=False``).

    :param driver_options: merged into ``DriverConfig.options`` (e.g. ``timeout_ms``)."""
    pm = load_plugins([name])
    probe = Probe()
    register(pm, probe, "bench-probe")
    driver = Driver(pm, name)
    async with emulated(driver, {"seed": 7, **(options or {})}) as harness:
        config = config_of(harness)
        if driver_options:
            config = config.model_copy(update={"options": {**config.options, **driver_options}})
        engine = Engine(pm, store, {name: driver}, {name: config}, settings)
        rig = Rig(name, harness, driver, engine, probe, store)
        if start:
            await engine.start()
        try:
            yield rig
        finally:
            if engine.venues:
                await engine.stop()


async def converge(rig: Rig) -> None:
    """One reconciliation pass (not timed).  After a closure the engine learned from the stream, a stale
    stop may still rest (a reduce-only one; Binance's system expires close-position stops itself,
    docs/conformance.md B7) until the reconciler cancels it; the bench converges after every closure."""
    await rig.engine.reconcile_all()


def cross_stop_price(intent: OrderIntent) -> Decimal:
    """A mark price just through ``intent``'s stop."""
    step = Decimal("0.995") if intent.side == "long" else Decimal("1.005")
    return intent.stop_loss * step


# --- figures ----------------------------------------------------------------------------------------------


async def closure_figures(
    rig: Rig, n: int, floor: ClosureFloor | None = None,
) -> tuple[list[float], list[int], list[float]]:
    """Open ``n`` positions through the engine and close each on the venue (even: ``manual_close``, odd:
    the mark price moved through the stop, then put back).  ``floor``: one floor sample right before each
    closure.

    The clock starts when the venue's call returned: the position is closed on the venue and its frames are
    queued on the socket.  The emulated exchange's own work before that (matching, its books, building the
    frames: about 0.5 ms of this process's CPU) is the venue's, which a real exchange does on its servers; it
    is returned apart (``venue_ms``).

    :returns: ``(closure latencies ms, fill-to-stop ms, venue_ms: the venue call's own ms per closure)``.
    """
    venue, symbol, probe = rig.venue, rig.symbol, rig.probe
    base_mark = venue.mark_price(symbol)
    latencies: list[float] = []
    venue_ms: list[float] = []
    intents: list[OrderIntent] = []
    for i in range(n):
        intent = rig.intent(side="long" if i % 4 < 2 else "short")
        await rig.engine.open(intent)
        intents.append(intent)
        if floor is not None:
            await floor.sample()
        closed_before = len(probe.closed)
        called = time.perf_counter()
        if i % 2 == 0:
            venue.manual_close(rig.account, symbol)
        else:
            venue.set_mark_price(symbol, cross_stop_price(intent))
        started = time.perf_counter()  # closed on the venue, its frames queued
        await probe.wait(lambda c=closed_before: len(probe.closed) > c)
        latencies.append((probe.closed[-1][0] - started) * 1000)
        venue_ms.append((started - called) * 1000)
        if i % 2:
            venue.set_mark_price(symbol, base_mark)
        await probe.wait(lambda: symbol not in rig.engine.positions(rig.name)[rig.name])
        await converge(rig)
    return latencies, fill_to_stop(venue.truth, rig.account, symbol, intents), venue_ms


class ClosureFloor:
    """The floor of a closure on this machine, sampled in the same run and the same loop as the closures
    (one sample right before each, so both see the same load and the same idle gaps): a loopback websocket
    frame (a 700-byte text frame, server send → client receive, ``websockets``), then one transaction of
    UPDATE positions + INSERT events (BEGIN, UPDATE, INSERT, COMMIT) on a connection held for the whole run
    (no pool acquire / release), on a throwaway position row.  Use inside ``async with``.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ws_ms: list[float] = []
        self.db_ms: list[float] = []
        self._stack = contextlib.AsyncExitStack()
        self._frame = json.dumps({"e": "ORDER_TRADE_UPDATE", "pad": "x" * 660})

    async def __aenter__(self) -> ClosureFloor:
        accepted: asyncio.Queue[Any] = asyncio.Queue()

        async def serve(ws: Any) -> None:
            await accepted.put(ws)
            await ws.wait_closed()

        stack = self._stack
        server = await stack.enter_async_context(websockets.serve(serve, "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        self._client = await stack.enter_async_context(websockets.connect(f"ws://127.0.0.1:{port}"))
        self._sender = await asyncio.wait_for(accepted.get(), WAIT_S)
        self._conn = await stack.enter_async_context(self.store.pool.acquire())
        self._symbol = f"FLOOR-{uuid.uuid4().hex[:8]}"
        self._position_id = await self._conn.fetchval(
            """INSERT INTO positions (account, venue, symbol, side, contracts, status, source, opened_at, updated_at)
               VALUES ('bench', 'floor', $1, 'long', 1, 'open', 'engine', 1, 1) RETURNING id""", self._symbol)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def sample(self) -> None:
        """One frame and one transaction, timed."""
        i = len(self.ws_ms)
        started = time.perf_counter()
        await self._sender.send(self._frame)
        await self._client.recv()
        received = time.perf_counter()
        async with self._conn.transaction():
            await self._conn.execute("UPDATE positions SET updated_at = $2 WHERE id = $1", self._position_id, i)
            await self._conn.execute(
                """INSERT INTO events (account, venue, symbol, position_id, kind, payload, at)
                   VALUES ('bench', 'floor', $1, $2, 'floor', $3, $4)""", self._symbol, self._position_id, {"i": i}, i)
        done = time.perf_counter()
        self.ws_ms.append((received - started) * 1000)
        self.db_ms.append((done - received) * 1000)

    def summary(self, closures: Sequence[float]) -> dict[str, Any]:
        """Percentiles of the per-sample sum (ms, 0.01 ms), of each part, and ``closure_ratio``: the
        ``closures``' (ms) p50 / p99 over the floor's, of the unrounded percentiles (at 0.1 ms rounding a
        1 ms figure moved the ratio by up to ±0.15)."""
        total = [a + b for a, b in zip(self.ws_ms, self.db_ms, strict=True)]
        ratio = {f"p{q}": round(percentile(closures, q) / percentile(total, q), 2) if percentile(total, q) else None
                 for q in (50, 99)}
        return {**_fine_summary(total), "ws_frame": _fine_summary(self.ws_ms),
                "db_transaction": _fine_summary(self.db_ms), "closure_ratio": ratio}


def fill_to_stop(truth: Any, account: str, symbol: str, intents: list[OrderIntent]) -> list[int]:
    """Per entry, ms from its first fill to the first moment the position was protected (ground truth).

    Positive: an unprotected interval started at the fill (its length).  Negative: the stop was resting
    before the fill (``stop_before_entry``: a close-position stop placed first), the stop's submission
    time minus the fill time.  Zero: protected at the fill's own tick (a stop attached to the entry).
    """
    fills = {f.client_order_id: f for f in reversed(truth.fills) if f.client_order_id}
    gaps = {start: end - start for a, s, start, end in truth.unprotected_intervals(account, symbol)}
    stops = [o for o in truth.orders if o.symbol == symbol and o.account == account and o.status != "rejected"
             and o.type in ("stop_market", "trailing_stop_market") and (o.reduce_only or o.close_position)]
    result = []
    for intent in intents:
        fill = fills.get(intent.client_order_id)
        if fill is None:
            continue
        if fill.ts in gaps:
            result.append(gaps[fill.ts])
            continue
        closing = "sell" if intent.side == "long" else "buy"
        before = [o.ts for o in stops if o.side == closing and o.ts <= fill.ts and o.trigger_price == intent.stop_loss]
        result.append(max(before) - fill.ts if before else 0)
    return result


async def stop_move_figures(rig: Rig, n: int, per_position: int = 100) -> list[int]:
    """``n`` trailing stop moves driven by the mark-price stream; per move, the unprotected ms it caused
    (ground truth).  A fresh position every ``per_position`` moves, long and short in turn: a long trails
    0.2 % rises, a short 0.2 % falls, so the mark comes back near where it started without a jump the
    engine's mark-price gate would hold (``mark_jump_band_pct``)."""
    venue, symbol, probe = rig.venue, rig.symbol, rig.probe
    tick = venue.instrument(symbol).tick_size
    per_move: list[int] = []
    long = True
    while len(per_move) < n:
        side: PositionSide = "long" if long else "short"
        step = Decimal("1.002") if long else Decimal("0.998")
        await rig.engine.open(rig.intent(side=side, trailing=TrailingSpec(callback_rate=Decimal(1))))
        mark = venue.mark_price(symbol)
        for _ in range(min(per_position, n - len(per_move))):
            before = venue.truth.unprotected_ms(rig.account, symbol)["total"]
            moves = len(probe.moved)
            mark = (mark * step).quantize(tick)
            venue.set_mark_price(symbol, mark)
            await probe.wait(lambda m=moves: len(probe.moved) > m)
            per_move.append(venue.truth.unprotected_ms(rig.account, symbol)["total"] - before)
        await rig.engine.close(rig.name, symbol)
        await probe.wait(lambda: symbol not in rig.engine.positions(rig.name)[rig.name])
        await converge(rig)
        long = not long
    return per_move


async def reprotect_figures(rig: Rig, n: int) -> list[float]:
    """``n`` times: the position's stop is removed on the venue (a person, the venue's expiry, a bug); per
    removal, the ms until the engine has a new stop resting (the stream event re-protects, no reconciliation).
    One position for all of them."""
    venue, symbol, probe = rig.venue, rig.symbol, rig.probe
    await rig.engine.open(rig.intent())
    times: list[float] = []
    for _ in range(n):
        moves = len(probe.moved)
        started = time.perf_counter()
        for stop in venue.orders(rig.account, symbol, open_only=True, conditional=True):
            venue.cancel_order(rig.account, symbol, stop.id)
        if venue.position(rig.account, symbol).stop_loss is not None:  # attached (Bybit)
            venue.set_trading_stop(rig.account, symbol, stop_loss=Decimal(0))
        await probe.wait(lambda m=moves: len(probe.moved) > m)
        times.append((time.perf_counter() - started) * 1000)
        assert venue.is_protected(rig.account, symbol), "re-protected in the book but not on the venue"
    await rig.engine.close(rig.name, symbol)
    await probe.wait(lambda: symbol not in rig.engine.positions(rig.name)[rig.name])
    await converge(rig)
    return times


async def lifecycle_rest_calls(rig: Rig, moves: int = 10) -> dict[str, int]:
    """REST calls by endpoint (emulator counter) for open + protect, ``moves`` trailing moves, close."""
    venue, symbol, probe = rig.venue, rig.symbol, rig.probe
    before = rig.harness.rest_calls()
    base_mark = venue.mark_price(symbol)
    tick = venue.instrument(symbol).tick_size
    await rig.engine.open(rig.intent(trailing=TrailingSpec(callback_rate=Decimal(1))))
    mark = base_mark
    for _ in range(moves):
        count = len(probe.moved)
        mark = (mark * Decimal("1.002")).quantize(tick)
        venue.set_mark_price(symbol, mark)
        await probe.wait(lambda c=count: len(probe.moved) > c)
    await rig.engine.close(rig.name, symbol)
    await probe.wait(lambda: symbol not in rig.engine.positions(rig.name)[rig.name])
    venue.set_mark_price(symbol, base_mark)
    calls = rig.harness.rest_calls()
    calls.subtract(before)
    result = {endpoint: n for endpoint, n in sorted(calls.items()) if n > 0}
    result["total"] = sum(result.values())
    return result


async def native_lifecycle_rest_calls(rig: Rig, moves: int = 10) -> dict[str, int]:
    """REST calls by endpoint for open + protect + the venue's trailing stop, ``moves`` 0.2 % steps the venue
    trails (the engine makes no move), close and the clean-up of what rested.  ``rig`` runs with
    ``native_trailing_stop``; the second of two lifecycles is counted (the first pays ccxt's one-off
    account look-ups on Bybit)."""
    venue, symbol, probe = rig.venue, rig.symbol, rig.probe
    result: dict[str, int] = {}
    for _ in range(2):
        before = rig.harness.rest_calls()
        base_mark = venue.mark_price(symbol)
        tick = venue.instrument(symbol).tick_size
        held = await rig.engine.open(rig.intent(trailing=TrailingSpec(callback_rate=Decimal(1))))
        assert held.native_trail is not None, "the venue's trailing stop was not placed"
        mark = base_mark
        for _ in range(moves):
            mark = (mark * Decimal("1.002")).quantize(tick)
            venue.set_mark_price(symbol, mark)
        await rig.engine.close(rig.name, symbol)
        await probe.wait(lambda: symbol not in rig.engine.positions(rig.name)[rig.name])
        deadline = time.monotonic() + WAIT_S  # the leftovers' clean-up runs in the background, unannounced
        while venue.orders(rig.account, symbol, open_only=True, conditional=True):
            if time.monotonic() > deadline:
                raise TimeoutError("the closed position's stops were not cleaned up")
            await asyncio.sleep(0.01)
        venue.set_mark_price(symbol, base_mark)
        calls = rig.harness.rest_calls()
        calls.subtract(before)
        result = {endpoint: n for endpoint, n in sorted(calls.items()) if n > 0}
        result["total"] = sum(result.values())
    return result


class RecordingShaper(FrameShaper):
    """The emulator's own :class:`FrameShaper`, keeping a copy of every private frame it is given."""

    def __init__(self, venue: Any) -> None:
        super().__init__(venue)
        self.frames: list[str] = []

    async def send(self, send: Any, frame: str, closing: bool = False) -> None:
        self.frames.append(frame)
        await super().send(send, frame, closing)


class _CountingSink:
    """A StreamSink that counts flat position updates (capture is complete when all arrived)."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.flat = 0

    async def on_event(self, event: StreamEvent) -> None:
        if _is_flat(event):
            self.flat += 1
            self.probe._touch()

    async def on_connected(self, reconnect: bool) -> None:
        self.probe._touch()

    async def on_disconnected(self, detail: str) -> None: ...

    def on_malformed(self, raw: str | bytes, error: Exception) -> None: ...


async def capture_frames(name: str, rounds: int) -> list[list[str]]:
    """Real private-stream frames of ``rounds`` lifecycles on the emulator, one list per lifecycle (each
    ends with the frame that reports the position flat): open 10, add 10, reduce 10, manual close.
    Driven on the venue directly while the driver's stream is connected."""
    pm = load_plugins([name])
    driver = Driver(pm, name)
    decoder = driver.make_decoder()
    probe = Probe()
    async with emulated(driver, {"seed": 7}) as harness:
        shaper = RecordingShaper(venue_of(harness))
        harness.emulator.shaper = shaper
        await driver.connect(config_of(harness))
        sink = _CountingSink(probe)
        task = asyncio.create_task(driver.run_stream(sink))
        try:
            venue, symbol = venue_of(harness), harness.symbol
            await _wait_stream_ready(harness, probe, sink)
            await shaper.flush()
            del shaper.frames[:]
            baseline = sink.flat
            ten = Decimal(10)
            for _ in range(rounds):
                venue.place_order(ACCOUNT, symbol, side="buy", type="market", amount=ten)
                venue.place_order(ACCOUNT, symbol, side="buy", type="market", amount=ten)
                venue.place_order(ACCOUNT, symbol, side="sell", type="market", amount=ten, reduce_only=True)
                venue.manual_close(ACCOUNT, symbol)
            await probe.wait(lambda: sink.flat >= baseline + rounds, WAIT_S + rounds / 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await driver.disconnect()
    groups: list[list[str]] = [[]]
    for frame in shaper.frames:
        groups[-1].append(frame)
        if any(_is_flat(e) for e in decoder.decode(frame)):
            groups.append([])
    return [g for g in groups if g and any(_is_flat(e) for e in decoder.decode(g[-1]))]


async def _wait_stream_ready(harness: Any, probe: Probe, sink: _CountingSink) -> None:
    """Until a probe position's flat frame arrives (the private stream is subscribed)."""
    venue, symbol = venue_of(harness), harness.symbol
    async with asyncio.timeout(WAIT_S):
        while sink.flat == 0:
            venue.place_order(ACCOUNT, symbol, side="buy", type="market", amount=Decimal(1))
            venue.manual_close(ACCOUNT, symbol)
            with contextlib.suppress(TimeoutError):
                await probe.wait(lambda: sink.flat > 0, 0.2)


def _is_flat(event: StreamEvent) -> bool:
    return isinstance(event, PositionUpdate) and event.contracts == 0


async def stream_throughput(name: str, groups: list[list[str]], store: Store | None) -> dict[str, float]:
    """Decode every captured frame with the plugin's decoder and dispatch it through a PositionBook
    (``store=None``: no journal), as one stream of many symbols: each captured lifecycle is given a symbol
    of its own (``B00000USDT``…: the exchange id renamed in its raw frames, before timing) and the book
    holds all their positions first (``book.add``, not timed), so size changes and closures are persisted
    and broadcast.  Then every frame of every lifecycle is decoded and dispatched, one event-loop turn per
    frame as from a socket.

    The book group-commits the journal as the engine's does (``group_commit=True``: the rows queued while a
    commit is in flight go in the next one); the time includes waiting, at the end, until every row is
    committed and announced.

    :returns: ``rate`` (frames per second of wall time), ``frames``, ``events`` (decoded), ``cpu_ms`` (this
        process's CPU over the timed part: what a loaded machine does not inflate by descheduling it) and
        ``commits`` (group commits of the journal).
    """
    pm = load_plugins([name])
    driver = Driver(pm, name)
    decoder = driver.make_decoder()
    book = PositionBook(name, f"bench-{client_order_id('o')[5:]}", pm, store, group_commit=True)
    rounds: list[tuple[str, list[str]]] = []
    for i, group in enumerate(groups):
        first = [e for raw in group[:3] for e in decoder.decode(raw) if isinstance(e, PositionUpdate | OrderUpdate)]
        opened_at = min((e.timestamp for e in first), default=2)
        captured = next((e.symbol for e in first if isinstance(e, PositionUpdate)), "XRP/USDT:USDT")
        native = captured.split(":")[0].replace("/", "")  # XRP/USDT:USDT -> XRPUSDT (both venues' linear ids)
        symbol = f"B{i:05d}/USDT:USDT"
        await book.add(BookPosition(symbol=symbol, side="long", contracts=Decimal(10), entry_price=None,
                                    stop_price=None, opened_at=max(opened_at - 1, 1)))
        rounds.append((symbol, [raw.replace(f'"{native}"', f'"B{i:05d}USDT"') for raw in group]))
    frames = events = 0
    gc.collect()
    cpu, started = time.process_time(), time.perf_counter()
    for _, group in rounds:
        for raw in group:
            try:
                decoded = decoder.decode(raw)
            except StreamError as exc:
                book.on_malformed(raw, exc)
                continue
            for event in decoded:
                await book.on_event(event)
            frames += 1
            events += len(decoded)
            await asyncio.sleep(0)  # the next frame comes from the socket: the journal's commits run meanwhile
    if not await book.writes.wait_drained(WAIT_S):  # timed: every row committed and announced
        raise AssertionError(f"{name}: the journal did not catch up")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if any(book.holds(symbol) for symbol, _ in rounds):  # each lifecycle's flat frame must have closed it
        raise AssertionError(f"{name}: a captured lifecycle did not close its position in the book")
    return {"rate": frames / elapsed if elapsed else 0.0, "frames": frames, "events": events,
            "cpu_ms": round(cpu * 1000, 1), "commits": book.writes.batches}


async def memory_per_positions(n: int) -> int:
    """tracemalloc bytes held by a PositionBook (no store) with ``n`` open positions, per 1,000."""
    pm = load_plugins([])
    book = PositionBook("bench", "bench", pm, None)
    positions = [BookPosition(symbol=f"M{i:05d}/USDT:USDT", side="long", contracts=Decimal(10),
                              entry_price=Decimal("1.2345"), stop_price=Decimal("1.2"), opened_at=i)
                 for i in range(n)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for position in positions:
            await book.add(position)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(book.positions()) == n
    return int((after - before) * 1000 / n)


def add_instruments(venue: Any, count: int, prefix: str = "R") -> list[str]:
    """``count`` extra linear perpetuals (``R00001/USDT:USDT``…, price 1.0) on ``venue``."""
    symbols = []
    for i in range(count):
        symbol = f"{prefix}{i:05d}/USDT:USDT"
        venue.instruments[symbol] = Instrument(symbol, f"{prefix}{i:05d}USDT", Decimal("0.0001"), Decimal(1),
                                               Decimal(1), 50)
        venue.set_mark_price(symbol, Decimal("1.0000"))
        symbols.append(symbol)
    return symbols


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """A full collection, then every object alive is frozen (``gc.freeze``) for the block: the collections
    the block's own allocations trigger then scan what the block made, not the whole heap — mostly the
    in-process emulator's thousands of positions and orders, which a deployed engine's process does not hold
    (a pass measured 688, then 917 and 948 ms CPU as the heap grew between passes)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def truth_bookkeeping_suspended(venue: Venue) -> Iterator[None]:
    """Seeding thousands of positions: the ground truth's unprotected-interval check walks every
    position on each state change (O(n²) over a seeding); it is not what is measured, so it is paused."""
    venue.truth.suspended = True
    try:
        yield
    finally:
        venue.truth.suspended = False


def seed_positions(venue: Any, symbols: list[str], protected: bool) -> None:
    """A 1-contract long on every symbol, with a reduce-only stop order 2 % below when ``protected``."""
    with truth_bookkeeping_suspended(venue):
        for symbol in symbols:
            venue.place_order(ACCOUNT, symbol, side="buy", type="market", amount=Decimal(1))
            if protected:
                venue.place_order(ACCOUNT, symbol, side="sell", type="stop_market", amount=Decimal(1),
                                  reduce_only=True, trigger_price=Decimal("0.98"))


async def reconcile_figures(name: str, store: Store, counts: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """One steady-state reconciliation pass at each size: the positions exist on the venue with a
    resting stop each and are held by the book (``book.load``); venue calls and CPU / wall ms of the pass.

    CPU is the process's (``time.process_time``): the emulator serving the snapshot runs in the same
    process, so it is included.  ``raw_cpu_ms``: the floor, the same snapshot requests with the answers left
    as parsed JSON (the plugin module's optional ``snapshot_rows(conn)``; absent when it has none).  Each
    size runs :data:`RECONCILE_REPEATS` passes, each on a fresh book and each followed by its floor; the
    figures are the medians (``cpu_ms_each`` / ``raw_cpu_ms_each``: every sample): one pass against one floor
    swung ±30 % on a loaded machine.  ``x_raw``: the median of each pass's CPU ÷ its own floor's (paired: a
    pass and its floor see the same moment of the machine; the medians of the two alone pair a pass with
    another pass's floor).
    """
    results: dict[str, dict[str, Any]] = {}
    pm = load_plugins([name])
    driver = Driver(pm, name)
    raw_rows = getattr(pm.get_plugin(name), "snapshot_rows", None)  # optional: the plugin's raw snapshot
    biggest = max(counts)
    async with emulated(driver, {"seed": 7, "balance": "100000000"}) as harness:
        venue = venue_of(harness)
        symbols = add_instruments(venue, biggest)
        await driver.connect(config_of(harness))
        try:
            seeded = 0
            for count in sorted(counts):
                seed_positions(venue, symbols[seeded:count], protected=True)
                seeded = count
                passes: list[tuple[float, float, int]] = []  # (cpu s, wall s, venue calls) of each pass
                raws: list[float] = []
                for _ in range(RECONCILE_REPEATS):  # pass and floor alternate: both see the same moments
                    book = PositionBook(name, config_of(harness).account, pm, store)  # each pass the same work
                    for symbol in symbols[:count]:
                        book.load(BookPosition(symbol=symbol, side="long", contracts=Decimal(1),
                                               entry_price=Decimal(1), stop_price=Decimal("0.98"), opened_at=1))
                    protector = Protector(book, driver, store, pm, BENCH_SETTINGS)
                    reconciler = Reconciler(book, driver, store, pm, protector, BENCH_SETTINGS)
                    calls_before = sum(harness.rest_calls().values())
                    with frozen_heap():
                        cpu, wall = time.process_time(), time.perf_counter()
                        report = await reconciler.reconcile()
                        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    passes.append((cpu, wall, sum(harness.rest_calls().values()) - calls_before))
                    if report["closed"] or report["adopted"] or report["reprotected"]:
                        raise AssertionError(f"{name}: steady-state pass changed something: {report}")
                    if raw_rows is not None:  # the floor: the same requests, answers left as parsed JSON
                        with frozen_heap():
                            cpu = time.process_time()
                            await raw_rows(driver.session)
                            raws.append(time.process_time() - cpu)
                results[str(count)] = {
                    "venue_calls": passes[0][2],
                    "cpu_ms": round(statistics.median(p[0] for p in passes) * 1000, 1),
                    "wall_ms": round(statistics.median(p[1] for p in passes) * 1000, 1),
                    "cpu_ms_each": [round(p[0] * 1000, 1) for p in passes]}
                if raws:
                    results[str(count)]["raw_cpu_ms"] = round(statistics.median(raws) * 1000, 1)
                    results[str(count)]["raw_cpu_ms_each"] = [round(r * 1000, 1) for r in raws]
                    # each pass against the floor right after it (the same moment of the machine), then the median
                    paired = [p[0] / r for p, r in zip(passes, raws, strict=True)]
                    results[str(count)]["x_raw"] = round(statistics.median(paired), 2)
        finally:
            await driver.disconnect()
    return results


async def cold_start(plugins: list[str], positions: int) -> dict[str, dict[str, float]]:
    """Embedded PostgreSQL start + migrations + ``Engine.start`` until every position the venues hold
    (``positions`` per venue, unprotected, unknown to the DB) is adopted and protected.

    ``first_run``: a new data directory (initdb included); ``restart``: the same directory again after
    the server was stopped (what a restart of ``framework run`` pays).
    """
    from framework.store.database import embedded_server

    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="framework-bench-pg-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        for label, mode in (("first_run", "stop"), ("restart", "delete")):
            async with contextlib.AsyncExitStack() as stack:
                pm = load_plugins(plugins)
                drivers, configs, venues = {}, {}, {}
                for name in plugins:
                    driver = Driver(pm, name)
                    harness = await stack.enter_async_context(emulated(driver, {"seed": 7}))
                    symbols = add_instruments(venue_of(harness), positions, prefix="C")
                    seed_positions(venue_of(harness), symbols, protected=False)
                    drivers[name], configs[name] = driver, config_of(harness)
                    venues[name] = (venue_of(harness), symbols)
                started = time.perf_counter()
                server = await asyncio.to_thread(embedded_server, pgdata, cleanup_mode=mode)
                stack.callback(server.cleanup)
                pg_ready = time.perf_counter()
                store = await Store.open(server.get_uri(), max_size=5)
                stack.push_async_callback(store.close)
                migrated = time.perf_counter()
                engine = Engine(pm, store, drivers, configs, BENCH_SETTINGS)
                await engine.start()
                stack.push_async_callback(engine.stop)
                for venue, symbols in venues.values():
                    unprotected = [s for s in symbols if not venue.is_protected(ACCOUNT, s)]
                    if unprotected:
                        raise AssertionError(f"{len(unprotected)} positions unprotected after Engine.start")
                done = time.perf_counter()
                figures[label] = {
                    "total": round((done - started) * 1000, 1),
                    "postgres_start": round((pg_ready - started) * 1000, 1),
                    "migrations": round((migrated - pg_ready) * 1000, 1),
                    "engine_start_to_protected": round((done - migrated) * 1000, 1),
                    "positions": positions * len(plugins),
                }
    return figures


def machine() -> dict[str, Any]:
    """CPU model, cores, Python version, platform."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


# --- the machine's floor, measured in the same run --------------------------------------------------------


async def insert_rate_floor(store: Store, batches: int, per_batch: int = 100) -> dict[str, float]:
    """Journal-shaped rows per second, ``per_batch`` rows per transaction: ``executemany`` (jsonb payload) and
    ``COPY`` (text payload: asyncpg's binary COPY has no jsonb encoder)."""
    rates: dict[str, float] = {}
    async with store.pool.acquire() as conn:
        for table, payload in (("floor_journal", "jsonb"), ("floor_copy", "text")):  # asyncpg COPYs no jsonb
            await conn.execute(f"CREATE TEMP TABLE {table} (id bigserial PRIMARY KEY, venue text NOT NULL, symbol "
                               f"text NOT NULL, kind text NOT NULL, at bigint NOT NULL, payload {payload} NOT NULL)")
        try:
            rows = [("binance", f"S{i:05d}/USDT:USDT", "size", i, '{"contracts": "10"}') for i in range(per_batch)]
            started = time.perf_counter()
            for _ in range(batches):
                async with conn.transaction():
                    await conn.executemany("INSERT INTO floor_journal (venue, symbol, kind, at, payload) "
                                           "VALUES ($1, $2, $3, $4, $5)", rows)
            rates["executemany"] = round(batches * per_batch / (time.perf_counter() - started))
            started = time.perf_counter()
            for _ in range(batches):
                async with conn.transaction():
                    await conn.copy_records_to_table("floor_copy", records=rows,
                                                     columns=["venue", "symbol", "kind", "at", "payload"])
            rates["copy"] = round(batches * per_batch / (time.perf_counter() - started))
        finally:
            await conn.execute("DROP TABLE floor_journal, floor_copy")
    rates["rows_per_transaction"] = per_batch
    return rates


def decode_rate(name: str, groups: list[list[str]]) -> float:
    """Frames per second of the plugin's decoder alone on the captured frames (no book, no journal)."""
    decoder = Driver(load_plugins([name]), name).make_decoder()
    frames = [raw for group in groups for raw in group]
    started = time.perf_counter()
    for raw in frames:
        with contextlib.suppress(StreamError):
            decoder.decode(raw)
    elapsed = time.perf_counter() - started
    return len(frames) / elapsed if elapsed else 0.0


async def floor_figures(store: Store, samples: int) -> dict[str, Any]:
    """The journal's floor: batched insert rates (the closure's floor is :class:`ClosureFloor`, sampled
    beside each closure)."""
    return {"insert_rows_per_s": await insert_rate_floor(store, max(samples // 10, 10))}


def ratios(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each venue figure as a ratio to the same run's floor (closure: x :class:`ClosureFloor`, lower is
    better; stream: share of the floor's rate, higher is better; reconcile: x the raw snapshot's CPU, lower
    is better)."""
    insert = ((result.get("floor") or {}).get("insert_rows_per_s") or {}).get("executemany")
    out: dict[str, dict[str, Any]] = {}
    for venue in sorted({v for key in ("closure_latency_ms", "stream_events_per_s", "reconcile") for v in result[key]}):
        closure = (result.get("closure_floor_ms", {}).get(venue) or {}).get("closure_ratio") or {}
        stream = result["stream_events_per_s"].get(venue, {})
        figures: dict[str, Any] = {
            "closure_p50_x_floor": closure.get("p50"), "closure_p99_x_floor": closure.get("p99"),
            "stream_with_journal_of_insert_rate": _ratio(stream.get("with_journal"), insert, 3),
            "stream_without_journal_of_decoder": _ratio(stream.get("without_journal"), stream.get("decoder_only"), 3),
        }
        for count, figure in result["reconcile"].get(venue, {}).items():
            figures[f"reconcile_{count}_x_raw"] = figure.get("x_raw")
        out[venue] = figures
    return out


def _ratio(value: float | None, floor: float | None, digits: int = 2) -> float | None:
    return round(value / floor, digits) if value is not None and floor else None


# --- scale: many trailing positions on one venue ----------------------------------------------------------


async def scale_figures(name: str, store: Store, count: int, rounds: int) -> dict[str, Any]:
    """``count`` positions, one per symbol, each with a 1 % trailing stop, opened through the engine; then
    ``rounds`` times every symbol's mark price rises 0.2 % at once and the engine moves every stop.

    Per round: moves/s (all of the round's moves over its wall time), CPU ms per move (this process:
    engine, driver and the emulator serving it), mark frames/s reaching the engine.  ``moves`` / ``expected``
    and ``alerts`` (raised while opening and trailing) say whether trailing kept up at all; a round waits at
    most ``WAIT_S + count / 20`` s.  ``rss_mb``: the process's RSS (MiB) with the positions open and
    ``rss_delta_mb`` its growth over opening them.  The venue's ground-truth bookkeeping is paused (it walks
    every position on each change: O(count) per move that is not the engine's); ``checked_round``: one more
    round, untimed, with it on: its ``moves``, the unprotected ms it saw (``unprotected_ms_total`` /
    ``unprotected_ms_max`` over every position) and the positions without a stop at its end.
    """
    async with engine_rig(name, store, BENCH_SETTINGS, {"balance": "100000000"}, start=False) as rig:
        venue = rig.venue
        symbols = add_instruments(venue, count, prefix="T")
        await rig.engine.start()
        marks = 0
        trailing = rig.parts.trailing
        original = trailing.on_event

        async def counting(event: StreamEvent) -> None:
            nonlocal marks
            marks += 1
            await original(event)

        trailing.on_event = counting  # type: ignore[method-assign]
        gc.collect()
        rss_before = rss_mib()
        opened_at = time.perf_counter()
        with truth_bookkeeping_suspended(venue):
            for symbol in symbols:
                await rig.engine.open(rig.intent(contracts="10", symbol=symbol,
                                                 trailing=TrailingSpec(callback_rate=Decimal(1))))
            open_s = time.perf_counter() - opened_at
            gc.collect()
            rss_after = rss_mib()
            figures: list[dict[str, float]] = []
            tick = venue.instrument(symbols[0]).tick_size
            for _ in range(rounds):
                before, marks_before = len(rig.probe.moved), marks
                cpu, wall = time.process_time(), time.perf_counter()
                for symbol in symbols:
                    venue.set_mark_price(symbol, (venue.mark_price(symbol) * Decimal("1.002")).quantize(tick))
                with contextlib.suppress(TimeoutError):
                    await rig.probe.wait(lambda b=before: len(rig.probe.moved) >= b + count, WAIT_S + count / 20)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                figures.append({"moves": len(rig.probe.moved) - before, "wall_s": wall, "cpu_s": cpu,
                                "marks": marks - marks_before})
        # one more round, untimed, with the ground truth's bookkeeping on: the unprotected time of every move
        # at this scale (the rounds above pause it: O(count) per change, not the engine's work)
        venue.truth.observe(venue, venue.now())
        before = len(rig.probe.moved)
        for symbol in symbols:
            venue.set_mark_price(symbol, (venue.mark_price(symbol) * Decimal("1.002")).quantize(tick))
        with contextlib.suppress(TimeoutError):
            await rig.probe.wait(lambda b=before: len(rig.probe.moved) >= b + count, WAIT_S + count / 10)
        checked_moves = len(rig.probe.moved) - before
        unprotected = venue.truth.unprotected_ms(rig.account)
        exposed = sum(not venue.is_protected(rig.account, symbol) for symbol in symbols)
        alerts = len(rig.probe.alerts)
    total = int(sum(f["moves"] for f in figures))
    wall = sum(f["wall_s"] for f in figures)
    cpu = sum(f["cpu_s"] for f in figures)
    return {
        "symbols": count, "expected": count * rounds, "moves": total,
        "moves_per_s": round(total / wall, 1) if wall else 0.0,
        "cpu_ms_per_move": round(cpu * 1000 / total, 2) if total else None,
        "mark_frames_per_s": round(sum(f["marks"] for f in figures) / wall, 1) if wall else 0.0,
        "open_s": round(open_s, 2), "alerts": alerts,
        "checked_round": {"moves": checked_moves, "unprotected_ms_total": unprotected["total"],
                          "unprotected_ms_max": unprotected["max"], "positions_without_stop": exposed},
        "rss_mb": round(rss_after, 1), "rss_delta_mb": round(rss_after - rss_before, 1),
    }


# --- the run -------------------------------------------------------------------------------------------


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {**latency_summary(values), "n": len(values)}


def _fine_summary(values: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max (nearest rank) and n, to 0.01 ms: for sub-millisecond figures and their ratios."""
    return {"p50": round(percentile(values, 50), 2), "p99": round(percentile(values, 99), 2),
            "max": round(max(values, default=0), 2), "n": len(values)}


#: the sections of one run, in run order (``framework bench --only``); ``floor`` (the batched insert rates the
#: stream figure is divided by) and ``machine`` are always measured
SECTIONS = ("closure", "moves", "stream", "reconcile", "scale", "memory", "cold_start")


async def bench(sizes: Sizes, plugins: list[str], sections: Sequence[str] = SECTIONS) -> dict[str, Any]:
    """Measure every figure of ``sections`` (:data:`SECTIONS`) once; returns the JSON document (keys: module
    docstring; a section not measured leaves its keys empty).

    :raises ValueError: an unknown section.
    """
    from framework.store.testing import TestDatabases

    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench section(s) {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    result: dict[str, Any] = {key: {} for key in (
        "closure_latency_ms", "closure_floor_ms", "fill_to_stop_ms", "unprotected_ms", "reprotect_ms",
        "rest_calls_per_lifecycle", "rest_calls_per_lifecycle_native", "stream_events_per_s", "reconcile", "scale")}
    result["sizes"] = {"closures": sizes.closures, "moves": sizes.moves, "reconcile": list(sizes.reconcile),
                       "stream_rounds": sizes.stream_rounds, "scale": list(sizes.scale),
                       "scale_rounds": sizes.scale_rounds, "floor_samples": sizes.floor_samples}
    result["sections"] = [section for section in SECTIONS if section in sections]
    databases = await asyncio.to_thread(TestDatabases)
    try:
        log.info("floor")
        store = await databases.store()
        try:
            result["floor"] = await floor_figures(store, sizes.floor_samples)
        finally:
            await store.close()
        for name in plugins:
            if "closure" in sections or "moves" in sections:
                await _engine_sections(name, databases, sizes, sections, result)
            if "stream" in sections:
                log.info("%s: stream throughput", name)
                result["stream_events_per_s"][name] = await stream_figures(name, databases, sizes.stream_rounds)
            if "reconcile" in sections:
                log.info("%s: reconcile", name)
                store = await databases.store()
                try:
                    result["reconcile"][name] = await reconcile_figures(name, store, sizes.reconcile)
                finally:
                    await store.close()
            for count in sizes.scale if "scale" in sections else ():
                log.info("%s: scale, %d trailing symbols", name, count)
                store = await databases.store()
                try:
                    result["scale"].setdefault(name, {})[str(count)] = await scale_figures(
                        name, store, count, sizes.scale_rounds)
                finally:
                    await store.close()
        if "memory" in sections:
            result["memory_per_1000_positions"] = {"bytes": await memory_per_positions(sizes.memory_positions)}
    finally:
        await databases.release()
    if "cold_start" in sections:
        log.info("cold start")
        result["cold_start_ms"] = await cold_start(plugins, sizes.cold_start_positions)
    result["machine"] = machine()
    result["ratios"] = ratios(result)
    return result


async def _engine_sections(name: str, databases: Any, sizes: Sizes, sections: Sequence[str],
                           result: dict[str, Any]) -> None:
    """The figures of one started engine on venue ``name``: ``closure`` (closure latency beside its floor,
    fill → stop) and ``moves`` (stop moves, re-protection, REST calls per lifecycle, engine and native)."""
    store = await databases.store()
    try:
        async with ClosureFloor(store) as floor, engine_rig(name, store) as rig:
            if "closure" in sections:
                log.info("%s: closures", name)
                latencies, fill_gaps, venue_ms = await closure_figures(rig, sizes.closures, floor)
                closed_rows = await store.pool.fetchval(
                    "SELECT count(*) FROM positions WHERE venue = $1 AND status = 'closed'", name)
                journal = await store.pool.fetchval(
                    "SELECT count(*) FROM events WHERE venue = $1 AND kind = 'closed'", name)
                result["closure_latency_ms"][name] = {**_fine_summary(latencies), "db_rows_closed": closed_rows,
                                                      "journal_closed_rows": journal,
                                                      "venue_closures": len(rig.venue.truth.closures),
                                                      "venue_call_ms": _fine_summary(venue_ms)}
                result["closure_floor_ms"][name] = floor.summary(latencies)
                result["fill_to_stop_ms"][name] = {**_summary(fill_gaps), "min": min(fill_gaps, default=0)}
            if "moves" in sections:
                log.info("%s: stop moves", name)
                per_move = await stop_move_figures(rig, sizes.moves)
                result["unprotected_ms"][name] = {**latency_summary(per_move), "total": sum(per_move),
                                                  "moves": len(per_move)}
                result["reprotect_ms"][name] = _summary(await reprotect_figures(rig, REPROTECTS))
                result["rest_calls_per_lifecycle"][name] = await lifecycle_rest_calls(rig)
        if "moves" in sections:
            native = BENCH_SETTINGS.model_copy(update={"native_trailing_stop": True})
            async with engine_rig(name, store, native) as rig:
                result["rest_calls_per_lifecycle_native"][name] = await native_lifecycle_rest_calls(rig)
    finally:
        await store.close()


async def stream_figures(name: str, databases: Any, rounds: int) -> dict[str, float]:
    """``stream_events_per_s`` of venue ``name``: frames of ``rounds`` captured lifecycles through a book with
    the journal, without it, and the decoder alone; ``journal_rows`` written (checked), ``journal_commits``
    and the process CPU of both runs (``*_cpu_ms``)."""
    groups = await capture_frames(name, rounds)
    store = await databases.store()
    try:
        with_db = await stream_throughput(name, groups, store)
        journal_rows = await store.pool.fetchval("SELECT count(*) FROM events WHERE kind <> 'opened'")
    finally:
        await store.close()
    without_db = await stream_throughput(name, groups, None)
    return {"with_journal": round(with_db["rate"]), "without_journal": round(without_db["rate"]),
            "decoder_only": round(decode_rate(name, groups)), "frames": with_db["frames"], "events": with_db["events"],
            "journal_rows": journal_rows, "journal_commits": with_db["commits"],
            "with_journal_cpu_ms": with_db["cpu_ms"], "without_journal_cpu_ms": without_db["cpu_ms"]}


def print_bench(result: dict[str, Any]) -> None:
    """Render the figures as one rich table per group."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m = result["machine"]
    console.print(f"[b]framework bench[/] — {m['cpu']}, {m['cores']} cores, Python {m['python']}; sections: "
                  f"{', '.join(result.get('sections', SECTIONS))}")
    venues = sorted({venue for key in ("closure_latency_ms", "unprotected_ms", "stream_events_per_s", "reconcile",
                                       "scale") for venue in result[key]})
    table = Table(title="per venue")
    table.add_column("figure")
    for venue in venues:
        table.add_column(venue, justify="right")

    def row(label: str, key: str, fmt: Any) -> None:
        table.add_row(label, *(fmt(result[key].get(v, {})) for v in venues))

    def pct(d: dict[str, Any]) -> str:
        return f"{d.get('p50')} / {d.get('p99')} / {d.get('max')} (n={d.get('n', d.get('moves'))})"

    row("closure latency p50/p99/max ms", "closure_latency_ms", pct)
    row("closure floor (ws frame + UPDATE+INSERT transaction) p50/p99/max ms", "closure_floor_ms", pct)
    row("closure / floor p50, p99", "closure_floor_ms",
        lambda d: f"{d.get('closure_ratio', {}).get('p50')}× / {d.get('closure_ratio', {}).get('p99')}×")
    row("fill → stop resting p50/p99/max ms", "fill_to_stop_ms", pct)
    row("unprotected per stop move p50/p99/max ms", "unprotected_ms", pct)
    row("stop removed on the venue → re-protected p50/p99/max ms", "reprotect_ms", pct)
    row("REST calls per lifecycle", "rest_calls_per_lifecycle", lambda d: str(d.get("total")))
    row("REST calls per lifecycle, venue's trailing stop", "rest_calls_per_lifecycle_native",
        lambda d: str(d.get("total")))
    row("stream frames/s with journal (group commit)", "stream_events_per_s", lambda d: str(d.get("with_journal")))
    row("journal rows written (size changes, closures) / group commits", "stream_events_per_s",
        lambda d: f"{d.get('journal_rows')} / {d.get('journal_commits')}")
    row("stream CPU ms with / without journal (this process)", "stream_events_per_s",
        lambda d: f"{d.get('with_journal_cpu_ms')} / {d.get('without_journal_cpu_ms')}")
    row("stream frames/s without journal", "stream_events_per_s", lambda d: str(d.get("without_journal")))
    for count in result["sizes"]["reconcile"]:
        row(f"reconcile {count} positions: calls / CPU ms", "reconcile",
            lambda d, c=str(count): f"{d.get(c, {}).get('venue_calls')} / {d.get(c, {}).get('cpu_ms')}")
    row("stream frames/s, decoder alone", "stream_events_per_s", lambda d: str(d.get("decoder_only")))
    for count in result["sizes"]["reconcile"]:
        row(f"reconcile {count}: raw snapshot floor CPU ms", "reconcile",
            lambda d, c=str(count): str(d.get(c, {}).get("raw_cpu_ms", "—")))
    for key, label in (("stream_with_journal_of_insert_rate", "frames/s with journal ÷ batched insert rows/s"),
                       ("stream_without_journal_of_decoder", "frames/s without journal ÷ decoder alone"),
                       *((f"reconcile_{c}_x_raw", f"reconcile {c} CPU ÷ raw snapshot CPU")
                         for c in result["sizes"]["reconcile"])):
        row(label, "ratios", lambda d, k=key: str(d.get(k, "—")))
    console.print(table)
    rates = (result.get("floor") or {}).get("insert_rows_per_s")
    if rates:
        console.print(f"floor (same run): journal-shaped insert rows/s, {rates['rows_per_transaction']} per "
                      f"transaction: executemany {rates['executemany']}, COPY {rates['copy']}")
    scale = Table(title="scale: N symbols trailing at once (moves/s, CPU ms per move, mark frames/s, RSS MB)")
    for column in ("venue", "symbols", "moves / expected", "moves/s", "CPU ms/move", "mark frames/s", "RSS MB (+open)",
                   "alerts", "checked round: moves / unprotected ms / without stop"):
        scale.add_column(column, justify="right")
    for venue in venues:
        for count, s in result.get("scale", {}).get(venue, {}).items():
            scale.add_row(venue, count, f"{s['moves']} / {s['expected']}", str(s["moves_per_s"]),
                          str(s["cpu_ms_per_move"]), str(s["mark_frames_per_s"]),
                          f"{s['rss_mb']} (+{s['rss_delta_mb']})", str(s["alerts"]),
                          "{moves} / {unprotected_ms_total} / {positions_without_stop}".format(**s["checked_round"]))
    console.print(scale)
    calls = Table(title="REST calls per lifecycle (open, protect, 10 trailing moves, close)")
    calls.add_column("venue")
    calls.add_column("endpoint")
    calls.add_column("n", justify="right")
    for venue in venues:
        for endpoint, n in result["rest_calls_per_lifecycle"].get(venue, {}).items():
            calls.add_row(venue, endpoint, str(n))
        for endpoint, n in result["rest_calls_per_lifecycle_native"].get(venue, {}).items():
            calls.add_row(f"{venue} (venue's trail)", endpoint, str(n))
    console.print(calls)
    other = Table(title="process")
    other.add_column("figure")
    other.add_column("value", justify="right")
    if "memory_per_1000_positions" in result:
        other.add_row("memory per 1,000 book positions (bytes)", str(result["memory_per_1000_positions"]["bytes"]))
    for label, figures in result.get("cold_start_ms", {}).items():
        other.add_row(f"cold start ({label}) total / postgres / migrations / engine→protected ms",
                      f"{figures['total']} / {figures['postgres_start']} / {figures['migrations']} / "
                      f"{figures['engine_start_to_protected']}")
    console.print(other)


def run_bench(quick: bool, json_path: Path | None, plugins: list[str] | None,
              sections: Sequence[str] | None = None) -> int:
    """Entry point of ``framework bench``: measure ``sections`` (default: all, :data:`SECTIONS`), print,
    write JSON; exit 0.

    :raises ValueError: an unknown section.
    """
    logging.getLogger("framework").setLevel(logging.WARNING)
    result = asyncio.run(bench(QUICK if quick else FULL, plugins or DEFAULT_PLUGINS, sections or SECTIONS))
    print_bench(result)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


# --- soak ---------------------------------------------------------------------------------------------


@dataclass
class SoakSample:
    at_s: float
    memory_bytes: int
    tasks: int


@dataclass
class SoakResult:
    samples: list[SoakSample] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def flat(self, tolerance: float = 0.10) -> dict[str, bool]:
        """Memory / task count flat: the mean of the last quarter of samples is within ``tolerance`` of
        the mean of the second quarter (the first quarter is warm-up)."""
        def level(values: list[int]) -> bool:
            if len(values) < 8:
                return True
            q = len(values) // 4
            early, late = values[q:2 * q], values[-q:]
            base = max(sum(early) / len(early), 1)
            return (sum(late) / len(late) - base) / base <= tolerance
        return {"memory": level([s.memory_bytes for s in self.samples]),
                "tasks": level([s.tasks for s in self.samples])}


async def soak(seconds: float, speed: float, plugins: list[str] | None = None,
               sample_every_s: float = 1.0) -> SoakResult:
    """``framework run`` (demo signals, emulated venues, no view) for ``seconds``, sampling tracemalloc's
    current size and ``len(asyncio.all_tasks())`` every ``sample_every_s``."""
    from framework.app.run import Run, RunOptions

    result = SoakResult()
    run = Run(RunOptions(plugins=plugins, duration_s=seconds, speed=speed, tui=False))
    tracemalloc.start()
    started = time.monotonic()
    task = asyncio.create_task(run.execute())
    try:
        while not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), sample_every_s)
            result.samples.append(SoakSample(round(time.monotonic() - started, 1),
                                             tracemalloc.get_traced_memory()[0], len(asyncio.all_tasks())))
        result.report = task.result()
    finally:
        tracemalloc.stop()
    return result


def run_soak(seconds: float, speed: float = 100.0, plugins: list[str] | None = None) -> dict[str, Any]:
    """Run :func:`soak` and return ``{"flat": {"memory", "tasks"}, "samples": [...], "report": {...}}``."""
    result = asyncio.run(soak(seconds, speed, plugins))
    return {"flat": result.flat(),
            "samples": [s.__dict__ for s in result.samples],
            "report": result.report}
