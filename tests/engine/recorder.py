"""A lifecycle listener that records every broadcast, for assertions (a real plugin, not a mock)."""

from __future__ import annotations

from typing import Any

from contract_tests.support import Journal
from contract_tests.support import Recorder as ContractRecorder
from framework import hookimpl


class Recorder(ContractRecorder):
    """The contract suite's lifecycle recorder (``contract_tests.support``) with the engine tests' API:
    ``seen`` by hook name, ``wait_for(predicate(recorder))``, ``closed()`` / ``opened()`` for any symbol."""

    def __init__(self) -> None:
        super().__init__(Journal())

    @property
    def seen(self) -> dict[str, list[Any]]:
        return self.journal.hooks

    async def wait_for(self, predicate, timeout_s: float = 5.0) -> None:
        """Wait until ``predicate(self)`` holds; fail the test on timeout."""
        if not await self.journal.wait_for(lambda: predicate(self), timeout_s):
            raise TimeoutError(f"condition not met within {timeout_s} s; hooks seen: {dict(self.seen)}")

    def closed(self, symbol: str | None = None) -> list[Any]:
        return [e for e in self.seen["on_position_closed"] if symbol in (None, e.symbol)]

    def opened(self, symbol: str | None = None) -> list[Any]:
        return [e for e in self.seen["on_position_open"] if symbol in (None, e.symbol)]

    @hookimpl
    async def on_position_closed(self, event):  # an async listener on purpose: the engine must await it
        self._add("on_position_closed", event)


class Exploding:
    """A listener that raises on every position hook: must never break the close path."""

    @hookimpl
    def on_position_closed(self, event):
        raise RuntimeError("listener bug")

    @hookimpl
    async def on_position_open(self, event):
        raise RuntimeError("async listener bug")
