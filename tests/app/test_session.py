"""``framework.Session``: the Python API a strategy uses, and ``examples/strategy.py`` on the emulators."""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from framework import Session
from framework.models import PositionEvent, Signal
from framework.session import PositionAlreadyOpen, SignalRejected
from framework.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "XRP/USDT:USDT"


@pytest.mark.parametrize("side", ["long", "short"])
async def test_open_list_events_and_close_through_the_session(database_url, side):
    async with Session(["bybit"], settings=Settings(DATABASE_URL=database_url), speed=1) as session:
        events = session.events()
        position = await session.open("bybit", SYMBOL, side, "15", stop_loss_pct="1", take_profit_pct="2",
                                      trailing_callback_rate="0.5")
        assert position.protected and position.contracts == Decimal(15) and position.side == side
        assert (position.stop_loss < position.entry_price) == (side == "long")
        assert (position.take_profit > position.entry_price) == (side == "long")
        [held] = session.positions()  # the trailing stop may have moved since
        assert (held.symbol, held.side, held.contracts, held.protected) == (SYMBOL, side, Decimal(15), True)
        opened = await session.wait_for(lambda e: isinstance(e, PositionEvent), 30, events=events)
        assert opened.event == "opened" and opened.side == side
        with pytest.raises(PositionAlreadyOpen):
            await session.open("bybit", SYMBOL, side, 1, stop_loss_pct=1)
        health = session.health()["venues"]["bybit"]
        assert health["mode"] == "emulated" and health["open"] == 1 and health["unprotected"] == []
        assert health["last_reconciliation"] is not None
        assert await session.close("bybit", SYMBOL) is True
        closed = await session.wait_for(lambda e: isinstance(e, PositionEvent) and e.event == "closed", 30,
                                        events=events)
        assert closed.reason == "reduce_only_close"
        assert session.positions() == [] and await session.close("bybit", SYMBOL) is False
        events.close()


async def test_client_side_limits_refuse_before_the_venue(database_url):
    settings = Settings(DATABASE_URL=database_url, FRAMEWORK_MAX_CONTRACTS="50", FRAMEWORK_MAX_OPEN_POSITIONS="1",
                        FRAMEWORK_MAX_NOTIONAL="1000000")
    async with Session(["binance"], settings=settings, speed=1, pool_size=4) as session:
        assert session.store.pool.get_max_size() == 4  # an accounts file's sessions: a small pool each
        emulator = session.harnesses["binance"].emulator

        def writes() -> dict[str, int]:
            return {k: n for k, n in emulator.rest_calls.items() if not k.startswith("GET")}

        before = writes()
        with pytest.raises(SignalRejected, match="51 contracts is over max_contracts 50"):
            await session.open("binance", SYMBOL, "long", 51, stop_loss_pct=1)
        assert writes() == before
        await session.open("binance", SYMBOL, "long", 50, stop_loss_pct=1)
        after = writes()
        with pytest.raises(SignalRejected, match="max_open_positions is 1"):
            await session.open("binance", "BTC/USDT:USDT", "short", "0.01", stop_loss_pct=1)
        assert [p.symbol for p in session.positions()] == [SYMBOL]
        # a signal for another account label is not this session's: refused, nothing sent
        other = Signal(venue="binance", account="other", symbol="BTC/USDT:USDT", side="short", contracts="0.01",
                       stop_loss_pct="1")
        with pytest.raises(SignalRejected, match="signal for account 'other'; this session manages 'default'"):
            await session.submit(other)
        assert writes() == after


async def test_a_session_with_keys_refuses_without_live(database_url):
    from framework.errors import ConfigError

    settings = Settings(DATABASE_URL=database_url, BYBIT_API_KEY="k", BYBIT_API_SECRET="s")
    with pytest.raises(ConfigError, match="--live"):
        async with Session(["bybit"], settings=settings):
            raise AssertionError("must not start")


async def test_the_example_strategy_runs_against_the_emulators(database_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "BYBIT_", "FRAMEWORK_"))}
    env["DATABASE_URL"] = database_url
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "strategy.py"), "--hold", "2", env=env, cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    text = out.decode()
    assert "opened: binance XRP/USDT:USDT long 20" in text and "opened: bybit XRP/USDT:USDT short 20" in text
    assert "protected True" in text and "'event': 'opened'" in text
    assert text.rstrip().endswith("left open: 0")


async def test_a_new_emulated_venue_does_not_inherit_an_earlier_emulator_s_open_rows(database_url):
    # An in-process emulator is a new, empty account in every run: a position the first run left open (and
    # protected) on its emulator is no position of the second run's emulator, which must neither adopt it
    # nor close it as an orphan (the second `framework run` on one database used to exit 1 on that).
    async with Session(["bybit"], settings=Settings(DATABASE_URL=database_url), speed=1) as first:
        await first.open("bybit", SYMBOL, "long", "15", stop_loss_pct="1")
        first_account = first.emulated_account
    async with Session(["bybit"], settings=Settings(DATABASE_URL=database_url), speed=1) as second:
        assert second.engine is not None
        await second.engine.reconcile_all()
        assert second.emulated_account != first_account
        assert second.positions() == [] and second.health()["venues"]["bybit"]["open"] == 0
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT account, status FROM positions")
    finally:
        await conn.close()
    assert [(r["account"], r["status"]) for r in rows] == [(first_account, "open")]  # left as the first run left it
