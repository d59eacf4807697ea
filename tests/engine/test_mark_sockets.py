"""One mark-price socket per venue (issue 17 item 5): positions that come and go are subscribed and
unsubscribed on the socket already open, never by reconnecting; past the venue's per-connection limit a
second socket opens; the venue refuses nothing.  Both venues, the emulators enforcing the same limits."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from framework.engine.broadcast import client_order_id
from framework.models import OrderIntent, TrailingSpec
from tests.engine.conftest import FAST

BTC = "BTC/USDT:USDT"


async def until(predicate, timeout_s: float = 10.0) -> None:
    """Wait for ``predicate()`` to hold, polling; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


def trailing_intent(env, symbol: str, side: str = "long") -> OrderIntent:
    instrument = env.venue.instrument(symbol)
    mark = env.venue.mark_price(symbol)
    factor = Decimal("0.98") if side == "long" else Decimal("1.02")
    contracts = max(instrument.min_amount, (Decimal(20) / mark).quantize(instrument.step_size) + instrument.step_size)
    return OrderIntent(venue=env.venue_name, symbol=symbol, side=side, contracts=contracts,
                       stop_loss=(mark * factor).quantize(instrument.tick_size),
                       trailing=TrailingSpec(callback_rate=Decimal(1)), client_order_id=client_order_id("o"))


def limit_to_one_symbol(env) -> dict[str, int]:
    """Per-connection limits that hold one symbol, in the emulator and in the driver's options alike."""
    if env.venue_name == "binance":
        env.harness.emulator.market_streams_per_connection = 1
        return {"mark_streams_per_connection": 1}
    env.harness.emulator.public_args_chars = len('["tickers.XRPUSDT"]')
    return {"mark_args_chars_per_connection": len('["tickers.XRPUSDT"]')}


def venue_connections(env) -> int:
    emulator = env.harness.emulator
    return emulator.market_connections if env.venue_name == "binance" else emulator.ws_connections["public"]


def held_by_the_venue(env) -> list[set[str]]:
    """The symbols each open mark socket holds, as the emulator sees them."""
    public = [s for s in env.harness.emulator.sockets if not s.private]
    if env.venue_name == "binance":
        return [set(s.topics) for s in public if hasattr(s, "combined")]
    return [{t.split(".", 1)[1] for t in s.topics} for s in public]


def native(env, symbol: str) -> str:
    return env.venue.instrument(symbol).id if env.venue_name == "bybit" else symbol


async def test_positions_that_come_and_go_never_reconnect_the_mark_socket(env):
    await env.start(FAST)
    parts = env.parts
    await env.engine.open(trailing_intent(env, env.symbol))
    await until(lambda: env.driver.conn.mark_pool is not None and env.driver.conn.mark_pool.counters["connects"] == 1)
    pool = env.driver.conn.mark_pool
    await env.engine.open(trailing_intent(env, BTC, "short"))
    await until(lambda: {native(env, env.symbol), native(env, BTC)} in held_by_the_venue(env))
    await env.engine.close(env.venue_name, env.symbol)
    await until(lambda: held_by_the_venue(env) == [{native(env, BTC)}])
    await env.engine.open(trailing_intent(env, env.symbol, "short"))
    await until(lambda: held_by_the_venue(env) == [{native(env, env.symbol), native(env, BTC)}])
    assert pool.counters["connects"] == 1 and venue_connections(env) == 1, pool.counters
    assert pool.counters["refused"] == 0 and pool.counters["unsubscribe_frames"] == 1
    assert parts.watched_marks is not None and parts.watched_marks.current() == {env.symbol, BTC}


async def test_past_the_per_connection_limit_a_second_socket_opens_and_nothing_is_refused(env):
    await env.start(FAST, **limit_to_one_symbol(env))
    await env.engine.open(trailing_intent(env, env.symbol))
    await until(lambda: held_by_the_venue(env) == [{native(env, env.symbol)}])
    await env.engine.open(trailing_intent(env, BTC))
    await until(lambda: sorted(map(sorted, held_by_the_venue(env))) == [[native(env, BTC)], [native(env, env.symbol)]])
    pool = env.driver.conn.mark_pool
    assert pool.counters["connects"] == 2 and venue_connections(env) == 2 and pool.counters["refused"] == 0
    # both sockets deliver: the first tick of each symbol moves its stop (1 % behind, the stop was 2 %)
    await until(lambda: env.parts.trailing.moves[env.symbol] >= 1 and env.parts.trailing.moves[BTC] >= 1)
