"""Alert delivery to people (apprise: Telegram, Slack, Discord, e-mail, ntfy, a JSON webhook…).

The built-in lifecycle plugin ``framework.alerts`` (registered by :class:`framework.session.Session` when
``FRAMEWORK_ALERT_URLS`` is set) turns ``on_alert`` — and, with ``FRAMEWORK_ALERT_POSITIONS``, opens and
closures — into notifications.  Sending happens in a child process (:mod:`framework.alerts_worker`), never
in the engine's: apprise, requests and their retries against a receiver that is down do not compete with
the engine for the GIL.  The hook only writes one JSON line to the worker's stdin (a non-blocking pipe
write); at most ``queue_size`` messages are in flight (written, not yet sent or given up on), beyond that a
message is dropped and counted — the hook never waits.  The worker retries with backoff and reports every
outcome back on its stdout, which the event loop reads into :attr:`AlertDelivery.counters`.

Storm control: an alert opens an *incident* keyed by venue + symbol + kind (the message's words without
numbers or details, :func:`alert_kind`).  Repeats of an open incident are not sent, only counted; the
incident ends with one "resolved" message when the symbol is protected again or closed (a stop placed, a
position opened or closed), when an ``info`` alert arrives for the same venue (e.g. "database back"), or,
silently, after ``FRAMEWORK_ALERT_WINDOW_S`` seconds — a repeat after that is a new message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from framework.hookspecs import hookimpl
from framework.models import Alert, PositionEvent, StopEvent

__all__ = ["LEVELS", "AlertDelivery", "Notification", "alert_kind", "url_secrets"]

log = logging.getLogger(__name__)

LEVELS = {"info": 0, "warning": 1, "critical": 2}
QUEUE_SIZE = 256  # messages in flight; beyond it new ones are dropped (counted)
RETRIES = 3  # attempts per message
BACKOFF_S = 1.0  # first pause after a failed attempt, doubling up to 4 s while attempts fail
DRAIN_TIMEOUT_S = 10.0  # how long a stop waits for queued messages
WORKER = Path(__file__).with_name("alerts_worker.py")
RESTART_S = 5.0  # a worker is not started sooner than this after the last start (one that keeps dying)
WORKER_EXIT_S = 6.0  # beyond the drain bound: the worker's own hard stop (its GRACE_S) plus a margin
BODY_CHARS = 3500  # a message body is cut to this (Telegram's limit is 4096): a pipe line stays small


def alert_kind(message: str) -> str:
    """What kind of alert ``message`` is: its words before the first ``:`` / ``(``, without any word
    holding a digit (``"stop 123 removed on the venue; re-protecting"`` → ``"stop removed on the venue;
    re-protecting"``), so repeats of one condition share a kind."""
    head = re.split(r"[:(]", message, maxsplit=1)[0]
    return " ".join(w for w in head.split() if not any(c.isdigit() for c in w))[:80]


def url_secrets(url: str) -> list[str]:
    """What of an apprise ``url`` must never be shown: the whole URL and each piece that may be a token."""
    parts = urlsplit(url)
    # tokens sit in the host part (tgram://BOT_TOKEN/chat, user:password@) or the path (json://host/TOKEN);
    # a dotted name or address is a host, not a token
    pieces = re.split(r"[:@]", parts.netloc) + parts.path.split("/")
    return [url] + [p for p in pieces if len(p) >= 8 and "." not in p]


def _worker_env() -> dict[str, str]:
    """The environment the worker starts with: this process's, without the framework's settings and keys
    (the worker needs none; its URLs come through the pipe)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("FRAMEWORK_") and k != "DATABASE_URL" and not k.endswith(("_API_KEY", "_API_SECRET"))}


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

    :param urls: apprise URLs (they may hold tokens: never logged, handed to the worker through its stdin).
    :param min_level: alerts below this level are not sent (``info`` < ``warning`` < ``critical``).
    :param positions: also send a message for every opened and closed position.
    :param window_s: an incident not resolved within this many seconds expires (a repeat is sent again).
    :param retries / backoff_s: attempts per message; after a failed attempt the next one (of this message or
        the next) waits ``backoff_s``, doubling up to ``backoff_s * 2**(retries-1)`` while attempts keep
        failing, back to none after a success; read when the worker starts.
    :param queue_size: messages in flight (handed to the worker, outcome not yet known) at most.
    :param drain_s: how long :meth:`aclose` lets the worker send what it holds.
    :param restart_s: a worker that ended is replaced (at the next message) no sooner than this after the last
        start: one that keeps dying (a broken installation) costs a process start per ``restart_s``, not per
        message; meanwhile messages wait, within ``queue_size``.
    :ivar counters: ``queued``, ``sent``, ``failed`` (every attempt failed), ``retried`` (failed attempts
        followed by a backoff pause and another try — unless a stop cut the pause), ``dropped`` (too many in
        flight, or after :meth:`aclose`), ``suppressed`` (repeats of an open incident), ``resolved``,
        ``abandoned`` (still unsent when the worker stopped: the drain bound ran out, or it died — a new one
        starts with the next message).
    """

    urls: list[str] = field(repr=False)
    min_level: str = "warning"
    positions: bool = False
    window_s: float = 300.0
    retries: int = RETRIES
    backoff_s: float = BACKOFF_S
    queue_size: int = QUEUE_SIZE
    drain_s: float = DRAIN_TIMEOUT_S
    restart_s: float = RESTART_S
    counters: Counter[str] = field(default_factory=Counter)
    sent_by_level: Counter[str] = field(default_factory=Counter)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.min_level not in LEVELS:
            raise ValueError(f"unknown alert level {self.min_level!r}; one of {', '.join(LEVELS)}")
        import apprise  # here only to refuse a bad URL at once; the worker sends

        check = apprise.Apprise()
        for url in self.urls:
            if not check.add(url):
                # never echo the URL: it carries the receiver's token
                raise ValueError(f"FRAMEWORK_ALERT_URLS: entry {self.urls.index(url) + 1} is not a valid apprise URL")
        self._process: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Task[None] | None = None
        self._started_at: float | None = None  # the event loop's time of the last start
        self._restart: asyncio.TimerHandle | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._backlog: list[bytes] = []  # lines written before the worker's pipe was open
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._overflow = 0  # messages dropped since the queue was last below its bound
        self._closed = False
        self._incidents: dict[tuple[str, str, str], _Incident] = {}
        # masked in what the worker reports, longest first, whatever the host's log handlers do
        self._secrets = sorted({p for url in self.urls for p in url_secrets(url)}, key=len, reverse=True)
        self.counters.update(queued=0, sent=0, failed=0, retried=0, dropped=0, suppressed=0, resolved=0, abandoned=0)

    @property
    def worker_pid(self) -> int | None:
        """The worker process's id while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    # --- the worker ---

    async def start(self) -> None:
        """Start the worker now rather than at the first message (a session does, before trading: the
        process start is then not on the path of whatever raised the first alert)."""
        self._ensure_worker()
        if self._starting is not None:
            await self._starting

    def _ensure_worker(self) -> None:
        running = self._process is not None and self._process.returncode is None
        starting = self._starting is not None and not self._starting.done()
        if self._closed or running or starting or self._restart is not None:
            return
        loop = asyncio.get_running_loop()
        wait_s = 0.0 if self._started_at is None else self._started_at + self.restart_s - loop.time()
        if wait_s > 0:
            self._restart = loop.call_later(wait_s, self._restart_later)
            return
        self._started_at = loop.time()
        self._starting = loop.create_task(self._spawn(), name="alert-worker-start")

    def _restart_later(self) -> None:
        self._restart = None
        if self._backlog:
            self._ensure_worker()

    async def _spawn(self) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-P", str(WORKER), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=_worker_env(), process_group=0)  # Ctrl-C is the parent's
        except OSError as exc:
            log.error("alert worker could not start (%s): %d message(s) not sent", exc, len(self._backlog))
            self._settle("abandoned", len(self._backlog))
            self._backlog.clear()
            return
        assert process.stdin is not None
        config = {"urls": self.urls, "retries": self.retries, "backoff_s": self.backoff_s, "drain_s": self.drain_s}
        process.stdin.write(json.dumps(config).encode() + b"\n")
        process.stdin.writelines(self._backlog)
        self._backlog.clear()
        self._process = process
        loop = asyncio.get_running_loop()
        self._readers = [loop.create_task(self._read_outcomes(process), name="alert-worker-outcomes"),
                         loop.create_task(self._read_errors(process), name="alert-worker-stderr")]

    async def _read_outcomes(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            try:
                outcome = json.loads(line)
                result = outcome["result"]
            except (ValueError, KeyError, TypeError):
                continue
            if result == "retried":
                self.counters["retried"] += 1
            elif result == "sent":
                self.sent_by_level[str(outcome.get("level"))] += 1
                self._settle("sent")
            elif result == "failed":
                log.warning("alert not delivered after %d attempts: %s (%s)", self.retries, outcome.get("title"),
                            self._masked(str(outcome.get("why"))))
                self._settle("failed")
            elif result == "abandoned":
                self._settle("abandoned")
        await process.wait()
        held = self._in_flight - len(self._backlog)  # what the worker held when it stopped
        if held > 0 and not self._closed:
            log.warning("alert worker ended (exit %s): %d message(s) not sent", process.returncode, held)
        self._settle("abandoned", held)
        if self._process is process:
            self._process = None
            if self._backlog:  # written meanwhile: a new worker takes them
                self._ensure_worker()

    async def _read_errors(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for line in process.stderr:  # a crash's traceback
            log.warning("alert worker: %s", self._masked(line.decode(errors="replace").rstrip()))

    def _masked(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _settle(self, result: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.counters[result] += n
        self._in_flight -= n
        if self._in_flight <= 0:
            self._in_flight = 0
            self._idle.set()

    # --- the queue ---

    def _enqueue(self, note: Notification) -> None:
        if self._closed:
            self.counters["dropped"] += 1
            log.debug("alert after the delivery stopped: %s dropped", note.title)
            return
        if self._in_flight >= self.queue_size:
            self.counters["dropped"] += 1
            if not self._overflow:  # one line per overflow, not one per message
                log.warning("alert queue full (%d in flight): %s dropped, and further ones counted until there "
                            "is room", self.queue_size, note.title)
            self._overflow += 1
            return
        if self._overflow:
            log.warning("alert queue accepting again: %d message(s) dropped", self._overflow)
            self._overflow = 0
        line = json.dumps({"title": note.title, "body": note.body[:BODY_CHARS], "type": note.notify_type,
                           "level": note.level}).encode() + b"\n"
        self._in_flight += 1
        self._idle.clear()
        self.counters["queued"] += 1
        process = self._process
        if process is not None and process.returncode is None and process.stdin is not None \
                and not process.stdin.is_closing():
            process.stdin.write(line)  # never blocks: the transport buffers what the pipe cannot take now
        else:
            self._backlog.append(line)
            self._ensure_worker()

    async def aclose(self, timeout_s: float | None = None) -> None:
        """Let the worker send what it holds for up to ``timeout_s`` (default ``drain_s``), then stop it;
        later messages are dropped (counted)."""
        drain_s = self.drain_s if timeout_s is None else timeout_s
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        if self._starting is not None:
            await self._starting
        process = self._process
        if process is not None and process.stdin is not None:
            if not process.stdin.is_closing():
                process.stdin.write(json.dumps({"close": drain_s}).encode() + b"\n")
                process.stdin.close()  # end of stdin: the worker drains within drain_s, then exits
            try:
                await asyncio.wait_for(process.wait(), drain_s + WORKER_EXIT_S)
            except TimeoutError:
                log.warning("alert worker did not stop within %.0f s: killed", drain_s + WORKER_EXIT_S)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._readers = []
        self._settle("abandoned", self._in_flight)

    async def drained(self) -> None:
        """Wait until every queued message was sent or given up on."""
        await self._idle.wait()

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
