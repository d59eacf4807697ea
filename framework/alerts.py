"""Alert delivery to people (apprise: Telegram, Slack, Discord, e-mail, ntfy, a JSON webhook…).

The built-in lifecycle plugin ``framework.alerts`` (registered by :class:`framework.session.Session` when
``FRAMEWORK_ALERT_URLS`` is set) turns ``on_alert`` — and, with ``FRAMEWORK_ALERT_POSITIONS``, opens and
closures — into notifications.  The hook only puts a message on a bounded queue (never awaits the
network): a worker task sends it through apprise in a thread, retrying with backoff, so a slow or dead
receiver never holds up the close path.  A full queue drops the message and counts it.

Storm control: an alert opens an *incident* keyed by venue + symbol + kind (the message's words without
numbers or details, :func:`alert_kind`).  Repeats of an open incident are not sent, only counted; the
incident ends with one "resolved" message when the symbol is protected again or closed (a stop placed, a
position opened or closed), when an ``info`` alert arrives for the same venue (e.g. "database back"), or,
silently, after ``FRAMEWORK_ALERT_WINDOW_S`` seconds — a repeat after that is a new message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from framework.hookspecs import hookimpl
from framework.models import Alert, PositionEvent, StopEvent

__all__ = ["LEVELS", "AlertDelivery", "Notification", "alert_kind"]

log = logging.getLogger(__name__)

LEVELS = {"info": 0, "warning": 1, "critical": 2}
QUEUE_SIZE = 256  # messages waiting; beyond it new ones are dropped (counted)
RETRIES = 3  # attempts per message
BACKOFF_S = 1.0  # first pause between attempts, doubling
DRAIN_TIMEOUT_S = 10.0  # how long a stop waits for queued messages


def alert_kind(message: str) -> str:
    """What kind of alert ``message`` is: its words before the first ``:`` / ``(``, without any word
    holding a digit (``"stop 123 removed on the venue; re-protecting"`` → ``"stop removed on the venue;
    re-protecting"``), so repeats of one condition share a kind."""
    head = re.split(r"[:(]", message, maxsplit=1)[0]
    return " ".join(w for w in head.split() if not any(c.isdigit() for c in w))[:80]


@dataclass(frozen=True)
class Notification:
    """One message to deliver: apprise title, body and type (``info``/``success``/``warning``/``failure``)."""

    title: str
    body: str
    notify_type: str
    level: str


@dataclass
class _Incident:
    level: str
    first: float
    repeats: int = 0


@dataclass(eq=False)  # a plugin is compared and hashed by identity (pluggy keeps plugins in sets)
class AlertDelivery:
    """The ``framework.alerts`` lifecycle plugin.

    :param urls: apprise URLs (they may hold tokens: never logged).
    :param min_level: alerts below this level are not sent (``info`` < ``warning`` < ``critical``).
    :param positions: also send a message for every opened and closed position.
    :param window_s: an incident not resolved within this many seconds expires (a repeat is sent again).
    :param retries / backoff_s: attempts per message and the first pause between them (doubling).
    :ivar counters: ``queued``, ``sent``, ``failed`` (every attempt failed), ``retried`` (attempts after a
        failure), ``dropped`` (queue full), ``suppressed`` (repeats of an open incident), ``resolved``.
    """

    urls: list[str] = field(repr=False)
    min_level: str = "warning"
    positions: bool = False
    window_s: float = 300.0
    retries: int = RETRIES
    backoff_s: float = BACKOFF_S
    queue_size: int = QUEUE_SIZE
    counters: Counter[str] = field(default_factory=Counter)
    sent_by_level: Counter[str] = field(default_factory=Counter)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.min_level not in LEVELS:
            raise ValueError(f"unknown alert level {self.min_level!r}; one of {', '.join(LEVELS)}")
        import apprise

        self._apprise = apprise.Apprise()
        for url in self.urls:
            if not self._apprise.add(url):
                # never echo the URL: it carries the receiver's token
                raise ValueError(f"FRAMEWORK_ALERT_URLS: entry {self.urls.index(url) + 1} is not a valid apprise URL")
        # its own thread: apprise sleeps between requests (its rate limit), which must never hold a thread of
        # the loop's default executor (DNS look-ups of the venue clients run there)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alert-delivery")
        self._queue: asyncio.Queue[Notification] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._incidents: dict[tuple[str, str, str], _Incident] = {}
        self.counters.update(queued=0, sent=0, failed=0, retried=0, dropped=0, suppressed=0, resolved=0)

    # --- the queue ---

    def _enqueue(self, note: Notification) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(self.queue_size)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="alert-delivery")
        try:
            self._queue.put_nowait(note)
        except asyncio.QueueFull:
            self.counters["dropped"] += 1
            log.warning("alert queue full (%d): %s dropped", self.queue_size, note.title)
            return
        self.counters["queued"] += 1

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            note = await self._queue.get()
            try:
                await self._deliver(note)
            finally:
                self._queue.task_done()

    async def _deliver(self, note: Notification) -> None:
        delay_s = self.backoff_s
        for attempt in range(1, self.retries + 1):
            try:
                ok = bool(await asyncio.get_running_loop().run_in_executor(self._thread, partial(
                    self._apprise.notify, body=note.body, title=note.title, notify_type=note.notify_type)))
            except Exception as exc:  # an apprise plugin bug must not end the worker
                log.warning("alert delivery raised %s", type(exc).__name__)
                ok = False
            if ok:
                self.counters["sent"] += 1
                self.sent_by_level[note.level] += 1
                return
            if attempt < self.retries:
                self.counters["retried"] += 1
                await asyncio.sleep(delay_s)  # backoff before the next attempt
                delay_s *= 2
        self.counters["failed"] += 1
        log.warning("alert not delivered after %d attempts: %s", self.retries, note.title)

    async def aclose(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Send what is queued (up to ``timeout_s``), then stop the worker."""
        if self._queue is not None and self._worker is not None and not self._worker.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def drained(self) -> None:
        """Wait until every queued message was sent or given up on."""
        if self._queue is not None:
            await self._queue.join()

    # --- incidents ---

    def _resolve(self, venue: str, symbol: str | None, why: str) -> None:
        now = self.clock()
        for key in [k for k in self._incidents if k[0] == venue and (symbol is None or k[1] == symbol)]:
            incident = self._incidents.pop(key)
            if now - incident.first > self.window_s:
                continue  # expired: nothing to resolve
            self.counters["resolved"] += 1
            where = " ".join(p for p in key[:2] if p)
            repeats = f" ({incident.repeats} repeat(s) not sent)" if incident.repeats else ""
            self._enqueue(Notification(f"resolved: {where} {key[2]}", f"{why}{repeats}", "success", "info"))

    # --- lifecycle hooks ---

    @hookimpl
    def on_alert(self, alert: Alert) -> None:
        if alert.level == "info" and alert.venue:
            self._resolve(alert.venue, None, alert.message)
        if LEVELS[alert.level] < LEVELS[self.min_level]:
            return
        key = (alert.venue or "", alert.symbol or "", alert_kind(alert.message))
        now = self.clock()
        incident = self._incidents.get(key)
        if incident is not None and now - incident.first <= self.window_s:
            incident.repeats += 1
            self.counters["suppressed"] += 1
            return
        if alert.level != "info":
            self._incidents[key] = _Incident(alert.level, now)
        where = " ".join(p for p in (alert.venue, alert.symbol) if p) or "framework"
        notify_type = {"info": "info", "warning": "warning", "critical": "failure"}[alert.level]
        self._enqueue(Notification(f"{alert.level.upper()} {where}", alert.message, notify_type, alert.level))

    @hookimpl
    def on_position_open(self, event: PositionEvent) -> None:
        self._resolve(event.venue, event.symbol, "position open and protected")
        if self.positions:
            self._enqueue(Notification(
                f"opened {event.venue} {event.symbol}",
                f"{event.side} {event.contracts} @ {event.entry_price or '?'} ({event.source})", "info", "info"))

    @hookimpl
    def on_position_closed(self, event: PositionEvent) -> None:
        self._resolve(event.venue, event.symbol, f"position closed ({event.reason})")
        if self.positions:
            pnl = event.realized_pnl if event.realized_pnl is not None else "?"
            self._enqueue(Notification(
                f"closed {event.venue} {event.symbol}",
                f"{event.side} — {event.reason} @ {event.price or '?'} pnl {pnl}", "info", "info"))

    @hookimpl
    def on_stop_moved(self, event: StopEvent) -> None:
        if event.current is not None:
            self._resolve(event.venue, event.symbol, f"stop resting at {event.current}")
