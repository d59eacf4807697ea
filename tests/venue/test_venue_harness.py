"""EmulatorHarness with a minimal loopback façade (the real ones live in the exchange plugins)."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import aiohttp
import pytest
from aiohttp import web

from framework.protocols import VenueHarness
from framework.venue import EmulatorHarness, Faults, MarkPriceEvent, Venue


class MarkFacade:
    """Serves ``GET /mark/{native id}`` from the venue over real HTTP on loopback."""

    instances: list[MarkFacade] = []

    def __init__(self, venue: Venue, host: str, port: int) -> None:
        self.venue, self.host, self.port = venue, host, port
        self.runner: web.AppRunner | None = None
        self.stopped = False
        MarkFacade.instances.append(self)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/mark/{id}", self.mark)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def mark(self, request: web.Request) -> web.Response:
        instrument = self.venue.instrument_by_id(request.match_info["id"])
        return web.json_response({"markPrice": str(self.venue.mark_price(instrument.symbol))})

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        self.stopped = True


async def test_harness_starts_the_facade_on_real_prices_and_stops_it():
    harness = EmulatorHarness(
        "binance",
        MarkFacade,
        {"api_key": "key", "api_secret": "s3cr3t-value", "faults": "rest_position_lag_ms=2000", "seed": 3},
    )
    assert isinstance(harness, VenueHarness)
    async with harness:
        assert harness.symbol == "XRP/USDT:USDT"
        assert harness.venue.faults.rest_position_lag_ms == 2000
        assert harness.venue.account_for_key("key") == "default"
        config = harness.config
        assert config.api_key.get_secret_value() == "key" and "s3cr3t" not in repr(config)
        assert config.rest_url == harness.emulator.rest_url and config.ws_url.startswith("ws://127.0.0.1:")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{config.rest_url}/mark/XRPUSDT") as response:
                assert (await response.json()) == {"markPrice": "1.1893"}  # the first real candle's open
        assert harness.venue.mark_price("BTC/USDT:USDT") == D("39432.48")
        assert harness.replayer is None
    assert harness.emulator.stopped


async def test_harness_replays_prices_at_speed_and_generates_keys():
    harness = EmulatorHarness("bybit", MarkFacade, {"speed": 1000, "faults": Faults(drop_rate=0.5)})
    async with harness:
        moved = asyncio.Event()
        harness.venue.subscribe(lambda e: moved.set() if isinstance(e, MarkPriceEvent) else None)
        await asyncio.wait_for(moved.wait(), timeout=5)
        assert harness.replayer is not None and harness.replayer.steps > 0
        assert harness.venue.faults.drop_rate == 0.5
        assert len(harness.config.api_key.get_secret_value()) >= 16
        task = harness._replay_task
    assert task is not None and task.done()
    assert harness.emulator.stopped


def test_bad_faults_fail_before_anything_starts():
    with pytest.raises(ValueError, match="drop_ratio"):
        EmulatorHarness("binance", MarkFacade, {"faults": "drop_ratio=0.1"})
