"""``framework run`` as a service: SIGTERM drains (no new signal, the open under way finishes protected, exit 0)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from decimal import Decimal

import pytest

from tests.app.processes import sigterm_after


@pytest.mark.parametrize("side", ["long", "short"])
async def test_sigterm_finishes_the_open_under_way_leaves_it_protected_and_exits_0(database_url, tmp_path, side):
    signals = tmp_path / "s.jsonl"
    signals.write_text(json.dumps({"venue": "bybit", "symbol": "XRP/USDT:USDT", "action": "open", "side": side,
                                   "contracts": "20", "stop_loss_pct": "2", "at_ms": 0}) + "\n")
    report_path = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "BYBIT_", "FRAMEWORK_"))}
    env["DATABASE_URL"] = database_url
    # the venue is slow to show the new position and its frames arrive late: the open takes seconds
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", "run", "--plugins", "bybit", "--no-tui", "--speed", "1",
        "--signals", str(signals), "--report", str(report_path), "--log-format", "json",
        "--faults", "stream_delay_ms=2000,order_visibility_lag_ms=2000,rest_position_lag_ms=2000",
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    err = await sigterm_after(process, '"event": "order_submitted"')  # SIGTERM while the entry is on its way
    assert process.returncode == 0, err
    report = json.loads(report_path.read_text())
    assert report["positions"]["opened"] == 1 and report["failed_signals"] == [] and report["errors"] == []
    [left] = report["open_positions"]  # the open finished and stays protected on the venue
    assert left["side"] == side and left["protected"] is True and Decimal(left["contracts"]) == 20
    assert report["orphans"] == 0 and report["unprotected_ms"]["max"] == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    events = [entry["event"] for entry in lines]
    assert events.count("order_submitted") == 1  # nothing new taken after SIGTERM
    assert events.index("order_submitted") < events.index("drain") < events.index("position_open"), events
    [drain] = [entry for entry in lines if entry["event"] == "drain"]
    assert drain["message"] == "stopping: no new signals; 1 under way"
