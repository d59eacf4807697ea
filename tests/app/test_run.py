"""``framework run`` end to end: both emulated venues, real prices, the embedded PostgreSQL, the demo signals."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from framework.app.cli import main
from framework.app.report import FILL_TO_STOP_MS
from framework.app.run import Run, RunOptions, closure_latencies, intent_from_signal, read_signals
from framework.errors import ConfigError
from framework.models import PositionEvent, Signal
from framework.settings import Settings
from framework.venue.truth import Closure


@pytest.mark.hooks("on_position_open", "on_position_closed", "on_stop_moved", "on_stream_state")
async def test_demo_run_opens_and_closes_on_both_venues_and_stays_safe(database_url):
    run = Run(RunOptions(plugins=["binance", "bybit"], duration_s=12, speed=100, tui=False),
              Settings(DATABASE_URL=database_url))
    report = await run.execute()
    # What the demo signals alone guarantee in 12 s, whatever the prices do and however loaded the machine:
    # two opens per venue (by 2 s), one signalled close per venue (6 s / 7 s); stops and TPs may add more.
    for venue in ("binance", "bybit"):
        assert report["venues"][venue]["opened"] >= 2, report
        assert report["venues"][venue]["closed"] >= 1, report
    assert report["orphans"] == 0
    assert report["wrong_side_orders"] == 0
    # Binance cannot rest a stop before the entry (-4509, docs/conformance.md B7): each open leaves a few
    # milliseconds between the fill and its stop; Bybit's stop rides on the entry.
    assert report["unprotected_ms"]["max"] < FILL_TO_STOP_MS, report["unprotected_ms"]
    assert report["errors"] == []
    # the reconciler never takes a venue-managed stop (Bybit's TP/SL orders) for a duplicate (conformance Y1)
    assert report["reconciliation"]["passes"] >= 2 and report["reconciliation"]["duplicate_stops_cancelled"] == 0
    assert {"manual", "reduce_only_close"} <= set(report["closures_by_reason"])
    assert report["closure_latency_ms"]["max"] < 5_000  # from the stream, not the 30 s reconciliation
    assert any(key.startswith("binance POST /fapi/v1/algoOrder") for key in report["rest_calls"])
    assert any(key.startswith("bybit POST /v5/position/trading-stop") or key.startswith("bybit POST /v5/order/create")
               for key in report["rest_calls"])


def test_report_command_prints_tables(tmp_path, capsys):
    report = {
        "positions": {"opened": 3, "closed": 2, "open": 1},
        "venues": {"bybit": {"opened": 3, "closed": 2, "open": 1}},
        "closures_by_reason": {"stop_loss": 2}, "closure_latency_ms": {"p50": 2, "p99": 5, "max": 5},
        "unprotected_ms": {"max": 0, "total": 0}, "orphans": 0, "wrong_side_orders": 0,
        "rest_calls": {"bybit POST /v5/order/create": 3}, "stream_reconnects": {}, "errors": [],
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "stop_loss" in out and "bybit POST /v5/order/create" in out and "wrong-side orders" in out


def test_signal_file_errors_name_the_line_and_field(tmp_path):
    path = tmp_path / "signals.jsonl"
    path.write_text(
        '{"venue": "bybit", "symbol": "XRP/USDT:USDT", "side": "long", "contracts": "1", "stop_loss_pct": "1"}\n'
        '{"venue": "bybit", "symbol": "XRP/USDT:USDT", "side": "sideways", "contracts": "1"}\n'
    )
    with pytest.raises(ConfigError, match=r"signals.jsonl:2: .*side"):
        read_signals(path)


def test_packaged_demo_signals_are_valid():
    signals = read_signals(None)
    assert {s.venue for s in signals} == {"binance", "bybit"}
    assert {s.action for s in signals} == {"open", "close", "manual_close"}


def test_percent_prices_are_resolved_from_the_mark_on_the_losing_side():
    sig = Signal(venue="bybit", symbol="XRP/USDT:USDT", side="short", contracts=Decimal("10"),
                 stop_loss_pct=Decimal("1"), take_profit_pct=Decimal("2"), trailing_callback_rate=Decimal("0.5"))
    intent = intent_from_signal(sig, Decimal("1.2000"), "acct", "fw-o-1")
    assert intent.stop_loss == Decimal("1.2120") and intent.take_profit == Decimal("1.1760")
    assert intent.order_side == "sell" and intent.trailing.callback_rate == Decimal("0.5")


def test_closure_latency_pairs_each_venue_closure_with_its_event():
    closures = [Closure(account="a", symbol="X", side="long", contracts=Decimal(1), price=Decimal(1), origin="manual",
                        realized_pnl=Decimal(0), ts=t) for t in (1_000, 5_000)]
    events = [PositionEvent(event="closed", venue="v", symbol="X", side="long", contracts=Decimal(0),
                            observed_at=t) for t in (1_004, 4_999)]  # the second observed 1 ms "early" (clocks)
    assert closure_latencies(closures, events) == [4, 0]
