"""Fixtures of the contract suite (works under pytest-asyncio's strict and auto modes alike)."""

from __future__ import annotations

import asyncio

import pytest_asyncio

from contract_tests.support import Contract, open_contract
from framework.store.testing import TestDatabases


class PrefetchedDatabases:
    """Creates the next test's database while the current test runs (CREATE DATABASE takes ~0.3 s)."""

    def __init__(self, databases: TestDatabases) -> None:
        self.databases = databases
        self._next: asyncio.Task[str] | None = None

    async def create(self) -> str:
        url = await (self._next or asyncio.ensure_future(self.databases.create()))
        self._next = asyncio.ensure_future(self.databases.create())
        return url

    async def close(self) -> None:
        if self._next is not None:
            await asyncio.gather(self._next, return_exceptions=True)
        await self.databases.release()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def contract_databases():
    """One PostgreSQL server for the whole run ($DATABASE_URL or embedded); a fresh database per test."""
    databases = PrefetchedDatabases(TestDatabases())
    yield databases
    await databases.close()


@pytest_asyncio.fixture(loop_scope="session")
async def contract_unstarted(contract_plugin, contract_databases) -> Contract:
    """The plugin connected to its harness, the book on a fresh database; the stream not started yet."""
    contract, aclose = await open_contract(contract_plugin, contract_databases)
    try:
        yield contract
    finally:
        await aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def contract(contract_unstarted) -> Contract:
    """:func:`contract_unstarted` with the private stream running into the book and connected."""
    await contract_unstarted.start_stream()
    return contract_unstarted
