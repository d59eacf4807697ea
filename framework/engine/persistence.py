"""Write-behind for the book's journal: what the venue did is persisted even across a database outage, and
the stream's state changes are written in group commits.

The venue and the book are the truth of the moment; the database is their record.  Every write goes
through one ordered queue, so an open is never overtaken by its own close:

* :meth:`WriteBehind.write` runs a write of its own (an open, a stop, an order's state) at once when
  nothing is queued, else queued behind what is;
* :meth:`WriteBehind.journal` queues a stream-driven journal row (a size change, a closure); one drainer
  writes every row queued meanwhile (up to ``batch_rows``) as ONE group commit
  (:meth:`framework.store.Store.write_rows`: one statement, one round trip), at most one every
  ``commit_interval_s`` while rows keep coming (rows were queued while the last commit was in flight; any
  other row goes at once, so a lone closure waits for nothing); then each row's
  ``after`` (the lifecycle broadcast) runs, in queue order: in an announcer task of its own for the
  stream's rows (a listener may await writes of its own meanwhile), in the caller's task for a row it
  waits for.  Nothing is announced before the batch that holds it has committed, so a crash loses no row
  that was announced (``tests/engine/test_group_commit.py`` kills a process between batches).

A write that fails (the database is down, a connection was cut) is not lost and does not stop the close
path: the queue turns *degraded* (a critical alert), every queued write is announced as not persisted
(``after(False)``, as the close path did before), and the queue is replayed, in order, when the database
answers again, so a closure is persisted exactly once with its real reason and price (docs/incidents.md,
issue 14).

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
from framework.store.repository import JournalRow

log = logging.getLogger(__name__)

Write = Callable[[], Awaitable[Any]]
#: writes a batch of journal rows as one transaction (``Store.write_rows``)
WriteRows = Callable[[list[JournalRow]], Awaitable[Any]]
#: what runs once a queued write's first attempt is over: ``persisted`` says whether it is in the database
After = Callable[[bool], Awaitable[None]]


class _Queued:
    """One queued write: a write of its own (``op``) or a journal row to group-commit (``row``)."""

    __slots__ = ("what", "op", "row", "after", "done")

    def __init__(self, what: str, op: Write | None, row: JournalRow | None, after: After | None) -> None:
        self.what = what
        self.op = op
        self.row = row
        self.after = after
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()


class WriteBehind:
    """An ordered, bounded queue of database writes for one venue's book.

    :param pm: plugin manager, for alerts.
    :param venue: venue name, for alerts.
    :param write_rows: group commit of journal rows (``Store.write_rows``); needed by :meth:`journal`.
    :param limit: most writes held during an outage.
    :param retry_s: first pause between replays; doubles up to ``retry_cap_s``.
    :param batch_rows: most journal rows in one group commit.
    :param commit_interval_s: while journal rows keep coming (some were queued while the last group commit
        was in flight), a group commit starts at most this often; otherwise at once (a closure on a quiet
        stream, or the first after a pause, waits for nothing).  Every commit costs this process about
        0.2–0.5 ms of CPU whatever its size (a socket send and receive, the statement, the wake-ups), so on a
        busy stream fewer, larger batches keep the stream's rate up and steady (issue 17: 60–500 commits for
        the same 1,200 rows at 1 ms, by how fast the database happened to answer; about 50 at 4 ms).
    """

    def __init__(self, pm: pluggy.PluginManager, venue: str, *, write_rows: WriteRows | None = None,
                 limit: int = 10_000, retry_s: float = 0.2, retry_cap_s: float = 5.0, batch_rows: int = 500,
                 commit_interval_s: float = 0.004) -> None:
        self.pm = pm
        self.venue = venue
        self.write_rows = write_rows
        self.limit = limit
        self.retry_s = retry_s
        self.retry_cap_s = retry_cap_s
        self.batch_rows = batch_rows
        self.commit_interval_s = commit_interval_s
        self._queue: deque[_Queued] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        # the stream's announcements (``after``), run in order by their own task so that a listener may await
        # writes of its own (close another symbol) without waiting on the drainer that would write them
        self._announcing: deque[tuple[After, bool]] = deque()
        self._announcer: asyncio.Task[None] | None = None
        self._announce_queued = 0
        self._announce_done = 0
        self._announce_progress = asyncio.Event()
        self._degraded = False  # a write failed and the queue has not been replayed whole since
        self.failed_attempts = 0
        self.dropped = 0
        self._last_batch = float("-inf")  # loop time the last group commit started
        self.batches = 0  # group commits of journal rows
        self.batched_rows = 0
        self.fenced = 0  # writes the database refused: stale lease epoch

    @property
    def pending(self) -> int:
        """Writes waiting for the database."""
        return len(self._queue)

    async def write(self, what: str, op: Write) -> bool:
        """Run ``op`` now, or queue it behind earlier writes that are still waiting.

        :param what: a short description for logs and alerts (``open XRP/USDT:USDT``).
        :returns: ``True`` when written (now, or after the writes queued before it), ``False`` when queued
            for replay (the database is unreachable) or dropped past the limit.
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
                await self._degrade(what, exc)
        item = await self._enqueue(_Queued(what, op, None, None))
        return await item.done if item is not None else False

    async def journal(self, what: str, row: JournalRow, after: After, *, wait: bool) -> None:
        """Queue a journal row for the next group commit; ``after(persisted)`` runs once its batch committed
        (``True``) or failed (``False``: queued for replay), after the announcements queued before it.

        :param what: a short description for logs and alerts (``close XRP/USDT:USDT (manual)``).
        :param wait: return only once ``after`` ran (it runs in this task).  ``False`` (the stream): return at
            once, so rows batch up; ``after`` runs in the announcer task, in queue order.
        """
        if not self._degraded and len(self._queue) >= 2 * self.batch_rows:  # back-pressure on a fast stream
            await asyncio.shield(self._queue[0].done)
        item = await self._enqueue(_Queued(what, None, row, None if wait else after))
        if not wait:
            if item is None:  # dropped: announced all the same, as not persisted
                self._announce(after, False)
            return
        persisted = await asyncio.shield(item.done) if item is not None else False
        await self._caught_up()
        await after(persisted)

    def _announce(self, after: After, persisted: bool) -> None:
        self._announcing.append((after, persisted))
        self._announce_queued += 1
        self._drained.clear()
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.create_task(self._announce_all(), name=f"journal-announcer-{self.venue}")

    async def _announce_all(self) -> None:
        while self._announcing:
            after, persisted = self._announcing[0]
            try:
                await after(persisted)
            except Exception:  # a broadcast never stops the journal
                log.exception("%s: announcing a journal row failed", self.venue)
            self._announcing.popleft()
            self._announce_done += 1
            self._announce_progress.set()
        self._check_drained()

    async def _caught_up(self) -> None:
        """Wait until the announcements queued so far ran (not from the announcer itself: a listener's own
        write must not wait for the listener)."""
        target = self._announce_queued
        if asyncio.current_task() is self._announcer:
            return
        while self._announce_done < target:
            self._announce_progress.clear()
            await self._announce_progress.wait()

    def _check_drained(self) -> None:
        if not self._queue and not self._announcing:
            self._drained.set()

    async def _degrade(self, what: str, exc: Exception) -> None:
        if not self._degraded:
            self._degraded = True
            await alert(self.pm, "critical", f"database write failed, queued for replay ({what}): {exc!r}",
                        venue=self.venue)

    async def _enqueue(self, item: _Queued) -> _Queued | None:
        if len(self._queue) >= self.limit:
            self.dropped += 1
            log.error("%s: write-behind queue full (%d), dropped: %s", self.venue, self.limit, item.what)
            if self.dropped == 1:
                await alert(self.pm, "critical", f"write-behind queue full ({self.limit}): database writes are "
                            "being dropped until it returns", venue=self.venue)
            return None
        self._queue.append(item)
        self._drained.clear()
        if self._degraded:  # the database is down: announce now, write on replay
            self._settle(item, False)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=f"write-behind-{self.venue}")
        return item

    def _settle(self, item: _Queued, persisted: bool) -> None:
        """The first attempt of ``item`` is over: resolve it and queue its announcement (if the stream's)."""
        if item.done.done():
            return
        if item.after is not None:
            self._announce(item.after, persisted)
        item.done.set_result(persisted)

    def _next_batch(self) -> list[_Queued]:
        head = self._queue[0]
        if head.row is None:
            return [head]
        batch: list[_Queued] = []
        for item in self._queue:
            if item.row is None or len(batch) >= self.batch_rows:
                break
            batch.append(item)
        return batch

    async def _drain(self) -> None:
        pause = self.retry_s
        busy = False  # rows were queued behind the last group commit while it was in flight
        while self._queue:
            if (busy and self._queue[0].row is not None and self.commit_interval_s > 0
                    and len(self._queue) < self.batch_rows):  # a full batch goes at once
                wait = self._last_batch + self.commit_interval_s - asyncio.get_running_loop().time()
                if wait > 0:  # rows keep coming: let them gather (a row after a lone commit goes at once)
                    await asyncio.sleep(wait)
            batch = self._next_batch()
            if batch[0].row is not None:
                self._last_batch = asyncio.get_running_loop().time()
            try:
                if batch[0].op is not None:
                    await batch[0].op()
                else:
                    assert self.write_rows is not None, "journal rows need write_rows"
                    await self.write_rows([item.row for item in batch if item.row is not None])
                    self.batches += 1
                    self.batched_rows += len(batch)
            except Exception as exc:
                if is_fenced(exc):  # never to be accepted: replaying it would only block the queue
                    for item in batch:
                        self._queue.popleft()
                        self._settle(item, False)
                    await self._refused(batch[0].what, exc)
                    continue
                self.failed_attempts += 1
                await self._degrade(batch[0].what, exc)
                log.warning("%s: write of %s failed (%d queued), retrying in %.1f s: %s", self.venue, batch[0].what,
                            len(self._queue), pause, exc)
                for item in list(self._queue):  # announced now as not persisted; written on replay
                    self._settle(item, False)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.retry_cap_s)
                continue
            for _ in batch:
                self._queue.popleft()
            busy = batch[0].row is not None and bool(self._queue)
            pause = self.retry_s
            for item in batch:
                self._settle(item, True)
            if not self._queue and self._degraded:
                self._degraded = False
                await alert(self.pm, "info", "database back: every queued write replayed", venue=self.venue)
        self._check_drained()

    async def announced(self) -> None:
        """Return once every write queued so far had its first attempt and its ``after`` ran (a closure the
        stream queued has been announced, persisted or not)."""
        if self._queue:
            await asyncio.shield(self._queue[-1].done)
        await self._caught_up()

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
        for task in (self._drainer, self._announcer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for item in self._queue:
            log.error("%s: not persisted at shutdown: %s", self.venue, item.what)
            if not item.done.done():
                item.done.set_result(False)
