"""The HTTP API of ``framework run --http``: token, validation, idempotent signals, positions, health."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import pytest

from framework.app.http import from_tradingview
from framework.app.run import Run, RunOptions
from framework.errors import ConfigError
from framework.settings import Settings

TOKEN = "test-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPEN = {"venue": "binance", "symbol": "XRP/USDT:USDT", "action": "open", "side": "long", "contracts": "20",
        "stop_loss_pct": "2"}


@pytest.fixture
async def api(database_url):
    """A running ``framework run --plugins binance --http 0`` (emulated, no signal file): ``(run, url, client)``."""
    run = Run(RunOptions(plugins=["binance"], http_port=0, tui=False, speed=1),
              Settings(DATABASE_URL=database_url, FRAMEWORK_HTTP_TOKEN=TOKEN, FRAMEWORK_MAX_NOTIONAL="100000"))
    task = asyncio.create_task(run.execute())
    ready = asyncio.create_task(run.http_ready.wait())
    await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        task.cancel()
        raise AssertionError(f"the HTTP API did not start: {task.exception() if task.done() else 'timeout'}")
    async with aiohttp.ClientSession() as client:
        yield run, run.http_url, client
    run.stop_requested.set()
    await asyncio.wait_for(task, 60)


async def test_a_missing_or_wrong_token_is_401_and_openapi_is_public(api):
    run, url, client = api
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
        async with client.get(f"{url}/v1/positions", headers=headers) as response:
            assert response.status == 401
        async with client.post(f"{url}/v1/signals", json={**OPEN, "id": "a1"}, headers=headers) as response:
            assert response.status == 401
    assert await run.session.store.signal("a1") is None  # nothing recorded, nothing opened
    assert run.session.positions() == []
    async with client.get(f"{url}/v1/openapi.json") as response:
        spec = await response.json()
    assert spec["openapi"].startswith("3.1") and "/v1/signals" in spec["paths"]
    assert "id" in spec["components"]["schemas"]["SignalRequest"]["properties"]


async def test_an_invalid_signal_is_422_naming_the_field_and_nothing_is_recorded(api):
    run, url, client = api
    async with client.post(f"{url}/v1/signals", json={**OPEN, "side": "sideways", "id": "b1"},
                           headers=AUTH) as response:
        assert response.status == 422
        body = await response.json()
    assert [f["field"] for f in body["fields"]] == ["side"]
    async with client.post(f"{url}/v1/signals", json=OPEN, headers=AUTH) as response:
        assert response.status == 422
        assert [f["field"] for f in (await response.json())["fields"]] == ["id"]
    async with client.post(f"{url}/v1/signals", data=b"{not json", headers=AUTH) as response:
        assert response.status == 422
    assert await run.session.store.signal("b1") is None
    assert run.session.positions() == []


async def test_a_webhook_sent_twice_at_once_opens_one_position(api):
    run, url, client = api

    async def send() -> tuple[int, dict]:
        async with client.post(f"{url}/v1/signals", json={**OPEN, "id": "c1"}, headers=AUTH) as response:
            return response.status, await response.json()

    results = sorted(await asyncio.gather(send(), send()), key=lambda r: r[0])
    assert [status for status, _ in results] == [200, 201]
    assert results[0][1]["duplicate"] is True and results[1][1]["position"]["protected"] is True
    status, again = await send()  # a later retry answers what happened
    assert status == 200 and again["state"] == "done" and again["duplicate"] is True
    [position] = run.session.positions()
    assert position.contracts == Decimal(20) and position.side == "long"
    row = await run.session.store.signal("c1")
    assert row.state == "done" and row.source == "http"
    async with client.post(f"{url}/v1/signals", json={**OPEN, "id": "c1", "contracts": "30"},
                           headers=AUTH) as response:
        assert response.status == 409  # the same id for another signal: refused, not executed
    assert len(run.session.positions()) == 1


async def test_tradingview_alert_opens_a_short_then_close_health_and_positions(api):
    run, url, client = api
    alert = {"id": "tv-1", "exchange": "BINANCE", "ticker": "XRPUSDT.P", "action": "sell", "contracts": "15",
             "market_position": "short", "stop_loss_pct": "1.5", "take_profit_pct": "3"}
    async with client.post(f"{url}/v1/signals", json=alert, headers=AUTH) as response:
        assert response.status == 201, await response.text()
    async with client.get(f"{url}/v1/positions", headers=AUTH) as response:
        [position] = await response.json()
    assert (position["symbol"], position["side"], position["contracts"]) == ("XRP/USDT:USDT", "short", "15")
    assert Decimal(position["stop_loss"]) > Decimal(position["entry_price"]) > Decimal(position["take_profit"])
    async with client.get(f"{url}/v1/health", headers=AUTH) as response:
        health = (await response.json())["venues"]["binance"]
    assert health["stream"] == "connected" and health["open"] == 1 and health["unprotected"] == []
    assert health["last_reconciliation"]["at_ms"] > 0
    close_url = f"{url}/v1/positions/binance/XRP%2FUSDT%3AUSDT/close"
    async with client.post(close_url, headers=AUTH) as response:
        assert response.status == 200
    assert run.session.positions() == []
    async with client.post(close_url, headers=AUTH) as response:
        assert response.status == 404


async def test_a_signal_over_a_limit_is_409_persisted_as_rejected_and_a_failed_signal(api):
    run, url, client = api
    async with client.post(f"{url}/v1/signals", json={**OPEN, "id": "d1", "contracts": "1000000"},
                           headers=AUTH) as response:
        assert response.status == 409
        assert "max_notional" in (await response.json())["error"]
    row = await run.session.store.signal("d1")
    assert row.state == "rejected" and "max_notional" in row.result["error"]
    assert run.monitor.failed_signals[0]["type"] == "SignalRejected"
    assert run.session.positions() == []


def test_tradingview_mapping_flat_is_a_close_and_buy_is_a_long():
    assert from_tradingview({"exchange": "BYBIT", "ticker": "BTCUSDT", "action": "sell",
                             "market_position": "flat"}) == {"venue": "bybit", "symbol": "BTC/USDT:USDT",
                                                             "action": "close"}
    mapped = from_tradingview({"exchange": "BINANCE", "ticker": "BINANCE:XRPUSDT.P", "action": "buy",
                               "contracts": 5, "stop_loss": "1.1"})
    assert mapped == {"venue": "binance", "symbol": "XRP/USDT:USDT", "action": "open", "side": "long",
                      "contracts": 5, "stop_loss": "1.1"}


async def test_http_without_a_token_refuses_to_start(database_url):
    run = Run(RunOptions(plugins=["binance"], http_port=0, tui=False), Settings(DATABASE_URL=database_url))
    with pytest.raises(ConfigError, match="FRAMEWORK_HTTP_TOKEN"):
        await run.execute()
