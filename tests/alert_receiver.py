"""A local HTTP receiver for apprise's ``json://`` target: the alert tests read what a person would get."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

BOUND_S = 30.0  # generous upper bound for a condition to become true


class Receiver:
    """An aiohttp server that records every JSON body POSTed to it (apprise's ``json://`` target)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.refuse = 0  # answer this many next requests with HTTP 500 (apprise counts it a failed attempt)
        self.arrivals: list[float] = []  # time.monotonic() of every request, refused or not

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        if self.refuse > 0:
            self.refuse -= 1
            return web.json_response({"ok": False}, status=500)
        self.bodies.append(await request.json())
        self.changed.set()
        return web.json_response({"ok": True})

    async def wait_for(self, predicate: Any, timeout_s: float = BOUND_S) -> None:
        async def until() -> None:
            while not predicate(self.bodies):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(until(), timeout_s)


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{token}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield rec, f"json://127.0.0.1:{port}/hook/tok-SENTINEL"
    finally:
        await runner.cleanup()
