"""Where the database is, and bringing its schema up to date.

No ``DATABASE_URL`` → an embedded PostgreSQL (``pgserver``) whose data directory lives in the user's
state directory (``~/.local/state/framework/pgdata`` on Linux), so ``framework run`` works on a fresh
machine.  ``DATABASE_URL`` → any PostgreSQL ≥ 14.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import platformdirs

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

#: a connection or a pool's proxy of one (what ``pool.acquire()`` yields)
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

log = logging.getLogger(__name__)

MIGRATIONS_LOCK = 0x6672616D  # advisory lock id ("fram"): one migrator at a time


def state_dir() -> Path:
    """The framework's per-user state directory (created if missing)."""
    path = Path(os.environ.get("FRAMEWORK_STATE_DIR") or platformdirs.user_state_dir("framework"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def embedded_server(pgdata: Path | None = None, *, cleanup_mode: str | None = None) -> PostgresServer:
    """Start (or reuse) the embedded PostgreSQL server in ``pgdata`` and return its handle.

    :param cleanup_mode: pgserver's: ``None`` keeps the server running after this process exits (so the
        next ``framework run`` starts fast); ``"delete"`` stops it and removes ``pgdata`` (tests).
    :returns: a ``pgserver.PostgresServer``.
    """
    # imported lazily: it starts nothing on import, but pulls psutil & co. Its import asks platformdirs for a
    # runtime directory, which warns where XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pgserver.postgres_server import get_server

    pgdata = pgdata or state_dir() / "pgdata"
    log.info("embedded PostgreSQL in %s", pgdata)
    return get_server(pgdata, cleanup_mode=cleanup_mode)


def database_url(url: str | None = None) -> str:
    """``url``, else ``$DATABASE_URL``, else the embedded server's URL."""
    url = url or os.environ.get("DATABASE_URL")
    if url:
        return url
    return str(embedded_server().get_uri())


def migrations() -> list[tuple[int, str, str]]:
    """The packaged SQL migrations as ``(version, name, sql)``, in order."""
    folder = resources.files("framework.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(conn: Connection) -> list[int]:
    """Apply every migration newer than the database's version, each in its own transaction.

    :returns: the versions applied now (empty when already up to date).
    """
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("applied migration %s", name)
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK)


async def _init_connection(conn: Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """An asyncpg pool with ``jsonb`` mapped to Python objects, schema migrated."""
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, init=_init_connection)
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool
