"""Persistence: PostgreSQL through asyncpg (embedded ``pgserver`` when no ``DATABASE_URL``)."""

from framework.store.database import create_pool, database_url, embedded_server, migrate
from framework.store.repository import Store
from framework.store.rows import EventRow, OrderRow, PositionRow, SignalRow, StopRow

__all__ = [
    "EventRow", "OrderRow", "PositionRow", "SignalRow", "StopRow", "Store", "create_pool", "database_url",
    "embedded_server", "migrate",
]
