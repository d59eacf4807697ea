"""Persistence: PostgreSQL through asyncpg (embedded ``pgserver`` when no ``DATABASE_URL``)."""

from framework.store.database import create_pool, database_url, embedded_server, migrate
from framework.store.repository import Store

__all__ = ["Store", "create_pool", "database_url", "embedded_server", "migrate"]
