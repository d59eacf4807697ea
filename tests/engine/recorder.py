"""A lifecycle listener that records every broadcast, for assertions (a real plugin, not a mock)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from framework import hookimpl


class Recorder:
    """Registers on every lifecycle hook and keeps what it saw, with an event to wait on."""

    def __init__(self) -> None:
        self.seen: dict[str, list[Any]] = defaultdict(list)
        self._changed = asyncio.Event()

    def _add(self, hook: str, value: Any) -> None:
        self.seen[hook].append(value)
        self._changed.set()

    async def wait_for(self, predicate, timeout_s: float = 5.0) -> None:
        """Wait until ``predicate(self)`` holds; fail the test on timeout."""
        async with asyncio.timeout(timeout_s):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    def closed(self, symbol: str | None = None) -> list[Any]:
        return [e for e in self.seen["on_position_closed"] if symbol in (None, e.symbol)]

    def opened(self, symbol: str | None = None) -> list[Any]:
        return [e for e in self.seen["on_position_open"] if symbol in (None, e.symbol)]

    @hookimpl
    def on_order_submitted(self, intent):
        self._add("on_order_submitted", intent)

    @hookimpl
    def on_position_open(self, event):
        self._add("on_position_open", event)

    @hookimpl
    def on_position_updated(self, event):
        self._add("on_position_updated", event)

    @hookimpl
    async def on_position_closed(self, event):
        self._add("on_position_closed", event)

    @hookimpl
    def on_stop_moved(self, event):
        self._add("on_stop_moved", event)

    @hookimpl
    def on_stream_state(self, venue, state, detail):
        self._add("on_stream_state", (venue, state, detail))

    @hookimpl
    def on_reconciled(self, venue, report):
        self._add("on_reconciled", (venue, report))

    @hookimpl
    def on_alert(self, alert):
        self._add("on_alert", alert)


class Exploding:
    """A listener that raises on every position hook: must never break the close path."""

    @hookimpl
    def on_position_closed(self, event):
        raise RuntimeError("listener bug")

    @hookimpl
    async def on_position_open(self, event):
        raise RuntimeError("async listener bug")
