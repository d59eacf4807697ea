"""``framework run``: the whole system over the selected plugins, a signal source, a view and a report.

A plugin whose API keys are set (``framework.settings``) trades on a real account (or the endpoint of
``<PLUGIN>_REST_URL`` / ``<PLUGIN>_WS_URL``) and needs ``--live``; every other plugin runs against its own
emulator (``venue_harness``) with real price data replayed at ``--speed``.

Signals: the packaged demo (emulated venues only, looped), ``--signals FILE`` (looped on emulated venues,
once when any plugin is live), ``--signals -`` (JSONL from stdin as it arrives), ``--signals FILE --follow``
(tail a file), the HTTP API (``--http PORT``) or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from rich.text import Text

from framework.app.metrics import Metrics, serve_metrics
from framework.app.report import latency_summary
from framework.errors import ConfigError, FrameworkError
from framework.hookspecs import hookimpl
from framework.models import Alert, OrderIntent, PositionEvent, Signal, StopEvent
from framework.session import PositionAlreadyOpen, Session, current_mark, intent_from_signal, quote_currency
from framework.settings import Settings

__all__ = ["Run", "RunMonitor", "RunOptions", "closure_latencies", "current_mark", "feed", "intent_from_signal",
           "looped", "parse_signal", "read_signals", "run_main", "signal_source"]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 60.0  # how long a stop (SIGTERM, Ctrl-C, --duration) waits for opens under way
FOLLOW_POLL_S = 0.2  # how often --follow looks for new lines (a file has no "line written" event)


class RunOptions(BaseModel):
    """What ``framework run`` was asked to do (see ``framework run --help``).

    :ivar signals: a JSONL file, ``-`` for stdin, or ``None`` (the demo on emulated venues, nothing live).
    :ivar follow: tail ``signals`` for new lines instead of reading it once.
    :ivar live: confirm trading on the accounts whose keys are set.
    :ivar http_port: serve the HTTP API on this port (0: any free port), ``None``: no HTTP API.
    :ivar metrics_port: serve Prometheus ``/metrics`` on this port (0: any free port), ``None``: none.
    """

    plugins: list[str] | None = None
    disabled_plugins: list[str] = []
    duration_s: float | None = None
    speed: float = 100.0
    seed: int = 0
    signals: Path | None = None
    follow: bool = False
    faults: str | None = None
    report: Path | None = None
    tui: bool = True
    flatten_on_exit: bool = False
    testnet: bool = False
    live: bool = False
    http_port: int | None = None
    metrics_port: int | None = None


# --- signals -----------------------------------------------------------------------------------------


def parse_signal(line: str, where: str) -> Signal:
    """One JSONL signal line.  :raises ConfigError: naming ``where`` and the invalid field(s)."""
    try:
        return Signal.model_validate_json(line)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'signal'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"{where}: invalid signal: {problems}") from exc


def _signal_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is no line end
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line


def read_signals(path: Path | None) -> list[Signal]:
    """Parse a JSONL signal file (the packaged demo when ``path`` is ``None``).

    :raises ConfigError: a missing file, or naming the line and the field of the first invalid signal.
    """
    if path is None:
        text = (resources.files("framework") / "data" / "demo_signals.jsonl").read_text(encoding="utf-8")
        name = "demo_signals.jsonl"
    else:
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read the signal file: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{name}: not a text file of JSONL signals") from None
    signals = [parse_signal(line, f"{name}:{number}") for number, line in _signal_lines(text)]
    if not signals:
        raise ConfigError(f"{name}: no signals")
    return sorted(signals, key=lambda s: s.at_ms)


def looped(signals: list[Signal]) -> Iterator[tuple[float, Signal]]:
    """``(seconds since start, signal)`` forever: the file repeats, each pass after the previous one."""
    period_s = signals[-1].at_ms / 1000 + 5.0
    for lap in range(1_000_000):
        for sig in signals:
            yield lap * period_s + sig.at_ms / 1000, sig


Scheduled = tuple[float, Signal | ConfigError]  # (seconds since the start, the signal or why a line was bad)


async def _from_list(items: Iterator[tuple[float, Signal]]) -> AsyncIterator[Scheduled]:
    for at_s, sig in items:
        yield at_s, sig


def _parsed(line: str, where: str) -> Scheduled:
    try:
        sig = parse_signal(line, where)
    except ConfigError as exc:
        return 0.0, exc
    return sig.at_ms / 1000, sig


async def stdin_signals(stream: Any = None) -> AsyncIterator[Scheduled]:
    """JSONL signals from stdin (``--signals -``) as each line arrives; ends at end of input.

    A daemon thread reads the blocking stream, so a pending read never holds up the process at exit.
    """
    stream = stream or sys.stdin
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        try:
            for raw in stream:
                loop.call_soon_threadsafe(lines.put_nowait, raw)
        finally:
            loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=pump, name="stdin-signals", daemon=True).start()
    number = 0
    while (line := await lines.get()) is not None:
        number += 1
        if line.strip() and not line.lstrip().startswith("#"):
            yield _parsed(line, f"stdin:{number}")


async def follow_signals(path: Path) -> AsyncIterator[Scheduled]:
    """The signals of ``path``, then every line appended to it (``--signals FILE --follow``), until
    cancelled.  A line counts once it ends with a newline (a writer may be half-way through it).

    :raises ConfigError: the file cannot be opened.
    """
    try:
        handle = open(path, encoding="utf-8")  # noqa: ASYNC230 - a local file, held open while tailing
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the signal file: {exc.strerror or exc}") from None
    with handle:
        number, pending = 0, ""
        while True:
            chunk = handle.readline()
            if not chunk:
                await asyncio.sleep(FOLLOW_POLL_S)
                continue
            pending += chunk
            if not pending.endswith("\n"):
                continue
            line, pending = pending, ""
            number += 1
            if line.strip() and not line.lstrip().startswith("#"):
                yield _parsed(line, f"{path}:{number}")


def signal_source(signals: Path | None, *, follow: bool = False, live: bool = False,
                  demo: bool = True) -> tuple[AsyncIterator[Scheduled] | None, bool]:
    """Where a run's signals come from, and whether they loop: ``--signals -`` (stdin as lines arrive),
    ``--signals FILE --follow`` (tail it), ``--signals FILE`` once when ``live``, else looped; no file: the
    packaged demo, looped (``demo``, emulated venues only), else nothing.

    :raises ConfigError: a bad signal file (before anything connects).
    """
    if signals is not None and str(signals) == "-":
        return stdin_signals(), False
    if signals is not None and follow:
        return follow_signals(signals), False
    if live or (signals is None and not demo):
        # never the demo, never a loop on a real account
        return (_from_list((s.at_ms / 1000, s) for s in read_signals(signals)) if signals else None), False
    return _from_list(looped(read_signals(signals))), True


async def feed(source: AsyncIterator[Scheduled], act: Callable[[Signal], Awaitable[object]],
               bad_line: Callable[[ConfigError], None], started: float) -> None:
    """Carry out ``source``'s signals, each at its time (``at_ms`` after ``started``, a ``time.monotonic()``
    value), one after the other; a bad line goes to ``bad_line`` and the feed goes on."""
    async for at_s, item in source:
        if isinstance(item, ConfigError):
            bad_line(item)
            continue
        delay = at_s - (time.monotonic() - started)
        if delay > 0:
            await asyncio.sleep(delay)  # the signal's schedule, not a synchronisation
        await act(item)


# --- what happened: the monitor plugin feeds the view and the report -----------------------------------


class RunMonitor:
    """A lifecycle listener that counts what happened and keeps the latest events for the view.

    :param echo: also log each event as one plain line (piped output, ``--no-tui``).
    """

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.opened: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        self.closures_by_reason: Counter[str] = Counter()
        self.closed_events: list[PositionEvent] = []
        self.realized_pnl: dict[str, Decimal] = {}  # by currency
        self.stream_reconnects: Counter[str] = Counter()
        self.reconciliation: Counter[str] = Counter()  # what the reconciliation passes did, summed
        self.stream_states: dict[str, str] = {}
        self.errors: list[str] = []
        self.listener_errors: list[str] = []
        self.failed_signals: list[dict[str, Any]] = []
        self.signal_failed_event = asyncio.Event()  # set on every failed signal (for whoever waits on one)
        self.log: deque[str] = deque(maxlen=14)
        self.alerts: deque[str] = deque(maxlen=6)

    def _say(self, text: str, event: str, venue: str | None = None, symbol: str | None = None,
             client_order_id: str | None = None) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {text}")
        if self.echo:
            log.info("%s", Text.from_markup(text).plain,
                     extra={"event": event, "venue": venue, "symbol": symbol, "client_order_id": client_order_id})

    def signal_failed(self, sig: Signal | None, error: Exception, line: str | None = None) -> None:
        """Record a signal that was refused or failed (it counts in ``errors``)."""
        what = f"{sig.venue} {sig.symbol} {sig.action}" if sig is not None else "signal"
        self.failed_signals.append({"signal": sig.model_dump(mode="json") if sig is not None else line,
                                    "error": str(error), "type": type(error).__name__})
        self.errors.append(f"{what} failed: {error}")
        self.signal_failed_event.set()
        self._say(f"[bold red]signal failed[/] {what}: {error}", "signal_failed",
                  sig.venue if sig else None, sig.symbol if sig else None)

    @hookimpl
    def on_order_submitted(self, intent: OrderIntent) -> None:
        self._say(f"[blue]submitting[/] {intent.venue} {intent.symbol} {intent.side} {intent.contracts}",
                  "order_submitted", intent.venue, intent.symbol, intent.client_order_id)

    @hookimpl
    def on_position_open(self, event: PositionEvent) -> None:
        self.opened[event.venue] += 1
        self._say(f"[green]opened[/] {event.venue} {event.symbol} {event.side} {event.contracts} "
                  f"@ {event.entry_price} ({event.source})", "position_open", event.venue, event.symbol)

    @hookimpl
    def on_position_updated(self, event: PositionEvent) -> None:
        self._say(f"[yellow]updated[/] {event.venue} {event.symbol} {event.contracts} ({event.reason})",
                  "position_updated", event.venue, event.symbol)

    @hookimpl
    def on_position_closed(self, event: PositionEvent) -> None:
        reason = event.reason
        self.closed[event.venue] += 1
        self.closures_by_reason[reason] += 1
        self.closed_events.append(event)
        if event.realized_pnl is not None:
            currency = quote_currency(event.symbol)
            self.realized_pnl[currency] = self.realized_pnl.get(currency, Decimal(0)) + event.realized_pnl
        self._say(f"[red]closed[/] {event.venue} {event.symbol} {event.side} — {reason} "
                  f"@ {event.price or '?'} pnl {event.realized_pnl if event.realized_pnl is not None else '?'}",
                  "position_closed", event.venue, event.symbol)

    @hookimpl
    def on_stop_moved(self, event: StopEvent) -> None:
        self._say(f"[cyan]stop[/] {event.venue} {event.symbol} {event.previous} → {event.current}", "stop_moved",
                  event.venue, event.symbol, event.order_id)

    @hookimpl
    def on_reconciled(self, venue: str, report: dict[str, Any]) -> None:
        self.reconciliation["passes"] += 1
        for action in ("closed", "adopted", "reprotected", "stale_stops_cancelled", "duplicate_stops_cancelled",
                       "database_unavailable"):
            self.reconciliation[action] += int(report.get(action, 0))

    @hookimpl
    def on_stream_state(self, venue: str, state: str, detail: str) -> None:
        if state == "reconnected":
            self.stream_reconnects[venue] += 1
        if state != "malformed_frame":
            self.stream_states[venue] = state
        if state != "connected":
            self._say(f"[magenta]stream[/] {venue} {state} {detail}", "stream_state", venue)

    @hookimpl
    def on_alert(self, alert: Alert) -> None:
        where = " ".join(p for p in (alert.venue, alert.symbol) if p)
        if alert.message.startswith("listener "):  # broadcast's words for a listener that raised
            self.listener_errors.append(alert.message)
            self.errors.append(f"{where}: {alert.message}".lstrip(": "))
        elif alert.level == "critical":
            self.errors.append(f"{where}: {alert.message}")
        self.alerts.append(f"{time.strftime('%H:%M:%S')} {alert.level} {where} {alert.message}")
        self._say(f"[bold red]{alert.level}[/] {where} {alert.message}", "alert", alert.venue, alert.symbol)


# --- the run -----------------------------------------------------------------------------------------


class Run:
    """One ``framework run``: a :class:`~framework.session.Session`, a signal feed, view, report."""

    def __init__(self, options: RunOptions, settings: Settings | None = None) -> None:
        self.options = options
        self.monitor = RunMonitor(echo=not options.tui)
        self.session = Session(
            options.plugins, settings=settings, live=options.live, testnet=options.testnet, speed=options.speed,
            seed=options.seed, faults=options.faults, disabled_plugins=options.disabled_plugins,
            listeners=[("run-monitor", self.monitor)], flatten_on_exit=options.flatten_on_exit,
        )
        self.metrics: Metrics | None = None
        if options.metrics_port is not None:
            self.metrics = Metrics(self.session)
            self.session.listeners.append(("framework.metrics", self.metrics))
        self.metrics_url: str | None = None
        self.metrics_ready = asyncio.Event()
        self.started = time.monotonic()
        self.stop_requested = asyncio.Event()
        self.fatal: str | None = None
        self.http_url: str | None = None
        self.looping = False  # the signal file repeats (emulated venues only)
        self.http_ready = asyncio.Event()

    @property
    def engine(self) -> Any:
        return self.session.engine

    @property
    def harnesses(self) -> dict[str, Any]:
        return self.session.harnesses

    @property
    def live(self) -> bool:
        """Any plugin trades on a real account (or a real-account endpoint)."""
        return bool(self.session.live_venues)

    def _signal_source(self) -> AsyncIterator[Scheduled] | None:
        # the HTTP API replaces the demo
        source, self.looping = signal_source(self.options.signals, follow=self.options.follow, live=self.live,
                                             demo=self.options.http_port is None)
        return source

    def banner(self) -> list[str]:
        """One line per venue: LIVE (account, testnet/mainnet, endpoint) or emulated (speed)."""
        lines = []
        for venue, config in sorted(self.session.live_venues.items()):
            network = "testnet" if config.testnet else "mainnet"
            endpoint = f" endpoint {config.rest_url}" if config.rest_url else ""
            lines.append(f"LIVE {venue} account {config.account} {network}{endpoint}")
        assert self.session.pm is not None
        from framework.plugins import drivers

        for venue in sorted(set(drivers(self.session.pm)) - set(self.session.live_venues)):
            lines.append(f"emulated {venue} speed {self.options.speed:g}x")
        return lines

    async def execute(self) -> dict[str, Any]:
        """Run until ``--duration`` elapses, a stop is requested or a fatal error; returns the report."""
        if self.options.signals is not None and str(self.options.signals) != "-" and not self.options.follow:
            read_signals(self.options.signals)  # a bad file fails before anything connects
        settings = self.session.prepare().settings
        assert settings is not None
        if self.options.http_port is not None and not (settings.http_token and settings.http_token.get_secret_value()):
            raise ConfigError("--http needs FRAMEWORK_HTTP_TOKEN (a bearer token) to be set")
        source = self._signal_source()
        for line in self.banner():
            print(line, file=sys.stderr, flush=True)
        async with self.session:
            self.started = time.monotonic()
            tasks = {asyncio.create_task(self._feed(source), name="feed")} if source is not None else set()
            if self.options.tui:
                tasks.add(asyncio.create_task(self._view(), name="view"))
            try:
                if self.options.http_port is not None:
                    tasks.add(asyncio.create_task(self._serve_http(), name="http"))
                if self.metrics is not None:
                    tasks.add(asyncio.create_task(self._serve_metrics(), name="metrics"))
                await self._wait_for_stop(tasks)
            finally:
                # drain: no new signal from here on; opens under way finish (protected) before anything stops
                log.info("stopping: no new signals; %d under way", self.session.in_flight, extra={"event": "drain"})
                await self.session.drain(DRAIN_TIMEOUT_S)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                assert self.engine is not None
                with contextlib.suppress(Exception):  # converge before counting orphans
                    await self.engine.reconcile_all()
                report = await self.report()
        return report

    async def _wait_for_stop(self, tasks: set[asyncio.Task[None]]) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop_requested.set)
        stopper = asyncio.create_task(self.stop_requested.wait())
        deadline = None if self.options.duration_s is None else time.monotonic() + self.options.duration_s
        pending = {stopper, *tasks}
        try:
            while stopper in pending:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    return  # --duration elapsed
                for task in done - {stopper}:
                    if not task.cancelled() and task.exception() is not None:
                        exc = task.exception()
                        self.fatal = f"{task.get_name()}: {type(exc).__name__}: {exc}"
                        self.monitor.errors.append(f"fatal: {self.fatal}")
                        log.error("fatal: %s", self.fatal, exc_info=exc)
                        return
        finally:
            stopper.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)

    async def _feed(self, source: AsyncIterator[Scheduled]) -> None:
        assert self.engine is not None
        await feed(source, functools.partial(self.act, quiet_if_open=self.looping),
                   functools.partial(self.monitor.signal_failed, None), self.started)

    async def act(self, sig: Signal, quiet_if_open: bool = False) -> bool:
        """Carry out ``sig``; a refusal or failure is recorded as a failed signal.

        :param quiet_if_open: an ``open`` for a symbol already held is skipped silently (the looped demo).
        :returns: whether it succeeded.
        """
        if self.session.draining:
            return False  # stopping: a signal due now is not taken (nor counted as failed)
        if quiet_if_open and sig.venue not in self.engine.venues:
            return False  # a demo line for a venue this run does not drive
        try:
            await self.session.submit(sig)
        except PositionAlreadyOpen as exc:
            if not quiet_if_open:
                self.monitor.signal_failed(sig, exc)
            return False
        except FrameworkError as exc:
            log.warning("signal %s failed: %s", sig, exc)
            self.monitor.signal_failed(sig, exc)
            return False
        except Exception as exc:  # unexpected: counted, logged with its stack, and the feed goes on
            log.exception("signal %s failed unexpectedly", sig)
            self.monitor.signal_failed(sig, exc)
            return False
        return True

    async def _view(self) -> None:
        from framework.app.view import live_view

        await live_view(self)

    async def _serve_http(self) -> None:
        from framework.app.http import serve

        assert self.options.http_port is not None
        async with serve(self, self.options.http_port) as url:
            self.http_url = url
            self.http_ready.set()
            print(f"HTTP API on {url} (OpenAPI: {url}/v1/openapi.json)", file=sys.stderr, flush=True)
            await asyncio.Event().wait()  # serve until cancelled

    async def _serve_metrics(self) -> None:
        assert self.metrics is not None and self.options.metrics_port is not None
        assert self.session.settings is not None
        async with serve_metrics(self.metrics, self.session.settings.metrics_host, self.options.metrics_port) as url:
            self.metrics_url = url
            self.metrics_ready.set()
            print(f"metrics on {url}/metrics", file=sys.stderr, flush=True)
            await asyncio.Event().wait()  # serve until cancelled

    def left_open(self, venue_stops: dict[str, set[str]] | None = None) -> list[dict[str, Any]]:
        """Each open position with its stop and whether it is protected: ground truth on emulated venues,
        the venue's own list of resting stops on live ones (``venue_stops``: symbols with a stop, by venue),
        else the book's resting stop."""
        rows = []
        for info in self.session.positions():
            harness = self.harnesses.get(info.venue)
            protected = info.protected
            if harness is not None and harness.venue is not None:
                protected = harness.venue.is_protected(harness.config.account, info.symbol)
            elif venue_stops is not None and info.venue in venue_stops:
                protected = info.symbol in venue_stops[info.venue]
            rows.append({"venue": info.venue, "symbol": info.symbol, "side": info.side,
                         "contracts": str(info.contracts), "entry_price": _str(info.entry_price),
                         "stop_loss": _str(info.stop_loss), "take_profit": _str(info.take_profit),
                         "protected": protected})
        return rows

    async def _live_orphans(self, store: Any, venue_stops: dict[str, set[str]]) -> int:
        """Orphans on live venues, from one last snapshot: open in the DB or book, flat on the venue, or the
        reverse.  Fills ``venue_stops`` with the symbols the venue lists a stop-loss for."""
        assert self.engine is not None
        orphans = 0
        for name in sorted(set(self.session.live_venues) & set(self.engine.venues)):
            try:
                snapshot = await self.engine.snapshot(name)
            except FrameworkError as exc:
                self.monitor.errors.append(f"{name}: the final snapshot failed: {exc}")
                continue
            venue_stops[name] = {s.symbol for s in snapshot.stops if s.kind in ("stop_loss", "trailing_stop")}
            db_open = {r.symbol for r in await store.open_positions(self.engine.configs[name].account, name)}
            book_open = set(self.engine.positions(name)[name])
            orphans += len((db_open | book_open) ^ {p.symbol for p in snapshot.positions})
        return orphans

    async def report(self, store: Any = None) -> dict[str, Any]:
        """The run report (keys documented in :mod:`framework.app.report`)."""
        assert self.engine is not None
        store = store or self.session.store
        venues: dict[str, dict[str, Any]] = {}
        for name, held in self.engine.positions().items():
            venues[name] = {"opened": self.monitor.opened[name], "closed": self.monitor.closed[name],
                            "open": len(held),
                            "mode": "live" if name in self.session.live_venues else "emulated"}
        latencies, unprotected_max, unprotected_total, wrong_side, orphans = [], 0, 0, 0, 0
        rest_calls: Counter[str] = Counter()
        for name, harness in self.harnesses.items():
            venue = harness.venue
            if venue is None or name not in self.engine.venues:  # standby: another instance reports it
                continue
            truth = venue.truth
            latencies += closure_latencies(truth.closures, [e for e in self.monitor.closed_events if e.venue == name])
            gaps = truth.unprotected_ms()
            unprotected_max = max(unprotected_max, gaps["max"])
            unprotected_total += gaps["total"]
            wrong_side += len(truth.wrong_side_orders())
            for endpoint, n in harness.rest_calls().items():
                rest_calls[f"{name} {endpoint}"] += n
            db_open = {r.symbol for r in await store.open_positions(self.engine.configs[name].account, name)}
            book_open = set(self.engine.positions(name)[name])
            venue_open = {p.symbol for p in venue.positions(harness.config.account)}
            orphans += len((db_open | book_open) ^ venue_open)
        venue_stops: dict[str, set[str]] = {}
        orphans += await self._live_orphans(store, venue_stops)
        totals = {k: sum(v[k] for v in venues.values()) for k in ("opened", "closed", "open")}
        return {
            "mode": "live" if self.live else "emulated",
            "positions": totals,
            "venues": venues,
            "closures_by_reason": dict(self.monitor.closures_by_reason),
            "realized_pnl": {currency: str(value) for currency, value in sorted(self.monitor.realized_pnl.items())},
            "closure_latency_ms": latency_summary(latencies),
            "unprotected_ms": {"max": unprotected_max, "total": unprotected_total},
            "orphans": orphans,
            "wrong_side_orders": wrong_side,
            "rest_calls": dict(sorted(rest_calls.items())),
            "stream_reconnects": dict(self.monitor.stream_reconnects),
            "reconciliation": dict(sorted(self.monitor.reconciliation.items())),
            "stream_states": dict(sorted(self.monitor.stream_states.items())),
            "leases": {name: self.engine.lease_state(name) for name in sorted(self.engine.leases)},
            "open_positions": self.left_open(venue_stops),
            "failed_signals": list(self.monitor.failed_signals),
            "listener_errors": list(self.monitor.listener_errors),
            "errors": list(self.monitor.errors),
            "fatal": self.fatal,
            "duration_s": round(time.monotonic() - self.started, 1),
            "speed": self.options.speed,
        }


def _str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


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


def run_main(options: RunOptions, settings: Settings | None = None) -> int:
    """Entry point of ``framework run``: run, write the report, print what the run leaves.

    :returns: 0; 1 on a safety failure (orphan, wrong-side order, a position unprotected longer than
        :data:`~framework.app.report.FILL_TO_STOP_MS`), an error (failed signal, listener error, critical alert)
        or a fatal error.
    """
    from framework.app.report import FILL_TO_STOP_MS, print_left

    report = asyncio.run(Run(options, settings).execute())
    if options.report is not None:
        options.report.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print_left(report, sys.stderr)
    if not options.tui:
        print(json.dumps({k: report[k] for k in ("positions", "orphans", "wrong_side_orders", "unprotected_ms")}))
    unsafe = report["orphans"] or report["wrong_side_orders"] or report["unprotected_ms"]["max"] > FILL_TO_STOP_MS
    return 1 if unsafe or report["errors"] else 0
