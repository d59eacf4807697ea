"""Write-behind for the book's journal: what the venue did is persisted even across a database outage.

The venue and the book are the truth of the moment; the database is their record.  A write that fails
(the database is down, a connection was cut) is not lost and does not stop the close path: it is queued,
in order, and replayed when the database answers again, so a closure is persisted exactly once with its
real reason and price, and the next position of the symbol is unaffected (docs/incidents.md, issue 14).
While anything is queued, later writes queue behind it: an open is never overtaken by its own close.

The queue lives in memory and is bounded: past ``limit`` writes a critical alert is raised and further
writes are logged in full and dropped (the venue and a restart's reconciliation still hold the truth).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import pluggy

from framework.engine.broadcast import alert
from framework.store.leases import is_fenced

log = logging.getLogger(__name__)

Write = Callable[[], Awaitable[Any]]


class WriteBehind:
    """An ordered, bounded queue of database writes for one venue's book.

    :param pm: plugin manager, for alerts.
    :param venue: venue name, for alerts.
    :param limit: most writes held during an outage.
    :param retry_s: first pause between replays; doubles up to ``retry_cap_s``.
    """

    def __init__(self, pm: pluggy.PluginManager, venue: str, *, limit: int = 10_000, retry_s: float = 0.2,
                 retry_cap_s: float = 5.0) -> None:
        self.pm = pm
        self.venue = venue
        self.limit = limit
        self.retry_s = retry_s
        self.retry_cap_s = retry_cap_s
        self._queue: deque[tuple[str, Write]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self.failed_attempts = 0
        self.dropped = 0
        self.fenced = 0  # writes the database refused: stale lease epoch

    @property
    def pending(self) -> int:
        """Writes waiting for the database."""
        return len(self._queue)

    async def write(self, what: str, op: Write) -> bool:
        """Run ``op`` now, or queue it behind earlier writes that are still waiting.

        :param what: a short description for logs and alerts (``close XRP/USDT:USDT``).
        :returns: ``True`` when written now, ``False`` when queued (or dropped past the limit).
        """
        if not self._queue:
            try:
                await op()
                return True
            except Exception as exc:  # any failure: the database cannot take it now
                if is_fenced(exc):
                    await self._refused(what, exc)
                    return False
                self.failed_attempts += 1
                await alert(self.pm, "critical", f"database write failed, queued for replay ({what}): {exc!r}",
                            venue=self.venue)
        await self._enqueue(what, op)
        return False

    async def _enqueue(self, what: str, op: Write) -> None:
        if len(self._queue) >= self.limit:
            self.dropped += 1
            log.error("%s: write-behind queue full (%d), dropped: %s", self.venue, self.limit, what)
            if self.dropped == 1:
                await alert(self.pm, "critical", f"write-behind queue full ({self.limit}): database writes are "
                            "being dropped until it returns", venue=self.venue)
            return
        self._queue.append((what, op))
        self._drained.clear()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=f"write-behind-{self.venue}")

    async def _drain(self) -> None:
        pause = self.retry_s
        while self._queue:
            what, op = self._queue[0]
            try:
                await op()
            except Exception as exc:
                if is_fenced(exc):  # never to be accepted: replaying it would only block the queue
                    self._queue.popleft()
                    await self._refused(what, exc)
                    continue
                self.failed_attempts += 1
                log.warning("%s: replay of %s failed (%d queued), retrying in %.1f s: %s", self.venue, what,
                            len(self._queue), pause, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.retry_cap_s)
                continue
            self._queue.popleft()
            pause = self.retry_s
            if not self._queue:
                await alert(self.pm, "info", "database back: every queued write replayed", venue=self.venue)
        self._drained.set()

    async def _refused(self, what: str, exc: BaseException) -> None:
        """The database refused a write from a stale lease epoch: another instance owns the account now,
        and its reconciliation records what the venue holds.  Dropped, counted, alerted."""
        self.fenced += 1
        log.error("%s: write refused, stale lease epoch (%s): %s", self.venue, what, exc)
        await alert(self.pm, "critical", f"database refused a write from a stale lease epoch ({what}): another "
                    "instance owns this account", venue=self.venue)

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait until nothing is queued.  :returns: ``False`` when writes are still waiting after ``timeout_s``."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop replaying (shutdown); what is still queued is logged, and a restart's reconciliation repairs it."""
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        for what, _ in self._queue:
            log.error("%s: not persisted at shutdown: %s", self.venue, what)
