"""``--log-format json`` and secrets: a full live-path run with sentinel secrets never shows them anywhere."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys

import aiohttp
import asyncpg
import pytest

from framework.app.logs import ContextFilter, Redactor, configure_logging, secrets_of
from framework.settings import Settings
from tests.app.processes import start_venue
from tools.degraded import dead_alert_url

SENTINEL = "SENTINEL"
KEY, SECRET = f"{SENTINEL}key0123456789", f"{SENTINEL}secret0123456789abcdef0123"
TOKEN = f"{SENTINEL}token0123"
BOUND_S = 60.0


def test_json_lines_carry_context_and_mask_secrets(capsys):
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        redact = configure_logging(logging.INFO, "json", secrets=[KEY])
        log = logging.getLogger("framework.test")
        log.info("placed %s", "x", extra={"venue": "bybit", "symbol": "XRP/USDT:USDT", "client_order_id": "fw-o-1",
                                          "event": "order_submitted"})
        log.warning("auth frame %s", json.dumps({"op": "auth", "args": [KEY, 1, "sig"]}))
        redact.add([SECRET])
        try:
            raise ValueError(f"bad secret {SECRET}")
        except ValueError:
            log.exception("failed")
    finally:
        root.handlers[:], root.level = before
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["venue"] == "bybit" and lines[0]["symbol"] == "XRP/USDT:USDT"
    assert lines[0]["client_order_id"] == "fw-o-1" and lines[0]["event"] == "order_submitted"
    assert lines[0]["level"] == "INFO" and lines[0]["message"] == "placed x" and lines[0]["logger"] == "framework.test"
    assert lines[1]["venue"] is None and "***" in lines[1]["message"]
    assert "exc_info" in lines[2] and "***" in lines[2]["exc_info"]
    assert SENTINEL not in json.dumps(lines)


def test_secrets_of_the_settings():
    settings = Settings(FRAMEWORK_HTTP_TOKEN=TOKEN, DATABASE_URL=f"postgresql://u:{SECRET}@h/db",
                        FRAMEWORK_ALERT_URLS=f"tgram://{SENTINEL}bot123456/chat", BYBIT_API_KEY=KEY)
    found = secrets_of(settings, ["bybit", "binance"])
    assert {TOKEN, SECRET, KEY, f"{SENTINEL}bot123456"} <= set(found)
    assert Redactor(found)(f"{KEY} {TOKEN} tgram://{SENTINEL}bot123456/chat") == "*** *** ***"
    assert Redactor(found)(f"bot {SENTINEL}bot123456 said") == "bot *** said"
    assert ContextFilter().filter(record := logging.LogRecord("x", 20, "f", 1, "m", None, None))
    assert record.venue is None and record.event is None  # type: ignore[attr-defined]


async def dump_database(url: str) -> str:
    """Every row of every table of the public schema, as text."""
    connection = await asyncpg.connect(url)
    try:
        tables = [r["tablename"] for r in await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        assert tables
        rows = []
        for table in tables:
            rows += [f"{table}: {dict(row)}" for row in await connection.fetch(f'SELECT * FROM "{table}"')]
        return "\n".join(rows)
    finally:
        await connection.close()


@pytest.mark.parametrize("venues", [("binance", "bybit")])
async def test_a_sentinel_secret_is_nowhere_in_logs_report_metrics_or_database(database_url, tmp_path, venues):
    started = [await start_venue(name, KEY, SECRET) for name in venues]
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "BYBIT_", "FRAMEWORK_"))}
        env |= {"DATABASE_URL": database_url, "FRAMEWORK_HTTP_TOKEN": TOKEN, "FRAMEWORK_MAX_CONTRACTS": "100",
                "FRAMEWORK_ALERT_URLS": dead_alert_url().replace("/hook/x", f"/hook/{SENTINEL}alert0123")}
        for _, info in started:
            prefix = info["venue"].upper()
            env |= {f"{prefix}_API_KEY": KEY, f"{prefix}_API_SECRET": SECRET,
                    f"{prefix}_REST_URL": info["rest_url"], f"{prefix}_WS_URL": info["ws_url"]}
        open_ = {"symbol": "XRP/USDT:USDT", "action": "open", "contracts": "20", "stop_loss_pct": "2", "at_ms": 0}
        signals = [
            {**open_, "venue": "binance", "side": "long"}, {**open_, "venue": "bybit", "side": "short"},
            {**open_, "venue": "bybit", "symbol": "ETH/USDT:USDT", "side": "long", "contracts": "500"},  # over limit
            {**open_, "venue": "binance", "symbol": "NOPE/USDT:USDT", "side": "short"},  # the venue has no such market
            {"venue": "binance", "symbol": "XRP/USDT:USDT", "action": "close", "at_ms": 4000},
        ]
        path = tmp_path / "signals.jsonl"
        path.write_text("".join(json.dumps(s) + "\n" for s in signals))
        report_path = tmp_path / "r.json"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "framework.app.cli", "-v", "run", "--plugins", ",".join(venues), "--live",
            "--signals", str(path), "--duration", "8", "--no-tui", "--log-format", "json", "--report",
            str(report_path), "--metrics-port", "0", "--http", "0", env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None and process.stdout is not None
        err_lines: list[str] = []
        scraped: list[str] = []

        async def read_stderr() -> None:
            metrics_url = None
            opened = 0
            while line := (await process.stderr.readline()).decode():
                err_lines.append(line)
                if line.startswith("metrics on "):
                    metrics_url = line.split()[2]
                if '"event": "position_open"' in line:
                    opened += 1
                    if opened == 2 and metrics_url:
                        async with aiohttp.ClientSession() as client, client.get(metrics_url) as response:
                            scraped.append(await response.text())

        reader = asyncio.create_task(read_stderr())
        out = await asyncio.wait_for(process.stdout.read(), BOUND_S)
        await asyncio.wait_for(process.wait(), BOUND_S)
        await asyncio.wait_for(reader, BOUND_S)
    finally:
        for venue_process, _ in started:
            venue_process.terminate()
            await asyncio.wait_for(venue_process.wait(), 20)
    err = "".join(err_lines)
    report_text = report_path.read_text()
    report = json.loads(report_text)
    # the run did what it should, errors included
    assert report["positions"]["opened"] == 2 and report["positions"]["closed"] == 1, report
    assert {f["type"] for f in report["failed_signals"]} >= {"SignalRejected"} and len(report["failed_signals"]) == 2
    assert process.returncode == 1  # failed signals are errors
    assert scraped and "framework_open_positions" in scraped[0]
    json_lines = [json.loads(line) for line in err_lines if line.startswith("{")]
    assert len(json_lines) > 20 and any(line["level"] == "DEBUG" for line in json_lines)
    assert any(line["venue"] == "bybit" and line["symbol"] == "XRP/USDT:USDT" for line in json_lines)
    database = await dump_database(database_url)
    assert "XRP/USDT:USDT" in database  # the dump holds the run's rows
    for where, text in {"stderr": err, "stdout": out.decode(), "report": report_text, "metrics": scraped[0],
                        "database": database}.items():
        assert SENTINEL not in text, f"a secret reached the {where}"
