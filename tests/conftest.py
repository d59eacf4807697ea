"""Fixtures shared by the core's tests: a real PostgreSQL (embedded unless $DATABASE_URL is set)."""

from __future__ import annotations

import pytest

from framework.store.testing import TestDatabases


@pytest.fixture(scope="session")
async def databases():
    """One PostgreSQL server for the session; databases are created per test."""
    dbs = TestDatabases()
    yield dbs
    await dbs.release()


@pytest.fixture
async def store(databases):
    """A :class:`framework.store.Store` on a fresh, migrated database."""
    store = await databases.store()
    yield store
    await store.close()


@pytest.fixture
async def database_url(databases):
    """The URL of a fresh, migrated database."""
    return await databases.create()
