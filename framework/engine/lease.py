"""Leases: this instance manages a (venue, account) only while it holds that account's lease.

A :class:`LeaseKeeper` takes the lease (``framework.store.leases``) or waits for it as a standby,
renews it every ``ttl_s / 3`` and answers, before every venue action that changes state, whether the
instance may still act (:meth:`LeaseKeeper.check`).  The answer is local and conservative: the lease is
taken as valid until ``ttl_s`` after the *send* time of the last successful renewal (the database set its
expiry later than that), less ``margin_s``: the longest a request signed now can still be accepted by the
venue (its receive window plus the clock skew allowed).  A paused process (SIGSTOP, a long GC, a frozen VM)
finds its monotonic clock past that point when it resumes and does nothing; its database writes carry the
old epoch and the database refuses them anyway (``0003_leases.sql``).

Two checks use it.  :class:`GuardedDriver` is the driver the engine's parts act through: every
state-changing call checks the lease first (reads — snapshots, streams, order lookups — stay allowed: a
standby may look).  And the keeper is the driver's :class:`~framework.driverkit.RequestFence`
(``DriverConfig.fence``): its transport signs with a receive window of :attr:`LeaseKeeper.recv_window_ms`
and calls :meth:`LeaseKeeper.admit` after signing each request that can change the account, so a request
that was checked, then paused, is refused by the venue before another instance can hold the lease
(docs/scaling.md, "Fencing a request in flight").
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from framework.driver import Driver
from framework.errors import LeaseLost, RequestFenced
from framework.store import Store
from framework.store import leases as rows

log = logging.getLogger(__name__)

#: Driver methods that change state on the venue: each checks the lease first.
ACTING_METHODS = frozenset({"create_entry", "set_stop_loss", "set_take_profit", "move_stop_loss",
                            "set_trailing_stop", "cancel_stop_loss", "create_stop_loss_order", "close_position"})
#: Driver methods that only read, connect or describe: allowed without the lease (a standby looks).
READING_METHODS = frozenset({"connect", "disconnect", "normalize_order", "verify_position", "fetch_order",
                             "fetch_snapshot", "run_stream", "watch_mark_prices", "make_decoder", "venue_harness",
                             "supports", "native_trailing_fits", "paused_for_ms", "rate_limit_pause", "market_limits"})


#: the smallest receive window a lease may leave (a request must reach the venue within it)
MIN_RECV_WINDOW_MS = 500


def instance_id() -> str:
    """This process's owner id in lease rows: host, pid and a random part (a restarted process is a new
    owner, so it takes the next epoch)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class LeaseKeeper:
    """The lease of one (venue, account) for this instance.

    :param store: the shared database; on acquisition its writes for the account carry the new epoch.
    :param ttl_s: lease length; renewed every ``ttl_s / 3``; a standby tries every ``poll_s``.
    :param margin_s: the longest a signed request may stay acceptable to the venue: nothing is signed and sent
        later than this before the lease's local end (default ``ttl_s * 2 / 5``: 2 s of a 5 s lease, 4 s of
        the default 10 s; renewals every ``ttl_s / 3`` keep at least ``ttl_s * 2 / 3`` of it ahead).
    :param skew_s: how far the clock the driver signs with may be ahead of the venue's (default 1 s: the
        most either venue accepts, "timestamp < server time + 1000 ms"); the receive window is what is left
        of ``margin_s``.
    :ivar state: ``standby`` (another instance holds it, or not tried yet), ``owner`` or ``lost``.
    :ivar takeovers: acquisitions after the first (this instance took the account over).
    :raises ValueError: ``ttl_s`` not above 0, or ``margin_s - skew_s`` below :data:`MIN_RECV_WINDOW_MS`.
    """

    def __init__(self, store: Store, venue: str, account: str, owner: str, ttl_s: float = 10.0, *,
                 poll_s: float | None = None, margin_s: float | None = None, skew_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be above 0")
        self.store, self.venue, self.account, self.owner = store, venue, account, owner
        self.ttl_s = ttl_s
        self.poll_s = poll_s if poll_s is not None else ttl_s / 10
        self.margin_s = margin_s if margin_s is not None else ttl_s * 2 / 5
        self.skew_s = skew_s
        if self.recv_window_ms < MIN_RECV_WINDOW_MS:
            raise ValueError(f"a {ttl_s} s lease leaves a receive window of {self.recv_window_ms} ms (margin "
                             f"{self.margin_s} s less {skew_s} s of clock skew); at least {MIN_RECV_WINDOW_MS} ms "
                             "needed: use a longer lease")
        self.clock = clock
        self.state = "standby"
        self.epoch: int | None = None
        self.valid_until = 0.0  # clock() value: the lease's local end
        self.acquisitions = 0
        self.lost_reason = ""

    @property
    def takeovers(self) -> int:
        return max(0, self.acquisitions - 1)

    def holds(self) -> bool:
        """Whether this instance may act now (owner, and the lease is locally valid beyond ``margin_s``)."""
        return self.state == "owner" and self.clock() < self.valid_until - self.margin_s

    def check(self) -> None:
        """:raises LeaseLost: this instance may not act on the account now."""
        if not self.holds():
            raise LeaseLost(f"not the owner of account {self.account!r}: {self._why()}", venue=self.venue)

    def _why(self) -> str:
        return self.lost_reason or ("standby" if self.state == "standby" else "lease not renewed in time")

    @property
    def recv_window_ms(self) -> int:
        """The receive window the driver signs with: ``margin_s`` less ``skew_s``, in ms."""
        return int((self.margin_s - self.skew_s) * 1000)

    def admit(self) -> None:
        """The transport's check, after a request that can change the account was signed and before it is sent
        (:func:`framework.driverkit.fence_requests`): the venue accepts it until at most ``recv_window_ms`` +
        ``skew_s`` after now, which must not reach beyond the lease's local end.

        :raises RequestFenced: it could; nothing is sent.
        """
        if not self.holds():
            raise RequestFenced(f"request not sent: it could outlive the lease of account {self.account!r} "
                                f"({self._why()})", venue=self.venue)

    async def try_acquire(self) -> bool:
        """One attempt to take the lease.  :returns: whether this instance is the owner now."""
        sent = self.clock()
        epoch = await rows.acquire(self.store.pool, self.venue, self.account, self.owner, self.ttl_s)
        if epoch is None:
            return False
        self.store.fence(self.account, self.venue, epoch)
        self.epoch, self.valid_until, self.state, self.lost_reason = epoch, sent + self.ttl_s, "owner", ""
        self.acquisitions += 1
        return True

    async def wait_acquired(self) -> int:
        """Wait as a standby until the lease is ours (a database error is logged and tried again).

        :returns: the epoch acquired.
        """
        self.state = "standby"
        while True:
            try:
                if await self.try_acquire():
                    assert self.epoch is not None
                    return self.epoch
            except Exception as exc:  # the database is unreachable: a standby just keeps trying
                log.warning("%s %s: lease not acquired: %s", self.venue, self.account, exc)
            await asyncio.sleep(self.poll_s)  # the lease's schedule: expiry is a time, not an event

    async def keep(self) -> str:
        """Renew every ``ttl_s / 3`` while the lease is ours; return (the reason) when it is not any more:
        another owner took it, or it could not be renewed before its local end (database unreachable)."""
        while True:
            await asyncio.sleep(self.ttl_s / 3)  # the heartbeat's schedule
            sent = self.clock()
            assert self.epoch is not None
            try:
                remaining = max(0.1, self.valid_until - sent)
                renewed = await asyncio.wait_for(
                    rows.renew(self.store.pool, self.venue, self.account, self.owner, self.epoch, self.ttl_s),
                    remaining)
            except Exception as exc:  # unreachable: the lease may still be ours until its local end
                log.warning("%s %s: lease renewal failed: %r", self.venue, self.account, exc)
                if self.clock() >= self.valid_until - self.margin_s:
                    return self._lose(f"could not renew the lease ({exc!r})")
                continue
            if not renewed:
                return self._lose("the lease expired or another instance took it")
            self.valid_until = sent + self.ttl_s

    def _lose(self, reason: str) -> str:
        self.state, self.lost_reason = "lost", reason
        return reason

    async def release(self) -> None:
        """Give the lease up (clean stop): a standby takes over at its next try, not at expiry."""
        if self.state == "owner" and self.epoch is not None:
            try:
                await rows.release(self.store.pool, self.venue, self.account, self.owner, self.epoch)
            except Exception as exc:  # it expires by itself
                log.warning("%s %s: lease not released: %s", self.venue, self.account, exc)
        self.state = "standby"

    def describe(self) -> dict[str, Any]:
        """``{"state", "owner", "epoch", "ttl_s"}`` for health and reports."""
        return {"state": self.state if self.state != "owner" or self.holds() else "expiring",
                "owner": self.owner, "epoch": self.epoch, "ttl_s": self.ttl_s}


class GuardedDriver:
    """A driver whose state-changing calls (:data:`ACTING_METHODS`) first check the lease; everything
    else is the wrapped driver's.  Built with :func:`guarded`."""

    def __init__(self, driver: Driver, lease: LeaseKeeper) -> None:
        self._driver = driver
        self._lease = lease

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._driver, name)
        if name not in ACTING_METHODS:
            return attribute
        lease = self._lease

        async def acting(*args: Any, **kwargs: Any) -> Any:
            lease.check()
            return await attribute(*args, **kwargs)

        return acting

    def __repr__(self) -> str:
        return f"Guarded({self._driver!r})"


def guarded(driver: Driver, lease: LeaseKeeper | None) -> Driver:
    """``driver`` acting only while ``lease`` holds (``lease`` ``None``: the driver itself)."""
    return driver if lease is None else cast(Driver, GuardedDriver(driver, lease))
