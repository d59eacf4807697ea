"""What a run leaves: listener errors and fatal errors in the report, a trailing stop labelled as such."""

from __future__ import annotations

import asyncio
import json
import socket
from decimal import Decimal

import pytest

from framework.app.report import left_lines
from framework.app.run import Run, RunMonitor, RunOptions
from framework.hookspecs import hookimpl
from framework.models import Alert, PositionEvent
from framework.settings import Settings


@pytest.mark.parametrize("side", ["long", "short"])
def test_the_monitor_counts_and_shows_each_closure_reason_and_the_realized_pnl(side):
    # the engine tells a trailing-stop exit apart (tests/engine/test_trailing.py); the view shows what it says
    monitor = RunMonitor()
    for reason in ("stop_loss", "trailing_stop"):
        monitor.on_position_open(PositionEvent(event="opened", venue="bybit", symbol="X/USDT:USDT", side=side,
                                               contracts=Decimal(1)))
        monitor.on_position_closed(PositionEvent(event="closed", venue="bybit", symbol="X/USDT:USDT", side=side,
                                                 contracts=Decimal(0), reason=reason, realized_pnl=Decimal("0.5")))
    assert monitor.closures_by_reason == {"stop_loss": 1, "trailing_stop": 1}
    assert "trailing_stop" in monitor.log[-1]
    assert monitor.realized_pnl == {"USDT": Decimal("1.0")}


class FailingListener:
    @hookimpl
    def on_position_open(self, event):
        raise RuntimeError("the pager is down")


def signal_file(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"venue": "binance", "symbol": "XRP/USDT:USDT", "side": "short", "contracts": "5",
                                "stop_loss_pct": "2"}) + "\n")
    return path


@pytest.mark.hooks("on_alert")
async def test_a_listener_error_counts_as_an_error(database_url, tmp_path):
    run = Run(RunOptions(plugins=["binance"], signals=signal_file(tmp_path), tui=False, speed=1),
              Settings(DATABASE_URL=database_url))
    run.session.listeners.append(("pager", FailingListener()))
    events = run.session.events()
    task = asyncio.create_task(run.execute())
    try:
        await run.session.wait_for(lambda e: isinstance(e, Alert) and "pager" in e.message, 60, events=events)
    finally:
        run.stop_requested.set()
        report = await asyncio.wait_for(task, 60)
    assert report["positions"]["opened"] == 1
    [error] = report["listener_errors"]
    assert "'pager'" in error and "the pager is down" in error
    assert error in report["errors"][0]
    assert "listener errors: 1" in left_lines(report)
    [left] = report["open_positions"]
    assert left["side"] == "short" and left["protected"] is True and left["stop_loss"] is not None


async def test_a_fatal_error_ends_the_run_with_a_report(database_url, tmp_path):
    with socket.socket() as busy:  # the HTTP API cannot listen: a fatal error once the run is up
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = Run(RunOptions(plugins=["binance"], signals=signal_file(tmp_path), http_port=port, tui=False,
                             speed=1, duration_s=60),
                  Settings(DATABASE_URL=database_url, FRAMEWORK_HTTP_TOKEN="t"))
        report = await run.execute()
    assert "cannot listen" in report["fatal"] and report["duration_s"] < 60
    assert any(e.startswith("fatal: http: ConfigError") for e in report["errors"])
    assert any(line.startswith("fatal: http: ConfigError") for line in left_lines(report))


def test_the_view_header_shows_live_mode_network_account_and_streams():
    from pydantic import SecretStr

    from framework.app.view import header, pnl_line
    from framework.models import DriverConfig

    run = Run(RunOptions(plugins=["binance"]))
    run.session.live_venues["binance"] = DriverConfig(account="main", api_key=SecretStr("k"),
                                                      api_secret=SecretStr("s"), testnet=True)
    run.monitor.on_stream_state("binance", "disconnected", "socket closed")
    text = header(run)
    assert "LIVE[/] binance (testnet, main)" in text and "streams binance disconnected" in text
    assert "speed" not in text  # no emulated venue: no replay speed
    assert pnl_line(run) == "realized PnL: 0"


def test_the_report_command_lists_what_was_left_and_the_failed_signals(tmp_path, capsys):
    from framework.app.cli import main

    report = {
        "positions": {"opened": 1, "closed": 0, "open": 1}, "venues": {}, "errors": ["binance x failed"],
        "open_positions": [{"venue": "binance", "symbol": "XRP/USDT:USDT", "side": "short", "contracts": "5",
                            "entry_price": "1.2", "stop_loss": "1.23", "take_profit": None, "protected": False}],
        "failed_signals": [{"signal": {}, "error": "binance XRP/USDT:USDT: notional 1200 USDT is over max_notional "
                                                  "10 USDT", "type": "SignalRejected"}],
        "stream_states": {"binance": "disconnected"},
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "left open: 1 position(s)" in out and "stop 1.23 tp none UNPROTECTED" in out
    assert "failed signals: 1" in out and "over max_notional" in out and "binance disconnected" in out
