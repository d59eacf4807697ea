"""Signal sources of ``framework run``: a followed file (``--follow``), stdin, the looped demo."""

from __future__ import annotations

import asyncio
import io
import json

from framework.app.run import Run, RunOptions, stdin_signals
from framework.errors import ConfigError
from framework.models import PositionEvent
from framework.settings import Settings

OPEN = {"venue": "binance", "symbol": "XRP/USDT:USDT", "action": "open", "side": "short", "contracts": "10",
        "stop_loss_pct": "2"}
CLOSE = {"venue": "binance", "symbol": "XRP/USDT:USDT", "action": "close"}


async def test_a_followed_file_acts_on_appended_lines_once(tmp_path, database_url):
    path = tmp_path / "signals.jsonl"
    path.write_text(json.dumps(OPEN) + "\n")
    run = Run(RunOptions(plugins=["binance"], signals=path, follow=True, tui=False, speed=1),
              Settings(DATABASE_URL=database_url))
    events = run.session.events()
    task = asyncio.create_task(run.execute())
    try:
        opened = await run.session.wait_for(lambda e: isinstance(e, PositionEvent) and e.event == "opened", 60,
                                            events=events)
        assert opened.side == "short"
        with path.open("a") as handle:
            handle.write(json.dumps(CLOSE)[:20])  # a writer half-way through a line: not a signal yet
            handle.flush()
            handle.write(json.dumps(CLOSE)[20:] + "\n")
        closed = await run.session.wait_for(lambda e: isinstance(e, PositionEvent) and e.event == "closed", 60,
                                            events=events)
        assert closed.reason == "reduce_only_close"
    finally:
        run.stop_requested.set()
        report = await asyncio.wait_for(task, 60)
    assert report["venues"]["binance"]["opened"] == 1 and report["venues"]["binance"]["closed"] == 1
    assert report["failed_signals"] == [] and report["errors"] == []


async def test_stdin_lines_are_parsed_as_they_come_and_a_bad_one_is_reported_not_fatal():
    stream = io.StringIO(json.dumps(OPEN) + "\n\n# a comment\n" + '{"venue": "binance"}\n' + json.dumps(CLOSE) + "\n")
    items = [item async for item in stdin_signals(stream)]
    assert [type(item).__name__ for _, item in items] == ["Signal", "ConfigError", "Signal"]
    error = items[1][1]
    assert isinstance(error, ConfigError) and str(error).startswith("stdin:4: invalid signal")
    assert "symbol" in str(error)


async def test_a_database_outage_fails_the_signals_it_meets_and_the_feed_goes_on(tmp_path, databases, database_url):
    # issue 14 finding 1: the feed used to die silently on the first non-framework error of an outage
    btc = {**OPEN, "symbol": "BTC/USDT:USDT", "contracts": "0.01"}
    path = tmp_path / "signals.jsonl"
    path.write_text(json.dumps(OPEN) + "\n")
    run = Run(RunOptions(plugins=["binance"], signals=path, follow=True, tui=False, speed=1),
              Settings(DATABASE_URL=database_url))
    events = run.session.events()
    task = asyncio.create_task(run.execute())

    def opened(symbol: str):
        return lambda e: isinstance(e, PositionEvent) and e.event == "opened" and e.symbol == symbol

    try:
        await run.session.wait_for(opened("XRP/USDT:USDT"), 60, events=events)
        async with databases.unreachable(database_url):
            with path.open("a") as handle:
                handle.write(json.dumps(btc) + "\n")
            await asyncio.wait_for(run.monitor.signal_failed_event.wait(), 60)  # the feed read the line, failed it
        with path.open("a") as handle:
            handle.write(json.dumps(btc) + "\n")  # the database is back: the same signal now opens
        await run.session.wait_for(opened("BTC/USDT:USDT"), 60, events=events)
    finally:
        run.stop_requested.set()
        report = await asyncio.wait_for(task, 60)
    [failed] = report["failed_signals"]
    assert failed["type"] == "StoreError" and "nothing sent" in failed["error"]
    assert report["venues"]["binance"]["opened"] == 2 and report["fatal"] is None
