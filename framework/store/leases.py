"""Lease rows: one owner per (venue, account), renewed by heartbeat, fenced by epoch.

Schema and the fencing trigger: ``migrations/0003_leases.sql``.  Expiry is decided by the database's
clock (``now()``), so instances on several machines never compare their own clocks; the epoch grows by
one at every change of owner and every row the owner writes carries it (``Store.fence``).
"""

from __future__ import annotations

import asyncpg

from framework.store.database import Connection

#: SQLSTATE the fencing trigger raises for a write with a stale epoch
FENCED_SQLSTATE = "FW409"


def is_fenced(exc: BaseException | None) -> bool:
    """Whether ``exc`` is the database refusing a write from a stale lease epoch."""
    return isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", None) == FENCED_SQLSTATE


async def acquire(conn: Connection | asyncpg.Pool, venue: str, account: str, owner: str,
                  ttl_s: float) -> int | None:
    """Take the lease of ``account`` on ``venue`` for ``ttl_s`` seconds when it is free or expired.

    One statement: of several instances trying at once, exactly one wins.  A new owner gets the next
    epoch; the same owner with its lease still valid keeps its epoch (a repeated call is harmless).

    :returns: the epoch now held, ``None`` when another owner holds an unexpired lease.
    """
    epoch = await conn.fetchval(
        """INSERT INTO leases AS l (venue, account, owner, epoch, expires_at, acquired_at, renewed_at)
           VALUES ($1, $2, $3, 1, now() + make_interval(secs => $4), now(), now())
           ON CONFLICT (venue, account) DO UPDATE SET
               owner = EXCLUDED.owner,
               epoch = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > now() THEN l.epoch
                            ELSE l.epoch + 1 END,
               acquired_at = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > now() THEN l.acquired_at
                                  ELSE now() END,
               expires_at = EXCLUDED.expires_at, renewed_at = now()
           WHERE l.owner = EXCLUDED.owner OR l.expires_at <= now()
           RETURNING epoch""",
        venue, account, owner, ttl_s,
    )
    return None if epoch is None else int(epoch)


async def renew(conn: Connection | asyncpg.Pool, venue: str, account: str, owner: str, epoch: int,
                ttl_s: float) -> bool:
    """Extend a lease this owner holds at ``epoch`` and that has not expired yet.

    :returns: ``False`` when the lease expired or changed hands (the caller must stop acting).
    """
    renewed = await conn.fetchval(
        """UPDATE leases SET expires_at = now() + make_interval(secs => $5), renewed_at = now()
           WHERE venue = $1 AND account = $2 AND owner = $3 AND epoch = $4 AND expires_at > now()
           RETURNING epoch""",
        venue, account, owner, epoch, ttl_s,
    )
    return renewed is not None


async def release(conn: Connection | asyncpg.Pool, venue: str, account: str, owner: str, epoch: int) -> bool:
    """Give the lease up at once (a clean stop), so a standby takes over without waiting for expiry.

    :returns: ``False`` when it was no longer ours.
    """
    released = await conn.fetchval(
        """UPDATE leases SET expires_at = now() WHERE venue = $1 AND account = $2 AND owner = $3 AND epoch = $4
           RETURNING epoch""",
        venue, account, owner, epoch,
    )
    return released is not None


async def holder(conn: Connection | asyncpg.Pool, venue: str, account: str) -> asyncpg.Record | None:
    """The lease row (owner, epoch, expires_at, ``valid``: not expired by the database's clock), or ``None``."""
    return await conn.fetchrow(
        "SELECT owner, epoch, expires_at, acquired_at, expires_at > now() AS valid FROM leases"
        " WHERE venue = $1 AND account = $2",
        venue, account,
    )
