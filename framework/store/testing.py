"""Fresh, migrated PostgreSQL databases for tests (the core's, the engine's and the contract suite's).

One server per test session: ``$DATABASE_URL`` when set (CI may point at any PostgreSQL ≥ 14), else an
embedded ``pgserver`` in a temporary directory.  Each test gets its own database, cloned from a
migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from framework.store.database import create_pool, embedded_server
from framework.store.repository import Store

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

TEMPLATE = "framework_test_template"


class TestDatabases:
    """Creates databases on one server; :meth:`create` returns the URL of a new migrated database."""

    __test__ = False  # not a pytest test class

    def __init__(self, server_url: str | None = None, *, embedded: bool = False) -> None:
        """:param embedded: an embedded server of its own even when ``$DATABASE_URL`` is set (a test
            that stops and restarts its server)."""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if server_url is None and not embedded:
            server_url = os.environ.get("DATABASE_URL")
        self._server: PostgresServer | None = None
        if server_url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="framework-pg-")
            self._pgdata = Path(self._tmp.name) / "pgdata"
            self._server = embedded_server(self._pgdata, cleanup_mode="delete")
            server_url = self._server.get_uri()
        self.server_url = server_url
        self._prefix = f"fwt_{uuid.uuid4().hex[:8]}"
        self._counter = itertools.count()
        self._template_ready = False
        self._created: list[str] = []

    def _url(self, database: str) -> str:
        base, _, query = self.server_url.partition("?")
        base = base.rsplit("/", 1)[0]
        return f"{base}/{database}" + (f"?{query}" if query else "")

    async def create(self) -> str:
        """A new, empty, migrated database; returns its URL."""
        admin = await asyncpg.connect(self.server_url)
        try:
            if not self._template_ready:
                if self._server is not None:
                    # A throwaway server: durability buys nothing and its fsyncs are what a loaded machine
                    # waits on (commits, CREATE DATABASE, the shutdown checkpoint).
                    for setting in ("fsync", "full_page_writes", "synchronous_commit"):
                        await admin.execute(f"ALTER SYSTEM SET {setting} = off")
                    await admin.execute("SELECT pg_reload_conf()")
                await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}_{self._prefix}")
                await admin.execute(f"CREATE DATABASE {TEMPLATE}_{self._prefix}")
                pool = await create_pool(self._url(f"{TEMPLATE}_{self._prefix}"), max_size=1)
                await pool.close()
                self._template_ready = True
            name = f"{self._prefix}_{next(self._counter)}"
            await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}_{self._prefix}")
            self._created.append(name)
        finally:
            await admin.close()
        return self._url(name)

    @contextlib.asynccontextmanager
    async def unreachable(self, url: str) -> AsyncIterator[None]:
        """A real outage of the database at ``url`` while the block runs: it refuses new connections and its
        open ones are cut (the server itself and the other tests' databases are untouched)."""
        name = url.partition("?")[0].rsplit("/", 1)[1]
        admin = await asyncpg.connect(self.server_url)
        try:
            await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            yield
        finally:
            await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            await admin.close()

    @contextlib.asynccontextmanager
    async def server_stopped(self) -> AsyncIterator[None]:
        """The embedded server process itself stopped while the block runs (connections refused), then
        started again on the same data directory and socket.

        :raises RuntimeError: the server is not this object's embedded one (``$DATABASE_URL``).
        """
        if self._server is None:
            raise RuntimeError("only an embedded test server can be stopped by a test")
        import pgserver

        server = self._server
        pg_ctl = pgserver.pg_ctl  # type: ignore[attr-defined]  # made at import time from its binaries
        await asyncio.to_thread(pg_ctl, ["-w", "-m", "fast", "stop"], pgdata=self._pgdata, user=server.system_user,
                                timeout=60)
        try:
            yield
        finally:
            await asyncio.to_thread(server.ensure_postgres_running)

    async def store(self) -> Store:
        """A :class:`Store` on a new database."""
        return await Store.open(await self.create(), max_size=5)

    async def drop_all(self) -> None:
        """Drop every database this object created."""
        admin = await asyncpg.connect(self.server_url)
        try:
            for name in [*self._created, f"{TEMPLATE}_{self._prefix}"]:
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()
        self._created.clear()

    async def release(self) -> None:
        """Drop what this object created on a server that outlives it ($DATABASE_URL), then :meth:`close`.
        An embedded server is deleted whole instead: one DROP DATABASE each (a checkpoint each) for
        hundreds of test databases outlasted a test's timeout on a loaded machine."""
        if self._server is None:
            await self.drop_all()
        self.close()

    def close(self) -> None:
        """Stop the embedded server (if we started one) and remove its directory."""
        if self._server is not None:
            # Its data is deleted next: an immediate stop skips the shutdown checkpoint, which under load can
            # outlast pg_ctl's own 60 s wait (seen beside two CPU burners).
            import pgserver

            with contextlib.suppress(subprocess.SubprocessError):
                pg_ctl = pgserver.pg_ctl  # type: ignore[attr-defined]  # made at import time from its binaries
                pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self._pgdata, user=self._server.system_user,
                       timeout=60)
            self._server.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()
