"""``framework run`` on the live path: keys and ``<PLUGIN>_REST_URL`` / ``<PLUGIN>_WS_URL`` pointing at
``framework venue`` processes, driven exactly like a real venue (no harness, no ground truth), with the
live-mode safety rules: ``--live`` required, no demo, no loop, client-side limits."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from decimal import Decimal

import aiohttp
import pytest
from pydantic import SecretStr

from framework.errors import ConfigError
from framework.models import DriverConfig
from framework.settings import Settings
from tests.app.processes import BOUND_S, read_until, start_venue, stop

KEY, SECRET = "k" * 16, "s" * 32


@pytest.fixture
async def venues():
    """``{"binance": info, "bybit": info}``: two emulated venues, each in its own process."""
    started = [await start_venue(name, KEY, SECRET) for name in ("binance", "bybit")]
    yield {info["venue"]: info for _, info in started}
    for process, _ in started:
        await stop(process)


def live_env(database_url: str, venues: dict, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "BYBIT_", "FRAMEWORK_"))}
    env["DATABASE_URL"] = database_url
    for name, info in venues.items():
        prefix = name.upper()
        env.update({f"{prefix}_API_KEY": KEY, f"{prefix}_API_SECRET": SECRET,
                    f"{prefix}_REST_URL": info["rest_url"], f"{prefix}_WS_URL": info["ws_url"]})
    env.update(extra)
    return env


async def framework_run(env: dict[str, str], *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", "run", *args, env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 120)
    return process.returncode, out.decode(), err.decode()


def signal_file(tmp_path, *lines: dict) -> str:
    path = tmp_path / "signals.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


OPEN = {"symbol": "XRP/USDT:USDT", "action": "open", "side": "long", "contracts": "20", "stop_loss_pct": "2"}


async def test_a_live_run_refuses_to_start_without_live(venues, database_url, tmp_path):
    code, out, err = await framework_run(live_env(database_url, venues), "--plugins", "binance,bybit",
                                         "--duration", "5", "--no-tui")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--live" in lines[0] and "binance" in lines[0], err
    assert "Traceback" not in err


async def test_a_live_run_executes_the_signal_file_once_and_reports(venues, database_url, tmp_path):
    signals = signal_file(
        tmp_path,
        {**OPEN, "venue": "binance", "at_ms": 0}, {**OPEN, "venue": "bybit", "at_ms": 0, "side": "short"},
        {"venue": "binance", "symbol": "XRP/USDT:USDT", "action": "close", "at_ms": 3000},
        {"venue": "bybit", "symbol": "XRP/USDT:USDT", "action": "close", "at_ms": 3000},
    )
    report_path = tmp_path / "r.json"
    # 10 s: a looped file (period 3 s + 5 s) would open again at 8 s
    code, out, err = await framework_run(live_env(database_url, venues), "--plugins", "binance,bybit", "--live",
                                         "--signals", signals, "--duration", "10", "--no-tui",
                                         "--report", str(report_path))
    assert code == 0, err
    assert f"LIVE binance account default mainnet endpoint {venues['binance']['rest_url']}" in err
    assert "LIVE bybit account default mainnet" in err
    report = json.loads(report_path.read_text())
    assert report["mode"] == "live"
    for venue in ("binance", "bybit"):
        assert report["venues"][venue] == {"opened": 1, "closed": 1, "open": 0, "mode": "live"}, report
    assert report["closures_by_reason"] == {"reduce_only_close": 2}
    assert report["failed_signals"] == [] and report["errors"] == []
    assert report["open_positions"] == []
    assert report["stream_states"] == {"binance": "connected", "bybit": "connected"}
    assert report["rest_calls"] == {}  # no harness: nothing but the wire
    assert report["orphans"] == 0  # from a last snapshot of each venue
    assert "left open: 0 position(s)" in err


async def test_a_signal_over_max_notional_is_rejected_before_the_venue(venues, database_url, tmp_path):
    signals = signal_file(tmp_path, {**OPEN, "venue": "binance", "contracts": "1000"})
    report_path = tmp_path / "r.json"
    env = live_env(database_url, {"binance": venues["binance"]}, FRAMEWORK_MAX_NOTIONAL="10")
    code, out, err = await framework_run(env, "--plugins", "binance", "--live", "--signals", signals,
                                         "--duration", "4", "--no-tui", "--report", str(report_path))
    assert code == 1  # a failed signal is an error
    report = json.loads(report_path.read_text())
    [failed] = report["failed_signals"]
    assert "max_notional 10 USDT" in failed["error"] and failed["type"] == "SignalRejected"
    assert report["positions"]["opened"] == 0
    assert "failed signals: 1" in err
    # Nothing reached the venue: no position, no resting order, no fee taken from the balance.
    from framework_binance.rest import make_exchange

    exchange = make_exchange(DriverConfig(api_key=SecretStr(KEY), api_secret=SecretStr(SECRET),
                                          rest_url=venues["binance"]["rest_url"]))
    try:
        positions = await exchange.fetch_positions(["XRP/USDT:USDT"])
        assert all(not p["contracts"] for p in positions)
        assert await exchange.fetch_open_orders("XRP/USDT:USDT") == []
        balance = await exchange.fetch_balance()
        assert Decimal(str(balance["USDT"]["total"])) == Decimal(10000)
    finally:
        await exchange.close()


# --- settings: the variables that make a plugin live ---------------------------------------------------


def test_a_key_without_its_secret_is_an_error_naming_the_variable():
    with pytest.raises(ConfigError, match="BINANCE_API_KEY is set but BINANCE_API_SECRET is not"):
        Settings(BINANCE_API_KEY="k").live_config("binance")
    with pytest.raises(ConfigError, match="BYBIT_API_SECRET is set but BYBIT_API_KEY is not"):
        Settings(BYBIT_API_SECRET="s").live_config("bybit")


def test_an_endpoint_needs_both_urls_and_keys():
    with pytest.raises(ConfigError, match="BINANCE_REST_URL is set but BINANCE_WS_URL is not"):
        Settings(BINANCE_API_KEY="k", BINANCE_API_SECRET="s", BINANCE_REST_URL="http://127.0.0.1:1").live_config(
            "binance")
    with pytest.raises(ConfigError, match="BYBIT_REST_URL is set but BYBIT_API_KEY"):
        Settings(BYBIT_REST_URL="http://127.0.0.1:1", BYBIT_WS_URL="ws://127.0.0.1:1").live_config("bybit")


def test_a_third_party_plugin_reads_its_own_variables_and_no_secret_shows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("OKX_API_KEY=sentinel-key\nOKX_API_SECRET=sentinel-secret\n"
                                   "OKX_REST_URL=http://127.0.0.1:9\nOKX_WS_URL=ws://127.0.0.1:9\n")
    settings = Settings()
    config = settings.live_config("okx")
    assert config.api_key.get_secret_value() == "sentinel-key" and config.rest_url == "http://127.0.0.1:9"
    assert "sentinel" not in repr(settings) + str(settings) + repr(config)
    assert settings.warn_unused_keys(["okx", "binance"], ["binance"]) == [
        "OKX_API_KEY is set but plugin 'okx' is not loaded: its keys are unused"]


# --- streaming signals and what the run leaves ---------------------------------------------------------


async def test_stdin_signals_act_as_they_arrive_and_ctrl_c_reports_what_is_left(venues, database_url, tmp_path):
    report_path = tmp_path / "r.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", "run", "--plugins", "binance,bybit", "--live", "--signals", "-",
        "--no-tui", "--report", str(report_path), env=live_env(database_url, venues),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await read_until(process.stderr, "LIVE bybit")
        process.stdin.write((json.dumps({**OPEN, "venue": "binance"}) + "\n").encode())
        await process.stdin.drain()
        await read_until(process.stderr, "opened binance XRP/USDT:USDT long 20")
        process.stdin.write((json.dumps({**OPEN, "venue": "bybit", "side": "short"}) + "\n"
                             + "not json\n").encode())
        await process.stdin.drain()
        await read_until(process.stderr, "opened bybit XRP/USDT:USDT short 20")
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), BOUND_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 1  # the malformed line is a failed signal
    err = err.decode()
    assert "left open: 2 position(s)" in err
    assert "failed signals: 1" in err and "stdin:3: invalid signal" in err
    report = json.loads(report_path.read_text())
    assert report["positions"] == {"opened": 2, "closed": 0, "open": 2}
    assert report["orphans"] == 0
    by_venue = {p["venue"]: p for p in report["open_positions"]}
    assert by_venue["binance"]["side"] == "long" and by_venue["bybit"]["side"] == "short"
    for position in by_venue.values():  # protected: the venue lists a stop for it
        assert position["protected"] is True and position["stop_loss"] is not None
        assert position["contracts"] == "20"
    long, short = by_venue["binance"], by_venue["bybit"]  # each stop on its losing side
    assert Decimal(long["stop_loss"]) < Decimal(long["entry_price"])
    assert Decimal(short["stop_loss"]) > Decimal(short["entry_price"])


async def test_live_signals_by_http_retried_webhook_and_stdin_each_open_one_protected_position(
        venues, database_url, tmp_path):
    report_path = tmp_path / "r.json"
    env = live_env(database_url, venues, FRAMEWORK_HTTP_TOKEN="tok-123")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", "run", "--plugins", "binance,bybit", "--live", "--signals", "-",
        "--http", "0", "--no-tui", "--report", str(report_path), env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    auth = {"Authorization": "Bearer tok-123"}
    try:
        seen = await read_until(process.stderr, "HTTP API on ")
        url = seen.rsplit("HTTP API on ", 1)[1].split()[0]
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{url}/v1/positions", headers=auth) as response:
                assert await response.json() == []  # nothing opens until a signal arrives

            async def webhook() -> int:
                async with client.post(f"{url}/v1/signals", json={**OPEN, "venue": "binance", "id": "w-1"},
                                       headers=auth) as response:
                    return response.status

            assert sorted(await asyncio.gather(webhook(), webhook())) == [200, 201]
            process.stdin.write((json.dumps({**OPEN, "venue": "bybit", "side": "short"}) + "\n").encode())
            await process.stdin.drain()
            await read_until(process.stderr, "opened bybit XRP/USDT:USDT short 20")
            async with client.get(f"{url}/v1/health", headers=auth) as response:
                health = (await response.json())["venues"]
            assert {v: (h["mode"], h["open"], h["unprotected"]) for v, h in health.items()} == {
                "binance": ("live", 1, []), "bybit": ("live", 1, [])}
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.communicate(), BOUND_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    report = json.loads(report_path.read_text())
    assert report["positions"] == {"opened": 2, "closed": 0, "open": 2}
    assert all(p["protected"] for p in report["open_positions"])


async def test_the_python_api_drives_a_live_venue(venues, database_url):
    from framework import Session

    settings = Settings(**live_env(database_url, {"binance": venues["binance"]}))
    async with Session(["binance"], settings=settings, live=True) as session:
        assert session.harnesses == {} and set(session.live_venues) == {"binance"}
        assert session.positions() == []
        position = await session.open("binance", "XRP/USDT:USDT", "short", 20, stop_loss_pct=2)
        assert position.protected and position.account == "default"
        assert [p.symbol for p in session.positions()] == ["XRP/USDT:USDT"]
        assert await session.close("binance", "XRP/USDT:USDT")
        assert session.positions() == []
