"""``framework run``: the whole system over the selected plugins, a signal source, a view and a report.

A plugin whose API keys are set (``framework.settings``) trades on the real venue; every other plugin
runs against its own emulator (``venue_harness``) with real price data replayed at ``--speed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import Counter, deque
from collections.abc import Iterator
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from framework.driver import Driver
from framework.engine import Engine, EngineSettings
from framework.engine.broadcast import client_order_id
from framework.errors import ConfigError, FrameworkError
from framework.hookspecs import hookimpl
from framework.models import (
    Alert,
    MarkPrice,
    OrderIntent,
    PositionEvent,
    Signal,
    StopEvent,
    TrailingSpec,
)
from framework.plugins import drivers as load_drivers
from framework.plugins import load_plugins, register
from framework.protocols import VenueHarness
from framework.report import latency_summary
from framework.settings import Settings
from framework.store import Store

log = logging.getLogger(__name__)


class RunOptions(BaseModel):
    """What ``framework run`` was asked to do (see ``framework run --help``)."""

    plugins: list[str] | None = None
    duration_s: float | None = None
    speed: float = 100.0
    seed: int = 0
    signals: Path | None = None
    faults: str | None = None
    report: Path | None = None
    tui: bool = True
    flatten_on_exit: bool = False
    testnet: bool = False


# --- signals -----------------------------------------------------------------------------------------


def read_signals(path: Path | None) -> list[Signal]:
    """Parse a JSONL signal file (the packaged demo when ``path`` is ``None``).

    :raises ConfigError: naming the line and the field of the first invalid signal.
    """
    if path is None:
        text = (resources.files("framework") / "data" / "demo_signals.jsonl").read_text(encoding="utf-8")
        name = "demo_signals.jsonl"
    else:
        text, name = Path(path).read_text(encoding="utf-8"), str(path)
    signals = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            signals.append(Signal.model_validate_json(line))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'signal'}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise ConfigError(f"{name}:{number}: invalid signal: {problems}") from exc
    if not signals:
        raise ConfigError(f"{name}: no signals")
    return sorted(signals, key=lambda s: s.at_ms)


def looped(signals: list[Signal]) -> Iterator[tuple[float, Signal]]:
    """``(seconds since start, signal)`` forever: the file repeats, each pass after the previous one."""
    period_s = signals[-1].at_ms / 1000 + 5.0
    for lap in range(1_000_000):
        for sig in signals:
            yield lap * period_s + sig.at_ms / 1000, sig


def _pct(price: Decimal, pct: Decimal, up: bool) -> Decimal:
    factor = 1 + pct / 100 if up else 1 - pct / 100
    return (price * factor).quantize(Decimal(1).scaleb(price.adjusted() - 5))


def intent_from_signal(sig: Signal, mark: Decimal, account: str, client_order_id: str) -> OrderIntent:
    """Turn an ``open`` signal into an :class:`OrderIntent`, resolving ``*_pct`` from ``mark``."""
    assert sig.side is not None and sig.contracts is not None
    long = sig.side == "long"
    stop = sig.stop_loss or _pct(mark, sig.stop_loss_pct, up=not long)  # type: ignore[arg-type]
    take = sig.take_profit or (_pct(mark, sig.take_profit_pct, up=long) if sig.take_profit_pct else None)
    trailing = None
    if sig.trailing_callback_rate is not None:
        activation = _pct(mark, sig.trailing_activation_pct, up=long) if sig.trailing_activation_pct else None
        trailing = TrailingSpec(activation_price=activation, callback_rate=sig.trailing_callback_rate)
    return OrderIntent(
        account=account, venue=sig.venue, symbol=sig.symbol, side=sig.side, contracts=sig.contracts,
        stop_loss=stop, take_profit=take, trailing=trailing, client_order_id=client_order_id,
    )


class _FirstMark:
    """A one-shot StreamSink for ``watch_mark_prices``: keeps the first tick."""

    def __init__(self) -> None:
        self.tick: MarkPrice | None = None
        self.arrived = asyncio.Event()

    async def on_event(self, event: Any) -> None:
        if isinstance(event, MarkPrice) and self.tick is None:
            self.tick = event
            self.arrived.set()

    async def on_connected(self, reconnect: bool) -> None: ...

    async def on_disconnected(self, detail: str) -> None: ...

    def on_malformed(self, raw: str | bytes, error: Exception) -> None: ...


async def current_mark(driver: Driver, symbol: str, timeout_s: float = 5.0) -> Decimal:
    """The venue's current mark price of ``symbol``, from the driver's mark-price stream.

    :raises FrameworkError: no tick within ``timeout_s``.
    """
    sink = _FirstMark()
    task = asyncio.create_task(driver.watch_mark_prices([symbol], sink))
    try:
        await asyncio.wait_for(sink.arrived.wait(), timeout_s)
    except TimeoutError:
        raise FrameworkError("no mark price", venue=driver.venue, symbol=symbol) from None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sink.tick is not None
    return sink.tick.price


# --- what happened: the monitor plugin feeds the view and the report -----------------------------------


class RunMonitor:
    """A lifecycle listener that counts what happened and keeps the latest events for the view."""

    def __init__(self) -> None:
        self.opened: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        self.closures_by_reason: Counter[str] = Counter()
        self.closed_events: list[PositionEvent] = []
        self.stream_reconnects: Counter[str] = Counter()
        self.errors: list[str] = []
        self.log: deque[str] = deque(maxlen=14)

    def _say(self, text: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {text}")

    @hookimpl
    def on_position_open(self, event: PositionEvent) -> None:
        self.opened[event.venue] += 1
        self._say(f"[green]opened[/] {event.venue} {event.symbol} {event.side} {event.contracts} "
                  f"@ {event.entry_price} ({event.source})")

    @hookimpl
    def on_position_updated(self, event: PositionEvent) -> None:
        self._say(f"[yellow]updated[/] {event.venue} {event.symbol} {event.contracts} ({event.reason})")

    @hookimpl
    def on_position_closed(self, event: PositionEvent) -> None:
        self.closed[event.venue] += 1
        self.closures_by_reason[event.reason] += 1
        self.closed_events.append(event)
        self._say(f"[red]closed[/] {event.venue} {event.symbol} {event.side} — {event.reason} "
                  f"@ {event.price or '?'} pnl {event.realized_pnl if event.realized_pnl is not None else '?'}")

    @hookimpl
    def on_stop_moved(self, event: StopEvent) -> None:
        self._say(f"[cyan]stop[/] {event.venue} {event.symbol} {event.previous} → {event.current}")

    @hookimpl
    def on_stream_state(self, venue: str, state: str, detail: str) -> None:
        if state == "reconnected":
            self.stream_reconnects[venue] += 1
        if state != "connected":
            self._say(f"[magenta]stream[/] {venue} {state} {detail}")

    @hookimpl
    def on_alert(self, alert: Alert) -> None:
        where = " ".join(p for p in (alert.venue, alert.symbol) if p)
        if alert.level == "critical":
            self.errors.append(f"{where}: {alert.message}")
        self._say(f"[bold red]{alert.level}[/] {where} {alert.message}")


# --- the run -----------------------------------------------------------------------------------------


class Run:
    """One ``framework run``: venues, store, engine, signal feed, view, report."""

    def __init__(self, options: RunOptions, settings: Settings | None = None) -> None:
        self.options = options
        self.settings = settings or Settings()
        self.monitor = RunMonitor()
        self.harnesses: dict[str, VenueHarness] = {}
        self.engine: Engine | None = None
        self.started = 0.0
        self.stop_requested = asyncio.Event()
        self.emulated_account = f"emulated-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"

    async def execute(self) -> dict[str, Any]:
        """Run until ``--duration`` elapses or a stop is requested; returns the report."""
        signals = read_signals(self.options.signals)
        pm = load_plugins(self.options.plugins)
        register(pm, self.monitor, "run-monitor")
        drivers = load_drivers(pm)
        if not drivers:
            raise ConfigError("no driver plugin loaded")
        async with contextlib.AsyncExitStack() as stack:
            configs = {}
            for venue, driver in drivers.items():
                live = self.settings.live_config(driver.plugin_name)
                if live is not None:
                    configs[venue] = live.model_copy(update={"testnet": live.testnet or self.options.testnet})
                    continue
                harness = driver.venue_harness(
                    {"speed": self.options.speed, "seed": self.options.seed, "faults": self.options.faults}
                )
                await stack.enter_async_context(harness)
                self.harnesses[venue] = harness
                # A new emulated venue starts empty: its rows get an account label of their own, so they
                # never mix with a real account's or an earlier run's.
                configs[venue] = harness.config.model_copy(update={"account": self.emulated_account})
            store = await Store.open(self.settings.database_url)
            stack.push_async_callback(store.close)
            self.engine = engine = Engine(pm, store, drivers, configs, EngineSettings())
            await engine.start()
            self.started = time.monotonic()
            feed = asyncio.create_task(self._feed(signals))
            view = asyncio.create_task(self._view()) if self.options.tui else None
            try:
                await self._wait_for_stop()
            finally:
                for task in (feed, view):
                    if task is not None:
                        task.cancel()
                await asyncio.gather(*(t for t in (feed, view) if t), return_exceptions=True)
                for parts in engine.venues.values():  # converge before counting orphans
                    with contextlib.suppress(Exception):
                        await parts.reconciler.reconcile()
                report = await self.report(store)
                await engine.stop(flatten=self.options.flatten_on_exit)
        return report

    async def _wait_for_stop(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop_requested.set)
        timeout = self.options.duration_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_requested.wait(), timeout)

    async def _feed(self, signals: list[Signal]) -> None:
        assert self.engine is not None
        for at_s, sig in looped(signals):
            delay = at_s - (time.monotonic() - self.started)
            if delay > 0:
                await asyncio.sleep(delay)  # the signal's schedule, not a synchronisation
            if sig.venue not in self.engine.venues:
                continue
            try:
                await self._act(sig)
            except FrameworkError as exc:
                self.monitor._say(f"[bold red]signal failed[/] {sig.venue} {sig.symbol} {sig.action}: {exc}")
                log.warning("signal %s failed: %s", sig, exc)

    async def _act(self, sig: Signal) -> None:
        assert self.engine is not None
        parts = self.engine.venue(sig.venue)
        if sig.action == "open":
            if parts.book.holds(sig.symbol) or parts.book.opening(sig.symbol):
                return  # one-way mode: the demo does not add to an open position
            mark = await current_mark(parts.driver, sig.symbol)
            intent = intent_from_signal(sig, mark, parts.book.account, client_order_id("o"))
            await self.engine.open(intent)
        elif sig.action == "close":
            if parts.book.holds(sig.symbol):
                await self.engine.close(sig.venue, sig.symbol)
        elif sig.action == "manual_close":
            harness = self.harnesses.get(sig.venue)
            if harness is None or harness.venue is None:
                raise ConfigError("manual_close is a demo action for emulated venues only", venue=sig.venue)
            account = harness.config.account
            if harness.venue.position(account, sig.symbol).contracts > 0:
                harness.venue.manual_close(account, sig.symbol)

    async def _view(self) -> None:
        from framework.view import live_view

        await live_view(self)

    async def report(self, store: Store) -> dict[str, Any]:
        """The run report (keys documented in :mod:`framework.report`)."""
        assert self.engine is not None
        venues: dict[str, dict[str, int]] = {}
        for name, parts in self.engine.venues.items():
            venues[name] = {"opened": self.monitor.opened[name], "closed": self.monitor.closed[name],
                            "open": len(parts.book.positions())}
        latencies, unprotected_max, unprotected_total, wrong_side, orphans = [], 0, 0, 0, 0
        rest_calls: Counter[str] = Counter()
        for name, harness in self.harnesses.items():
            venue = harness.venue
            if venue is None:
                continue
            truth = venue.truth
            latencies += closure_latencies(truth.closures, [e for e in self.monitor.closed_events if e.venue == name])
            gaps = truth.unprotected_ms()
            unprotected_max = max(unprotected_max, gaps["max"])
            unprotected_total += gaps["total"]
            wrong_side += len(truth.wrong_side_orders())
            for endpoint, n in harness.rest_calls().items():
                rest_calls[f"{name} {endpoint}"] += n
            db_open = {r["symbol"] for r in await store.open_positions(self.engine.configs[name].account, name)}
            book_open = set(self.engine.venue(name).book.positions())
            venue_open = {p.symbol for p in venue.positions(harness.config.account)}
            orphans += len((db_open | book_open) ^ venue_open)
        totals = {k: sum(v[k] for v in venues.values()) for k in ("opened", "closed", "open")}
        return {
            "positions": totals,
            "venues": venues,
            "closures_by_reason": dict(self.monitor.closures_by_reason),
            "closure_latency_ms": latency_summary(latencies),
            "unprotected_ms": {"max": unprotected_max, "total": unprotected_total},
            "orphans": orphans,
            "wrong_side_orders": wrong_side,
            "rest_calls": dict(sorted(rest_calls.items())),
            "stream_reconnects": dict(self.monitor.stream_reconnects),
            "errors": list(self.monitor.errors),
            "duration_s": round(time.monotonic() - self.started, 1),
            "speed": self.options.speed,
        }


def closure_latencies(venue_closures: list[Any], events: list[PositionEvent]) -> list[int]:
    """Venue close → ``on_position_closed`` in ms, pairing the n-th venue closure of a symbol with the
    n-th closure event of that symbol (both are in order; each position closes exactly once)."""
    by_symbol: dict[str, list[int]] = {}
    for closure in sorted(venue_closures, key=lambda c: c.ts):
        by_symbol.setdefault(closure.symbol, []).append(closure.ts)
    latencies = []
    seen: Counter[str] = Counter()
    for event in sorted(events, key=lambda e: e.observed_at):
        times = by_symbol.get(event.symbol, [])
        if seen[event.symbol] < len(times):
            latencies.append(max(0, event.observed_at - times[seen[event.symbol]]))
        seen[event.symbol] += 1
    return latencies


def run_main(options: RunOptions) -> int:
    """Entry point of ``framework run``: run, write the report, exit 0 (1 on a safety failure)."""
    report = asyncio.run(Run(options).execute())
    if options.report is not None:
        options.report.write_text(json.dumps(report, indent=2), encoding="utf-8")
    if not options.tui:
        print(json.dumps({k: report[k] for k in ("positions", "orphans", "wrong_side_orders", "unprotected_ms")}))
    unsafe = report["orphans"] or report["wrong_side_orders"] or report["unprotected_ms"]["max"]
    return 1 if unsafe else 0
